//! Shared predicates on the graph: what the passes and fusion steps recognise (views of a
//! weight, row broadcasts, reshapes that keep indices affine, products with a constant, ...).
//! Every pass file imports these from here, never from another pass.

use cranegrad_graph::{BinaryOp, Dim, GraphData, NodeId, Op, Shape};

use crate::fusion::Fusion;

/// Follows a chain of reshapes down to the first node that is not an unrealized reshape.
pub fn reshape_base(g: &GraphData, fusion: &Fusion, n: NodeId) -> NodeId {
    let mut cur = n;
    while matches!(g.node(cur).op, Op::Reshape) && (cur == n || !fusion.realized.contains(&cur)) {
        cur = g.inputs(cur)[0];
    }
    cur
}

/// Groups the axes of a reshape: `(input axes, output axes)` with equal products. Size-1 axes
/// are left out; symbolic axes must match one to one.
pub fn reshape_groups(input: &Shape, output: &Shape) -> Option<Vec<(Vec<usize>, Vec<usize>)>> {
    let ins: Vec<usize> = (0..input.rank())
        .filter(|&i| !input.dims()[i].is_one())
        .collect();
    let outs: Vec<usize> = (0..output.rank())
        .filter(|&i| !output.dims()[i].is_one())
        .collect();
    let (mut i, mut o) = (0, 0);
    let mut groups = Vec::new();
    while i < ins.len() && o < outs.len() {
        let (di, do_) = (&input.dims()[ins[i]], &output.dims()[outs[o]]);
        if let (Dim::Sym { .. }, _) | (_, Dim::Sym { .. }) = (di, do_) {
            if di != do_ {
                return None;
            }
            groups.push((vec![ins[i]], vec![outs[o]]));
            i += 1;
            o += 1;
            continue;
        }
        let (mut gi, mut go) = (vec![ins[i]], vec![outs[o]]);
        let (mut pi, mut po) = (di.max_value(), do_.max_value());
        i += 1;
        o += 1;
        while pi != po {
            if pi < po {
                let d = input.dims().get(*ins.get(i)?)?.as_const()?;
                pi *= d;
                gi.push(ins[i]);
                i += 1;
            } else {
                let d = output.dims().get(*outs.get(o)?)?.as_const()?;
                po *= d;
                go.push(outs[o]);
                o += 1;
            }
        }
        groups.push((gi, go));
    }
    (i == ins.len() && o == outs.len()).then_some(groups)
}

/// True when every group of the reshape splits (or keeps) one input axis, so input indices
/// are affine in output indices.
pub fn reshape_is_affine(input: &Shape, output: &Shape) -> bool {
    reshape_groups(input, output).is_some_and(|gs| gs.iter().all(|(gi, _)| gi.len() == 1))
}

/// True when `to` is `from` with size-1 axes dropped or added: the same index values, on
/// other axes.
pub fn only_unit_axes_differ(from: &Shape, to: &Shape) -> bool {
    reshape_groups(from, to).is_some_and(|gs| gs.iter().all(|(i, o)| i.len() == 1 && o.len() == 1))
}

pub fn constant(g: &GraphData, n: NodeId) -> Option<f64> {
    match g.node(n).op {
        Op::Const { value } => Some(value),
        _ => None,
    }
}

/// `(other, constant)` when `n` is a product with a constant (broadcast constants are
/// `Const` nodes of the full shape once `fold_constants` has run).
pub fn times_constant(g: &GraphData, n: NodeId) -> Option<(NodeId, f64)> {
    if !matches!(g.node(n).op, Op::Binary(BinaryOp::Mul)) {
        return None;
    }
    let ins = g.inputs(n);
    match (constant(g, ins[0]), constant(g, ins[1])) {
        (_, Some(c)) => Some((ins[0], c)),
        (Some(c), _) => Some((ins[1], c)),
        _ => None,
    }
}

/// `n`'s operand when `n` is an expand (a broadcast the Tensor API leaves out when a size-1
/// axis is already the full size), else `n` itself.
pub fn under_expand(g: &GraphData, n: NodeId) -> NodeId {
    if matches!(g.node(n).op, Op::Expand) {
        g.inputs(n)[0]
    } else {
        n
    }
}

/// Follows permutes, reshapes and broadcasts (the views packing can read: no offset, no
/// padding) down to an input that carries data (a weight).
pub fn weight_base(g: &GraphData, n: NodeId) -> Option<NodeId> {
    let mut cur = n;
    loop {
        let node = g.node(cur);
        match &node.op {
            Op::Input { .. } if node.data.is_some() && node.shape.is_static() => return Some(cur),
            Op::Permute(_) | Op::Reshape | Op::Expand => cur = g.inputs(cur)[0],
            _ => return None,
        }
    }
}

/// True for a view of an input carrying data.
pub fn is_weight_view(g: &GraphData, n: NodeId) -> bool {
    weight_base(g, n).is_some()
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

/// True for `mm * r` inside a cache-write chain (see [`is_row_scaled_matmul`]).
pub fn is_row_scale(g: &GraphData, n: NodeId) -> bool {
    matches!(g.node(n).op, Op::Binary(BinaryOp::Mul))
        && g.inputs(n).iter().any(|&i| is_row_broadcast(g, i))
}

/// True for `mm * r` with `mm` a matmul and `r` a row broadcast.
pub fn is_matmul_row_scale(g: &GraphData, n: NodeId) -> bool {
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

/// Adds matmul `n` to the ones a kernel already runs (`taken`) when the kernel can hold it:
/// the first, or a second it pairs with; returns whether it did.
pub fn take_pairable(g: &GraphData, taken: &mut Vec<NodeId>, n: NodeId) -> bool {
    let ok = match taken.as_slice() {
        [] => true,
        [first] => pairable(g, *first, n),
        _ => false,
    };
    if ok {
        taken.push(n);
    }
    ok
}

/// Rows of a `[.., M, N]` value: everything but its last axis.
pub fn rows(shape: &cranegrad_graph::Shape) -> usize {
    shape.max_numel() / shape.dims().last().map_or(1, |d| d.max_value().max(1))
}

/// True for a positive normal power of two: multiplying by it is exact (short of overflow
/// and subnormals).
pub fn is_power_of_two(c: f32) -> bool {
    c > 0.0 && c.is_normal() && c.to_bits() & 0x007F_FFFF == 0
}
