//! The GEMM micro-kernel over Q8 panels in integers (`GemmSpec::int8_dot`): once per call,
//! each row of A is quantised per block of 32 to 8 bits (scale `max|a| / 127`, kept as the
//! magnitudes and a sign mask per byte); then per block, each 16-byte run of the panel (four
//! columns' 4-k runs) takes its A run's signs (`(w ^ m) - m`), one `pmaddubsw` against the
//! A run's magnitudes broadcast to every column, and one `pmaddwd` by ones: the four
//! columns' exact integer dot products in the four lanes. The block's sums are converted
//! once and scaled by the weight and activation scales. Every product fits: `|a|, |w| <= 127`
//! keeps each `pmaddubsw` pair within i16. Offset weights (`q * s + o`, `q` in 0..=127, or
//! 0..=15 unpacked from nibbles) are the unsigned operand themselves, against the signed A run, and add `o * sum(a)` per block. AVX-VNNI's `vpdpbusd` would fuse the three steps,
//! but this machine has no VNNI.

use cranelift_codegen::ir::{
    InstBuilder, MemFlagsData, StackSlot, StackSlotData, StackSlotKind, Value, condcodes::FloatCC,
    condcodes::IntCC, types,
};
use cranelift_frontend::{FunctionBuilder, Variable};

use cranegrad_graph::{CompactFormat, Q8_BLOCK};
use cranegrad_lower::kernel::{
    Expr, GEMM_KG, GEMM_NR, GemmSpec, block_values_bytes, int8_chunk_rows, int8_row_stride,
    int8_scales_at, q8_block_bytes,
};

use crate::emit::{Emitter, emit_loop};
use crate::gemm::{
    Accumulators, accumulator_slot, b_flags, load_at, shuffle_bytes, zeroed_vectors,
};
use crate::gemm_q8::{nibble_half, nibble_mask};
use crate::memory::byte_addr;

/// Groups of `GEMM_KG` k values per block.
const GROUPS: usize = Q8_BLOCK / GEMM_KG;

/// Byte masks swapping a vector's 64-bit halves, and its 32-bit neighbours.
const SWAP64: u128 = 0x0706_0504_0302_0100_0f0e_0d0c_0b0a_0908;
const SWAP32: u128 = 0x0b0a_0908_0f0e_0d0c_0302_0100_0706_0504;

/// Where the quantised rows of A live: per row, `stride` bytes of K magnitudes and K sign
/// masks (against signed weights) or K signed values (unsigned ones), then one f32 scale per
/// block, and for unsigned weights one f32 sum per block (see `int8_row_stride`); row
/// `first` (of the chunk held) at the start.
#[derive(Clone, Copy)]
pub(crate) struct QuantisedRows {
    slot: StackSlot,
    stride: i64,
    k: i64,
    first: Value,
}

/// Stack accesses: in bounds by construction.
fn stack_flags() -> MemFlagsData {
    MemFlagsData::trusted()
}

impl Emitter<'_> {
    /// A stack array for `int8_chunk_rows` quantised rows of A (at most
    /// `INT8_DOT_MAX_STACK` bytes), made once per kernel.
    pub(crate) fn quantised_rows_slot(
        &self,
        b: &mut FunctionBuilder,
        g: &GemmSpec,
        k: i64,
    ) -> QuantisedRows {
        let format = g.compact.expect("select_integer_dot checked the format");
        let stride = int8_row_stride(k as usize, format) as i64;
        let chunk = int8_chunk_rows(g.rows, k as usize, format) as i64;
        let slot = b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (chunk * stride) as u32,
            4,
        ));
        let first = b.ins().iconst(types::I64, 0);
        QuantisedRows {
            slot,
            stride,
            k,
            first,
        }
    }

    /// Quantises rows `[first, end)` of A into `rows`' array (row `first` at its start): once
    /// per call or chunk, so its cost (M x K) is spread over every panel.
    pub(crate) fn quantise_rows(
        &mut self,
        b: &mut FunctionBuilder,
        g: &GemmSpec,
        vars: &mut [Option<Value>],
        extents: &[Value],
        rows: QuantisedRows,
        (first, end): (Value, Value),
    ) -> QuantisedRows {
        let (k, format) = (
            rows.k,
            g.compact.expect("select_integer_dot checked the format"),
        );
        let rows = QuantisedRows { first, ..rows };
        let Expr::Load { arg, index: ai, .. } = &self.k.exprs[g.a] else {
            unreachable!("select_integer_dot checked A is a load")
        };
        let (arg, ai) = (*arg, ai.clone());
        emit_loop(b, first, end, 1, |b, r| {
            self.row_vars(b, g, vars, extents, r);
            let zero = b.ins().iconst(types::I64, 0);
            vars[g.k_loop] = Some(zero);
            vars[g.n_loop] = Some(zero);
            let base = self.affine(b, &ai, vars);
            let a = byte_addr(b, self.ptrs[arg], base);
            let dst = rows.row_addr(b, r);
            let end = b.ins().iconst(types::I64, k * 4);
            emit_loop(b, zero, end, (Q8_BLOCK * 4) as i64, |b, off| {
                let ap = b.ins().iadd(a, off);
                let blk = b.ins().ushr_imm_u(off, 7);
                quantise_block(b, (ap, dst, blk), k, format);
            });
        });
        for v in vars.iter_mut() {
            *v = None;
        }
        rows
    }
}

impl QuantisedRows {
    /// Address of row `r`'s part.
    fn row_addr(self, b: &mut FunctionBuilder, r: Value) -> Value {
        let base = b.ins().stack_addr(types::I64, self.slot, 0);
        let r = b.ins().isub(r, self.first);
        let off = b.ins().imul_imm_s(r, self.stride);
        b.ins().iadd(base, off)
    }
}

/// Quantises the 32 f32 values at `ap` (block `blk` of a row whose part starts at `dst`).
/// Offset weights read only the signed values and the sums; the others only the magnitudes
/// and signs: each call stores what its GEMM's format reads.
fn quantise_block(
    b: &mut FunctionBuilder,
    (ap, dst, blk): (Value, Value, Value),
    k: i64,
    format: CompactFormat,
) {
    let offsets = format.has_offset();
    let xs: Vec<Value> = (0..8)
        .map(|i| {
            b.ins().load(
                types::F32X4,
                MemFlagsData::new().with_notrap().with_readonly(),
                ap,
                16 * i,
            )
        })
        .collect();
    let mut m = b.ins().fabs(xs[0]);
    for &x in &xs[1..] {
        let a = b.ins().fabs(x);
        m = b.ins().fmax(m, a);
    }
    // Every lane the block's maximum: swap halves, then neighbours.
    for mask in [SWAP64, SWAP32] {
        let s = shuffle_bytes(b, m, m, mask);
        m = b.ins().fmax(m, s);
    }
    let c127 = b.ins().f32const(127.0);
    let c127 = b.ins().splat(types::F32X4, c127);
    let scale = b.ins().fdiv(m, c127);
    // 127 / max, or 0 for a zero block (its quotient is infinite).
    let inv = b.ins().fdiv(c127, m);
    let fz = b.ins().f32const(0.0);
    let fz = b.ins().splat(types::F32X4, fz);
    let nonzero = b.ins().fcmp(FloatCC::GreaterThan, m, fz);
    let le = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
    let inv_bits = b.ins().bitcast(types::I32X4, le, inv);
    let inv_bits = b.ins().band(inv_bits, nonzero);
    let inv = b.ins().bitcast(types::F32X4, le, inv_bits);
    let q: Vec<Value> = xs
        .iter()
        .map(|&x| {
            let t = b.ins().fmul(x, inv);
            let t = b.ins().nearest(t);
            b.ins().fcvt_to_sint_sat(types::I32X4, t)
        })
        .collect();
    let z8 = b.ins().iconst(types::I8, 0);
    let z8 = b.ins().splat(types::I8X16, z8);
    let q_at = b.ins().imul_imm_s(blk, Q8_BLOCK as i64);
    let q_addr = b.ins().iadd(dst, q_at);
    for h in 0..2 {
        let lo = b.ins().snarrow(q[4 * h], q[4 * h + 1]);
        let hi = b.ins().snarrow(q[4 * h + 2], q[4 * h + 3]);
        let bytes = b.ins().snarrow(lo, hi);
        let at = 16 * h as i64;
        if offsets {
            b.ins().store(stack_flags(), bytes, q_addr, at as i32);
        } else {
            let mag = b.ins().iabs(bytes);
            let sign = b.ins().icmp(IntCC::SignedLessThan, bytes, z8);
            b.ins().store(stack_flags(), mag, q_addr, at as i32);
            b.ins().store(stack_flags(), sign, q_addr, (k + at) as i32);
        }
    }
    let s = b.ins().extractlane(scale, 0);
    let s_at = b.ins().imul_imm_s(blk, 4);
    let s_addr = b.ins().iadd(dst, s_at);
    let scales_at = int8_scales_at(k as usize, format) as i64;
    b.ins().store(stack_flags(), s, s_addr, scales_at as i32);
    if !offsets {
        return;
    }
    // The block's sum as the integers see it (scale times the sum of q, exact in f32): an
    // offset's share of a dot product.
    let mut qsum = q[0];
    for &v in &q[1..] {
        qsum = b.ins().iadd(qsum, v);
    }
    let mut qsum = b.ins().fcvt_from_sint(types::F32X4, qsum);
    for mask in [SWAP64, SWAP32] {
        let sh = shuffle_bytes(b, qsum, qsum, mask);
        qsum = b.ins().fadd(qsum, sh);
    }
    let a_sum = b.ins().fmul(qsum, scale);
    let a_sum = b.ins().extractlane(a_sum, 0);
    let sums_at = scales_at + k / Q8_BLOCK as i64 * 4;
    b.ins().store(stack_flags(), a_sum, s_addr, sums_at as i32);
}

/// Rows of one pass over a block: each weight vector (and its unpacked nibbles) serves both.
const PASS_ROWS: usize = 2;

/// The rows `rows` (flat row indices of the call) times the panel at `start` in the Q8
/// `format`, from the quantised rows `qa`: per pair of rows one pass over the panel (it stays
/// in L1 across the passes), each weight vector loaded and unpacked once for both.
pub(crate) fn int8_accumulate(
    b: &mut FunctionBuilder,
    qa: QuantisedRows,
    rows: &[Value],
    start: Value,
    format: CompactFormat,
) -> Accumulators {
    let offsets = format.has_offset();
    let split = format == CompactFormat::Q8Split;
    let slot = accumulator_slot(b, rows.len());
    let block_bytes = q8_block_bytes(format) as i64;
    let blocks = qa.k / Q8_BLOCK as i64;
    let k = qa.k as i32;
    let a_scales_at = int8_scales_at(qa.k as usize, format) as i32;
    let scales_at = block_values_bytes(format) as i64;
    // Made once: unoptimised code would build a constant vector again at every use.
    let nibble_mask = nibble_mask(b);
    for (pi, pass) in rows.chunks(PASS_ROWS).enumerate() {
        let n = pass.len();
        let row_at: Vec<Value> = pass.iter().map(|&r| qa.row_addr(b, r)).collect();
        let totals: Vec<Vec<Variable>> = (0..n).map(|_| zeroed_vectors(b, 2)).collect();
        let a_ptrs: Vec<Variable> = row_at
            .iter()
            .map(|&row| {
                let v = b.declare_var(types::I64);
                b.def_var(v, row);
                v
            })
            .collect();
        let end = b.ins().iadd_imm_s(start, blocks * block_bytes);
        emit_loop(b, start, end, block_bytes, |b, bp| {
            let aps: Vec<Value> = a_ptrs.iter().map(|&v| b.use_var(v)).collect();
            let zi = b.ins().iconst(types::I32, 0);
            let zero = b.ins().splat(types::I32X4, zi);
            let mut sums = vec![[zero; 2]; n];
            // Per row, the block's scale and (offset weights) its sum, broadcast.
            let mut sa = Vec::with_capacity(n);
            let mut a_sum = Vec::with_capacity(n);
            for (&ap, &row) in aps.iter().zip(&row_at) {
                let row_blocks = b.ins().isub(ap, row);
                let blk = b.ins().ushr_imm_u(row_blocks, 5);
                let s_at = b.ins().imul_imm_s(blk, 4);
                let s_addr = b.ins().iadd(row, s_at);
                let s = b.ins().load(types::F32, stack_flags(), s_addr, a_scales_at);
                sa.push(b.ins().splat(types::F32X4, s));
                a_sum.push(offsets.then(|| {
                    let at = a_scales_at + k / Q8_BLOCK as i32 * 4;
                    let v = b.ins().load(types::F32, stack_flags(), s_addr, at);
                    b.ins().splat(types::F32X4, v)
                }));
            }
            // Converts the integer sums and scales them into the totals by the column scales
            // at `at` (and adds the offsets' share); then starts the sums again.
            let flush = |b: &mut FunctionBuilder, sums: &mut [[Value; 2]], at: i64| {
                for h in 0..2 {
                    let sw = load_at(b, types::F32X4, b_flags(), bp, at + 16 * h as i64);
                    let ow = offsets.then(|| {
                        let at = scales_at + 4 * GEMM_NR as i64 + 16 * h as i64;
                        load_at(b, types::F32X4, b_flags(), bp, at)
                    });
                    for r in 0..n {
                        let f = b.ins().fcvt_from_sint(types::F32X4, sums[r][h]);
                        let s = b.ins().fmul(sw, sa[r]);
                        let acc = b.use_var(totals[r][h]);
                        let mut nv = b.ins().fma(f, s, acc);
                        if let (Some(ow), Some(a_sum)) = (ow, a_sum[r]) {
                            nv = b.ins().fma(ow, a_sum, nv);
                        }
                        b.def_var(totals[r][h], nv);
                        sums[r][h] = zero;
                    }
                }
            };
            let mut four: Vec<ARun> = Vec::with_capacity(n);
            for g in 0..GROUPS as i32 {
                // Four groups' A runs (16 bytes at `at` in the row's part): each group's run is
                // then repeated for the 4 columns by one `pshufd`. Signed weights take the A
                // run's signs and multiply its magnitudes; offset weights (0..=127) are the
                // unsigned operand against the signed A run.
                let at = 4 * g;
                if g % 4 == 0 {
                    four.clear();
                    for &ap in &aps {
                        let runs = |b: &mut FunctionBuilder, at: i32| {
                            b.ins().load(types::I8X16, stack_flags(), ap, at)
                        };
                        four.push(if offsets {
                            ARun::Signed(runs(b, at))
                        } else {
                            ARun::Split(runs(b, at), runs(b, k + at))
                        });
                    }
                }
                let j = (g % 4) as u128;
                let lane = |b: &mut FunctionBuilder, v: Value| {
                    let one: u128 = (0..4).map(|i| (4 * j + i) << (8 * i)).sum();
                    let mask = (0..4).map(|l| one << (32 * l)).sum();
                    shuffle_i8(b, v, mask)
                };
                let a: Vec<ARun> = four
                    .iter()
                    .map(|&f| match f {
                        ARun::Signed(v) => ARun::Signed(lane(b, v)),
                        ARun::Split(m, s) => ARun::Split(lane(b, m), lane(b, s)),
                    })
                    .collect();
                // A nibble group's 16 bytes hold both halves.
                let packed = (format == CompactFormat::Q4).then(|| {
                    let at = g * (GEMM_KG * GEMM_NR) as i32 / 2;
                    b.ins().load(types::I8X16, b_flags(), bp, at)
                });
                for h in 0..2 {
                    let w = match packed {
                        Some(v) => nibble_half(b, v, h, nibble_mask),
                        None => {
                            let at = g * (GEMM_KG * GEMM_NR) as i32 + 16 * h as i32;
                            b.ins().load(types::I8X16, b_flags(), bp, at)
                        }
                    };
                    for (&ar, sum) in a.iter().zip(sums.iter_mut()) {
                        let pairs = match ar {
                            ARun::Split(mag, sign) => {
                                let flipped = b.ins().bxor(w, sign);
                                let signed = b.ins().isub(flipped, sign);
                                b.ins().x86_pmaddubsw(signed, mag)
                            }
                            ARun::Signed(a) => b.ins().x86_pmaddubsw(a, w),
                        };
                        let lo = b.ins().swiden_low(pairs);
                        let hi = b.ins().swiden_high(pairs);
                        let quads = b.ins().iadd_pairwise(lo, hi);
                        sum[h] = b.ins().iadd(sum[h], quads);
                    }
                }
                // Split blocks scale each half by its own scales.
                if split && g as usize == GROUPS / 2 - 1 {
                    flush(b, &mut sums, scales_at);
                }
            }
            let last_scales = if split {
                scales_at + 4 * GEMM_NR as i64
            } else {
                scales_at
            };
            flush(b, &mut sums, last_scales);
            for (&v, &ap) in a_ptrs.iter().zip(&aps) {
                let next = b.ins().iadd_imm_s(ap, Q8_BLOCK as i64);
                b.def_var(v, next);
            }
        });
        for (r, t) in totals.iter().enumerate() {
            for (h, &v) in t.iter().enumerate() {
                let v = b.use_var(v);
                slot.put(b, pi * PASS_ROWS + r, h, v);
            }
        }
    }
    slot
}

/// An A run as the weights' form needs it: magnitudes and sign masks (signed weights), or
/// the signed values (offset weights, which are non-negative).
#[derive(Clone, Copy)]
enum ARun {
    Split(Value, Value),
    Signed(Value),
}

/// `v`'s bytes rearranged by `mask` (byte `i` of the result is byte `mask >> 8i & 0xff`): a
/// `pshufd` when the mask moves whole 32-bit lanes.
fn shuffle_i8(b: &mut FunctionBuilder, v: Value, mask: u128) -> Value {
    use cranelift_codegen::ir::{ConstantData, Immediate};
    let imm: Immediate = b
        .func
        .dfg
        .immediates
        .push(ConstantData::from(mask.to_le_bytes().as_slice()));
    b.ins().shuffle(v, v, imm)
}
