//! Every kind of bad shape or input is an error naming what is at fault, never a panic.

mod common;

use cranegrad_graph::{Bindings, DType, Graph, HostData, Shape};
use cranegrad_runtime::Feeds;

fn msg<T: std::fmt::Debug>(r: Result<T, impl std::fmt::Display>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn shape_mismatches_name_both_shapes() {
    let g = Graph::new();
    let a = g.input("a", Shape::of(&[3, 4]), DType::F32);
    let b = g.input("b", Shape::of(&[5, 4]), DType::F32);
    let e = msg(a.add(&b));
    assert!(
        e.contains("[3, 4]") && e.contains("[5, 4]") && e.contains("add"),
        "{e}"
    );
    let w = g.input("w", Shape::of(&[5, 2]), DType::F32);
    let e = msg(a.matmul(&w));
    assert!(
        e.contains("matmul") && e.contains("[3, 4]") && e.contains("[5, 2]"),
        "{e}"
    );
    let bb = g.input("bb", Shape::of(&[2, 4, 5]), DType::F32);
    let cc = g.input("cc", Shape::of(&[3, 5, 6]), DType::F32);
    let e = msg(bb.matmul(&cc));
    assert!(e.contains("batch") && e.contains("[2, 4, 5]"), "{e}");
    let e = msg(a.reshape(Shape::of(&[5, 3])));
    assert!(
        e.contains("reshape") && e.contains("[3, 4]") && e.contains("[5, 3]"),
        "{e}"
    );
    let e = msg(a.permute(&[0, 0]));
    assert!(e.contains("permute") && e.contains("[0, 0]"), "{e}");
    let e = msg(a.expand(&Shape::of(&[6, 4])));
    assert!(e.contains("expand") && e.contains("[6, 4]"), "{e}");
    let e = msg(a.narrow(1, 2, 3));
    assert!(e.contains("narrow") && e.contains("[3, 4]"), "{e}");
    let e = msg(a.sum(2, true));
    assert!(e.contains("axis 2") && e.contains("[3, 4]"), "{e}");
    let e = msg(a.pad(&[(1, 1)]));
    assert!(e.contains("pad"), "{e}");
    let e = msg(cranegrad_graph::Tensor::concat(
        &[a.clone(), b.transpose(0, 1).unwrap()],
        0,
    ));
    assert!(e.contains("concat") && e.contains("[4, 5]"), "{e}");
}

#[test]
fn dtype_and_graph_errors() {
    let g = Graph::new();
    let a = g.input("a", Shape::of(&[3]), DType::F32);
    let i = g.input("i", Shape::of(&[3]), DType::I32);
    let e = msg(a.add(&i));
    assert!(e.contains("f32") && e.contains("i32"), "{e}");
    let e = msg(a.where_(&a, &a));
    assert!(e.contains("where") && e.contains("f32"), "{e}");
    let e = msg(i.exp2());
    assert!(e.contains("exp2") && e.contains("i32"), "{e}");
    let other = Graph::new().input("z", Shape::of(&[3]), DType::F32);
    let e = msg(a.mul(&other));
    assert!(e.contains("different graphs"), "{e}");
    let e = msg(g.input_with_data("d", Shape::of(&[2, 2]), vec![1.0f32; 3]));
    assert!(
        e.contains("d") && e.contains("3 values") && e.contains("[2, 2]"),
        "{e}"
    );
}

#[test]
fn bad_feeds_are_errors() {
    let g = Graph::new();
    let a = g.input("a", Shape::of(&[3]), DType::F32);
    let y = a.mul(&a).unwrap();
    let mut s = common::session(true, 2);
    let e = msg(s.realize(&[&y], &Feeds::new(), &Bindings::new()));
    assert!(e.contains("input a has no data"), "{e}");
    let mut f = Feeds::new();
    f.insert("a".into(), HostData::from(vec![1.0f32; 4]));
    let e = msg(s.realize(&[&y], &f, &Bindings::new()));
    assert!(
        e.contains("input a") && e.contains("expected 3") && e.contains("got 4"),
        "{e}"
    );
    f.insert("a".into(), HostData::from(vec![1i32; 3]));
    let e = msg(s.realize(&[&y], &f, &Bindings::new()));
    assert!(
        e.contains("input a") && e.contains("f32") && e.contains("i32"),
        "{e}"
    );
}
