//! A persistent thread pool for kernel launches: the caller plus `n - 1` workers. Workers spin
//! briefly between launches before parking, because a forward pass is many short kernels and
//! a wake-up per kernel would dominate.
//!
//! A launch's range is cut into more chunks than threads, at boundaries fixed by the range
//! and the thread count, and every thread claims chunks until none is left. The caller waits
//! only for chunks that were claimed, never for a thread that claimed none: on a busy
//! machine a descheduled worker no longer holds up every kernel (a static split made each
//! kernel wait for its slowest thread). Each chunk computes the same outputs in the same
//! order whichever thread runs it, so results stay bit-identical for a thread count.
//!
//! A worker the OS deschedules while it holds a chunk still stalls the launch. (Running the
//! next launches on the caller alone after such a stall was tried and measured: on this
//! shared VM, stalls from outside load made it run one-threaded half the time, a 1.9x slower
//! quiet forward.)

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use cranegrad_codegen::KernelFn;

/// One kernel launch as the workers see it.
#[derive(Clone, Copy)]
struct Job {
    func: Option<KernelFn>,
    bufs: *const *mut u8,
    syms: *const i64,
    total: i64,
    align: i64,
}

struct Shared {
    generation: AtomicU64,
    /// Workers parked on `wake`; a launch pays for a wake-up syscall only when this is > 0.
    sleepers: AtomicUsize,
    /// The claim word of the current launch: its generation (high 32 bits), its chunk count
    /// (16 bits) and the next unclaimed chunk (low 16 bits). A claim is a compare-and-swap
    /// that only succeeds for the launch the claimer read, so a late worker never runs a
    /// chunk of a launch it did not see.
    claim: AtomicU64,
    /// Chunks of the current launch finished.
    completed: AtomicU64,
    quit: AtomicBool,
    job: UnsafeCell<Job>,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the caller while no chunk is claimed and unfinished (the
// previous launch's chunks are all completed, and a claim of it can no longer succeed), and
// read by a worker only once it holds a claimed chunk of that launch, which the caller waits
// for before writing the next job.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointers inside `Job` are only dereferenced by kernels during a
// launch that the caller waits for.
unsafe impl Send for Shared {}

/// Busy-spin iterations before a waiting thread starts yielding its core: a short burst
/// catches back-to-back kernels without a syscall.
const SPIN: u32 = 20_000;
/// Yields before a worker parks; yielding keeps latency low but lets another runnable thread
/// (the caller, on an oversubscribed machine) have the core.
const YIELDS: u32 = 2_000;

/// The pool. Dropping it stops the workers.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
}

/// Chunks per thread of a launch: enough that a descheduled thread's unclaimed share is taken
/// by the others, few enough that claims and each chunk's start-up stay cheap.
pub const CHUNKS_PER_THREAD: i64 = 2;

/// Chunks a launch of `total` elements (in units of `align`) is cut into on `n` threads: at
/// most [`CHUNKS_PER_THREAD`] per thread, at most one per unit, and fewer than 2^16.
pub fn chunk_count(total: i64, align: i64, n: usize) -> i64 {
    let units = (total + align - 1) / align;
    units.min(n as i64 * CHUNKS_PER_THREAD).clamp(1, 0xFFFF)
}

/// Chunk `t` of `n` of `[0, total)`, with boundaries on multiples of `align`.
pub fn chunk(total: i64, align: i64, t: usize, n: usize) -> (i64, i64) {
    let units = (total + align - 1) / align;
    let per = units / n as i64;
    let extra = units % n as i64;
    let t = t as i64;
    let start_u = t * per + t.min(extra);
    let end_u = start_u + per + i64::from(t < extra);
    ((start_u * align).min(total), (end_u * align).min(total))
}

impl ThreadPool {
    /// A pool of `threads` threads in total (the caller counts as one).
    pub fn new(threads: usize) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            sleepers: AtomicUsize::new(0),
            claim: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            quit: AtomicBool::new(false),
            job: UnsafeCell::new(Job {
                func: None,
                bufs: std::ptr::null(),
                syms: std::ptr::null(),
                total: 0,
                align: 1,
            }),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads)
            .map(|t| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("cranegrad-{t}"))
                    .spawn(move || worker(s))
                    .expect("spawn worker thread")
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            threads,
        }
    }

    /// Total threads including the caller.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `func` over `[0, total)` on `use_threads` threads (clamped to the pool size) and
    /// returns when every share is done.
    ///
    /// # Safety
    /// `bufs` and `syms` must hold every pointer and symbol value the kernel reads, valid for
    /// the whole call, and the kernel's writes for disjoint ranges must not overlap.
    pub unsafe fn run(
        &self,
        func: KernelFn,
        bufs: *const *mut u8,
        syms: *const i64,
        total: i64,
        align: i64,
        use_threads: usize,
    ) {
        let n = use_threads.clamp(1, self.threads);
        if n == 1 || total <= align {
            // SAFETY: the caller guarantees the pointers; one thread covers the whole range.
            unsafe { func(bufs, syms, 0, total) };
            return;
        }
        let chunks = chunk_count(total, align, n);
        // SAFETY: no chunk of the previous launch is claimed and unfinished (it waited for
        // every claimed chunk, and its claim word is exhausted), so no worker reads the job.
        unsafe {
            *self.shared.job.get() = Job {
                func: Some(func),
                bufs,
                syms,
                total,
                align,
            };
        }
        self.shared.completed.store(0, Ordering::Relaxed);
        // The claim word first: a worker that sees the new generation finds its chunks.
        let generation = self.shared.generation.load(Ordering::Relaxed) + 1;
        self.shared
            .claim
            .store(claim_word(generation, chunks, 0), Ordering::SeqCst);
        // SeqCst pairs with the worker's increment-then-recheck: either we see it sleeping and
        // wake it under the lock, or it sees the new generation and does not sleep.
        self.shared.generation.store(generation, Ordering::SeqCst);
        if self.shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = self.shared.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.wake.notify_all();
        }
        // SAFETY: as above; the caller claims chunks like any worker.
        unsafe { run_chunks(&self.shared, generation) };
        let mut spins = 0u32;
        while self.shared.completed.load(Ordering::Acquire) < chunks as u64 {
            if spins < SPIN {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// The claim word of chunk `next` of `chunks` in launch `generation`.
fn claim_word(generation: u64, chunks: i64, next: i64) -> u64 {
    ((generation & 0xFFFF_FFFF) << 32) | ((chunks as u64) << 16) | next as u64
}

/// Claims and runs chunks of launch `generation` until none is left (or the launch is over).
///
/// # Safety
/// The job of `generation` must be the one the caller of [`ThreadPool::run`] wrote.
unsafe fn run_chunks(s: &Shared, generation: u64) {
    loop {
        let word = s.claim.load(Ordering::Acquire);
        if word >> 32 != generation & 0xFFFF_FFFF {
            return;
        }
        let chunks = ((word >> 16) & 0xFFFF) as i64;
        let next = (word & 0xFFFF) as i64;
        if next >= chunks {
            return;
        }
        if s.claim
            .compare_exchange_weak(word, word + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            continue;
        }
        // SAFETY: holding an unfinished chunk of this launch, the job is this launch's.
        let job = unsafe { *s.job.get() };
        if let Some(f) = job.func {
            let (a, b) = chunk(job.total, job.align, next as usize, chunks as usize);
            if a < b {
                // SAFETY: the caller of `run` guarantees the pointers for this launch.
                unsafe { f(job.bufs, job.syms, a, b) };
            }
        }
        s.completed.fetch_add(1, Ordering::Release);
    }
}

fn worker(s: Arc<Shared>) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0;
        loop {
            if s.quit.load(Ordering::Acquire) {
                return;
            }
            let g = s.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            spins += 1;
            if spins < SPIN {
                std::hint::spin_loop();
                continue;
            }
            if spins < SPIN + YIELDS {
                std::thread::yield_now();
                continue;
            }
            let guard = s.lock.lock().unwrap_or_else(|p| p.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            if s.generation.load(Ordering::SeqCst) == seen && !s.quit.load(Ordering::SeqCst) {
                let _unused = s.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            spins = 0;
        }
        // SAFETY: a chunk is only claimed from the claim word of the launch it belongs to.
        unsafe { run_chunks(&s, seen) };
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::Release);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ThreadPool, chunk};

    /// A kernel that adds 1 to `out[i]` for every `i` of its range: every element must end
    /// at exactly the number of launches.
    extern "C" fn count(bufs: *const *mut u8, _syms: *const i64, start: i64, end: i64) {
        // SAFETY: the test passes one buffer of `total` u32s, and chunks are disjoint.
        unsafe {
            let out = *bufs as *mut u32;
            for i in start..end {
                *out.add(i as usize) += 1;
            }
        }
    }

    #[test]
    fn every_element_runs_once_per_launch() {
        let pool = ThreadPool::new(3);
        for total in [1i64, 5, 64, 1000, 4099] {
            let mut out = vec![0u32; total as usize];
            let bufs = [out.as_mut_ptr() as *mut u8];
            for _ in 0..50 {
                // SAFETY: `bufs` holds `out`, alive for the call; `count` writes its range only.
                unsafe { pool.run(count, bufs.as_ptr(), std::ptr::null(), total, 4, 3) };
            }
            assert!(out.iter().all(|&c| c == 50), "total {total}: {out:?}");
        }
    }

    #[test]
    fn chunks_cover_the_range_once_on_aligned_boundaries() {
        for total in [0i64, 1, 5, 16, 17, 1000, 4099] {
            for n in 1..5 {
                let mut next = 0;
                for t in 0..n {
                    let (a, b) = chunk(total, 4, t, n);
                    assert_eq!(a, next.min(total));
                    assert!(a % 4 == 0 || a == total);
                    next = b;
                }
                assert_eq!(next, total);
            }
        }
    }
}
