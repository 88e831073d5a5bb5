//! Loop reordering on a built kernel: a row group's kernel (see `fuse_rows`) whose
//! reductions run over a strided axis (a column softmax, a norm over axis 0) gets that axis
//! as its innermost output loop (`fuse_rows` only groups reductions of rows of the group's
//! own shape, each exit over one axis). Its reductions then no longer depend on the innermost loop,
//! which is what makes codegen run them once per row (per column here) before the row's
//! outputs, as for a last-axis softmax.

use crate::kernel::Kernel;

/// Moves output loop `axis` of `k` to be the innermost output loop; the loops inside it move
/// out by one. Returns whether it moved.
pub fn reduced_axis_innermost(k: &mut Kernel, axis: usize) -> bool {
    let n_out = k.output_loops().len();
    if axis + 1 >= n_out {
        return false;
    }
    let moved = k.loops.remove(axis);
    k.loops.insert(n_out - 1, moved);
    let rename = |w: usize| match w {
        w if w == axis => n_out - 1,
        w if w > axis && w < n_out => w - 1,
        w => w,
    };
    k.for_each_affine(|a| *a = a.rename(|w| Some(rename(w))));
    true
}
