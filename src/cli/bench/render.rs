//! The human output of `bench`: one table of every phase's figures, then the backend
//! comparison when there is one.

use std::fmt::Write;

use cranegrad_runtime::probe::MachineLimits;

use super::colds::FreshStart;
use super::generate::tokens_per_s;
use super::{BenchReport, TotalsReport};
use crate::cli::table::Table;

/// `v` to three decimals, or `-` when absent.
fn opt(x: Option<f64>) -> String {
    x.map_or("-".to_string(), |v| format!("{v:.3}"))
}

/// The main table. `params` and `limits` are shown but are not `--json` keys in this form.
pub fn table(r: &BenchReport, params: usize, limits: Option<&MachineLimits>) -> String {
    let (input, load, cold, warm, generation, totals) = (
        &r.input,
        &r.load,
        &r.cold,
        &r.warm,
        &r.generation,
        &r.totals,
    );
    let b = input.batch_size;
    let requests = generation.requests.as_deref().unwrap_or_default();
    let mut t = Table::default();
    t.row("model", format!("{} ({params} parameters)", input.model))
        .row(
            "input",
            format!(
                "batch {b}, prompt {}, generate {}, {} threads",
                input.prompt_len, input.gen_len, input.threads
            ),
        )
        .row(
            "machine",
            limits.map_or("not measured (--no-probe)".to_string(), |l| format!(
                "FMA peak {:.1} GFLOP/s ({:.1} on 1 thread), DRAM copy {:.1} GB/s, read {:.1} GB/s (measured now)",
                l.fma_gflops, l.fma_gflops_1t, l.dram_copy_gbps, l.dram_read_gbps
            )),
        )
        .row(
            "load",
            format!(
                "{:.1} ms = {} {:.1} + packing {:.1} ({} packed weights{}, {} KB)",
                load.load_ms,
                if load.weights_mapped {
                    "mapping"
                } else {
                    "file"
                },
                load.load_file_ms,
                load.pack_ms,
                load.packed_weights,
                if load.packed_mapped > 0 {
                    format!(", {} mapped from the disk cache", load.packed_mapped)
                } else {
                    String::new()
                },
                load.packed_bytes >> 10
            ),
        )
        .row(
            "cold forward",
            format!(
                "{:.2} ms = build {:.2} + hash {:.2} + passes {:.2} + compile {:.2} + setup {:.2} + \
                 execute {:.2}",
                cold.cold_ms,
                cold.cold_build_ms,
                cold.cold_hash_ms,
                cold.cold_passes_ms,
                cold.compile_ms,
                cold.cold_setup_ms,
                cold.cold_execute_ms
            ),
        )
        .row(
            "compile",
            format!(
                "{} kernels in {:.2} ms ({} from the cache); per kernel {}",
                cold.kernels_compiled,
                cold.compile_ms,
                cold.compile_cache_hits,
                match (
                    cold.compile_us_min,
                    cold.compile_us_median,
                    cold.compile_us_max
                ) {
                    (Some(lo), Some(mid), Some(hi)) =>
                        format!("min {lo:.0} / median {mid:.0} / max {hi:.0} us"),
                    _ => "-".into(),
                }
            ),
        )
        .row(
            "warm forward",
            format!(
                "min {:.3} / median {:.3} / p90 {:.3} ms, mean {:.3} ± {:.3} over {}",
                warm.warm_min_ms,
                warm.warm_median_ms,
                warm.warm_p90_ms,
                warm.warm_mean_ms,
                warm.warm_sd_ms,
                warm.latencies.len()
            ),
        )
        .row(
            "throughput",
            match limits {
                Some(l) => format!(
                    "{:.1} GFLOP/s ({:.0}% of peak), {:.1} GB/s ({:.0}% of DRAM)",
                    warm.forward_gflops,
                    100.0 * warm.forward_gflops / l.fma_gflops,
                    warm.forward_gbps,
                    100.0 * warm.forward_gbps / l.dram_copy_gbps
                ),
                None => format!(
                    "{:.1} GFLOP/s, {:.1} GB/s",
                    warm.forward_gflops, warm.forward_gbps
                ),
            },
        )
        .row(
            "generation",
            format!(
                "TTFT {} ms, decode {} ms/token, {} tokens/s ({}, batch {b}){}",
                opt(generation.ttft_ms),
                opt(generation.decode_ms_per_token),
                generation
                    .tokens_per_s
                    .map_or("-".into(), |v| format!("{v:.1}")),
                match requests.len() {
                    0 => "no requests".to_string(),
                    1 => "request 1 alone, compilation included".to_string(),
                    n => format!("median over warm requests 2-{n}"),
                },
                generation.decode_weight_gbps.map_or(String::new(), |g| match limits {
                    // Decode only reads its weights: the read bandwidth is its bound.
                    Some(l) => format!(
                        "; weights streamed at {g:.1} GB/s = {:.0}% of DRAM read bandwidth",
                        100.0 * g / l.dram_read_gbps
                    ),
                    None => format!("; weights streamed at {g:.1} GB/s"),
                })
            ),
        );
    for (i, q) in requests.iter().enumerate() {
        t.row(
            format!("  request {}", i + 1),
            format!(
                "TTFT {:.3} ms, decode {} ms/token, {} tokens/s ({} steps, {} kernels compiled{})",
                q.ttft_ms,
                opt(q.decode_ms_per_token),
                q.decode_ms_per_token
                    .map_or("-".into(), |d| format!("{:.1}", tokens_per_s(b, d))),
                q.decode_steps,
                q.kernels_compiled,
                if i == 0 && requests.len() > 1 {
                    "; not in the aggregate"
                } else {
                    ""
                }
            ),
        );
    }
    t.row(
        "kernels",
        format!(
            "{} unfused -> {} fused (prefill), {} per decode step; cache {} hits / {} misses ({} from disk)",
            cold.kernels_unfused,
            cold.kernels_fused,
            generation
                .kernels_fused_decode
                .map_or("-".into(), |k| k.to_string()),
            totals.cache_hits,
            totals.cache_misses,
            totals.cache_disk_hits
        ),
    )
    .row(
        "memory",
        format!(
            "peak RSS {} MB; weights {} MB{} ({} MB of raw copies freed once packed), activations (planned) {} KB, KV cache {} KB",
            totals.peak_rss_bytes.map_or("-".into(), |r| (r >> 20).to_string()),
            totals.weights_bytes >> 20,
            weights_by_format(totals),
            load.raw_freed_bytes >> 20,
            cold.activations_bytes >> 10,
            totals.kv_cache_bytes >> 10
        ),
    );
    if let Some((empty, d)) = &r.colds.starts {
        let start = |s: &FreshStart| {
            format!(
                "load {:.1} + first forward {:.1} = {:.1} ms",
                s.load_ms,
                s.cold_ms,
                s.load_ms + s.cold_ms
            )
        };
        t.row("start, empty", start(empty))
            .row(
                "start, disk",
                format!(
                    "{} ({}weights, {} panels, {}{} of {} kernels from disk)",
                    start(d),
                    if d.weights_mapped { "" } else { "no " },
                    d.packed_mapped,
                    if d.cold_schedule_from_disk {
                        "schedule, "
                    } else {
                        ""
                    },
                    d.cache_disk_hits,
                    d.cache_misses
                ),
            )
            .row(
                "start, warm",
                format!(
                    "first forward {:.1} ms (a new graph in this process, its caches warm)",
                    r.colds.start_warm_first_ms.unwrap_or_default()
                ),
            );
    }
    t.render()
}

/// The backend comparison (empty without `--compare`); a row over the tolerance is flagged
/// `MISMATCH`.
pub fn compare_table(r: &BenchReport) -> String {
    let mut s = String::new();
    if r.compare.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "\n  {:<12} {:>14} {:>5} {:>10} {:>14}",
        "backend", "warm median ms", "runs", "vs fused", "max |diff|"
    );
    for c in &r.compare {
        let _ = writeln!(
            s,
            "  {:<12} {:>14.3} {:>5} {:>9.1}x {:>14.3e}{}",
            c.backend,
            c.warm_median_ms,
            c.runs,
            c.warm_median_ms / r.warm.warm_median_ms,
            c.max_abs_diff,
            if c.mismatch { "  MISMATCH" } else { "" }
        );
    }
    s
}

/// The held weights' split by format when more than f32 is held: ` = 80 q8 + 113 f32`.
fn weights_by_format(t: &TotalsReport) -> String {
    let parts: Vec<String> = [
        ("q4", t.weights_bytes_q4),
        ("q8", t.weights_bytes_q8),
        ("bf16", t.weights_bytes_bf16),
        ("f16", t.weights_bytes_f16),
        ("f32", t.weights_bytes_f32),
    ]
    .into_iter()
    .filter(|&(_, b)| b > 0)
    .map(|(name, b)| format!("{} {name}", b >> 20))
    .collect();
    if t.weights_bytes_f32 == t.weights_bytes {
        String::new()
    } else {
        format!(" = {}", parts.join(" + "))
    }
}
