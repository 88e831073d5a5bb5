//! `cranegrad bench`: load, cold start, steady-state forward latency, generation, memory,
//! kernel counts and achieved throughput next to this machine's measured limits; optionally
//! side by side with the unfused JIT and the interpreter, a per-kernel profile and a plot.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value as Json, json};

use cranegrad::benchmark::{
    chrome_trace, kernel_profile, latency_svg, max_abs_diff, peak_rss_bytes, reset_peak_rss,
    spread, work_estimate,
};
use cranegrad::stats::{median, quantile};
use cranegrad::workload::{default_input, sample_tokens};
use cranegrad_graph::{Bindings, HostData, Tensor};
use cranegrad_lower::{LowerOptions, lower_tensors};
use cranegrad_models::Model;
use cranegrad_models::generate::Generator;
use cranegrad_models::loader::ModelConfig;
use cranegrad_models::presets::preset;
use cranegrad_models::sample::{Sampler, SamplingParams};
use cranegrad_runtime::probe::probe_machine;
use cranegrad_runtime::{Feeds, Session, SessionOptions, interpret_tensors};

use super::table::{Table, write_json};

/// Test-only hook of the harness's self-test: a number added to one logit of the unfused
/// backend's output inside `--compare`, so a test can check that a real numerical mismatch is
/// caught (printed `MISMATCH`, exit code 1). Never set it outside that test.
const PLANT_MISMATCH_ENV: &str = "CRANEGRAD_PLANT_MISMATCH";

/// Largest logit difference between backends that still counts as agreement.
const TOLERANCE: f64 = 1e-3;

/// The interpreter is run more than once only while one run stays under this (ms).
const INTERPRETER_REPEAT_MS: f64 = 500.0;

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
    /// Generation requests (at least 1).
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

/// A spinner that keeps ticking while the caller blocks in one long call (load, compile,
/// the interpreter). Like every bar here it draws on stderr and only to a terminal; when it is
/// hidden no ticker thread is started, so it cannot disturb the timings.
fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(msg.to_string());
    if !pb.is_hidden() {
        pb.enable_steady_tick(Duration::from_millis(80));
    }
    pb
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
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

/// Fails when the prompt plus the generated tokens do not fit the model's positions.
fn check_context(max_positions: usize, prompt: usize, gen_len: usize) -> anyhow::Result<()> {
    if gen_len > 0 && prompt + gen_len > max_positions {
        anyhow::bail!(
            "--prompt-len {prompt} + --gen-len {gen_len} exceeds the model's {max_positions} positions"
        );
    }
    Ok(())
}

/// Figures of one generation request.
struct Request {
    /// Prefill plus the first sampled token.
    ttft_ms: f64,
    /// Median decode step, if there was one.
    decode_ms: Option<f64>,
    /// Every decode step.
    step_ms: Vec<f64>,
    /// Kernels compiled during the request (the first compiles prefill and decode).
    compiled: u64,
}

/// Runs the command.
pub fn bench(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let threads = a
        .threads
        .unwrap_or_else(|| SessionOptions::default().threads)
        .max(1);
    if a.requests == 0 {
        anyhow::bail!("--requests must be at least 1");
    }
    let (db, ds) = default_input(&a.model);
    let b = a.batch_size.unwrap_or(db).max(1);
    let gen_len = a
        .gen_len
        .unwrap_or(if a.model == "llama-3.2-1b" { 32 } else { 16 });
    // A preset's context is known without loading it, so a request that cannot fit fails
    // before the seconds of generating random weights; a file's is checked right after load.
    if let Some(cfg) = preset(&a.model) {
        check_context(
            cfg.max_positions(),
            a.prompt_len.unwrap_or(ds).max(1),
            gen_len,
        )?;
    }

    let pb = spinner(&format!("loading {}", a.model));
    let t = Instant::now();
    let model =
        Model::load(&a.model, a.weights_seed).with_context(|| format!("loading {}", a.model))?;
    let file_ms = ms_since(t);
    pb.finish_and_clear();
    let s = a.prompt_len.unwrap_or(ds).clamp(1, model.max_positions());
    check_context(model.max_positions(), s, gen_len)?;
    let big = model.weights.param_count() > 200_000_000;
    let iters = a.iters.unwrap_or(if big { 3 } else { 20 }).max(1);

    let pb = spinner("probing the machine");
    let limits = probe_machine(threads)?;
    pb.finish_and_clear();
    reset_peak_rss();

    // Cold: the first forward in a fresh session (empty kernel and plan caches), timed in
    // parts that add up to `cold_ms`: session creation, graph build, hash, passes, compile,
    // plan setup and execution. Packing the weights sits between compile and execution
    // (it needs the plan) but is timed apart and counted as loading.
    let pb = spinner("cold start: building and compiling the forward");
    let t = Instant::now();
    let mut session = Session::new(SessionOptions {
        fuse: true,
        threads,
    })?;
    session.set_attention_fusion(!a.unfused_attention);
    // Raw weights are freed once packed, except when the unfused JIT and the interpreter,
    // which read them raw, run beside it.
    session.set_free_raw_weights(!a.compare);
    let session_ms = ms_since(t);
    let t = Instant::now();
    let (out, feeds) = forward(&model, b, s)?;
    let build_ms = ms_since(t);
    let t = Instant::now();
    let key = session.prepare(&[&out])?;
    let prepare_ms = ms_since(t);
    let prep = session.last_report().clone();
    pb.finish_and_clear();
    let pb = spinner("packing weights");
    let t = Instant::now();
    let packs = session.prepack(&[&out], &feeds)?;
    let pack_ms = ms_since(t);
    let packed_before_run = session.packed().0;
    pb.finish_and_clear();
    let load_ms = file_ms + pack_ms;
    let none = Bindings::new();
    let fused_out = session.realize(&[&out], &feeds, &none)?[0].to_f32();
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
    let plan = session.plan(&key).expect("prepared");
    let compile_us: Vec<f64> = plan
        .kernels
        .iter()
        .filter(|k| !k.cache_hit)
        .map(|k| k.compile_micros)
        .collect();
    let compile_spread = spread(&compile_us);
    let (flops, bytes) = work_estimate(&plan.lowered.schedule);
    let arena_bytes = prep.arena_bytes;
    let unfused = LowerOptions {
        fuse: false,
        ..Default::default()
    };
    let kernels_unfused = lower_tensors(&[&out], unfused)?.schedule.launches.len();

    // Steady state.
    let pb = bar((a.warmup + iters) as u64, "forward");
    let mut lat = vec![cold_ms];
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

    // Profile one forward: per compiled kernel, against that forward's wall time.
    if a.profile {
        let plan = session.plan_mut(&key).expect("prepared");
        plan.profile = true;
        plan.timings.clear();
        session.realize(&[&out], &feeds, &none)?;
        let wall_us = session.last_report().total_ms * 1e3;
        let plan = session.plan_mut(&key).expect("prepared");
        plan.profile = false;
        let launches = &plan.lowered.schedule.launches;
        let in_kernels: f64 = plan.timings.iter().map(|t| t.micros).sum();
        let t0 = plan.timings.first().map_or(0.0, |t| t.start_us);
        let events: Vec<_> = plan
            .timings
            .iter()
            .map(|t| {
                let k = &launches[t.launch].kernel;
                (k.name.clone(), k.ops.join("+"), t.start_us - t0, t.micros)
            })
            .collect();
        std::fs::write(&a.trace, chrome_trace(&events))
            .with_context(|| format!("writing {}", a.trace.display()))?;
        let timed: Vec<(usize, f64)> = plan.timings.iter().map(|t| (t.launch, t.micros)).collect();
        let rows = kernel_profile(&plan.lowered.schedule, &timed);
        println!(
            "per-kernel profile of one forward: {:.3} ms wall, {:.3} ms in {} launches of {} \
             compiled kernels (trace: {})",
            wall_us / 1e3,
            in_kernels / 1e3,
            timed.len(),
            rows.len(),
            a.trace.display()
        );
        println!(
            "  {:<24} {:>5} {:>9} {:>7} {:>9} {:>8}  ops",
            "kernel", "calls", "total ms", "% fwd", "GFLOP/s", "GB/s"
        );
        for r in &rows {
            let ops = if r.ops.len() > 60 {
                format!("{}...", &r.ops[..60])
            } else {
                r.ops.clone()
            };
            println!(
                "  {:<24} {:>5} {:>9.3} {:>6.1}% {:>9.2} {:>8.2}  {ops}",
                r.name,
                r.calls,
                r.micros / 1e3,
                100.0 * r.micros / wall_us.max(1e-9),
                r.flops / r.micros.max(1e-9) / 1e3,
                r.bytes / r.micros.max(1e-9) / 1e3,
            );
        }
        println!();
    }

    // Generation.
    let mut requests: Vec<Request> = Vec::new();
    let mut decode_kernels = None;
    if gen_len > 0 {
        let ctx = (s + gen_len).min(model.max_positions());
        let prompt: Vec<Vec<i32>> = sample_tokens(b, s, model.vocab())
            .chunks(s)
            .map(<[i32]>::to_vec)
            .collect();
        let pb = bar((a.requests * gen_len) as u64, "generate");
        let v = model.vocab();
        for r in 0..a.requests {
            let misses = session.cache_stats().misses;
            let mut g = Generator::new(&model, &mut session, b, ctx)?;
            let mut sampler = Sampler::new(SamplingParams::default(), r as u64);
            let t0 = Instant::now();
            let mut logits = g.prefill(&mut session, &prompt)?;
            let mut next: Vec<i32> = (0..b)
                .map(|i| sampler.sample(&logits[i * v..(i + 1) * v], &[]))
                .collect();
            let ttft_ms = ms_since(t0);
            pb.inc(1);
            let mut own = Vec::new();
            for _ in 1..gen_len {
                let t = Instant::now();
                logits = g.step(&mut session, &next)?;
                own.push(ms_since(t));
                next = (0..b)
                    .map(|i| sampler.sample(&logits[i * v..(i + 1) * v], &[]))
                    .collect();
                pb.inc(1);
                if decode_kernels.is_none() {
                    decode_kernels = Some(session.last_report().kernels);
                }
            }
            requests.push(Request {
                ttft_ms,
                decode_ms: (!own.is_empty()).then(|| median(&own)),
                step_ms: own,
                compiled: session.cache_stats().misses - misses,
            });
        }
        pb.finish_and_clear();
    }
    // The aggregate is warm: requests after the first, whose prefill and decode steps compile
    // (with one request there is nothing else to report).
    let warm_requests = if requests.len() > 1 {
        &requests[1..]
    } else {
        &requests[..]
    };
    let ttfts: Vec<f64> = warm_requests.iter().map(|r| r.ttft_ms).collect();
    let ttft = (!ttfts.is_empty()).then(|| median(&ttfts));
    let warm_steps: Vec<f64> = warm_requests
        .iter()
        .flat_map(|r| r.step_ms.iter().copied())
        .collect();
    let decode = (!warm_steps.is_empty()).then(|| median(&warm_steps));
    let per_s = |d: f64| b as f64 * 1000.0 / d;
    let tokens_per_s = decode.map(per_s);
    // A decode step reads every weight once (the bandwidth bound of batch-1 decode).
    let decode_gbps = decode.map(|d| model.weights.bytes() as f64 / d / 1e6);

    // Compare backends on the same inputs.
    let mut compare = Vec::new();
    if a.compare {
        let pb = spinner("comparing backends");
        compare.push(
            json!({"backend": "fused", "warm_median_ms": wmed, "runs": iters,
            "max_abs_diff": 0.0, "mismatch": false}),
        );
        let mut un = Session::new(SessionOptions {
            fuse: false,
            threads,
        })?;
        let mut uo = un.realize(&[&out], &feeds, &none)?[0].to_f32();
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
                un.realize(&[&out], &feeds, &none)
                    .map(|_| un.last_report().total_ms)
            })
            .collect::<Result<_, _>>()?;
        let (d, bad) = max_abs_diff(&uo, &fused_out, TOLERANCE);
        compare.push(
            json!({"backend": "unfused", "warm_median_ms": median(&ut), "runs": runs,
            "max_abs_diff": d, "mismatch": bad}),
        );
        // The interpreter is skipped above ~2 GFLOP per forward (minutes), and repeated (for a
        // median of 3) only while one run is cheap.
        if flops < 2e9 {
            let t = Instant::now();
            let io = interpret_tensors(&[&out], &feeds, &none)?[0].to_f32();
            let mut it = vec![ms_since(t)];
            while it.len() < 3 && it[0] < INTERPRETER_REPEAT_MS {
                let t = Instant::now();
                interpret_tensors(&[&out], &feeds, &none)?;
                it.push(ms_since(t));
            }
            let (d, bad) = max_abs_diff(&io, &fused_out, TOLERANCE);
            compare.push(
                json!({"backend": "interpreter", "warm_median_ms": median(&it),
                "runs": it.len(), "max_abs_diff": d, "mismatch": bad}),
            );
        }
        pb.finish_and_clear();
    }

    let stats = session.cache_stats();
    let rss = peak_rss_bytes();
    let kv_bytes = match &model.config {
        ModelConfig::Llama(c) => 2 * c.layers * b * (s + gen_len) * c.kv_heads * c.head_dim * 4,
        ModelConfig::Gpt2(c) => 2 * c.n_layer * b * (s + gen_len) * c.n_embd * 4,
    };
    let opt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
    let mut t = Table::default();
    t.row(
        "model",
        format!("{} ({} parameters)", a.model, model.weights.param_count()),
    )
    .row(
        "input",
        format!("batch {b}, prompt {s}, generate {gen_len}, {threads} threads"),
    )
    .row(
        "machine",
        format!(
            "FMA peak {:.1} GFLOP/s ({:.1} on 1 thread), DRAM copy {:.1} GB/s, read {:.1} GB/s (measured now)",
            limits.fma_gflops, limits.fma_gflops_1t, limits.dram_copy_gbps, limits.dram_read_gbps
        ),
    )
    .row(
        "load",
        format!(
            "{load_ms:.1} ms = file {file_ms:.1} + packing {pack_ms:.1} ({} GEMM weights, {} KB)",
            packs.matrices,
            packs.bytes >> 10
        ),
    )
    .row(
        "cold forward",
        format!(
            "{cold_ms:.2} ms = build {build_ms:.2} + hash {cold_hash_ms:.2} + passes {:.2} + \
             compile {:.2} + setup {cold_setup_ms:.2} + execute {cold_execute_ms:.2}",
            prep.passes_ms, prep.compile_ms
        ),
    )
    .row(
        "compile",
        format!(
            "{} kernels in {:.2} ms ({} from the cache); per kernel {}",
            compile_us.len(),
            prep.compile_ms,
            prep.cache_hits,
            compile_spread.map_or("-".into(), |(lo, mid, hi)| format!(
                "min {lo:.0} / median {mid:.0} / max {hi:.0} us"
            ))
        ),
    )
    .row(
        "warm forward",
        format!("min {wmin:.3} / median {wmed:.3} / p90 {wp90:.3} ms over {iters}"),
    )
    .row(
        "throughput",
        format!(
            "{gflops:.1} GFLOP/s ({:.0}% of peak), {gbps:.1} GB/s ({:.0}% of DRAM)",
            100.0 * gflops / limits.fma_gflops,
            100.0 * gbps / limits.dram_copy_gbps
        ),
    )
    .row(
        "generation",
        format!(
            "TTFT {} ms, decode {} ms/token, {} tokens/s ({}, batch {b}){}",
            opt(ttft),
            opt(decode),
            tokens_per_s.map_or("-".into(), |v| format!("{v:.1}")),
            match requests.len() {
                0 => "no requests".to_string(),
                1 => "request 1 alone, compilation included".to_string(),
                n => format!("median over warm requests 2-{n}"),
            },
            decode_gbps.map_or(String::new(), |g| format!(
                // Decode only reads its weights: the read bandwidth is its bound.
                "; weights streamed at {g:.1} GB/s = {:.0}% of DRAM read bandwidth",
                100.0 * g / limits.dram_read_gbps
            ))
        ),
    );
    for (i, r) in requests.iter().enumerate() {
        t.row(
            format!("  request {}", i + 1),
            format!(
                "TTFT {:.3} ms, decode {} ms/token, {} tokens/s ({} steps, {} kernels compiled{})",
                r.ttft_ms,
                opt(r.decode_ms),
                r.decode_ms
                    .map_or("-".into(), |d| format!("{:.1}", per_s(d))),
                r.step_ms.len(),
                r.compiled,
                if i == 0 && requests.len() > 1 {
                    "; not in the aggregate"
                } else {
                    ""
                }
            ),
        );
    }
    t.row("kernels", format!(
            "{kernels_unfused} unfused -> {} fused (prefill), {} per decode step; cache {} hits / {} misses",
            prep.kernels,
            decode_kernels.map_or("-".into(), |k| k.to_string()),
            stats.hits,
            stats.misses
        ))
        .row("memory", format!(
            "peak RSS {} MB; weights {} MB ({} MB of raw copies freed once packed), activations (planned) {} KB, KV cache {} KB",
            rss.map_or("-".into(), |r| (r >> 20).to_string()),
            model.weights.bytes() >> 20,
            packs.freed_bytes >> 20,
            arena_bytes >> 10,
            kv_bytes >> 10
        ));
    print!("{}", t.render());
    let mut mismatch = false;
    if !compare.is_empty() {
        println!(
            "\n  {:<12} {:>14} {:>5} {:>10} {:>14}",
            "backend", "warm median ms", "runs", "vs fused", "max |diff|"
        );
        for c in &compare {
            let ms = c["warm_median_ms"].as_f64().unwrap_or(0.0);
            let bad = c["mismatch"].as_bool().unwrap_or(false);
            mismatch |= bad;
            println!(
                "  {:<12} {ms:>14.3} {:>5} {:>9.1}x {:>14.3e}{}",
                c["backend"].as_str().unwrap_or(""),
                c["runs"].as_u64().unwrap_or(0),
                ms / wmed,
                c["max_abs_diff"].as_f64().unwrap_or(0.0),
                if bad { "  MISMATCH" } else { "" }
            );
        }
    }
    if let Some(p) = &a.plot {
        let svg = latency_svg(&format!("{} forward latency per iteration", a.model), &lat)?;
        std::fs::write(p, svg).with_context(|| format!("writing {}", p.display()))?;
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
        put("load_file_ms", json!(file_ms));
        put("pack_ms", json!(pack_ms));
        put("packed_weights", json!(packs.matrices));
        put("packed_bytes", json!(packs.bytes));
        put("raw_freed_bytes", json!(packs.freed_bytes));
        put("cold_ms", json!(cold_ms));
        put("cold_session_ms", json!(session_ms));
        put("cold_build_ms", json!(build_ms));
        put("cold_hash_ms", json!(cold_hash_ms));
        put("cold_passes_ms", json!(prep.passes_ms));
        put("cold_setup_ms", json!(cold_setup_ms));
        put("cold_execute_ms", json!(cold_execute_ms));
        put("compile_ms", json!(prep.compile_ms));
        put("kernels_compiled", json!(compile_us.len()));
        put("compile_us_min", json!(compile_spread.map(|x| x.0)));
        put("compile_us_median", json!(compile_spread.map(|x| x.1)));
        put("compile_us_max", json!(compile_spread.map(|x| x.2)));
        put("warm_min_ms", json!(wmin));
        put("warm_median_ms", json!(wmed));
        put("warm_p90_ms", json!(wp90));
        put("ttft_ms", json!(ttft));
        put("decode_ms_per_token", json!(decode));
        put("tokens_per_s", json!(tokens_per_s));
        put("decode_weight_gbps", json!(decode_gbps));
        put(
            "requests",
            (gen_len > 0)
                .then(|| {
                    requests
                        .iter()
                        .map(|r| {
                            json!({"ttft_ms": r.ttft_ms, "decode_ms_per_token": r.decode_ms,
                            "tokens_per_s": r.decode_ms.map(per_s), "decode_steps": r.step_ms.len(),
                            "kernels_compiled": r.compiled})
                        })
                        .collect::<Vec<_>>()
                })
                .into(),
        );
        put("peak_rss_bytes", json!(rss));
        put("weights_bytes", json!(model.weights.bytes()));
        put("activations_bytes", json!(arena_bytes));
        put("kv_cache_bytes", json!(kv_bytes));
        put("kernels_unfused", json!(kernels_unfused));
        put("kernels_fused", json!(prep.kernels));
        put("kernels_fused_decode", json!(decode_kernels));
        put("cache_hits", json!(stats.hits));
        put("cache_misses", json!(stats.misses));
        put("forward_gflops", json!(gflops));
        put("forward_gbps", json!(gbps));
        put("peak_gflops", json!(limits.fma_gflops));
        put("dram_gbps", json!(limits.dram_copy_gbps));
        put("dram_read_gbps", json!(limits.dram_read_gbps));
        put("compare", Json::Array(compare.clone()));
        write_json(p, &m)?;
    }
    Ok(if mismatch {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
