//! `Tensor::to_vec` through the `Realize` extension: nothing runs while the graph is built; the
//! value comes from the JIT and equals the reference interpreter's.

use cranegrad_graph::{Bindings, Graph, Shape};
use cranegrad_runtime::{Feeds, Realize, interpret_tensors};

#[test]
fn to_vec_computes_the_lazy_graph() {
    let g = Graph::new();
    let x = g
        .input_with_data(
            "x",
            Shape::of(&[2, 3]),
            vec![1.0, -2.0, 3.0, -4.0, 5.0, -6.0],
        )
        .unwrap();
    // max(x * 2 + 1, 0), recorded only.
    let y = x
        .mul_scalar(2.0)
        .unwrap()
        .add_scalar(1.0)
        .unwrap()
        .relu()
        .unwrap();
    assert_eq!(y.to_vec().unwrap(), vec![3.0, 0.0, 7.0, 0.0, 11.0, 0.0]);
    let s = y.sum(-1, false).unwrap();
    let reference = interpret_tensors(&[&s], &Feeds::new(), &Bindings::new()).unwrap();
    assert_eq!(s.to_vec().unwrap(), reference[0].to_f32());
    assert_eq!(s.realize().unwrap().shape, vec![2]);
}
