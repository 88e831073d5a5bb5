//! What a kernel is called: its name (template family and loop extents, like tinygrad's
//! `r_8_96_16_4`) and the fusion-pattern label `--dump-graph` prints. Both are read off the
//! kernel's body enum and IR, never off the graph op names it lists.

use cranegrad_graph::{BinaryOp, Op, ReduceOp, UnaryOp};

use crate::kernel::{Expr, ExprId, Kernel, KernelBody, LoopKind};

/// What the IR of a loop-nest kernel contains, for naming and labelling.
struct Contents {
    /// Reductions over a reduce loop, with their op.
    reduces: Vec<ReduceOp>,
    /// Reductions of the product of two loads that both run along the reduce loop.
    contractions: usize,
    /// A contraction's operand loads.
    operands: Vec<ExprId>,
    /// Elementwise operations other than a contraction's product.
    elementwise: usize,
    /// Row lookups by a computed id.
    gathers: usize,
    /// The graph name of the last elementwise operation (for a kernel of one).
    last_op: Option<&'static str>,
    /// Some expression is an exp2 / a sqrt / a reciprocal.
    exp2: bool,
    sqrt: bool,
    recip: bool,
}

fn contents(k: &Kernel) -> Contents {
    let mut c = Contents {
        reduces: Vec::new(),
        contractions: 0,
        operands: Vec::new(),
        elementwise: 0,
        gathers: 0,
        last_op: None,
        exp2: false,
        sqrt: false,
        recip: false,
    };
    let mut products: Vec<ExprId> = Vec::new();
    for e in &k.exprs {
        if let Expr::Reduce { op, x, var, .. } = e {
            c.reduces.push(*op);
            if *op == ReduceOp::Sum && is_contraction(k, *x, *var) {
                c.contractions += 1;
                products.push(*x);
                c.operands.extend(k.exprs[*x].operands());
            }
        }
    }
    for (i, e) in k.exprs.iter().enumerate() {
        match e {
            Expr::Unary { op, .. } => {
                c.exp2 |= *op == UnaryOp::Exp2;
                c.sqrt |= *op == UnaryOp::Sqrt;
                c.recip |= *op == UnaryOp::Recip;
                c.elementwise += 1;
                c.last_op = Some(Op::Unary(*op).name());
            }
            Expr::Binary { op, .. } if !products.contains(&i) => {
                c.elementwise += 1;
                c.last_op = Some(Op::Binary(*op).name());
            }
            Expr::Exp2NonPositive { .. } => {
                c.exp2 = true;
                c.elementwise += 1;
                c.last_op = Some(Op::Unary(UnaryOp::Exp2).name());
            }
            // The add of a contracted multiply (the multiply counts on its own).
            Expr::MulAdd { .. } => {
                c.elementwise += 1;
                c.last_op = Some(Op::Binary(BinaryOp::Add).name());
            }
            Expr::Where { .. } => {
                c.elementwise += 1;
                c.last_op = Some("where");
            }
            Expr::Gather { .. } => c.gathers += 1,
            _ => {}
        }
    }
    c
}

/// `x` multiplies two loads that both run along reduce loop `var`: a matmul's product.
fn is_contraction(k: &Kernel, x: ExprId, var: usize) -> bool {
    let Expr::Binary {
        op: BinaryOp::Mul,
        a,
        b,
        ..
    } = k.exprs[x]
    else {
        return false;
    };
    let along = |e: ExprId| matches!(k.exprs[e], Expr::Load { .. }) && k.exprs[e].indexes_with(var);
    // `x * x` (one load squared) is a norm's statistic, not a contraction.
    a != b && along(a) && along(b)
}

/// The kernel writes a window of a larger buffer (a KV-cache append).
fn writes_window(k: &Kernel) -> bool {
    let points: usize = k
        .output_loops()
        .iter()
        .map(|l| l.extent.max_value())
        .product();
    k.stores.iter().any(|s| k.args[s.arg].len > points)
}

/// A contraction whose output loops are not `[batch.., rows.., columns]`: a batch loop (one
/// that both operands run along) sits inside a row loop (one only A runs along), as when
/// `p @ v` is stored through a permute.
fn stores_permuted(k: &Kernel, c: &Contents) -> bool {
    let n_out = k.output_loops().len();
    let [a, b] = c.operands[..] else {
        return false;
    };
    let mut seen_row = false;
    for v in 0..n_out.saturating_sub(1) {
        match (k.exprs[a].indexes_with(v), k.exprs[b].indexes_with(v)) {
            (true, true) if seen_row => return true,
            (true, false) => seen_row = true,
            _ => {}
        }
    }
    false
}

/// Which fusion pattern a kernel is, for `--dump-graph`.
pub fn pattern(k: &Kernel) -> String {
    match &k.body {
        KernelBody::Siblings(parts) => {
            // Equal patterns once, with their count.
            let mut each: Vec<(String, usize)> = Vec::new();
            for p in parts.iter().map(pattern) {
                match each.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, n)) => *n += 1,
                    None => each.push((p, 1)),
                }
            }
            let each: Vec<String> = each
                .into_iter()
                .map(|(p, n)| if n > 1 { format!("{n} x {p}") } else { p })
                .collect();
            format!(
                "{} sibling GEMMs of one A in one kernel: {}",
                parts.len(),
                each.join("; ")
            )
        }
        KernelBody::Attention(_) => {
            "flash attention (one kernel: scores, mask, online softmax, @ v)".into()
        }
        KernelBody::Gemm(g) => {
            let mut p = if g.rows == 1 { "gemv" } else { "gemm" }.to_string();
            if g.pair.is_some() {
                p.insert_str(0, "paired ");
                p.push_str(" of two weights sharing A");
            }
            if g.row_reduce.is_some() {
                p.insert_str(0, "rmsnorm+");
            }
            if g.b_scale.is_some() {
                p.push_str(", packed weights with the norm gain folded in");
            } else if g.packed {
                p.push_str(", packed weights");
            }
            let c = contents(k);
            if writes_window(k) {
                p.push_str(", written into the KV cache");
            } else if c.elementwise > 0 {
                p.push_str(" + epilogue");
            }
            p
        }
        KernelBody::Loops(_) => loops_pattern(k),
    }
}

fn loops_pattern(k: &Kernel) -> String {
    let c = contents(k);
    let reduce_loops = k
        .loops
        .iter()
        .filter(|l| l.kind == LoopKind::Reduce)
        .count();
    if writes_window(k) {
        return if c.contractions > 0 {
            "projection written into the KV cache"
        } else {
            "KV-cache write"
        }
        .into();
    }
    if c.contractions > 0 {
        return if stores_permuted(k, &c) {
            "batched matmul, stored permuted"
        } else {
            "batched matmul"
        }
        .into();
    }
    let sums = c.reduces.iter().filter(|r| **r == ReduceOp::Sum).count();
    let has_max = c.reduces.contains(&ReduceOp::Max);
    if reduce_loops >= 2 && has_max && c.exp2 {
        return "softmax (one kernel)".into();
    }
    if reduce_loops >= 2 && sums >= 2 {
        return "layernorm (one kernel)".into();
    }
    if reduce_loops >= 1 && c.sqrt && c.recip {
        return "rmsnorm (one kernel)".into();
    }
    if reduce_loops >= 1 {
        return if c.elementwise > 0 {
            "reduction + fused elementwise"
        } else {
            "reduction"
        }
        .into();
    }
    // The count is of graph ops: one op can be several expressions (at two indices).
    match (c.elementwise + c.gathers, c.last_op) {
        (0, _) => "copy".into(),
        (1, _) if c.gathers == 1 => "gather".into(),
        (1, Some(op)) => op.into(),
        _ => format!("{} elementwise ops fused", k.ops.len()),
    }
}

/// The kernel's short family name: its template, or what its loop nest computes.
fn family(k: &Kernel) -> &'static str {
    match &k.body {
        KernelBody::Siblings(_) => "siblings",
        KernelBody::Attention(_) => "attention",
        KernelBody::Gemm(g) if g.pair.is_some() => "gemm2",
        KernelBody::Gemm(g) if g.rows == 1 => "gemv",
        KernelBody::Gemm(_) => "gemm",
        KernelBody::Loops(_) => {
            let c = contents(k);
            if writes_window(k) {
                "write"
            } else if c.contractions > 0 {
                "matmul"
            } else if !c.reduces.is_empty() {
                "r"
            } else if c.elementwise > 0 {
                "e"
            } else if c.gathers > 0 {
                "gather"
            } else {
                "copy"
            }
        }
    }
}

/// The name of launch `index`: `k{index}_{family}_{extents}`, the extents those of every loop
/// (output loops, then reduce loops), or for a GEMM its rows, columns and K, for a sibling
/// group its parts' total columns.
pub fn kernel_name(index: usize, k: &Kernel) -> String {
    let extents: Vec<String> = match &k.body {
        KernelBody::Gemm(g) => vec![
            g.rows.to_string(),
            g.cols.to_string(),
            k.loops[g.k_loop].extent.to_string(),
        ],
        KernelBody::Siblings(parts) => {
            let first = parts.first().and_then(|p| p.gemm().map(|g| (p, g)));
            let cols: usize = parts.iter().filter_map(|p| p.gemm().map(|g| g.cols)).sum();
            match first {
                Some((p, g)) => vec![
                    g.rows.to_string(),
                    cols.to_string(),
                    p.loops[g.k_loop].extent.to_string(),
                ],
                None => Vec::new(),
            }
        }
        _ => k.loops.iter().map(|l| l.extent.to_string()).collect(),
    };
    let mut name = format!("k{index}_{}", family(k));
    for e in extents {
        name.push('_');
        name.push_str(&e);
    }
    name
}
