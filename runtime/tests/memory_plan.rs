//! The memory planner: temporaries alive at the same time never share bytes, temporaries with
//! disjoint lifetimes do, and every planned address is 64-byte aligned.

mod common;

use common::{check_all, rand_vec};
use cranegrad_graph::{Bindings, Graph, Shape, Tensor};
use cranegrad_lower::kernel::Access;
use cranegrad_lower::{BufKind, LowerOptions, Schedule, lower_tensors};
use cranegrad_runtime::Feeds;
use cranegrad_runtime::buffer::{ALIGN, AlignedBuf};
use cranegrad_runtime::planner::{MemoryPlan, plan_memory};

/// The unfused schedule of `outs` (one kernel per op, so every op boundary is a temporary).
fn schedule(outs: &[&Tensor]) -> Schedule {
    let opts = LowerOptions {
        fuse: false,
        ..Default::default()
    };
    lower_tensors(outs, opts).expect("lower").schedule
}

/// A temporary as the test sees it: buffer id, launch that writes it, last launch that reads
/// it, and its arena byte range.
#[derive(Debug)]
struct Temp {
    buf: usize,
    written: usize,
    last_read: usize,
    start: usize,
    end: usize,
}

/// Lifetimes derived from each kernel's read/write access (not from the planner's own
/// first/last-use scan), paired with the planned placement.
fn temps(s: &Schedule, plan: &MemoryPlan) -> Vec<Temp> {
    let mut out = Vec::new();
    for (b, decl) in s.buffers.iter().enumerate() {
        if !matches!(decl.kind, BufKind::Temp) {
            continue;
        }
        let mut written = None;
        let mut last_read = None;
        for (k, l) in s.launches.iter().enumerate() {
            for (slot, &arg) in l.args.iter().enumerate() {
                if arg != b {
                    continue;
                }
                match l.kernel.args[slot].access {
                    Access::Write => {
                        written.get_or_insert(k);
                    }
                    Access::Read => last_read = Some(k),
                }
            }
        }
        let written = written.expect("every temporary is written by some kernel");
        let start = plan.offsets[b].expect("every used temporary is placed");
        out.push(Temp {
            buf: b,
            written,
            last_read: last_read.unwrap_or(written),
            start,
            end: start + decl.len() * 4,
        });
    }
    out
}

/// Asserts that no two temporaries alive at once overlap in the arena, that every one fits
/// in it and starts on a 64-byte boundary; returns the temporaries.
fn check_plan(outs: &[&Tensor]) -> (MemoryPlan, Vec<Temp>) {
    let s = schedule(outs);
    let plan = plan_memory(&s);
    let ts = temps(&s, &plan);
    for (i, a) in ts.iter().enumerate() {
        assert_eq!(a.start % ALIGN, 0, "{a:?} is not {ALIGN}-byte aligned");
        assert!(a.end <= plan.arena_bytes, "{a:?} leaves the arena");
        for b in &ts[i + 1..] {
            let alive_together = a.written <= b.last_read && b.written <= a.last_read;
            let share_bytes = a.start < b.end && b.start < a.end;
            assert!(
                !(alive_together && share_bytes),
                "buffers {} and {} are alive together but overlap: {a:?} {b:?}\n{}",
                a.buf,
                b.buf,
                s.text()
            );
        }
    }
    for (b, decl) in s.buffers.iter().enumerate() {
        if !matches!(decl.kind, BufKind::Temp) {
            assert_eq!(plan.offsets[b], None, "only temporaries live in the arena");
        }
    }
    (plan, ts)
}

/// `x -> exp -> sqrt -> sin -> ...`: each temporary is dead once the next op has read it.
fn chain(n: usize) -> Tensor {
    let g = Graph::new();
    let mut t = g
        .input_with_data("x", Shape::of(&[64, 33]), rand_vec(64 * 33, 1, 1.0))
        .unwrap();
    for i in 0..n {
        t = match i % 3 {
            0 => t.exp().unwrap(),
            1 => t.sin().unwrap(),
            _ => t.square().unwrap(),
        };
    }
    t
}

#[test]
fn a_chain_reuses_dead_buffers() {
    let y = chain(8);
    let (plan, ts) = check_plan(&[&y]);
    let sum: usize = ts.iter().map(|t| t.end - t.start).sum();
    assert!(
        ts.len() >= 5,
        "expected one temporary per op boundary, got {ts:?}"
    );
    assert_eq!(plan.unplanned_bytes, sum);
    assert!(
        plan.arena_bytes < sum,
        "no reuse: arena {} of {sum} bytes",
        plan.arena_bytes
    );
    // Same-sized temporaries that live one launch each need two slots: ping-pong.
    let one = ts[0].end - ts[0].start;
    assert!(ts.iter().all(|t| t.end - t.start == one), "{ts:?}");
    assert_eq!(plan.arena_bytes, 2 * one, "{ts:?}");
    // And the shared memory computes the right values.
    check_all(&[&y], &Feeds::new(), &Bindings::new(), 1e-5, 1e-5);
}

#[test]
fn long_lived_buffers_are_never_shared() {
    // `a` is read at the very end, so nothing computed in between may land on it; `b` and
    // the reduction are of other sizes, which exercises the best-fit gaps.
    let g = Graph::new();
    let x = g
        .input_with_data("x", Shape::of(&[40, 24]), rand_vec(40 * 24, 2, 1.0))
        .unwrap();
    let a = x.exp().unwrap();
    let b = a.sin().unwrap().square().unwrap().sum(-1, true).unwrap();
    let c = b.sqrt().unwrap().add(&a.neg().unwrap()).unwrap();
    let d = c.mul(&a).unwrap().softmax(-1).unwrap();
    let (_, ts) = check_plan(&[&d, &b]);
    assert!(ts.len() >= 6, "{ts:?}");
    check_all(&[&d, &b], &Feeds::new(), &Bindings::new(), 1e-5, 1e-5);
}

#[test]
fn every_buffer_is_64_byte_aligned() {
    // Small buffers come from the allocator, large ones from mmap: both must be aligned, as
    // the arena base plus aligned offsets is what every temporary's pointer is.
    for words in [0, 1, 3, 17, 1 << 10, (4 << 20) / 4, (4 << 20) / 4 + 5] {
        let b = AlignedBuf::zeroed(words);
        assert_eq!(b.as_mut_ptr() as usize % ALIGN, 0, "{words} words");
    }
    let y = chain(5);
    check_plan(&[&y]);
    // Outputs are handed back without a copy, so their words are the plan's buffers.
    let out = common::session(false, 2)
        .realize(&[&y], &Feeds::new(), &Bindings::new())
        .unwrap();
    assert_eq!(out[0].words().as_ptr() as usize % ALIGN, 0);
}
