//! Constant folding: ops whose operands are all constants become constants (computed in the
//! node's own precision), and `x + 0`, `x * 1`, `--x` disappear.

use super::replace_node;
use cranegrad_graph::{BinaryOp, DType, Dim, GraphData, NodeId, Op, ReduceOp, UnaryOp};

/// Rounds a value to what the dtype can hold, so folded constants equal computed ones.
fn round_to(dtype: DType, v: f64) -> f64 {
    match dtype {
        DType::F32 => v as f32 as f64,
        DType::I32 => (v as i64 as i32) as f64,
        DType::Bool => f64::from(v != 0.0),
    }
}

fn fold_unary(op: UnaryOp, from: DType, to: DType, x: f64) -> f64 {
    let xf = x as f32;
    let v = match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp2 => xf.exp2() as f64,
        UnaryOp::Log2 => xf.log2() as f64,
        UnaryOp::Sqrt => xf.sqrt() as f64,
        UnaryOp::Recip => (1.0 / xf) as f64,
        UnaryOp::Sin => xf.sin() as f64,
        UnaryOp::Cast => return fold_cast(from, to, x),
    };
    round_to(to, v)
}

/// The kernels' cast (`fcvt_to_sint_sat`, `x != 0`): f32 -> i32 truncates, saturates and maps
/// NaN to 0; anything -> bool tests `!= 0` on the unconverted value, so 0.5 is true.
fn fold_cast(from: DType, to: DType, x: f64) -> f64 {
    match (from, to) {
        (DType::F32, DType::I32) if x.is_nan() => 0.0,
        (DType::F32, DType::I32) => x.trunc().clamp(f64::from(i32::MIN), f64::from(i32::MAX)),
        _ => round_to(to, x),
    }
}

fn fold_binary(op: BinaryOp, dtype: DType, a: f64, b: f64) -> f64 {
    let v = match op {
        BinaryOp::Add => a + b,
        BinaryOp::Mul => a * b,
        BinaryOp::Max => {
            if a < b {
                b
            } else {
                a
            }
        }
        BinaryOp::CmpLt => f64::from(a < b),
    };
    round_to(dtype, v)
}

/// Folds constant subgraphs and trivial identities; returns how many nodes changed.
pub fn fold_constants(g: &mut GraphData, outputs: &mut [NodeId]) -> usize {
    let mut changed = 0;
    for n in g.topo_from(outputs) {
        let ins = g.inputs(n);
        // A constant's value is stored unrounded (`0.1` on an f32 node) and only becomes what
        // its dtype holds when computed, so fold with the rounded value the kernels would see.
        let consts: Vec<Option<f64>> = ins
            .iter()
            .map(|&i| match g.node(i).op {
                Op::Const { value } => Some(round_to(g.node(i).dtype, value)),
                _ => None,
            })
            .collect();
        let node = g.node(n);
        let all_const = !ins.is_empty() && consts.iter().all(Option::is_some);
        let c = |k: usize| consts[k].unwrap_or(0.0);
        let folded = if all_const {
            match &node.op {
                Op::Unary(op) => Some(fold_unary(*op, g.node(ins[0]).dtype, node.dtype, c(0))),
                Op::Binary(op) => Some(fold_binary(*op, node.dtype, c(0), c(1))),
                Op::Where => Some(if c(0) != 0.0 { c(1) } else { c(2) }),
                Op::Reshape | Op::Permute(_) | Op::Expand | Op::Slice { .. } => Some(c(0)),
                Op::Reduce {
                    op: ReduceOp::Max, ..
                } => Some(c(0)),
                Op::Reduce {
                    op: ReduceOp::Sum,
                    axis,
                } => match g.node(ins[0]).shape.dims()[*axis] {
                    Dim::Const(len) => Some(round_to(node.dtype, c(0) * len as f64)),
                    Dim::Sym { .. } => None,
                },
                _ => None,
            }
        } else {
            None
        };
        if let Some(value) = folded {
            g.g[n].op = Op::Const { value };
            let edges: Vec<_> =
                g.g.edges_directed(n, petgraph::Direction::Incoming)
                    .map(|e| petgraph::visit::EdgeRef::id(&e))
                    .collect();
            for e in edges {
                g.g.remove_edge(e);
            }
            changed += 1;
            continue;
        }
        // Identities: the surviving operand already has the node's shape and dtype, because
        // binary operands are broadcast before the op is recorded.
        let keep = match (&node.op, consts.as_slice()) {
            (Op::Binary(BinaryOp::Add), [Some(z), None]) if *z == 0.0 => Some(ins[1]),
            (Op::Binary(BinaryOp::Add), [None, Some(z)]) if *z == 0.0 => Some(ins[0]),
            (Op::Binary(BinaryOp::Mul), [Some(o), None]) if *o == 1.0 => Some(ins[1]),
            (Op::Binary(BinaryOp::Mul), [None, Some(o)]) if *o == 1.0 => Some(ins[0]),
            (Op::Unary(UnaryOp::Neg), [None]) => match g.node(ins[0]).op {
                Op::Unary(UnaryOp::Neg) => Some(g.inputs(ins[0])[0]),
                _ => None,
            },
            _ => None,
        };
        if let Some(k) = keep {
            replace_node(g, outputs, n, k);
            changed += 1;
        }
    }
    changed
}
