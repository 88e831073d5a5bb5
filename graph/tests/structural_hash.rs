//! The structural hash keys the compiled-plan cache: graphs built the same way must hash the
//! same, and any difference a kernel could depend on must change it.

use cranegrad_graph::{DType, Dim, Graph, Shape, Symbol, Tensor, structural_hash};

/// What a test varies about an otherwise fixed graph.
struct Variant {
    reduce_axis: isize,
    perm: [usize; 2],
    scale: f64,
    name: &'static str,
    dtype: DType,
    rows: usize,
    window_len: usize,
    pos_max: i64,
    with_data: Option<Vec<f32>>,
}

impl Default for Variant {
    fn default() -> Variant {
        Variant {
            reduce_axis: -1,
            perm: [1, 0],
            scale: 0.5,
            name: "x",
            dtype: DType::F32,
            rows: 4,
            window_len: 1,
            pos_max: 8,
            with_data: None,
        }
    }
}

fn hash_of(g: &Graph, outputs: &[&Tensor]) -> String {
    let ids: Vec<_> = outputs.iter().map(|t| t.id()).collect();
    g.with(|d| structural_hash(d, &ids))
}

/// A small graph touching every part of the hash: ops, attrs, shapes, dtypes, names, symbol
/// bounds and whether an input carries data.
fn build(v: &Variant) -> String {
    let g = Graph::new();
    let shape = Shape::of(&[v.rows, 3]);
    let x = match &v.with_data {
        Some(data) => g.input_with_data(v.name, shape, data.clone()).unwrap(),
        None => g.input(v.name, shape, DType::F32),
    };
    let y = x
        .mul_scalar(v.scale)
        .unwrap()
        .sum(v.reduce_axis, true)
        .unwrap();
    let t = x.permute(&v.perm).unwrap();
    let flags = g.input("flags", Shape::of(&[2]), v.dtype);
    let pos = Symbol::new("pos", 0, v.pos_max).unwrap();
    let cache = g.input("cache", Shape::of(&[16]), DType::F32);
    let window = cache.narrow(0, Dim::sym(&pos), v.window_len).unwrap();
    hash_of(&g, &[&y, &t, &flags, &window])
}

#[test]
fn equally_built_graphs_hash_equal() {
    let base = build(&Variant::default());
    assert_eq!(base, build(&Variant::default()));
    assert_eq!(base.len(), 32);
    assert!(base.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn every_structural_difference_changes_the_hash() {
    let base = build(&Variant::default());
    let d = Variant::default;
    let variants = [
        (
            "reduce axis",
            Variant {
                reduce_axis: 0,
                ..d()
            },
        ),
        (
            "permutation",
            Variant {
                perm: [0, 1],
                ..d()
            },
        ),
        ("constant value", Variant { scale: 0.25, ..d() }),
        ("input name", Variant { name: "z", ..d() }),
        (
            "dtype",
            Variant {
                dtype: DType::I32,
                ..d()
            },
        ),
        ("shape", Variant { rows: 5, ..d() }),
        (
            "window length",
            Variant {
                window_len: 2,
                ..d()
            },
        ),
        ("symbol bound", Variant { pos_max: 9, ..d() }),
        (
            "data attached",
            Variant {
                with_data: Some(vec![0.0; 12]),
                ..d()
            },
        ),
    ];
    for (what, v) in variants {
        assert_ne!(build(&v), base, "{what} did not change the hash");
    }
}

#[test]
fn data_values_do_not_change_the_hash() {
    let ones = Variant {
        with_data: Some(vec![1.0; 12]),
        ..Variant::default()
    };
    let twos = Variant {
        with_data: Some(vec![2.0; 12]),
        ..Variant::default()
    };
    assert_eq!(build(&ones), build(&twos));
}

#[test]
fn build_order_and_unused_nodes_do_not_change_the_hash() {
    let first = {
        let g = Graph::new();
        let a = g.input("a", Shape::of(&[2]), DType::F32);
        let b = g.input("b", Shape::of(&[2]), DType::F32);
        hash_of(&g, &[&a.add(&b).unwrap()])
    };
    let second = {
        let g = Graph::new();
        let _unused = g.input("unused", Shape::of(&[7]), DType::I32);
        let b = g.input("b", Shape::of(&[2]), DType::F32);
        let a = g.input("a", Shape::of(&[2]), DType::F32);
        hash_of(&g, &[&a.add(&b).unwrap()])
    };
    assert_eq!(first, second);
}

#[test]
fn operand_order_and_output_order_change_the_hash() {
    let g = Graph::new();
    let a = g.input("a", Shape::of(&[2]), DType::F32);
    let b = g.input("b", Shape::of(&[2]), DType::F32);
    let lt = a.cmplt(&b).unwrap();
    let gt = b.cmplt(&a).unwrap();
    assert_ne!(hash_of(&g, &[&lt]), hash_of(&g, &[&gt]));
    assert_ne!(hash_of(&g, &[&a, &b]), hash_of(&g, &[&b, &a]));
}

#[test]
fn a_symbol_only_in_slice_starts_still_counts() {
    // No shape mentions `pos`: the window has a constant length. Its bounds still decide the
    // kernel's bounds proof.
    let hash = |max: i64| {
        let g = Graph::new();
        let pos = Symbol::new("pos", 0, max).unwrap();
        let cache = g.input("cache", Shape::of(&[16]), DType::F32);
        let row = cache.narrow(0, Dim::sym(&pos), 1).unwrap();
        hash_of(&g, &[&row])
    };
    assert_eq!(hash(10), hash(10));
    assert_ne!(hash(10), hash(12));
}
