//! The scalar meaning of the primitive ops, written once.
//!
//! Two things compute op results on the host: the reference interpreter, which is the oracle
//! every kernel test compares against, and constant folding, which replaces an op on constants
//! by its result before any kernel exists. If each wrote its own arithmetic they would drift
//! apart, and a folded graph would stop computing what the unfolded one does (the tests would
//! then compare the kernels against two different oracles). Both call these functions instead.
//!
//! The semantics are the kernels' (codegen's `scalar_ops` and `reduce`): f32 arithmetic in f32,
//! integer arithmetic wrapping, the kernels' conversions and NaN rules. Every value is an f64
//! holding exactly a value of its dtype: an f32, an i32, or 0/1 for bool.
//!
//! Two places keep more precision than the kernels on purpose: a sum accumulates in f64 and
//! rounds once (the exact sum that the kernels' f32 adds, in an order set by vectors and
//! threads, approximate), and the transcendental ops use the standard library's f32 functions
//! where the kernels use their own polynomials; kernel tests compare those within a tolerance.

use crate::dtype::DType;
use crate::op::{BinaryOp, ReduceOp, UnaryOp, binary_result_dtype};

/// `v` as `dtype` holds it, converted as the kernels convert constants and casts.
///
/// f32 rounds to nearest. i32 truncates toward zero, saturates and maps NaN to 0, which is
/// both Rust's `as` and Cranelift's `fcvt_to_sint_sat`. bool is `v != 0`, so 0.5 and NaN are
/// true: the kernels compare the unconverted value with zero.
pub fn round_to(dtype: DType, v: f64) -> f64 {
    match dtype {
        DType::F32 => f64::from(v as f32),
        DType::I32 => f64::from(v as i32),
        DType::Bool => f64::from(v != 0.0),
    }
}

/// A unary op on `x`, a value of the input's dtype, giving a value of `to`, the node's dtype.
///
/// A cast needs no source dtype: `x` already holds exactly a value of it, and every kernel
/// conversion (`fcvt_to_sint_sat`, `fcvt_from_sint`, `!= 0`) is [`round_to`] of that value.
pub fn eval_unary(op: UnaryOp, to: DType, x: f64) -> f64 {
    let xf = x as f32;
    let v = match op {
        UnaryOp::Neg if to.is_float() => -x,
        // `ineg` wraps: -i32::MIN is i32::MIN.
        UnaryOp::Neg => f64::from((x as i32).wrapping_neg()),
        UnaryOp::Exp2 => f64::from(xf.exp2()),
        UnaryOp::Log2 => f64::from(xf.log2()),
        UnaryOp::Sqrt => f64::from(xf.sqrt()),
        UnaryOp::Recip => f64::from(1.0 / xf),
        UnaryOp::Sin => f64::from(xf.sin()),
        UnaryOp::Cast => x,
    };
    round_to(to, v)
}

/// A binary op on two values of the operands' dtype `dtype` (`CmpLt` gives a bool 0/1).
///
/// f32 ops round once, like `fadd`/`fmul`; integer add and mul wrap, like `iadd`/`imul` (an
/// f64 product of two i32s is not exact past 2^53, so they are computed as i32). Max is
/// `a < b ? b : a`: a NaN `a` is kept and a NaN `b` is not, as one x86 `maxps` does. On bool
/// operands mul is `and` and max is `or`.
pub fn eval_binary(op: BinaryOp, dtype: DType, a: f64, b: f64) -> f64 {
    if dtype.is_float() {
        let (x, y) = (a as f32, b as f32);
        return match op {
            BinaryOp::Add => f64::from(x + y),
            BinaryOp::Mul => f64::from(x * y),
            BinaryOp::Max => f64::from(if x < y { y } else { x }),
            BinaryOp::CmpLt => f64::from(x < y),
        };
    }
    let (x, y) = (a as i32, b as i32);
    let v = match op {
        BinaryOp::Add => x.wrapping_add(y),
        BinaryOp::Mul => x.wrapping_mul(y),
        BinaryOp::Max => {
            if x < y {
                y
            } else {
                x
            }
        }
        BinaryOp::CmpLt => i32::from(x < y),
    };
    round_to(binary_result_dtype(op, dtype), f64::from(v))
}

/// `cond ? a : b`, where any non-zero condition word is true (the kernels test `!= 0`).
pub fn eval_where(cond: f64, a: f64, b: f64) -> f64 {
    if cond != 0.0 { a } else { b }
}

/// Element `index` (along the arange's axis) of an arange of `dtype`.
///
/// The kernels compute the index as an i32 and cast it, so an f32 arange rounds past 2^24 and
/// a bool one is 0 then 1s.
pub fn eval_arange(dtype: DType, index: usize) -> f64 {
    round_to(dtype, index as f64)
}

/// The reduction of `items` (values of `dtype`), as `dtype` holds it.
///
/// An empty axis gives the kernels' starting value: 0 for sums, -inf for f32 maxes and
/// `i32::MIN` for integer ones. f32 sums accumulate in f64 and round once at the end; integer
/// sums wrap like `iadd`. An f32 max is NaN when any item is (the kernels' NaN-propagating
/// reduce, unlike the binary max) and otherwise keeps the earlier of equal items, so -0 before
/// 0 stays -0.
pub fn eval_reduce(op: ReduceOp, dtype: DType, items: impl IntoIterator<Item = f64>) -> f64 {
    let start = match (op, dtype.is_float()) {
        (ReduceOp::Sum, _) => 0.0,
        (ReduceOp::Max, true) => f64::NEG_INFINITY,
        (ReduceOp::Max, false) => f64::from(i32::MIN),
    };
    let acc = items.into_iter().fold(start, |acc, x| match op {
        ReduceOp::Sum if dtype.is_float() => acc + x,
        ReduceOp::Sum => f64::from((acc as i32).wrapping_add(x as i32)),
        ReduceOp::Max if x.is_nan() => x,
        // A NaN accumulator is kept: `NaN < x` is false.
        ReduceOp::Max => {
            if acc < x {
                x
            } else {
                acc
            }
        }
    });
    round_to(dtype, acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compares bit patterns, so a NaN equals a NaN and -0 differs from 0.
    fn same(got: f64, want: f64) -> bool {
        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan())
    }

    #[track_caller]
    fn assert_same(got: f64, want: f64) {
        assert!(same(got, want), "got {got:?}, want {want:?}");
    }

    #[test]
    fn round_to_f32_rounds_to_nearest() {
        assert_same(round_to(DType::F32, 0.1), f64::from(0.1f32));
        // 2^24 + 1 lies halfway between two f32s; ties go to the even one.
        assert_same(round_to(DType::F32, 16_777_217.0), 16_777_216.0);
        assert_same(round_to(DType::F32, 1e300), f64::INFINITY);
        assert_same(round_to(DType::F32, -0.0), -0.0);
    }

    #[test]
    fn round_to_i32_truncates_saturates_and_zeroes_nan() {
        assert_same(round_to(DType::I32, 2.7), 2.0);
        assert_same(round_to(DType::I32, -2.7), -2.0);
        // Saturation, not wrapping: a wrapped 3e9 would be -1294967296.
        assert_same(round_to(DType::I32, 3e9), f64::from(i32::MAX));
        assert_same(round_to(DType::I32, -3e9), f64::from(i32::MIN));
        assert_same(round_to(DType::I32, f64::INFINITY), f64::from(i32::MAX));
        assert_same(round_to(DType::I32, f64::NEG_INFINITY), f64::from(i32::MIN));
        assert_same(round_to(DType::I32, f64::NAN), 0.0);
    }

    #[test]
    fn round_to_bool_tests_the_unconverted_value() {
        for (v, want) in [
            (0.5, 1.0),
            (-0.5, 1.0),
            (1e-300, 1.0),
            (f64::NAN, 1.0),
            (0.0, 0.0),
            (-0.0, 0.0),
        ] {
            assert_same(round_to(DType::Bool, v), want);
        }
    }

    #[test]
    fn cast_needs_only_the_target_dtype() {
        assert_same(eval_unary(UnaryOp::Cast, DType::I32, 2.9), 2.0);
        assert_same(eval_unary(UnaryOp::Cast, DType::I32, f64::NAN), 0.0);
        assert_same(
            eval_unary(UnaryOp::Cast, DType::I32, 1e10),
            f64::from(i32::MAX),
        );
        assert_same(eval_unary(UnaryOp::Cast, DType::Bool, 0.25), 1.0);
        assert_same(eval_unary(UnaryOp::Cast, DType::Bool, -7.0), 1.0);
        assert_same(
            eval_unary(UnaryOp::Cast, DType::F32, 16_777_217.0),
            16_777_216.0,
        );
        assert_same(eval_unary(UnaryOp::Cast, DType::F32, 1.0), 1.0);
        assert_same(eval_unary(UnaryOp::Cast, DType::I32, 1.0), 1.0);
    }

    #[test]
    fn neg_is_exact_for_f32_and_wraps_for_i32() {
        assert_same(eval_unary(UnaryOp::Neg, DType::F32, 0.0), -0.0);
        assert_same(eval_unary(UnaryOp::Neg, DType::F32, 1.5), -1.5);
        assert_same(eval_unary(UnaryOp::Neg, DType::I32, 5.0), -5.0);
        assert_same(
            eval_unary(UnaryOp::Neg, DType::I32, f64::from(i32::MIN)),
            f64::from(i32::MIN),
        );
    }

    #[test]
    fn transcendentals_compute_in_f32() {
        let x = 0.1f32;
        let xd = f64::from(x);
        assert_same(
            eval_unary(UnaryOp::Exp2, DType::F32, xd),
            f64::from(x.exp2()),
        );
        assert_same(
            eval_unary(UnaryOp::Log2, DType::F32, xd),
            f64::from(x.log2()),
        );
        assert_same(
            eval_unary(UnaryOp::Sqrt, DType::F32, xd),
            f64::from(x.sqrt()),
        );
        assert_same(eval_unary(UnaryOp::Sin, DType::F32, xd), f64::from(x.sin()));
        // An f64 quotient left unrounded would differ from the f32 one in its low bits.
        assert_same(
            eval_unary(UnaryOp::Recip, DType::F32, 3.0),
            f64::from(1.0f32 / 3.0),
        );
        assert_same(eval_unary(UnaryOp::Recip, DType::F32, 0.0), f64::INFINITY);
        assert_same(
            eval_unary(UnaryOp::Recip, DType::F32, -0.0),
            f64::NEG_INFINITY,
        );
        assert!(eval_unary(UnaryOp::Sqrt, DType::F32, -1.0).is_nan());
        assert_same(
            eval_unary(UnaryOp::Log2, DType::F32, 0.0),
            f64::NEG_INFINITY,
        );
        // An f64 argument is rounded to f32 first: exp2 of 1e-9 in f32 is exactly 1.
        assert_same(eval_unary(UnaryOp::Exp2, DType::F32, 1e-9), 1.0);
    }

    #[test]
    fn f32_binary_ops_round_once() {
        let (a, b) = (f64::from(0.1f32), f64::from(0.2f32));
        assert_same(
            eval_binary(BinaryOp::Add, DType::F32, a, b),
            f64::from(0.1f32 + 0.2f32),
        );
        assert_same(
            eval_binary(BinaryOp::Mul, DType::F32, a, b),
            f64::from(0.1f32 * 0.2f32),
        );
        assert_same(
            eval_binary(BinaryOp::Mul, DType::F32, f64::from(f32::MAX), 2.0),
            f64::INFINITY,
        );
        assert_same(eval_binary(BinaryOp::Add, DType::F32, -0.0, 0.0), 0.0);
    }

    #[test]
    fn max_keeps_a_nan_in_a_but_not_in_b() {
        let nan = f64::NAN;
        assert!(eval_binary(BinaryOp::Max, DType::F32, nan, 1.0).is_nan());
        assert_same(eval_binary(BinaryOp::Max, DType::F32, 1.0, nan), 1.0);
        assert_same(eval_binary(BinaryOp::Max, DType::F32, 1.0, 2.0), 2.0);
        assert_same(eval_binary(BinaryOp::Max, DType::F32, 2.0, 1.0), 2.0);
        // Equal values return `a`: the sign of a zero comes from the left operand.
        assert_same(eval_binary(BinaryOp::Max, DType::F32, -0.0, 0.0), -0.0);
        assert_same(eval_binary(BinaryOp::Max, DType::F32, 0.0, -0.0), 0.0);
        assert_same(eval_binary(BinaryOp::Max, DType::I32, -3.0, 2.0), 2.0);
    }

    #[test]
    fn cmplt_is_false_on_nan_and_gives_bool() {
        assert_same(eval_binary(BinaryOp::CmpLt, DType::F32, 1.0, 2.0), 1.0);
        assert_same(eval_binary(BinaryOp::CmpLt, DType::F32, 2.0, 1.0), 0.0);
        assert_same(eval_binary(BinaryOp::CmpLt, DType::F32, 1.0, 1.0), 0.0);
        assert_same(eval_binary(BinaryOp::CmpLt, DType::F32, f64::NAN, 1.0), 0.0);
        assert_same(eval_binary(BinaryOp::CmpLt, DType::F32, 1.0, f64::NAN), 0.0);
        assert_same(eval_binary(BinaryOp::CmpLt, DType::I32, -1.0, 0.0), 1.0);
    }

    #[test]
    fn i32_add_and_mul_wrap_like_the_kernels() {
        let max = f64::from(i32::MAX);
        assert_same(
            eval_binary(BinaryOp::Add, DType::I32, max, 1.0),
            f64::from(i32::MIN),
        );
        // (2^31 - 1)^2 = 2^62 - 2^32 + 1: low word 1. In f64 the product rounds to a multiple
        // of 1024 and would wrap to 0.
        assert_same(eval_binary(BinaryOp::Mul, DType::I32, max, max), 1.0);
        assert_same(
            eval_binary(BinaryOp::Mul, DType::I32, 65_536.0, 65_536.0),
            0.0,
        );
    }

    #[test]
    fn bool_mul_is_and_and_max_is_or() {
        for a in [0.0, 1.0] {
            for b in [0.0, 1.0] {
                let and = f64::from(a != 0.0 && b != 0.0);
                let or = f64::from(a != 0.0 || b != 0.0);
                assert_same(eval_binary(BinaryOp::Mul, DType::Bool, a, b), and);
                assert_same(eval_binary(BinaryOp::Max, DType::Bool, a, b), or);
            }
        }
    }

    #[test]
    fn where_treats_any_nonzero_condition_as_true() {
        assert_same(eval_where(1.0, 3.0, 4.0), 3.0);
        assert_same(eval_where(0.0, 3.0, 4.0), 4.0);
        assert_same(eval_where(-0.0, 3.0, 4.0), 4.0);
        assert_same(eval_where(2.0, 3.0, 4.0), 3.0);
    }

    #[test]
    fn arange_converts_its_index_like_a_cast() {
        assert_same(eval_arange(DType::I32, 7), 7.0);
        assert_same(eval_arange(DType::F32, 16_777_217), 16_777_216.0);
        assert_same(eval_arange(DType::Bool, 0), 0.0);
        assert_same(eval_arange(DType::Bool, 2), 1.0);
    }

    #[test]
    fn sums_accumulate_in_f64_and_round_once() {
        // 1 + 2^-24 + 2^-24 in f32 steps stays 1 (each add rounds back); exactly it is
        // 1 + 2^-23, an f32.
        let tiny = 2f64.powi(-24);
        assert_same(
            eval_reduce(ReduceOp::Sum, DType::F32, [1.0, tiny, tiny]),
            1.0 + 2f64.powi(-23),
        );
        assert_same(eval_reduce(ReduceOp::Sum, DType::F32, []), 0.0);
    }

    #[test]
    fn integer_sums_wrap() {
        let max = f64::from(i32::MAX);
        assert_same(
            eval_reduce(ReduceOp::Sum, DType::I32, [max, 1.0]),
            f64::from(i32::MIN),
        );
        // Wrapping is modular, so overflowing and coming back gives the exact total.
        assert_same(
            eval_reduce(ReduceOp::Sum, DType::I32, [max, 1.0, -1.0]),
            max,
        );
    }

    #[test]
    fn reduce_max_propagates_nan_from_any_item() {
        let nan = f64::NAN;
        assert!(eval_reduce(ReduceOp::Max, DType::F32, [nan, 1.0]).is_nan());
        assert!(eval_reduce(ReduceOp::Max, DType::F32, [1.0, nan]).is_nan());
        assert!(eval_reduce(ReduceOp::Max, DType::F32, [1.0, nan, 5.0]).is_nan());
        assert_same(eval_reduce(ReduceOp::Max, DType::F32, [1.0, 5.0, 2.0]), 5.0);
        assert_same(eval_reduce(ReduceOp::Max, DType::F32, [-0.0, 0.0]), -0.0);
        assert_same(eval_reduce(ReduceOp::Max, DType::F32, [0.0, -0.0]), 0.0);
    }

    #[test]
    fn empty_reductions_give_the_kernels_identity() {
        assert_same(
            eval_reduce(ReduceOp::Max, DType::F32, []),
            f64::NEG_INFINITY,
        );
        assert_same(
            eval_reduce(ReduceOp::Max, DType::I32, []),
            f64::from(i32::MIN),
        );
        assert_same(eval_reduce(ReduceOp::Sum, DType::I32, []), 0.0);
        assert_same(
            eval_reduce(ReduceOp::Max, DType::I32, [f64::from(i32::MIN), -4.0]),
            -4.0,
        );
    }
}
