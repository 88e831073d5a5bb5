//! Kernel pass: the output loops outside the thread split (see [`Kernel::parallel_dims`])
//! become sequential, so the loop nest says which loops the threads divide: every loop but
//! the innermost output loop of a plain loop nest or attention kernel (a GEMM's units are its
//! own, and a one-loop kernel splits its only loop).

use crate::kernel::{Kernel, LoopKind};

/// Marks the innermost output loop of a multi-loop non-GEMM kernel sequential; returns whether
/// it changed.
pub fn mark_sequential_loops(k: &mut Kernel) -> bool {
    let n_out = k.output_loops().len();
    if n_out >= 2 && k.gemm().is_none() && k.parts().is_empty() {
        let changed = k.loops[n_out - 1].kind != LoopKind::Sequential;
        k.loops[n_out - 1].kind = LoopKind::Sequential;
        return changed;
    }
    false
}
