//! Analyses of a kernel's IR that the kernel passes and codegen share: the range an index
//! spans, which part of the loop nest each expression is computed in, which reduce loops vectorise along, whether a
//! loop nest is a row kernel, and the value relations the row passes match (`x - max(x)`,
//! the same value read at two loop variables). They decide nothing: the kernel passes record
//! their decisions in the IR.

use cranegrad_graph::{BinaryOp, ReduceOp};

use crate::affine::Affine;
use crate::kernel::{Expr, ExprId, Kernel, KernelBody, LoopKind};

/// Smallest and largest value of `a` over the kernel's loop ranges and symbol bounds (a loop
/// variable the kernel does not have counts as 0; `codegen::bounds` refuses such indices).
pub fn index_range(k: &Kernel, a: &Affine) -> (i64, i64) {
    let (mut lo, mut hi) = (a.constant, a.constant);
    for &(v, c) in &a.terms {
        let ext = k.loops.get(v).map_or(1, |l| l.extent.max_value() as i64);
        let top = c * (ext - 1).max(0);
        lo += top.min(0);
        hi += top.max(0);
    }
    for (s, c) in &a.syms {
        let sym = k
            .symbols
            .iter()
            .find(|x| &x.name == s)
            .map(|x| (x.min, x.max))
            .unwrap_or((0, 0));
        let (x, y) = (c * sym.0, c * sym.1);
        lo += x.min(y);
        hi += x.max(y);
    }
    (lo, hi)
}

/// Which part of the loop nest an expression is computed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Independent of every reduce loop and reduced value.
    Pre,
    /// Inside reduce loop `j` (depends on its variable).
    Inner(usize),
    /// After the reductions it uses.
    Post,
}

/// The reduce loop whose variable an expression's own addressing uses, if any.
pub fn own_reduce_var(k: &Kernel, e: &Expr) -> Option<usize> {
    (0..k.loops.len()).find(|&r| k.loops[r].kind == LoopKind::Reduce && e.indexes_with(r))
}

/// Per expression: the part of the loop nest it is computed in.
pub fn phases(k: &Kernel) -> Vec<Phase> {
    let mut ph: Vec<Phase> = Vec::with_capacity(k.exprs.len());
    for e in &k.exprs {
        let p = if matches!(e, Expr::Reduce { .. }) {
            Phase::Post
        } else if let Some(j) = own_reduce_var(k, e) {
            Phase::Inner(j)
        } else {
            e.operands()
                .iter()
                .fold(Phase::Pre, |acc, &o| match (acc, ph[o]) {
                    (Phase::Inner(j), _) | (_, Phase::Inner(j)) => Phase::Inner(j),
                    (Phase::Post, _) | (_, Phase::Post) => Phase::Post,
                    _ => Phase::Pre,
                })
        };
        ph.push(p);
    }
    ph
}

/// True when reduce loop `j` can run 4 iterations per vector: every load inside it has stride
/// 0 or 1 along it, and at least one has stride 1.
pub fn along_ok(k: &Kernel, ph: &[Phase], j: usize) -> bool {
    let loads: Vec<&Affine> = k
        .exprs
        .iter()
        .zip(ph)
        .filter(|(_, p)| **p == Phase::Inner(j))
        .filter_map(|(e, _)| match e {
            Expr::Load { index, .. } => Some(index),
            _ => None,
        })
        .collect();
    loads.iter().all(|a| matches!(a.coeff(j), 0 | 1)) && loads.iter().any(|a| a.coeff(j) == 1)
}

/// A row kernel: every reduction is independent of the innermost output loop, so the
/// reductions run once per row and the row's outputs are then computed from them (softmax,
/// norms in one kernel).
/// `row_deps` is [`Kernel::depends_on`] of the innermost output loop.
pub fn is_row_kernel(k: &Kernel, ph: &[Phase], row_deps: &[bool]) -> bool {
    let n_out = k.output_loops().len();
    if n_out == 0 || !ph.iter().any(|p| matches!(p, Phase::Inner(_))) {
        return false;
    }
    // Whatever a reduction reads (transitively) must not depend on the innermost loop.
    let dep = row_deps;
    let reduce_inputs_ok = k.exprs.iter().all(|e| match e {
        Expr::Reduce { x, .. } => !dep[*x],
        _ => true,
    });
    reduce_inputs_ok && dep.iter().any(|&d| d)
}

/// Which expressions depend on the innermost output loop (none without output loops).
pub fn row_deps(k: &Kernel) -> Vec<bool> {
    match k.output_loops().len().checked_sub(1) {
        Some(lv) => k.depends_on(lv),
        None => vec![false; k.exprs.len()],
    }
}

/// The lane loop of a column kernel: the parallel loop just outside the innermost output
/// loop, when the stores walk it contiguously and the innermost loop strided.
pub fn column_lane(k: &Kernel) -> Option<usize> {
    let n_out = k.output_loops().len();
    if n_out < 2 || !matches!(k.body, KernelBody::Loops(_)) {
        return None;
    }
    let (j, rows) = (n_out - 2, n_out - 1);
    k.stores
        .iter()
        .all(|s| s.index.coeff(j) == 1 && s.index.coeff(rows) != 1)
        .then_some(j)
}

/// `a` with loop variable `from` renamed to `to`.
pub fn rename(a: &Affine, from: usize, to: usize) -> Affine {
    let c = a.coeff(from);
    a.without(from).add(&Affine::var(to).scale(c))
}

/// True when expression `x` (in terms of reduce variable `j`) computes the same value as `y`
/// (in terms of output variable `lv`) at the same position.
pub fn same_value(k: &Kernel, x: ExprId, y: ExprId, j: usize, lv: usize) -> bool {
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
pub fn minus_own_max(k: &Kernel, x: ExprId, neg: ExprId) -> bool {
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
pub fn times_positive(k: &Kernel, e: ExprId) -> Option<(ExprId, f64)> {
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
pub fn own_max(k: &Kernel, x: ExprId, m: ExprId) -> bool {
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
