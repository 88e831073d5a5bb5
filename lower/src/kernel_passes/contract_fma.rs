//! Kernel pass: `p * q + c` becomes one FMA ([`Expr::MulAdd`]) when the product has no other
//! reader: one FP operation fewer (the row kernels run bound by those), and the product is not
//! rounded before the add. An addend derived from a reduction is left alone: in
//! `x * s - max(x * s)` the max is of the rounded products, so the exact product minus it is
//! the rounding error at the row's largest element, not 0; past |x * s| of 2^30 that error
//! alone takes exp's argument below -88 and every weight of the row to 0.

use cranegrad_graph::{BinaryOp, DType};

use crate::kernel::{Expr, ExprId, Kernel};

/// Contracts every eligible add; returns whether any changed.
pub fn contract_fma(k: &mut Kernel) -> bool {
    let single_use = single_uses(k);
    let from_reduce = from_reductions(k);
    let product = |k: &Kernel, m: ExprId| {
        matches!(
            k.exprs[m],
            Expr::Binary {
                op: BinaryOp::Mul,
                dtype: DType::F32,
                ..
            }
        ) && single_use[m]
    };
    let mut changed = false;
    for e in 0..k.exprs.len() {
        let Expr::Binary {
            op: BinaryOp::Add,
            a,
            b,
            dtype: DType::F32,
        } = k.exprs[e]
        else {
            continue;
        };
        // The first operand's product is preferred when both are.
        let (m, addend) = if product(k, a) {
            (a, b)
        } else if product(k, b) {
            (b, a)
        } else {
            continue;
        };
        if from_reduce[addend] {
            continue;
        }
        k.exprs[e] = Expr::MulAdd {
            product: m,
            addend,
            product_first: m == a,
            dtype: DType::F32,
        };
        changed = true;
    }
    changed
}

/// Per expression: whether it is a reduction or reads one, directly or not.
fn from_reductions(k: &Kernel) -> Vec<bool> {
    let mut from = vec![false; k.exprs.len()];
    for (i, e) in k.exprs.iter().enumerate() {
        from[i] = matches!(e, Expr::Reduce { .. }) || e.operands().iter().any(|&o| from[o]);
    }
    from
}

/// Per expression: whether exactly one expression and no store reads it.
fn single_uses(k: &Kernel) -> Vec<bool> {
    let mut uses = vec![0usize; k.exprs.len()];
    for e in &k.exprs {
        for o in e.operands() {
            uses[o] += 1;
        }
    }
    for st in &k.stores {
        uses[st.value] += 2;
    }
    uses.iter().map(|&u| u == 1).collect()
}
