//! `max(x * c)` along an axis, `c` a positive constant, becomes `max(x) * c`. Exact:
//! rounding is monotonic, so the largest rounded product is the rounded product of the
//! largest `x`, and a NaN or an infinity propagates the same way. A scaled softmax's max
//! pass then reads `x` without multiplying every element (its kernels run bound by their FP
//! operations), and the one multiply per row moves out of the loop.

use cranegrad_graph::{BinaryOp, DType, GraphData, Node, NodeId, Op, ReduceOp};

/// The value of a constant seen through the views that broadcast it (reshape, expand).
fn constant_through_views(g: &GraphData, mut n: NodeId) -> Option<f64> {
    loop {
        match g.node(n).op {
            Op::Const { value } => return Some(value),
            Op::Reshape | Op::Expand => n = g.inputs(n)[0],
            _ => return None,
        }
    }
}

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
        let m = g.inputs(n)[0];
        if g.node(m).op != Op::Binary(BinaryOp::Mul) {
            continue;
        }
        let ins = g.inputs(m);
        let (x, c) = match (
            constant_through_views(g, ins[0]),
            constant_through_views(g, ins[1]),
        ) {
            (None, Some(c)) => (ins[0], c),
            (Some(c), None) => (ins[1], c),
            _ => continue,
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
