//! The 8-op elementwise chain over 16M f32: fused vs `--no-fuse` vs the interpreter, with
//! achieved GB/s next to this machine's DRAM copy bandwidth measured in the same run.
//!
//! `cargo bench --bench elementwise`. A side-by-side summary (median of 10 warm runs each) is
//! printed first; criterion's own statistics follow.

use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use cranegrad::benchmark::warm_median_ms;
use cranegrad::builtins::chain;
use cranegrad::graph::Bindings;
use cranegrad::runtime::probe::probe_machine;
use cranegrad::runtime::{Feeds, Session, SessionOptions, interpret_tensors};

const ROWS: usize = 4096;
const COLS: usize = 4096;
/// x read + y written (b is 16 KiB and stays in cache).
const BYTES: u64 = 2 * (ROWS * COLS * 4) as u64;

fn session(fuse: bool, threads: usize) -> Session {
    Session::new(SessionOptions { fuse, threads }).expect("session")
}

fn summary() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let limits = probe_machine(threads).expect("probe");
    let ex = chain(ROWS, COLS).expect("graph");
    let fused = warm_median_ms(&mut session(true, threads), &ex.output, 10).expect("fused runs");
    let fused_1t = warm_median_ms(&mut session(true, 1), &ex.output, 10).expect("1-thread runs");
    let unfused =
        warm_median_ms(&mut session(false, threads), &ex.output, 5).expect("unfused runs");
    let t = Instant::now();
    interpret_tensors(&[&ex.output], &Feeds::new(), &Bindings::new()).expect("interpreter");
    let interp = t.elapsed().as_secs_f64() * 1e3;
    let gbps = |ms: f64| BYTES as f64 / ms / 1e6;
    eprintln!(
        "\nchain 4096x4096 (8 ops), {threads} threads; DRAM copy {:.1} GB/s measured now",
        limits.dram_copy_gbps
    );
    eprintln!(
        "  {:<22} {:>10} {:>9} {:>10} {:>9}",
        "backend", "median ms", "GB/s", "% of DRAM", "vs fused"
    );
    for (name, ms) in [
        ("fused", fused),
        ("fused, 1 thread", fused_1t),
        ("unfused (--no-fuse)", unfused),
        ("interpreter (1 run)", interp),
    ] {
        eprintln!(
            "  {name:<22} {ms:>10.2} {:>9.1} {:>9.0}% {:>8.1}x",
            gbps(ms),
            100.0 * gbps(ms) / limits.dram_copy_gbps,
            ms / fused
        );
    }
    eprintln!();
}

fn bench(c: &mut Criterion) {
    summary();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ex = chain(ROWS, COLS).expect("graph");
    let (f, b) = (Feeds::new(), Bindings::new());
    let mut g = c.benchmark_group("chain_16M");
    g.throughput(Throughput::Bytes(BYTES));
    g.sample_size(20);
    for (name, fuse) in [("fused", true), ("unfused", false)] {
        let mut s = session(fuse, threads);
        s.realize(&[&ex.output], &f, &b).expect("cold");
        g.bench_function(name, |bn| {
            bn.iter(|| s.realize(&[&ex.output], &f, &b).expect("run"))
        });
    }
    g.sample_size(10);
    g.bench_function("interpreter", |bn| {
        bn.iter(|| interpret_tensors(&[&ex.output], &f, &b).expect("interpreter"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
