//! Fusion step, with fusion off (`--no-fuse`) only: every node that is neither a view nor a
//! source is realized, giving one kernel per primitive op, the baseline fusion is measured
//! against.

use cranegrad_graph::{GraphData, NodeId};

use crate::fusion::Fusion;

/// Realizes every computed node.
pub fn realize_every_op(g: &GraphData, order: &[NodeId], _outputs: &[NodeId], f: &mut Fusion) {
    for &n in order {
        let op = &g.node(n).op;
        if !op.is_movement() && !op.is_source() {
            f.realized.insert(n);
        }
    }
}
