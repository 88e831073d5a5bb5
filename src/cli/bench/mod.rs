//! `cranegrad bench`: load, cold start, steady-state forward latency, generation, memory,
//! kernel counts and achieved throughput next to this machine's measured limits; optionally
//! side by side with the unfused JIT and the interpreter, a per-kernel profile and a plot.
//!
//! The command runs as phases (load, cold, warm, profile, generate, compare), each in its own
//! file and each returning its part of one [`BenchReport`]; the human table and the `--json`
//! object are both rendered from that report.

mod cold;
mod colds;
mod compare;
mod generate;
mod load;
mod machine;
mod memory;
mod profile;
mod render;
mod sweep;
mod warm;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use cranegrad::benchmark::{latency_svg, peak_rss_bytes, reset_peak_rss};
use cranegrad_models::Model;
use cranegrad_models::quantize::Quantize;
use cranegrad_runtime::Session;

use super::table::write_json;
use super::{checks, interrupt};

/// Where `--profile` writes its Chrome trace without `--trace`.
const DEFAULT_TRACE: &str = "cranegrad-trace.json";

/// Options of `cranegrad bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A preset, a Hugging Face folder, a .gguf file or a minimind JSON file.
    #[arg(long, short = 'm', default_value = "small")]
    model: String,
    /// Batch size (default: the preset's benchmark input); a comma list sweeps.
    #[arg(long, value_delimiter = ',')]
    batch_size: Vec<usize>,
    /// Prompt length (default: the preset's benchmark input); a comma list sweeps.
    #[arg(long, short = 'p', value_delimiter = ',')]
    prompt_len: Vec<usize>,
    /// Generated tokens per request (0 skips generation); a comma list sweeps.
    #[arg(long, short = 'n', value_delimiter = ',')]
    gen_len: Vec<usize>,
    /// Generation requests (at least 1).
    #[arg(long, default_value_t = 3)]
    requests: usize,
    /// Warm-up forwards before timing.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed forwards (default shrinks for big models).
    #[arg(long)]
    iters: Option<usize>,
    /// Threads (default: all cores); a comma list sweeps.
    #[arg(long, short = 't', value_delimiter = ',')]
    threads: Vec<usize>,
    /// Seed of a preset's random weights.
    #[arg(long, default_value_t = 0)]
    weights_seed: u64,
    /// Convert the model's matrices at load: f16, bf16, q8_0, q4_0 (llama.cpp's blocks),
    /// int8 (per output channel) or nf4; q8_0, q4_0 and int8 run from 8-bit panels, bf16
    /// from 16-bit ones, the others from their exact dequantisation (see docs/cli.md).
    #[arg(long, value_parser = Quantize::parse)]
    quantize: Option<Quantize>,
    /// Write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Attention as three kernels (scores, softmax, `@ v`) instead of one flash-attention
    /// kernel, for comparison.
    #[arg(long)]
    unfused_attention: bool,
    /// Also run the unfused JIT and the interpreter on the same inputs.
    #[arg(long)]
    compare: bool,
    /// Per-kernel times, plus a Chrome trace of one forward (`--trace FILE`, default
    /// `cranegrad-trace.json`).
    #[arg(long)]
    profile: bool,
    /// Where `--profile` writes the Chrome trace (default `cranegrad-trace.json`).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Write an SVG plot of per-iteration latency (cold first run vs steady state).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Output format: `table` (the full report), or llama-bench-style rows (prompt processing
    /// `ppP` and text generation `tgN`, tokens/s) as `md`, `csv`, `json` or `jsonl`.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: sweep::Format,
    /// Skip the machine probe (its figures are then null, and no percentages are shown).
    #[arg(long)]
    no_probe: bool,
    /// Repetitions of each row's measurement (its mean ± standard deviation).
    #[arg(short = 'r', long, default_value_t = 5)]
    repetitions: usize,
    /// Also time a start in two fresh processes, on a temporary cache directory: with it
    /// empty, then with what the first left on disk; beside a new forward in this process.
    #[arg(long)]
    colds: bool,
    /// `html:FILE`: write a self-contained HTML view of the benchmarked forward (its graph,
    /// kernels, their IR, machine code and per-kernel times).
    #[arg(long, require_equals = true)]
    dump_graph: Option<String>,
    /// Write an SVG of the memory: planned bytes per kernel of one forward and one decode step
    /// (weights, live activations, KV cache; peak marked), and the resident set over the run.
    #[arg(long)]
    memory_plot: Option<PathBuf>,
    /// Run only the load and the first forward (what `--colds` runs in each fresh process).
    #[arg(long, hide = true)]
    cold_only: bool,
}

impl BenchArgs {
    /// The one value of a list flag (`None` when not given).
    fn one(list: &[usize]) -> Option<usize> {
        list.first().copied()
    }

    /// True for llama-bench-style rows: a sweep, or a row format.
    fn rows(&self) -> bool {
        let sweep = [
            &self.batch_size,
            &self.prompt_len,
            &self.gen_len,
            &self.threads,
        ]
        .iter()
        .any(|l| l.len() > 1);
        // One combination as JSON is the full report's flat object, as --json writes it.
        sweep || !matches!(self.output, sweep::Format::Table | sweep::Format::Json)
    }
}

/// Everything `bench` measured: one part per phase, flattened so `--json` stays one flat
/// object whose keys are the README's.
#[derive(Serialize)]
pub struct BenchReport {
    /// What ran.
    #[serde(flatten)]
    pub input: load::InputReport,
    /// Reading and packing the weights.
    #[serde(flatten)]
    pub load: load::LoadReport,
    /// This machine's measured limits.
    #[serde(flatten)]
    pub machine: machine::MachineReport,
    /// The first forward, in parts.
    #[serde(flatten)]
    pub cold: cold::ColdReport,
    /// The steady-state forward.
    #[serde(flatten)]
    pub warm: warm::WarmReport,
    /// Generation requests and their aggregate.
    #[serde(flatten)]
    pub generation: generate::GenerationReport,
    /// Figures only known once every phase has run.
    #[serde(flatten)]
    pub totals: TotalsReport,
    /// One row per backend with `--compare`, else empty.
    pub compare: Vec<compare::BackendReport>,
    /// The three starts with `--colds`.
    #[serde(flatten)]
    pub colds: colds::ColdsReport,
}

/// What `--cold-only` reports: the load and the first forward.
#[derive(Serialize)]
struct ColdOnlyReport {
    #[serde(flatten)]
    load: load::LoadReport,
    #[serde(flatten)]
    cold: cold::ColdReport,
    cache_misses: u64,
    cache_disk_hits: u64,
}

/// Memory and kernel-cache figures of the whole run.
#[derive(Serialize)]
pub struct TotalsReport {
    /// Peak resident set size since the machine probe, if the OS reports it.
    pub peak_rss_bytes: Option<u64>,
    /// Bytes of the model's weights as held once packed: the raw (f32) copies some kernel
    /// still reads, plus every packed panel in its format.
    pub weights_bytes: usize,
    /// Of those, f32 (raw copies and f32 panels).
    pub weights_bytes_f32: usize,
    /// Of those, bf16 panels.
    pub weights_bytes_bf16: usize,
    /// Of those, f16 panels.
    pub weights_bytes_f16: usize,
    /// Of those, Q8 panels (8-bit values, an f32 scale per block of 32, and an offset or a
    /// second scale in the `q8o` and `q8s` forms).
    pub weights_bytes_q8: usize,
    /// Of those, Q4 panels (4-bit values, an f32 scale and offset per block of 32).
    pub weights_bytes_q4: usize,
    /// Bytes a KV cache for the prompt plus the generated tokens takes.
    pub kv_cache_bytes: usize,
    /// Kernel-cache hits over the whole run.
    pub cache_hits: u64,
    /// Kernel-cache misses (compilations) over the whole run.
    pub cache_misses: u64,
    /// Misses whose kernels were loaded from the disk cache instead of compiled.
    pub cache_disk_hits: u64,
}

/// Bytes of the model's weights as the session holds them, by format: raw copies not freed
/// once packed (f32), plus every packed panel in its format.
fn held_weight_bytes(model: &Model, session: &Session) -> BTreeMap<&'static str, usize> {
    let mut held = session.packed_bytes_by_format().clone();
    let raw = model
        .weights
        .bytes()
        .saturating_sub(session.freed_raw_bytes());
    *held.entry("f32").or_default() += raw;
    held
}

/// Milliseconds since `t`.
fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Runs the command.
pub fn bench(a: BenchArgs) -> anyhow::Result<ExitCode> {
    interrupt::install();
    if a.rows() {
        for (set, flag) in [
            (a.dump_graph.is_some(), "--dump-graph"),
            (a.memory_plot.is_some(), "--memory-plot"),
            (a.colds, "--colds"),
        ] {
            if set {
                anyhow::bail!("{flag} applies to one combination, not to -o rows or a sweep");
            }
        }
        return sweep::sweep(&a);
    }
    let page = super::html_view::page_flag(a.dump_graph.as_deref())?;
    let memory_plot =
        checks::optional_output("--memory-plot", a.memory_plot.as_deref(), Some("svg"))?;
    // Every output is checked writable before the minutes of work.
    let json = if a.output == sweep::Format::Json {
        Some(checks::Output::Stdout)
    } else {
        checks::optional_output("--json", a.json.as_deref(), None)?
    };
    let plot = checks::optional_output("--plot", a.plot.as_deref(), Some("svg"))?;
    let trace = match (&a.trace, a.profile) {
        (Some(_), false) => anyhow::bail!("--trace names where --profile writes; add --profile"),
        (Some(p), true) => Some(checks::output("--trace", p, None)?),
        (None, true) => Some(checks::output(
            "--trace",
            std::path::Path::new(DEFAULT_TRACE),
            None,
        )?),
        (None, false) => None,
    };
    if a.colds && (a.compare || a.profile) {
        anyhow::bail!("--colds times starts alone; run --compare and --profile without it");
    }
    // The fresh processes run before this one loads, so nothing else competes with them.
    let fresh = if a.colds {
        let (db, ds) = cranegrad::workload::default_input(&a.model);
        let input = load::InputReport {
            model: a.model.clone(),
            batch_size: BenchArgs::one(&a.batch_size).unwrap_or(db),
            prompt_len: BenchArgs::one(&a.prompt_len).unwrap_or(ds),
            gen_len: 0,
            threads: checks::threads(BenchArgs::one(&a.threads))?,
        };
        Some(colds::fresh_starts(&a, &input)?)
    } else {
        None
    };
    let mut sampler = memory_plot
        .as_ref()
        .filter(|_| !a.cold_only)
        .map(|_| memory::RssSampler::start("load"));
    let loaded = load::load(&a)?;
    if a.cold_only {
        let cold = cold::cold(&a, &loaded)?;
        let stats = cold.session.cache_stats();
        let report = ColdOnlyReport {
            load: load::LoadReport::new(loaded.file_ms, loaded.weights_mapped, &cold.packing),
            cold: cold.report,
            cache_misses: stats.misses,
            cache_disk_hits: stats.disk_hits,
        };
        if let Some(out) = &json {
            write_json(out, &report)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    memory::mark(&mut sampler, "machine probe");
    let limits = if a.no_probe {
        None
    } else {
        Some(machine::probe(loaded.input.threads)?)
    };
    // The probe's scratch buffers are not the model's memory.
    reset_peak_rss();
    memory::mark(&mut sampler, "cold start");
    let mut cold = cold::cold(&a, &loaded)?;
    memory::mark(&mut sampler, "warm runs");
    let warm = match warm::warm(&mut cold, a.warmup, loaded.iters) {
        Err(_) if interrupt::pending() => {
            eprintln!("[interrupted before any timed forward: nothing to report]");
            return Ok(ExitCode::from(interrupt::EXIT_INTERRUPTED));
        }
        r => r?,
    };
    if let Some(trace) = trace.as_ref().filter(|_| !interrupt::pending()) {
        let p = profile::profile(&mut cold, trace)?;
        print!("{}", p.render(trace));
    }
    let colds = match fresh {
        Some((empty, disk)) => colds::ColdsReport::new(
            empty,
            disk,
            colds::in_process(&loaded.model, &loaded.input, &mut cold)?,
        ),
        None => colds::ColdsReport::default(),
    };
    if let Some(page) = page.as_ref().filter(|_| !interrupt::pending()) {
        super::html_view::write_page(&mut cold.session, &cold.out, &cold.feeds, &a.model, page)?;
    }
    memory::mark(&mut sampler, "generate");
    let generation = generate::generate(&loaded, &mut cold.session, a.requests)?;
    if let (Some(out), Some(s)) = (&memory_plot, sampler) {
        let (rss, marks) = s.finish();
        let weights = (loaded.model.weights.bytes() + cold.packing.stats.bytes)
            .saturating_sub(cold.packing.stats.freed_bytes) as u64;
        let kv = load::kv_cache_bytes(
            &loaded.model,
            loaded.input.batch_size,
            loaded.input.prompt_len + loaded.input.gen_len,
        ) as u64;
        let live = |key: Option<&str>, kv: u64| -> Vec<memory::Live> {
            key.and_then(|k| cold.session.plan(k))
                .map(|p| cranegrad_runtime::planner::live_bytes(&p.lowered.schedule))
                .unwrap_or_default()
                .into_iter()
                .map(|b| memory::Live {
                    weights,
                    activations: b as u64,
                    kv,
                })
                .collect()
        };
        let svg = memory::memory_svg(
            &format!("{} memory", a.model),
            &live(Some(&cold.key), 0),
            &live(generation.decode_plan.as_deref(), kv),
            &rss,
            &marks,
        )?;
        out.write(svg.as_bytes())?;
    }
    let compare = if a.compare && !interrupt::pending() {
        compare::compare(&cold, loaded.input.threads, loaded.iters, &warm)?
    } else {
        Vec::new()
    };

    let stats = cold.session.cache_stats();
    let held = held_weight_bytes(&loaded.model, &cold.session);
    let input = &loaded.input;
    let report = BenchReport {
        load: load::LoadReport::new(loaded.file_ms, loaded.weights_mapped, &cold.packing),
        machine: machine::MachineReport::from(limits.as_ref()),
        totals: TotalsReport {
            peak_rss_bytes: peak_rss_bytes(),
            weights_bytes: held.values().sum(),
            weights_bytes_f32: held.get("f32").copied().unwrap_or(0),
            weights_bytes_bf16: held.get("bf16").copied().unwrap_or(0),
            weights_bytes_f16: held.get("f16").copied().unwrap_or(0),
            weights_bytes_q8: ["q8", "q8o", "q8s"]
                .iter()
                .filter_map(|f| held.get(f))
                .sum(),
            weights_bytes_q4: held.get("q4").copied().unwrap_or(0),
            kv_cache_bytes: load::kv_cache_bytes(
                &loaded.model,
                input.batch_size,
                input.prompt_len + input.gen_len,
            ),
            cache_hits: stats.hits,
            cache_misses: stats.misses,
            cache_disk_hits: stats.disk_hits,
        },
        input: loaded.input.clone(),
        cold: cold.report,
        warm,
        generation,
        compare,
        colds,
    };
    let text = format!(
        "{}{}",
        render::table(&report, loaded.model.config.param_count(), limits.as_ref()),
        render::compare_table(&report)
    );
    // With the JSON on stdout, the table goes to stderr: stdout stays one machine stream.
    if matches!(json, Some(checks::Output::Stdout)) {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    if let Some(p) = &plot {
        let svg = latency_svg(
            &format!("{} forward latency per iteration", a.model),
            &report.warm.latencies_with_cold(report.cold.cold_ms),
        )?;
        p.write(svg.as_bytes())?;
    }
    if let Some(out) = &json {
        write_json(out, &report)?;
    }
    Ok(if interrupt::pending() {
        eprintln!("[interrupted: the figures above cover what ran before Ctrl-C]");
        ExitCode::from(interrupt::EXIT_INTERRUPTED)
    } else if report.compare.iter().any(|c| c.mismatch) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
