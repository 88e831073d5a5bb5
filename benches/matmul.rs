//! Matmul GFLOP/s for the shapes the fusion issue names, on 1 and all threads, next to this
//! machine's 128-bit FMA peak measured in the same run; and the matrix-vector case next to the
//! DRAM bandwidth; beside each single-thread figure, the `matrixmultiply` crate's sgemm (a
//! mature portable BLAS-style kernel, single-threaded, AVX2/FMA when the CPU has them) on the
//! same shape. `cargo bench --bench matmul` (summary first, then criterion).

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};

use cranegrad::benchmark::warm_median_ms;
use cranegrad::builtins::lcg_values;
use cranegrad::codegen::KernelCache;
use cranegrad::codegen::probe::FmaProbeFn;
use cranegrad::graph::{Bindings, Graph, Shape, Tensor};
use cranegrad::runtime::probe::{dram_read_gbps, fma_gflops, probe_machine};
use cranegrad::runtime::{Feeds, Session, SessionOptions};
use cranegrad::stats::median;

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 2048, 2048),
    (1, 2048, 8192),
    (32, 2048, 2048),
    (128, 2048, 2048),
    (128, 256, 256),
    // The prefill issue's small-model shapes: medium's MLP, smollm-135m's MLP up and down,
    // and a 512-token prefill of smollm-135m.
    (128, 256, 768),
    (128, 576, 1536),
    (128, 1536, 576),
    (512, 576, 1536),
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

/// The limits beside one measurement: the FMA peak on `threads` threads and the DRAM read
/// bandwidth, each the best of a probe just before and one just after `measure`. The
/// machine is shared: a probe at the start of the run can catch a quieter or busier moment
/// than the measurement, and the best of the two sides is the conservative limit.
fn beside<T>(fma: FmaProbeFn, threads: usize, measure: impl FnOnce() -> T) -> (T, f64, f64) {
    let probe = || {
        (
            fma_gflops(fma, threads, 3),
            dram_read_gbps(256 << 20, threads, 3),
        )
    };
    let before = probe();
    let out = measure();
    let after = probe();
    (out, before.0.max(after.0), before.1.max(after.1))
}

fn summary() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let lim = probe_machine(threads).unwrap();
    // The cache owns the probe's code: kept alive for the whole summary.
    let mut cache = KernelCache::new().unwrap();
    let fma = cache.fma_probe().unwrap();
    eprintln!(
        "\nmachine at the start: FMA peak (4 lanes) {:.1} GFLOP/s on 1 thread, {:.1} on {threads}; DRAM copy {:.1} GB/s, read {:.1} GB/s",
        lim.fma_gflops_1t, lim.fma_gflops, lim.dram_copy_gbps, lim.dram_read_gbps
    );
    eprintln!(
        "(each row's % of peak and % of read use the FMA peak and DRAM read bandwidth probed just before and after it, the best of the two)"
    );
    eprintln!(
        "  {:<18} {:>7} {:>10} {:>9} {:>8} {:>10} {:>11} {:>9} {:>14} {:>9}",
        "M,K,N",
        "threads",
        "median ms",
        "GFLOP/s",
        "peak",
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
            let (ms, peak, read) = beside(fma, t, || {
                warm_median_ms(&mut s, &out, reps).expect("warm runs")
            });
            let gflops = 2.0 * (m * k * n) as f64 / ms / 1e6;
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
                "  {:<18} {t:>7} {ms:>10.3} {gflops:>9.1} {peak:>8.1} {:>9.0}% {gbps:>11.1} {:>8.0}% {rf:>14} {ratio:>9}",
                format!("{m},{k},{n}"),
                100.0 * gflops / peak,
                100.0 * gbps / read
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
