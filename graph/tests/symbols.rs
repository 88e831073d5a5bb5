//! Symbolic dimensions: bounds, binding, the maximum buffers are sized for, arithmetic that
//! stays symbolic, and the Tensor API's checks that a window fits for every bound value.

use cranegrad_graph::{Bindings, DType, Dim, Graph, GraphError, Op, Shape, Symbol};

fn pos(min: i64, max: i64) -> Symbol {
    Symbol::new("pos", min, max).unwrap()
}

fn bind(value: i64) -> Bindings {
    Bindings::from([("pos".into(), value)])
}

#[test]
fn symbol_bounds_must_be_ordered_and_non_negative() {
    assert_eq!(
        Symbol::new("pos", -1, 4),
        Err(GraphError::BadSymbol {
            name: "pos".into(),
            min: -1,
            max: 4,
        })
    );
    assert!(Symbol::new("pos", 5, 4).is_err());
    let fixed = Symbol::new("pos", 4, 4).unwrap();
    assert_eq!(fixed.to_string(), "pos[4..=4]");
}

#[test]
fn a_symbolic_dim_evaluates_to_its_binding_plus_offset() {
    let p = Dim::sym(&pos(1, 10));
    assert_eq!(p.eval(&bind(3)), Ok(3));
    assert_eq!(p.add(2).eval(&bind(3)), Ok(5));
    // A negative result is an empty axis, not an underflow.
    assert_eq!(p.add(-5).eval(&bind(3)), Ok(0));
    assert_eq!(Dim::Const(7).eval(&Bindings::new()), Ok(7));
}

#[test]
fn binding_a_symbol_checks_it_is_bound_and_in_range() {
    let p = Dim::sym(&pos(1, 10));
    assert_eq!(
        p.eval(&Bindings::new()),
        Err(GraphError::UnboundSymbol("pos".into()))
    );
    assert_eq!(
        p.eval(&bind(11)),
        Err(GraphError::SymbolOutOfRange {
            name: "pos".into(),
            value: 11,
            min: 1,
            max: 10,
        })
    );
    assert!(p.eval(&bind(0)).is_err());
    assert_eq!(p.eval(&bind(10)), Ok(10));
}

#[test]
fn max_and_min_values_follow_the_bounds_and_offset() {
    let p = Dim::sym(&pos(1, 10));
    assert_eq!((p.max_value(), p.min_value()), (10, 1));
    assert_eq!((p.add(3).max_value(), p.add(3).min_value()), (13, 4));
    // pos - 2 is at least -1, which as a size is 0.
    assert_eq!((p.add(-2).max_value(), p.add(-2).min_value()), (8, 0));
    assert_eq!(
        (Dim::Const(6).max_value(), Dim::Const(6).min_value()),
        (6, 6)
    );
}

#[test]
fn adding_keeps_at_most_one_symbol() {
    let sym = pos(1, 10);
    let p = Dim::sym(&sym);
    assert_eq!(Dim::Const(2).plus(&Dim::Const(3)), Some(Dim::Const(5)));
    assert_eq!(p.plus(&Dim::Const(3)), Some(p.add(3)));
    assert_eq!(Dim::Const(3).plus(&p), Some(p.add(3)));
    assert_eq!(p.plus(&p), None);
    assert_eq!(Dim::Const(2).add(-5), Dim::Const(0));
    assert_eq!(p.add(2).add(-2), p);
    assert_eq!(p.symbol(), Some(&sym));
    assert_eq!(Dim::Const(1).symbol(), None);
}

#[test]
fn dims_print_with_their_offset_sign() {
    let p = Dim::sym(&pos(1, 10));
    assert_eq!(p.to_string(), "pos");
    assert_eq!(p.add(1).to_string(), "pos+1");
    assert_eq!(p.add(-2).to_string(), "pos-2");
    assert_eq!(Dim::Const(9).to_string(), "9");
    assert!(Dim::Const(1).is_one());
    assert!(!p.is_one());
}

#[test]
fn a_symbolic_window_must_fit_at_the_symbols_maximum() {
    let g = Graph::new();
    let cache = g.input("cache", Shape::of(&[16, 4]), DType::F32);
    let row = cache.narrow(0, Dim::sym(&pos(0, 15)), 1).unwrap();
    assert_eq!(
        g.with(|d| d.node(row.id()).op.clone()),
        Op::Slice {
            starts: vec![Dim::sym(&pos(0, 15)), Dim::Const(0)]
        }
    );
    // At pos = 16 the row would start past the end.
    assert!(cache.narrow(0, Dim::sym(&pos(0, 16)), 1).is_err());
    assert!(cache.narrow(0, 0, Dim::sym(&pos(0, 16))).is_ok());
    assert!(cache.narrow(0, 0, Dim::sym(&pos(0, 17))).is_err());
}

#[test]
fn narrowing_a_symbolic_axis_must_stay_inside_its_smallest_value() {
    let g = Graph::new();
    let never_empty = Dim::sym(&pos(1, 8));
    let maybe_empty = Dim::sym(&pos(0, 8));
    let x = g.input(
        "x",
        Shape(vec![never_empty.clone(), Dim::Const(4)]),
        DType::F32,
    );
    assert!(x.narrow(0, 0, 1).is_ok());
    // Only windows at 0 are provable without knowing pos.
    assert!(x.narrow(0, 1, 0).is_err());
    assert_eq!(x.narrow(0, 0, never_empty).unwrap().id(), x.id());
    let y = g.input("y", Shape(vec![maybe_empty, Dim::Const(4)]), DType::F32);
    assert!(y.narrow(0, 0, 1).is_err());
}

#[test]
fn write_slice_must_fit_for_every_symbol_value() {
    let g = Graph::new();
    let cache = g.input("cache", Shape::of(&[8, 2]), DType::F32);
    let rows = g.input("rows", Shape::of(&[2, 2]), DType::F32);
    let fits = [Dim::sym(&pos(0, 6)), Dim::Const(0)];
    let written = cache.write_slice(&rows, &fits).unwrap();
    assert_eq!(written.shape(), cache.shape());
    let overflows = [Dim::sym(&pos(0, 7)), Dim::Const(0)];
    assert!(matches!(
        cache.write_slice(&rows, &overflows),
        Err(GraphError::Shape { .. })
    ));
}

#[test]
fn an_axis_holds_at_most_one_symbol() {
    let g = Graph::new();
    let p = Dim::sym(&pos(0, 8));
    let x = g.input("x", Shape(vec![p.clone()]), DType::F32);
    let z = Dim::Const(0);
    assert!(x.pad_dims(&[(z.clone(), Dim::Const(1))]).is_ok());
    assert!(x.pad_dims(&[(z, p)]).is_err());
}

#[test]
fn a_mean_over_a_symbolic_axis_is_refused() {
    let g = Graph::new();
    let x = g.input(
        "x",
        Shape(vec![Dim::sym(&pos(1, 8)), Dim::Const(4)]),
        DType::F32,
    );
    assert!(matches!(x.mean(0, true), Err(GraphError::Shape { .. })));
    assert!(x.mean(1, true).is_ok());
    // A sum needs no count, so it is fine over the symbol.
    assert!(x.sum(0, true).is_ok());
}

#[test]
fn op_dims_list_the_symbols_no_shape_mentions() {
    let p = Dim::sym(&pos(0, 8));
    let slice = Op::Slice {
        starts: vec![p.clone(), Dim::Const(0)],
    };
    assert_eq!(slice.dims(), vec![&p, &Dim::Const(0)]);
    let pad = Op::Pad(vec![(Dim::Const(1), p.clone())]);
    assert_eq!(pad.dims(), vec![&Dim::Const(1), &p]);
    assert!(Op::MatMul.dims().is_empty());
}
