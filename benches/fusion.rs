//! Fusion benches: softmax over the last axis and over a strided one (columns), RMSNorm
//! (one kernel each) and RMSNorm followed by a matmul, fused vs `--no-fuse`, side by side in
//! one run; and causal attention at the prefill shapes of medium and smollm-135m, the flash
//! kernel against the unfused graph, in GFLOP/s of the work the causal mask leaves next to the
//! FMA peak measured beside it. `cargo bench --bench fusion`.

use criterion::{Criterion, criterion_group, criterion_main};

use cranegrad::benchmark::warm_runs_ms;
use cranegrad::builtins::lcg_values;
use cranegrad::codegen::KernelCache;
use cranegrad::graph::{Bindings, Graph, Shape, Tensor};
use cranegrad::runtime::probe::{dram_copy_gbps, fma_gflops};
use cranegrad::runtime::{Feeds, Session, SessionOptions};
use cranegrad::stats::median;

/// A scaled softmax of `dims` over `axis`.
fn softmax(dims: &[usize], axis: isize) -> Tensor {
    let g = Graph::new();
    let n = dims.iter().product();
    let x = g
        .input_with_data("x", Shape::of(dims), lcg_values(n, 1, 8.0))
        .unwrap();
    x.mul_scalar(0.125).unwrap().softmax(axis).unwrap()
}

fn rmsnorm() -> Tensor {
    let g = Graph::new();
    let x = g
        .input_with_data(
            "x",
            Shape::of(&[4096, 1024]),
            lcg_values(4096 * 1024, 2, 1.0),
        )
        .unwrap();
    let w = g
        .input_with_data("g", Shape::of(&[1024]), lcg_values(1024, 3, 1.0))
        .unwrap();
    x.rms_norm(&w, 1e-5).unwrap()
}

fn rmsnorm_matmul(with_norm: bool) -> Tensor {
    let g = Graph::new();
    let x = g
        .input_with_data("x", Shape::of(&[128, 2048]), lcg_values(128 * 2048, 4, 1.0))
        .unwrap();
    let gain = g
        .input_with_data("g", Shape::of(&[2048]), lcg_values(2048, 5, 1.0))
        .unwrap();
    let w = g
        .input_with_data(
            "w",
            Shape::of(&[2048, 2048]),
            lcg_values(2048 * 2048, 6, 0.05),
        )
        .unwrap();
    let a = if with_norm {
        x.rms_norm(&gain, 1e-5).unwrap()
    } else {
        x
    };
    a.matmul(&w).unwrap()
}

/// Causal attention over `s` positions with `heads`/`kv` heads of `d`, batch 1, as a model's
/// prefill builds it: queries and keys go through an elementwise op first (RoPE in a model),
/// so the keys reach the kernel stored transposed.
fn attention(s: usize, heads: usize, kv: usize, d: usize) -> Tensor {
    let g = Graph::new();
    let input = |name: &str, dims: &[usize], seed: u64| {
        g.input_with_data(
            name,
            Shape::of(dims),
            lcg_values(dims.iter().product(), seed, 1.0),
        )
        .unwrap()
    };
    let q = input("q", &[1, s, heads, d], 7)
        .mul(&input("qs", &[s, 1, d], 8))
        .unwrap();
    let k = input("k", &[1, s, kv, d], 9)
        .mul(&input("ks", &[s, 1, d], 10))
        .unwrap();
    let v = input("v", &[1, s, kv, d], 11);
    cranegrad::models::attention::causal_attention(&q, &k, &v).unwrap()
}

/// The flash-attention kernel against the unfused graph at prefill shapes, in GFLOP/s of the
/// causal work (4 x d x sum over queries of (q + 1), per head), with the FMA peak beside.
fn attention_rows() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cache = KernelCache::new().unwrap();
    let fma = cache.fma_probe().unwrap();
    eprintln!(
        "\n  {:<30} {:>9} {:>8} {:>10} {:>8} {:>8} {:>9}",
        "causal attention", "flash ms", "GFLOP/s", "unfused ms", "GFLOP/s", "peak", "% of peak"
    );
    for (name, s, h, kv, d) in [
        ("medium, prompt 128", 128, 8, 2, 32),
        ("medium, prompt 512", 512, 8, 2, 32),
        ("smollm-135m, prompt 128", 128, 9, 3, 64),
        ("smollm-135m, prompt 512", 512, 9, 3, 64),
    ] {
        let t = attention(s, h, kv, d);
        let (mut flash, _) = warm_session(true, &t);
        let mut unfused = Session::new(SessionOptions {
            fuse: true,
            threads,
        })
        .unwrap();
        unfused.set_attention_fusion(false);
        unfused
            .realize(&[&t], &Feeds::new(), &Bindings::new())
            .unwrap();
        let mut peaks = Vec::new();
        let m = alternating_medians(&mut [(&mut flash, &t), (&mut unfused, &t)], 3, || {
            peaks.push(fma_gflops(fma, threads, 1))
        });
        let flops = (4 * d * h * s * (s + 1) / 2) as f64;
        let (gf, gu) = (flops / m[0] / 1e6, flops / m[1] / 1e6);
        let peak = median(&peaks);
        eprintln!(
            "  {name:<30} {:>9.3} {gf:>8.1} {:>10.3} {gu:>8.1} {peak:>8.1} {:>8.0}%",
            m[0],
            m[1],
            100.0 * gf / peak
        );
    }
}

/// Warm session for `t`, fused or not, with its kernel count.
fn warm_session(fuse: bool, t: &Tensor) -> (Session, usize) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut s = Session::new(SessionOptions { fuse, threads }).unwrap();
    s.realize(&[t], &Feeds::new(), &Bindings::new()).unwrap();
    let kernels = s.last_report().kernels;
    (s, kernels)
}

/// Blocks of warm runs per block.
const RUNS: usize = 5;

/// The median of `blocks` blocks of [`RUNS`] warm runs of each `(session, graph)`, the
/// sessions' blocks alternating (so all see the same minutes of a shared machine; each block
/// starts with an untimed run, so its data is as warm as in a steady state of its own), with
/// `between` run after each round.
fn alternating_medians(
    runs: &mut [(&mut Session, &Tensor)],
    blocks: usize,
    mut between: impl FnMut(),
) -> Vec<f64> {
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    for _ in 0..blocks {
        for ((s, t), v) in runs.iter_mut().zip(&mut times) {
            v.extend(warm_runs_ms(s, t, RUNS).expect("warm runs"));
        }
        between();
    }
    times.iter().map(|v| median(v)).collect()
}

/// Milliseconds to copy `bytes` (read them and write as many) on `threads` threads, best
/// of 3: the memory floor of a kernel that reads its input once and writes its output once.
fn copy_floor_ms(bytes: usize, threads: usize) -> f64 {
    2.0 * bytes as f64 / (dram_copy_gbps(bytes, threads, 3) * 1e9) * 1e3
}

fn summary() {
    eprintln!(
        "\n  {:<34} {:>7} {:>9} {:>7} {:>10} {:>8} {:>8} {:>10}",
        "graph", "kernels", "fused ms", "kernels", "unfused ms", "speedup", "copy ms", "fused/copy"
    );
    // The copy floor applies to graphs that stream one input to one output of its size.
    let cases: [(&str, Tensor, Option<usize>); 5] = [
        (
            "softmax 4096x1024",
            softmax(&[4096, 1024], -1),
            Some(4096 * 1024 * 4),
        ),
        (
            "softmax 12x1024x1024 (GPT-2 scores)",
            softmax(&[12, 1024, 1024], -1),
            Some(12 * 1024 * 1024 * 4),
        ),
        (
            "softmax over axis 0, 1024x4096",
            softmax(&[1024, 4096], 0),
            Some(1024 * 4096 * 4),
        ),
        ("rmsnorm 4096x1024", rmsnorm(), Some(4096 * 1024 * 4)),
        ("rmsnorm+matmul 128x2048x2048", rmsnorm_matmul(true), None),
    ];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (name, t, streamed) in &cases {
        let (mut fused, kf) = warm_session(true, t);
        let (mut unfused, ku) = warm_session(false, t);
        let mut c = Vec::new();
        let medians = alternating_medians(&mut [(&mut fused, t), (&mut unfused, t)], 3, || {
            c.extend(streamed.map(|bytes| copy_floor_ms(bytes, threads)))
        });
        let (f, u) = (medians[0], medians[1]);
        let floor = if c.is_empty() {
            format!("{:>8} {:>10}", "-", "-")
        } else {
            let c = median(&c);
            format!("{c:>8.3} {:>9.2}x", f / c)
        };
        eprintln!(
            "  {name:<34} {kf:>7} {f:>9.3} {ku:>7} {u:>10.3} {:>7.1}x {floor}",
            u / f
        );
    }
    eprintln!(
        "  (medians of {n} fused and {n} unfused runs, in alternating blocks of {RUNS};",
        n = 3 * RUNS
    );
    eprintln!(
        "   copy = the same bytes read and written by a plain copy on {threads} threads, beside them)"
    );
    norm_cost();
    attention_rows();
    eprintln!();
}

/// The fused RMSNorm+matmul against the matmul alone, in alternating blocks.
fn norm_cost() {
    let (with, alone) = (rmsnorm_matmul(true), rmsnorm_matmul(false));
    let (mut sw, _) = warm_session(true, &with);
    let (mut sa, _) = warm_session(true, &alone);
    let m = alternating_medians(&mut [(&mut sw, &with), (&mut sa, &alone)], 4, || {});
    let (w, a) = (m[0], m[1]);
    eprintln!(
        "  rmsnorm+matmul {w:.3} ms vs the matmul alone {a:.3} ms beside it: {:+.1}%",
        (w / a - 1.0) * 100.0
    );
}

fn bench(c: &mut Criterion) {
    summary();
    let mut g = c.benchmark_group("fusion");
    g.sample_size(10);
    for (name, t) in [
        ("softmax", softmax(&[4096, 1024], -1)),
        ("softmax_axis0", softmax(&[1024, 4096], 0)),
        ("rmsnorm", rmsnorm()),
        ("rmsnorm_matmul", rmsnorm_matmul(true)),
        ("matmul_alone", rmsnorm_matmul(false)),
        ("causal_attention_medium_128", attention(128, 8, 2, 32)),
    ] {
        for fuse in [true, false] {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let mut s = Session::new(SessionOptions { fuse, threads }).unwrap();
            let (f, b) = (Feeds::new(), Bindings::new());
            s.realize(&[&t], &f, &b).unwrap();
            let label = format!("{name}/{}", if fuse { "fused" } else { "unfused" });
            g.bench_function(label, |bn| bn.iter(|| s.realize(&[&t], &f, &b).unwrap()));
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
