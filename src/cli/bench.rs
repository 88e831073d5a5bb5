//! `cranegrad bench`: load, cold start, steady-state forward latency, generation, memory,
//! kernel counts and achieved throughput next to this machine's measured limits; optionally
//! side by side with the unfused JIT and the interpreter, a per-kernel profile and a plot.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value as Json, json};

use cranegrad::benchmark::{
    chrome_trace, latency_svg, max_abs_diff, peak_rss_bytes, work_estimate,
};
use cranegrad::stats::{median, quantile};
use cranegrad::workload::{default_input, sample_tokens};
use cranegrad_graph::{Bindings, HostData, Tensor};
use cranegrad_lower::{LowerOptions, lower};
use cranegrad_models::Model;
use cranegrad_models::generate::Generator;
use cranegrad_models::loader::ModelConfig;
use cranegrad_models::sample::{Sampler, SamplingParams};
use cranegrad_runtime::probe::probe_machine;
use cranegrad_runtime::{Feeds, Session, SessionOptions, interpret_tensors};

use super::table::{Table, write_json};

/// Options of `cranegrad bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A preset, a Hugging Face folder, a .gguf file or a minimind JSON file.
    #[arg(long, default_value = "small")]
    model: String,
    /// Batch size (default: the preset's benchmark input).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Prompt length (default: the preset's benchmark input).
    #[arg(long)]
    prompt_len: Option<usize>,
    /// Generated tokens per request (0 skips generation).
    #[arg(long)]
    gen_len: Option<usize>,
    /// Generation requests.
    #[arg(long, default_value_t = 3)]
    requests: usize,
    /// Warm-up forwards before timing.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed forwards (default shrinks for big models).
    #[arg(long)]
    iters: Option<usize>,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Seed of a preset's random weights.
    #[arg(long, default_value_t = 0)]
    weights_seed: u64,
    /// Write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also run the unfused JIT and the interpreter on the same inputs.
    #[arg(long)]
    compare: bool,
    /// Per-kernel times, plus a Chrome trace of one forward (`--trace FILE`, default
    /// `cranegrad-trace.json`).
    #[arg(long)]
    profile: bool,
    /// Where `--profile` writes the Chrome trace.
    #[arg(long, default_value = "cranegrad-trace.json")]
    trace: PathBuf,
    /// Write an SVG plot of per-iteration latency (cold first run vs steady state).
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

fn forward(model: &Model, b: usize, s: usize) -> anyhow::Result<(Tensor, Feeds)> {
    let (_g, out) = model.forward_graph(b, s)?;
    let mut feeds = Feeds::new();
    feeds.insert(
        "tokens".into(),
        HostData::from(sample_tokens(b, s, model.vocab())),
    );
    Ok((out, feeds))
}

/// Runs the command.
pub fn bench(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let threads = a
        .threads
        .unwrap_or_else(|| SessionOptions::default().threads)
        .max(1);
    let spinner = ProgressBar::new_spinner();
    spinner.set_message("probing the machine");
    let limits = probe_machine(threads)?;
    spinner.set_message(format!("loading {}", a.model));
    let t = Instant::now();
    let model =
        Model::load(&a.model, a.weights_seed).with_context(|| format!("loading {}", a.model))?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    spinner.finish_and_clear();
    let (db, ds) = default_input(&a.model);
    let b = a.batch_size.unwrap_or(db).max(1);
    let s = a.prompt_len.unwrap_or(ds).clamp(1, model.max_positions());
    let big = model.weights.param_count() > 200_000_000;
    let gen_len = a
        .gen_len
        .unwrap_or(if a.model == "llama-3.2-1b" { 32 } else { 16 });
    let iters = a.iters.unwrap_or(if big { 3 } else { 20 }).max(1);

    // Cold: the first forward in a fresh session (empty kernel and plan caches).
    let (out, feeds) = forward(&model, b, s)?;
    let ids = [out.id()];
    let kernels_unfused = out
        .graph()
        .with(|g| lower(g, &ids, LowerOptions { fuse: false }))?
        .schedule
        .launches
        .len();
    let mut session = Session::new(SessionOptions {
        fuse: true,
        threads,
    })?;
    let none = Bindings::new();
    let fused_out = session.realize(&[&out], &feeds, &none)?[0].to_f32();
    let cold = session.last_report().clone();
    let key = session.prepare(&[&out])?;
    let (flops, bytes) = work_estimate(&session.plan(&key).expect("prepared").lowered.schedule);
    let arena_bytes = cold.arena_bytes;

    // Steady state.
    let pb = bar((a.warmup + iters) as u64, "forward");
    let mut lat = vec![cold.total_ms];
    for i in 0..a.warmup + iters {
        session.realize(&[&out], &feeds, &none)?;
        if i >= a.warmup {
            lat.push(session.last_report().total_ms);
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let warm = &lat[1..];
    let (wmin, wmed, wp90) = (quantile(warm, 0.0), median(warm), quantile(warm, 0.9));
    let gflops = flops / wmed / 1e6;
    let gbps = bytes / wmed / 1e6;

    // Profile one forward.
    let mut profile_rows = Vec::new();
    if a.profile {
        let plan = session.plan_mut(&key).expect("prepared");
        plan.profile = true;
        plan.timings.clear();
        session.realize(&[&out], &feeds, &none)?;
        let plan = session.plan_mut(&key).expect("prepared");
        plan.profile = false;
        let launches = &plan.lowered.schedule.launches;
        let total: f64 = plan.timings.iter().map(|t| t.micros).sum();
        let t0 = plan.timings.first().map_or(0.0, |t| t.start_us);
        let mut events = Vec::new();
        for t in &plan.timings {
            let k = &launches[t.launch].kernel;
            let one = cranegrad_lower::Schedule {
                launches: vec![launches[t.launch].clone()],
                ..Default::default()
            };
            let (f, by) = work_estimate(&one);
            profile_rows.push((k.name.clone(), k.ops.join("+"), t.micros, f, by));
            events.push((k.name.clone(), k.ops.join("+"), t.start_us - t0, t.micros));
        }
        std::fs::write(&a.trace, chrome_trace(&events))
            .with_context(|| format!("writing {}", a.trace.display()))?;
        profile_rows.sort_by(|x, y| y.2.total_cmp(&x.2));
        println!(
            "per-kernel profile of one forward ({:.3} ms in kernels; trace: {})",
            total / 1e3,
            a.trace.display()
        );
        println!(
            "  {:<28} {:>9} {:>7} {:>9} {:>8}  ops",
            "kernel", "us", "%", "GFLOP/s", "GB/s"
        );
        for (name, ops, us, f, by) in &profile_rows {
            println!(
                "  {name:<28} {us:>9.1} {:>6.1}% {:>9.2} {:>8.2}  {}",
                100.0 * us / total.max(1e-9),
                f / us / 1e3,
                by / us / 1e3,
                if ops.len() > 60 {
                    format!("{}...", &ops[..60])
                } else {
                    ops.clone()
                }
            );
        }
        println!();
    }

    // Generation.
    let (mut ttft, mut decode, mut decode_kernels) = (None, None, None);
    if gen_len > 0 {
        let ctx = (s + gen_len).min(model.max_positions());
        if s + gen_len > model.max_positions() {
            anyhow::bail!(
                "--prompt-len {s} + --gen-len {gen_len} exceeds the model's {} positions",
                model.max_positions()
            );
        }
        let prompt: Vec<Vec<i32>> = sample_tokens(b, s, model.vocab())
            .chunks(s)
            .map(<[i32]>::to_vec)
            .collect();
        let pb = bar((a.requests.max(1) * gen_len) as u64, "generate");
        let (mut ttfts, mut steps) = (Vec::new(), Vec::new());
        let v = model.vocab();
        for r in 0..a.requests.max(1) {
            let mut g = Generator::new(&model, &mut session, b, ctx)?;
            let mut sampler = Sampler::new(SamplingParams::default(), r as u64);
            let t0 = Instant::now();
            let mut logits = g.prefill(&mut session, &prompt)?;
            let mut next: Vec<i32> = (0..b)
                .map(|i| sampler.sample(&logits[i * v..(i + 1) * v], &[]))
                .collect();
            ttfts.push(t0.elapsed().as_secs_f64() * 1e3);
            pb.inc(1);
            for _ in 1..gen_len {
                let t = Instant::now();
                logits = g.step(&mut session, &next)?;
                steps.push(t.elapsed().as_secs_f64() * 1e3);
                next = (0..b)
                    .map(|i| sampler.sample(&logits[i * v..(i + 1) * v], &[]))
                    .collect();
                pb.inc(1);
                if decode_kernels.is_none() {
                    decode_kernels = Some(session.last_report().kernels);
                }
            }
        }
        pb.finish_and_clear();
        // Warm TTFT: requests after the first (whose prefill compiled).
        ttft = Some(median(if ttfts.len() > 1 { &ttfts[1..] } else { &ttfts }));
        decode = (!steps.is_empty()).then(|| median(&steps));
    }
    let tokens_per_s = decode.map(|d| b as f64 * 1000.0 / d);
    // A decode step reads every weight once (the bandwidth bound of batch-1 decode).
    let decode_gbps = decode.map(|d| model.weights.bytes() as f64 / d / 1e6);

    // Compare backends on the same inputs.
    let mut compare = Vec::new();
    if a.compare {
        compare.push(json!({"backend": "fused", "warm_median_ms": wmed, "max_abs_diff": 0.0}));
        let mut un = Session::new(SessionOptions {
            fuse: false,
            threads,
        })?;
        let uo = un.realize(&[&out], &feeds, &none)?[0].to_f32();
        let ut: Vec<f64> = (0..iters.min(5))
            .map(|_| {
                un.realize(&[&out], &feeds, &none)
                    .map(|_| un.last_report().total_ms)
            })
            .collect::<Result<_, _>>()?;
        let (d, bad) = max_abs_diff(&uo, &fused_out, 1e-3);
        compare.push(json!({"backend": "unfused", "warm_median_ms": median(&ut), "max_abs_diff": d, "mismatch": bad}));
        // The interpreter is skipped above ~2 GFLOP per forward (minutes).
        if flops < 2e9 {
            let t = Instant::now();
            let io = interpret_tensors(&[&out], &feeds, &none)?[0].to_f32();
            let ims = t.elapsed().as_secs_f64() * 1e3;
            let (d, bad) = max_abs_diff(&io, &fused_out, 1e-3);
            compare.push(json!({"backend": "interpreter", "warm_median_ms": ims, "max_abs_diff": d, "mismatch": bad}));
        }
    }

    let stats = session.cache_stats();
    let rss = peak_rss_bytes();
    let kv_bytes = match &model.config {
        ModelConfig::Llama(c) => 2 * c.layers * b * (s + gen_len) * c.kv_heads * c.head_dim * 4,
        ModelConfig::Gpt2(c) => 2 * c.n_layer * b * (s + gen_len) * c.n_embd * 4,
    };
    let opt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
    let mut t = Table::default();
    t.row("model", format!("{} ({} parameters)", a.model, model.weights.param_count()))
        .row("input", format!("batch {b}, prompt {s}, generate {gen_len}, {threads} threads"))
        .row("machine", format!(
            "FMA peak {:.1} GFLOP/s ({:.1} on 1 thread), DRAM copy {:.1} GB/s (measured now)",
            limits.fma_gflops, limits.fma_gflops_1t, limits.dram_copy_gbps
        ))
        .row("load", format!("{load_ms:.1} ms"))
        .row("cold forward", format!(
            "{:.2} ms = hash {:.2} + passes {:.2} + compile {:.2} ({} kernels) + execute {:.2}",
            cold.total_ms, cold.hash_ms, cold.passes_ms, cold.compile_ms, cold.cache_misses, cold.execute_ms
        ))
        .row("warm forward", format!("min {wmin:.3} / median {wmed:.3} / p90 {wp90:.3} ms over {iters}"))
        .row("throughput", format!(
            "{gflops:.1} GFLOP/s ({:.0}% of peak), {gbps:.1} GB/s ({:.0}% of DRAM)",
            100.0 * gflops / limits.fma_gflops,
            100.0 * gbps / limits.dram_copy_gbps
        ))
        .row("generation", format!(
            "TTFT {} ms, decode {} ms/token, {} tokens/s{}",
            opt(ttft),
            opt(decode),
            tokens_per_s.map_or("-".into(), |v| format!("{v:.1}")),
            decode_gbps.map_or(String::new(), |g| format!(
                "; weights streamed at {g:.1} GB/s = {:.0}% of DRAM copy bandwidth",
                100.0 * g / limits.dram_copy_gbps
            ))
        ))
        .row("kernels", format!(
            "{kernels_unfused} unfused -> {} fused (prefill), {} per decode step; cache {} hits / {} misses",
            cold.kernels,
            decode_kernels.map_or("-".into(), |k| k.to_string()),
            stats.hits,
            stats.misses
        ))
        .row("memory", format!(
            "peak RSS {} MB; weights {} MB, activations (planned) {} KB, KV cache {} KB",
            rss.map_or("-".into(), |r| (r >> 20).to_string()),
            model.weights.bytes() >> 20,
            arena_bytes >> 10,
            kv_bytes >> 10
        ));
    print!("{}", t.render());
    let mut mismatch = false;
    if !compare.is_empty() {
        println!(
            "\n  {:<12} {:>14} {:>10} {:>14}",
            "backend", "warm median ms", "vs fused", "max |diff|"
        );
        for c in &compare {
            let ms = c["warm_median_ms"].as_f64().unwrap_or(0.0);
            mismatch |= c["mismatch"].as_bool().unwrap_or(false);
            println!(
                "  {:<12} {ms:>14.3} {:>9.1}x {:>14.3e}{}",
                c["backend"].as_str().unwrap_or(""),
                ms / wmed,
                c["max_abs_diff"].as_f64().unwrap_or(0.0),
                if c["mismatch"].as_bool().unwrap_or(false) {
                    "  MISMATCH"
                } else {
                    ""
                }
            );
        }
    }
    if let Some(p) = &a.plot {
        std::fs::write(
            p,
            latency_svg(&format!("{} forward latency per iteration", a.model), &lat),
        )
        .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.json {
        let mut m = Map::new();
        let mut put = |k: &str, v: Json| {
            m.insert(k.into(), v);
        };
        put("model", json!(a.model));
        put("batch_size", json!(b));
        put("prompt_len", json!(s));
        put("gen_len", json!(gen_len));
        put("threads", json!(threads));
        put("load_ms", json!(load_ms));
        put("cold_ms", json!(cold.total_ms));
        put("cold_passes_ms", json!(cold.passes_ms));
        put("cold_execute_ms", json!(cold.execute_ms));
        put("compile_ms", json!(cold.compile_ms));
        put("kernels_compiled", json!(cold.cache_misses));
        put("warm_min_ms", json!(wmin));
        put("warm_median_ms", json!(wmed));
        put("warm_p90_ms", json!(wp90));
        put("ttft_ms", json!(ttft));
        put("decode_ms_per_token", json!(decode));
        put("tokens_per_s", json!(tokens_per_s));
        put("decode_weight_gbps", json!(decode_gbps));
        put("peak_rss_bytes", json!(rss));
        put("weights_bytes", json!(model.weights.bytes()));
        put("activations_bytes", json!(arena_bytes));
        put("kv_cache_bytes", json!(kv_bytes));
        put("kernels_unfused", json!(kernels_unfused));
        put("kernels_fused", json!(cold.kernels));
        put("kernels_fused_decode", json!(decode_kernels));
        put("cache_hits", json!(stats.hits));
        put("cache_misses", json!(stats.misses));
        put("forward_gflops", json!(gflops));
        put("forward_gbps", json!(gbps));
        put("peak_gflops", json!(limits.fma_gflops));
        put("dram_gbps", json!(limits.dram_copy_gbps));
        put("compare", Json::Array(compare.clone()));
        write_json(p, &m)?;
    }
    Ok(if mismatch {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
