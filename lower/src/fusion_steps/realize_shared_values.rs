//! Fusion step: a computed node whose value is needed by more than one kernel is realized
//! once and read by each, rather than recomputed (recomputing a chain of transcendental ops
//! per consumer costs more than one write and reads). Views and constants are never realized
//! this way, nor a norm's row statistic that every GEMM kernel recomputes in its prologue.
//! Runs after `fuse_rows`, so values a row group shares (x in softmax) are seen by one kernel.

use std::collections::{BTreeSet, HashMap};

use cranegrad_graph::{GraphData, NodeId};

use crate::fusion::Fusion;
use crate::patterns::is_gemm_row_statistic;

/// Realizes each computed node that more than one kernel would read.
pub fn realize_shared_values(g: &GraphData, order: &[NodeId], outputs: &[NodeId], f: &mut Fusion) {
    // Owners: the realized nodes whose kernels read a node's value through unrealized paths.
    let mut owners: HashMap<NodeId, BTreeSet<NodeId>> = HashMap::new();
    for &n in order.iter().rev() {
        if g.node(n).op.is_source() {
            continue;
        }
        if f.realized.contains(&n) {
            owners.insert(n, BTreeSet::from([n]));
            continue;
        }
        let mut o = BTreeSet::new();
        for c in g.consumers(n) {
            if f.realized.contains(&c) {
                o.insert(c);
            } else if let Some(co) = owners.get(&c) {
                o.extend(co.iter().copied());
            }
        }
        if o.len() > 1 && !f.is_free(g, n) && !is_gemm_row_statistic(g, n) {
            f.realized.insert(n);
            o = BTreeSet::from([n]);
        }
        owners.insert(n, o);
    }
    let _ = outputs;
}
