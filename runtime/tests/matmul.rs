//! Matmuls of odd shapes (GEMM blocks and their tails), with fused epilogues, against the
//! interpreter.

mod common;

use common::{check_all, rand_vec};
use cranegrad_graph::{Bindings, Graph, Shape};
use cranegrad_runtime::Feeds;

#[test]
fn odd_shapes_with_epilogues() {
    let sizes = [1usize, 3, 17, 33, 100, 257];
    let mut seed = 1;
    for &m in &sizes {
        for &(k, n) in &[(1usize, 8usize), (17, 3), (33, 100), (64, 257), (257, 17)] {
            seed += 1;
            let g = Graph::new();
            let a = g
                .input_with_data("a", Shape::of(&[m, k]), rand_vec(m * k, seed, 1.0))
                .unwrap();
            let w = g
                .input_with_data("w", Shape::of(&[k, n]), rand_vec(k * n, seed + 7, 1.0))
                .unwrap();
            let bias = g
                .input_with_data("b", Shape::of(&[n]), rand_vec(n, seed + 9, 1.0))
                .unwrap();
            let res = g
                .input_with_data("r", Shape::of(&[m, n]), rand_vec(m * n, seed + 11, 1.0))
                .unwrap();
            let y = a
                .matmul(&w)
                .unwrap()
                .add(&bias)
                .unwrap()
                .gelu_tanh()
                .unwrap()
                .add(&res)
                .unwrap();
            check_all(&[&y], &Feeds::new(), &Bindings::new(), 1e-4, 1e-4);
        }
    }
}

#[test]
fn batched_and_transposed_operands() {
    let g = Graph::new();
    let a = g
        .input_with_data("a", Shape::of(&[3, 5, 16]), rand_vec(240, 1, 1.0))
        .unwrap();
    let w = g
        .input_with_data("w", Shape::of(&[20, 16]), rand_vec(320, 2, 1.0))
        .unwrap();
    // B read through a transpose: not the GEMM layout, the generic kernel handles it.
    let y = a.matmul(&w.transpose(0, 1).unwrap()).unwrap();
    let b3 = g
        .input_with_data("b3", Shape::of(&[3, 16, 9]), rand_vec(432, 3, 1.0))
        .unwrap();
    let z = a.matmul(&b3).unwrap().relu().unwrap();
    check_all(&[&y, &z], &Feeds::new(), &Bindings::new(), 1e-4, 1e-4);
}

#[test]
fn a_weight_multiplied_by_its_own_transpose() {
    // `E @ Eᵀ`: A and B read the same weight buffer, so B must not be swapped for packed
    // panels (A would read the panels too).
    let g = Graph::new();
    let e = g
        .input_with_data("e", Shape::of(&[12, 40]), rand_vec(480, 4, 1.0))
        .unwrap();
    let y = e.matmul(&e.transpose(0, 1).unwrap()).unwrap();
    check_all(&[&y], &Feeds::new(), &Bindings::new(), 1e-4, 1e-4);
}

#[test]
fn packed_weights_with_every_k_tail_and_strided_a() {
    // Packed panels hold 4-k runs: K of every remainder mod 4, a weight stored `[n, k]`
    // (read transposed) or `[k, n]`, and A contiguous along k or read through a transpose
    // (its 4-k runs gathered lane by lane).
    let mut seed = 40;
    for &k in &[2usize, 3, 5, 6, 7, 12, 259] {
        for &(m, n) in &[(1usize, 9usize), (4, 8), (9, 20)] {
            for (stored_nk, strided_a) in [(false, false), (true, false), (true, true)] {
                seed += 1;
                let g = Graph::new();
                let a = if strided_a {
                    g.input_with_data("at", Shape::of(&[k, m]), rand_vec(m * k, seed, 1.0))
                        .unwrap()
                        .transpose(0, 1)
                        .unwrap()
                } else {
                    g.input_with_data("a", Shape::of(&[m, k]), rand_vec(m * k, seed, 1.0))
                        .unwrap()
                };
                let w = if stored_nk {
                    g.input_with_data("w", Shape::of(&[n, k]), rand_vec(k * n, seed + 3, 1.0))
                        .unwrap()
                        .transpose(0, 1)
                        .unwrap()
                } else {
                    g.input_with_data("w", Shape::of(&[k, n]), rand_vec(k * n, seed + 3, 1.0))
                        .unwrap()
                };
                let y = a.matmul(&w).unwrap().silu().unwrap();
                check_all(&[&y], &Feeds::new(), &Bindings::new(), 1e-4, 1e-4);
            }
        }
    }
}
