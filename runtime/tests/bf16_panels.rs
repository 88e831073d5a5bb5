//! Weights exact in bf16 are packed at 16 bits and widened in registers: the GEMM is selected
//! with `bf16` panels, and its results are bit-identical to the same weights packed as f32,
//! on odd shapes (partial panels, K tails), transposed (`nn.Linear`) and plain, one row
//! (decode) and many, and for a SwiGLU pair.

use cranegrad_graph::{Bindings, Graph, HostData, Shape, Tensor, lcg_values};
use cranegrad_lower::{LowerOptions, lower_tensors};
use cranegrad_runtime::{Feeds, Session, SessionOptions};

/// `n` values rounded to bf16.
fn bf16_values(n: usize, seed: u64) -> Vec<f32> {
    lcg_values(n, seed, 1.0)
        .into_iter()
        .map(|v| f32::from_bits(v.to_bits() & 0xffff_0000))
        .collect()
}

fn weight(g: &Graph, name: &str, dims: &[usize], seed: u64, mark: bool) -> Tensor {
    let d = HostData::from(bf16_values(dims.iter().product(), seed));
    let d = if mark {
        d.into_bf16_exact().unwrap()
    } else {
        d
    };
    g.input_with_data(name, Shape::of(dims), d).unwrap()
}

/// The output of `build(graph, mark)` with the weights marked bf16-exact and not, and
/// whether the marked one's schedule uses bf16 panels.
fn both(build: impl Fn(&Graph, bool) -> Tensor) -> (Vec<f32>, Vec<f32>, bool) {
    let mut out = Vec::new();
    let mut uses = false;
    for mark in [true, false] {
        let g = Graph::new();
        let y = build(&g, mark);
        if mark {
            let l = lower_tensors(&[&y], LowerOptions::default()).unwrap();
            uses = l.schedule.text().contains("packed bf16");
        }
        let mut s = Session::new(SessionOptions {
            fuse: true,
            threads: 2,
        })
        .unwrap();
        out.push(s.realize(&[&y], &Feeds::new(), &Bindings::new()).unwrap()[0].to_f32());
    }
    let f32_panels = out.pop().unwrap();
    (out.pop().unwrap(), f32_panels, uses)
}

#[test]
fn bf16_panels_compute_what_f32_panels_do() {
    for &(m, k, n) in &[
        (1usize, 40usize, 24usize),
        (5, 37, 20),
        (33, 64, 9),
        (1, 257, 100),
    ] {
        for transposed in [true, false] {
            let (a, b, uses) = both(|g, mark| {
                let x = g
                    .input_with_data("x", Shape::of(&[m, k]), lcg_values(m * k, 3, 1.0))
                    .unwrap();
                let w = if transposed {
                    weight(g, "w", &[n, k], 5, mark).transpose(0, 1).unwrap()
                } else {
                    weight(g, "w", &[k, n], 5, mark)
                };
                x.matmul(&w).unwrap()
            });
            assert!(
                uses,
                "m {m} k {k} n {n} transposed {transposed}: bf16 panels"
            );
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "m {m} k {k} n {n} transposed {transposed}"
            );
        }
    }
}

#[test]
fn a_swiglu_pair_of_bf16_weights_is_packed_at_16_bits_too() {
    let (m, k, n) = (3usize, 48usize, 36usize);
    let (a, b, uses) = both(|g, mark| {
        let x = g
            .input_with_data("x", Shape::of(&[m, k]), lcg_values(m * k, 7, 1.0))
            .unwrap();
        let gate = x
            .matmul(&weight(g, "gate", &[n, k], 8, mark).transpose(0, 1).unwrap())
            .unwrap();
        let up = x
            .matmul(&weight(g, "up", &[n, k], 9, mark).transpose(0, 1).unwrap())
            .unwrap();
        gate.silu().unwrap().mul(&up).unwrap()
    });
    assert!(uses);
    assert_eq!(a, b);
}

#[test]
fn only_exact_values_are_marked() {
    let exact = HostData::from(bf16_values(64, 1));
    assert!(exact.into_bf16_exact().unwrap().is_bf16_exact());
    let inexact = HostData::from(lcg_values(64, 1, 1.0));
    let back = inexact.into_bf16_exact().unwrap_err();
    assert!(!back.is_bf16_exact() && back.len() == 64);
}
