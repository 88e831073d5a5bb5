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

use cranegrad_graph::{BinaryOp, DType, GraphData, Node, NodeId, Op, ReduceOp, UnaryOp};

use super::fuse_attention::times_constant;

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
        let Some((x, c)) = times_constant(g, g.inputs(n)[0]) else {
            continue;
        };
        // The kernels multiply by the constant rounded to f32.
        let c = c as f32;
        // Scaled attention scores (`Q Kᵀ * s`) are left to `fuse_attention`, which matches
        // the softmax over them as composed.
        if !(c > 0.0 && c.is_finite()) || g.node(x).op == Op::MatMul {
            continue;
        }
        let at_row = |op| Node {
            op,
            shape: node.shape.clone(),
            dtype: node.dtype,
            data: None,
        };
        let max = g.add(
            at_row(Op::Reduce {
                op: ReduceOp::Max,
                axis,
            }),
            &[x],
        );
        let scale = g.add(
            at_row(Op::Const {
                value: f64::from(c),
            }),
            &[],
        );
        let scaled = g.add(at_row(Op::Binary(BinaryOp::Mul)), &[max, scale]);
        g.replace_uses(n, scaled);
        for o in outputs.iter_mut().filter(|o| **o == n) {
            *o = scaled;
        }
        if is_power_of_two(c) {
            changed += factor_out_of_difference(g, outputs, g.inputs(n)[0], (x, max, scaled), c);
        }
        changed += 1;
    }
    changed
}

/// True for a positive normal power of two: multiplying by it is exact (short of overflow
/// and subnormals).
pub fn is_power_of_two(c: f32) -> bool {
    c > 0.0 && c.is_normal() && c.to_bits() & 0x007F_FFFF == 0
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
    let mut changed = 0;
    for neg in g.consumers(scaled) {
        if g.node(neg).op != Op::Unary(UnaryOp::Neg) {
            continue;
        }
        for expand in g.consumers(neg) {
            if g.node(expand).op != Op::Expand {
                continue;
            }
            for add in g.consumers(expand) {
                let ins = g.inputs(add);
                if g.node(add).op != Op::Binary(BinaryOp::Add)
                    || !(ins == [y, expand] || ins == [expand, y])
                {
                    continue;
                }
                let like = |g: &GraphData, n: NodeId, op: Op| Node {
                    op,
                    shape: g.node(n).shape.clone(),
                    dtype: g.node(n).dtype,
                    data: None,
                };
                let neg_max = g.add(like(g, neg, Op::Unary(UnaryOp::Neg)), &[max]);
                let spread = g.add(like(g, expand, Op::Expand), &[neg_max]);
                let diff = g.add(like(g, add, Op::Binary(BinaryOp::Add)), &[x, spread]);
                let factor = g.add(
                    like(
                        g,
                        add,
                        Op::Const {
                            value: f64::from(c),
                        },
                    ),
                    &[],
                );
                let product = g.add(like(g, add, Op::Binary(BinaryOp::Mul)), &[diff, factor]);
                g.replace_uses(add, product);
                for o in outputs.iter_mut().filter(|o| **o == add) {
                    *o = product;
                }
                changed += 1;
            }
        }
    }
    changed
}
