//! Helpers shared by the runtime tests: run a graph through the JIT (fused and unfused) and the
//! interpreter and compare.

#![allow(dead_code)]

use cranegrad_graph::{Bindings, Tensor};
use cranegrad_runtime::{Feeds, Session, SessionOptions, Value, interpret_tensors};

/// Largest |a - b| / (atol + rtol |b|) over all elements; <= 1 means within tolerance.
pub fn worst(a: &[f32], b: &[f32], atol: f32, rtol: f32) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            if x.is_nan() && y.is_nan() || x == y {
                0.0
            } else {
                (x - y).abs() / (atol + rtol * y.abs())
            }
        })
        .fold(0.0, f32::max)
}

/// Runs `outs` fused and unfused and through the interpreter; asserts they agree.
pub fn check_all(
    outs: &[&Tensor],
    feeds: &Feeds,
    bindings: &Bindings,
    atol: f32,
    rtol: f32,
) -> Vec<Value> {
    let reference = interpret_tensors(outs, feeds, bindings).expect("interpreter");
    for fuse in [true, false] {
        let mut s = Session::new(SessionOptions { fuse, threads: 2 }).expect("session");
        let got = s.realize(outs, feeds, bindings).expect("realize");
        for (g, r) in got.iter().zip(&reference) {
            assert_eq!(g.shape, r.shape);
            let w = worst(&g.to_f32(), &r.to_f32(), atol, rtol);
            assert!(
                w <= 1.0,
                "fuse={fuse}: mismatch {w} x tolerance\n got {:?}\n ref {:?}",
                &g.to_f32()[..g.numel().min(8)],
                &r.to_f32()[..r.numel().min(8)]
            );
        }
    }
    reference
}

/// Deterministic pseudo-random floats in [-scale, scale).
pub fn rand_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}
