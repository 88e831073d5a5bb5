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

/// Milliseconds to copy `bytes` (read them and write as many) on `threads` threads, best
/// of 3: the memory floor of a kernel that reads its input once and writes its output once.
fn copy_floor_ms(bytes: usize, threads: usize) -> f64 {
    2.0 * bytes as f64 / (dram_copy_gbps(bytes, threads, 3) * 1e9) * 1e3
}

fn summary() {
    eprintln!(
        "\n  {:<34} {:>7} {:>9} {:>7} {:>10} {:>8} {:>8} {:>9}",
        "graph", "kernels", "fused ms", "kernels", "unfused ms", "speedup", "copy ms", "fused/copy"
    );
    // The copy floor applies to graphs that stream one input to one output of its size.
    let cases: [(&str, Tensor, Option<usize>); 6] = [
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
        ("matmul alone 128x2048x2048", rmsnorm_matmul(false), None),
    ];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (name, t, streamed) in &cases {
        // Blocks of fused and unfused runs (and copies) alternate, so all see the same
        // minutes of a shared machine; each block starts with an untimed run, so its data is
        // as warm as in a steady state of its own.
        let (mut fused, kf) = warm_session(true, t);
        let (mut unfused, ku) = warm_session(false, t);
        let (mut f, mut u, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            for (s, v) in [(&mut fused, &mut f), (&mut unfused, &mut u)] {
                v.extend(warm_runs_ms(s, t, 5).expect("warm runs"));
            }
            c.extend(streamed.map(|bytes| copy_floor_ms(bytes, threads)));
        }
        let (f, u) = (median(&f), median(&u));
        let floor = if c.is_empty() {
            format!("{:>8} {:>9}", "-", "-")
        } else {
            let c = median(&c);
            format!("{c:>8.3} {:>8.2}x", f / c)
        };
        eprintln!(
            "  {name:<34} {kf:>7} {f:>9.3} {ku:>7} {u:>10.3} {:>7.1}x {floor}",
            u / f
        );
    }
    eprintln!("  (medians of 15 fused and 15 unfused runs, in alternating blocks of 5;");
    eprintln!(
        "   copy = the same bytes read and written by a plain copy on {threads} threads, beside them)"
    );
    norm_cost();
    eprintln!();
}

/// The fused RMSNorm+matmul against the matmul alone, in alternating blocks of 5 (the rows
/// above time them minutes apart).
fn norm_cost() {
    let (with, alone) = (rmsnorm_matmul(true), rmsnorm_matmul(false));
    let (mut sw, _) = warm_session(true, &with);
    let (mut sa, _) = warm_session(true, &alone);
    let (mut w, mut a) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        w.extend(warm_runs_ms(&mut sw, &with, 5).expect("warm runs"));
        a.extend(warm_runs_ms(&mut sa, &alone, 5).expect("warm runs"));
    }
    let (w, a) = (median(&w), median(&a));
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
