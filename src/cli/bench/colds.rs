//! `--colds`: the three starts a user meets, side by side. Two fresh processes of this
//! executable run only the load and first forward of the same input, on a temporary cache
//! directory: the first with it empty (everything generated, compiled, lowered and packed),
//! the second with what the first left there (weights, panels, schedules and kernels mapped
//! or read from disk). The third is this process: a new forward graph of the same shape
//! prepared and run with its in-memory caches warm.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use cranegrad_graph::Bindings;
use cranegrad_models::Model;

use super::cold::Cold;
use super::load::InputReport;
use super::{BenchArgs, ms_since};

/// One fresh process's start, as its `--cold-only` JSON reports it.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct FreshStart {
    /// Load: reading, generating or mapping the weights plus packing or mapping panels.
    pub load_ms: f64,
    /// Reading or generating the weights, or mapping them.
    pub load_file_ms: f64,
    /// Packing GEMM weights, or mapping their panels.
    pub pack_ms: f64,
    /// The weights were mapped from the disk cache.
    pub weights_mapped: bool,
    /// Packed matrices mapped from the disk cache.
    pub packed_mapped: usize,
    /// The first forward.
    pub cold_ms: f64,
    /// Of it, the passes (or reading their output from disk).
    pub cold_passes_ms: f64,
    /// Of it, compiling kernels (or loading them from disk).
    pub compile_ms: f64,
    /// The schedule came from the disk cache.
    pub cold_schedule_from_disk: bool,
    /// Kernel-cache misses served from disk.
    pub cache_disk_hits: u64,
    /// Kernel-cache misses in all.
    pub cache_misses: u64,
}

/// The three starts (every key null without `--colds`).
#[derive(Serialize, Default)]
pub struct ColdsReport {
    /// Fresh process, empty caches: load, ms.
    pub start_empty_load_ms: Option<f64>,
    /// Of it, reading or generating the weights.
    pub start_empty_load_file_ms: Option<f64>,
    /// Of it, packing.
    pub start_empty_pack_ms: Option<f64>,
    /// Its first forward, ms.
    pub start_empty_first_ms: Option<f64>,
    /// Fresh process, disk cache filled by the first: load, ms.
    pub start_disk_load_ms: Option<f64>,
    /// Of it, reading or mapping the weights.
    pub start_disk_load_file_ms: Option<f64>,
    /// Of it, packing or mapping panels.
    pub start_disk_pack_ms: Option<f64>,
    /// Its first forward, ms.
    pub start_disk_first_ms: Option<f64>,
    /// Its weights were mapped from disk.
    pub start_disk_weights_mapped: Option<bool>,
    /// Its packed matrices mapped from disk.
    pub start_disk_packed_mapped: Option<usize>,
    /// Its schedule was read from disk.
    pub start_disk_schedule_from_disk: Option<bool>,
    /// Its kernels loaded from disk (of `cache_misses` in that process).
    pub start_disk_kernels_from_disk: Option<u64>,
    /// A new forward graph in this process, caches warm: build, prepare and run, ms.
    pub start_warm_first_ms: Option<f64>,
    /// The fresh starts whole, for the table.
    #[serde(skip)]
    pub starts: Option<(FreshStart, FreshStart)>,
}

impl ColdsReport {
    /// The report of two fresh starts and this process's warm one.
    pub fn new(empty: FreshStart, disk: FreshStart, warm_ms: f64) -> Self {
        ColdsReport {
            start_empty_load_ms: Some(empty.load_ms),
            start_empty_load_file_ms: Some(empty.load_file_ms),
            start_empty_pack_ms: Some(empty.pack_ms),
            start_empty_first_ms: Some(empty.cold_ms),
            start_disk_load_ms: Some(disk.load_ms),
            start_disk_load_file_ms: Some(disk.load_file_ms),
            start_disk_pack_ms: Some(disk.pack_ms),
            start_disk_first_ms: Some(disk.cold_ms),
            start_disk_weights_mapped: Some(disk.weights_mapped),
            start_disk_packed_mapped: Some(disk.packed_mapped),
            start_disk_schedule_from_disk: Some(disk.cold_schedule_from_disk),
            start_disk_kernels_from_disk: Some(disk.cache_disk_hits),
            start_warm_first_ms: Some(warm_ms),
            starts: Some((empty, disk)),
        }
    }
}

/// Runs this executable's `bench --cold-only` on `dir` and reads its report.
fn fresh_start(a: &BenchArgs, input: &InputReport, dir: &Path) -> anyhow::Result<FreshStart> {
    let json = dir.join("start.json");
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut c = Command::new(exe);
    c.args(["bench", "--cold-only", "--no-probe", "-m", &a.model])
        .args(["--batch-size", &input.batch_size.to_string()])
        .args(["--prompt-len", &input.prompt_len.to_string()])
        .args(["--threads", &input.threads.to_string()])
        .args(["--weights-seed", &a.weights_seed.to_string()])
        .arg("--json")
        .arg(&json)
        .arg("--cache-dir")
        .arg(dir)
        .env_remove("CRANEGRAD_NO_DISK_CACHE")
        .stdout(std::process::Stdio::null());
    if a.unfused_attention {
        c.arg("--unfused-attention");
    }
    if let Some(q) = a.quantize {
        c.args(["--quantize", q.name()]);
    }
    let status = c.status().context("starting a fresh process")?;
    if !status.success() {
        bail!("the fresh process of --colds failed ({status})");
    }
    let text = std::fs::read_to_string(&json).context("reading the fresh process's report")?;
    Ok(serde_json::from_str(&text)?)
}

/// Times the two fresh starts on a temporary cache directory (removed afterwards).
pub fn fresh_starts(
    a: &BenchArgs,
    input: &InputReport,
) -> anyhow::Result<(FreshStart, FreshStart)> {
    let dir = std::env::temp_dir().join(format!("cranegrad-colds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let starts = fresh_start(a, input, &dir).and_then(|e| Ok((e, fresh_start(a, input, &dir)?)));
    let _ = std::fs::remove_dir_all(&dir);
    starts
}

/// A new forward graph of the same input, prepared and run in the warm session.
pub fn in_process(model: &Model, input: &InputReport, cold: &mut Cold) -> anyhow::Result<f64> {
    let t = Instant::now();
    let (_g, out) = model.forward_graph(input.batch_size, input.prompt_len)?;
    cold.session
        .realize(&[&out], &cold.feeds, &Bindings::new())?;
    Ok(ms_since(t))
}
