//! Static bounds proof for a kernel: every unguarded load and every store must stay inside its
//! buffer for every iteration and every legal symbol value. A kernel that fails is refused
//! before it is compiled, so a lowering bug becomes an error instead of a stray write.

use cranegrad_graph::Dim;
use cranegrad_lower::affine::Affine;
use cranegrad_lower::kernel::{Expr, GEMM_NR, Kernel, KernelBody, panel_words};
use cranegrad_lower::kernel_analysis::index_range as range;

use crate::CodegenError;

/// Fails when any unguarded access of `k` can leave its buffer.
pub fn check_bounds(k: &Kernel) -> Result<(), CodegenError> {
    if let KernelBody::Siblings(parts) = &k.body {
        return parts.iter().try_for_each(check_bounds);
    }
    let bad_var = |a: &Affine| a.terms.iter().find(|t| t.0 >= k.loops.len()).map(|t| t.0);
    let indices = k.exprs.iter().filter_map(|e| match e {
        Expr::Load { index, .. } | Expr::Gather { index, .. } | Expr::Index(index) => Some(index),
        _ => None,
    });
    if let Some(v) = indices
        .chain(k.stores.iter().map(|s| &s.index))
        .find_map(bad_var)
    {
        return Err(CodegenError::OutOfBounds(format!(
            "kernel {}: index uses loop variable i{v} but the kernel has {} loops",
            k.name,
            k.loops.len()
        )));
    }
    let empty_loop = k.loops.iter().any(|l| l.extent.max_value() == 0);
    if empty_loop {
        return Ok(());
    }
    let check = |what: &str, arg: usize, idx: &Affine| -> Result<(), CodegenError> {
        let (lo, hi) = range(k, idx);
        let len = k.args[arg].len as i64;
        if lo < 0 || hi >= len {
            return Err(CodegenError::OutOfBounds(format!(
                "kernel {}: {what} arg{arg}[{idx}] spans {lo}..={hi} but the buffer holds {len}",
                k.name
            )));
        }
        Ok(())
    };
    for e in &k.exprs {
        if let Expr::Load {
            arg, index, conds, ..
        } = e
            && conds.is_empty()
        {
            check("load", *arg, index)?;
        }
    }
    for e in &k.exprs {
        if let Expr::Gather {
            arg,
            rows,
            row_stride,
            index,
            packed,
            ..
        } = e
        {
            if packed.is_some() {
                // Panels of `rows` columns of `row_stride` k: an index within the row and a
                // clamped row stay in them.
                let (lo, hi) = range(k, index);
                let len = k.args[*arg].len as i64;
                let panels = (rows.div_ceil(GEMM_NR) * panel_words(*row_stride as usize)) as i64;
                if lo < 0 || hi >= *row_stride || len < panels {
                    return Err(CodegenError::OutOfBounds(format!(
                        "kernel {}: packed gather arg{arg}[{index}] spans {lo}..={hi} of rows \
                         {row_stride} long, in {len} of {panels} panel elements",
                        k.name
                    )));
                }
                continue;
            }
            let last_row = index.add(&Affine::constant((*rows as i64 - 1).max(0) * row_stride));
            check("gather", *arg, index)?;
            check("gather", *arg, &last_row)?;
        }
    }
    for s in &k.stores {
        check("store", s.arg, &s.index)?;
    }
    for l in &k.loops {
        if let Dim::Sym { sym, .. } = &l.extent
            && !k.symbols.iter().any(|s| s.name == sym.name)
        {
            return Err(CodegenError::OutOfBounds(format!(
                "kernel {}: loop bound uses unlisted symbol {}",
                k.name, sym.name
            )));
        }
    }
    Ok(())
}
