//! Graph edits the rewrite passes share: pointing uses at a replacement, adding a computed
//! node.

use cranegrad_graph::{DType, GraphData, Node, NodeId, Op, Shape};

/// Points every use of `old`, and every requested output that is `old`, at `new`: what a
/// rewrite does once it has built the replacement.
pub(crate) fn replace_node(g: &mut GraphData, outputs: &mut [NodeId], old: NodeId, new: NodeId) {
    g.replace_uses(old, new);
    // The replacement computes what `old` did, so it belongs where `old` was recorded.
    if g.node(new).scope.is_none() {
        g.g[new].scope = g.node(old).scope.clone();
    }
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
            scope: None,
        },
        ins,
    )
}
