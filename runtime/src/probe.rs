//! A short machine probe: DRAM copy bandwidth and the FMA peak at the JIT's vector width, on
//! 1 and N threads, measured in the same process so benchmarks can report percentages of
//! this machine's limits rather than of a datasheet; and the memory a run may still use.

use std::time::Instant;

use cranegrad_codegen::KernelCache;
use cranegrad_codegen::probe::{FMA_CHAINS, FmaProbeFn};

use crate::buffer::AlignedBuf;
use crate::error::RuntimeError;

/// Measured limits.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineLimits {
    /// Copy bandwidth (bytes read + bytes written) per second, in GB/s, on all threads.
    pub dram_copy_gbps: f64,
    /// Read-only bandwidth in GB/s on all threads (what a matrix-vector product can reach).
    pub dram_read_gbps: f64,
    /// f32 FMA peak in GFLOP/s at 4 lanes, one thread.
    pub fma_gflops_1t: f64,
    /// f32 FMA peak in GFLOP/s at 4 lanes, all threads.
    pub fma_gflops: f64,
    /// Threads used for the multi-thread figures.
    pub threads: usize,
}

/// Best-of-`reps` copy bandwidth of a `bytes`-sized buffer split over `threads` threads.
pub fn dram_copy_gbps(bytes: usize, threads: usize, reps: usize) -> f64 {
    let words = bytes / 4;
    let mut src = AlignedBuf::zeroed(words);
    let mut dst = AlignedBuf::zeroed(words);
    // An untouched mmap'd source maps every page to the kernel's one shared zero page, so its
    // reads would come from cache, not DRAM: writing a non-constant pattern gives it real,
    // distinct pages. The destination is faulted in too so page faults are not timed.
    for (i, w) in src.words_mut().iter_mut().enumerate() {
        *w = (i as u32).wrapping_mul(0x9E37_79B9);
    }
    dst.words_mut().fill(1);
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        let chunk = words.div_ceil(threads);
        std::thread::scope(|s| {
            for (d, sc) in dst
                .words_mut()
                .chunks_mut(chunk)
                .zip(src.words().chunks(chunk))
            {
                s.spawn(move || d.copy_from_slice(sc));
            }
        });
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * bytes as f64 / best / 1e9
}

/// Best-of-`reps` read bandwidth: each thread sums its share of a `bytes`-sized buffer.
pub fn dram_read_gbps(bytes: usize, threads: usize, reps: usize) -> f64 {
    let mut buf = AlignedBuf::zeroed(bytes / 4);
    buf.words_mut().fill(1);
    let words = buf.words();
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        let chunk = words.len().div_ceil(threads);
        std::thread::scope(|s| {
            for part in words.chunks(chunk) {
                s.spawn(move || {
                    // Sixteen independent lanes in fixed-size chunks, which the compiler turns
                    // into vector adds: the loop is bandwidth-, not instruction-bound.
                    let mut acc = [0u32; 16];
                    for c in part.chunks_exact(16) {
                        let c: &[u32; 16] = c.try_into().expect("16 words");
                        for (a, &x) in acc.iter_mut().zip(c) {
                            *a = a.wrapping_add(x);
                        }
                    }
                    std::hint::black_box(acc);
                });
            }
        });
        best = best.min(t.elapsed().as_secs_f64());
    }
    bytes as f64 / best / 1e9
}

/// Best-of-`reps` throughput of the compiled FMA probe on `threads` threads.
pub fn fma_gflops(f: FmaProbeFn, threads: usize, reps: usize) -> f64 {
    let iters: i64 = 20_000_000;
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(move || {
                    let mut out = 0f32;
                    // SAFETY: the probe only writes one f32 to `out`.
                    unsafe { f(iters, &mut out) };
                    std::hint::black_box(out);
                });
            }
        });
        best = best.min(t.elapsed().as_secs_f64());
    }
    let flops = iters as f64 * FMA_CHAINS as f64 * 4.0 * 2.0 * threads as f64;
    flops / best / 1e9
}

/// Runs the whole probe (about half a second).
pub fn probe_machine(threads: usize) -> Result<MachineLimits, RuntimeError> {
    // The cache owns the code memory: keep it alive while the probe runs.
    let mut cache = KernelCache::new()?;
    let f = cache.fma_probe()?;
    let threads = threads.max(1);
    Ok(MachineLimits {
        dram_copy_gbps: dram_copy_gbps(256 << 20, threads, 3),
        dram_read_gbps: dram_read_gbps(256 << 20, threads, 3),
        fma_gflops_1t: fma_gflops(f, 1, 3),
        fma_gflops: fma_gflops(f, threads, 3),
        threads,
    })
}

/// Bytes of memory this process may still use: `MemAvailable` from `/proc/meminfo`, or the
/// cgroup's `memory.max` less its current use when that is lower; `None` where neither reads.
pub fn available_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let read = |p: &str| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .map(|max| max.saturating_sub(read("/sys/fs/cgroup/memory.current").unwrap_or(0)));
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
