//! Element types: there is no implicit promotion, so every op either gets the dtypes it
//! accepts or names the op and the dtypes it refused.

use cranegrad_graph::op::binary_result_dtype;
use cranegrad_graph::{BinaryOp, DType, Graph, GraphError, Op, Shape, Tensor};

fn three(g: &Graph, name: &str, dtype: DType) -> Tensor {
    g.input(name, Shape::of(&[3]), dtype)
}

#[test]
fn every_dtype_is_one_word_with_a_short_name() {
    for (dtype, name) in [
        (DType::F32, "f32"),
        (DType::I32, "i32"),
        (DType::Bool, "bool"),
    ] {
        assert_eq!(dtype.size_bytes(), 4);
        assert_eq!(dtype.name(), name);
        assert_eq!(dtype.to_string(), name);
        assert_eq!(dtype.is_float(), dtype == DType::F32);
    }
}

#[test]
fn binary_operands_of_different_dtypes_are_not_promoted() {
    let g = Graph::new();
    let f = three(&g, "f", DType::F32);
    let i = three(&g, "i", DType::I32);
    assert_eq!(
        f.add(&i).unwrap_err(),
        GraphError::DType {
            op: "add".into(),
            lhs: DType::F32,
            rhs: DType::I32,
        }
    );
    assert!(matches!(i.cmplt(&f), Err(GraphError::DType { .. })));
    assert_eq!(i.add(&i).unwrap().dtype(), DType::I32);
}

#[test]
fn cmplt_gives_bool_and_the_others_keep_the_operand_dtype() {
    for dtype in [DType::F32, DType::I32, DType::Bool] {
        assert_eq!(binary_result_dtype(BinaryOp::CmpLt, dtype), DType::Bool);
        for op in [BinaryOp::Add, BinaryOp::Mul, BinaryOp::Max] {
            assert_eq!(binary_result_dtype(op, dtype), dtype);
        }
    }
    let g = Graph::new();
    let f = three(&g, "f", DType::F32);
    assert_eq!(f.cmplt(&f).unwrap().dtype(), DType::Bool);
    assert_eq!(f.cmpgt(&f).unwrap().dtype(), DType::Bool);
}

#[test]
fn bool_takes_only_mul_and_max() {
    let g = Graph::new();
    let b = three(&g, "b", DType::Bool);
    assert_eq!(b.mul(&b).unwrap().dtype(), DType::Bool);
    assert_eq!(b.maximum(&b).unwrap().dtype(), DType::Bool);
    for (result, op) in [(b.add(&b), "add"), (b.cmplt(&b), "cmplt")] {
        assert_eq!(
            result.unwrap_err(),
            GraphError::UnsupportedDType {
                op: op.into(),
                dtype: DType::Bool,
            }
        );
    }
    assert!(matches!(b.neg(), Err(GraphError::UnsupportedDType { .. })));
    assert!(matches!(
        b.sum(0, true),
        Err(GraphError::UnsupportedDType { .. })
    ));
}

#[test]
fn float_math_refuses_integers_but_neg_does_not() {
    let g = Graph::new();
    let i = three(&g, "i", DType::I32);
    let refused = [
        (i.exp2(), "exp2"),
        (i.log2(), "log2"),
        (i.sqrt(), "sqrt"),
        (i.recip(), "recip"),
        (i.sin(), "sin"),
    ];
    for (result, op) in refused {
        assert_eq!(
            result.unwrap_err(),
            GraphError::UnsupportedDType {
                op: op.into(),
                dtype: DType::I32,
            }
        );
    }
    assert_eq!(i.neg().unwrap().dtype(), DType::I32);
    assert_eq!(i.sum(0, true).unwrap().dtype(), DType::I32);
}

#[test]
fn cast_records_a_node_only_when_the_dtype_changes() {
    let g = Graph::new();
    let f = three(&g, "f", DType::F32);
    assert_eq!(f.cast(DType::F32).unwrap().id(), f.id());
    let i = f.cast(DType::I32).unwrap();
    assert_ne!(i.id(), f.id());
    assert_eq!(i.dtype(), DType::I32);
    let op = g.with(|d| d.node(i.id()).op.clone());
    assert_eq!(op, Op::Unary(cranegrad_graph::UnaryOp::Cast));
}

#[test]
fn where_needs_a_bool_condition_and_branches_of_one_dtype() {
    let g = Graph::new();
    let f = three(&g, "f", DType::F32);
    let i = three(&g, "i", DType::I32);
    let cond = f.cmplt(&f).unwrap();
    assert_eq!(cond.where_(&i, &i).unwrap().dtype(), DType::I32);
    assert_eq!(
        f.where_(&f, &f).unwrap_err(),
        GraphError::UnsupportedDType {
            op: "where (condition)".into(),
            dtype: DType::F32,
        }
    );
    assert_eq!(
        cond.where_(&f, &i).unwrap_err(),
        GraphError::DType {
            op: "where".into(),
            lhs: DType::F32,
            rhs: DType::I32,
        }
    );
}

#[test]
fn matmul_is_f32_only() {
    let g = Graph::new();
    let mi = g.input("mi", Shape::of(&[2, 2]), DType::I32);
    let mf = g.input("mf", Shape::of(&[2, 2]), DType::F32);
    assert_eq!(
        mi.matmul(&mi).unwrap_err(),
        GraphError::UnsupportedDType {
            op: "matmul".into(),
            dtype: DType::I32,
        }
    );
    assert!(matches!(mf.matmul(&mi), Err(GraphError::DType { .. })));
}

#[test]
fn gather_indices_must_be_i32() {
    let g = Graph::new();
    let table = g.input("table", Shape::of(&[4, 2]), DType::F32);
    let float_ids = three(&g, "ids", DType::F32);
    assert_eq!(
        table.gather_rows(&float_ids).unwrap_err(),
        GraphError::UnsupportedDType {
            op: "gather (indices)".into(),
            dtype: DType::F32,
        }
    );
    let ids = three(&g, "ids", DType::I32);
    let rows = table.gather_rows(&ids).unwrap();
    assert_eq!(rows.dtype(), DType::F32);
    assert_eq!(rows.shape(), &Shape::of(&[3, 2]));
}

#[test]
fn input_data_decides_the_input_dtype() {
    let g = Graph::new();
    let ids = g
        .input_with_data("ids", Shape::of(&[2]), vec![1i32, 2])
        .unwrap();
    assert_eq!(ids.dtype(), DType::I32);
    let w = g
        .input_with_data("w", Shape::of(&[2]), vec![0.5f32, 1.5])
        .unwrap();
    assert_eq!(w.dtype(), DType::F32);
}
