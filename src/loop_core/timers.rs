//! The timer heap: a min-heap keyed by (deadline, sequence number).
//!
//! The sequence number makes equal deadlines fire in the order they were
//! scheduled (FIFO), which a plain heap on the deadline alone does not.
//! Cancelled timers are removed lazily, with asyncio's purge rule: when more
//! than half of over 100 scheduled timers are cancelled, rebuild the heap;
//! otherwise drop cancelled ones only as they reach the top.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Below this many timers the heap is never rebuilt (asyncio's value).
pub const MIN_TIMERS_FOR_PURGE: usize = 100;

struct Entry<T> {
    /// The deadline (loop-time seconds; NaN was mapped to -inf on insertion)
    /// as [`ordered`] bits, then the insertion order (FIFO among equal
    /// deadlines): plain integer comparisons order two entries, where the
    /// heap's sifting compares at every level.
    key: (u64, u64),
    item: T,
}

/// `when`'s bits mapped so that unsigned integer order is `f64::total_cmp`'s
/// order (the transform `total_cmp` makes, then the sign bit flipped).
fn ordered(when: f64) -> u64 {
    let bits = when.to_bits() as i64;
    ((bits ^ (((bits >> 63) as u64) >> 1) as i64) as u64) ^ (1 << 63)
}

/// The inverse of [`ordered`].
fn from_ordered(key: u64) -> f64 {
    let bits = (key ^ (1 << 63)) as i64;
    f64::from_bits((bits ^ (((bits >> 63) as u64) >> 1) as i64) as u64)
}

impl<T> Entry<T> {
    fn when(&self) -> f64 {
        from_ordered(self.key.0)
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest first.
        other.key.cmp(&self.key)
    }
}

/// A min-heap of items by deadline, FIFO for equal deadlines.
pub struct TimerHeap<T> {
    heap: BinaryHeap<Entry<T>>,
    next_seq: u64,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        TimerHeap {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }
}

impl<T> TimerHeap<T> {
    /// Schedules `item` at `when`. A NaN deadline is due at once, as in asyncio.
    pub fn push(&mut self, when: f64, item: T) {
        let when = if when.is_nan() { f64::NEG_INFINITY } else { when };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry {
            key: (ordered(when), seq),
            item,
        });
    }

    /// The earliest deadline and its item.
    pub fn peek(&self) -> Option<(f64, &T)> {
        self.heap.peek().map(|e| (e.when(), &e.item))
    }

    /// Removes the earliest item.
    pub fn pop(&mut self) -> Option<T> {
        self.heap.pop().map(|e| e.item)
    }

    /// Number of items, cancelled ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Removes and returns the items `remove` picks; the rest keep their order.
    pub fn remove_where(&mut self, mut remove: impl FnMut(&T) -> bool) -> Vec<T> {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.heap)
            .into_iter()
            .partition(|e| remove(&e.item));
        self.heap = kept.into();
        gone.into_iter().map(|e| e.item).collect()
    }

    /// Removes every item.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.heap.drain().map(|e| e.item)
    }

    /// Visits every item (for the garbage collector).
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|e| &e.item)
    }
}

/// asyncio's rule for when a full rebuild beats popping cancelled timers.
pub fn should_purge(scheduled: usize, cancelled: usize) -> bool {
    scheduled > MIN_TIMERS_FOR_PURGE && cancelled * 2 > scheduled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_in_order(heap: &mut TimerHeap<u32>) -> Vec<u32> {
        std::iter::from_fn(|| heap.pop()).collect()
    }

    #[test]
    fn earliest_first() {
        let mut h = TimerHeap::default();
        for (i, when) in [5.0, 1.0, 3.0, 2.0, 4.0].into_iter().enumerate() {
            h.push(when, i as u32);
        }
        assert_eq!(drain_in_order(&mut h), vec![1, 3, 2, 4, 0]);
    }

    #[test]
    fn equal_deadlines_are_fifo() {
        let mut h = TimerHeap::default();
        for i in 0..1000 {
            h.push(7.0, i);
        }
        assert_eq!(drain_in_order(&mut h), (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn nan_is_due_first_and_inf_last() {
        let mut h = TimerHeap::default();
        h.push(f64::INFINITY, 0);
        h.push(1.0, 1);
        h.push(f64::NAN, 2);
        assert_eq!(h.peek().map(|(w, _)| w), Some(f64::NEG_INFINITY));
        assert_eq!(drain_in_order(&mut h), vec![2, 1, 0]);
    }

    #[test]
    fn remove_where_keeps_order() {
        let mut h = TimerHeap::default();
        for i in 0..300u32 {
            h.push(f64::from(i % 10), i);
        }
        let gone = h.remove_where(|i| i % 3 == 0);
        assert_eq!(gone.len(), 100);
        let out = drain_in_order(&mut h);
        assert_eq!(out.len(), 200);
        assert!(out.windows(2).all(|w| (w[0] % 10, w[0]) < (w[1] % 10, w[1])));
    }

    #[test]
    fn ordered_keeps_total_order_and_inverts() {
        let values = [
            f64::NEG_INFINITY,
            -1e300,
            -1.5,
            -f64::MIN_POSITIVE,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            1.0,
            1.0 + f64::EPSILON,
            1e300,
            f64::INFINITY,
        ];
        for pair in values.windows(2) {
            assert!(ordered(pair[0]) < ordered(pair[1]), "{pair:?}");
        }
        for v in values {
            assert_eq!(from_ordered(ordered(v)).to_bits(), v.to_bits());
        }
    }

    #[test]
    fn purge_rule_matches_asyncio() {
        assert!(!should_purge(100, 99));
        assert!(!should_purge(101, 50));
        assert!(should_purge(101, 51));
        assert!(!should_purge(10, 10));
    }
}
