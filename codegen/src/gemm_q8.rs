//! The GEMM micro-kernel over Q8 panels (see `panel_bytes`): per block of 32 k, the f32
//! panel's eight groups at one byte per value, then each column's f32 scale (and offset).
//! Each block's products accumulate unscaled in their own registers, the 8-bit values widened
//! and converted in registers; the block sum is then scaled into the column's total with one
//! FMA, and an offset's share added as `o * sum(a)` with another. The weights stream at about a quarter of their f32 bytes, which is what decode is
//! bound by.

use cranelift_codegen::ir::{
    Endianness, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value, types,
};
use cranelift_frontend::{FunctionBuilder, Variable};

use cranegrad_graph::{CompactFormat, Q8_BLOCK};
use cranegrad_lower::kernel::{GEMM_KG, GEMM_NR, block_values_bytes, q8_block_bytes};

use crate::emit::emit_loop;
use crate::gemm::{
    Accumulators, a_run, accumulator_slot, advance_a, b_flags, hsum4, load_at, zeroed_vectors,
};

/// Groups of `GEMM_KG` k values per Q8 block.
const GROUPS: usize = Q8_BLOCK / GEMM_KG;

/// The block's rows (`a_rows`, advanced through `live_a`, `ak` bytes per k) times the Q8
/// panel at `start` over `k_total` (a multiple of the block): passes of one row by four
/// columns (decode), or of two rows by two columns, so the block sums, the totals, the A runs
/// and the converted B vectors fit the 16 vector registers.
#[allow(clippy::too_many_arguments)]
pub(crate) fn q8_accumulate(
    b: &mut FunctionBuilder,
    a_rows: &[(Variable, i64)],
    live_a: &[Variable],
    ak: i64,
    start: Value,
    k_total: i64,
    format: CompactFormat,
) -> Accumulators {
    let rows = a_rows.len();
    let (row_step, col_step) = if rows == 1 { (1, 4) } else { (2, 2) };
    // Each (row, column) total as a vector of lane sums, summed across lanes at the end.
    let totals = b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        (rows * GEMM_NR * 16) as u32,
        4,
    ));
    let a_start: Vec<Value> = live_a.iter().map(|&v| b.use_var(v)).collect();
    for r0 in (0..rows).step_by(row_step) {
        let pass_rows = &a_rows[r0..(r0 + row_step).min(rows)];
        let mut live: Vec<Variable> = Vec::new();
        for &(v, _) in pass_rows {
            if !live.contains(&v) {
                live.push(v);
            }
        }
        for c0 in (0..GEMM_NR).step_by(col_step) {
            for (&v, &p) in live_a.iter().zip(&a_start) {
                if live.contains(&v) {
                    b.def_var(v, p);
                }
            }
            let cols = c0..c0 + col_step;
            let accs = q8_pass(b, pass_rows, &live, ak, (start, k_total), cols, format);
            for (i, acc) in accs.into_iter().enumerate() {
                let (r, c) = (r0 + i / col_step, c0 + i % col_step);
                let v = b.use_var(acc);
                b.ins()
                    .stack_store(types::I64, v, totals, ((r * GEMM_NR + c) * 16) as i32);
            }
        }
    }
    let slot = accumulator_slot(b, rows);
    for r in 0..rows {
        for q in 0..GEMM_NR / 4 {
            let v = [0, 1, 2, 3].map(|i| {
                let at = ((r * GEMM_NR + 4 * q + i) * 16) as i32;
                b.ins().stack_load(types::I64, types::F32X4, totals, at)
            });
            let sum = hsum4(b, v);
            slot.put(b, r, q, sum);
        }
    }
    slot
}

/// One pass: `pass_rows` by panel columns `cols` (an even count), returning the totals'
/// variables row-major.
fn q8_pass(
    b: &mut FunctionBuilder,
    pass_rows: &[(Variable, i64)],
    live: &[Variable],
    ak: i64,
    (start, k_total): (Value, i64),
    cols: std::ops::Range<usize>,
    format: CompactFormat,
) -> Vec<Variable> {
    let nc = cols.len();
    let offsets = format.has_offset();
    let totals = zeroed_vectors(b, pass_rows.len() * nc);
    let block_bytes = q8_block_bytes(format) as i64;
    let blocks = k_total / Q8_BLOCK as i64;
    let end = b.ins().iadd_imm_s(start, blocks * block_bytes);
    let split = format == CompactFormat::Q8Split;
    let scales_at = block_values_bytes(format) as i64;
    let nibble_mask = nibble_mask(b);
    emit_loop(b, start, end, block_bytes, |b, bp| {
        let sums = zeroed_vectors(b, pass_rows.len() * nc);
        // With offsets, each row's block sum of A (lane-wise): the offset's share is o * sum(a).
        let a_sums = zeroed_vectors(b, if offsets { pass_rows.len() } else { 0 });
        // Scales the sums into the totals by the scales at `at` (and adds the offsets' share).
        let flush = |b: &mut FunctionBuilder, at: i64, last: bool| {
            for (i, c) in cols.clone().enumerate() {
                let s = load_at(b, types::F32, b_flags(), bp, at + 4 * c as i64);
                let sv = b.ins().splat(types::F32X4, s);
                let ov = offsets.then(|| {
                    let at = scales_at + 4 * (GEMM_NR + c) as i64;
                    let o = load_at(b, types::F32, b_flags(), bp, at);
                    b.ins().splat(types::F32X4, o)
                });
                for r in 0..pass_rows.len() {
                    let sum = b.use_var(sums[r * nc + i]);
                    let acc = b.use_var(totals[r * nc + i]);
                    let mut nv = b.ins().fma(sum, sv, acc);
                    if let Some(ov) = ov {
                        let a_sum = b.use_var(a_sums[r]);
                        nv = b.ins().fma(a_sum, ov, nv);
                    }
                    b.def_var(totals[r * nc + i], nv);
                    if !last {
                        let z = b.ins().f32const(0.0);
                        let z = b.ins().splat(types::F32X4, z);
                        b.def_var(sums[r * nc + i], z);
                    }
                }
            }
        };
        for g in 0..GROUPS as i64 {
            // Two columns' 4-k runs are 8 consecutive bytes: widened to i16 by the load, then
            // each half to i32 and converted.
            let mut bv = Vec::with_capacity(nc);
            // Nibbles: the group's 16 bytes, low or high halves as the pass's columns need.
            let mut nibbles: [Option<Value>; 2] = [None, None];
            for c in cols.clone().step_by(2) {
                let w = if format == CompactFormat::Q4 {
                    let half = c / 4;
                    let v = *nibbles[half].get_or_insert_with(|| {
                        let at = (g * (GEMM_KG * GEMM_NR) as i64 / 2) as i32;
                        let w = b.ins().load(types::I8X16, b_flags(), bp, at);
                        nibble_half(b, w, half, nibble_mask)
                    });
                    if c % 4 == 0 {
                        b.ins().swiden_low(v)
                    } else {
                        b.ins().swiden_high(v)
                    }
                } else {
                    let at = g * (GEMM_KG * GEMM_NR) as i64 + (c * GEMM_KG) as i64;
                    b.ins().sload8x8(b_flags(), bp, at as i32)
                };
                for half in [b.ins().swiden_low(w), b.ins().swiden_high(w)] {
                    bv.push(b.ins().fcvt_from_sint(types::F32X4, half));
                }
            }
            for (r, _) in pass_rows.iter().enumerate() {
                let av = a_run(b, pass_rows, r, g * GEMM_KG as i64 * ak, ak, GEMM_KG);
                if let Some(&sv) = a_sums.get(r) {
                    let acc = b.use_var(sv);
                    let nv = b.ins().fadd(acc, av);
                    b.def_var(sv, nv);
                }
                for (i, &bc) in bv.iter().enumerate() {
                    let s = sums[r * nc + i];
                    let acc = b.use_var(s);
                    let nv = b.ins().fma(bc, av, acc);
                    b.def_var(s, nv);
                }
            }
            // Split blocks scale each half by its own scale (the second after the first's).
            if split && g as usize == GROUPS / 2 - 1 {
                flush(b, scales_at, false);
            }
        }
        let last_scales = if split {
            scales_at + 4 * GEMM_NR as i64
        } else {
            scales_at
        };
        flush(b, last_scales, true);
        advance_a(b, live, Q8_BLOCK as i64 * ak);
    });
    totals
}

/// One half of a [`CompactFormat::Q4`] group's 16 bytes `w`: the low nibbles (`half` 0,
/// columns 0..4) or the high ones (columns 4..8), as bytes 0..=15 (`mask` is
/// [`nibble_mask`]).
pub(crate) fn nibble_half(b: &mut FunctionBuilder, w: Value, half: usize, mask: Value) -> Value {
    let w = if half == 0 {
        w
    } else {
        // x86 shifts 16-bit lanes at the narrowest: the mask drops what crosses bytes.
        let le = MemFlagsData::new().with_endianness(Endianness::Little);
        let w16 = b.ins().bitcast(types::I16X8, le, w);
        let w16 = b.ins().ushr_imm_u(w16, 4);
        b.ins().bitcast(types::I8X16, le, w16)
    };
    b.ins().band(w, mask)
}

/// 0x0f in every byte: made once per kernel body, outside its loops.
pub(crate) fn nibble_mask(b: &mut FunctionBuilder) -> Value {
    let mask = b.ins().iconst(types::I8, 0x0f);
    b.ins().splat(types::I8X16, mask)
}
