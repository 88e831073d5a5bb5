//! Weights exact in bf16 or f16 are packed at 16 bits and widened in registers: the GEMM is
//! selected with 16-bit panels, and its results are bit-identical to the same weights packed
//! as f32, on odd shapes (partial panels, K tails), transposed (`nn.Linear`) and plain, one
//! row (decode) and many, for a SwiGLU pair, and (f16) through subnormals, zeros of both signs
//! and the largest finite values.

use cranegrad_graph::{Bindings, CompactFormat, Graph, HostData, Shape, Tensor, lcg_values};
use cranegrad_lower::{LowerOptions, lower_tensors};
use cranegrad_runtime::{Feeds, Session, SessionOptions};

/// `n` values exact in `format`; for f16 every seventh is a special value.
fn half_values(n: usize, seed: u64, format: CompactFormat) -> Vec<f32> {
    let specials = [
        0.0f32, -0.0, 6.0e-8, -3.0e-6, 65504.0, -65504.0, 6.1e-5, 1.0e-7,
    ];
    lcg_values(n, seed, 1.0)
        .into_iter()
        .enumerate()
        .map(|(i, v)| match format {
            CompactFormat::Bf16 => f32::from_bits(v.to_bits() & 0xffff_0000),
            CompactFormat::F16 if i % 7 == 3 => {
                half::f16::from_f32(specials[i / 7 % specials.len()]).to_f32()
            }
            CompactFormat::F16 => half::f16::from_f32(v).to_f32(),
            _ => unreachable!("tests/q8_panels.rs covers the block formats"),
        })
        .collect()
}

/// The output of `build(graph, mark)` with the weights marked exact in `format` and not (the
/// same values), and whether the marked one's schedule uses 16-bit panels of that format.
fn both(
    format: CompactFormat,
    build: impl Fn(&Graph, Option<CompactFormat>) -> Tensor,
) -> (Vec<u32>, Vec<u32>, bool) {
    let mut out = Vec::new();
    let mut uses = false;
    for mark in [Some(format), None] {
        let g = Graph::new();
        let y = build(&g, mark);
        if mark.is_some() {
            let l = lower_tensors(&[&y], LowerOptions::default()).unwrap();
            uses = l
                .schedule
                .text()
                .contains(&format!("packed {}", format.name()));
        }
        let mut s = Session::new(SessionOptions {
            fuse: true,
            threads: 2,
        })
        .unwrap();
        let v = s.realize(&[&y], &Feeds::new(), &Bindings::new()).unwrap()[0].to_f32();
        out.push(v.iter().map(|x| x.to_bits()).collect());
    }
    let f32_panels = out.pop().unwrap();
    (out.pop().unwrap(), f32_panels, uses)
}

/// A weight made of `format`'s values whatever the mark (so both runs see the same values).
fn same_values(
    g: &Graph,
    name: &str,
    dims: &[usize],
    seed: u64,
    format: CompactFormat,
    mark: Option<CompactFormat>,
) -> Tensor {
    let d = HostData::from(half_values(dims.iter().product(), seed, format));
    let d = match mark {
        Some(f) => d.into_compact(f).unwrap(),
        None => d,
    };
    g.input_with_data(name, Shape::of(dims), d).unwrap()
}

#[test]
fn half_panels_compute_what_f32_panels_do() {
    for format in [CompactFormat::Bf16, CompactFormat::F16] {
        for &(m, k, n) in &[
            (1usize, 40usize, 24usize),
            (5, 37, 20),
            (33, 64, 9),
            (1, 257, 100),
        ] {
            for transposed in [true, false] {
                let (a, b, uses) = both(format, |g, mark| {
                    let x = g
                        .input_with_data("x", Shape::of(&[m, k]), lcg_values(m * k, 3, 1.0))
                        .unwrap();
                    let w = if transposed {
                        let w = same_values(g, "w", &[n, k], 5, format, mark);
                        w.transpose(0, 1).unwrap()
                    } else {
                        same_values(g, "w", &[k, n], 5, format, mark)
                    };
                    x.matmul(&w).unwrap()
                });
                let case = format!(
                    "{} m {m} k {k} n {n} transposed {transposed}",
                    format.name()
                );
                assert!(uses, "{case}: 16-bit panels");
                assert_eq!(a, b, "{case}");
            }
        }
    }
}

#[test]
fn a_swiglu_pair_is_packed_at_16_bits_too() {
    let (m, k, n) = (3usize, 48usize, 36usize);
    for format in [CompactFormat::Bf16, CompactFormat::F16] {
        let (a, b, uses) = both(format, |g, mark| {
            let x = g
                .input_with_data("x", Shape::of(&[m, k]), lcg_values(m * k, 7, 1.0))
                .unwrap();
            let gate = same_values(g, "gate", &[n, k], 8, format, mark);
            let up = same_values(g, "up", &[n, k], 9, format, mark);
            let gate = x.matmul(&gate.transpose(0, 1).unwrap()).unwrap();
            let up = x.matmul(&up.transpose(0, 1).unwrap()).unwrap();
            gate.silu().unwrap().mul(&up).unwrap()
        });
        assert!(uses, "{}", format.name());
        assert_eq!(a, b, "{}", format.name());
    }
}

#[test]
fn only_exact_values_are_marked() {
    for format in [CompactFormat::Bf16, CompactFormat::F16] {
        let exact = HostData::from(half_values(64, 1, format));
        assert_eq!(exact.into_compact(format).unwrap().compact(), Some(format));
        let inexact = HostData::from(lcg_values(64, 1, 1.0));
        let back = inexact.into_compact(format).unwrap_err();
        assert!(back.compact().is_none() && back.len() == 64);
    }
    // 1e6 is no f16 (its largest finite is 65504); 1.5 is both.
    assert!(CompactFormat::F16.exact_bits(1.0e6).is_none());
    assert_eq!(CompactFormat::F16.exact_bits(1.5), Some(0x3e00));
    assert_eq!(CompactFormat::Bf16.exact_bits(1.5), Some(0x3fc0));
}
