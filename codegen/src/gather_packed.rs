//! One element of a weight read from its packed panels by a row lookup
//! (`Expr::Gather { packed }`): the address of (column `n`, `k`) in the panels the runtime
//! packs for a GEMM's transposed B, and the value widened from the panel's compact format.
//! A lookup reads one row per token, so a scalar element per lane costs nothing measurable.

use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

use cranegrad_graph::CompactFormat;
use cranegrad_lower::kernel::{GEMM_KG, GEMM_NR, block_values_bytes, panel_bytes, q8_block_bytes};

/// The f32 value of column `n`, element `k` (both i64, `n` clamped into the table and `k`
/// within the row by the caller) of the panels at `ptr` of rows `row_stride` long in
/// `format`.
pub(crate) fn packed_element(
    b: &mut FunctionBuilder,
    ptr: Value,
    (n, k): (Value, Value),
    row_stride: i64,
    format: CompactFormat,
) -> Value {
    let ro = MemFlagsData::new().with_notrap().with_readonly();
    let panel = b.ins().ushr_imm_u(n, GEMM_NR.ilog2() as i64);
    let col = b.ins().band_imm_u(n, GEMM_NR as i64 - 1);
    let panel_at = b
        .ins()
        .imul_imm_s(panel, panel_bytes(row_stride as usize, Some(format)) as i64);
    let base = b.ins().iadd(ptr, panel_at);
    // Within a block (or a 16-bit panel): groups of 4 k, each column's run of 4 in turn.
    let run_at = |b: &mut FunctionBuilder, kk: Value| {
        let group = b.ins().ushr_imm_u(kk, GEMM_KG.ilog2() as i64);
        let group_at = b.ins().imul_imm_s(group, (GEMM_KG * GEMM_NR) as i64);
        let col_at = b.ins().imul_imm_s(col, GEMM_KG as i64);
        let in_run = b.ins().band_imm_u(kk, GEMM_KG as i64 - 1);
        let at = b.ins().iadd(group_at, col_at);
        b.ins().iadd(at, in_run)
    };
    if !format.is_block() {
        // 16-bit panels: the f32 panels' element order at 2 bytes; bf16 is an f32's top half.
        debug_assert_eq!(
            format,
            CompactFormat::Bf16,
            "select_packed_gather's formats"
        );
        let at = run_at(b, k);
        let at = b.ins().ishl_imm_s(at, 1);
        let addr = b.ins().iadd(base, at);
        let half = b.ins().uload16(types::I32, ro, addr, 0);
        let bits = b.ins().ishl_imm_s(half, 16);
        return b.ins().bitcast(types::F32, MemFlagsData::new(), bits);
    }
    let block_bytes = q8_block_bytes(format) as i64;
    let block = b.ins().ushr_imm_u(k, 5);
    let block_at = b.ins().imul_imm_s(block, block_bytes);
    let block_base = b.ins().iadd(base, block_at);
    let kk = b.ins().band_imm_u(k, 31);
    let q = if format == CompactFormat::Q4 {
        // The run of column `col % 4` in the group's 16 bytes, the high nibbles for columns
        // 4..8 (see `block_values_bytes`).
        let group = b.ins().ushr_imm_u(kk, GEMM_KG.ilog2() as i64);
        let group_at = b.ins().imul_imm_s(group, (GEMM_KG * GEMM_NR / 2) as i64);
        let low_col = b.ins().band_imm_u(col, 3);
        let col_at = b.ins().imul_imm_s(low_col, GEMM_KG as i64);
        let in_run = b.ins().band_imm_u(kk, GEMM_KG as i64 - 1);
        let at = b.ins().iadd(group_at, col_at);
        let at = b.ins().iadd(at, in_run);
        let addr = b.ins().iadd(block_base, at);
        let byte = b.ins().uload8(types::I32, ro, addr, 0);
        let high = b.ins().ushr_imm_u(col, 2);
        let shift = b.ins().ishl_imm_s(high, 2);
        let shift = b.ins().ireduce(types::I32, shift);
        let nibble = b.ins().ushr(byte, shift);
        b.ins().band_imm_u(nibble, 15)
    } else {
        let at = run_at(b, kk);
        let addr = b.ins().iadd(block_base, at);
        b.ins().sload8(types::I32, ro, addr, 0)
    };
    let x = b.ins().fcvt_from_sint(types::F32, q);
    // The block's 32 bytes per column come first, then a scale per column (and per half
    // block for a split block), or a scale and an offset.
    let values = block_values_bytes(format) as i32;
    let col_at = b.ins().imul_imm_s(col, 4);
    let mut scale_addr = b.ins().iadd(block_base, col_at);
    if format == CompactFormat::Q8Split {
        let half = b.ins().ushr_imm_u(kk, 4);
        let half_at = b.ins().imul_imm_s(half, 4 * GEMM_NR as i64);
        scale_addr = b.ins().iadd(scale_addr, half_at);
    }
    let s = b.ins().load(types::F32, ro, scale_addr, values);
    let v = b.ins().fmul(x, s);
    if !format.has_offset() {
        return v;
    }
    let o = b
        .ins()
        .load(types::F32, ro, scale_addr, values + 4 * GEMM_NR as i32);
    b.ins().fadd(v, o)
}
