//! Percentiles and fits: a log-linear histogram for per-packet latencies,
//! nearest-rank percentiles for small samples, and a least-squares slope.

use serde::Serialize;

/// Each power of two is split into `2^SUB_BITS` buckets: values are kept to
/// within 1/64 (1.6 %), in constant memory whatever the packet count.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

#[derive(Debug, Default, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    pub fn record(&mut self, value: u64) {
        let index = bucket(value);
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// The nearest-rank `q` quantile (0 < q ≤ 1), as its bucket's midpoint.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, high) = bounds(index);
                return Some((low + (high - low) / 2).min(self.max));
            }
        }
        Some(self.max)
    }

    /// p50, p99 and max, in thousandths of the recorded unit (µs → ms).
    pub fn summary_milli(&self) -> Option<Quantiles> {
        let milli = |v: u64| v as f64 / 1000.0;
        Some(Quantiles {
            count: self.total,
            p50: milli(self.quantile(0.5)?),
            p99: milli(self.quantile(0.99)?),
            max: milli(self.max),
        })
    }
}

fn bucket(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let exp = 63 - value.leading_zeros();
    let mantissa = value >> (exp - SUB_BITS);
    (SUB + u64::from(exp - SUB_BITS) * SUB + (mantissa - SUB)) as usize
}

/// The smallest and largest value of a bucket.
fn bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB {
        return (index, index);
    }
    let shift = (index - SUB) / SUB;
    let mantissa = (index - SUB) % SUB + SUB;
    (mantissa << shift, ((mantissa + 1) << shift) - 1)
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Quantiles {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Quantiles {
    /// Nearest-rank quantiles of a small sample.
    pub fn of(mut sample: Vec<f64>) -> Option<Quantiles> {
        if sample.is_empty() {
            return None;
        }
        sample.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = ((q * sample.len() as f64).ceil() as usize).clamp(1, sample.len());
            sample[rank - 1]
        };
        Some(Quantiles {
            count: sample.len() as u64,
            p50: at(0.5),
            p99: at(0.99),
            max: sample[sample.len() - 1],
        })
    }
}

/// Least-squares slope of y over x; `None` with fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_in_order() {
        let mut last = 0;
        for v in (0..100_000).chain([u64::MAX >> 2]) {
            let b = bucket(v);
            assert!(b >= last);
            last = b;
            let (low, high) = bounds(b);
            assert!(low <= v && v <= high, "{v} in {low}..={high}");
            assert!(high - low <= low / 32, "{v}: bucket too wide");
        }
    }

    #[test]
    fn quantiles_are_within_bucket_precision() {
        let mut h = Histogram::default();
        for v in 1..=10_000 {
            h.record(v);
        }
        let p50 = h.quantile(0.5).unwrap() as f64;
        let p99 = h.quantile(0.99).unwrap() as f64;
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.02, "{p50}");
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.02, "{p99}");
        assert_eq!(h.quantile(1.0), Some(10_000));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn small_samples_use_nearest_rank() {
        let q = Quantiles::of(vec![5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((q.p50, q.p99, q.max, q.count), (3.0, 5.0, 5.0, 5));
        assert!(Quantiles::of(Vec::new()).is_none());
    }

    #[test]
    fn slope_fits_a_line() {
        let points: Vec<(f64, f64)> = [1.0, 10.0, 50.0]
            .iter()
            .map(|&x| (x, 3.0 * x + 7.0))
            .collect();
        assert!((slope(&points).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(slope(&[(2.0, 1.0), (2.0, 5.0)]), None);
    }
}
