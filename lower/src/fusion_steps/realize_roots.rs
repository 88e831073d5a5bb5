//! Fusion step: the outputs, reductions, matmuls and cache writes are realized, each the root
//! of a kernel. A reduction's elementwise producers are computed inside its loop, so
//! `sum(x*x)` reads `x` once; every node not realized later is computed inline, inside the
//! kernel of the realized node that consumes it.

use cranegrad_graph::{GraphData, NodeId, Op};

use crate::fusion::Fusion;

/// Realizes the outputs and every reduction, matmul and write_slice.
pub fn realize_roots(g: &GraphData, order: &[NodeId], outputs: &[NodeId], f: &mut Fusion) {
    f.realized.extend(outputs.iter().copied());
    for &n in order {
        if matches!(
            g.node(n).op,
            Op::Reduce { .. } | Op::MatMul | Op::WriteSlice { .. }
        ) {
            f.realized.insert(n);
        }
    }
}
