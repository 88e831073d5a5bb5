//! A persistent thread pool for kernel launches: the caller plus `n - 1` workers. Workers spin
//! briefly between launches before parking, because a forward pass is many short kernels and
//! a wake-up per kernel would dominate. Work is split statically (thread `t` always gets the
//! same range), so results are bit-identical run to run for a given thread count.

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
    threads: usize,
}

struct Shared {
    generation: AtomicU64,
    /// Workers parked on `wake`; a launch pays for a wake-up syscall only when this is > 0.
    sleepers: AtomicUsize,
    done: AtomicUsize,
    quit: AtomicBool,
    job: UnsafeCell<Job>,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the caller while every worker is idle (between a completed
// launch and the next generation bump) and read by workers only after they observe the bump.
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

/// Static share of `[0, total)` for thread `t` of `n`, with boundaries on multiples of `align`.
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
            done: AtomicUsize::new(0),
            quit: AtomicBool::new(false),
            job: UnsafeCell::new(Job {
                func: None,
                bufs: std::ptr::null(),
                syms: std::ptr::null(),
                total: 0,
                align: 1,
                threads: 1,
            }),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads)
            .map(|t| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("cranegrad-{t}"))
                    .spawn(move || worker(s, t))
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
        // SAFETY: every worker is idle: the previous launch waited for `done`.
        unsafe {
            *self.shared.job.get() = Job {
                func: Some(func),
                bufs,
                syms,
                total,
                align,
                threads: n,
            };
        }
        self.shared.done.store(0, Ordering::Relaxed);
        // SeqCst pairs with the worker's increment-then-recheck: either we see it sleeping and
        // wake it under the lock, or it sees the new generation and does not sleep.
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        if self.shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = self.shared.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.wake.notify_all();
        }
        let (s, e) = chunk(total, align, 0, n);
        if s < e {
            // SAFETY: as above; this is the caller's share.
            unsafe { func(bufs, syms, s, e) };
        }
        let workers = self.threads - 1;
        let mut spins = 0u32;
        while self.shared.done.load(Ordering::Acquire) < workers {
            if spins < SPIN {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

fn worker(s: Arc<Shared>, t: usize) {
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
        // SAFETY: the caller wrote the job before bumping the generation we just observed.
        let job = unsafe { *s.job.get() };
        if t < job.threads
            && let Some(f) = job.func
        {
            let (a, b) = chunk(job.total, job.align, t, job.threads);
            if a < b {
                // SAFETY: the caller of `run` guarantees the pointers for this launch.
                unsafe { f(job.bufs, job.syms, a, b) };
            }
        }
        s.done.fetch_add(1, Ordering::Release);
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
    use super::chunk;

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
