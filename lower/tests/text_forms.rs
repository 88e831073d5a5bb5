//! The printed forms of a small graph and of its fused schedule, checked line by line (the
//! Cranelift habit: IR changes show up as text diffs in review).

use cranegrad_graph::{DType, Graph, Shape, graph_text};
use cranegrad_lower::{LowerOptions, lower};

fn small() -> (Graph, cranegrad_graph::Tensor) {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[4, 8]), DType::F32);
    let b = g.input("b", Shape::of(&[8]), DType::F32);
    let y = x.mul(&b).unwrap().add_scalar(1.0).unwrap().relu().unwrap();
    let s = y.sum(-1, true).unwrap();
    (g, s)
}

#[test]
fn graph_text_form() {
    let (g, s) = small();
    let text = g.with(|d| graph_text(d, &[s.id()]));
    let expected = "\
%0 = input \"x\" : f32[4, 8]
%1 = input \"b\" : f32[8]
%2 = reshape (%1) : f32[1, 8]
%3 = expand (%2) : f32[4, 8]
%4 = mul (%0, %3) : f32[4, 8]
%5 = const 1.0 : f32[4, 8]
%6 = add (%4, %5) : f32[4, 8]
%7 = const 0.0 : f32[4, 8]
%8 = max (%6, %7) : f32[4, 8]
%9 = sum axis=1 (%8) : f32[4, 1]
outputs: %9
";
    assert_eq!(text, expected);
}

#[test]
fn schedule_text_form() {
    let (g, s) = small();
    let l = g
        .with(|d| lower(d, &[s.id()], LowerOptions::default()))
        .unwrap();
    let expected = "\
buf0: f32[4, 8] input \"x\"
buf1: f32[8] input \"b\"
buf2: f32[4, 1] output
kernel 0: mul+add+max+sum [buf0, buf1] -> buf2  (reduction + fused elementwise)
kernel k0_r_4_8 (mul add max sum)
  arg0: in f32[32]
  arg1: in f32[8]
  arg2: out f32[4]
  loop i0 in 0..4 parallel
  loop i1 in 0..8 reduce
  e0 = load.f32 arg0[8*i0 + i1]
  e1 = load.f32 arg1[i1]
  e2 = mul.f32 e0, e1
  e3 = const.f32 1.0
  e4 = muladd.f32 *e2, e3
  e5 = const.f32 0.0
  e6 = max.f32 e4, e5
  e7 = reduce.sum.f32 e6 over i1
  store arg2[i0] = e7
";
    assert_eq!(l.schedule.text(), expected);
    // Unfused: one kernel per primitive op (mul, add, max, sum).
    let u = g
        .with(|d| {
            lower(
                d,
                &[s.id()],
                LowerOptions {
                    fuse: false,
                    ..Default::default()
                },
            )
        })
        .unwrap();
    assert_eq!(u.schedule.launches.len(), 4);
    let names: Vec<String> = u
        .schedule
        .launches
        .iter()
        .map(|l| l.kernel.ops.join("+"))
        .collect();
    assert_eq!(names, ["mul", "add", "max", "sum"]);
}

#[test]
fn passes_fold_and_merge() {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[3]), DType::F32);
    // (2 * 3) folds to 6; x*1 and x+0 vanish; the two identical exp2 nodes merge.
    let six = g
        .constant(2.0, Shape::of(&[3]), DType::F32)
        .mul(&g.constant(3.0, Shape::of(&[3]), DType::F32))
        .unwrap();
    let a = x
        .mul_scalar(1.0)
        .unwrap()
        .add_scalar(0.0)
        .unwrap()
        .exp2()
        .unwrap();
    let b = x.exp2().unwrap();
    let y = a.add(&b).unwrap().mul(&six).unwrap();
    let l = g
        .with(|d| lower(d, &[y.id()], LowerOptions::default()))
        .unwrap();
    let text = graph_text(&l.graph, &l.outputs);
    let expected = "\
%0 = input \"x\" : f32[3]
%1 = exp2 (%0) : f32[3]
%2 = add (%1, %1) : f32[3]
%3 = const 6.0 : f32[3]
%4 = mul (%2, %3) : f32[3]
outputs: %4
";
    assert_eq!(text, expected);
    assert_eq!(l.schedule.launches.len(), 1);
}

#[test]
fn row_kernel_loops_are_parallel_rows_and_sequential_columns() {
    // Softmax: threads split the rows; each thread runs a row's columns whole.
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[3, 5]), DType::F32);
    let s = x.softmax(-1).unwrap();
    let l = g
        .with(|d| lower(d, &[s.id()], LowerOptions::default()))
        .unwrap();
    let text = l.schedule.text();
    for line in [
        "  loop i0 in 0..3 parallel\n",
        "  loop i1 in 0..5 sequential\n",
        "  loop i2 in 0..5 reduce\n",
        "  loop i3 in 0..5 reduce\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}
