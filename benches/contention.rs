//! Threads under contention: `medium`'s decode step and prefill forward at the default thread
//! count and on one thread, first on a quiet machine and then beside busy loops (one per
//! core, `sh -c 'while :; do :; done'` at nice 0, started before the timed runs), in one run.
//! Prints each median, the busy/quiet ratio and the default/one-thread ratio under load.
//!
//! `cargo bench --bench contention` (`-- --quick` times fewer steps). Run it on an otherwise
//! idle machine: the quiet rows are the baseline.

use std::process::{Child, Command, Stdio};
use std::time::Instant;

use cranegrad::stats::median;
use cranegrad::workload::sample_tokens;
use cranegrad_models::Model;
use cranegrad_models::generate::Generator;
use cranegrad_runtime::{Session, SessionOptions};

/// Median decode step and median prefill of `medium` on `threads` threads, ms.
fn measure(model: &Model, threads: usize, steps: usize) -> (f64, f64) {
    let mut session = Session::new(SessionOptions {
        fuse: true,
        threads,
    })
    .expect("a session");
    let (batch, prompt_len) = (1, 32);
    let prompt: Vec<Vec<i32>> = vec![sample_tokens(batch, prompt_len, model.vocab())];
    let ctx = prompt_len + steps + 1;
    let mut decode = Vec::new();
    let mut prefill = Vec::new();
    // The first round compiles; the rest are timed.
    for round in 0..4 {
        let mut g = Generator::new(model, &mut session, batch, ctx).expect("a generator");
        let t = Instant::now();
        g.prefill(&mut session, &prompt).expect("prefill");
        if round > 0 {
            prefill.push(t.elapsed().as_secs_f64() * 1e3);
        }
        for i in 0..steps {
            let t = Instant::now();
            g.step(&mut session, &[(i % 100) as i32])
                .expect("a decode step");
            if round > 0 {
                decode.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    (median(&decode), median(&prefill))
}

/// Busy loops, one per core, killed on drop.
struct Load(Vec<Child>);

impl Load {
    fn start(n: usize) -> Load {
        Load(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("sh")
                })
                .collect(),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let steps = if quick { 16 } else { 64 };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = Model::load("medium", 0).expect("the medium preset");
    let mut rows = Vec::new();
    for busy in [false, true] {
        let _load = busy.then(|| Load::start(cores));
        if busy {
            // Let the scheduler settle the loops onto the cores.
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        for threads in [cores, 1] {
            let (d, p) = measure(&model, threads, steps);
            rows.push((busy, threads, d, p));
        }
    }
    let get = |busy: bool, threads: usize| {
        rows.iter()
            .find(|r| r.0 == busy && r.1 == threads)
            .map(|r| (r.2, r.3))
            .expect("measured")
    };
    println!("medium, batch 1, prompt 32, {steps} decode steps x 3 rounds; {cores} cores");
    println!(
        "{:<8} {:>7} {:>12} {:>12}",
        "machine", "threads", "decode ms", "prefill ms"
    );
    for (busy, threads, d, p) in &rows {
        let m = if *busy { "busy" } else { "quiet" };
        println!("{m:<8} {threads:>7} {d:>12.3} {p:>12.3}");
    }
    let (qd, qp) = get(false, cores);
    let (bd, bp) = get(true, cores);
    let (b1d, b1p) = get(true, 1);
    println!(
        "busy / quiet at {cores} threads: decode {:.2}x, prefill {:.2}x (target <= 2.5x)",
        bd / qd,
        bp / qp
    );
    println!(
        "busy: {cores} threads / 1 thread: decode {:.2}x, prefill {:.2}x (target <= 1.3x)",
        bd / b1d,
        bp / b1p
    );
}
