//! [`Latencies`]: every sample of a latency, kept exactly (in whole microseconds), and
//! its percentiles.

use std::time::Duration;

/// Latency samples in whole microseconds (4 bytes each: a million samples take 4 MB).
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    micros: Vec<u32>,
}

/// The figures of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// How many samples.
    pub n: usize,
    /// The median.
    pub p50: Duration,
    /// The 99th percentile (nearest rank).
    pub p99: Duration,
    /// The largest sample.
    pub max: Duration,
    /// The mean.
    pub mean: Duration,
}

impl Latencies {
    /// No samples.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample (rounded down to a microsecond; above `u32::MAX` µs, about 71
    /// minutes, it is clamped).
    pub fn record(&mut self, latency: Duration) {
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.micros.push(micros);
    }

    /// Adds the samples of `other`.
    pub fn merge(&mut self, other: Latencies) {
        if self.micros.is_empty() {
            self.micros = other.micros;
        } else {
            self.micros.extend(other.micros);
        }
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.micros.len()
    }

    /// Whether there is no sample.
    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    /// How many samples are above `bound`.
    pub fn above(&self, bound: Duration) -> usize {
        let bound = u32::try_from(bound.as_micros()).unwrap_or(u32::MAX);
        self.micros.iter().filter(|&&m| m > bound).count()
    }

    /// The figures, or `None` without samples. Percentiles by nearest rank: the p-th
    /// percentile is the smallest sample with at least p % of the samples at or below it.
    pub fn summary(&self) -> Option<Summary> {
        if self.micros.is_empty() {
            return None;
        }
        let mut sorted = self.micros.clone();
        sorted.sort_unstable();
        let n = sorted.len();
        let rank = |p: usize| sorted[(n * p).div_ceil(100).clamp(1, n) - 1];
        let micros = |m: u32| Duration::from_micros(u64::from(m));
        let sum: u64 = sorted.iter().map(|&m| u64::from(m)).sum();
        Some(Summary {
            n,
            p50: micros(rank(50)),
            p99: micros(rank(99)),
            max: micros(sorted[n - 1]),
            mean: Duration::from_micros(sum / n as u64),
        })
    }
}

/// A latency for a table: µs below 1 ms, ms with two decimals below 10 ms, one decimal
/// above.
pub fn latency(d: Duration) -> String {
    let micros = d.as_micros();
    if micros < 1_000 {
        format!("{micros} µs")
    } else if micros < 10_000 {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut l = Latencies::new();
        assert_eq!(l.summary(), None);
        for m in (1..=100).rev() {
            l.record(Duration::from_micros(m));
        }
        let s = l.summary().unwrap();
        assert_eq!(s.n, 100);
        assert_eq!(s.p50, Duration::from_micros(50));
        assert_eq!(s.p99, Duration::from_micros(99));
        assert_eq!(s.max, Duration::from_micros(100));
        assert_eq!(s.mean, Duration::from_micros(50));
        assert_eq!(l.above(Duration::from_micros(90)), 10);

        let mut one = Latencies::new();
        one.record(Duration::from_millis(3));
        let s = one.summary().unwrap();
        assert_eq!(
            (s.p50, s.p99, s.max),
            (s.max, s.max, Duration::from_millis(3))
        );
        l.merge(one);
        assert_eq!(l.len(), 101);
    }

    #[test]
    fn formats_latencies() {
        assert_eq!(latency(Duration::from_micros(87)), "87 µs");
        assert_eq!(latency(Duration::from_micros(2_346)), "2.35 ms");
        assert_eq!(latency(Duration::from_micros(251_234)), "251.2 ms");
    }
}
