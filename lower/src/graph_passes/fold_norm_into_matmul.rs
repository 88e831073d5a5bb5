//! Folding a norm into the matmul it feeds: `(x * r * g) @ W`, with `r` constant along each
//! row of `x` (broadcast from `[.., M, 1]`, RMSNorm's `1/rms`) and `g` a weight vector along
//! K (the norm's gain), becomes `r * (x @ (g[:, None] * W))`. The runtime folds `g` into the
//! packed weight panels once, so the gain costs nothing per forward, and fusion computes `r`
//! in each GEMM kernel's prologue (`fuse_gemm_prologues`): `rms_norm(x, g) @ W` runs as one
//! kernel and the normalised rows are never written.
//!
//! The identity holds for any such `r` and `g`; the pass only fires when `W` is a weight (an
//! input carrying data) and `g` a weight vector, i.e. when packing can absorb the gain.

use cranegrad_graph::{BinaryOp, Dim, GraphData, NodeId, Op, Shape};

use crate::patterns::{is_row_broadcast, weight_base};
use crate::rewrite::{add_computed, replace_node};

/// The weight vector `[.., K]` a factor broadcasts along the rows, if it is one: a chain of
/// reshapes and expands over a weight whose only non-unit axis is the last, of length `k`.
fn gain_vector(g: &GraphData, n: NodeId, k: &Dim) -> Option<NodeId> {
    let mut cur = n;
    loop {
        let node = g.node(cur);
        let dims = node.shape.dims();
        let only_last = dims.last() == Some(k) && dims[..dims.len() - 1].iter().all(Dim::is_one);
        match &node.op {
            Op::Input { .. } if node.data.is_some() && only_last => return Some(cur),
            Op::Expand | Op::Reshape if dims.last() == Some(k) => cur = g.inputs(cur)[0],
            _ => return None,
        }
    }
}

/// The `[.., M, 1]` value a factor broadcasts along K (a K of at least 2), if it is one.
fn row_factor(g: &GraphData, n: NodeId, shape: &Shape) -> Option<NodeId> {
    let wide = !shape.dims().last().is_some_and(Dim::is_one);
    (wide && &g.node(n).shape == shape && is_row_broadcast(g, n)).then(|| g.inputs(n)[0])
}

/// The factors of a product of products, up to two levels deep.
fn factors(g: &GraphData, a: NodeId) -> Vec<NodeId> {
    let is_mul = |n: NodeId| matches!(g.node(n).op, Op::Binary(BinaryOp::Mul));
    if !is_mul(a) {
        return vec![a];
    }
    let mut out = Vec::new();
    for i in g.inputs(a) {
        if is_mul(i) && g.node(i).shape == g.node(a).shape {
            out.extend(g.inputs(i));
        } else {
            out.push(i);
        }
    }
    out
}

/// Rewrites every `(x * r * g) @ W` as `r * (x @ (g * W))` (see the module doc); returns how
/// many matmuls were rewritten. `outputs` is updated in place.
pub fn fold_norm_into_matmul(g: &mut GraphData, outputs: &mut [NodeId]) -> usize {
    let mut changed = 0;
    for m in g.topo_from(outputs) {
        if !matches!(g.node(m).op, Op::MatMul) {
            continue;
        }
        let ins = g.inputs(m);
        let (a, w) = (ins[0], ins[1]);
        let a_shape = g.node(a).shape.clone();
        let w_shape = g.node(w).shape.clone();
        let rank = a_shape.rank();
        let k = a_shape.dims()[rank - 1].clone();
        // A weight exact in 16 bits stays exact (16-bit panels): its gain goes to the rows.
        let bf16 = weight_base(g, w)
            .and_then(|b| g.node(b).data.as_ref())
            .is_some_and(|d| d.compact().is_some());
        if weight_base(g, w).is_none() || bf16 || !w_shape.is_static() || k.as_const().is_none() {
            continue;
        }
        let fs = factors(g, a);
        if fs.len() != 3 {
            continue;
        }
        let rows: Vec<(usize, NodeId)> = fs
            .iter()
            .enumerate()
            .filter_map(|(i, &f)| row_factor(g, f, &a_shape).map(|r| (i, r)))
            .collect();
        let [(ri, row)] = rows[..] else {
            continue;
        };
        // Of the other two factors, the gain is a weight vector; a one-row x is one too, so
        // a broadcast view is preferred (either choice is exact).
        let rest: Vec<usize> = (0..3).filter(|&i| i != ri).collect();
        let mut pick = None;
        for (gi, xi) in [(rest[0], rest[1]), (rest[1], rest[0])] {
            if let Some(v) = gain_vector(g, fs[gi], &k)
                && g.node(fs[xi]).shape == a_shape
                && (pick.is_none() || fs[gi] != v)
            {
                pick = Some((v, fs[xi]));
            }
        }
        let Some((gain, x)) = pick else {
            continue;
        };
        let mm_node = g.node(m).clone();
        let w_node = g.node(w).clone();
        // g[:, None] broadcast over W's [.., K, N].
        let mut col = vec![Dim::Const(1); w_shape.rank()];
        col[w_shape.rank() - 2] = k.clone();
        let (wd, md) = (w_node.dtype, mm_node.dtype);
        let gk = add_computed(g, Op::Reshape, (Shape(col), wd), &[gain]);
        let ge = add_computed(g, Op::Expand, (w_shape.clone(), wd), &[gk]);
        let scaled = add_computed(g, Op::Binary(BinaryOp::Mul), (w_shape, wd), &[w, ge]);
        let at_mm = || (mm_node.shape.clone(), md);
        let mm = add_computed(g, Op::MatMul, at_mm(), &[x, scaled]);
        let re = add_computed(g, Op::Expand, at_mm(), &[row]);
        let out = add_computed(g, Op::Binary(BinaryOp::Mul), at_mm(), &[mm, re]);
        replace_node(g, outputs, m, out);
        changed += 1;
    }
    changed
}
