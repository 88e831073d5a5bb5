//! Store-and-rescale for row kernels: when a row's output is `E * s` with `s` constant along
//! the row and `E` exactly the value a row sum accumulates (softmax: `exp(x - max) * 1/sum`),
//! the sum's loop also stores `E` into the output, and the output pass computes
//! `load(out) * s` instead of evaluating `E` (an `exp`) a second time.

use cranegrad_graph::{BinaryOp, ReduceOp};
use cranegrad_lower::affine::Affine;
use cranegrad_lower::kernel::{Expr, ExprId, Kernel};

/// A detected store-and-rescale.
#[derive(Clone, Debug)]
pub struct Rescale {
    /// The Reduce (sum) whose loop also stores.
    pub reduce: ExprId,
    /// The row factor `E` in the stored product.
    pub factor: ExprId,
    /// The output argument slot.
    pub arg: usize,
    /// Output index in terms of the reduce variable (for the stores in the sum's loop).
    pub index_in_loop: Affine,
    /// The row factor `s` the output multiplies `E` by.
    pub scale: ExprId,
}

/// `a` with loop variable `from` renamed to `to`.
fn rename(a: &Affine, from: usize, to: usize) -> Affine {
    let c = a.coeff(from);
    a.without(from).add(&Affine::var(to).scale(c))
}

/// True when expression `x` (in terms of reduce variable `j`) computes the same value as `y`
/// (in terms of output variable `lv`) at the same position.
fn same_value(k: &Kernel, x: ExprId, y: ExprId, j: usize, lv: usize) -> bool {
    if x == y {
        return true;
    }
    match (&k.exprs[x], &k.exprs[y]) {
        (
            Expr::Load {
                arg: a1,
                index: i1,
                conds: c1,
                dtype: d1,
            },
            Expr::Load {
                arg: a2,
                index: i2,
                conds: c2,
                dtype: d2,
            },
        ) => a1 == a2 && d1 == d2 && c1.is_empty() && c2.is_empty() && rename(i1, j, lv) == *i2,
        (Expr::Const { .. }, Expr::Const { .. }) => k.exprs[x] == k.exprs[y],
        (
            Expr::Unary {
                op: o1,
                x: x1,
                dtype: d1,
            },
            Expr::Unary {
                op: o2,
                x: x2,
                dtype: d2,
            },
        ) => o1 == o2 && d1 == d2 && same_value(k, *x1, *x2, j, lv),
        (
            Expr::Binary {
                op: o1,
                a: a1,
                b: b1,
                dtype: d1,
            },
            Expr::Binary {
                op: o2,
                a: a2,
                b: b2,
                dtype: d2,
            },
        ) => {
            o1 == o2 && d1 == d2 && same_value(k, *a1, *a2, j, lv) && same_value(k, *b1, *b2, j, lv)
        }
        (
            Expr::Where {
                c: c1,
                a: a1,
                b: b1,
                dtype: d1,
            },
            Expr::Where {
                c: c2,
                a: a2,
                b: b2,
                dtype: d2,
            },
        ) => {
            d1 == d2
                && same_value(k, *c1, *c2, j, lv)
                && same_value(k, *a1, *a2, j, lv)
                && same_value(k, *b1, *b2, j, lv)
        }
        (Expr::Index(i1), Expr::Index(i2)) => rename(i1, j, lv) == *i2,
        _ => false,
    }
}

/// True when `e` is `x - max(x)` (as `x + neg(max)`, the max over a reduce loop of the same
/// value), scaled by positive constants: never positive (the emitter does not contract
/// `x * s - max` into an FMA, see `Emitter::contracted`), so its `exp2` (a softmax weight)
/// can skip the upper range (see `math::exp2_nonpositive` and `math::exp2_scaled_nonpositive`).
pub fn is_nonpositive(k: &Kernel, e: ExprId) -> bool {
    if let Some((a, _)) = times_positive(k, e) {
        return is_nonpositive(k, a);
    }
    match k.exprs[e] {
        Expr::Binary {
            op: BinaryOp::Add,
            a,
            b,
            ..
        } => minus_own_max(k, a, b) || minus_own_max(k, b, a),
        _ => false,
    }
}

/// True when `neg` is `-max(y)` with `y`, over the max's reduce loop, the value of `x`.
fn minus_own_max(k: &Kernel, x: ExprId, neg: ExprId) -> bool {
    let Expr::Unary {
        op: cranegrad_graph::UnaryOp::Neg,
        x: m,
        ..
    } = k.exprs[neg]
    else {
        return false;
    };
    own_max(k, x, m)
}

/// `e` as `(a, c)` when it is `a * c` with `c` a positive constant (either order).
pub(crate) fn times_positive(k: &Kernel, e: ExprId) -> Option<(ExprId, f64)> {
    let Expr::Binary {
        op: BinaryOp::Mul,
        a,
        b,
        ..
    } = k.exprs[e]
    else {
        return None;
    };
    let positive = |c: ExprId| k.exprs[c].const_value().filter(|&v| v > 0.0);
    match (positive(a), positive(b)) {
        (None, Some(c)) => Some((a, c)),
        (Some(c), None) => Some((b, c)),
        _ => None,
    }
}

/// True when `m` is the max of every value `x` takes: `max(y)` with `y` the value of `x`
/// over the max's loop, or `max(y) * c` with `x = x0 * c` (`hoist_scale_out_of_max`).
fn own_max(k: &Kernel, x: ExprId, m: ExprId) -> bool {
    if let (Some((mm, c)), Some((x0, cx))) = (times_positive(k, m), times_positive(k, x)) {
        return c == cx && own_max(k, x0, mm);
    }
    let Expr::Reduce {
        op: ReduceOp::Max,
        x: y,
        var: j,
        ..
    } = k.exprs[m]
    else {
        return false;
    };
    // x is read at an output index or another reduce loop's index of the same extent (the
    // max must cover every value x takes): try each variable.
    (0..k.loops.len())
        .any(|v| v != j && k.loops[v].extent == k.loops[j].extent && same_value(k, y, x, j, v))
}

/// Finds a store-and-rescale in a row kernel whose rows are split across threads (several
/// output loops), given which expressions depend on the innermost output loop. A `column`
/// kernel's vectors span its columns, so its rows may be strided.
pub fn find_rescale(k: &Kernel, dep_lv: &[bool], column: bool) -> Option<Rescale> {
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

/// The max reduction of a softmax-shaped store-and-rescale whose NaN propagation no output
/// needs, so the reduce loop may use one plain `maxps` per vector. That holds when the max
/// `m` is read only by `exp2` arguments `(x - m) * c` of `E` and of the summed value, the
/// output is `E / sum(E)`, and every op between is NaN-preserving: a NaN among a row's `x`
/// is then a NaN `E` at its position, a NaN sum and a NaN at every output, whatever `m` is.
pub fn nan_blind_max(k: &Kernel, r: &Rescale) -> Option<ExprId> {
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
