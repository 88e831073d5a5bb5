//! Horizontal fusion over the schedule: GEMM kernels that read the same A and do not depend
//! on each other (a layer's Q, K and V projections, each with its own epilogue or KV-cache
//! write) become one kernel. Its parallel range holds their work units back to back, so one
//! launch keeps every core busy on all of them and reads A while it is still in cache.

use std::collections::BTreeSet;

use crate::kernel::{Access, KernelBody};
use crate::schedule::{BufId, Launch, Schedule};

/// What sibling GEMMs share: the A buffer, the contraction length and the row count.
fn sibling_key(l: &Launch) -> Option<(BufId, usize, usize)> {
    let k = &l.kernel.bodies()[0];
    let g = k.gemm().filter(|g| g.packed)?;
    let a = k.load_arg(g.a)?;
    Some((l.args[a], k.loops[g.k_loop].extent.max_value(), g.rows))
}

/// Buffers a launch reads and writes.
fn accesses(l: &Launch) -> (BTreeSet<BufId>, BTreeSet<BufId>) {
    let (mut r, mut w) = (BTreeSet::new(), BTreeSet::new());
    for (a, &b) in l.kernel.args.iter().zip(&l.args) {
        match a.access {
            Access::Read => r.insert(b),
            Access::Write => w.insert(b),
        };
    }
    (r, w)
}

/// True when launch `j` can run inside launch `i`: nothing from `i` up to `j` writes what `j`
/// reads, or reads or writes what `j` writes (the parts of a group run concurrently).
fn movable(s: &Schedule, i: usize, j: usize) -> bool {
    let (rj, wj) = accesses(&s.launches[j]);
    s.launches[i..j].iter().all(|m| {
        let (rm, wm) = accesses(m);
        wm.is_disjoint(&rj) && wm.is_disjoint(&wj) && rm.is_disjoint(&wj)
    })
}

/// Appends `b`'s kernel to the group of `a` (making `a` a group first).
fn merge(a: &mut Launch, b: Launch) {
    debug_assert!(b.kernel.gemm().is_some(), "a part is a plain GEMM kernel");
    if a.kernel.parts().is_empty() {
        let first = a.kernel.clone();
        a.kernel.name = format!("{}_siblings", first.name.split('_').next().unwrap_or("k"));
        a.kernel.loops.clear();
        a.kernel.exprs.clear();
        a.kernel.stores.clear();
        a.kernel.body = KernelBody::Siblings(vec![first]);
    }
    let taken = a.kernel.packed_slots();
    let b_packed = b.kernel.packed_slots();
    let mut map = Vec::with_capacity(b.args.len());
    for (slot, (arg, &buf)) in b.kernel.args.iter().zip(&b.args).enumerate() {
        // Plain reads of one buffer share a slot; a packed slot is swapped per part.
        let shared = (arg.access == Access::Read && !b_packed.contains(&slot))
            .then(|| {
                (0..a.args.len()).find(|&s| {
                    a.args[s] == buf
                        && a.kernel.args[s].access == Access::Read
                        && !taken.contains(&s)
                })
            })
            .flatten();
        map.push(shared.unwrap_or_else(|| {
            a.args.push(buf);
            a.kernel.args.push(arg.clone());
            a.args.len() - 1
        }));
    }
    for sym in &b.kernel.symbols {
        if !a.kernel.symbols.iter().any(|s| s.name == sym.name) {
            a.kernel.symbols.push(sym.clone());
        }
    }
    let (args, symbols) = (a.kernel.args.clone(), a.kernel.symbols.clone());
    let mut part = b.kernel;
    part.rebind(&map, &args, &symbols);
    a.kernel.ops.extend(part.ops.iter().cloned());
    if let KernelBody::Siblings(parts) = &mut a.kernel.body {
        for p in parts.iter_mut() {
            let identity: Vec<usize> = (0..p.args.len()).collect();
            p.rebind(&identity, &args, &symbols);
        }
        parts.push(part);
    }
    a.nodes.extend(b.nodes);
}

/// Merges every GEMM launch into the first earlier one it is a sibling of (same A, K and
/// rows) when the move keeps every dependency; returns the launches merged away.
pub fn fuse_sibling_gemms(s: &mut Schedule) -> usize {
    let mut merged = 0;
    let mut i = 0;
    while i < s.launches.len() {
        let Some(key) = sibling_key(&s.launches[i]) else {
            i += 1;
            continue;
        };
        let mut j = i + 1;
        while j < s.launches.len() {
            if sibling_key(&s.launches[j]) == Some(key) && movable(s, i, j) {
                let l = s.launches.remove(j);
                merge(&mut s.launches[i], l);
                merged += 1;
            } else {
                j += 1;
            }
        }
        i += 1;
    }
    merged
}
