//! Slice sinking: a slice of a value that nothing else uses is pushed below the ops that made
//! it, so only the kept part is computed. A generation prefill that keeps the last position's
//! logits then runs the final norm and the vocabulary projection over one row per sequence
//! instead of all of them (the `logits_to_keep` of Hugging Face's generate, found by the
//! compiler).
//!
//! A slice moves below: elementwise ops (each operand sliced alike), broadcasts (a broadcast
//! axis is kept whole at size 1), reductions (when the reduced axis is kept whole) and matmuls
//! (when the columns are kept whole: the rows of A and the batch of both operands are sliced),
//! and a slice of a constant is a smaller constant. Only static windows are moved.

use crate::rewrite::{add_computed, replace_node};
use cranegrad_graph::{Dim, GraphData, NodeId, Op, Shape};

/// The window `starts`/`shape` applied to a node of `full` shape, as a new slice node (or the
/// node itself when the window is everything).
fn slice(g: &mut GraphData, n: NodeId, starts: &[usize], shape: &[usize]) -> NodeId {
    let node = g.node(n).clone();
    let full = node.shape.max_dims();
    if starts.iter().all(|&s| s == 0) && shape == full.as_slice() {
        return n;
    }
    let out = (Shape::of(shape), node.dtype);
    if let Op::Const { value } = node.op {
        return add_computed(g, Op::Const { value }, out, &[]);
    }
    let starts = starts.iter().map(|&s| Dim::Const(s)).collect();
    add_computed(g, Op::Slice { starts }, out, &[n])
}

/// The node computing window (`starts`, `shape`) of `n`, built from sliced operands, if the
/// window can move below `n`.
fn sink(g: &mut GraphData, n: NodeId, starts: &[usize], shape: &[usize]) -> Option<NodeId> {
    let node = g.node(n).clone();
    if !node.shape.is_static() {
        return None;
    }
    let full = node.shape.max_dims();
    let ins = g.inputs(n);
    let rank = full.len();
    let new_ins: Vec<NodeId> = match &node.op {
        op if op.is_elementwise() => ins.iter().map(|&i| slice(g, i, starts, shape)).collect(),
        Op::Expand => {
            let src = g.node(ins[0]).shape.max_dims();
            let (s, e): (Vec<usize>, Vec<usize>) = (0..rank)
                .map(|a| {
                    if src[a] == 1 && full[a] != 1 {
                        (0, 1)
                    } else {
                        (starts[a], shape[a])
                    }
                })
                .unzip();
            vec![slice(g, ins[0], &s, &e)]
        }
        Op::Reduce { axis, .. } => {
            if starts[*axis] != 0 || shape[*axis] != 1 {
                return None;
            }
            let src = g.node(ins[0]).shape.dims()[*axis].max_value();
            let mut e = shape.to_vec();
            e[*axis] = src;
            vec![slice(g, ins[0], starts, &e)]
        }
        Op::MatMul => {
            if rank < 2 || starts[rank - 1] != 0 || shape[rank - 1] != full[rank - 1] {
                return None;
            }
            let k = g.node(ins[0]).shape.dims()[rank - 1].max_value();
            let mut a_s = starts.to_vec();
            let mut a_e = shape.to_vec();
            a_s[rank - 1] = 0;
            a_e[rank - 1] = k;
            let b_full = g.node(ins[1]).shape.max_dims();
            let mut b_s = starts.to_vec();
            let mut b_e = shape.to_vec();
            for a in [rank - 2, rank - 1] {
                b_s[a] = 0;
                b_e[a] = b_full[a];
            }
            vec![slice(g, ins[0], &a_s, &a_e), slice(g, ins[1], &b_s, &b_e)]
        }
        _ => return None,
    };
    Some(add_computed(
        g,
        node.op.clone(),
        (Shape::of(shape), node.dtype),
        &new_ins,
    ))
}

/// Removes `n` if nothing uses it, then its operands that this leaves unused.
fn remove_unused(g: &mut GraphData, n: NodeId, outputs: &[NodeId]) {
    let mut stack = vec![n];
    while let Some(x) = stack.pop() {
        if !g.g.contains_node(x) || !g.consumers(x).is_empty() || outputs.contains(&x) {
            continue;
        }
        stack.extend(g.inputs(x));
        g.g.remove_node(x);
    }
}

/// Sinks every static slice whose input has no other use (see the module doc); returns how
/// many slices moved. `outputs` is updated in place.
pub fn sink_slices(g: &mut GraphData, outputs: &mut [NodeId]) -> usize {
    let mut moved = 0;
    let mut work: Vec<NodeId> = g.topo_from(outputs);
    while let Some(s) = work.pop() {
        if !g.g.contains_node(s) {
            continue;
        }
        let Op::Slice { starts } = &g.node(s).op else {
            continue;
        };
        let Some(starts) = starts
            .iter()
            .map(Dim::as_const)
            .collect::<Option<Vec<usize>>>()
        else {
            continue;
        };
        let shape: Option<Vec<usize>> = g.node(s).shape.dims().iter().map(Dim::as_const).collect();
        let Some(shape) = shape else { continue };
        let input = g.inputs(s)[0];
        if g.consumers(input).len() != 1 || outputs.contains(&input) {
            continue;
        }
        let Some(new) = sink(g, input, &starts, &shape) else {
            continue;
        };
        replace_node(g, outputs, s, new);
        // The full-size computation is dead now: removing it leaves its operands with only
        // the new slices as users, so those can move further down.
        remove_unused(g, s, outputs);
        moved += 1;
        // The slices just made (the new node's operands) may move further down.
        let made: Vec<NodeId> = g
            .inputs(new)
            .into_iter()
            .filter(|&i| matches!(g.node(i).op, Op::Slice { .. }))
            .collect();
        work.extend(made);
    }
    moved
}
