//! Latency histogram: fixed memory however long the run, percentiles within 1%.
//!
//! Log-linear buckets: values under 128 ns are exact; above, each power of two is split
//! into 128 equal buckets, so a bucket's width is under 1/128 of its values.

use std::time::Duration;

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Enough buckets for any u64 nanosecond count.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) << SUB_BITS;

pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum_ns: u128,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }
}

fn index(ns: u64) -> usize {
    if ns < SUB {
        return ns as usize;
    }
    let shift = 63 - ns.leading_zeros() - SUB_BITS; // keeps the leading one and SUB_BITS more
    let mantissa = (ns >> shift) & (SUB - 1);
    (((shift + 1) as u64) << SUB_BITS | mantissa) as usize
}

/// Smallest value and width of bucket `i`.
fn bucket(i: usize) -> (u64, u64) {
    let (group, mantissa) = ((i >> SUB_BITS) as u32, i as u64 & (SUB - 1));
    if group == 0 {
        (mantissa, 1)
    } else {
        ((SUB | mantissa) << (group - 1), 1 << (group - 1))
    }
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        let ns = latency.as_nanos().min(u64::MAX as u128) as u64;
        self.counts[index(ns)] += 1;
        self.count += 1;
        self.sum_ns += ns as u128;
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos((self.sum_ns / self.count as u128) as u64))
    }

    pub fn max(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos(self.max_ns))
    }

    /// Nearest-rank percentile (`q` in 0..=1), reported as its bucket's midpoint
    /// (never above the largest value seen).
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = bucket(i);
                return Some(Duration::from_nanos((low + width / 2).min(self.max_ns)));
            }
        }
        unreachable!("rank is at most count")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_in_order() {
        let mut last = 0;
        for ns in [0, 1, 127, 128, 255, 256, 1000, 65_535, 1 << 40, u64::MAX] {
            let i = index(ns);
            assert!(i >= last && i < BUCKETS, "{ns}");
            let (low, width) = bucket(i);
            assert!(low <= ns && ns - low < width, "{ns} in [{low}, +{width})");
            last = i;
        }
    }

    #[test]
    fn percentiles_within_one_percent() {
        let mut h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let near = |q: f64, us: f64| {
            let got = h.percentile(q).unwrap().as_secs_f64() * 1e6;
            assert!((got - us).abs() <= us / 100.0, "p{q}: {got} vs {us}");
        };
        near(0.5, 500.0);
        near(0.99, 990.0);
        near(0.999, 999.0);
        assert_eq!(h.max(), Some(Duration::from_micros(1000)));
        assert_eq!(h.mean(), Some(Duration::from_nanos(500_500)));
        assert_eq!(Histogram::default().percentile(0.5), None);
    }
}
