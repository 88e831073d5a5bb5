//! Constant folding must compute what the interpreter and the kernels compute: a cast of a
//! constant folds to the same bits as the unfolded cast evaluates to.

mod common;

use cranegrad_graph::{Bindings, DType, Graph, Op, Shape, Tensor};
use cranegrad_lower::graph_passes::fold_constants::fold_constants;
use cranegrad_runtime::interp::interpret;
use cranegrad_runtime::{Feeds, interpret_tensors};

/// `t` after folding, evaluated by the interpreter (which then only reads a constant).
fn folded_words(t: &Tensor) -> Vec<u32> {
    let mut g = t.graph().snapshot();
    let mut outs = [t.id()];
    fold_constants(&mut g, &mut outs);
    assert!(
        matches!(g.node(outs[0]).op, Op::Const { .. }),
        "not folded: {:?}",
        g.node(outs[0]).op
    );
    let v = interpret(&g, &outs, &Feeds::new(), &Bindings::new()).expect("interpret folded");
    v[0].words().to_vec()
}

/// A cast of the constant `value` (of dtype `from`) to `to`, at a small static shape.
fn cast_of(value: f64, from: DType, to: DType) -> Tensor {
    Graph::new()
        .constant(value, Shape::of(&[5]), from)
        .cast(to)
        .unwrap()
}

/// Checks folding, the unfolded interpreter and the JIT agree on the cast and returns the
/// element as i32 bits (bool and i32 results) so callers can pin the expected value.
fn agree(value: f64, from: DType, to: DType) -> u32 {
    let t = cast_of(value, from, to);
    let reference = interpret_tensors(&[&t], &Feeds::new(), &Bindings::new()).unwrap();
    let want = reference[0].words().to_vec();
    assert_eq!(
        folded_words(&t),
        want,
        "{from}->{to} of {value:e}: folding disagrees with the interpreter"
    );
    for (fuse, got) in
        ["fused", "unfused"]
            .iter()
            .zip(common::run_jit(&[&t], &Feeds::new(), &Bindings::new()))
    {
        assert_eq!(
            got[0].words(),
            &want[..],
            "{from}->{to} of {value:e}: {fuse} JIT disagrees with the interpreter"
        );
    }
    want[0]
}

#[test]
fn f32_to_bool_is_not_equal_zero() {
    // Truncating first would make 0.5 and 1e-30 false.
    for (v, want) in [
        (0.5, 1),
        (-0.5, 1),
        (1e-30, 1),
        (2.0, 1),
        (0.0, 0),
        (-0.0, 0),
        // Below f32's smallest subnormal: the f32 constant itself is 0.
        (1e-50, 0),
        (f64::NAN, 1),
        (f64::INFINITY, 1),
    ] {
        assert_eq!(agree(v, DType::F32, DType::Bool), want, "{v:e}");
    }
}

#[test]
fn f32_to_i32_truncates_and_saturates() {
    for (v, want) in [
        (2.7, 2),
        (-2.7, -2),
        (3e9, i32::MAX),
        (-3e9, i32::MIN),
        (f64::INFINITY, i32::MAX),
        (f64::NEG_INFINITY, i32::MIN),
        (f64::NAN, 0),
        // Not an f32: the constant is 16777216.0 before the cast sees it.
        (16_777_217.0, 16_777_216),
    ] {
        assert_eq!(agree(v, DType::F32, DType::I32) as i32, want, "{v:e}");
    }
}

#[test]
fn integer_and_bool_casts() {
    assert_eq!(agree(7.0, DType::I32, DType::Bool), 1);
    assert_eq!(agree(-1.0, DType::I32, DType::Bool), 1);
    assert_eq!(agree(0.0, DType::I32, DType::Bool), 0);
    assert_eq!(agree(1.0, DType::Bool, DType::I32), 1);
    // i32 -> f32 rounds to nearest: 2^24 + 1 is not representable.
    assert_eq!(
        f32::from_bits(agree(16_777_217.0, DType::I32, DType::F32)),
        16_777_216.0
    );
    assert_eq!(f32::from_bits(agree(1.0, DType::Bool, DType::F32)), 1.0);
}
