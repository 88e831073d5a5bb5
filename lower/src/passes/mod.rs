//! Rewrite passes, one per file, each with a name you can grep for: functions from graph to
//! graph (or to the fusion decisions over it), and `fuse_sibling_gemms`, from schedule to
//! schedule.

pub mod cse;
pub mod dead_nodes;
pub mod fold_constants;
pub mod fold_norm_into_matmul;
pub mod fuse_attention;
pub mod fuse_elementwise;
pub mod fuse_gemm_prologue;
pub mod fuse_rows;
pub mod fuse_sibling_gemms;
pub mod hoist_scale_out_of_max;
pub mod reduced_axis_innermost;
pub mod select_gemm;
pub mod simplify_loops;
pub mod sink_slices;

use cranegrad_graph::{DType, GraphData, Node, NodeId, Op, Shape};

/// Points every use of `old`, and every requested output that is `old`, at `new`: what a
/// rewrite does once it has built the replacement.
pub(crate) fn replace_node(g: &mut GraphData, outputs: &mut [NodeId], old: NodeId, new: NodeId) {
    g.replace_uses(old, new);
    for o in outputs.iter_mut().filter(|o| **o == old) {
        *o = new;
    }
}

/// Adds a computed node (no host data) of `shape` and `dtype` over `ins`.
pub(crate) fn add_computed(
    g: &mut GraphData,
    op: Op,
    (shape, dtype): (Shape, DType),
    ins: &[NodeId],
) -> NodeId {
    g.add(
        Node {
            op,
            shape,
            dtype,
            data: None,
        },
        ins,
    )
}
