//! Kernel pass: a GEMM over Q8 panels multiplies in integers: each row of A is quantised per
//! block of 32 to 8 bits once per call, and the micro-kernel takes
//! byte dot products (`pmaddubsw`, `pmaddwd`) scaled per block, instead of widening every
//! weight to f32. The outputs move by the activations' rounding (about 1e-2 relative, as
//! llama.cpp's do), so exact runs (`golden`) lower without this pass.

use cranegrad_graph::{CompactFormat, Q8_BLOCK};

use crate::kernel::{Expr, GEMM_MR, INT8_DOT_MAX_STACK, Kernel, KernelBody, int8_row_stride};

/// Marks the kernel's GEMM when it qualifies: block panels, a constant K of whole blocks,
/// A contiguous along k, and a block of rows' quantised copy within [`INT8_DOT_MAX_STACK`]
/// (more rows are quantised a chunk at a time). Returns whether it changed.
pub fn select_integer_dot(kernel: &mut Kernel) -> bool {
    let KernelBody::Gemm(g) = &kernel.body else {
        return false;
    };
    let k = kernel.loops[g.k_loop].extent.as_const();
    let a_contiguous =
        matches!(&kernel.exprs[g.a], Expr::Load { index, .. } if index.coeff(g.k_loop) == 1);
    let qualifies = g.packed
        && !g.int8_dot
        && g.compact.is_some_and(CompactFormat::is_block)
        && k.is_some_and(|k| {
            k.is_multiple_of(Q8_BLOCK)
                && g.compact
                    .is_some_and(|f| GEMM_MR * int8_row_stride(k, f) <= INT8_DOT_MAX_STACK)
        })
        && a_contiguous;
    if let KernelBody::Gemm(g) = &mut kernel.body {
        g.int8_dot |= qualifies;
    }
    qualifies
}
