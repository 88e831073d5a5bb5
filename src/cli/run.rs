//! `cranegrad run`: build a built-in example, realize it cold (fresh caches) and warm, print
//! the timing table, and optionally dump the graph at every stage.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::Args;
use serde::Serialize;

use cranegrad::builtins::{EXAMPLES, build_example};
use cranegrad::stats::{median, quantile};
use cranegrad::workload::{Workload, model_workload};
use cranegrad_graph::{Bindings, graph_text};
use cranegrad_lower::{LowerOptions, lower_tensors};
use cranegrad_models::quantize::Quantize;
use cranegrad_runtime::{Session, SessionOptions};

use super::checks;
use super::table::{Table, write_json};

/// How `--dump-graph` prints.
#[derive(Clone, Debug)]
pub enum DumpFormat {
    /// Primitive graph, fused schedule with loop nests, totals.
    Text,
    /// Graphviz DOT of the fused graph (kernels as clusters) on stdout.
    Dot,
    /// A self-contained HTML page written to the file (`html:FILE`).
    Html(std::path::PathBuf),
}

/// Parses `--dump-graph`'s value: `text`, `dot` or `html:FILE`.
pub fn parse_dump_format(s: &str) -> Result<DumpFormat, String> {
    match s {
        "text" => Ok(DumpFormat::Text),
        "dot" => Ok(DumpFormat::Dot),
        _ => match s.strip_prefix("html:") {
            Some("") => Err("html: needs a file, as in --dump-graph=html:graph.html".into()),
            Some(f) => Ok(DumpFormat::Html(f.into())),
            None => Err(format!("{s:?} is not text, dot or html:FILE")),
        },
    }
}

/// Options of `cranegrad run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// What to run: `llama` / `gpt2` (a model forward, see --model), `mlp` or `chain`.
    /// Default: the `small` model.
    example: Option<String>,
    /// Model for `llama`/`gpt2`: a preset (small, medium, large, xl, llama-3.2-1b,
    /// smollm-135m, gpt2), a Hugging Face folder, a .gguf file or a minimind JSON file.
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// Seed of the random weights of a preset.
    #[arg(long, default_value_t = 0)]
    weights_seed: u64,
    /// Convert the model's matrices at load: f16, bf16, q8_0, q4_0 (llama.cpp's blocks),
    /// int8 (per output channel) or nf4; q8_0, q4_0 and int8 run from 8-bit panels, bf16
    /// from 16-bit ones, the others from their exact dequantisation (see docs/cli.md).
    #[arg(long, value_parser = Quantize::parse)]
    quantize: Option<Quantize>,
    /// Batch size of the model forward (default: the preset's benchmark input).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Sequence length of the model forward (default: the preset's benchmark input).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Warm iterations after the cold run.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Print the primitive graph, the fused schedule and totals (`text`), Graphviz DOT
    /// (`dot`), or write a self-contained HTML view (`html:FILE`).
    #[arg(long, value_parser = parse_dump_format, num_args = 0..=1, require_equals = true, default_missing_value = "text")]
    dump_graph: Option<DumpFormat>,
    /// One kernel per primitive op (for comparison).
    #[arg(long)]
    no_fuse: bool,
    /// Attention as three kernels (scores, softmax, `@ v`) instead of one flash-attention
    /// kernel, for comparison.
    #[arg(long)]
    unfused_attention: bool,
    /// Threads (default: all cores).
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// Also write the figures as one flat JSON object.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The figures of one `run`, as `--json` writes them (the README's `--json` keys).
#[derive(Serialize)]
struct RunReport {
    /// The example's name (the model spec for a model forward).
    example: String,
    /// Decoder layers of a model forward; absent for the built-in graphs, which have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    layers: Option<usize>,
    /// Whether fusion was on.
    fuse: bool,
    /// Threads, the caller included.
    threads: usize,
    /// Warm iterations.
    iters: usize,
    /// The first realize, everything included.
    cold_ms: f64,
    /// Rewrite passes and scheduling within it.
    passes_ms: f64,
    /// Cranelift compilation within it.
    compile_ms: f64,
    /// Execution within it.
    cold_execute_ms: f64,
    /// Fastest warm realize.
    warm_min_ms: f64,
    /// Median warm realize.
    warm_median_ms: f64,
    /// 90th-percentile warm realize.
    warm_p90_ms: f64,
    /// Kernels with fusion off.
    kernels_unfused: usize,
    /// Kernels with fusion on.
    kernels_fused: usize,
    /// Kernel-cache hits over the whole run.
    cache_hits: u64,
    /// Kernel-cache misses over the whole run.
    cache_misses: u64,
    /// Misses loaded from the disk cache instead of compiled.
    cache_disk_hits: u64,
    /// Planned intermediate memory, bytes.
    arena_bytes: usize,
}

/// Runs the command.
pub fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let json = checks::optional_output("--json", a.json.as_deref(), None)?;
    let html_out = match &a.dump_graph {
        Some(DumpFormat::Html(p)) => Some(checks::output("--dump-graph", p, Some("html"))?),
        _ => None,
    };
    let threads = checks::threads(a.threads)?;
    checks::positive("--iters", a.iters, checks::MAX_COUNT)?;
    if let Some(b) = a.batch_size {
        checks::positive("--batch-size", b, checks::MAX_COUNT)?;
    }
    let is_model = matches!(
        a.example.as_deref(),
        None | Some("llama" | "model" | "gpt2")
    );
    if !is_model {
        for (flag, given) in [
            ("--batch-size", a.batch_size.is_some()),
            ("--seq-len", a.seq_len.is_some()),
        ] {
            if given {
                return Err(anyhow!(
                    "{flag} applies to `run llama` and `run gpt2`, not to the {} example (its input is fixed)",
                    a.example.as_deref().unwrap_or("")
                ));
            }
        }
    }
    let ex: Workload = match a.example.as_deref() {
        None | Some("llama") | Some("model") | Some("gpt2") => {
            let default = if a.example.as_deref() == Some("gpt2") {
                "gpt2"
            } else {
                "small"
            };
            let spec = a.model.clone().unwrap_or_else(|| default.to_string());
            let pb = super::progress::spinner(&format!("reading {spec}"));
            let w = model_workload(&spec, a.weights_seed, a.batch_size, a.seq_len, a.quantize)?;
            pb.finish_and_clear();
            w
        }
        Some(name) => {
            if a.model.is_some() {
                return Err(anyhow!(
                    "--model applies to `run llama`, not to the {name} example"
                ));
            }
            build_example(name)
                .ok_or_else(|| {
                    anyhow!(
                        "unknown example {name:?}; choose llama, gpt2 or one of {}",
                        EXAMPLES.join(", ")
                    )
                })?
                .context("building the example graph")?
                .into()
        }
    };
    let mut opts = SessionOptions {
        fuse: !a.no_fuse,
        ..SessionOptions::default()
    };
    opts.threads = threads;
    let out = &ex.output;
    let ids = [out.id()];
    let count = |fuse: bool| -> anyhow::Result<usize> {
        let attention = !a.unfused_attention;
        let l = lower_tensors(
            &[out],
            LowerOptions {
                fuse,
                attention,
                ..Default::default()
            },
        )?;
        Ok(l.schedule.launches.len())
    };
    let kernels_unfused = count(false)?;
    let kernels_fused = count(true)?;

    let mut session = Session::new(opts)?;
    session.set_attention_fusion(!a.unfused_attention);
    let (feeds, bindings) = (ex.feeds.clone(), Bindings::new());
    let pb = super::progress::spinner("compiling and running the first forward");
    let first = session.realize(&[out], &feeds, &bindings);
    pb.finish_and_clear();
    first?;
    let cold = session.last_report().clone();
    let mut warm = Vec::with_capacity(a.iters);
    for _ in 0..a.iters {
        session.realize(&[out], &feeds, &bindings)?;
        warm.push(session.last_report().total_ms);
    }
    let stats = session.cache_stats();

    // Stdout carries one machine-readable stream when asked: DOT or `--json -`.
    let to_stdout_table = !matches!(a.dump_graph, Some(DumpFormat::Dot))
        && !matches!(json, Some(checks::Output::Stdout));
    if let Some(fmt) = &a.dump_graph {
        let key = session.prepare(&[out])?;
        if let (DumpFormat::Html(_), Some(page)) = (fmt, &html_out) {
            super::html_view::write_page(&mut session, out, &feeds, &ex.name, page)?;
        }
        let plan = session.plan(&key).expect("prepared");
        match fmt {
            DumpFormat::Html(_) => {}
            DumpFormat::Text => {
                println!(
                    "== primitive graph ({} nodes)",
                    out.graph().with(|g| g.topo_from(&ids).len())
                );
                print!("{}", out.graph().with(|g| graph_text(g, &ids)));
                println!("\n== passes");
                for p in &plan.lowered.passes {
                    println!(
                        "  {:<8} {:<34} changed {:>5}  nodes {:>5}  {:>8.1} us",
                        p.stage.name(),
                        p.name,
                        p.changed,
                        p.nodes,
                        p.micros
                    );
                }
                println!("\n== fused schedule ({} kernels)", plan.kernel_count());
                print!("{}", plan.lowered.schedule.text());
                println!("\n== compilation (this process)");
                for (i, k) in plan.kernels.iter().enumerate() {
                    if k.cache_hit {
                        println!("  kernel {i:<4} {:<28} cache hit", k.name);
                    } else {
                        println!(
                            "  kernel {i:<4} {:<28} {:>8.1} us",
                            k.name, k.compile_micros
                        );
                    }
                }
                println!("\n== totals");
                println!("  kernels: {kernels_unfused} unfused -> {kernels_fused} fused");
                println!(
                    "  planned intermediate memory: {} bytes (without reuse {})",
                    plan.memory.arena_bytes, plan.memory.unplanned_bytes
                );
                println!();
            }
            DumpFormat::Dot => {
                print!("{}", plan.lowered.schedule.dot(&plan.lowered.graph));
            }
        }
    }

    let wm = median(&warm);
    let p90 = quantile(&warm, 0.9);
    let mut t = Table::default();
    t.row("example", format!("{} — {}", ex.name, ex.about))
        .row(
            "fusion",
            match (a.no_fuse, a.unfused_attention) {
                (true, _) => "off (--no-fuse)",
                (false, true) => "on, attention unfused (--unfused-attention)",
                (false, false) => "on",
            },
        )
        .row("threads", opts.threads.to_string())
        .row(
            "kernels",
            format!(
                "{kernels_unfused} unfused -> {kernels_fused} fused (this run: {})",
                cold.kernels
            ),
        )
        .row(
            "cold",
            format!(
                "{:.3} ms (passes {:.3}, compile {:.3}, execute {:.3})",
                cold.total_ms, cold.passes_ms, cold.compile_ms, cold.execute_ms
            ),
        )
        .row(
            "warm",
            format!("median {wm:.3} ms, p90 {p90:.3} ms over {} iters", a.iters),
        )
        .row(
            "kernel cache",
            format!(
                "{} hits, {} misses ({} of them loaded from the disk cache)",
                stats.hits, stats.misses, stats.disk_hits
            ),
        )
        .row("arena", format!("{} bytes planned", cold.arena_bytes));
    let text = t.render();
    if to_stdout_table {
        print!("{text}");
    } else {
        eprint!("{text}");
    }
    if let Some(out) = json {
        let report = RunReport {
            example: ex.name.clone(),
            layers: ex.kernels_per_layer.map(|k| k.0),
            fuse: !a.no_fuse,
            threads: opts.threads,
            iters: a.iters,
            cold_ms: cold.total_ms,
            passes_ms: cold.passes_ms,
            compile_ms: cold.compile_ms,
            cold_execute_ms: cold.execute_ms,
            warm_min_ms: quantile(&warm, 0.0),
            warm_median_ms: wm,
            warm_p90_ms: p90,
            kernels_unfused,
            kernels_fused,
            cache_hits: stats.hits,
            cache_misses: stats.misses,
            cache_disk_hits: stats.disk_hits,
            arena_bytes: cold.arena_bytes,
        };
        write_json(&out, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}
