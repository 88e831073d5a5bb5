//! `max(x * c)` along an axis, `c` a positive constant, becomes `max(x) * c`. Exact:
//! rounding is monotonic, so the largest rounded product is the rounded product of the
//! largest `x`, and a NaN or an infinity propagates the same way. A scaled softmax's max
//! pass then reads `x` without multiplying every element (its kernels run bound by their FP
//! operations), and the one multiply per row moves out of the loop.

use cranegrad_graph::{BinaryOp, DType, GraphData, Node, NodeId, Op, ReduceOp};

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
        changed += 1;
    }
    changed
}
