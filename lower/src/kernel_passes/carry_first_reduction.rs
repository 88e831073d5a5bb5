//! Kernel pass: in a row kernel with a store-and-rescale, the first reduction of the next row
//! (softmax's max) is computed inside this row's loop of the rescaled sum, when both run four
//! iterations per vector over loops of one extent: the row's loads are then shared by two
//! independent chains, and the max costs no pass of its own.

use crate::kernel::{Expr, Kernel, KernelBody};
use crate::kernel_analysis::{along_ok, phases};

/// Records the carried reduction, if one applies; returns whether it did.
pub fn carry_first_reduction(k: &mut Kernel) -> bool {
    let KernelBody::Loops(plan) = &k.body else {
        return false;
    };
    // A store-and-rescale implies a row kernel; column kernels run their own way.
    let Some(with) = plan.rescale.as_ref().map(|r| r.reduce) else {
        return false;
    };
    if plan.column.is_some() {
        return false;
    }
    let Some(first) = k
        .exprs
        .iter()
        .position(|e| matches!(e, Expr::Reduce { .. }))
    else {
        return false;
    };
    let var_of = |e: usize| match k.exprs[e] {
        Expr::Reduce { var, .. } => Some(var),
        _ => None,
    };
    let (Some(v1), Some(v2)) = (var_of(first), var_of(with)) else {
        return false;
    };
    let ph = phases(k);
    let carried = first != with
        && along_ok(k, &ph, v1)
        && along_ok(k, &ph, v2)
        && k.loops[v1].extent == k.loops[v2].extent;
    let found = carried.then_some((first, with));
    let KernelBody::Loops(plan) = &mut k.body else {
        return false;
    };
    let changed = plan.carry != found;
    plan.carry = found;
    changed
}
