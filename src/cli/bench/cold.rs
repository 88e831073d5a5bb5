//! Cold phase: the first forward in a fresh session (empty kernel and plan caches), timed in
//! disjoint parts that add up to `cold_ms`, with the weights packed between compile and
//! execution.

use std::time::Instant;

use anyhow::anyhow;
use serde::Serialize;

use cranegrad::benchmark::{spread, work_estimate};
use cranegrad::workload::sample_tokens;
use cranegrad_graph::{Bindings, HostData, Tensor};
use cranegrad_lower::{LowerOptions, lower_tensors};
use cranegrad_models::Model;
use cranegrad_runtime::{Feeds, Session, SessionOptions};

use super::super::progress::spinner;
use super::load::{Loaded, Packing};
use super::{BenchArgs, ms_since};

/// The first forward, in parts, and what it compiled.
#[derive(Serialize)]
pub struct ColdReport {
    /// The whole first forward: the sum of the parts below.
    pub cold_ms: f64,
    /// Session creation (thread pool, JIT module).
    pub cold_session_ms: f64,
    /// Tracing the model's forward into a graph.
    pub cold_build_ms: f64,
    /// Structural hash (plan-cache lookups).
    pub cold_hash_ms: f64,
    /// Rewrite passes and scheduling (or reading their output from the disk cache).
    pub cold_passes_ms: f64,
    /// The schedule came from the disk cache: no pass ran.
    pub cold_schedule_from_disk: bool,
    /// Memory plan, arena, kernel-cache lookups and attaching the graph's inputs.
    pub cold_setup_ms: f64,
    /// Execution of the first forward.
    pub cold_execute_ms: f64,
    /// Cranelift compilation.
    pub compile_ms: f64,
    /// Kernels compiled (the rest of the forward's kernels were kernel-cache hits).
    pub kernels_compiled: usize,
    /// Fastest kernel compilation, microseconds.
    pub compile_us_min: Option<f64>,
    /// Median kernel compilation, microseconds.
    pub compile_us_median: Option<f64>,
    /// Slowest kernel compilation, microseconds.
    pub compile_us_max: Option<f64>,
    /// Kernels of the forward with fusion off.
    pub kernels_unfused: usize,
    /// Kernels of one prefill forward.
    pub kernels_fused: usize,
    /// Planned intermediate memory, bytes.
    pub activations_bytes: usize,
    /// Kernels of the forward served from the kernel cache while compiling (table only).
    #[serde(skip)]
    pub compile_cache_hits: u64,
}

/// The session after the cold forward, with what later phases run and compare against.
pub struct Cold {
    /// The session, its caches warm.
    pub session: Session,
    /// The forward's output.
    pub out: Tensor,
    /// Its token input.
    pub feeds: Feeds,
    /// Plan-cache key of the forward.
    pub key: String,
    /// The fused JIT's logits, the reference of `--compare`.
    pub fused_out: Vec<f32>,
    /// Estimated floating-point operations of one forward.
    pub flops: f64,
    /// Estimated bytes moved by one forward.
    pub bytes: f64,
    /// Packing, reported as part of loading.
    pub packing: Packing,
    /// The timed parts.
    pub report: ColdReport,
}

/// The forward graph of `model` over deterministic tokens, with its feeds.
fn forward(model: &Model, b: usize, s: usize) -> anyhow::Result<(Tensor, Feeds)> {
    let (_g, out) = model.forward_graph(b, s)?;
    let mut feeds = Feeds::new();
    feeds.insert(
        "tokens".into(),
        HostData::from(sample_tokens(b, s, model.vocab())),
    );
    Ok((out, feeds))
}

/// Runs the first forward. Packing the weights sits between compile and execution (it needs
/// the plan) but is timed apart and counted as loading.
pub fn cold(a: &BenchArgs, loaded: &Loaded) -> anyhow::Result<Cold> {
    let (b, s) = (loaded.input.batch_size, loaded.input.prompt_len);
    let pb = spinner("cold start: building and compiling the forward");
    let t = Instant::now();
    let mut session = Session::new(SessionOptions {
        fuse: true,
        threads: loaded.input.threads,
    })?;
    session.set_attention_fusion(!a.unfused_attention);
    // Raw weights are freed once packed, except when the unfused JIT and the interpreter,
    // which read them raw, run beside it.
    session.set_free_raw_weights(!a.compare);
    let session_ms = ms_since(t);
    let t = Instant::now();
    let (out, feeds) = forward(&loaded.model, b, s)?;
    let build_ms = ms_since(t);
    let t = Instant::now();
    let key = session.prepare(&[&out])?;
    let prepare_ms = ms_since(t);
    let prep = session.last_report().clone();
    pb.finish_and_clear();
    let pb = spinner("packing weights");
    let t = Instant::now();
    let stats = session.prepack(&[&out], &feeds)?;
    let pack_ms = ms_since(t);
    let packed_before_run = session.packed().0;
    pb.finish_and_clear();
    let fused_out = session.realize(&[&out], &feeds, &Bindings::new())?[0].to_f32();
    let first = session.last_report().clone();
    let cold_ms = session_ms + build_ms + prepare_ms + first.total_ms;
    let cold_hash_ms = prep.hash_ms + first.hash_ms;
    let cold_execute_ms = first.execute_ms;
    // What the timed parts leave of the prepare and the first realize: memory plan, arena,
    // kernel-cache lookups and collecting the graph's attached inputs.
    let cold_setup_ms = cold_ms
        - session_ms
        - build_ms
        - cold_hash_ms
        - prep.passes_ms
        - prep.compile_ms
        - cold_execute_ms;
    // Prepack and the run take the packed weights from the same plan; should the run still
    // pack one, say so rather than quietly move packing time into the cold execute.
    if session.packed().0 > packed_before_run {
        eprintln!(
            "warning: the first forward packed weights that prepack missed; its time is in the \
             cold execute, not in load_ms"
        );
    }
    let plan = session
        .plan(&key)
        .ok_or_else(|| anyhow!("the prepared forward has no plan"))?;
    let compile_us: Vec<f64> = plan
        .kernels
        .iter()
        .filter(|k| !k.cache_hit)
        .map(|k| k.compile_micros)
        .collect();
    let compile_spread = spread(&compile_us);
    let (flops, bytes) = work_estimate(&plan.lowered.schedule);
    let unfused = LowerOptions {
        fuse: false,
        ..Default::default()
    };
    let kernels_unfused = lower_tensors(&[&out], unfused)?.schedule.launches.len();
    let report = ColdReport {
        cold_ms,
        cold_session_ms: session_ms,
        cold_build_ms: build_ms,
        cold_hash_ms,
        cold_passes_ms: prep.passes_ms,
        cold_schedule_from_disk: prep.schedule_from_disk,
        cold_setup_ms,
        cold_execute_ms,
        compile_ms: prep.compile_ms,
        kernels_compiled: compile_us.len(),
        compile_us_min: compile_spread.map(|x| x.0),
        compile_us_median: compile_spread.map(|x| x.1),
        compile_us_max: compile_spread.map(|x| x.2),
        kernels_unfused,
        kernels_fused: prep.kernels,
        activations_bytes: prep.arena_bytes,
        compile_cache_hits: prep.cache_hits,
    };
    Ok(Cold {
        session,
        out,
        feeds,
        key,
        fused_out,
        flops,
        bytes,
        packing: Packing { ms: pack_ms, stats },
        report,
    })
}
