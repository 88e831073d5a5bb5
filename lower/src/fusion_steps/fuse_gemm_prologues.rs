//! Fusion step, GEMM prologues: the per-row statistic of a norm folded into a matmul (see
//! `fold_norm_into_matmul`) is computed inside each GEMM kernel that needs it, before its
//! column panels, so `rms_norm(x, g) @ W` is one kernel. A row statistic used only through
//! row-scaled matmuls is not shared through a buffer (`realize_shared_values` leaves it): every
//! GEMM kernel computes it again (M x K work against the kernel's M x K x N), and the
//! last-axis sum under it runs in each kernel's prologue.

use std::collections::BTreeSet;

use cranegrad_graph::{GraphData, NodeId, Op, ReduceOp};

use crate::fusion::Fusion;
use crate::kernel::GEMM_MAX_STAT_ROWS;
use crate::patterns::rows;

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
