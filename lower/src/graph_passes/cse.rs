//! Common-subexpression elimination: nodes with the same op, attributes, type and operands are
//! merged, so composite ops that rebuild a value (e.g. `x - mean(x)` twice) compute it once.

use std::collections::HashMap;

use crate::rewrite::replace_node;
use cranegrad_graph::{GraphData, NodeId};

/// Merges structurally identical nodes (inputs with equal names are one input); returns how
/// many nodes were removed. `outputs` is updated in place.
pub fn eliminate_common_subexpressions(g: &mut GraphData, outputs: &mut [NodeId]) -> usize {
    let mut seen: HashMap<String, NodeId> = HashMap::new();
    let mut removed = 0;
    for n in g.topo_from(outputs) {
        let node = g.node(n);
        let key = format!(
            "{:?}|{}|{}|{:?}",
            node.op,
            node.dtype,
            node.shape,
            g.inputs(n)
        );
        match seen.get(&key) {
            Some(&keep) => {
                replace_node(g, outputs, n, keep);
                g.g.remove_node(n);
                removed += 1;
            }
            None => {
                seen.insert(key, n);
            }
        }
    }
    removed
}
