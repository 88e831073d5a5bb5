//! What `run` and `bench` execute: a graph output with its feeds and a description, from a
//! built-in example or a model forward.

use anyhow::Context;
use cranegrad_graph::{HostData, Tensor};
use cranegrad_models::Model;
use cranegrad_models::loader::ModelConfig;
use cranegrad_runtime::Feeds;

use crate::builtins::Example;

/// A runnable graph.
pub struct Workload {
    /// Short name.
    pub name: String,
    /// One-line description.
    pub about: String,
    /// The output to realize.
    pub output: Tensor,
    /// Data for inputs not attached to the graph.
    pub feeds: Feeds,
    /// `(layers, ..)` for model forwards, so per-layer kernel counts can be derived.
    pub kernels_per_layer: Option<(usize,)>,
}

impl From<Example> for Workload {
    fn from(e: Example) -> Workload {
        Workload {
            name: e.name.to_string(),
            about: e.about,
            output: e.output,
            feeds: Feeds::new(),
            kernels_per_layer: None,
        }
    }
}

/// The benchmark input people quote for a preset: `(batch, seq)`.
pub fn default_input(spec: &str) -> (usize, usize) {
    match spec {
        "small" => (2, 5),
        "medium" => (4, 32),
        "large" => (4, 128),
        "xl" => (1, 128),
        "llama-3.2-1b" | "smollm-135m" => (1, 128),
        _ => (1, 32),
    }
}

/// Refuses a forward of `batch` x `seq` tokens whose input and logits alone exceed the memory
/// available, before anything is allocated (the plan checks its own buffers later).
pub fn check_forward_memory(batch: usize, seq: usize, vocab: usize) -> anyhow::Result<()> {
    let tokens = batch.checked_mul(seq);
    let bytes = tokens
        .and_then(|t| t.checked_mul(vocab.saturating_add(2)))
        .and_then(|e| e.checked_mul(4));
    let available = cranegrad_runtime::probe::available_memory_bytes();
    match (bytes, available) {
        (None, _) => {
            anyhow::bail!("batch {batch} x seq {seq} x vocab {vocab}: the logits' size overflows")
        }
        (Some(b), Some(a)) if b as u64 > a => anyhow::bail!(
            "batch {batch} x seq {seq} needs {:.2} GiB for its tokens and logits alone; the machine has {:.2} GiB available",
            b as f64 / (1u64 << 30) as f64,
            a as f64 / (1u64 << 30) as f64
        ),
        _ => Ok(()),
    }
}

/// Deterministic token ids below `vocab`.
pub fn sample_tokens(batch: usize, seq: usize, vocab: usize) -> Vec<i32> {
    crate::builtins::lcg_values(batch * seq, 7, 1.0)
        .into_iter()
        .map(|u| (((u + 1.0) * 0.5 * vocab as f32) as usize).min(vocab - 1) as i32)
        .collect()
}

/// A full-sequence forward of the model `spec` over deterministic tokens.
pub fn model_workload(
    spec: &str,
    seed: u64,
    batch: Option<usize>,
    seq: Option<usize>,
    quantize: Option<cranegrad_models::quantize::Quantize>,
) -> anyhow::Result<Workload> {
    let mut model = Model::load(spec, seed).with_context(|| format!("loading model {spec}"))?;
    if let Some(q) = quantize {
        model.quantize(q)?;
    }
    let (db, ds) = default_input(spec);
    let positions = model.max_positions();
    if let Some(s) = seq.filter(|&s| s > positions) {
        anyhow::bail!("--seq-len {s} exceeds the model's {positions} positions");
    }
    let (b, s) = (batch.unwrap_or(db), seq.unwrap_or(ds).min(positions));
    if b == 0 || s == 0 {
        anyhow::bail!("--batch-size and --seq-len must be at least 1");
    }
    check_forward_memory(b, s, model.vocab())?;
    let (_g, out) = model.forward_graph(b, s)?;
    let mut feeds = Feeds::new();
    feeds.insert(
        "tokens".into(),
        HostData::from(sample_tokens(b, s, model.vocab())),
    );
    let (arch, layers) = match &model.config {
        ModelConfig::Llama(c) => ("llama", c.layers),
        ModelConfig::Gpt2(c) => ("gpt2", c.n_layer),
    };
    Ok(Workload {
        name: spec.to_string(),
        about: format!(
            "{arch} forward, {} parameters, batch {b}, seq {s} ({})",
            model.config.param_count(),
            model.origin
        ),
        output: out,
        feeds,
        kernels_per_layer: Some((layers,)),
    })
}
