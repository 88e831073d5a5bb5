//! `max(x * c)` along an axis, `c` a positive constant, becomes `max(x) * c`. Exact:
//! rounding is monotonic, so the largest rounded product is the rounded product of the
//! largest `x`, and a NaN or an infinity propagates the same way. A scaled softmax's max
//! pass then reads `x` without multiplying every element (its kernels run bound by their FP
//! operations), and the one multiply per row moves out of the loop.
//!
//! When `c` is a power of two, the softmax's exponent `x * c - max(x) * c` also becomes
//! `(x - max(x)) * c`: exact too (scaling by 2^k commutes with rounding, short of overflow
//! and subnormals; past them the difference is the better one: `x * 4` overflows before
//! `x - max` does), and the exp then folds `c` into its own factor (`log2 e`), so the exp
//! pass multiplies no element by `c` either.

use cranegrad_graph::{BinaryOp, DType, GraphData, NodeId, Op, ReduceOp, UnaryOp};

use crate::patterns::{is_power_of_two, times_constant};
use crate::rewrite::{add_computed, replace_node};

/// Rewrites every `max(x * c)` with a positive finite `c`; returns how many.
pub fn hoist_scale_out_of_max(g: &mut GraphData, outputs: &mut [NodeId]) -> usize {
    let mut changed = 0;
    for n in g.topo_from(outputs) {
        let node = g.node(n).clone();
        let Op::Reduce {
            op: ReduceOp::Max,
            axis,
        } = node.op
        else {
            continue;
        };
        if node.dtype != DType::F32 {
            continue;
        }
        let y = g.inputs(n)[0];
        let Some((x, c)) = times_constant(g, y) else {
            continue;
        };
        // The kernels multiply by the constant rounded to f32.
        let c = c as f32;
        // Scaled attention scores (`Q Kᵀ * s`) are left to `fuse_attention`, which matches
        // the softmax over them as composed.
        if !(c > 0.0 && c.is_finite()) || g.node(x).op == Op::MatMul {
            continue;
        }
        let row = (node.shape.clone(), node.dtype);
        let max_op = Op::Reduce {
            op: ReduceOp::Max,
            axis,
        };
        let max = add_computed(g, max_op, row.clone(), &[x]);
        let value = f64::from(c);
        let scale = add_computed(g, Op::Const { value }, row.clone(), &[]);
        let scaled = add_computed(g, Op::Binary(BinaryOp::Mul), row, &[max, scale]);
        replace_node(g, outputs, n, scaled);
        if is_power_of_two(c) {
            changed += factor_out_of_difference(g, outputs, y, (x, max, scaled), c);
        }
        changed += 1;
    }
    changed
}

/// Rewrites each `y + expand(-scaled)` with `y = x * c` and `scaled = max(x) * c` as
/// `(x + expand(-max(x))) * c` (see the module doc; the caller checks `c` is a power of two);
/// returns how many.
fn factor_out_of_difference(
    g: &mut GraphData,
    outputs: &mut [NodeId],
    y: NodeId,
    (x, max, scaled): (NodeId, NodeId, NodeId),
    c: f32,
) -> usize {
    // The adds `y + expand(neg(scaled))` (either way round), with their broadcast and negation.
    let found: Vec<(NodeId, NodeId, NodeId)> = g
        .consumers(y)
        .into_iter()
        .filter(|&add| g.node(add).op == Op::Binary(BinaryOp::Add))
        .filter_map(|add| {
            let ins = g.inputs(add);
            let expand = if ins[0] == y { ins[1] } else { ins[0] };
            let neg = *g.inputs(expand).first()?;
            let matches = g.node(expand).op == Op::Expand
                && g.node(neg).op == Op::Unary(UnaryOp::Neg)
                && g.inputs(neg) == [scaled];
            matches.then_some((neg, expand, add))
        })
        .collect();
    let of = |g: &GraphData, n: NodeId| (g.node(n).shape.clone(), g.node(n).dtype);
    for &(neg, expand, add) in &found {
        let neg_max = add_computed(g, Op::Unary(UnaryOp::Neg), of(g, neg), &[max]);
        let spread = add_computed(g, Op::Expand, of(g, expand), &[neg_max]);
        let diff = add_computed(g, Op::Binary(BinaryOp::Add), of(g, add), &[x, spread]);
        let value = f64::from(c);
        let factor = add_computed(g, Op::Const { value }, of(g, add), &[]);
        let product = add_computed(g, Op::Binary(BinaryOp::Mul), of(g, add), &[diff, factor]);
        replace_node(g, outputs, add, product);
    }
    found.len()
}
