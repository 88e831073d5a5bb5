//! The elementwise ops of the kernel IR on Cranelift values, scalar or 4 lanes wide; the
//! transcendental ones call `crate::math`.

use cranelift_codegen::ir::{InstBuilder, Value, condcodes::FloatCC, condcodes::IntCC, types};
use cranelift_frontend::FunctionBuilder;

use cranegrad_graph::{BinaryOp, DType, UnaryOp};

use crate::emit::{Val, vflags};
use crate::math;

/// An elementwise unary op on a scalar or vector value.
pub(crate) fn unary(b: &mut FunctionBuilder, op: UnaryOp, input: DType, out: DType, x: Val) -> Val {
    let v = x.v;
    let vector = x.vector;
    let r = match op {
        UnaryOp::Neg if input == DType::F32 => b.ins().fneg(v),
        UnaryOp::Neg => b.ins().ineg(v),
        UnaryOp::Exp2 => math::exp2(b, v),
        UnaryOp::Log2 => math::log2(b, v),
        UnaryOp::Sin => math::sin(b, v),
        UnaryOp::Sqrt => b.ins().sqrt(v),
        UnaryOp::Recip => {
            let one = b.ins().f32const(1.0);
            let one = if vector {
                b.ins().splat(types::F32X4, one)
            } else {
                one
            };
            b.ins().fdiv(one, v)
        }
        UnaryOp::Cast => return cast(b, input, out, x),
    };
    Val { v: r, vector }
}

/// A dtype conversion (f32 -> i32 truncates toward zero; bool is 0 or 1).
fn cast(b: &mut FunctionBuilder, from: DType, to: DType, x: Val) -> Val {
    let (v, vector) = (x.v, x.vector);
    let ity = if vector { types::I32X4 } else { types::I32 };
    let r = match (from, to) {
        (DType::F32, DType::I32) => b.ins().fcvt_to_sint_sat(ity, v),
        (DType::I32 | DType::Bool, DType::F32) => {
            let fty = if vector { types::F32X4 } else { types::F32 };
            b.ins().fcvt_from_sint(fty, v)
        }
        (DType::Bool, DType::I32) => v,
        (DType::F32 | DType::I32, DType::Bool) => {
            let m = if from == DType::F32 {
                let z = b.ins().f32const(0.0);
                let z = if vector {
                    b.ins().splat(types::F32X4, z)
                } else {
                    z
                };
                b.ins().fcmp(FloatCC::NotEqual, v, z)
            } else {
                let z = b.ins().iconst(types::I32, 0);
                let z = if vector {
                    b.ins().splat(types::I32X4, z)
                } else {
                    z
                };
                b.ins().icmp(IntCC::NotEqual, v, z)
            };
            bool_from_mask(b, m, vector)
        }
        _ => v,
    };
    Val { v: r, vector }
}

/// An elementwise binary op on scalar or vector values (`input` is the operands' dtype).
pub(crate) fn binary(b: &mut FunctionBuilder, op: BinaryOp, input: DType, x: Val, y: Val) -> Val {
    let vector = x.vector;
    let (a, c) = (x.v, y.v);
    let float = input == DType::F32;
    let r = match op {
        BinaryOp::Add if float => b.ins().fadd(a, c),
        BinaryOp::Add => b.ins().iadd(a, c),
        BinaryOp::Mul if float => b.ins().fmul(a, c),
        BinaryOp::Mul => b.ins().imul(a, c),
        // A NaN in `a` (the data in relu) propagates.
        BinaryOp::Max if float => float_max(b, a, c),
        BinaryOp::Max => {
            let gt = b.ins().icmp(IntCC::SignedGreaterThan, a, c);
            if vector {
                b.ins().bitselect(gt, a, c)
            } else {
                b.ins().select(gt, a, c)
            }
        }
        BinaryOp::CmpLt => {
            let m = if float {
                b.ins().fcmp(FloatCC::LessThan, a, c)
            } else {
                b.ins().icmp(IntCC::SignedLessThan, a, c)
            };
            bool_from_mask(b, m, vector)
        }
    };
    Val { v: r, vector }
}

/// `a < b ? b : a` on f32 values or vectors: one maxps/maxss. A NaN `a` is kept; a NaN `b`
/// is not.
pub(crate) fn float_max(b: &mut FunctionBuilder, a: Value, c: Value) -> Value {
    let lt = b.ins().fcmp(FloatCC::LessThan, a, c);
    math::select_float(b, lt, c, a)
}

/// A compare's result as 0 or 1 (i32, per lane): a vector mask (all ones; a float one
/// reinterpreted) masked to its low bit, a scalar flag widened.
fn bool_from_mask(b: &mut FunctionBuilder, m: Value, vector: bool) -> Value {
    if vector {
        let m = if b.func.dfg.value_type(m) == types::F32X4 {
            b.ins().bitcast(types::I32X4, vflags(), m)
        } else {
            m
        };
        let one = b.ins().iconst(types::I32, 1);
        let one = b.ins().splat(types::I32X4, one);
        b.ins().band(m, one)
    } else {
        b.ins().uextend(types::I32, m)
    }
}
