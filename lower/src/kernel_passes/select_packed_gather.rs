//! Kernel pass: a row lookup in a compact weight (a token embedding) reads the weight's
//! packed panels, the same ones a GEMM on its transpose reads (a tied LM head), and widens
//! the row's values in registers. The raw f32 copy then has no reader and is freed: a
//! quantized model keeps its embedding at about a byte per value instead of four. Exact: the
//! panels hold the same values.

use cranegrad_graph::{CompactFormat, DType, Q8_BLOCK};

use crate::affine::Affine;
use crate::kernel::{Expr, GEMM_NR, Kernel, KernelBody, panel_words};
use crate::kernel_analysis::index_range;

/// Marks every gather of the kernel as packed when it qualifies: its table is a weight in a
/// compact format the gather can widen (`compact_of(slot)`; Q8 blocks whole along each row,
/// or bf16), every read of that slot is such a gather, and each index stays within its row.
/// Returns whether it changed.
pub fn select_packed_gather(
    kernel: &mut Kernel,
    compact_of: impl Fn(usize) -> Option<CompactFormat>,
) -> bool {
    if !matches!(kernel.body, KernelBody::Loops(_)) {
        return false;
    }
    let mut changed = false;
    for slot in 0..kernel.args.len() {
        let Some(format) = compact_of(slot) else {
            continue;
        };
        let readers: Vec<usize> = (0..kernel.exprs.len())
            .filter(|&i| {
                matches!(&kernel.exprs[i], Expr::Load { arg, .. } | Expr::Gather { arg, .. }
                    if *arg == slot)
            })
            .collect();
        let table = |e: &Expr| match e {
            Expr::Gather {
                rows,
                row_stride,
                index,
                dtype: DType::F32,
                packed: None,
                ..
            } => Some((*rows, *row_stride, index.clone())),
            _ => None,
        };
        let Some((rows, row_stride, _)) = readers.first().and_then(|&i| table(&kernel.exprs[i]))
        else {
            continue;
        };
        let widenable = match format {
            CompactFormat::Bf16 => true,
            f if f.is_block() => row_stride > 0 && (row_stride as usize).is_multiple_of(Q8_BLOCK),
            _ => false,
        };
        let qualifies = widenable
            && rows > 0
            && readers.iter().all(|&i| {
                table(&kernel.exprs[i]).is_some_and(|(r, s, index)| {
                    r == rows && s == row_stride && within_row(kernel, &index, row_stride)
                })
            });
        if !qualifies {
            continue;
        }
        for &i in &readers {
            if let Expr::Gather { packed, .. } = &mut kernel.exprs[i] {
                *packed = Some(format);
            }
        }
        // Elements as if f32, as for a GEMM's packed B (compact panels take fewer words).
        kernel.args[slot].len = rows.div_ceil(GEMM_NR) * panel_words(row_stride as usize);
        changed = true;
    }
    changed
}

/// True when `index` stays in `0..row_stride` over every iteration.
fn within_row(kernel: &Kernel, index: &Affine, row_stride: i64) -> bool {
    let (lo, hi) = index_range(kernel, index);
    lo >= 0 && hi < row_stride
}
