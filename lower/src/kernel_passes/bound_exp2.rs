//! Kernel pass: an `exp2` whose argument is never positive (a softmax weight `x - max(x)`,
//! scaled by positive constants) becomes [`Expr::Exp2NonPositive`], which skips the upper
//! range; when the argument is `y * k` (a constant `k` the scaled form takes, with
//! power-of-two factors inside joined to it exactly), the product is left to the exp2.

use cranegrad_graph::{DType, UnaryOp};

use crate::kernel::{Expr, ExprId, Kernel, scaled_exp2_takes};
use crate::kernel_analysis::{is_nonpositive, times_positive};
use crate::patterns::is_power_of_two;

/// Rewrites every non-positive `exp2`; returns whether any changed.
pub fn bound_exp2(k: &mut Kernel) -> bool {
    let mut changed = false;
    for e in 0..k.exprs.len() {
        let Expr::Unary {
            op: UnaryOp::Exp2,
            x,
            dtype: DType::F32,
        } = k.exprs[e]
        else {
            continue;
        };
        if !is_nonpositive(k, x) {
            continue;
        }
        let scaled = scaled_by_positive(k, x).map(|(y, f)| (y, f.to_bits()));
        k.exprs[e] = Expr::Exp2NonPositive { x, scaled };
        changed = true;
    }
    changed
}

/// `e` as `(y, k)` when it is `y * k` with `k` a positive constant (as f32) whose `y` is
/// computed (not the constant side of a product of two constants).
fn scaled_by_positive(kernel: &Kernel, e: ExprId) -> Option<(ExprId, f32)> {
    let (mut y, k) = times_positive(kernel, e)?;
    let mut k = k as f32;
    if !scaled_exp2_takes(k) {
        return None;
    }
    // A power-of-two factor inside (a softmax scale, see `hoist_scale_out_of_max`) joins `k`
    // exactly.
    while let Some((inner, c)) = times_positive(kernel, y)
        && is_power_of_two(c as f32)
        && scaled_exp2_takes(c as f32 * k)
    {
        (y, k) = (inner, c as f32 * k);
    }
    Some((y, k))
}
