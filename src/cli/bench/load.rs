//! Load phase: settle the input (batch, prompt, generation length, threads), check that it
//! fits the model's context, and read or generate the weights.

use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use cranegrad::workload::default_input;
use cranegrad_models::Model;
use cranegrad_models::loader::ModelConfig;
use cranegrad_models::presets::preset;
use cranegrad_runtime::session::PackStats;
use cranegrad_runtime::weight_cache;

use super::super::progress::spinner;
use super::{BenchArgs, ms_since};

/// What ran: the model and the input every later phase uses.
#[derive(Serialize, Clone)]
pub struct InputReport {
    /// The `--model` argument as given.
    pub model: String,
    /// Sequences per forward.
    pub batch_size: usize,
    /// Prompt tokens per sequence (clamped to the model's positions).
    pub prompt_len: usize,
    /// Generated tokens per request (0: no generation).
    pub gen_len: usize,
    /// Threads, the caller included.
    pub threads: usize,
}

/// Loading: reading the file (or generating a preset's weights) plus packing GEMM weights.
#[derive(Serialize)]
pub struct LoadReport {
    /// `load_file_ms + pack_ms`.
    pub load_ms: f64,
    /// Reading or generating the weights.
    pub load_file_ms: f64,
    /// Packing GEMM weights into panels (done after the cold compile, which decides them).
    pub pack_ms: f64,
    /// Weight matrices the forward reads packed.
    pub packed_weights: usize,
    /// Bytes of the packed copies.
    pub packed_bytes: usize,
    /// Raw weight bytes returned to the OS once packed.
    pub raw_freed_bytes: usize,
    /// The weights were mapped from the disk cache, not read or generated.
    pub weights_mapped: bool,
    /// Packed weight matrices mapped from the disk cache instead of packed.
    pub packed_mapped: usize,
}

impl LoadReport {
    /// The load figures from the file time and the packing the cold phase did.
    pub fn new(file_ms: f64, weights_mapped: bool, packing: &Packing) -> Self {
        LoadReport {
            weights_mapped,
            packed_mapped: packing.stats.mapped,
            load_ms: file_ms + packing.ms,
            load_file_ms: file_ms,
            pack_ms: packing.ms,
            packed_weights: packing.stats.matrices,
            packed_bytes: packing.stats.bytes,
            raw_freed_bytes: packing.stats.freed_bytes,
        }
    }
}

/// Packing as the cold phase timed it; it is reported as part of loading.
pub struct Packing {
    /// Time of `Session::prepack`.
    pub ms: f64,
    /// What it packed.
    pub stats: PackStats,
}

/// The loaded model with the settled input.
pub struct Loaded {
    /// The model.
    pub model: Model,
    /// The input every phase uses.
    pub input: InputReport,
    /// Reading or generating the weights, ms.
    pub file_ms: f64,
    /// The weights were mapped from the disk cache.
    pub weights_mapped: bool,
    /// Timed warm forwards.
    pub iters: usize,
}

/// Fails when the prompt plus the generated tokens do not fit the model's positions.
fn check_context(max_positions: usize, prompt: usize, gen_len: usize) -> anyhow::Result<()> {
    if gen_len > 0 && prompt.saturating_add(gen_len) > max_positions {
        anyhow::bail!(
            "--prompt-len {prompt} + --gen-len {gen_len} exceeds the model's {max_positions} positions"
        );
    }
    Ok(())
}

/// Checks the arguments and loads the model.
pub fn load(a: &BenchArgs) -> anyhow::Result<Loaded> {
    use super::super::checks::{self, MAX_COUNT};
    let threads = checks::threads(BenchArgs::one(&a.threads))?;
    checks::positive("--requests", a.requests, MAX_COUNT)?;
    checks::count("--warmup", a.warmup, MAX_COUNT)?;
    if let Some(i) = a.iters {
        checks::positive("--iters", i, MAX_COUNT)?;
    }
    let (db, ds) = default_input(&a.model);
    let b = checks::positive(
        "--batch-size",
        BenchArgs::one(&a.batch_size).unwrap_or(db),
        MAX_COUNT,
    )?;
    if let Some(p) = BenchArgs::one(&a.prompt_len) {
        checks::positive("--prompt-len", p, MAX_COUNT)?;
    }
    let gen_len = checks::count(
        "--gen-len",
        BenchArgs::one(&a.gen_len).unwrap_or(if a.model == "llama-3.2-1b" { 32 } else { 16 }),
        MAX_COUNT,
    )?;
    // A preset's context is known without loading it, so a request that cannot fit fails
    // before the seconds of generating random weights; a file's is checked right after load.
    if let Some(cfg) = preset(&a.model) {
        check_context(
            cfg.max_positions(),
            BenchArgs::one(&a.prompt_len).unwrap_or(ds).max(1),
            gen_len,
        )?;
    }

    let pb = spinner(&format!("loading {}", a.model));
    let t = Instant::now();
    let mapped_before = weight_cache::counts().hits;
    let mut model =
        Model::load(&a.model, a.weights_seed).with_context(|| format!("loading {}", a.model))?;
    if let Some(q) = a.quantize {
        model.quantize(q)?;
    }
    let file_ms = ms_since(t);
    let weights_mapped = weight_cache::counts().hits > mapped_before;
    pb.finish_and_clear();
    let positions = model.max_positions();
    if let Some(p) = BenchArgs::one(&a.prompt_len).filter(|&p| p > positions) {
        anyhow::bail!("--prompt-len {p} exceeds the model's {positions} positions");
    }
    let s = BenchArgs::one(&a.prompt_len)
        .unwrap_or(ds)
        .clamp(1, positions);
    check_context(positions, s, gen_len)?;
    cranegrad::workload::check_forward_memory(b, s, model.vocab())?;
    let big = model.config.param_count() > 200_000_000;
    let iters = a.iters.unwrap_or(if big { 3 } else { 20 }).max(1);
    Ok(Loaded {
        input: InputReport {
            model: a.model.clone(),
            batch_size: b,
            prompt_len: s,
            gen_len,
            threads,
        },
        model,
        file_ms,
        weights_mapped,
        iters,
    })
}

/// Bytes of keys and values for `positions` positions of `batch` sequences (f32).
pub fn kv_cache_bytes(model: &Model, batch: usize, positions: usize) -> usize {
    match &model.config {
        ModelConfig::Llama(c) => 2 * c.layers * batch * positions * c.kv_heads * c.head_dim * 4,
        ModelConfig::Gpt2(c) => 2 * c.n_layer * batch * positions * c.n_embd * 4,
    }
}
