//! Loop simplification on a built kernel: size-1 loops vanish and adjacent parallel loops that
//! every index walks contiguously merge into one, so codegen sees the longest inner loop it
//! can vectorise and the thread pool gets a long outer range.

use crate::affine::Affine;
use crate::kernel::{Expr, Kernel, LoopKind};
use cranegrad_graph::Dim;

/// Renames the loop variable of every Reduce expression along with the indices.
fn rename_reduce_vars(k: &mut Kernel, f: impl Fn(usize) -> usize) {
    for e in &mut k.exprs {
        if let Expr::Reduce { var, .. } = e {
            *var = f(*var);
        }
    }
}

fn all_affine(k: &Kernel) -> Vec<Affine> {
    let mut v = Vec::new();
    let mut k2 = k.clone();
    k2.for_each_affine(|a| v.push(a.clone()));
    v
}

/// Removes extent-1 loops and merges mergeable neighbours; returns the kernel with its loop
/// variables renumbered.
pub fn simplify_loops(mut k: Kernel) -> Kernel {
    // Drop constant size-1 loops: their variable is always 0.
    // The reduce loop stays even at extent 1: its Reduce expression needs a loop to run in.
    while let Some(v) = k
        .loops
        .iter()
        .position(|l| l.extent == Dim::Const(1) && l.kind == LoopKind::Parallel)
    {
        k.loops.remove(v);
        k.for_each_affine(|a| {
            *a = a.without(v).rename(|w| Some(if w > v { w - 1 } else { w }));
        });
        rename_reduce_vars(&mut k, |w| if w > v { w - 1 } else { w });
    }
    // Merge loop v into v+1 when for every index coeff(v) == coeff(v+1) * extent(v+1).
    let mut v = 0;
    while v + 1 < k.loops.len() {
        let (a, b) = (&k.loops[v], &k.loops[v + 1]);
        let mergeable = a.kind == LoopKind::Parallel
            && b.kind == LoopKind::Parallel
            && a.extent.as_const().is_some()
            && b.extent.as_const().is_some();
        let inner = b.extent.as_const().unwrap_or(0) as i64;
        if mergeable
            && all_affine(&k)
                .iter()
                .all(|e| e.coeff(v) == e.coeff(v + 1) * inner)
        {
            let outer = k.loops[v].extent.as_const().unwrap_or(0);
            k.loops[v + 1].extent = Dim::Const(outer * inner as usize);
            k.loops.remove(v);
            k.for_each_affine(|a| {
                *a = a.without(v).rename(|w| Some(if w > v { w - 1 } else { w }));
            });
            rename_reduce_vars(&mut k, |w| if w > v { w - 1 } else { w });
        } else {
            v += 1;
        }
    }
    k
}
