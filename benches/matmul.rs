//! Matmul GFLOP/s for the shapes the fusion issue names, on 1 and all threads, next to this
//! machine's 128-bit FMA peak measured in the same run; and the matrix-vector case next to the
//! DRAM bandwidth; beside each single-thread figure, the `matrixmultiply` crate's sgemm (a
//! mature portable BLAS-style kernel, single-threaded, AVX2/FMA when the CPU has them) on the
//! same shape. `cargo bench --bench matmul` (summary first, then criterion).

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};

use cranegrad::builtins::lcg_values;
use cranegrad::graph::{Bindings, Graph, Shape, Tensor};
use cranegrad::runtime::probe::probe_machine;
use cranegrad::runtime::{Feeds, Session, SessionOptions};
use cranegrad::stats::median;

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 2048, 2048),
    (1, 2048, 8192),
    (32, 2048, 2048),
    (128, 2048, 2048),
    (128, 256, 256),
];

fn matmul(m: usize, k: usize, n: usize) -> Tensor {
    let g = Graph::new();
    let a = g
        .input_with_data("a", Shape::of(&[m, k]), lcg_values(m * k, 1, 1.0))
        .unwrap();
    let w = g
        .input_with_data("w", Shape::of(&[k, n]), lcg_values(k * n, 2, 0.05))
        .unwrap();
    a.matmul(&w).unwrap()
}

fn time_ms(s: &mut Session, out: &Tensor, reps: usize) -> f64 {
    let (f, b) = (Feeds::new(), Bindings::new());
    s.realize(&[out], &f, &b).unwrap();
    let v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            s.realize(&[out], &f, &b).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(&v)
}

/// Median ms of `matrixmultiply::sgemm` on the same shape, row-major.
fn reference_ms(m: usize, k: usize, n: usize, reps: usize) -> f64 {
    let a = lcg_values(m * k, 1, 1.0);
    let b = lcg_values(k * n, 2, 0.05);
    let mut c = vec![0f32; m * n];
    let mut run = || {
        // SAFETY: a is m x k, b is k x n, c is m x n, all row-major with the strides given.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                k as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    };
    run();
    let v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(&v)
}

fn summary() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let lim = probe_machine(threads).unwrap();
    eprintln!(
        "\nmachine now: FMA peak (4 lanes) {:.1} GFLOP/s on 1 thread, {:.1} on {threads}; DRAM copy {:.1} GB/s, read {:.1} GB/s",
        lim.fma_gflops_1t, lim.fma_gflops, lim.dram_copy_gbps, lim.dram_read_gbps
    );
    eprintln!(
        "  {:<18} {:>7} {:>10} {:>9} {:>10} {:>11} {:>9} {:>14} {:>9}",
        "M,K,N",
        "threads",
        "median ms",
        "GFLOP/s",
        "% of peak",
        "weight GB/s",
        "% of read",
        "matrixmul. GF",
        "ours/ref"
    );
    for &(m, k, n) in SHAPES {
        let out = matmul(m, k, n);
        let reps = if m * k * n > 1 << 28 { 5 } else { 20 };
        let ref_gflops = 2.0 * (m * k * n) as f64 / reference_ms(m, k, n, reps) / 1e6;
        for t in [1, threads] {
            let mut s = Session::new(SessionOptions {
                fuse: true,
                threads: t,
            })
            .unwrap();
            let ms = time_ms(&mut s, &out, reps);
            let gflops = 2.0 * (m * k * n) as f64 / ms / 1e6;
            let peak = if t == 1 {
                lim.fma_gflops_1t
            } else {
                lim.fma_gflops
            };
            let gbps = (k * n * 4) as f64 / ms / 1e6;
            // The reference runs on one thread: only the one-thread rows get a ratio.
            let (rf, ratio) = if t == 1 {
                (
                    format!("{ref_gflops:.1}"),
                    format!("{:.2}", gflops / ref_gflops),
                )
            } else {
                ("-".into(), "-".into())
            };
            eprintln!(
                "  {:<18} {t:>7} {ms:>10.3} {gflops:>9.1} {:>9.0}% {gbps:>11.1} {:>8.0}% {rf:>14} {ratio:>9}",
                format!("{m},{k},{n}"),
                100.0 * gflops / peak,
                100.0 * gbps / lim.dram_read_gbps
            );
        }
    }
    eprintln!();
}

fn bench(c: &mut Criterion) {
    summary();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10);
    for &(m, k, n) in SHAPES {
        let out = matmul(m, k, n);
        let mut s = Session::new(SessionOptions {
            fuse: true,
            threads,
        })
        .unwrap();
        let (f, b) = (Feeds::new(), Bindings::new());
        s.realize(&[&out], &f, &b).unwrap();
        g.bench_function(format!("{m}x{k}x{n}"), |bn| {
            bn.iter(|| s.realize(&[&out], &f, &b).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
