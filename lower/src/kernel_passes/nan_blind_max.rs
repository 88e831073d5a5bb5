//! Kernel pass: the max reduction of a softmax-shaped store-and-rescale whose NaN propagation
//! no output needs, so its reduce loop may use one plain `maxps` per vector. That holds when
//! the max `m` is read only by `exp2` arguments `(x - m) * c` of `E` and of the summed value,
//! the output is `E / sum(E)`, and every op between is NaN-preserving: a NaN among a row's
//! `x` is then a NaN `E` at its position, a NaN sum and a NaN at every output, whatever `m`
//! is.

use cranegrad_graph::{BinaryOp, ReduceOp};

use crate::kernel::{Expr, ExprId, Kernel, KernelBody, Rescale};
use crate::kernel_analysis::{minus_own_max, times_positive};

/// Records the row kernel's NaN-blind max, if it has one; returns whether it did.
pub fn nan_blind_max(k: &mut Kernel) -> bool {
    let KernelBody::Loops(plan) = &k.body else {
        return false;
    };
    let Some(found) = plan.rescale.as_ref().and_then(|r| find_nan_blind_max(k, r)) else {
        return false;
    };
    let KernelBody::Loops(plan) = &mut k.body else {
        return false;
    };
    let changed = plan.nan_blind_max != Some(found);
    plan.nan_blind_max = Some(found);
    changed
}

/// The NaN-blind max of a store-and-rescale (see the module doc).
fn find_nan_blind_max(k: &Kernel, r: &Rescale) -> Option<ExprId> {
    let out = k.stores[0].value;
    let Expr::Reduce { x: summed, .. } = k.exprs[r.reduce] else {
        return None;
    };
    let is_recip_of_sum = matches!(
        k.exprs[r.scale],
        Expr::Unary { op: cranegrad_graph::UnaryOp::Recip, x, .. } if x == r.reduce
    );
    if !is_recip_of_sum {
        return None;
    }
    // Each exp2's path back to its max: the exp2, its positive scalings, the add, the neg.
    let mut path: Vec<ExprId> = Vec::new();
    let mut maxes: Vec<ExprId> = Vec::new();
    for e in [r.factor, summed] {
        let Expr::Unary {
            op: cranegrad_graph::UnaryOp::Exp2,
            x: mut arg,
            ..
        } = k.exprs[e]
        else {
            return None;
        };
        path.push(e);
        while let Some((a, _)) = times_positive(k, arg) {
            path.push(arg);
            arg = a;
        }
        let Expr::Binary {
            op: BinaryOp::Add,
            a,
            b,
            ..
        } = k.exprs[arg]
        else {
            return None;
        };
        let neg = if minus_own_max(k, a, b) {
            b
        } else if minus_own_max(k, b, a) {
            a
        } else {
            return None;
        };
        let Expr::Unary { x: mut m, .. } = k.exprs[neg] else {
            return None;
        };
        path.extend([arg, neg]);
        // A hoisted scale: `max(x0) * c` (see `own_max`).
        if let Some((inner, _)) = times_positive(k, m) {
            path.push(m);
            m = inner;
        }
        if !matches!(
            k.exprs[m],
            Expr::Reduce {
                op: ReduceOp::Max,
                ..
            }
        ) {
            return None;
        }
        maxes.push(m);
    }
    if maxes[0] != maxes[1] {
        return None;
    }
    // Nothing outside the paths reads the max or a value on them (but the sum and the output).
    let allowed = |user: ExprId| path.contains(&user) || user == r.reduce || user == out;
    let watched = |o: ExprId| o == maxes[0] || path.contains(&o);
    let escapes = k
        .exprs
        .iter()
        .enumerate()
        .any(|(u, e)| e.operands().into_iter().any(watched) && !allowed(u));
    (!escapes).then_some(maxes[0])
}
