//! Property test: random reductions with their prologue and epilogue (softmax with a scale or
//! a causal mask, norms, standardisations, sums and maxes fed back into the rows, a norm not
//! fed back) over random axes of odd 2-d and 3-d shapes give the interpreter's result through
//! the fused JIT on two threads. These are the row, column and across-output kernels, whose code generation
//! unrolls, interleaves, carries a row's max to the next and addresses rows from pointers.
//!
//! Tolerance: |jit - ref| <= 1e-5 + 1e-4 |ref| (exp2 within an ulp, sums of up to 257 terms
//! in another order).

mod common;

use common::{rand_vec, session, worst};
use cranegrad_graph::{Bindings, DType, Graph, Shape, Tensor};
use cranegrad_runtime::{Feeds, interpret_tensors};
use proptest::prelude::*;

/// `kind` applied to `x` (`[.., rows, cols]`) over `axis` (the last or the rows'), with
/// `gain` one of the last axis.
fn reduction(
    g: &Graph,
    (x, gain): (&Tensor, &Tensor),
    kind: u8,
    axis: isize,
    (rows, cols): (usize, usize),
) -> Tensor {
    let rank = x.rank() as isize;
    match kind {
        0 => x.mul_scalar(0.125).unwrap().softmax(axis).unwrap(),
        1 => x.mul_scalar(3.0).unwrap().softmax(axis).unwrap(),
        2 => {
            // A causal mask over the last two axes.
            let qi = g.arange(Shape::of(&[rows, 1]), 0, DType::I32).unwrap();
            let kj = g.arange(Shape::of(&[1, cols]), 1, DType::I32).unwrap();
            let hidden = qi.cmplt(&kj).unwrap();
            let masked = hidden
                .where_(&x.scalar(f32::MIN as f64), &x.mul_scalar(0.5).unwrap())
                .unwrap();
            masked.softmax(axis).unwrap()
        }
        // RMSNorm (its gain along the last axis) over the last axis; the same statistic
        // over the rows otherwise.
        3 if axis == rank - 1 => x.rms_norm(gain, 1e-5).unwrap(),
        3 => {
            let ms = x.mul(x).unwrap().mean(axis, true).unwrap();
            x.mul(&ms.add_scalar(1e-5).unwrap().rsqrt().unwrap())
                .unwrap()
        }
        4 => {
            let centred = x.sub(&x.mean(axis, true).unwrap()).unwrap();
            let spread = x.var(axis, true).unwrap().add_scalar(1e-5).unwrap();
            centred.mul(&spread.rsqrt().unwrap()).unwrap()
        }
        5 => x
            .exp()
            .unwrap()
            .sum(axis, true)
            .unwrap()
            .log()
            .unwrap()
            .add(x)
            .unwrap(),
        // A wrong max shifts every value (relu would hide one that is too large).
        6 => x.sub(&x.max(axis, true).unwrap()).unwrap(),
        // Not broadcast back: a reduction with its prologue and epilogue (across outputs,
        // row-major, over the rows' axis).
        _ => x.mul(x).unwrap().sum(axis, false).unwrap().sqrt().unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
    #[test]
    fn fused_reductions_match_the_interpreter(
        lead in prop::sample::select(vec![0usize, 1, 2, 3]),
        rows in prop::sample::select(vec![1usize, 2, 3, 5, 9, 17, 33]),
        cols in prop::sample::select(vec![1usize, 3, 4, 7, 8, 9, 16, 17, 33, 65, 100, 257]),
        kind in 0u8..8,
        on_rows in any::<bool>(),
        magnitude in prop::sample::select(vec![1.0f32, 8.0, 80.0]),
        seed in 0u64..1000,
    ) {
        let g = Graph::new();
        let dims: Vec<usize> = [lead, rows, cols].into_iter().filter(|&d| d > 0).collect();
        let n: usize = dims.iter().product();
        let x = g
            .input_with_data("x", Shape::of(&dims), rand_vec(n, seed, magnitude))
            .unwrap();
        let gain = g
            .input_with_data("g", Shape::of(&[cols]), rand_vec(cols, seed + 1, 1.0))
            .unwrap();
        // The last axis, or the rows' axis (strided).
        let rank = dims.len() as isize;
        let axis = if on_rows { rank - 2 } else { rank - 1 };
        let out = reduction(&g, (&x, &gain), kind, axis, (rows, cols));
        let reference = interpret_tensors(&[&out], &Feeds::new(), &Bindings::new()).unwrap();
        let got = session(true, 2)
            .realize(&[&out], &Feeds::new(), &Bindings::new())
            .unwrap();
        let w = worst(&got[0].to_f32(), &reference[0].to_f32(), 1e-5, 1e-4);
        prop_assert!(w <= 1.0, "kind {} over axis {} of {:?}: off by {} x tolerance", kind, axis, dims, w);
    }
}
