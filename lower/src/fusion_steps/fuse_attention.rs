//! Attention fusion: `softmax(mask(scale * q @ kᵀ)) @ v`, as the Tensor API composes it, runs
//! as one flash-attention kernel: for each query row the scores are computed key by key with
//! an online softmax (running max and sum, the output accumulator rescaled when the max
//! grows), so the `[S, T]` score matrix is never written and K and V are read once per row.
//!
//! The pattern, from the `p @ v` matmul down: `p = e * expand(recip(sum(e)))`,
//! `e = exp2(c * (x - expand(max(x))))`, `x = where(mask, fill, y)` or `y`,
//! `y = scale * s` or `s`, `s = q @ kt`, with kt and v free views (buffers read through
//! movement ops: GQA's shared K/V heads are broadcast views, never copies), q a view or an
//! elementwise function of views (RoPE of the query projection, computed once per query row)
//! and the reductions over the last axis. Every node strictly inside the pattern is computed
//! by the kernel.

use std::collections::BTreeSet;

use cranegrad_graph::{BinaryOp, GraphData, NodeId, Op, ReduceOp, UnaryOp};

use crate::fusion::{Attention, Fusion};
use crate::patterns::{constant, times_constant, under_expand};

/// `(x, reduce, n)` when `n` is `reduce(x)` over the last axis, broadcast back or not.
fn expanded_reduce(g: &GraphData, n: NodeId, op: ReduceOp) -> Option<(NodeId, NodeId, NodeId)> {
    let r = under_expand(g, n);
    match g.node(r).op {
        Op::Reduce { op: o, axis } if o == op && axis + 1 == g.node(r).shape.rank() => {
            Some((g.inputs(r)[0], r, n))
        }
        _ => None,
    }
}

/// `(x, nodes)` when `n` is `-max(x)` over the last axis, broadcast back (negated before or
/// after the broadcast) or not.
fn neg_max(g: &GraphData, n: NodeId) -> Option<(NodeId, [NodeId; 3])> {
    let inner = under_expand(g, n);
    if let Op::Unary(UnaryOp::Neg) = g.node(inner).op {
        let max = g.inputs(inner)[0];
        if let Op::Reduce {
            op: ReduceOp::Max,
            axis,
        } = g.node(max).op
            && axis + 1 == g.node(max).shape.rank()
        {
            return Some((g.inputs(max)[0], [n, inner, max]));
        }
    }
    if !matches!(g.node(n).op, Op::Unary(UnaryOp::Neg)) {
        return None;
    }
    let (x, max, exp) = expanded_reduce(g, g.inputs(n)[0], ReduceOp::Max)?;
    Some((x, [n, max, exp]))
}

/// The computed nodes of the queries (empty when they are a view): elementwise and movement
/// ops over views, each used only by the queries or the score matmul `s`.
fn query_cone(g: &GraphData, f: &Fusion, q: NodeId, s: NodeId) -> Option<BTreeSet<NodeId>> {
    let mut cone = BTreeSet::new();
    // The operand itself is realized for the score matmul (fusion rule 2) unless it is a view:
    // the kernel computes it instead.
    let computed = |n: NodeId| {
        n == q && !matches!(g.node(n).op, Op::Input { .. }) && !f.is_free(g, g.inputs(n)[0])
            || !f.is_free(g, n)
    };
    let mut stack = vec![q];
    while let Some(n) = stack.pop() {
        if g.node(n).op.is_source() || !computed(n) || !cone.insert(n) {
            continue;
        }
        let op = &g.node(n).op;
        if !(op.is_elementwise() || op.is_movement()) {
            return None;
        }
        stack.extend(g.inputs(n));
    }
    let inside = |c: &NodeId| *c == s || cone.contains(c);
    cone.iter()
        .all(|&n| g.consumers(n).iter().all(inside))
        .then_some(cone)
}

/// True when `n` is computed by elementwise and movement ops over buffers and sources.
fn computed_from_views(g: &GraphData, f: &Fusion, n: NodeId) -> bool {
    let mut stack = vec![n];
    let mut seen = BTreeSet::new();
    while let Some(x) = stack.pop() {
        if f.is_buffer(g, x) || g.node(x).op.is_source() || !seen.insert(x) {
            continue;
        }
        let op = &g.node(x).op;
        if !(op.is_elementwise() || op.is_movement()) {
            return false;
        }
        stack.extend(g.inputs(x));
    }
    true
}

/// Matches the attention pattern ending in matmul `pv`.
pub fn match_attention(g: &GraphData, f: &Fusion, pv: NodeId) -> Option<Attention> {
    if !matches!(g.node(pv).op, Op::MatMul) {
        return None;
    }
    let mut interior = BTreeSet::new();
    let [p, v] = g.inputs(pv)[..] else {
        return None;
    };
    // p = e * expand(recip(sum(e)))
    if !matches!(g.node(p).op, Op::Binary(BinaryOp::Mul)) {
        return None;
    }
    let pin = g.inputs(p);
    let (e, norm) = [(pin[0], pin[1]), (pin[1], pin[0])]
        .into_iter()
        .find(|&(_, x)| matches!(g.node(under_expand(g, x)).op, Op::Unary(UnaryOp::Recip)))?;
    let recip = under_expand(g, norm);
    let sum_exp = g.inputs(recip)[0];
    let (summed, sum, _) = expanded_reduce(g, sum_exp, ReduceOp::Sum)?;
    if summed != e {
        return None;
    }
    interior.extend([p, norm, recip, sum]);
    // e = exp2(c * (x - expand(max(x))))
    if !matches!(g.node(e).op, Op::Unary(UnaryOp::Exp2)) {
        return None;
    }
    let (diff, exp_scale) = times_constant(g, g.inputs(e)[0])?;
    interior.extend([e, g.inputs(e)[0]]);
    if !matches!(g.node(diff).op, Op::Binary(BinaryOp::Add)) {
        return None;
    }
    let din = g.inputs(diff);
    let (x, negated) = [(din[0], din[1]), (din[1], din[0])]
        .into_iter()
        .find_map(|(x, n)| {
            neg_max(g, n)
                .filter(|(m, _)| *m == x)
                .map(|(_, ns)| (x, ns))
        })?;
    interior.insert(diff);
    interior.extend(negated);
    // x = where(mask, fill, y) | y; y = scale * s | s
    let (y, mask) = match g.node(x).op {
        Op::Where => {
            let w = g.inputs(x);
            let fill = constant(g, w[1])?;
            interior.insert(x);
            (w[2], Some((w[0], fill)))
        }
        _ => (x, None),
    };
    let (s, scale) = match times_constant(g, y) {
        Some((s, c)) => {
            interior.insert(y);
            (s, c)
        }
        None => (y, 1.0),
    };
    if !matches!(g.node(s).op, Op::MatMul) {
        return None;
    }
    interior.insert(s);
    let [q, kt] = g.inputs(s)[..] else {
        return None;
    };
    // K and V are read as views; the queries may be an elementwise function of views (RoPE of
    // a projection), computed once per query row inside the kernel.
    if ![kt, v].iter().all(|&n| f.is_free(g, n)) {
        return None;
    }
    let q_cone = query_cone(g, f, q, s)?;
    interior.extend(q_cone);
    // The mask is evaluated per (row, key) from views and elementwise ops only: no reduction
    // could run inside the key loop.
    if let Some((m, _)) = mask
        && !computed_from_views(g, f, m)
    {
        return None;
    }
    let (sd, vd) = (g.node(s).shape.dims(), g.node(v).shape.dims());
    let static_inner = [sd.len(), vd.len()].iter().all(|&r| r >= 2)
        && vd[vd.len() - 1].as_const().is_some()
        && g.node(q)
            .shape
            .dims()
            .last()
            .and_then(|d| d.as_const())
            .is_some();
    if !static_inner {
        return None;
    }
    // Nothing inside may be used outside it (the scores or weights as an output, say).
    for &n in &interior {
        if g.consumers(n)
            .iter()
            .any(|c| *c != pv && !interior.contains(c))
        {
            return None;
        }
    }
    Some(Attention {
        pv,
        q,
        kt,
        v,
        mask,
        scale,
        exp_scale,
        interior,
    })
}

/// Marks every matched attention for one kernel: its interior is un-realized, and the kernel
/// that computes the `p @ v` matmul (the matmul itself, or the permute it is stored through)
/// is recorded as an attention kernel.
pub fn fuse_attention(g: &GraphData, order: &[NodeId], outputs: &[NodeId], f: &mut Fusion) {
    for &pv in order {
        let Some(att) = match_attention(g, f, pv) else {
            continue;
        };
        if att.interior.iter().any(|n| outputs.contains(n)) {
            continue;
        }
        let root = if f.realized.contains(&pv) {
            pv
        } else {
            match g.consumers(pv).as_slice() {
                [c] if f.realized.contains(c) && matches!(g.node(*c).op, Op::Permute(_)) => *c,
                _ => continue,
            }
        };
        // The softmax's row group now runs inside the attention kernel.
        for n in &att.interior {
            f.realized.remove(n);
            f.row_exits.remove(n);
        }
        f.attention.insert(root, att);
    }
}
