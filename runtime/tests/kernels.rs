//! End-to-end kernel tests: JIT (fused and unfused) against the reference interpreter.

mod common;

use common::{check_all, rand_vec, run_jit, worst};
use cranegrad_graph::{Bindings, DType, Graph, Shape};
use cranegrad_runtime::Feeds;

#[test]
fn chain_with_broadcast_row() {
    let g = Graph::new();
    let x = g
        .input_with_data("x", Shape::of(&[37, 45]), rand_vec(37 * 45, 1, 2.0))
        .unwrap();
    let b = g
        .input_with_data("b", Shape::of(&[45]), rand_vec(45, 2, 2.0))
        .unwrap();
    let y = x.mul(&b).unwrap().add_scalar(1.0).unwrap().relu().unwrap();
    let y = y
        .mul(&x)
        .unwrap()
        .sub(&x.mul_scalar(0.5).unwrap())
        .unwrap()
        .add(&b)
        .unwrap();
    check_all(&[&y], &Feeds::new(), &Bindings::new(), 1e-6, 1e-6);
}

#[test]
fn threaded_elementwise_with_broadcasts() {
    // Every output has more than 64K elements, above the runtime's 32K-element threshold for
    // going parallel, so check_all's two-thread sessions split each kernel in two; the odd
    // extents put the split (and the 1-D kernel's 16-aligned split) off any round boundary.
    let g = Graph::new();
    let (r, c) = (257, 263);
    let x = g
        .input_with_data("x", Shape::of(&[r, c]), rand_vec(r * c, 11, 3.0))
        .unwrap();
    let row = g
        .input_with_data("row", Shape::of(&[c]), rand_vec(c, 12, 2.0))
        .unwrap();
    let col = g
        .input_with_data("col", Shape::of(&[r, 1]), rand_vec(r, 13, 2.0))
        .unwrap();
    let y = x
        .mul(&row)
        .unwrap()
        .add(&col)
        .unwrap()
        .mul_scalar(0.5)
        .unwrap()
        .exp()
        .unwrap();
    let mask = x.cmplt(&col).unwrap();
    let w = mask.where_(&y, &x.sin().unwrap()).unwrap();
    let n = 70_001;
    let flat = g
        .input_with_data("flat", Shape::of(&[n]), rand_vec(n, 14, 4.0))
        .unwrap();
    let f = flat
        .square()
        .unwrap()
        .add_scalar(1.0)
        .unwrap()
        .sqrt()
        .unwrap();
    let cube = g
        .input_with_data("cube", Shape::of(&[3, 150, 160]), rand_vec(72_000, 15, 1.0))
        .unwrap();
    let plane = g
        .input_with_data("plane", Shape::of(&[3, 1, 160]), rand_vec(480, 16, 1.0))
        .unwrap();
    let mid = g
        .input_with_data("mid", Shape::of(&[150, 1]), rand_vec(150, 17, 1.0))
        .unwrap();
    let z = cube.sub(&plane).unwrap().mul(&mid).unwrap().relu().unwrap();
    for t in [&w, &f, &z] {
        assert!(t.shape().static_numel().unwrap() >= 64 * 1024);
    }
    let out = check_all(&[&w, &f, &z], &Feeds::new(), &Bindings::new(), 1e-5, 1e-5);
    // The last element of each output (the second thread's share) is a real value.
    let last = out[2].to_f32()[72_000 - 1];
    let want = ((rand_vec(72_000, 15, 1.0)[71_999] - rand_vec(480, 16, 1.0)[479])
        * rand_vec(150, 17, 1.0)[149])
        .max(0.0);
    assert!((last - want).abs() <= 1e-6, "{last} vs {want}");
}

#[test]
fn transcendental_and_reductions() {
    let g = Graph::new();
    let x = g
        .input_with_data("x", Shape::of(&[7, 33]), rand_vec(7 * 33, 3, 4.0))
        .unwrap();
    let s = x.softmax(-1).unwrap();
    let m = x.sum(0, false).unwrap();
    let l = x
        .square()
        .unwrap()
        .add_scalar(1.0)
        .unwrap()
        .log()
        .unwrap()
        .sin()
        .unwrap();
    check_all(&[&s, &m, &l], &Feeds::new(), &Bindings::new(), 1e-5, 1e-5);
}

#[test]
fn matmul_and_movement() {
    let g = Graph::new();
    let a = g
        .input_with_data("a", Shape::of(&[2, 5, 17]), rand_vec(170, 4, 1.0))
        .unwrap();
    let w = g
        .input_with_data("w", Shape::of(&[17, 9]), rand_vec(153, 5, 1.0))
        .unwrap();
    let y = a.matmul(&w).unwrap().gelu_tanh().unwrap();
    let t = y
        .permute(&[2, 0, 1])
        .unwrap()
        .reshape(Shape::of(&[9, 10]))
        .unwrap();
    let p = t.pad(&[(1, 2), (0, 3)]).unwrap().narrow(0, 1, 10).unwrap();
    let c = cranegrad_graph::Tensor::concat(&[t.clone(), p.narrow(0, 0, 9).unwrap()], 1).unwrap();
    check_all(
        &[&y, &t, &p, &c],
        &Feeds::new(),
        &Bindings::new(),
        1e-5,
        1e-5,
    );
}

#[test]
fn integer_and_bool_ops() {
    let g = Graph::new();
    let x = g
        .input_with_data("x", Shape::of(&[50]), rand_vec(50, 6, 10.0))
        .unwrap();
    let i = x.cast(DType::I32).unwrap();
    let j = i
        .mul(&i)
        .unwrap()
        .add(&i)
        .unwrap()
        .maximum(&i.scalar(3.0))
        .unwrap();
    let mask = x.cmplt(&x.scalar(0.0)).unwrap();
    let w = mask.where_(&x.neg().unwrap(), &x.sqrt().unwrap()).unwrap();
    let am = g
        .input_with_data("m", Shape::of(&[4, 6]), rand_vec(24, 7, 1.0))
        .unwrap()
        .argmax_last()
        .unwrap();
    check_all(&[&j, &w, &am], &Feeds::new(), &Bindings::new(), 1e-6, 1e-6);
}

#[test]
fn gather_rows_is_an_embedding_lookup() {
    let g = Graph::new();
    let table = g
        .input_with_data("table", Shape::of(&[11, 6]), rand_vec(66, 8, 1.0))
        .unwrap();
    let ids = g.input("ids", Shape::of(&[2, 3]), DType::I32);
    let e = table.gather_rows(&ids).unwrap();
    let y = e.mul_scalar(2.0).unwrap().sum(-1, true).unwrap();
    let mut feeds = Feeds::new();
    feeds.insert("ids".into(), vec![0i32, 10, 3, 3, 7, 1].into());
    let r = check_all(&[&e, &y], &feeds, &Bindings::new(), 1e-6, 1e-6);
    assert_eq!(r[0].shape, vec![2, 3, 6]);
    // An id outside the table is an error before any kernel runs, not a stray read.
    feeds.insert("ids".into(), vec![0i32, 11, 3, 3, 7, 1].into());
    let mut s = common::session(true, 2);
    let err = s
        .realize(&[&e], &feeds, &Bindings::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ids") && err.contains("id 11") && err.contains("11 rows"),
        "{err}"
    );
}

#[test]
fn reduce_max_propagates_nan_from_any_position() {
    // Rows of 11 (two vector steps plus a tail); a NaN in the first, middle or tail position.
    for pos in [0usize, 5, 10] {
        let mut data = rand_vec(3 * 11, 9, 4.0);
        data[11 + pos] = f32::NAN;
        let g = Graph::new();
        let x = g.input_with_data("x", Shape::of(&[3, 11]), data).unwrap();
        let m = x.max(-1, false).unwrap();
        let s = x.softmax(-1).unwrap();
        // Over the columns too (a column kernel's max, whose NaN only the sum carries).
        let c = x.softmax(0).unwrap();
        let r = check_all(&[&m, &s, &c], &Feeds::new(), &Bindings::new(), 1e-6, 1e-6);
        let jit = run_jit(&[&m, &s, &c], &Feeds::new(), &Bindings::new());
        for (who, out) in [
            ("interpreter", &r),
            ("fused", &jit[0]),
            ("unfused", &jit[1]),
        ] {
            let v = out[0].to_f32();
            assert!(
                v[1].is_nan() && !v[0].is_nan() && !v[2].is_nan(),
                "{who}, pos {pos}: {v:?}"
            );
            // The whole NaN row of the softmax is NaN, the other rows are finite.
            let sm = out[1].to_f32();
            assert!(
                sm[11..22].iter().all(|p| p.is_nan()),
                "{who}, pos {pos}: {sm:?}"
            );
            assert!(
                sm[..11].iter().chain(&sm[22..]).all(|p| p.is_finite()),
                "{who}, pos {pos}: {sm:?}"
            );
            let cols = out[2].to_f32();
            for (i, p) in cols.iter().enumerate() {
                assert_eq!(p.is_nan(), i % 11 == pos, "{who}, pos {pos}: {cols:?}");
            }
        }
    }
}

#[test]
fn a_nan_inside_a_wide_column_unit_spoils_only_its_column() {
    // A column softmax over [5, 70]: columns 0..64 run as one 16-vector unit, 64..68 as one
    // vector, 68..70 alone; a NaN at column 10 (inside the wide unit, where the max is a
    // plain maxps) and one at column 69 (a scalar unit).
    let (r, c) = (5usize, 70usize);
    let mut data = rand_vec(r * c, 31, 6.0);
    data[2 * c + 10] = f32::NAN;
    data[4 * c + 69] = f32::NAN;
    let g = Graph::new();
    let x = g.input_with_data("x", Shape::of(&[r, c]), data).unwrap();
    let s = x.softmax(0).unwrap();
    let out = check_all(&[&s], &Feeds::new(), &Bindings::new(), 1e-6, 1e-6);
    for (i, p) in out[0].to_f32().iter().enumerate() {
        let col = i % c;
        assert_eq!(p.is_nan(), col == 10 || col == 69, "column {col}: {p}");
    }
}

#[test]
fn worst_fails_nan_and_infinity_against_finite() {
    let t = |a: f32, b: f32| worst(&[1.0, a], &[1.0, b], 1e-6, 1e-6);
    assert_eq!(t(f32::NAN, f32::NAN), 0.0);
    assert_eq!(t(f32::INFINITY, f32::INFINITY), 0.0);
    assert_eq!(t(f32::NAN, 2.0), f32::INFINITY);
    assert_eq!(t(2.0, f32::NAN), f32::INFINITY);
    assert_eq!(t(f32::INFINITY, 2.0), f32::INFINITY);
    assert_eq!(t(2.0, f32::NEG_INFINITY), f32::INFINITY);
    assert_eq!(t(f32::INFINITY, f32::NEG_INFINITY), f32::INFINITY);
    assert_eq!(t(f32::NAN, f32::INFINITY), f32::INFINITY);
    // Finite values keep their graded error: 2e-6 off at |b| = 1 is one tolerance unit.
    assert!((t(1.000_002, 1.0) - 1.0).abs() < 0.1);
}
