//! Dead-node elimination: the graph is append-only while a model is built, so anything not
//! reachable from the requested outputs is dropped before any other pass looks at it.

use std::collections::HashSet;

use cranegrad_graph::{GraphData, NodeId};

/// Removes every node that no output depends on; returns how many were removed.
pub fn eliminate_dead_nodes(g: &mut GraphData, outputs: &[NodeId]) -> usize {
    let live: HashSet<NodeId> = g.topo_from(outputs).into_iter().collect();
    let dead: Vec<NodeId> = g.g.node_indices().filter(|n| !live.contains(n)).collect();
    for &n in &dead {
        g.g.remove_node(n);
    }
    dead.len()
}
