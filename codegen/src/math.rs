//! Inlined, branch-free Cranelift IR for `exp2`, `log2` and `sin` (Cranelift has no such instructions,
//! and a Rust call per element was measured 5x slower).
//!
//! Every emitter accepts an `F32` or an `F32X4` value and returns the same type; the same code path is
//! used for both (masks + `select`/`bitselect`), so scalar tails and vector bodies agree bit for bit.
//! The ISA must have `has_fma` (see [`crate::isa::host_isa`]), or each `fma` becomes a libcall.
//!
//! Measured against f64 `exp2`/`log2`/`sin` rounded to f32 (errors in f32 ulps of the exact result;
//! subnormal ulp = 2^-149); "exhaustive" = every f32 input, run by the `#[ignore]`d tests in
//! `tests/math_accuracy.rs`, whose default tests assert the same bounds on a strided sweep:
//!
//! | op | method | measured max error | asserted bound |
//! |---|---|---|---|
//! | `exp2_scaled_nonpositive` (`2^(y k)`, softmax) | `n = round(y k)` and `f = y k - n` by two FMAs, then the polynomial of `exp2` and one scale, as `exp2_nonpositive` | 0.87 ulp over a strided sweep of `y k` in [-126, 0] for three `k` (rounding `y k` to f32 first, as `exp2_nonpositive` of a product, alone costs up to 44 ulp at `y k` near -80); abs error under 2^-126 below | 1 ulp |
//! | `exp2` | `n = round(x)` by the 1.5*2^23 trick, degree-6 minimax for `2^f` on [-0.5, 0.5], times `2^(n>>1) * 2^(n - (n>>1))` | 0.82 ulp normal, 0.89 ulp subnormal results (exhaustive) | 1 ulp |
//! | `log2` | subnormals scaled by 2^23; `x = 2^e * m`, `m` in [sqrt(1/2), sqrt(2)), `r = m - 1` (exact); `e + (r*hi + r*lo + r^2*Q(r))`, degree-8 `Q`, `1/ln 2 = hi + lo` | 0.97 ulp (exhaustive, all x > 0); near 1 this is a relative error | 1 ulp |
//! | `sin`, `abs(x) <= 1e5` | Cody-Waite by pi/2 (3-part constant, exact first step by fma), degree-9 odd / degree-8 even minimax on [-1.05, 1.05] | abs 7.2e-8; 1.49 ulp where `abs(sin x) >= 2^-10` (exhaustive) | abs 7.5e-8, 1.5 ulp |
//! | `sin`, `1e5 < abs(x) <= 2^22` | same | abs 7.7e-8; 2.23 ulp where `abs(sin x) >= 2^-10` (exhaustive) | abs 8e-8, 2.5 ulp |
//!
//! Special values (all checked by the tests):
//!
//! | input | `exp2` | `log2` | `sin` |
//! |---|---|---|---|
//! | NaN | NaN | NaN | NaN |
//! | +inf | +inf | +inf | NaN |
//! | -inf | +0 | NaN | NaN |
//! | ±0 | 1 | -inf | ±0 |
//! | x < 0 | | NaN | |
//! | thresholds | `x >= 128` -> +inf, `x <= -150` -> +0, correctly scaled subnormals in between | `log2(1) = +0` exactly | |
//! | finite `abs(x) > 2^22` | | | ±0 (sign of x) |
//!
//! `sin` beyond 2^22 = 4194304 ([`SIN_MAX_ACCURATE`]): f32 `2/pi` is off by 4e-8 relative, so the
//! quadrant can round the wrong way (the reduced argument grows past 1), and past ~6.6e6 it no longer
//! fits the rounding trick. Such an input (a multiple of 0.5 anyway) is replaced by ±0, so the result
//! is finite and in [-1, 1] for every finite input instead of noise or an unbounded polynomial value.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    ConstantData, InstBuilder, InstructionData, MemFlagsData, Opcode, Type, Value, types,
};
use cranelift_frontend::FunctionBuilder;

/// 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits (for |v| < 2^22).
const ROUND_MAGIC: f32 = 12_582_912.0;
/// Bit pattern of [`ROUND_MAGIC`]; its low 22 bits are zero, so `bits(v + MAGIC) - MAGIC_BITS = round(v)`.
const ROUND_MAGIC_BITS: i32 = 0x4B40_0000;

/// Minimax `2^f - 1 = f*(c1 + f*(c2 + ...))` on [-0.5, 0.5], relative error 5.2e-9 (coefficients as f32).
const EXP2_POLY: [f32; 6] = [
    0.693_147_24,
    0.240_226_55,
    0.055_502_728,
    0.009_617_065,
    0.001_341_770_4,
    0.000_158_250_23,
];

/// Bits of f32 sqrt(1/2): subtracting them splits x so that the mantissa lands in [sqrt(1/2), sqrt(2)).
const SQRT_HALF_BITS: i32 = 0x3F35_04F3;

/// `1/ln 2` split in two f32s: the leading term carries most of the result, so its rounding matters.
const LOG2_E_HI: f32 = std::f32::consts::LOG2_E;
/// Low part of `1/ln 2`.
const LOG2_E_LO: f32 = 1.925_963e-8;
/// Minimax `log2(1 + r) - r/ln 2 = r^2 * Q(r)` on [sqrt(1/2) - 1, sqrt(2) - 1], relative error 4.6e-9.
const LOG2_POLY: [f32; 9] = [
    -0.721_347_33,
    0.480_898_2,
    -0.360_698_58,
    0.288_571_63,
    -0.239_572_1,
    0.204_480_19,
    -0.191_325_74,
    0.187_114_98,
    -0.110_486_805,
];

/// Largest |x| (2^22) for which `sin` keeps the documented accuracy; see the module docs for beyond.
pub const SIN_MAX_ACCURATE: f32 = 4_194_304.0;
/// pi/2 split so that `x - q*PIO2_1` is exact with fma and the tail error is ~1e-23 * q.
const PIO2_1: f32 = std::f32::consts::FRAC_PI_2;
/// Second part of pi/2.
const PIO2_2: f32 = -4.371_139e-8;
/// Third part of pi/2.
const PIO2_3: f32 = -1.715_124_5e-15;
/// `sin(r) - r = r^3 * S(r^2)`, relative error 4.8e-10 on |r| <= 1.05 (reduced range incl. q misrounding).
const SIN_POLY: [f32; 4] = [
    -0.166_666_66,
    0.008_333_269_5,
    -0.000_198_285_74,
    2.658_044_9e-6,
];
/// `cos(r) - 1 = r^2 * C(r^2)`, relative error 1.5e-9 on |r| <= 1.05.
const COS_POLY: [f32; 4] = [
    -0.499_999_97,
    0.041_666_407,
    -0.001_388_190_3,
    2.405_843_6e-5,
];

/// Float type, its same-width integer type, and whether it is a 4-lane vector.
#[derive(Clone, Copy)]
struct Ty {
    float: Type,
    int: Type,
    vector: bool,
}

impl Ty {
    /// Only f32 and 4 x f32 are supported: the only float vector width Cranelift lowers on x86-64.
    fn of(b: &FunctionBuilder, x: Value) -> Ty {
        match b.func.dfg.value_type(x) {
            types::F32 => Ty {
                float: types::F32,
                int: types::I32,
                vector: false,
            },
            types::F32X4 => Ty {
                float: types::F32X4,
                int: types::I32X4,
                vector: true,
            },
            other => panic!("cranegrad math: expected f32 or f32x4, got {other}"),
        }
    }

    /// Vector constants come from the constant pool: one load instead of a scalar constant plus a splat.
    fn f(self, b: &mut FunctionBuilder, v: f32) -> Value {
        if self.vector {
            vector_const(b, types::F32X4, v.to_le_bytes())
        } else {
            b.ins().f32const(v)
        }
    }

    /// Integer constant of the lane-matching integer type.
    fn i(self, b: &mut FunctionBuilder, v: i32) -> Value {
        if self.vector {
            vector_const(b, types::I32X4, v.to_le_bytes())
        } else {
            b.ins().iconst(types::I32, i64::from(v))
        }
    }

    /// Reinterprets float bits as integer (lane count unchanged, so no byte order is needed).
    fn to_int(self, b: &mut FunctionBuilder, v: Value) -> Value {
        b.ins().bitcast(self.int, MemFlagsData::new(), v)
    }

    /// Reinterprets integer bits as float.
    fn to_float(self, b: &mut FunctionBuilder, v: Value) -> Value {
        b.ins().bitcast(self.float, MemFlagsData::new(), v)
    }

    /// `cond ? t : f` for a compare result: `select` on a scalar flag, `bitselect` on a lane mask.
    fn select(self, b: &mut FunctionBuilder, cond: Value, t: Value, f: Value) -> Value {
        if self.vector {
            let ty = b.func.dfg.value_type(t);
            let mask = if b.func.dfg.value_type(cond) == ty {
                cond
            } else {
                b.ins().bitcast(ty, MemFlagsData::new(), cond)
            };
            b.ins().bitselect(mask, t, f)
        } else {
            b.ins().select(cond, t, f)
        }
    }

    /// `cond ? constant : v` for float values.
    fn select_const(self, b: &mut FunctionBuilder, cond: Value, t: f32, f: Value) -> Value {
        let t = self.f(b, t);
        self.select(b, cond, t, f)
    }

    /// Horner scheme with fma, highest coefficient last in `coeffs`: `c0 + x*(c1 + x*(...))`.
    fn horner(self, b: &mut FunctionBuilder, x: Value, coeffs: &[f32]) -> Value {
        let (last, rest) = coeffs.split_last().expect("non-empty polynomial");
        let mut acc = self.f(b, *last);
        for &c in rest.iter().rev() {
            let c = self.f(b, c);
            acc = b.ins().fma(acc, x, c);
        }
        acc
    }
}

/// How far back in the current block [`vector_const`] looks for the same constant: a few
/// unrolled vectors' exp2s (about 25 instructions each), past which a register held that long
/// would rather be a load again. Chosen, not measured.
const CONST_REUSE_WINDOW: usize = 256;

/// A vector of four `lane`s: the current block's recent load of it if there is one, so that
/// the unrolled vectors of a loop body (compiled without the optimiser, which would merge
/// them) share one load per constant.
fn vector_const(b: &mut FunctionBuilder, ty: Type, lane: [u8; 4]) -> Value {
    let bytes: Vec<u8> = (0..4).flat_map(|_| lane).collect();
    let c = b.func.dfg.constants.insert(ConstantData::from(bytes));
    let layout = &b.func.layout;
    let recent = b.current_block().and_then(|block| layout.last_inst(block));
    let found = std::iter::successors(recent, |&i| layout.prev_inst(i))
        .take(CONST_REUSE_WINDOW)
        .find(|&i| {
            matches!(b.func.dfg.insts[i], InstructionData::UnaryConst {
                opcode: Opcode::Vconst,
                constant_handle,
            } if constant_handle == c && b.func.dfg.ctrl_typevar(i) == ty)
        });
    match found {
        Some(i) => b.func.dfg.first_result(i),
        None => b.ins().vconst(ty, c),
    }
}

/// `cond ? t : f` for a float compare result, scalar or per lane.
pub(crate) fn select_float(b: &mut FunctionBuilder, cond: Value, t: Value, f: Value) -> Value {
    Ty::of(b, t).select(b, cond, t, f)
}

/// `x = n + f` for a clamped `x`: `t = x + magic` (whose low bits hold `n` plus the
/// offset of `magic` from [`ROUND_MAGIC`]) and `p = 2^f` by the minimax polynomial,
/// `|f| <= 0.5`. `magic` is [`ROUND_MAGIC`] plus a small integer: any such value rounds to
/// the nearest integer, a tie going to the `n` that makes `t` even (so an odd offset sends
/// ties the other way).
fn exp2_split(b: &mut FunctionBuilder, ty: Ty, x: Value, magic: f32) -> (Value, Value) {
    let magic = ty.f(b, magic);
    let t = b.ins().fadd(x, magic);
    let n_f = b.ins().fsub(t, magic);
    // Exact: |f| <= 0.5 and x has no bits below ulp(x) >= 2^-149.
    let f = b.ins().fsub(x, n_f);
    (t, exp2_poly(b, ty, f))
}

/// `2^x`; see the module table for accuracy and special values.
pub fn exp2(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = Ty::of(b, x);
    // Clamp to +-160 so that n fits the rounding trick and both half-scales stay normal;
    // the comparisons are false for NaN, which therefore passes through.
    let hi = ty.f(b, 160.0);
    // Written as `hi < x` so that the vector form lowers to one minps (which also keeps NaN).
    let gt = b.ins().fcmp(FloatCC::LessThan, hi, x);
    let x = ty.select(b, gt, hi, x);
    let lo = ty.f(b, -160.0);
    let lt = b.ins().fcmp(FloatCC::LessThan, x, lo);
    let x = ty.select(b, lt, lo, x);

    let (t, p) = exp2_split(b, ty, x, ROUND_MAGIC);

    // 2^n as two factors 2^n1 * 2^n2: each stays a normal float for n in [-160, 160], the
    // first product is exact and the second rounds once, giving correctly scaled subnormals
    // and overflow to +inf.
    let t_bits = ty.to_int(b, t);
    let magic_bits = ty.i(b, ROUND_MAGIC_BITS);
    let n = b.ins().isub(t_bits, magic_bits);
    let one_i = b.ins().iconst(types::I32, 1);
    let n1 = b.ins().sshr(n, one_i);
    let n2 = b.ins().isub(n, n1);
    let bias = ty.i(b, 127);
    let mantissa_bits = b.ins().iconst(types::I32, 23);
    let e1 = b.ins().iadd(n1, bias);
    let e1 = b.ins().ishl(e1, mantissa_bits);
    let s1 = ty.to_float(b, e1);
    let e2 = b.ins().iadd(n2, bias);
    let e2 = b.ins().ishl(e2, mantissa_bits);
    let s2 = ty.to_float(b, e2);
    let y = b.ins().fmul(p, s1);
    b.ins().fmul(y, s2)
}

/// `2^x` for `x <= 0` (or NaN): softmax weights `exp2(c * (x - max))`, whose argument the
/// caller knows is not positive (correct for any `x < 127.5` all the same). It skips the upper
/// clamp and scales by one power of two;
/// results from 2^-126.5 down (where `n = round(x)` is -127) are 0, an absolute error under
/// 1.2e-38 next to the row's largest weight of 1. Otherwise equal to [`exp2`] bit for bit,
/// except at half-integers, where `n` breaks the tie the other way (within 1 ulp).
pub fn exp2_nonpositive(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = Ty::of(b, x);
    // One maxps: `x < lo ? lo : x` keeps a NaN. Clamped at -127, n = -127 makes the scale's
    // exponent field 0, so the scale is +0 and the result 0 with no compare and select.
    let lo = ty.f(b, -127.0);
    let tiny = b.ins().fcmp(FloatCC::LessThan, x, lo);
    let x = ty.select(b, tiny, lo, x);
    // With the rounding constant offset by the exponent bias, t's bits are
    // ROUND_MAGIC_BITS + 127 + n; ROUND_MAGIC_BITS has 9 zero low bits, so shifting them into
    // the exponent field leaves exactly (n + 127) << 23 = 2^n, one shift for the scale.
    let (t, p) = exp2_split(b, ty, x, ROUND_MAGIC + 127.0);
    times_biased_scale(b, ty, t, p)
}

/// `p * 2^n` where `t`'s bits are `ROUND_MAGIC_BITS + 127 + n` (`t = v + ROUND_MAGIC + 127`
/// for `n = round(v)`), `n` in [-127, 0]: 2^n is one normal float, or +0 for -127.
fn times_biased_scale(b: &mut FunctionBuilder, ty: Ty, t: Value, p: Value) -> Value {
    let t_bits = ty.to_int(b, t);
    let mantissa_bits = b.ins().iconst(types::I32, 23);
    let e = b.ins().ishl(t_bits, mantissa_bits);
    let scale = ty.to_float(b, e);
    b.ins().fmul(p, scale)
}

/// `2^f` for `|f| <= 0.5` by the minimax polynomial: `1 + f * P(f)`.
fn exp2_poly(b: &mut FunctionBuilder, ty: Ty, f: Value) -> Value {
    let one = ty.f(b, 1.0);
    let p = ty.horner(b, f, &EXP2_POLY);
    b.ins().fma(p, f, one)
}

/// True when [`exp2_scaled_nonpositive`] takes `k` (the kernel pass `bound_exp2` asks too).
pub use cranegrad_lower::kernel::scaled_exp2_takes;

/// `2^(y * k)` for a constant `k` ([`scaled_exp2_takes`]) and `y * k <= 0` (or NaN): a softmax weight
/// `exp2((x - max) * log2 e)` with the product left to this function. `n = round(y * k)`
/// comes from one FMA with the rounding constant and `f = y * k - n` from another, so the
/// exact product is rounded once, in `f` (|error| <= 2^-26), where rounding `y * k` first
/// costs up to half an ulp of the product (2^-18 at -80: up to 44 ulp of the result); and it is
/// one FP operation fewer than the multiply, [`exp2_nonpositive`]'s clamp, rounding and
/// split. `y` is clamped at `-127 / k`: results from 2^-126.5 down are 0, as there.
pub fn exp2_scaled_nonpositive(b: &mut FunctionBuilder, y: Value, k: f32) -> Value {
    let ty = Ty::of(b, y);
    // One maxps, keeping a NaN; past the clamp n = -127 and the scale is +0.
    let lo = ty.f(b, (-127.0 / f64::from(k)) as f32);
    let tiny = b.ins().fcmp(FloatCC::LessThan, y, lo);
    let y = ty.select(b, tiny, lo, y);
    let kv = ty.f(b, k);
    // As in exp2_nonpositive, the bias in the rounding constant makes t's low bits the scale.
    let magic = ty.f(b, ROUND_MAGIC + 127.0);
    let t = b.ins().fma(y, kv, magic);
    let minus_n = b.ins().fsub(magic, t);
    let f = b.ins().fma(y, kv, minus_n);
    let p = exp2_poly(b, ty, f);
    times_biased_scale(b, ty, t, p)
}

/// `log2(x)`; see the module table for accuracy and special values.
pub fn log2(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = Ty::of(b, x);
    // Subnormals have no implicit leading 1: scale them into the normal range first.
    let min_pos = ty.f(b, f32::MIN_POSITIVE);
    let is_sub = b.ins().fcmp(FloatCC::LessThan, x, min_pos);
    let scale = ty.f(b, 8_388_608.0);
    let scaled = b.ins().fmul(x, scale);
    let xs = ty.select(b, is_sub, scaled, x);
    let zero_i = ty.i(b, 0);
    let minus_23 = ty.i(b, -23);
    let e_adj = ty.select(b, is_sub, minus_23, zero_i);

    let bits = ty.to_int(b, xs);
    let sqrt_half = ty.i(b, SQRT_HALF_BITS);
    let t = b.ins().isub(bits, sqrt_half);
    let shift = b.ins().iconst(types::I32, 23);
    let e = b.ins().sshr(t, shift);
    let e = b.ins().iadd(e, e_adj);
    let mant_mask = ty.i(b, 0x007F_FFFF);
    let m_bits = b.ins().band(t, mant_mask);
    let m_bits = b.ins().iadd(m_bits, sqrt_half);
    let m = ty.to_float(b, m_bits);
    let one = ty.f(b, 1.0);
    // Exact (Sterbenz), so values near 1 keep full relative accuracy.
    let r = b.ins().fsub(m, one);
    let e_f = b.ins().fcvt_from_sint(ty.float, e);
    // log2(m) = r*hi + (r*lo + r^2*Q(r)) rounds once at the end; adding e afterwards costs at
    // most half an ulp more, since |log2 m| <= 1/2 never has a larger ulp than e + log2 m.
    let r2 = b.ins().fmul(r, r);
    let q = ty.horner(b, r, &LOG2_POLY);
    let tail = b.ins().fmul(r2, q);
    let lo = ty.f(b, LOG2_E_LO);
    let tail = b.ins().fma(r, lo, tail);
    let hi = ty.f(b, LOG2_E_HI);
    let log2_m = b.ins().fma(r, hi, tail);
    let y = b.ins().fadd(log2_m, e_f);

    let inf = ty.f(b, f32::INFINITY);
    let is_inf = b.ins().fcmp(FloatCC::Equal, x, inf);
    let y = ty.select(b, is_inf, inf, y);
    let zero = ty.f(b, 0.0);
    let is_zero = b.ins().fcmp(FloatCC::Equal, x, zero);
    let y = ty.select_const(b, is_zero, f32::NEG_INFINITY, y);
    // Unordered-or-less-than: negative inputs and NaN.
    let is_nan = b.ins().fcmp(FloatCC::UnorderedOrLessThan, x, zero);
    ty.select_const(b, is_nan, f32::NAN, y)
}

/// `sin(x)`; see the module table for accuracy, range and special values.
pub fn sin(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = Ty::of(b, x);
    // Work on |x| and restore the sign at the end: sin is odd, and it keeps sin(-0) = -0.
    let ax = b.ins().fabs(x);
    // Out of range: |x|*0 is +0 for finite x and NaN for inf.
    let limit = ty.f(b, SIN_MAX_ACCURATE);
    let big = b.ins().fcmp(FloatCC::GreaterThan, ax, limit);
    let zero = ty.f(b, 0.0);
    let ax_zeroed = b.ins().fmul(ax, zero);
    let ax = ty.select(b, big, ax_zeroed, ax);

    // q = round(|x| * 2/pi), held in the low bits of t.
    let magic = ty.f(b, ROUND_MAGIC);
    let two_over_pi = ty.f(b, std::f32::consts::FRAC_2_PI);
    let t = b.ins().fma(ax, two_over_pi, magic);
    let q = b.ins().fsub(t, magic);
    let mut r = ax;
    for part in [PIO2_1, PIO2_2, PIO2_3] {
        let c = ty.f(b, -part);
        r = b.ins().fma(q, c, r);
    }

    let r2 = b.ins().fmul(r, r);
    let s = ty.horner(b, r2, &SIN_POLY);
    let r3 = b.ins().fmul(r, r2);
    let sin_r = b.ins().fma(r3, s, r);
    let c = ty.horner(b, r2, &COS_POLY);
    let one = ty.f(b, 1.0);
    let cos_r = b.ins().fma(r2, c, one);

    let q_bits = ty.to_int(b, t);
    let one_i = ty.i(b, 1);
    let q_low = b.ins().band(q_bits, one_i);
    let odd = b.ins().icmp(IntCC::Equal, q_low, one_i);
    let y = ty.select(b, odd, cos_r, sin_r);

    // Quadrants 2 and 3 negate; bit 1 of q moves to the sign bit and combines with x's sign.
    let thirty = b.ins().iconst(types::I32, 30);
    let q_sign = b.ins().ishl(q_bits, thirty);
    let x_bits = ty.to_int(b, x);
    let sign = b.ins().bxor(q_sign, x_bits);
    let sign_mask = ty.i(b, i32::MIN);
    let sign = b.ins().band(sign, sign_mask);
    let y_bits = ty.to_int(b, y);
    let y_bits = b.ins().bxor(y_bits, sign);
    ty.to_float(b, y_bits)
}

/// `sqrt(x)` (native instruction; correctly rounded), for symmetry with the other emitters.
pub fn sqrt(b: &mut FunctionBuilder, x: Value) -> Value {
    b.ins().sqrt(x)
}

/// `1 / x` as a true division (correctly rounded), for symmetry with the other emitters.
pub fn recip(b: &mut FunctionBuilder, x: Value) -> Value {
    let one = Ty::of(b, x).f(b, 1.0);
    b.ins().fdiv(one, x)
}
