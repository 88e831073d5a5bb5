//! Warm phase: the same forward replayed from the plan cache, after `--warmup` untimed runs.

use serde::Serialize;

use cranegrad::stats::{mean_sd, median, quantile};
use cranegrad_graph::Bindings;

use super::super::progress::bar;
use super::cold::Cold;

/// Steady-state latency and the throughput it implies.
#[derive(Serialize)]
pub struct WarmReport {
    /// Fastest timed forward, ms.
    pub warm_min_ms: f64,
    /// Median timed forward, ms.
    pub warm_median_ms: f64,
    /// 90th percentile, ms.
    pub warm_p90_ms: f64,
    /// Mean of the timed forwards, ms.
    pub warm_mean_ms: f64,
    /// Their sample standard deviation, ms (0 over one forward).
    pub warm_sd_ms: f64,
    /// Estimated work of one forward over the median time, GFLOP/s.
    pub forward_gflops: f64,
    /// Estimated bytes of one forward over the median time, GB/s.
    pub forward_gbps: f64,
    /// Every timed forward in order, ms (for the plot).
    #[serde(skip)]
    pub latencies: Vec<f64>,
}

impl WarmReport {
    /// The cold first forward followed by the timed ones: the series the plot draws.
    pub fn latencies_with_cold(&self, cold_ms: f64) -> Vec<f64> {
        std::iter::once(cold_ms)
            .chain(self.latencies.iter().copied())
            .collect()
    }
}

/// Runs `warmup` untimed and `iters` timed forwards.
pub fn warm(cold: &mut Cold, warmup: usize, iters: usize) -> anyhow::Result<WarmReport> {
    let none = Bindings::new();
    let pb = bar((warmup + iters) as u64, "forward");
    let mut lat = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        // Ctrl-C: the figures are over the forwards timed so far.
        if super::super::interrupt::pending() {
            break;
        }
        cold.session.realize(&[&cold.out], &cold.feeds, &none)?;
        if i >= warmup {
            lat.push(cold.session.last_report().total_ms);
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    if lat.is_empty() {
        anyhow::bail!("interrupted before any timed forward");
    }
    let wmed = median(&lat);
    let (mean, sd) = mean_sd(&lat);
    Ok(WarmReport {
        warm_min_ms: quantile(&lat, 0.0),
        warm_median_ms: wmed,
        warm_p90_ms: quantile(&lat, 0.9),
        warm_mean_ms: mean,
        warm_sd_ms: sd,
        forward_gflops: cold.flops / wmed / 1e6,
        forward_gbps: cold.bytes / wmed / 1e6,
        latencies: lat,
    })
}
