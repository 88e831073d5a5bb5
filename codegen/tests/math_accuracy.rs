//! Accuracy of the `math` emitters, JIT-compiled through `isa::host_isa` into a kernel that runs
//! F32X4 over an array with a scalar tail, against Rust's f64 functions rounded to f32.
//!
//! The bounds asserted here are the ones documented in `src/math.rs`. The default tests sweep every
//! 97th f32 bit pattern plus special values (a few seconds in release); the `#[ignore]`d ones are
//! exhaustive and produced the table: `cargo test -p cranegrad-codegen --release -- --ignored`.

use cranegrad_codegen::isa::{self, OptLevel};
use cranegrad_codegen::math;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, Value, types};
use cranelift_codegen::settings::Configurable;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::JITModule;
use cranelift_module::{Linkage, Module};

type Emitter = fn(&mut FunctionBuilder, Value) -> Value;

/// The host ISA with the IR verifier on: release test runs must verify every function too, and
/// forcing before every build keeps fingerprints equal whichever test thread runs first.
fn host_isa(opt: OptLevel) -> cranelift_codegen::isa::OwnedTargetIsa {
    isa::force_verifier();
    isa::host_isa(opt).expect("host ISA")
}
type KernelFn = unsafe extern "C" fn(*const f32, *mut f32, i64);

/// Max ulp error of exp2 over all f32 inputs (incl. subnormal results).
const EXP2_MAX_ULP: f64 = 1.0;
/// Max ulp error of log2 over all positive f32 inputs.
const LOG2_MAX_ULP: f64 = 1.0;
/// Max absolute error of sin for |x| <= 1e5.
const SIN_MAX_ABS: f64 = 7.5e-8;
/// Max ulp error of sin for |x| <= 1e5 where |sin x| >= 2^-10.
const SIN_MAX_ULP: f64 = 1.5;
/// Max absolute error of sin for 1e5 < |x| <= SIN_MAX_ACCURATE.
const SIN_FAR_MAX_ABS: f64 = 8.0e-8;
/// Max ulp error of sin for 1e5 < |x| <= SIN_MAX_ACCURATE where |sin x| >= 2^-10.
const SIN_FAR_MAX_ULP: f64 = 2.5;

/// A compiled `dst[i] = op(src[i])` kernel; owns the JIT module that holds its code.
struct Kernel {
    _module: JITModule,
    f: KernelFn,
}

impl Kernel {
    fn compile(op: Emitter, opt: OptLevel) -> Kernel {
        let isa = host_isa(opt);
        assert!(
            isa.isa_flags()
                .iter()
                .any(|v| v.name == "has_fma" && v.as_bool() == Some(true)),
            "host ISA must have FMA enabled"
        );
        let ptr = isa.pointer_type();
        let flags = isa.flags().clone();
        let frontend = isa.frontend_config();
        let mut module = isa::new_jit_module(isa);
        let mut ctx = module.make_context();
        ctx.func.signature.params.push(AbiParam::new(ptr));
        ctx.func.signature.params.push(AbiParam::new(ptr));
        ctx.func.signature.params.push(AbiParam::new(types::I64));
        let mut fctx = FunctionBuilderContext::new();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let entry = b.create_block();
            let vhead = b.create_block();
            let vbody = b.create_block();
            let shead = b.create_block();
            let sbody = b.create_block();
            let exit = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.append_block_param(vhead, types::I64);
            b.append_block_param(shead, types::I64);
            let mem = MemFlagsData::new().with_notrap();

            b.switch_to_block(entry);
            let (src, dst, n) = {
                let p = b.block_params(entry);
                (p[0], p[1], p[2])
            };
            let zero = b.ins().iconst(types::I64, 0);
            b.ins().jump(vhead, &[zero.into()]);

            // for (; i + 4 <= n; i += 4) 4 lanes at a time
            b.switch_to_block(vhead);
            let i = b.block_params(vhead)[0];
            let i4 = b.ins().iadd_imm_s(i, 4);
            let more = b.ins().icmp(IntCC::SignedLessThanOrEqual, i4, n);
            b.ins().brif(more, vbody, &[], shead, &[i.into()]);

            b.switch_to_block(vbody);
            let off = b.ins().ishl_imm_u(i, 2);
            let ps = b.ins().iadd(src, off);
            let pd = b.ins().iadd(dst, off);
            let v = b.ins().load(types::F32X4, mem, ps, 0);
            let r = op(&mut b, v);
            b.ins().store(mem, r, pd, 0);
            b.ins().jump(vhead, &[i4.into()]);

            // scalar tail
            b.switch_to_block(shead);
            let j = b.block_params(shead)[0];
            let more = b.ins().icmp(IntCC::SignedLessThan, j, n);
            b.ins().brif(more, sbody, &[], exit, &[]);

            b.switch_to_block(sbody);
            let off = b.ins().ishl_imm_u(j, 2);
            let ps = b.ins().iadd(src, off);
            let pd = b.ins().iadd(dst, off);
            let v = b.ins().load(types::F32, mem, ps, 0);
            let r = op(&mut b, v);
            b.ins().store(mem, r, pd, 0);
            let j1 = b.ins().iadd_imm_s(j, 1);
            b.ins().jump(shead, &[j1.into()]);

            b.switch_to_block(exit);
            b.ins().return_(&[]);
            b.seal_all_blocks();
            b.finalize(frontend);
        }
        // Release test builds switch Cranelift's verifier off; the IR must be valid regardless.
        cranelift_codegen::verify_function(&ctx.func, &flags).expect("IR verifies");
        let id = module
            .declare_function("kernel", Linkage::Local, &ctx.func.signature)
            .expect("declare");
        module.define_function(id, &mut ctx).expect("compile");
        module.clear_context(&mut ctx);
        module.finalize_definitions().expect("finalize");
        let code = module.get_finalized_function(id);
        // SAFETY: the function was built with exactly this signature (two pointers and an i64).
        let f = unsafe { std::mem::transmute::<*const u8, KernelFn>(code) };
        Kernel { _module: module, f }
    }

    /// Runs the vector body (plus a tail if `src.len() % 4 != 0`).
    fn run(&self, src: &[f32], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len());
        // SAFETY: both slices hold `len` f32s; the kernel touches exactly indices 0..len.
        unsafe { (self.f)(src.as_ptr(), dst.as_mut_ptr(), src.len() as i64) }
    }

    /// Runs only the scalar tail, by calling with at most 3 elements at a time.
    fn run_scalar(&self, src: &[f32], dst: &mut [f32]) {
        for (s, d) in src.chunks(3).zip(dst.chunks_mut(3)) {
            self.run(s, d);
        }
    }
}

/// The three compiled forms of one op whose results must agree bit for bit.
struct Op {
    speed: Kernel,
    none: Kernel,
}

impl Op {
    fn new(op: Emitter) -> Op {
        Op {
            speed: Kernel::compile(op, OptLevel::Speed),
            none: Kernel::compile(op, OptLevel::None),
        }
    }

    /// Vector result, after checking that the scalar path and opt_level=none agree bit for bit.
    fn eval(&self, src: &[f32]) -> Vec<f32> {
        let mut vec = vec![0.0; src.len()];
        let mut scalar = vec![0.0; src.len()];
        let mut none = vec![0.0; src.len()];
        self.speed.run(src, &mut vec);
        self.speed.run_scalar(src, &mut scalar);
        self.none.run(src, &mut none);
        for i in 0..src.len() {
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            assert!(
                same(vec[i], scalar[i]),
                "x = {:e} ({:#010x}): vector {:e} != scalar {:e}",
                src[i],
                src[i].to_bits(),
                vec[i],
                scalar[i]
            );
            assert!(
                same(vec[i], none[i]),
                "x = {:e}: opt_level speed {:e} != none {:e}",
                src[i],
                vec[i],
                none[i]
            );
        }
        vec
    }
}

/// Error of `got` in units of the f32 spacing at the exact result `want` (subnormal spacing is 2^-149).
fn ulp_error(got: f32, want: f64) -> f64 {
    if got.is_infinite() && got == want as f32 {
        return 0.0;
    }
    let got = if got.is_infinite() {
        f64::from(got.signum()) * 2f64.powi(128)
    } else {
        f64::from(got)
    };
    let a = want.abs();
    let exp = if a == 0.0 {
        -126
    } else {
        (a.log2().floor() as i32).clamp(-126, 127)
    };
    (got - want).abs() / 2f64.powi(exp - 23)
}

const SPECIALS: [f32; 14] = [
    0.0,
    -0.0,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    -f32::NAN,
    f32::from_bits(1),
    f32::from_bits(0x007F_FFFF),
    f32::MIN_POSITIVE,
    f32::MAX,
    -f32::from_bits(1),
    -f32::MIN_POSITIVE,
    -f32::MAX,
    1.0,
];

/// Every `stride`-th bit pattern starting at `start` (up to u32::MAX), plus the special values.
fn bit_sweep(start: u32, stride: usize) -> impl Iterator<Item = f32> {
    SPECIALS
        .into_iter()
        .chain((start..=u32::MAX).step_by(stride).map(f32::from_bits))
}

/// Worst error seen, with the input that produced it (for the failure message).
#[derive(Default, Debug)]
struct Worst {
    err: f64,
    x: f32,
    got: f32,
    want: f64,
}

impl Worst {
    fn add(&mut self, err: f64, x: f32, got: f32, want: f64) {
        if err > self.err || err.is_nan() {
            *self = Worst { err, x, got, want };
        }
    }
}

/// Applies `op` in chunks and calls `check(x, got)` for every input.
fn for_each_result(op: &Op, inputs: impl Iterator<Item = f32>, mut check: impl FnMut(f32, f32)) {
    let mut chunk = Vec::with_capacity(1 << 20);
    let mut inputs = inputs.peekable();
    while inputs.peek().is_some() {
        chunk.clear();
        chunk.extend(inputs.by_ref().take(1 << 20));
        let out = op.eval(&chunk);
        for (&x, &y) in chunk.iter().zip(&out) {
            check(x, y);
        }
    }
}

fn check_exp2(inputs: impl Iterator<Item = f32>) -> Worst {
    let op = Op::new(math::exp2);
    let mut worst = Worst::default();
    for_each_result(&op, inputs, |x, got| {
        let want = f64::from(x).exp2();
        if x.is_nan() {
            assert!(got.is_nan(), "exp2(NaN) = {got}");
            return;
        }
        let want32 = want as f32;
        if want32.is_infinite() || want32 == 0.0 {
            // Overflow and underflow must be exact (+inf, +0), also at the thresholds.
            assert_eq!(
                got.to_bits(),
                want32.to_bits(),
                "exp2({x:e}) = {got:e}, want {want32:e}"
            );
        }
        worst.add(ulp_error(got, want), x, got, want);
    });
    worst
}

fn check_log2(inputs: impl Iterator<Item = f32>) -> Worst {
    let op = Op::new(math::log2);
    let mut worst = Worst::default();
    for_each_result(&op, inputs, |x, got| {
        if x.is_nan() || x < 0.0 {
            assert!(got.is_nan(), "log2({x:e}) = {got:e}, want NaN");
            return;
        }
        if x == 0.0 || x == f32::INFINITY {
            let want = if x == 0.0 {
                f32::NEG_INFINITY
            } else {
                f32::INFINITY
            };
            assert_eq!(got, want, "log2({x:e})");
            return;
        }
        let want = f64::from(x).log2();
        worst.add(ulp_error(got, want), x, got, want);
    });
    worst
}

/// Worst abs error and ulp error (where |sin| >= 2^-10) of sin, per band of |x|.
#[derive(Default, Debug)]
struct SinWorst {
    /// |x| <= 1e5.
    near_abs: Worst,
    near_ulp: Worst,
    /// 1e5 < |x| <= SIN_MAX_ACCURATE.
    far_abs: Worst,
    far_ulp: Worst,
}

impl SinWorst {
    fn assert_bounds(&self) {
        println!("sin worst: {self:#?}");
        assert!(
            self.near_abs.err <= SIN_MAX_ABS,
            "sin abs error, |x| <= 1e5: {:?}",
            self.near_abs
        );
        assert!(
            self.near_ulp.err <= SIN_MAX_ULP,
            "sin ulp error, |x| <= 1e5: {:?}",
            self.near_ulp
        );
        assert!(
            self.far_abs.err <= SIN_FAR_MAX_ABS,
            "sin abs error, |x| > 1e5: {:?}",
            self.far_abs
        );
        assert!(
            self.far_ulp.err <= SIN_FAR_MAX_ULP,
            "sin ulp error, |x| > 1e5: {:?}",
            self.far_ulp
        );
    }
}

/// Checks sin against f64; beyond SIN_MAX_ACCURATE only that the result is finite and in [-1, 1].
fn check_sin(inputs: impl Iterator<Item = f32>) -> SinWorst {
    let op = Op::new(math::sin);
    let mut w = SinWorst::default();
    for_each_result(&op, inputs, |x, got| {
        if !x.is_finite() {
            assert!(got.is_nan(), "sin({x:e}) = {got:e}, want NaN");
            return;
        }
        assert!(
            got.is_finite() && got.abs() <= 1.0,
            "sin({x:e}) = {got:e} not in [-1, 1]"
        );
        if x.abs() > math::SIN_MAX_ACCURATE {
            return;
        }
        let want = f64::from(x).sin();
        let (abs, ulp) = if x.abs() <= 1e5 {
            (&mut w.near_abs, &mut w.near_ulp)
        } else {
            (&mut w.far_abs, &mut w.far_ulp)
        };
        abs.add((f64::from(got) - want).abs(), x, got, want);
        if want.abs() >= 2f64.powi(-10) {
            ulp.add(ulp_error(got, want), x, got, want);
        }
    });
    w
}

#[test]
fn exp2_sweep() {
    let worst = check_exp2(
        bit_sweep(0, 97).chain(
            // Every input around the overflow / underflow / subnormal thresholds.
            [128.0f32, -126.0, -149.0, -150.0]
                .into_iter()
                .flat_map(|t| {
                    (-20_000..20_000)
                        .map(move |k| f32::from_bits(t.to_bits().wrapping_add_signed(k)))
                }),
        ),
    );
    println!("exp2 worst: {worst:?}");
    assert!(worst.err <= EXP2_MAX_ULP, "exp2 error too large: {worst:?}");
}

#[test]
fn exp2_special_values() {
    let op = Op::new(math::exp2);
    let x = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        128.0,
        -150.0,
        -149.0,
        1.0,
        -1.0,
        10.0,
    ];
    let y = op.eval(&x);
    assert_eq!(y[0].to_bits(), 1f32.to_bits());
    assert_eq!(y[1].to_bits(), 1f32.to_bits());
    assert_eq!(y[2], f32::INFINITY);
    assert_eq!(y[3].to_bits(), 0);
    assert!(y[4].is_nan());
    assert_eq!(y[5], f32::INFINITY);
    assert_eq!(y[6].to_bits(), 0);
    assert_eq!(y[7].to_bits(), 1);
    assert_eq!(y[8], 2.0);
    assert_eq!(y[9], 0.5);
    assert_eq!(y[10], 1024.0);
}

/// `2^(y * k)` for the three `k` the tests use: a plain softmax's log2 e, a scaled one's
/// (1/8, as attention with 64-wide heads) and a large one.
const SCALES: [f32; 3] = [
    std::f32::consts::LOG2_E,
    std::f32::consts::LOG2_E / 8.0,
    3.0 * std::f32::consts::LOG2_E,
];

fn exp2_scaled_0(b: &mut FunctionBuilder, y: Value) -> Value {
    math::exp2_scaled_nonpositive(b, y, SCALES[0])
}

fn exp2_scaled_1(b: &mut FunctionBuilder, y: Value) -> Value {
    math::exp2_scaled_nonpositive(b, y, SCALES[1])
}

fn exp2_scaled_2(b: &mut FunctionBuilder, y: Value) -> Value {
    math::exp2_scaled_nonpositive(b, y, SCALES[2])
}

#[test]
fn exp2_scaled_nonpositive_is_within_an_ulp_of_the_exact_product() {
    // Every f32 bit pattern of y in [-126 / k, 0] (strided) plus the edges and specials,
    // against f64 2^(y k) with the product exact: within 1 ulp while the result is normal,
    // within 2^-126 absolutely below (0 from 2^-126.5 down), 0 for -inf, NaN through.
    let ops: [Emitter; 3] = [exp2_scaled_0, exp2_scaled_1, exp2_scaled_2];
    for (op, k) in ops.into_iter().zip(SCALES) {
        let op = Op::new(op);
        let lo = (-126.0 / k).to_bits();
        let xs: Vec<f32> = (0x8000_0000u32..=lo)
            .step_by(499)
            .map(f32::from_bits)
            .chain([0.0, -0.0, -127.0 / k, -130.0 / k, -1e30, f32::NEG_INFINITY])
            .collect();
        let y = op.eval(&xs);
        let mut worst = Worst::default();
        for (&x, &got) in xs.iter().zip(&y) {
            let want = (f64::from(x) * f64::from(k)).exp2();
            if want >= f64::from(f32::MIN_POSITIVE) {
                worst.add(ulp_error(got, want), x, got, want);
            } else {
                let err = (f64::from(got) - want).abs();
                assert!(
                    err <= 2f64.powi(-126),
                    "k = {k}, y = {x:e}: {got:e} vs {want:e}"
                );
            }
        }
        assert!(worst.err <= 1.0, "k = {k}: {worst:?}");
        assert_eq!(op.eval(&[f32::NEG_INFINITY])[0].to_bits(), 0);
        assert_eq!(op.eval(&[0.0])[0], 1.0);
        assert!(op.eval(&[f32::NAN])[0].is_nan());
    }
    // A factor so small that -127 / k is -inf would let -inf through the clamp (a NaN
    // weight): such k are not taken.
    assert!(SCALES.iter().all(|&k| math::scaled_exp2_takes(k)));
    for k in [2e-37, 0.0, -1.0, f32::INFINITY, f32::NAN] {
        assert!(!math::scaled_exp2_takes(k), "k = {k}");
    }
}

#[test]
fn exp2_nonpositive_equals_exp2_down_to_its_floor() {
    // Every f32 bit pattern of [-126, 0] (strided), every multiple of 0.5 in it, plus the
    // specials: bit-identical to exp2 above -126.5 (subnormal results included) except at
    // half-integers, where n = round(x) breaks the tie the other way (within 1 ulp of the
    // exact value there); 0 from -126.5 down and for -inf, NaN through.
    let fast = Op::new(math::exp2_nonpositive);
    let full = Op::new(math::exp2);
    let lo = (-126f32).to_bits();
    let xs: Vec<f32> = (0x8000_0000u32..=lo)
        .step_by(997)
        .map(f32::from_bits)
        .chain((0..=252).map(|h| -(h as f32) / 2.0 - 0.5))
        .chain([
            0.0,
            -0.0,
            -126.0,
            -126.25,
            -126.499_99,
            -126.5,
            -127.0,
            -149.0,
            -1e30,
            f32::NEG_INFINITY,
        ])
        .collect();
    let (y, want) = (fast.eval(&xs), full.eval(&xs));
    for ((&x, &a), &b) in xs.iter().zip(&y).zip(&want) {
        let tie = (x * 2.0).fract() == 0.0 && x.fract() != 0.0;
        if x > -126.5 && tie {
            let err = ulp_error(a, f64::from(x).exp2());
            assert!(err <= 1.0, "x = {x:e}: {a:e} is {err} ulp from 2^x");
        } else if x > -126.5 {
            assert_eq!(a.to_bits(), b.to_bits(), "x = {x:e}: {a:e} != exp2 {b:e}");
        } else {
            assert_eq!(a.to_bits(), 0, "x = {x:e}: {a:e}");
        }
    }
    assert!(fast.eval(&[f32::NAN])[0].is_nan());
}

#[test]
fn log2_sweep() {
    let worst = check_log2(bit_sweep(0, 97).chain(
        // Every input within 2^-9 of 1, where a relative error shows up as a large ulp error.
        (-(1 << 15)..(1 << 14)).map(|k: i32| f32::from_bits(1f32.to_bits().wrapping_add_signed(k))),
    ));
    println!("log2 worst: {worst:?}");
    assert!(worst.err <= LOG2_MAX_ULP, "log2 error too large: {worst:?}");
}

#[test]
fn log2_special_values() {
    let op = Op::new(math::log2);
    let x = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -1.0,
        1.0,
        2.0,
        0.5,
        f32::from_bits(1),
        f32::MIN_POSITIVE,
        f32::MAX,
    ];
    let y = op.eval(&x);
    assert_eq!(y[0], f32::NEG_INFINITY);
    assert_eq!(y[1], f32::NEG_INFINITY);
    assert_eq!(y[2], f32::INFINITY);
    assert!(y[3].is_nan() && y[4].is_nan() && y[5].is_nan());
    assert_eq!(y[6].to_bits(), 0, "log2(1) must be +0 exactly");
    assert_eq!(y[7], 1.0);
    assert_eq!(y[8], -1.0);
    assert_eq!(y[9], -149.0);
    assert_eq!(y[10], -126.0);
    assert!((y[11] - 128.0).abs() <= 1e-5);
}

#[test]
fn sin_sweep() {
    // Bit patterns cover tiny arguments densely; the linear sweep covers |x| <= 1e5 evenly; the
    // last part hits the floats nearest to multiples of pi/2, where reduction errors are relative.
    let linear = (-10_000_000..=10_000_000).map(|k: i32| k as f32 * 0.010_000_123);
    let near_zeros = (1..200_000u32).step_by(7).flat_map(|k| {
        let x = (f64::from(k) * std::f64::consts::FRAC_PI_2 * 31.0) as f32;
        (-2..=2).map(move |d: i32| f32::from_bits(x.to_bits().wrapping_add_signed(d)))
    });
    check_sin(bit_sweep(0, 97).chain(linear).chain(near_zeros)).assert_bounds();
}

#[test]
fn sin_special_values() {
    let op = Op::new(math::sin);
    let l = math::SIN_MAX_ACCURATE;
    let x = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(1),
        -f32::from_bits(1),
        1e-20,
        l,
        f32::from_bits(l.to_bits() + 1),
        -f32::from_bits(l.to_bits() + 1),
        f32::MAX,
        -f32::MAX,
    ];
    let y = op.eval(&x);
    assert_eq!(y[0].to_bits(), 0f32.to_bits());
    assert_eq!(y[1].to_bits(), (-0f32).to_bits());
    assert!(y[2].is_nan() && y[3].is_nan() && y[4].is_nan());
    assert_eq!(y[5], f32::from_bits(1));
    assert_eq!(y[6], -f32::from_bits(1));
    assert_eq!(y[7], 1e-20);
    assert!((f64::from(y[8]) - f64::from(l).sin()).abs() <= SIN_FAR_MAX_ABS);
    assert_eq!(y[9].to_bits(), 0f32.to_bits());
    assert_eq!(y[10].to_bits(), (-0f32).to_bits());
    assert_eq!(y[11].to_bits(), 0f32.to_bits());
    assert_eq!(y[12].to_bits(), (-0f32).to_bits());
}

#[test]
fn sqrt_and_recip() {
    let sqrt = Op::new(math::sqrt);
    let recip = Op::new(math::recip);
    let x: Vec<f32> = bit_sweep(3, 1_000_003).collect();
    for ((&x, s), r) in x.iter().zip(sqrt.eval(&x)).zip(recip.eval(&x)) {
        let (ws, wr) = (x.sqrt(), 1.0 / x);
        assert!(
            s.to_bits() == ws.to_bits() || (s.is_nan() && ws.is_nan()),
            "sqrt({x:e})"
        );
        assert!(
            r.to_bits() == wr.to_bits() || (r.is_nan() && wr.is_nan()),
            "recip({x:e})"
        );
    }
}

#[test]
fn release_tests_run_the_verifier() {
    let isa = host_isa(OptLevel::Speed);
    assert!(isa::verifier_enabled());
    assert!(
        isa.flags().enable_verifier(),
        "{}",
        isa::isa_fingerprint(&*isa)
    );
}

#[test]
fn isa_fingerprint_is_stable_and_complete() {
    let a = host_isa(OptLevel::Speed);
    let b = host_isa(OptLevel::Speed);
    let c = host_isa(OptLevel::None);
    let fa = isa::isa_fingerprint(&*a);
    assert_eq!(fa, isa::isa_fingerprint(&*b));
    assert_ne!(
        fa,
        isa::isa_fingerprint(&*c),
        "opt_level must be part of the key"
    );
    assert!(
        fa.contains("0.135.8") && fa.contains("x86_64") && fa.contains("has_fma=1"),
        "{fa}"
    );
    assert!(
        fa.contains("opt_level=speed") && fa.contains("is_pic=0"),
        "{fa}"
    );
}

#[test]
fn fingerprint_distinguishes_isa_flags() {
    // A builder without native detection must not share cache entries with the host ISA.
    let mut shared = cranelift_codegen::settings::builder();
    shared.set("opt_level", "speed").unwrap();
    shared.set("is_pic", "false").unwrap();
    shared.set("use_colocated_libcalls", "false").unwrap();
    // Matches `host_isa` here, which always forces the verifier on.
    shared.set("enable_verifier", "true").unwrap();
    let plain = cranelift_native::builder_with_options(false)
        .unwrap()
        .finish(cranelift_codegen::settings::Flags::new(shared))
        .unwrap();
    let host = host_isa(OptLevel::Speed);
    assert_ne!(isa::isa_fingerprint(&*plain), isa::isa_fingerprint(&*host));
}

/// Runs `f` over `0..=u32::MAX` split across the available cores.
fn exhaustive<W: Send>(f: impl Fn(u32, u32) -> W + Sync) -> Vec<W> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let per = (1u64 << 32).div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                let lo = (t * per) as u32;
                let hi = ((t + 1) * per - 1).min(u32::MAX as u64) as u32;
                s.spawn(move || f(lo, hi))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
#[ignore = "exhaustive: ~1 min"]
fn exp2_exhaustive() {
    for w in exhaustive(|lo, hi| check_exp2((lo..=hi).map(f32::from_bits))) {
        println!("exp2 worst: {w:?}");
        assert!(w.err <= EXP2_MAX_ULP, "{w:?}");
    }
}

#[test]
#[ignore = "exhaustive: ~1 min"]
fn log2_exhaustive() {
    for w in exhaustive(|lo, hi| check_log2((lo..=hi).map(f32::from_bits))) {
        println!("log2 worst: {w:?}");
        assert!(w.err <= LOG2_MAX_ULP, "{w:?}");
    }
}

#[test]
#[ignore = "exhaustive over |x| <= SIN_MAX_ACCURATE: ~5 min on 2 cores"]
fn sin_exhaustive() {
    let end = math::SIN_MAX_ACCURATE.to_bits() + 16;
    let results = exhaustive(|lo, hi| {
        // Both signs of every magnitude up to just past the limit.
        let lo = lo / 2;
        let hi = hi / 2;
        let xs = (lo..=hi.min(end)).flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)]);
        check_sin(xs)
    });
    let mut all = SinWorst::default();
    for w in results {
        for (mine, theirs) in [
            (&mut all.near_abs, w.near_abs),
            (&mut all.near_ulp, w.near_ulp),
            (&mut all.far_abs, w.far_abs),
            (&mut all.far_ulp, w.far_ulp),
        ] {
            mine.add(theirs.err, theirs.x, theirs.got, theirs.want);
        }
    }
    all.assert_bounds();
}
