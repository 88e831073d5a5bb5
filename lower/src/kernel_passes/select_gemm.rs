//! Kernel pass: a loop nest whose reduction is `sum(A[.., m, k] * B[k, n])`, with B
//! independent of the output rows, becomes a GEMM template ([`KernelBody::Gemm`]), its B read
//! from panels the runtime packs once when B is a weight. A transposed or gain-scaled B (or a
//! second weight sharing A) only runs as a GEMM once packed; otherwise it stays a loop nest.

use cranegrad_graph::{BinaryOp, CompactFormat, DType, Q8_BLOCK, ReduceOp};

use crate::affine::Affine;
use crate::kernel::{
    Expr, ExprId, GEMM_MAX_STAT_ROWS, GemmPair, GemmSpec, Kernel, KernelBody, LoopKind, panel_words,
};

/// Makes `kernel` a GEMM when it matches the pattern; `is_weight(slot)` says whether an
/// argument slot is bound to a weight the runtime can pack, `compact_of(slot)` the compact
/// format that weight is exact in (packed in it). Returns whether it changed.
pub fn select_gemm(
    kernel: &mut Kernel,
    is_weight: impl Fn(usize) -> bool,
    compact_of: impl Fn(usize) -> Option<CompactFormat>,
) -> bool {
    let Some(mut gm) = match_gemm(kernel) else {
        return false;
    };
    let is_weight = |slot: Option<usize>| slot.is_some_and(&is_weight);
    // The runtime swaps the whole argument slot for the packed copy: nothing else in the
    // kernel may read that slot (A = B in `E @ Eᵀ`, say).
    let only_b = |slot: usize| {
        kernel.exprs.iter().enumerate().all(|(i, e)| {
            i == gm.b
                || !matches!(e, Expr::Load { arg, .. } | Expr::Gather { arg, .. } if *arg == slot)
        })
    };
    let slot = kernel.load_arg(gm.b);
    gm.packed = b_is_packable(kernel, &gm)
        && slot.is_some_and(only_b)
        && is_weight(slot)
        && gm.b_scale.is_none_or(|e| is_weight(kernel.load_arg(e)))
        && gm.pair.is_none_or(|p| {
            is_weight(kernel.load_arg(p.b))
                && p.b_scale.is_none_or(|e| is_weight(kernel.load_arg(e)))
        });
    let plain = !gm.b_transposed && gm.b_scale.is_none() && gm.pair.is_none();
    if !(gm.packed || plain) {
        return false;
    }
    // A folded gain makes the panel values products, no longer exact in the compact format;
    // a pair's weights share one panel, so one format. Q8 blocks run along memory rows, which
    // are the panels' k only for a transposed (`[N, K]`) weight whose rows they divide.
    let format = slot.and_then(&compact_of);
    let k = kernel.loops[gm.k_loop].extent.max_value();
    let blocks_along_k = |transposed: bool| transposed && k.is_multiple_of(Q8_BLOCK);
    let pair_ok = gm.pair.is_none_or(|p| {
        p.b_scale.is_none()
            && kernel.load_arg(p.b).and_then(&compact_of) == format
            && (!format.is_some_and(CompactFormat::is_block) || blocks_along_k(p.b_transposed))
    });
    let layout_ok = !format.is_some_and(CompactFormat::is_block) || blocks_along_k(gm.b_transposed);
    gm.compact = format.filter(|_| gm.packed && gm.b_scale.is_none() && pair_ok && layout_ok);
    if gm.packed
        && let Some(slot) = slot
    {
        // Elements as if f32 (compact panels take fewer words).
        kernel.args[slot].len = gm.cols.div_ceil(Kernel::panel_cols(&gm)) * panel_words(k);
    }
    kernel.body = KernelBody::Gemm(gm);
    true
}

/// One contraction of a kernel, as matched by `matmul_parts`.
#[derive(Clone, Copy, Debug)]
struct MatmulParts {
    reduce: ExprId,
    product: ExprId,
    a: ExprId,
    b: ExprId,
    b_transposed: bool,
    b_scale: Option<ExprId>,
    scale_mul: Option<ExprId>,
    k_loop: usize,
}

/// True when B of the GEMM is a whole matrix the runtime can pack: row-major `[K, N]`
/// (index `k*N + n`) or transposed `[N, K]` (index `n*K + k`).
fn b_is_packable(kernel: &Kernel, g: &GemmSpec) -> bool {
    let packable = |b: ExprId, transposed: bool, k_loop: usize| {
        transposed
            || match &kernel.exprs[b] {
                Expr::Load { index, .. } => {
                    index.constant == 0
                        && index.syms.is_empty()
                        && index.terms.len() == 2
                        && index.coeff(g.n_loop) == 1
                        && index.coeff(k_loop) == g.cols as i64
                }
                _ => false,
            }
    };
    packable(g.b, g.b_transposed, g.k_loop)
        && g.pair
            .is_none_or(|p| packable(p.b, p.b_transposed, p.k_loop))
}

/// The GEMM pattern of this kernel, if it has one (static extents only): one contraction,
/// or two sharing A (a paired GEMM); B may be transposed or scaled; one more reduction may
/// run over A's rows alone.
pub fn match_gemm(kernel: &Kernel) -> Option<GemmSpec> {
    if !matches!(kernel.body, KernelBody::Loops(_)) {
        return None;
    }
    let outs = kernel.output_loops();
    if outs.is_empty() || kernel.loops.iter().any(|l| l.extent.as_const().is_none()) {
        return None;
    }
    let n_loop = outs.len() - 1;
    let reduces: Vec<usize> = (0..kernel.exprs.len())
        .filter(|&i| matches!(kernel.exprs[i], Expr::Reduce { .. }))
        .collect();
    let reduce_loops = kernel
        .loops
        .iter()
        .filter(|l| l.kind == LoopKind::Reduce)
        .count();
    if reduce_loops != reduces.len() || reduces.len() > 3 {
        return None;
    }
    let mms: Vec<MatmulParts> = reduces
        .iter()
        .filter_map(|&r| matmul_parts(kernel, r, n_loop))
        .collect();
    let (main, pair) = match mms.as_slice() {
        [m] => (*m, None),
        [m, p] if same_a(kernel, m, p) => (*m, Some(*p)),
        _ => return None,
    };
    let others: Vec<usize> = reduces
        .iter()
        .copied()
        .filter(|&r| r != main.reduce && Some(r) != pair.map(|p| p.reduce))
        .collect();
    let row_reduce = match others.as_slice() {
        [] => None,
        [r] => Some(*r),
        _ => return None,
    };
    // Nothing but the contractions' loads may depend on their k loops, and only their
    // products may use those loads.
    for m in std::iter::once(&main).chain(pair.as_ref()) {
        let loads = [Some(m.a), Some(m.b), m.b_scale];
        for (i, e) in kernel.exprs.iter().enumerate() {
            if !loads.contains(&Some(i)) && e.indexes_with(m.k_loop) {
                return None;
            }
            let uses = |x: ExprId| e.operands().contains(&x);
            let inner = Some(i) == m.scale_mul;
            if i != m.product && !inner && (uses(m.a) || uses(m.b) || m.scale_mul.is_some_and(uses))
            {
                return None;
            }
            if inner && uses(m.a) {
                return None;
            }
        }
    }
    if kernel.stores.iter().any(|s| s.index.coeff(n_loop) != 1) {
        return None;
    }
    let rows: usize = outs[..n_loop]
        .iter()
        .map(|l| l.extent.as_const().unwrap_or(0))
        .product();
    // The row reduction: over its own loop, reading neither the columns nor any k.
    if let Some(r) = row_reduce {
        let Expr::Reduce {
            x,
            dtype: DType::F32,
            ..
        } = kernel.exprs[r]
        else {
            return None;
        };
        let ks = std::iter::once(main.k_loop).chain(pair.map(|p| p.k_loop));
        if rows > GEMM_MAX_STAT_ROWS
            || kernel.depends_on(n_loop)[x]
            || ks.into_iter().any(|k| kernel.depends_on(k)[x])
        {
            return None;
        }
    }
    Some(GemmSpec {
        n_loop,
        k_loop: main.k_loop,
        a: main.a,
        b: main.b,
        product: main.product,
        reduce: main.reduce,
        rows,
        cols: outs[n_loop].extent.as_const().unwrap_or(0),
        b_transposed: main.b_transposed,
        b_scale: main.b_scale,
        row_reduce,
        packed: false,
        compact: None,
        int8_dot: false,
        pair: pair.map(|p| GemmPair {
            b: p.b,
            reduce: p.reduce,
            k_loop: p.k_loop,
            b_transposed: p.b_transposed,
            b_scale: p.b_scale,
        }),
    })
}

/// True when two contractions read the same A elements (equal indices up to their own
/// k loops) over equally long k loops.
fn same_a(kernel: &Kernel, m: &MatmulParts, p: &MatmulParts) -> bool {
    let (
        Expr::Load {
            arg: a1, index: i1, ..
        },
        Expr::Load {
            arg: a2, index: i2, ..
        },
    ) = (&kernel.exprs[m.a], &kernel.exprs[p.a])
    else {
        return false;
    };
    let strip = |i: &Affine, k: usize| -> Vec<(usize, i64)> {
        i.terms.iter().copied().filter(|&(v, _)| v != k).collect()
    };
    a1 == a2
        && kernel.loops[m.k_loop].extent == kernel.loops[p.k_loop].extent
        && i1.coeff(m.k_loop) == i2.coeff(p.k_loop)
        && i1.constant == i2.constant
        && i1.syms == i2.syms
        && strip(i1, m.k_loop) == strip(i2, p.k_loop)
}

/// The B side of a product: a load of B, or `B * s[k]` (the load of B, the scale load,
/// the multiply).
fn b_side(
    kernel: &Kernel,
    e: ExprId,
    k_loop: usize,
) -> Option<(ExprId, Option<ExprId>, Option<ExprId>)> {
    let is_load = |e: usize| matches!(kernel.exprs[e], Expr::Load { .. });
    let is_k_vector = |e: usize| match &kernel.exprs[e] {
        Expr::Load {
            index,
            conds,
            dtype: DType::F32,
            ..
        } => {
            conds.is_empty()
                && index.constant == 0
                && index.syms.is_empty()
                && index.terms.as_slice() == [(k_loop, 1)]
        }
        _ => false,
    };
    match kernel.exprs[e] {
        Expr::Load { .. } => Some((e, None, None)),
        Expr::Binary {
            op: BinaryOp::Mul,
            a,
            b,
            ..
        } => {
            if is_load(a) && is_k_vector(b) {
                Some((a, Some(b), Some(e)))
            } else if is_load(b) && is_k_vector(a) {
                Some((b, Some(a), Some(e)))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The contraction `reduce = sum(A * B)`, if it is one (A independent of the columns, B of
/// the rows).
fn matmul_parts(kernel: &Kernel, reduce: ExprId, n_loop: usize) -> Option<MatmulParts> {
    let Expr::Reduce {
        op: ReduceOp::Sum,
        x: product,
        dtype: DType::F32,
        var: k_loop,
    } = kernel.exprs[reduce]
    else {
        return None;
    };
    let Expr::Binary {
        op: BinaryOp::Mul,
        a: p,
        b: q,
        ..
    } = kernel.exprs[product]
    else {
        return None;
    };
    let load = |e: usize| match &kernel.exprs[e] {
        Expr::Load {
            index,
            conds,
            dtype: DType::F32,
            ..
        } if conds.is_empty() => Some(index.clone()),
        _ => None,
    };
    let rows_vars = 0..n_loop;
    let k_extent = kernel.loops[k_loop].extent.as_const().unwrap_or(0) as i64;
    // B is either read along n with unit stride, or is an exact transposed `[N, K]`.
    let b_shape = |bi: &Affine| -> Option<bool> {
        if !rows_vars.clone().all(|v| bi.coeff(v) == 0) {
            return None;
        }
        if bi.coeff(n_loop) == 1 {
            return Some(false);
        }
        let exact = bi.constant == 0
            && bi.syms.is_empty()
            && bi.terms.len() == 2
            && bi.coeff(k_loop) == 1
            && bi.coeff(n_loop) == k_extent;
        exact.then_some(true)
    };
    // The product may be written A * B or B * A.
    let try_order = |ae: ExprId, be: ExprId| {
        let ai = load(ae)?;
        let (b, b_scale, scale_mul) = b_side(kernel, be, k_loop)?;
        let b_transposed = b_shape(&load(b)?)?;
        (ai.coeff(n_loop) == 0).then_some(MatmulParts {
            reduce,
            product,
            a: ae,
            b,
            b_transposed,
            b_scale,
            scale_mul,
            k_loop,
        })
    };
    try_order(p, q).or_else(|| try_order(q, p))
}
