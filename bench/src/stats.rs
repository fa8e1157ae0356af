//! Latency percentiles and per-second time series of a run's samples.

use serde::Serialize;

/// One finished, measured workflow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// When it finished, in seconds since the measurement window opened.
    pub finished_at_s: f64,
    pub latency_ms: f64,
}

/// Percentiles of a set of latencies, in ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// The nearest-rank `q` quantile (0 < q <= 1) of sorted values; 0 for none.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Percentiles {
    pub fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mean = if sorted.is_empty() {
            0.0
        } else {
            sorted.iter().sum::<f64>() / sorted.len() as f64
        };
        Percentiles {
            p50: quantile(&sorted, 0.50),
            p90: quantile(&sorted, 0.90),
            p99: quantile(&sorted, 0.99),
            max: sorted.last().copied().unwrap_or(0.0),
            mean,
        }
    }
}

/// Completions and latency within one time bucket.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bucket {
    pub start_s: f64,
    pub completed: u64,
    pub throughput_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Samples grouped into consecutive buckets of `width_s` seconds, from 0 to the last sample.
pub fn time_series(samples: &[Sample], width_s: f64) -> Vec<Bucket> {
    let Some(last) = samples.iter().map(|s| s.finished_at_s).reduce(f64::max) else {
        return Vec::new();
    };
    let count = (last.max(0.0) / width_s).floor() as usize + 1;
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); count];
    for sample in samples {
        let index = (sample.finished_at_s.max(0.0) / width_s).floor() as usize;
        latencies[index.min(count - 1)].push(sample.latency_ms);
    }
    latencies
        .into_iter()
        .enumerate()
        .map(|(index, values)| {
            let percentiles = Percentiles::of(&values);
            Bucket {
                start_s: index as f64 * width_s,
                completed: values.len() as u64,
                throughput_per_s: values.len() as f64 / width_s,
                p50_ms: percentiles.p50,
                p99_ms: percentiles.p99,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&values);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(p.mean, 50.5);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
        let unsorted = Percentiles::of(&[3.0, 1.0, 2.0]);
        assert_eq!((unsorted.p50, unsorted.max), (2.0, 3.0));
    }

    #[test]
    fn time_series_buckets_by_finish_time() {
        let samples = [
            Sample {
                finished_at_s: 0.1,
                latency_ms: 10.0,
            },
            Sample {
                finished_at_s: 0.9,
                latency_ms: 30.0,
            },
            Sample {
                finished_at_s: 2.5,
                latency_ms: 5.0,
            },
        ];
        let buckets = time_series(&samples, 1.0);
        assert_eq!(buckets.len(), 3);
        assert_eq!(buckets[0].completed, 2);
        assert_eq!(buckets[0].p99_ms, 30.0);
        assert_eq!(buckets[1].completed, 0);
        assert_eq!(buckets[2].start_s, 2.0);
        assert_eq!(buckets[2].throughput_per_s, 1.0);
        assert!(time_series(&[], 1.0).is_empty());
    }
}
