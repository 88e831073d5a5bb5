//! GEMM prologues: the per-row statistic of a norm folded into a matmul (see
//! `fold_norm_into_matmul`) is computed inside each GEMM kernel that needs it, before its
//! column panels, so `rms_norm(x, g) @ W` is one kernel. The rules of `fuse_elementwise`
//! that live here:
//!
//! - a matmul's B operand that is a weight scaled along K by a weight vector stays inline:
//!   the runtime folds the vector into the packed panels once;
//! - the product `mm * r` of a matmul with a row broadcast (`r` from `[.., M, 1]`) is the
//!   kernel root instead of the matmul, so the GEMM stores scaled rows, unless the product
//!   is the epilogue input of a later kernel;
//! - two matmuls of the same A into one kernel (SwiGLU's `silu(x @ Wg) * (x @ Wu)`) run as
//!   one paired GEMM whose panels interleave both weights;
//! - a row statistic used only through row-scaled matmuls is not shared through a buffer:
//!   every GEMM kernel computes it again (M x K work against the kernel's M x K x N), and
//!   the last-axis sum under it runs in each kernel's prologue.

use std::collections::{BTreeSet, HashMap};

use cranegrad_graph::{BinaryOp, GraphData, NodeId, Op, ReduceOp};

use super::fuse_elementwise::{Fusion, reshape_is_affine};
use crate::kernel::GEMM_MAX_STAT_ROWS;

/// True for a view of an input carrying data.
fn is_weight_view(g: &GraphData, n: NodeId) -> bool {
    super::fold_norm_into_matmul::weight_base(g, n).is_some()
}

/// True for `W * g`: two weight views multiplied, which packing folds into one panel copy.
pub fn is_scaled_weight(g: &GraphData, n: NodeId) -> bool {
    matches!(g.node(n).op, Op::Binary(BinaryOp::Mul))
        && g.inputs(n).iter().all(|&i| is_weight_view(g, i))
}

/// True for an expand of a `[.., M, 1]` value along the last axis.
pub fn is_row_broadcast(g: &GraphData, n: NodeId) -> bool {
    if !matches!(g.node(n).op, Op::Expand) {
        return false;
    }
    let s = g.node(g.inputs(n)[0]).shape.dims();
    let d = g.node(n).shape.dims();
    s.len() == d.len()
        && s.last().is_some_and(|x| x.is_one())
        && s[..s.len() - 1] == d[..d.len() - 1]
}

/// Rows of a `[.., M, N]` value: everything but its last axis.
fn rows(shape: &cranegrad_graph::Shape) -> usize {
    shape.max_numel() / shape.dims().last().map_or(1, |d| d.max_value().max(1))
}

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
            Some(e) if e != n => {
                let taken = claimed.entry(e).or_default();
                let ok = match taken.as_slice() {
                    [] => true,
                    [first] => pairable(g, *first, mm),
                    _ => false,
                };
                if ok {
                    taken.push(mm);
                }
                ok
            }
            _ => false,
        };
        if !fits {
            f.realized.insert(n);
        }
    }
}

/// True for `mm * r` with `mm` a matmul and `r` a row broadcast.
fn is_matmul_row_scale(g: &GraphData, n: NodeId) -> bool {
    is_row_scale(g, n)
        && g.inputs(n)
            .iter()
            .any(|&i| matches!(g.node(i).op, Op::MatMul))
}

/// True for a node of a row statistic (`[.., M, 1]` elementwise ops) whose every use ends,
/// through a row broadcast, in a row-scaled matmul: each GEMM kernel recomputes it.
pub fn is_gemm_row_statistic(g: &GraphData, n: NodeId) -> bool {
    let node = g.node(n);
    if !node.op.is_elementwise() || !node.shape.dims().last().is_some_and(|d| d.is_one()) {
        return false;
    }
    let cs = g.consumers(n);
    !cs.is_empty()
        && cs.iter().all(|&c| {
            let cn = g.node(c);
            if cn.op.is_elementwise() && cn.shape == node.shape {
                is_gemm_row_statistic(g, c)
            } else if is_row_broadcast(g, c) {
                g.consumers(c).iter().all(|&m| is_matmul_row_scale(g, m))
            } else {
                false
            }
        })
}

/// True when matmuls `a` and `b` can run as one paired GEMM: the same A node, the same
/// output shape, weights (or scaled weights) of one shape as B. Measured on norm + SwiGLU
/// (paired against gate and up as two kernels): 0.152 vs 0.157 ms at [4, 512] x [512, 1536],
/// 0.586 vs 0.598 at [64, 256] x [256, 768], 15.8 vs 16.2 at [128, 1024] x [1024, 2816].
pub fn pairable(g: &GraphData, a: NodeId, b: NodeId) -> bool {
    let (ia, ib) = (g.inputs(a), g.inputs(b));
    let weightish = |n: NodeId| is_weight_view(g, n) || is_scaled_weight(g, n);
    matches!(g.node(a).op, Op::MatMul)
        && matches!(g.node(b).op, Op::MatMul)
        && a != b
        && ia[0] == ib[0]
        && g.node(a).shape == g.node(b).shape
        && g.node(ia[1]).shape == g.node(ib[1]).shape
        && weightish(ia[1])
        && weightish(ib[1])
}

/// True for `mm * r` inside a cache-write chain (see [`is_row_scaled_matmul`]).
pub fn is_row_scale(g: &GraphData, n: NodeId) -> bool {
    matches!(g.node(n).op, Op::Binary(BinaryOp::Mul))
        && g.inputs(n).iter().any(|&i| is_row_broadcast(g, i))
}

/// The realized roots a row statistic flows into, through unrealized elementwise ops, column
/// broadcasts and affine reshapes only.
fn statistic_roots(g: &GraphData, f: &Fusion, s: NodeId) -> Option<BTreeSet<NodeId>> {
    let mut roots = BTreeSet::new();
    let mut stack = g.consumers(s);
    let mut seen = BTreeSet::new();
    while let Some(c) = stack.pop() {
        if !seen.insert(c) {
            continue;
        }
        let op = &g.node(c).op;
        if f.realized.contains(&c) {
            if !(op.is_elementwise() || matches!(op, Op::WriteSlice { .. })) {
                return None;
            }
            roots.insert(c);
            continue;
        }
        if !(op.is_elementwise() || matches!(op, Op::Expand | Op::Reshape)) {
            return None;
        }
        stack.extend(g.consumers(c));
    }
    (!roots.is_empty()).then_some(roots)
}

/// The matmuls and reductions a kernel rooted at `root` computes inline.
fn inline_roots(g: &GraphData, f: &Fusion, root: NodeId) -> (Vec<NodeId>, Vec<NodeId>) {
    let (mut mms, mut reds) = (Vec::new(), Vec::new());
    let mut stack = g.inputs(root);
    let mut seen = BTreeSet::new();
    while let Some(n) = stack.pop() {
        if !seen.insert(n) || f.is_buffer(g, n) || g.node(n).op.is_source() {
            continue;
        }
        match g.node(n).op {
            Op::MatMul => mms.push(n),
            Op::Reduce { .. } => reds.push(n),
            _ => {}
        }
        stack.extend(g.inputs(n));
    }
    (mms, reds)
}

/// Un-realizes each row sum that can run as the prologue of its GEMM kernel (see the module
/// doc).
pub fn fuse_gemm_prologues(g: &GraphData, order: &[NodeId], outputs: &[NodeId], f: &mut Fusion) {
    for &s in order {
        let node = g.node(s);
        let rank = node.shape.rank();
        let Op::Reduce {
            op: ReduceOp::Sum,
            axis,
        } = node.op
        else {
            continue;
        };
        // The prologue keeps f32 statistics.
        if node.dtype != cranegrad_graph::DType::F32 {
            continue;
        }
        if axis + 1 != rank || !f.realized.contains(&s) || outputs.contains(&s) {
            continue;
        }
        let Some(roots) = statistic_roots(g, f, s) else {
            continue;
        };
        let x = g.node(g.inputs(s)[0]).shape.dims().to_vec();
        let fits = |root: NodeId| {
            let (mms, reds) = inline_roots(g, f, root);
            (1..=2).contains(&mms.len())
                && reds.is_empty()
                && mms.iter().all(|&mm| {
                    let a = g.node(g.inputs(mm)[0]).shape.dims();
                    let out = &g.node(mm).shape;
                    if out.rank() != rank || a.len() != rank {
                        return false;
                    }
                    a.len() == rank
                        && a[..rank - 1] == x[..rank - 1]
                        && a[rank - 1] == x[rank - 1]
                        && out.is_static()
                        && rows(out) <= GEMM_MAX_STAT_ROWS
                })
        };
        if roots.iter().all(|&r| fits(r)) {
            f.realized.remove(&s);
        }
    }
}
