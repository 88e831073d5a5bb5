//! Fusion step: operands that cannot be computed inline where they are read.
//!
//! - A matmul operand that is more than a view (movement ops over a buffer or a constant) is
//!   realized: inlining it would recompute it for every output column. A weight scaled along
//!   K by a weight vector stays inline: packing folds the vector into the panels.
//! - A reshape that merges axes of anything but a contiguous buffer is not affine; the node
//!   under the reshape chain is realized (a copy kernel) so the reshape becomes a free view.
//! - A gather's table is realized unless it is a buffer (rows are addressed directly); its
//!   indices are realized unless they are a view.

use cranegrad_graph::{GraphData, NodeId, Op};

use crate::fusion::Fusion;
use crate::patterns::{is_scaled_weight, reshape_base, reshape_is_affine};

/// Realizes the matmul, reshape and gather operands described in the module doc.
pub fn realize_operands(g: &GraphData, order: &[NodeId], outputs: &[NodeId], f: &mut Fusion) {
    for &n in order {
        match g.node(n).op {
            Op::Gather => {
                let ins = g.inputs(n);
                if !f.is_buffer(g, ins[0]) {
                    f.realized.insert(ins[0]);
                }
                if !f.is_free(g, ins[1]) {
                    f.realized.insert(ins[1]);
                }
            }
            Op::MatMul => {
                for i in g.inputs(n) {
                    if !(f.is_free(g, i) || is_scaled_weight(g, i)) {
                        f.realized.insert(i);
                    }
                }
            }
            Op::Reshape => {
                let child = g.inputs(n)[0];
                if !reshape_is_affine(&g.node(child).shape, &g.node(n).shape) {
                    let base = reshape_base(g, f, n);
                    let base_op = &g.node(base).op;
                    if !f.is_buffer(g, base) && !matches!(base_op, Op::Const { .. }) {
                        f.realized.insert(base);
                    }
                }
            }
            _ => {}
        }
    }
    let _ = outputs;
}
