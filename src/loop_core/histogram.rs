//! A fixed histogram of durations with log2 buckets in microseconds, for the
//! loop-lag figures of `loop.stats()`.
//!
//! Fixed power-of-two bounds make recording one `leading_zeros` and one add,
//! with no allocation, and make histograms of different loops (or of one loop
//! at two times) comparable bucket by bucket.
//!
//! Bucket 0 holds durations under 1 µs; bucket `i` (1 ≤ i < BUCKETS - 1)
//! holds `[2^(i-1), 2^i)` µs; the last bucket holds everything from
//! `2^(BUCKETS-2)` µs up (about 16.8 s).

use super::stats::Counter;

/// Number of buckets, the open-ended last one included.
pub(crate) const BUCKETS: usize = 26;

/// Counts of durations per log2 bucket, plus the last and largest duration.
#[derive(Default)]
pub(crate) struct Histogram {
    /// Counts per bucket (see the module docs for the bounds).
    buckets: [Counter; BUCKETS],
    /// The most recent duration recorded, in nanoseconds.
    last_ns: Counter,
    /// The largest duration recorded, in nanoseconds.
    max_ns: Counter,
    /// Sum of the durations recorded, in nanoseconds.
    total_ns: Counter,
}

/// The bucket a duration of `ns` nanoseconds falls in.
#[inline]
pub(crate) fn bucket_of(ns: u64) -> usize {
    let us = ns / 1_000;
    if us == 0 {
        return 0;
    }
    ((u64::BITS - us.leading_zeros()) as usize).min(BUCKETS - 1)
}

/// The upper bounds of the buckets in microseconds (`None` for the last,
/// open-ended one).
pub(crate) fn upper_bounds_us() -> [Option<u64>; BUCKETS] {
    let mut out = [None; BUCKETS];
    for (i, b) in out.iter_mut().enumerate().take(BUCKETS - 1) {
        *b = Some(1u64 << i);
    }
    out
}

impl Histogram {
    /// Records one duration.
    #[inline]
    pub(crate) fn record(&self, ns: u64) {
        self.buckets[bucket_of(ns)].add(1);
        self.last_ns.set(ns);
        self.max_ns.raise(ns);
        self.total_ns.add(ns);
    }

    pub(crate) fn last_ns(&self) -> u64 {
        self.last_ns.get()
    }

    pub(crate) fn max_ns(&self) -> u64 {
        self.max_ns.get()
    }

    /// Durations recorded: the sum of the bucket counts.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().map(Counter::get).sum()
    }

    pub(crate) fn total_ns(&self) -> u64 {
        self.total_ns.get()
    }

    /// The bucket counts, first bucket first.
    pub(crate) fn counts(&self) -> [u64; BUCKETS] {
        std::array::from_fn(|i| self.buckets[i].get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_in_microseconds() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(999), 0);
        assert_eq!(bucket_of(1_000), 1);
        assert_eq!(bucket_of(1_999), 1);
        assert_eq!(bucket_of(2_000), 2);
        assert_eq!(bucket_of(3_999), 2);
        assert_eq!(bucket_of(4_000), 3);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        let bounds = upper_bounds_us();
        assert_eq!(bounds[0], Some(1));
        assert_eq!(bounds[3], Some(8));
        assert_eq!(bounds[BUCKETS - 1], None);
        // Every duration lies below its bucket's upper bound.
        for ns in [0, 1_500, 7_999, 1 << 30] {
            if let Some(bound) = bounds[bucket_of(ns)] {
                assert!(ns / 1_000 < bound);
            }
        }
    }

    #[test]
    fn records_last_max_count_and_total() {
        let h = Histogram::default();
        h.record(5_000);
        h.record(1_000);
        assert_eq!(h.last_ns(), 1_000);
        assert_eq!(h.max_ns(), 5_000);
        assert_eq!(h.count(), 2);
        assert_eq!(h.total_ns(), 6_000);
        assert_eq!(h.counts()[bucket_of(5_000)], 1);
    }
}
