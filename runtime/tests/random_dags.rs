//! Property test: random elementwise/broadcast DAGs give the same result through the fused
//! JIT, the unfused JIT and the reference interpreter.
//!
//! Tolerance: |jit - ref| <= 2e-4 + 2e-4 |ref|. The interpreter uses Rust's f32 libm; the JIT
//! uses polynomial exp2/log2/sin accurate to a few ulp, which chains of up to 12 ops can grow
//! by a few more ulp each.

mod common;

use common::{rand_vec, session, worst};
use cranegrad_graph::{Bindings, Graph, Shape, Tensor};
use cranegrad_runtime::{Feeds, interpret_tensors};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Unary(u8, usize),
    Binary(u8, usize, usize),
    Select(usize, usize, usize),
    ViewRoundTrip(u8, usize),
}

fn step(n: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..7, 0..n).prop_map(|(k, a)| Step::Unary(k, a)),
        (0u8..4, 0..n, 0..n).prop_map(|(k, a, b)| Step::Binary(k, a, b)),
        (0..n, 0..n, 0..n).prop_map(|(a, b, c)| Step::Select(a, b, c)),
        (0u8..3, 0..n).prop_map(|(k, a)| Step::ViewRoundTrip(k, a)),
    ]
}

/// Input shapes: the full shape or a broadcastable version of it.
fn input_shape(full: &[usize], mask: u8) -> Vec<usize> {
    match mask % 4 {
        0 => full.to_vec(),
        1 => full[1..].to_vec(),
        2 => full
            .iter()
            .enumerate()
            .map(|(i, &d)| if i == 1 { 1 } else { d })
            .collect(),
        _ => vec![1, 1, full[2]],
    }
}

fn apply(nodes: &[Tensor], s: &Step) -> Tensor {
    let pick = |i: usize| nodes[i % nodes.len()].clone();
    match *s {
        Step::Unary(k, a) => {
            let x = pick(a);
            match k {
                0 => x.neg(),
                1 => x.mul_scalar(0.5).and_then(|t| t.exp2()),
                2 => x
                    .mul(&x)
                    .and_then(|t| t.add_scalar(0.5))
                    .and_then(|t| t.log2()),
                3 => x.sin(),
                4 => x
                    .mul(&x)
                    .and_then(|t| t.add_scalar(0.1))
                    .and_then(|t| t.sqrt()),
                5 => x
                    .mul(&x)
                    .and_then(|t| t.add_scalar(1.0))
                    .and_then(|t| t.recip()),
                _ => x.relu(),
            }
        }
        Step::Binary(k, a, b) => {
            let (x, y) = (pick(a), pick(b));
            match k {
                0 => x.add(&y),
                1 => x.mul(&y),
                2 => x.maximum(&y),
                _ => x.sub(&y),
            }
        }
        Step::Select(c, a, b) => pick(c)
            .cmplt(&pick(a))
            .and_then(|m| m.where_(&pick(a), &pick(b))),
        Step::ViewRoundTrip(k, a) => {
            let x = pick(a);
            let r = x.rank();
            match k {
                0 => x
                    .transpose(0, r as isize - 1)
                    .and_then(|t| t.exp2())
                    .and_then(|t| t.transpose(0, r as isize - 1)),
                1 => {
                    let pads: Vec<(usize, usize)> = (0..r)
                        .map(|i| if i + 1 == r { (1, 2) } else { (0, 0) })
                        .collect();
                    let n = x.dims()[r - 1].max_value();
                    x.pad(&pads)
                        .and_then(|t| t.add_scalar(1.0))
                        .and_then(|t| t.narrow(-1, 1, n))
                }
                _ => {
                    let n: usize = x.dims().iter().map(|d| d.max_value()).product();
                    x.reshape(Shape::of(&[n]))
                        .and_then(|t| t.neg())
                        .and_then(|t| t.reshape(x.shape().clone()))
                }
            }
        }
    }
    .expect("every step is shape-valid by construction")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
    #[test]
    fn jit_matches_interpreter(
        dims in prop::collection::vec(prop::sample::select(vec![1usize, 2, 3, 5, 17]), 3),
        masks in prop::collection::vec(0u8..4, 1..4),
        steps in prop::collection::vec(step(16), 1..12),
        seed in 0u64..1000,
    ) {
        let g = Graph::new();
        let mut nodes: Vec<Tensor> = masks
            .iter()
            .enumerate()
            .map(|(i, &m)| {
                let s = input_shape(&dims, m);
                let n: usize = s.iter().product();
                g.input_with_data(&format!("in{i}"), Shape::of(&s), rand_vec(n, seed + i as u64, 2.0)).unwrap()
            })
            .collect();
        for s in &steps {
            let t = apply(&nodes, s);
            nodes.push(t);
        }
        // The last node plus one middle node as outputs (multi-output plans too).
        let outs: Vec<&Tensor> = vec![&nodes[nodes.len() - 1], &nodes[nodes.len() / 2]];
        let reference = interpret_tensors(&outs, &Feeds::new(), &Bindings::new()).unwrap();
        for fuse in [true, false] {
            let mut s = session(fuse, 2);
            let got = s.realize(&outs, &Feeds::new(), &Bindings::new()).unwrap();
            for (a, b) in got.iter().zip(&reference) {
                prop_assert_eq!(&a.shape, &b.shape);
                let w = worst(&a.to_f32(), &b.to_f32(), 2e-4, 2e-4);
                prop_assert!(w <= 1.0, "fuse={} off by {} x tolerance", fuse, w);
            }
        }
    }
}
