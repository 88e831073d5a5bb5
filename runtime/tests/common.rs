//! Helpers shared by the runtime tests: run a graph through the JIT (fused and unfused) and the
//! interpreter and compare.

#![allow(dead_code)]

use cranegrad_graph::{Bindings, Tensor};
use cranegrad_runtime::{Feeds, Session, SessionOptions, Value, interpret_tensors};

/// A session with Cranelift's IR verifier on: release test runs would otherwise skip it (it is
/// only on by default in debug builds), so every test builds its sessions through here.
pub fn session(fuse: bool, threads: usize) -> Session {
    cranegrad_codegen::isa::force_verifier();
    Session::new(SessionOptions { fuse, threads }).expect("session")
}

/// How far one element is from its reference, in units of `atol + rtol |b|`: 0 when equal (NaN
/// and NaN agree), infinite when only one side is NaN or infinite or the infinities differ.
fn element_error(x: f32, y: f32, atol: f32, rtol: f32) -> f32 {
    if x == y || x.is_nan() && y.is_nan() {
        0.0
    } else if !x.is_finite() || !y.is_finite() {
        // The formula below would give NaN here (inf / inf, NaN / t), which `f32::max` drops.
        f32::INFINITY
    } else {
        (x - y).abs() / (atol + rtol * y.abs())
    }
}

/// Largest |a - b| / (atol + rtol |b|) over all elements; <= 1 means within tolerance, and a
/// NaN or infinity on one side only is infinitely far.
pub fn worst(a: &[f32], b: &[f32], atol: f32, rtol: f32) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| element_error(x, y, atol, rtol))
        .fold(0.0, f32::max)
}

/// The JIT's outputs for `outs`, fused and unfused (in that order).
pub fn run_jit(outs: &[&Tensor], feeds: &Feeds, bindings: &Bindings) -> [Vec<Value>; 2] {
    [true, false].map(|fuse| {
        session(fuse, 2)
            .realize(outs, feeds, bindings)
            .expect("realize")
    })
}

/// Runs `outs` fused and unfused and through the interpreter; asserts they agree and returns
/// the interpreter's values.
pub fn check_all(
    outs: &[&Tensor],
    feeds: &Feeds,
    bindings: &Bindings,
    atol: f32,
    rtol: f32,
) -> Vec<Value> {
    let reference = interpret_tensors(outs, feeds, bindings).expect("interpreter");
    for (fuse, got) in [true, false]
        .into_iter()
        .zip(run_jit(outs, feeds, bindings))
    {
        for (g, r) in got.iter().zip(&reference) {
            assert_eq!(g.shape, r.shape);
            let (gv, rv) = (g.to_f32(), r.to_f32());
            let w = worst(&gv, &rv, atol, rtol);
            assert!(
                w <= 1.0,
                "fuse={fuse}: mismatch {w} x tolerance at {:?}\n got {:?}\n ref {:?}",
                first_mismatch(&gv, &rv, atol, rtol),
                &gv[..gv.len().min(8)],
                &rv[..rv.len().min(8)]
            );
        }
    }
    reference
}

/// Index and values of the first element outside tolerance (for failure messages).
pub fn first_mismatch(a: &[f32], b: &[f32], atol: f32, rtol: f32) -> Option<(usize, f32, f32)> {
    a.iter()
        .zip(b)
        .enumerate()
        .find(|(_, (x, y))| element_error(**x, **y, atol, rtol) > 1.0)
        .map(|(i, (&x, &y))| (i, x, y))
}

/// Deterministic pseudo-random floats in [-scale, scale).
#[allow(unused_imports)]
pub use cranegrad_graph::lcg_values as rand_vec;
