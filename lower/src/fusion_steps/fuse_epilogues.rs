//! Fusion step, epilogues: a reduction or matmul whose value feeds, through same-shape
//! elementwise ops only, exactly one kernel rooted at a same-shape elementwise node is
//! computed inside that kernel (bias, residual, activation applied before the store), as long
//! as the kernel has no other reduction. The reduction's own loop becomes the kernel's reduce
//! loop. A value read only through a realized permute is computed by the permute's kernel,
//! which then stores it in the permuted layout; a reduction read only through a realized
//! affine reshape (dropping its kept axis) likewise. Unrealized reshapes that only drop or add
//! size-1 axes may sit between the reduction and its epilogue (`sqrt(sum(x, axis))` without
//! the kept axis). A row group's exit (it computes its rows' reductions already) takes no
//! epilogue reduction, and matmul epilogues are placed before reduction ones. Two matmuls of
//! the same A may share one root (a paired GEMM).

use std::collections::{BTreeSet, HashMap};

use cranegrad_graph::{GraphData, NodeId, Op, Shape};

use crate::fusion::Fusion;
use crate::patterns::{is_row_scale, only_unit_axes_differ, reshape_is_affine, take_pairable};

/// The one kernel root a node's value flows into when every use on the way is a same-shape
/// elementwise op (so the value is read at the root's own index); `None` otherwise.
fn epilogue_root(g: &GraphData, f: &Fusion, r: NodeId) -> Option<NodeId> {
    let shape = &g.node(r).shape;
    // A value only read through a realized permute (attention's `p @ v` feeding the output
    // projection) is stored straight in the permuted layout: no copy kernel.
    if let [c] = g.consumers(r).as_slice()
        && matches!(g.node(*c).op, Op::Permute(_))
        && f.realized.contains(c)
    {
        return Some(*c);
    }
    // A reduction only read through a realized reshape that keeps its indices affine (an
    // output `sum(x, axis)` without the kept axis) is stored straight in that layout.
    if let [c] = g.consumers(r).as_slice()
        && matches!(g.node(r).op, Op::Reduce { .. })
        && matches!(g.node(*c).op, Op::Reshape)
        && f.realized.contains(c)
        && reshape_is_affine(shape, &g.node(*c).shape)
    {
        return Some(*c);
    }
    // A value only appended to a cache (a decode step's V projection) is computed by the
    // write kernel itself, straight into the cache.
    let mut v = r;
    while let [c] = g.consumers(v).as_slice() {
        match g.node(*c).op {
            Op::Reshape
                if !f.realized.contains(c)
                    && reshape_is_affine(&g.node(v).shape, &g.node(*c).shape) =>
            {
                v = *c;
            }
            // The row scale of a folded norm is applied by the write kernel too.
            Op::Binary(_) if !f.realized.contains(c) && is_row_scale(g, *c) => v = *c,
            Op::WriteSlice { .. } if g.inputs(*c)[1] == v => return Some(*c),
            _ => break,
        }
    }
    // Each use with the shape its value has there: an unrealized reshape that only drops or
    // adds size-1 axes (`sum(x, axis)` without the kept axis, then `sqrt`) renames indices.
    let mut root = None;
    let mut stack: Vec<(NodeId, Shape)> = g
        .consumers(r)
        .into_iter()
        .map(|c| (c, shape.clone()))
        .collect();
    let mut seen = BTreeSet::new();
    while let Some((c, at)) = stack.pop() {
        if !seen.insert(c) {
            continue;
        }
        let node = g.node(c);
        let uses = |c: NodeId| g.consumers(c).into_iter().map(|d| (d, node.shape.clone()));
        if matches!(node.op, Op::Reshape)
            && !f.realized.contains(&c)
            && only_unit_axes_differ(&at, &node.shape)
        {
            stack.extend(uses(c));
            continue;
        }
        if !node.op.is_elementwise() || node.shape != at {
            return None;
        }
        if f.realized.contains(&c) {
            if root.is_some_and(|x| x != c) {
                return None;
            }
            root = Some(c);
        } else {
            stack.extend(uses(c));
        }
    }
    root
}

/// Un-realizes reductions and matmuls that can run as the head of their consumer's
/// kernel.
pub fn fuse_epilogues(g: &GraphData, order: &[NodeId], outputs: &[NodeId], f: &mut Fusion) {
    // Root -> the reductions already fused into its kernel: one, or two pairable matmuls.
    let mut fused: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    // Matmuls first: a root takes one reduction, and a GEMM gains the most from its epilogue.
    let matmuls = order
        .iter()
        .filter(|&&n| matches!(g.node(n).op, Op::MatMul));
    let reductions = order
        .iter()
        .filter(|&&n| matches!(g.node(n).op, Op::Reduce { .. }));
    for &n in matmuls.chain(reductions) {
        if outputs.contains(&n) {
            continue;
        }
        let Some(root) = epilogue_root(g, f, n).filter(|r| !f.row_exits.contains_key(r)) else {
            continue;
        };
        if take_pairable(g, fused.entry(root).or_default(), n) {
            f.realized.remove(&n);
        }
    }
}
