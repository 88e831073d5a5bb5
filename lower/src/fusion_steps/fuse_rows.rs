//! Row fusion: a reduction whose result is broadcast back over the row it reduced (softmax's
//! max and sum, RMSNorm's and LayerNorm's statistics) runs inside the kernel that produces
//! the row's outputs. The kernel computes the row's reductions one after another, then the
//! row, so `x / sum(exp(x - max(x)))` is one kernel reading `x` three times from cache instead
//! of four kernels writing intermediates to memory.
//!
//! A "row" is the reduced axis, last or not: over a strided axis (a column softmax) the
//! kernel builder makes the reduced axis the innermost output loop (see
//! `reduced_axis_innermost`) and codegen takes four neighbouring columns per vector.
//!
//! Starting from such a reduction R, every node reachable through its uses must be one of:
//! an elementwise op at R's shape or at the row shape, the expand of an R-shaped value to the
//! row shape, or another reduction over R's axis of a row-shaped value. Those uses must end in
//! exactly one elementwise, row-shaped node T that is not consumed inside the set; then T is
//! realized and R and every node strictly inside the set are computed within T's kernel.

use std::collections::BTreeSet;

use cranegrad_graph::{GraphData, NodeId, Op, Shape};

use crate::fusion::Fusion;

fn reduce_axis(g: &GraphData, n: NodeId) -> Option<usize> {
    match g.node(n).op {
        Op::Reduce { axis, .. } => Some(axis),
        _ => None,
    }
}

/// The row group of reduction `r`: (members, exit root), when the pattern holds.
fn row_group(
    g: &GraphData,
    _f: &Fusion,
    r: NodeId,
    outputs: &[NodeId],
) -> Option<(BTreeSet<NodeId>, NodeId, usize)> {
    let axis = reduce_axis(g, r)?;
    let red_shape = g.node(r).shape.clone();
    let input = g.inputs(r)[0];
    let row_shape: Shape = g.node(input).shape.clone();
    let allowed = |n: NodeId| -> bool {
        let node = g.node(n);
        match &node.op {
            // A matmul scaled per row (a folded norm) is left to `fuse_gemm_prologues`.
            op if op.is_elementwise() => {
                (node.shape == red_shape || node.shape == row_shape)
                    && !g
                        .inputs(n)
                        .iter()
                        .any(|&i| matches!(g.node(i).op, Op::MatMul))
            }
            Op::Expand => node.shape == row_shape && g.node(g.inputs(n)[0]).shape == red_shape,
            Op::Reduce { .. } => {
                reduce_axis(g, n) == Some(axis)
                    && node.shape == red_shape
                    && g.node(g.inputs(n)[0]).shape == row_shape
            }
            _ => false,
        }
    };
    let mut members = BTreeSet::from([r]);
    let mut exits = BTreeSet::new();
    let mut stack = vec![r];
    while let Some(n) = stack.pop() {
        let cs = g.consumers(n);
        let leaves = outputs.contains(&n) || cs.iter().any(|&c| !allowed(c));
        if leaves {
            if n == r {
                return None;
            }
            exits.insert(n);
            continue;
        }
        for c in cs {
            if members.insert(c) {
                stack.push(c);
            }
        }
    }
    let [t] = exits.iter().copied().collect::<Vec<_>>()[..] else {
        return None;
    };
    let tn = g.node(t);
    if !tn.op.is_elementwise() || tn.shape != row_shape {
        return None;
    }
    // Every member must feed T (no member escapes to a consumer outside the group).
    Some((members, t, axis))
}

/// Un-realizes the reductions (and the intermediates between them) of every row group.
pub fn fuse_rows(g: &GraphData, order: &[NodeId], outputs: &[NodeId], f: &mut Fusion) {
    let mut claimed: BTreeSet<NodeId> = BTreeSet::new();
    for &n in order {
        if claimed.contains(&n) || !f.realized.contains(&n) || reduce_axis(g, n).is_none() {
            continue;
        }
        let Some((members, t, axis)) = row_group(g, f, n, outputs) else {
            continue;
        };
        // Groups over two axes ending in one node (`x / sum(x, 0) / sum(x, 1)`) cannot share
        // its kernel: one axis is the innermost loop, and the other group's reduction would
        // run again for every output along it. The later group stays realized.
        if f.row_exits.get(&t).is_some_and(|&a| a != axis) {
            continue;
        }
        // The group's exit is the kernel root: the row's outputs are written once.
        f.realized.insert(t);
        f.row_exits.insert(t, axis);
        for m in members {
            if m != t {
                f.realized.remove(&m);
                claimed.insert(m);
            }
        }
    }
}
