//! Fusion benches: softmax over the last axis and over a strided one (columns), RMSNorm
//! (one kernel each) and RMSNorm followed by a matmul, fused vs `--no-fuse`, side by side in
//! one run. `cargo bench --bench fusion`.

use criterion::{Criterion, criterion_group, criterion_main};

use cranegrad::benchmark::warm_runs_ms;
use cranegrad::builtins::lcg_values;
use cranegrad::graph::{Bindings, Graph, Shape, Tensor};
use cranegrad::runtime::probe::dram_copy_gbps;
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
