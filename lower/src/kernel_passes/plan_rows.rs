//! Kernel pass: a loop nest whose reductions never read its innermost output loop is a row
//! kernel (softmax, norms in one kernel): codegen runs the reductions once per row, then the
//! row's outputs. A row kernel whose stores walk the loop just outside the rows contiguously
//! (its rows strided, after `reduced_axis_innermost`) is a column kernel: codegen's vectors
//! span four neighbouring columns.

use crate::kernel::{Kernel, KernelBody};
use crate::kernel_analysis::{column_lane, is_row_kernel, phases, row_deps};

/// Records whether a loop nest is a row or column kernel; returns whether that changed.
pub fn plan_rows(k: &mut Kernel) -> bool {
    let row = matches!(k.body, KernelBody::Loops(_)) && is_row_kernel(k, &phases(k), &row_deps(k));
    let column = column_lane(k).filter(|_| row);
    let KernelBody::Loops(plan) = &mut k.body else {
        return false;
    };
    let changed = plan.row != row || plan.column != column;
    plan.row = row;
    plan.column = column;
    changed
}
