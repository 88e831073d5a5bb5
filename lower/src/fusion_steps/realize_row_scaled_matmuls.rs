//! Fusion step, before the operands are realized: the product `mm * r` of a matmul with a row
//! broadcast (`r` from `[.., M, 1]`, a folded norm's `1/rms`) is the kernel root instead of
//! the matmul, so the GEMM stores scaled rows, unless the product is the epilogue input of a
//! later kernel.

use std::collections::{BTreeSet, HashMap};

use cranegrad_graph::{BinaryOp, GraphData, NodeId, Op};

use crate::fusion::Fusion;
use crate::patterns::{is_row_broadcast, reshape_is_affine, take_pairable};

/// True when `n`'s value is only appended to a cache (through affine reshapes).
fn feeds_write_slice(g: &GraphData, f: &Fusion, n: NodeId) -> bool {
    let mut v = n;
    while let [c] = g.consumers(v).as_slice() {
        match g.node(*c).op {
            Op::Reshape
                if !f.realized.contains(c)
                    && reshape_is_affine(&g.node(v).shape, &g.node(*c).shape) =>
            {
                v = *c
            }
            Op::WriteSlice { .. } => return g.inputs(*c)[1] == v,
            _ => return false,
        }
    }
    false
}

/// `mm * r`, with `mm` a matmul used only here and `r` a row broadcast: the matmul's kernel
/// root when fused (unless the product is appended to a cache, whose write kernel computes it).
pub fn is_row_scaled_matmul(g: &GraphData, f: &Fusion, n: NodeId, outputs: &[NodeId]) -> bool {
    if !matches!(g.node(n).op, Op::Binary(BinaryOp::Mul)) {
        return false;
    }
    let ins = g.inputs(n);
    let is_mm = |i: NodeId| {
        matches!(g.node(i).op, Op::MatMul)
            && g.consumers(i) == [n]
            && !outputs.contains(&i)
            && g.node(i).shape == g.node(n).shape
    };
    let pair = (is_mm(ins[0]) && is_row_broadcast(g, ins[1]))
        || (is_mm(ins[1]) && is_row_broadcast(g, ins[0]));
    pair && !feeds_write_slice(g, f, n)
}

/// The one node where the same-shape elementwise uses of `n` leave that set (the kernel root
/// an epilogue starting at `n` would have), if there is exactly one.
fn elementwise_exit(g: &GraphData, n: NodeId, outputs: &[NodeId]) -> Option<NodeId> {
    let shape = &g.node(n).shape;
    let mut exits = BTreeSet::new();
    let mut stack = vec![n];
    let mut seen = BTreeSet::new();
    while let Some(c) = stack.pop() {
        if !seen.insert(c) {
            continue;
        }
        let cs = g.consumers(c);
        let inside = |x: &NodeId| g.node(*x).op.is_elementwise() && &g.node(*x).shape == shape;
        if outputs.contains(&c) || cs.is_empty() || !cs.iter().all(inside) {
            exits.insert(c);
        } else {
            stack.extend(cs);
        }
    }
    let [e] = exits.into_iter().collect::<Vec<_>>()[..] else {
        return None;
    };
    Some(e)
}

/// Realizes each `mm * r` (see [`is_row_scaled_matmul`]) that cannot be the epilogue of a
/// later kernel: its uses leave elementwise ops (a reshape into heads), or the kernel they
/// reach already takes a row-scaled matmul it cannot pair with.
pub fn realize_row_scaled_matmuls(
    g: &GraphData,
    order: &[NodeId],
    outputs: &[NodeId],
    f: &mut Fusion,
) {
    let matmul_of = |n: NodeId| {
        g.inputs(n)
            .into_iter()
            .find(|&i| matches!(g.node(i).op, Op::MatMul))
    };
    // Exit node -> the matmuls already running in its kernel.
    let mut claimed: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    for &n in order {
        if !is_row_scaled_matmul(g, f, n, outputs) {
            continue;
        }
        let Some(mm) = matmul_of(n) else { continue };
        let fits = match elementwise_exit(g, n, outputs) {
            Some(e) if e != n => take_pairable(g, claimed.entry(e).or_default(), mm),
            _ => false,
        };
        if !fits {
            f.realized.insert(n);
        }
    }
}
