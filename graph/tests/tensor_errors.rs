//! The Tensor API refuses bad shapes when the op is recorded, with an error naming the op and
//! the shapes, so a model bug surfaces at the line that made it rather than in a kernel.

use cranegrad_graph::{DType, Dim, Graph, GraphError, Shape, Symbol, Tensor};

fn input(g: &Graph, name: &str, dims: &[usize]) -> Tensor {
    g.input(name, Shape::of(dims), DType::F32)
}

/// The op an error blames.
fn blamed(e: GraphError) -> String {
    match e {
        GraphError::Broadcast { op, .. }
        | GraphError::Shape { op, .. }
        | GraphError::Axis { op, .. }
        | GraphError::DType { op, .. }
        | GraphError::UnsupportedDType { op, .. }
        | GraphError::DifferentGraphs { op } => op,
        other => panic!("not an op error: {other}"),
    }
}

#[test]
fn error_messages_name_the_op_and_the_shapes() {
    let g = Graph::new();
    let a = input(&g, "a", &[2, 3]);
    let b = input(&g, "b", &[3, 2]);
    assert_eq!(
        a.add(&b).unwrap_err().to_string(),
        "add: shapes [2, 3] and [3, 2] do not broadcast"
    );
    assert_eq!(
        a.sum(2, true).unwrap_err().to_string(),
        "sum: axis 2 is out of range for a tensor of shape [2, 3]"
    );
}

#[test]
fn axes_out_of_range_are_refused_from_either_end() {
    let g = Graph::new();
    let x = input(&g, "x", &[2, 3]);
    assert_eq!(x.axis("op", -1), Ok(1));
    assert_eq!(x.axis("op", -2), Ok(0));
    for axis in [2, -3] {
        assert_eq!(
            x.axis("op", axis),
            Err(GraphError::Axis {
                op: "op".into(),
                axis,
                shape: Shape::of(&[2, 3]),
            })
        );
    }
    assert_eq!(blamed(x.max(5, false).unwrap_err()), "reduce_max");
    assert_eq!(blamed(x.narrow(-3, 0, 1).unwrap_err()), "narrow");
    assert_eq!(blamed(x.transpose(0, 2).unwrap_err()), "transpose");
    assert_eq!(
        blamed(g.arange(Shape::of(&[2]), 1, DType::I32).unwrap_err()),
        "arange"
    );
}

#[test]
fn reshape_must_keep_the_element_count() {
    let g = Graph::new();
    let x = input(&g, "x", &[2, 3]);
    let e = x.reshape(Shape::of(&[4, 2])).unwrap_err();
    assert!(matches!(&e, GraphError::Shape { op, got, .. }
        if op == "reshape" && got == &Shape::of(&[2, 3])));
    assert!(x.reshape(Shape::of(&[3, 2])).is_ok());
    assert!(x.reshape(Shape::of(&[6, 1])).is_ok());
}

#[test]
fn permute_needs_each_axis_exactly_once() {
    let g = Graph::new();
    let x = input(&g, "x", &[2, 3, 4]);
    for bad in [&[0, 1][..], &[0, 1, 1], &[0, 1, 3], &[0, 1, 2, 3]] {
        assert_eq!(blamed(x.permute(bad).unwrap_err()), "permute", "{bad:?}");
    }
}

#[test]
fn expand_and_narrow_and_pad_refuse_bad_shapes() {
    let g = Graph::new();
    let x = input(&g, "x", &[2, 1]);
    assert_eq!(blamed(x.expand(&Shape::of(&[3, 4])).unwrap_err()), "expand");
    assert_eq!(blamed(x.narrow(0, 1, 2).unwrap_err()), "narrow");
    assert_eq!(blamed(x.pad(&[(1, 1)]).unwrap_err()), "pad");
    assert_eq!(blamed(x.pad(&[(0, 0), (0, 0), (0, 0)]).unwrap_err()), "pad");
}

#[test]
fn matmul_needs_matching_inner_dims_and_batches() {
    let g = Graph::new();
    let a = input(&g, "a", &[2, 3]);
    let vector = input(&g, "v", &[3]);
    let wrong_inner = input(&g, "w", &[2, 3]);
    assert_eq!(blamed(a.matmul(&vector).unwrap_err()), "matmul");
    assert_eq!(blamed(vector.matmul(&a).unwrap_err()), "matmul");
    assert_eq!(blamed(a.matmul(&wrong_inner).unwrap_err()), "matmul");
    let batched_a = input(&g, "ba", &[2, 4, 3]);
    let batched_b = input(&g, "bb", &[3, 3, 5]);
    assert!(matches!(
        batched_a.matmul(&batched_b),
        Err(GraphError::Broadcast { op, .. }) if op == "matmul (batch axes)"
    ));
    // A rank-2 right side broadcasts over the batch.
    let shared = input(&g, "s", &[3, 5]);
    assert_eq!(
        batched_a.matmul(&shared).unwrap().shape(),
        &Shape::of(&[2, 4, 5])
    );
}

#[test]
fn gather_needs_a_table_with_a_static_first_axis() {
    let g = Graph::new();
    let ids = g.input("ids", Shape::of(&[3]), DType::I32);
    let scalar = input(&g, "s", &[]);
    assert_eq!(blamed(scalar.gather_rows(&ids).unwrap_err()), "gather");
    let pos = Symbol::new("pos", 1, 8).unwrap();
    let symbolic = g.input("t", Shape(vec![Dim::sym(&pos), Dim::Const(2)]), DType::F32);
    assert_eq!(blamed(symbolic.gather_rows(&ids).unwrap_err()), "gather");
}

#[test]
fn write_slice_targets_an_input_with_a_fitting_value() {
    let g = Graph::new();
    let cache = input(&g, "cache", &[4, 2]);
    let row = input(&g, "row", &[1, 2]);
    let at = |i: usize| [Dim::Const(i), Dim::Const(0)];
    assert!(cache.write_slice(&row, &at(3)).is_ok());
    let refused = [
        ("window past the end", cache.write_slice(&row, &at(4))),
        (
            "target not an input",
            cache.neg().unwrap().write_slice(&row, &at(0)),
        ),
        (
            "one start missing",
            cache.write_slice(&row, &[Dim::Const(0)]),
        ),
        (
            "value of another dtype",
            cache.write_slice(&g.input("ints", Shape::of(&[1, 2]), DType::I32), &at(0)),
        ),
        (
            "value of another rank",
            cache.write_slice(&input(&g, "flat", &[2]), &at(0)),
        ),
    ];
    for (why, result) in refused {
        assert_eq!(blamed(result.unwrap_err()), "write_slice", "{why}");
    }
}

#[test]
fn tensors_of_two_graphs_do_not_mix() {
    let (g, h) = (Graph::new(), Graph::new());
    let a = input(&g, "a", &[2, 2]);
    let b = input(&h, "b", &[2, 2]);
    let ids = h.input("ids", Shape::of(&[1]), DType::I32);
    let cond = b.cmplt(&b).unwrap();
    for (result, op) in [
        (a.add(&b), "add"),
        (a.matmul(&b), "matmul"),
        (a.gather_rows(&ids), "gather"),
        (
            a.write_slice(&b, &[Dim::Const(0), Dim::Const(0)]),
            "write_slice",
        ),
        (cond.where_(&a, &b), "where"),
    ] {
        assert_eq!(
            result.unwrap_err(),
            GraphError::DifferentGraphs { op: op.into() }
        );
    }
}

#[test]
fn input_data_must_fill_a_static_shape() {
    let g = Graph::new();
    assert_eq!(
        g.input_with_data("w", Shape::of(&[2, 3]), vec![0.0f32; 5])
            .unwrap_err(),
        GraphError::DataLength {
            name: "w".into(),
            len: 5,
            shape: Shape::of(&[2, 3]),
        }
    );
    assert!(
        g.input_with_data("w", Shape::of(&[2, 3]), vec![0.0f32; 6])
            .is_ok()
    );
}

#[test]
fn concat_needs_parts_that_agree_off_a_static_axis() {
    let g = Graph::new();
    let a = input(&g, "a", &[2, 3]);
    assert_eq!(blamed(Tensor::concat(&[], 0).unwrap_err()), "concat");
    let taller = input(&g, "b", &[3, 3]);
    assert_eq!(
        blamed(Tensor::concat(&[a.clone(), taller.clone()], 1).unwrap_err()),
        "concat"
    );
    assert_eq!(
        Tensor::concat(&[a.clone(), taller], 0).unwrap().shape(),
        &Shape::of(&[5, 3])
    );
    let pos = Symbol::new("pos", 1, 8).unwrap();
    let symbolic = g.input("s", Shape(vec![Dim::sym(&pos), Dim::Const(3)]), DType::F32);
    assert_eq!(
        blamed(Tensor::concat(&[a.clone(), symbolic.clone()], 0).unwrap_err()),
        "concat"
    );
    // concat2 takes symbolic lengths: the cache's rows then the new one.
    assert_eq!(
        Tensor::concat2(&symbolic, &a, 0).unwrap().shape(),
        &Shape(vec![Dim::sym(&pos).add(2), Dim::Const(3)])
    );
}
