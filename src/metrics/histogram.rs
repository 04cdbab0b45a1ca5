//! Histograms in Prometheus' shape: counts per bucket (`le` = upper bound) and a
//! sum. [`LatencyHistogram`] is recorded into on the hot path (one atomic add per
//! bucket and one for the sum, no lock); [`Histogram`] is a snapshot, or a
//! distribution computed at scrape time (queue depths across sessions).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A distribution: `(upper bound, observations in this bucket)` in increasing
/// order, ending with `+Inf`, not cumulative; plus the count and the sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds and the number of observations in each bucket (not cumulative).
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Sum of the observations.
    pub sum: f64,
}

impl Histogram {
    /// The distribution of `values` over the buckets `bounds` (increasing) and `+Inf`.
    pub fn of(bounds: &[u64], values: impl IntoIterator<Item = u64>) -> Histogram {
        let mut counts = vec![0u64; bounds.len() + 1];
        let mut sum = 0u64;
        for value in values {
            let index = bounds.partition_point(|&bound| bound < value);
            if let Some(count) = counts.get_mut(index) {
                *count += 1;
            }
            sum = sum.saturating_add(value);
        }
        Histogram::from_counts(bounds.iter().map(|&bound| bound as f64), counts, sum as f64)
    }

    fn from_counts(bounds: impl Iterator<Item = f64>, counts: Vec<u64>, sum: f64) -> Histogram {
        let buckets: Vec<(f64, u64)> = bounds
            .chain(std::iter::once(f64::INFINITY))
            .zip(counts)
            .collect();
        Histogram {
            count: buckets.iter().map(|(_, count)| count).sum(),
            buckets,
            sum,
        }
    }
}

/// Bucket upper bounds of [`LatencyHistogram`], in microseconds: from a buffered
/// fjall commit (a few µs) to an fsync on a slow disk (tens of ms) and beyond.
const LATENCY_BOUNDS_US: [u64; 16] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    1_000_000,
];

/// How long storage takes: recorded by the storage that has anything worth
/// timing (the disk backend), read by `/metrics`.
#[derive(Debug, Default)]
pub struct StorageLatency {
    /// Each write batch's commit (the journal reaching the OS).
    pub commit: LatencyHistogram,
    /// Each group-commit fsync (`durability = "fsync"` only).
    pub sync: LatencyHistogram,
}

/// Durations, recorded lock-free from any thread: each observation is one
/// `Relaxed` add to its bucket and one to the sum. The count is the sum of the
/// buckets, so a scrape may see a bucket and the sum one observation apart; a
/// scrape is a sample, not a transaction.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn record(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let index = LATENCY_BOUNDS_US.partition_point(|&bound| bound * 1_000 < nanos);
        if let Some(bucket) = self.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The distribution so far, in seconds.
    pub fn snapshot(&self) -> Histogram {
        let counts = self
            .buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .collect();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let bounds = LATENCY_BOUNDS_US.iter().map(|&us| us as f64 / 1e6);
        Histogram::from_counts(bounds, counts, sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_the_bucket_whose_bound_is_the_first_at_or_above() {
        let histogram = LatencyHistogram::default();
        histogram.record(Duration::from_micros(5)); // le 5 µs: bounds are inclusive
        histogram.record(Duration::from_micros(7));
        histogram.record(Duration::from_millis(3));
        histogram.record(Duration::from_secs(5)); // +Inf
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 4);
        assert_eq!(snapshot.buckets[0], (0.000_005, 1));
        assert_eq!(snapshot.buckets[1], (0.000_01, 1));
        assert_eq!(snapshot.buckets[9], (0.005, 1));
        assert_eq!(snapshot.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert!((snapshot.sum - 5.003_012).abs() < 1e-9, "{}", snapshot.sum);
    }

    #[test]
    fn a_distribution_is_counted_over_bounds_and_inf() {
        let histogram = Histogram::of(&[0, 1, 10], [0, 0, 1, 5, 11, 1000]);
        let counts: Vec<u64> = histogram.buckets.iter().map(|(_, count)| *count).collect();
        assert_eq!(counts, [2, 1, 1, 2]);
        assert_eq!((histogram.count, histogram.sum), (6, 1017.0));
    }
}
