//! Constant folding: ops whose operands are all constants become constants (computed in the
//! node's own precision), and `x + 0`, `x * 1`, `--x` disappear.

use crate::rewrite::replace_node;
use cranegrad_graph::{
    BinaryOp, GraphData, NodeId, Op, ReduceOp, UnaryOp, eval_binary, eval_reduce, eval_unary,
    eval_where, round_to,
};

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
                Op::Unary(op) => Some(eval_unary(*op, node.dtype, c(0))),
                Op::Binary(op) => Some(eval_binary(*op, g.node(ins[0]).dtype, c(0), c(1))),
                Op::Where => Some(eval_where(c(0), c(1), c(2))),
                Op::Reshape | Op::Permute(_) | Op::Expand | Op::Slice { .. } => Some(c(0)),
                Op::Reduce { op, axis } => {
                    let len = &g.node(ins[0]).shape.dims()[*axis];
                    // A max of one copy or many is the same, so a symbolic axis folds too
                    // when it is never empty; a sum needs the count.
                    let copies = match (len.as_const(), op) {
                        (Some(n), _) => Some(n),
                        (None, ReduceOp::Max) if len.min_value() >= 1 => Some(1),
                        (None, _) => None,
                    };
                    copies.map(|n| eval_reduce(*op, node.dtype, std::iter::repeat_n(c(0), n)))
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use cranegrad_graph::{DType, Dim, Graph, Shape, Symbol, Tensor};

    /// The constant `t` folds to, or `None` when folding leaves an op.
    fn folded(t: &Tensor) -> Option<f64> {
        let mut g = t.graph().snapshot();
        let mut outs = [t.id()];
        fold_constants(&mut g, &mut outs);
        match g.node(outs[0]).op {
            Op::Const { value } => Some(value),
            _ => None,
        }
    }

    #[test]
    fn an_out_of_range_i32_constant_saturates_like_the_kernels() {
        // The kernels build an i32 constant with `as i32`; wrapping would give -1294967296.
        let c = Graph::new().constant(3e9, Shape::of(&[2]), DType::I32);
        let as_f32 = c.cast(DType::F32).unwrap();
        assert_eq!(folded(&as_f32), Some(2_147_483_648.0));
    }

    #[test]
    fn i32_mul_wraps_in_32_bits() {
        let g = Graph::new();
        let max = f64::from(i32::MAX);
        let a = g.constant(max, Shape::of(&[2]), DType::I32);
        let b = g.constant(max, Shape::of(&[2]), DType::I32);
        // (2^31 - 1)^2 has low word 1; the product in f64 is rounded and would wrap to 0.
        assert_eq!(folded(&a.mul(&b).unwrap()), Some(1.0));
    }

    #[test]
    fn a_max_over_an_empty_axis_folds_to_the_identity() {
        let c = Graph::new().constant(5.0, Shape::of(&[2, 0]), DType::F32);
        assert_eq!(folded(&c.max(-1, true).unwrap()), Some(f64::NEG_INFINITY));
        assert_eq!(folded(&c.sum(-1, true).unwrap()), Some(0.0));
    }

    #[test]
    fn a_sum_over_a_static_axis_counts_the_copies() {
        let c = Graph::new().constant(0.1, Shape::of(&[3, 4]), DType::F32);
        // Four f32 copies of 0.1 summed exactly, then rounded once.
        let want = f64::from((f64::from(0.1f32) * 4.0) as f32);
        assert_eq!(folded(&c.sum(1, true).unwrap()), Some(want));
    }

    #[test]
    fn a_max_over_a_symbolic_axis_folds_only_when_it_is_never_empty() {
        let g = Graph::new();
        let never_empty = Symbol::new("n", 1, 8).unwrap();
        let maybe_empty = Symbol::new("m", 0, 8).unwrap();
        let over = |s: &Symbol| g.constant(2.5, Shape(vec![Dim::sym(s)]), DType::F32);
        assert_eq!(folded(&over(&never_empty).max(0, true).unwrap()), Some(2.5));
        assert_eq!(folded(&over(&maybe_empty).max(0, true).unwrap()), None);
        // A sum needs the count, which a symbol does not give.
        assert_eq!(folded(&over(&never_empty).sum(0, true).unwrap()), None);
    }
}
