//! Kernel pass, store-and-rescale (see [`Rescale`]): in a row kernel whose rows are split
//! across threads (several output loops), an output `E * s` whose `E` is the value a row sum
//! accumulates is stored by the sum's loop and rescaled by the output pass, so `E` (an exp) is
//! computed once. A column kernel's vectors span its columns, so its rows may be strided.

use cranegrad_graph::{BinaryOp, ReduceOp};

use crate::kernel::{Expr, Kernel, KernelBody, Rescale};
use crate::kernel_analysis::{rename, row_deps, same_value};

/// Records the row kernel's store-and-rescale, if it has one; returns whether it did.
pub fn store_and_rescale(k: &mut Kernel) -> bool {
    let KernelBody::Loops(plan) = &k.body else {
        return false;
    };
    if !plan.row {
        return false;
    }
    let found = find_rescale(k, &row_deps(k), plan.column.is_some());
    let KernelBody::Loops(plan) = &mut k.body else {
        return false;
    };
    let changed = plan.rescale != found;
    plan.rescale = found;
    changed
}

/// The store-and-rescale of a row kernel, given which expressions depend on the innermost
/// output loop.
fn find_rescale(k: &Kernel, dep_lv: &[bool], column: bool) -> Option<Rescale> {
    let n_out = k.output_loops().len();
    if n_out < 2 || k.stores.len() != 1 {
        return None;
    }
    let lv = n_out - 1;
    let st = &k.stores[0];
    if st.index.coeff(lv) != 1 && !column {
        return None;
    }
    let Expr::Binary {
        op: BinaryOp::Mul,
        a,
        b,
        ..
    } = k.exprs[st.value]
    else {
        return None;
    };
    let (factor, scale) = match (dep_lv[a], dep_lv[b]) {
        (true, false) => (a, b),
        (false, true) => (b, a),
        _ => return None,
    };
    k.exprs.iter().enumerate().find_map(|(e, ex)| match ex {
        Expr::Reduce {
            op: ReduceOp::Sum,
            x,
            var,
            ..
        } if k.loops[*var].extent == k.loops[lv].extent && same_value(k, *x, factor, *var, lv) => {
            Some(Rescale {
                reduce: e,
                factor,
                arg: st.arg,
                index_in_loop: rename(&st.index, lv, *var),
                scale,
            })
        }
        _ => None,
    })
}
