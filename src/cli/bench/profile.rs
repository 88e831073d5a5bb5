//! Profile phase (`--profile`): one forward with every launch timed, aggregated per compiled
//! kernel against that forward's wall time, and written as a Chrome trace.

use std::fmt::Write;

use anyhow::anyhow;

use cranegrad::benchmark::{KernelProfile, chrome_trace, kernel_profile};
use cranegrad_graph::Bindings;

use super::super::checks::Output;
use super::cold::Cold;

/// The profiled forward.
pub struct Profile {
    /// Its wall time, microseconds.
    pub wall_us: f64,
    /// Time inside kernels, microseconds (the rest is binding and launch overhead).
    pub in_kernels_us: f64,
    /// Launches timed.
    pub launches: usize,
    /// One row per compiled kernel, longest total first.
    pub rows: Vec<KernelProfile>,
}

/// Profiles one forward and writes its Chrome trace to `trace`.
pub fn profile(cold: &mut Cold, trace: &Output) -> anyhow::Result<Profile> {
    let missing = || anyhow!("the prepared forward has no plan");
    let plan = cold.session.plan_mut(&cold.key).ok_or_else(missing)?;
    plan.profile = true;
    plan.timings.clear();
    cold.session
        .realize(&[&cold.out], &cold.feeds, &Bindings::new())?;
    let wall_us = cold.session.last_report().total_ms * 1e3;
    let plan = cold.session.plan_mut(&cold.key).ok_or_else(missing)?;
    plan.profile = false;
    let launches = &plan.lowered.schedule.launches;
    let in_kernels_us: f64 = plan.timings.iter().map(|t| t.micros).sum();
    let t0 = plan.timings.first().map_or(0.0, |t| t.start_us);
    let events: Vec<_> = plan
        .timings
        .iter()
        .map(|t| {
            let k = &launches[t.launch].kernel;
            (k.name.clone(), k.ops.join("+"), t.start_us - t0, t.micros)
        })
        .collect();
    trace.write(chrome_trace(&events).as_bytes())?;
    let timed: Vec<(usize, f64)> = plan.timings.iter().map(|t| (t.launch, t.micros)).collect();
    Ok(Profile {
        wall_us,
        in_kernels_us,
        launches: timed.len(),
        rows: kernel_profile(&plan.lowered.schedule, &timed),
    })
}

impl Profile {
    /// The per-kernel table, headed by the totals and the trace's path.
    pub fn render(&self, trace: &Output) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "per-kernel profile of one forward: {:.3} ms wall, {:.3} ms in {} launches of {} \
             compiled kernels (trace: {})",
            self.wall_us / 1e3,
            self.in_kernels_us / 1e3,
            self.launches,
            self.rows.len(),
            trace
        );
        let _ = writeln!(
            s,
            "  {:<24} {:>5} {:>9} {:>7} {:>9} {:>8}  ops",
            "kernel", "calls", "total ms", "% fwd", "GFLOP/s", "GB/s"
        );
        for r in &self.rows {
            let ops = if r.ops.len() > 60 {
                format!("{}...", &r.ops[..60])
            } else {
                r.ops.clone()
            };
            let _ = writeln!(
                s,
                "  {:<24} {:>5} {:>9.3} {:>6.1}% {:>9.2} {:>8.2}  {ops}",
                r.name,
                r.calls,
                r.micros / 1e3,
                100.0 * r.micros / self.wall_us.max(1e-9),
                r.flops / r.micros.max(1e-9) / 1e3,
                r.bytes / r.micros.max(1e-9) / 1e3,
            );
        }
        s.push('\n');
        s
    }
}
