//! Shapes, their contiguous layout, NumPy broadcasting and the view ops (reshape, permute,
//! expand, slice, pad): which node each records, with which shape and attributes, and when a
//! view is skipped because it would change nothing.

use cranegrad_graph::shape::broadcast_shapes;
use cranegrad_graph::{Bindings, DType, Dim, Graph, GraphError, NodeId, Op, Shape, Symbol, Tensor};

fn op_of(t: &Tensor) -> Op {
    t.graph().with(|g| g.node(t.id()).op.clone())
}

fn operands_of(t: &Tensor) -> Vec<NodeId> {
    t.graph().with(|g| g.inputs(t.id()))
}

#[test]
fn layout_strides_are_row_major() {
    assert_eq!(Shape::of(&[2, 3, 4]).layout_strides(), vec![12, 4, 1]);
    assert_eq!(Shape::of(&[5]).layout_strides(), vec![1]);
    assert_eq!(Shape::of(&[]).layout_strides(), Vec::<i64>::new());
    // A size-1 axis still gets the stride its position implies.
    assert_eq!(Shape::of(&[3, 1, 2]).layout_strides(), vec![2, 2, 1]);
}

#[test]
fn a_symbolic_layout_is_sized_for_each_dims_maximum() {
    let pos = Symbol::new("pos", 1, 10).unwrap();
    let s = Shape(vec![Dim::Const(2), Dim::sym(&pos).add(2), Dim::Const(3)]);
    assert_eq!(s.layout_strides(), vec![36, 3, 1]);
    assert_eq!(s.max_dims(), vec![2, 12, 3]);
    assert_eq!(s.max_numel(), 72);
    assert_eq!(s.static_numel(), None);
    assert!(!s.is_static());
    assert_eq!(Shape::of(&[2, 3]).static_numel(), Some(6));
    assert!(Shape::of(&[2, 3]).is_static());
}

#[test]
fn a_shape_evaluates_under_bindings() {
    let pos = Symbol::new("pos", 1, 10).unwrap();
    let s = Shape(vec![Dim::sym(&pos).add(1), Dim::Const(4)]);
    let bindings = Bindings::from([("pos".into(), 3)]);
    assert_eq!(s.eval(&bindings), Ok(vec![4, 4]));
    assert_eq!(
        s.eval(&Bindings::new()),
        Err(GraphError::UnboundSymbol("pos".into()))
    );
}

#[test]
fn shapes_print_as_bracketed_lists() {
    let pos = Symbol::new("pos", 1, 10).unwrap();
    assert_eq!(Shape::of(&[2, 3]).to_string(), "[2, 3]");
    assert_eq!(Shape::of(&[]).to_string(), "[]");
    assert_eq!(
        Shape(vec![Dim::sym(&pos).add(-1), Dim::Const(8)]).to_string(),
        "[pos-1, 8]"
    );
}

#[test]
fn broadcasting_aligns_shapes_on_the_right() {
    let b = |a: &[usize], c: &[usize]| broadcast_shapes("add", &Shape::of(a), &Shape::of(c));
    assert_eq!(b(&[3, 1, 5], &[4, 5]), Ok(Shape::of(&[3, 4, 5])));
    assert_eq!(b(&[], &[2, 3]), Ok(Shape::of(&[2, 3])));
    assert_eq!(b(&[2, 1], &[1, 3]), Ok(Shape::of(&[2, 3])));
    assert_eq!(b(&[1], &[0]), Ok(Shape::of(&[0])));
    assert_eq!(
        b(&[2, 3], &[3, 2]),
        Err(GraphError::Broadcast {
            op: "add".into(),
            lhs: Shape::of(&[2, 3]),
            rhs: Shape::of(&[3, 2]),
        })
    );
    assert!(b(&[4, 3], &[2, 3]).is_err());
}

#[test]
fn a_symbolic_dim_broadcasts_only_against_itself_or_one() {
    let pos = Symbol::new("pos", 1, 10).unwrap();
    let p = Dim::sym(&pos);
    let b = |a: Vec<Dim>, c: Vec<Dim>| broadcast_shapes("mul", &Shape(a), &Shape(c));
    assert_eq!(
        b(
            vec![p.clone(), Dim::Const(1)],
            vec![Dim::Const(1), Dim::Const(4)]
        ),
        Ok(Shape(vec![p.clone(), Dim::Const(4)]))
    );
    assert_eq!(
        b(vec![p.clone()], vec![p.clone()]),
        Ok(Shape(vec![p.clone()]))
    );
    // `pos` may be 3 at run time or not; the graph cannot promise it.
    assert!(b(vec![p.clone()], vec![Dim::Const(3)]).is_err());
    assert!(b(vec![p.clone()], vec![p.add(1)]).is_err());
}

#[test]
fn a_binary_op_broadcasts_its_operands_through_views() {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[2, 3]), DType::F32);
    let row = g.input("row", Shape::of(&[3]), DType::F32);
    let sum = x.add(&row).unwrap();
    assert_eq!(sum.shape(), &Shape::of(&[2, 3]));
    let [lhs, rhs] = operands_of(&sum)[..] else {
        panic!("add has two operands")
    };
    assert_eq!(lhs, x.id());
    g.with(|d| {
        // The row is made rank 2 by a reshape, then broadcast by an expand: no copy.
        assert_eq!(d.node(rhs).op, Op::Expand);
        assert_eq!(d.node(rhs).shape, Shape::of(&[2, 3]));
        let reshaped = d.inputs(rhs)[0];
        assert_eq!(d.node(reshaped).op, Op::Reshape);
        assert_eq!(d.node(reshaped).shape, Shape::of(&[1, 3]));
        assert_eq!(d.inputs(reshaped), vec![row.id()]);
    });
}

#[test]
fn broadcasting_a_constant_makes_a_constant_of_the_new_shape() {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[2, 3]), DType::F32);
    let shifted = x.add_scalar(1.5).unwrap();
    let c = operands_of(&shifted)[1];
    g.with(|d| {
        assert_eq!(d.node(c).op, Op::Const { value: 1.5 });
        assert_eq!(d.node(c).shape, Shape::of(&[2, 3]));
        assert!(d.inputs(c).is_empty());
    });
}

#[test]
fn broadcast_to_refuses_a_shape_it_cannot_reach() {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[2, 3]), DType::F32);
    // [2, 3] and [3] broadcast to [2, 3], which is not the asked-for [3].
    assert!(matches!(
        x.broadcast_to(&Shape::of(&[3])),
        Err(GraphError::Broadcast { .. })
    ));
    assert!(x.broadcast_to(&Shape::of(&[4, 3])).is_err());
    let same = x.broadcast_to(&Shape::of(&[2, 3])).unwrap();
    assert_eq!(same.id(), x.id());
}

#[test]
fn reshape_records_a_view_with_the_new_shape() {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[2, 3, 4]), DType::F32);
    let flat = x.reshape(Shape::of(&[6, 4])).unwrap();
    assert_eq!(op_of(&flat), Op::Reshape);
    assert_eq!(flat.shape(), &Shape::of(&[6, 4]));
    assert_eq!(operands_of(&flat), vec![x.id()]);
    assert_eq!(x.reshape(Shape::of(&[2, 3, 4])).unwrap().id(), x.id());
}

#[test]
fn reshape_keeps_symbols_whole_and_in_order() {
    let g = Graph::new();
    let pos = Symbol::new("pos", 1, 10).unwrap();
    let len = Symbol::new("len", 1, 10).unwrap();
    let (p, l) = (Dim::sym(&pos), Dim::sym(&len));
    let x = g.input(
        "x",
        Shape(vec![p.clone(), Dim::Const(2), Dim::Const(3)]),
        DType::F32,
    );
    let merged = x.reshape(Shape(vec![p.clone(), Dim::Const(6)])).unwrap();
    assert_eq!(merged.shape(), &Shape(vec![p.clone(), Dim::Const(6)]));
    for bad in [
        vec![p.clone(), Dim::Const(5)],
        vec![p.add(1), Dim::Const(6)],
        vec![Dim::Const(6)],
    ] {
        assert!(
            matches!(x.reshape(Shape(bad.clone())), Err(GraphError::Shape { .. })),
            "{}",
            Shape(bad)
        );
    }
    let two = g.input("two", Shape(vec![p.clone(), l.clone()]), DType::F32);
    assert!(two.reshape(Shape(vec![l, p])).is_err());
}

#[test]
fn reshaping_a_constant_makes_a_constant() {
    let g = Graph::new();
    let c = g.constant(2.0, Shape::of(&[2, 3]), DType::F32);
    let r = c.reshape(Shape::of(&[3, 2])).unwrap();
    assert_eq!(op_of(&r), Op::Const { value: 2.0 });
    assert_eq!(r.shape(), &Shape::of(&[3, 2]));
}

#[test]
fn permute_reorders_dims() {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[2, 3, 4]), DType::F32);
    let p = x.permute(&[2, 0, 1]).unwrap();
    assert_eq!(p.shape(), &Shape::of(&[4, 2, 3]));
    assert_eq!(op_of(&p), Op::Permute(vec![2, 0, 1]));
    assert_eq!(x.permute(&[0, 1, 2]).unwrap().id(), x.id());
    let t = x.transpose(-1, 0).unwrap();
    assert_eq!(t.shape(), &Shape::of(&[4, 3, 2]));
    assert_eq!(op_of(&t), Op::Permute(vec![2, 1, 0]));
}

#[test]
fn expand_broadcasts_size_one_axes_only() {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[2, 1, 4]), DType::F32);
    let e = x.expand(&Shape::of(&[2, 5, 4])).unwrap();
    assert_eq!(op_of(&e), Op::Expand);
    assert_eq!(e.shape(), &Shape::of(&[2, 5, 4]));
    assert_eq!(x.expand(&Shape::of(&[2, 1, 4])).unwrap().id(), x.id());
    assert!(x.expand(&Shape::of(&[3, 5, 4])).is_err());
    // Expand never adds axes; broadcast_to does that with a reshape first.
    assert!(x.expand(&Shape::of(&[1, 2, 5, 4])).is_err());
}

#[test]
fn narrow_records_a_slice_with_its_start_per_axis() {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[4, 6]), DType::F32);
    let s = x.narrow(1, 2, 3).unwrap();
    assert_eq!(s.shape(), &Shape::of(&[4, 3]));
    assert_eq!(
        op_of(&s),
        Op::Slice {
            starts: vec![Dim::Const(0), Dim::Const(2)]
        }
    );
    // The last window that fits, and one past it.
    assert!(x.narrow(-1, 3, 3).is_ok());
    assert!(x.narrow(-1, 4, 3).is_err());
    assert_eq!(x.narrow(-1, 0, 6).unwrap().id(), x.id());
}

#[test]
fn pad_grows_each_axis_by_its_amounts() {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[2, 3]), DType::F32);
    let p = x.pad(&[(1, 0), (0, 2)]).unwrap();
    assert_eq!(p.shape(), &Shape::of(&[3, 5]));
    assert_eq!(
        op_of(&p),
        Op::Pad(vec![
            (Dim::Const(1), Dim::Const(0)),
            (Dim::Const(0), Dim::Const(2))
        ])
    );
    assert_eq!(x.pad(&[(0, 0), (0, 0)]).unwrap().id(), x.id());
    let pos = Symbol::new("pos", 0, 8).unwrap();
    let row = g.input("row", Shape::of(&[1, 3]), DType::F32);
    let shifted = row
        .pad_dims(&[
            (Dim::sym(&pos), Dim::Const(0)),
            (Dim::Const(0), Dim::Const(0)),
        ])
        .unwrap();
    assert_eq!(
        shifted.shape(),
        &Shape(vec![Dim::sym(&pos).add(1), Dim::Const(3)])
    );
}

#[test]
fn concat_is_a_sum_of_padded_parts() {
    let g = Graph::new();
    let a = g.input("a", Shape::of(&[2, 3]), DType::F32);
    let b = g.input("b", Shape::of(&[2, 1]), DType::F32);
    let joined = Tensor::concat(&[a.clone(), b.clone()], -1).unwrap();
    assert_eq!(joined.shape(), &Shape::of(&[2, 4]));
    assert_eq!(op_of(&joined), Op::Binary(cranegrad_graph::BinaryOp::Add));
    let pads: Vec<Op> = g.with(|d| {
        d.inputs(joined.id())
            .into_iter()
            .map(|n| d.node(n).op.clone())
            .collect()
    });
    let z = Dim::Const(0);
    assert_eq!(
        pads,
        vec![
            Op::Pad(vec![(z.clone(), z.clone()), (z.clone(), Dim::Const(1))]),
            Op::Pad(vec![(z.clone(), z.clone()), (Dim::Const(3), z)]),
        ]
    );
}
