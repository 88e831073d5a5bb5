//! Compare phase (`--compare`): the unfused JIT and the reference interpreter on the same
//! inputs as the fused JIT, timed, with their largest logit difference to it.

use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use cranegrad::benchmark::max_abs_diff;
use cranegrad::stats::median;
use cranegrad_graph::Bindings;
use cranegrad_runtime::{Session, SessionOptions, interpret_tensors};

use super::super::progress::spinner;
use super::cold::Cold;
use super::ms_since;
use super::warm::WarmReport;

/// Test-only hook of the harness's self-test: a number added to one logit of the unfused
/// backend's output inside `--compare`, so a test can check that a real numerical mismatch is
/// caught (printed `MISMATCH`, exit code 1). Never set it outside that test.
const PLANT_MISMATCH_ENV: &str = "CRANEGRAD_PLANT_MISMATCH";

/// Largest logit difference between backends that still counts as agreement.
const TOLERANCE: f64 = 1e-3;

/// The interpreter is run more than once only while one run stays under this (ms).
const INTERPRETER_REPEAT_MS: f64 = 500.0;

/// Skipping the interpreter above this many estimated FLOP per forward spares minutes.
const INTERPRETER_MAX_FLOPS: f64 = 2e9;

/// One backend's figures.
#[derive(Serialize)]
pub struct BackendReport {
    /// `fused`, `unfused` or `interpreter`.
    pub backend: &'static str,
    /// Median forward, ms.
    pub warm_median_ms: f64,
    /// Forwards timed.
    pub runs: usize,
    /// Largest |logit - fused logit|.
    pub max_abs_diff: f64,
    /// Whether that difference exceeds the tolerance.
    pub mismatch: bool,
}

/// Runs the other backends; the fused row restates the warm phase.
pub fn compare(
    cold: &Cold,
    threads: usize,
    iters: usize,
    warm: &WarmReport,
) -> anyhow::Result<Vec<BackendReport>> {
    let (out, feeds, none) = (&cold.out, &cold.feeds, Bindings::new());
    let pb = spinner("comparing backends");
    let mut rows = vec![BackendReport {
        backend: "fused",
        warm_median_ms: warm.warm_median_ms,
        runs: iters,
        max_abs_diff: 0.0,
        mismatch: false,
    }];
    let mut un = Session::new(SessionOptions {
        fuse: false,
        threads,
    })?;
    let mut uo = un.realize(&[out], feeds, &none)?[0].to_f32();
    if let Ok(v) = std::env::var(PLANT_MISMATCH_ENV) {
        let d: f32 = v
            .parse()
            .with_context(|| format!("{PLANT_MISMATCH_ENV}={v} is not a number"))?;
        if let Some(x) = uo.first_mut() {
            *x += d;
        }
    }
    let runs = iters.min(5);
    let ut: Vec<f64> = (0..runs)
        .map(|_| {
            un.realize(&[out], feeds, &none)
                .map(|_| un.last_report().total_ms)
        })
        .collect::<Result<_, _>>()?;
    let (d, bad) = max_abs_diff(&uo, &cold.fused_out, TOLERANCE);
    rows.push(BackendReport {
        backend: "unfused",
        warm_median_ms: median(&ut),
        runs,
        max_abs_diff: d,
        mismatch: bad,
    });
    // Repeated (for a median of 3) only while one run is cheap.
    if cold.flops < INTERPRETER_MAX_FLOPS {
        let t = Instant::now();
        let io = interpret_tensors(&[out], feeds, &none)?[0].to_f32();
        let mut it = vec![ms_since(t)];
        while it.len() < 3 && it[0] < INTERPRETER_REPEAT_MS {
            let t = Instant::now();
            interpret_tensors(&[out], feeds, &none)?;
            it.push(ms_since(t));
        }
        let (d, bad) = max_abs_diff(&io, &cold.fused_out, TOLERANCE);
        rows.push(BackendReport {
            backend: "interpreter",
            warm_median_ms: median(&it),
            runs: it.len(),
            max_abs_diff: d,
            mismatch: bad,
        });
    }
    pb.finish_and_clear();
    Ok(rows)
}
