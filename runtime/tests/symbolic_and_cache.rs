//! Symbolic dimensions and the two caches: one compiled plan serves every value of a symbol,
//! identical graphs compile nothing the second time, a changed static shape compiles anew.

mod common;

use common::{rand_vec, worst};
use cranegrad_graph::{Bindings, DType, Dim, Graph, HostData, Shape, Symbol, Tensor};
use cranegrad_runtime::{Feeds, Session, interpret_tensors};

fn session() -> Session {
    common::session(true, 2)
}

/// A KV-cache-shaped graph: attention-like scores over the first `pos + 1` rows of a cache.
fn kv_graph(pos: &Symbol) -> (Graph, Tensor) {
    let g = Graph::new();
    let cache = g.input("cache", Shape::of(&[64, 8]), DType::F32);
    let q = g.input("q", Shape::of(&[1, 8]), DType::F32);
    let keys = cache.narrow(0, 0, Dim::sym(pos).add(1)).unwrap();
    let scores = q
        .matmul(&keys.transpose(0, 1).unwrap())
        .unwrap()
        .mul_scalar(0.35)
        .unwrap();
    let p = scores.softmax(-1).unwrap();
    let out = p.matmul(&keys).unwrap();
    (g, out)
}

#[test]
fn one_plan_serves_every_symbol_value() {
    let pos = Symbol::new("pos", 0, 63).unwrap();
    let (_g, out) = kv_graph(&pos);
    let mut feeds = Feeds::new();
    feeds.insert("cache".into(), HostData::from(rand_vec(64 * 8, 1, 1.0)));
    feeds.insert("q".into(), HostData::from(rand_vec(8, 2, 1.0)));
    let mut s = session();
    let mut compiled_after_first = None;
    for p in [0i64, 4, 17, 63] {
        let b = Bindings::from([(pos.name.clone(), p)]);
        let got = s.realize(&[&out], &feeds, &b).unwrap();
        let want = interpret_tensors(&[&out], &feeds, &b).unwrap();
        assert_eq!(got[0].shape, vec![1, 8]);
        assert!(
            worst(&got[0].to_f32(), &want[0].to_f32(), 1e-5, 1e-5) <= 1.0,
            "pos={p}"
        );
        let misses = s.cache_stats().misses;
        match compiled_after_first {
            None => compiled_after_first = Some(misses),
            Some(m) => {
                assert_eq!(misses, m, "a new value of pos must not compile anything");
                assert!(s.last_report().plan_cached);
            }
        }
    }
    // A symbolic output shape comes back at its bound size.
    let g = Graph::new();
    let n = Symbol::new("n", 1, 32).unwrap();
    let x = g.input("x", Shape(vec![Dim::sym(&n), Dim::Const(3)]), DType::F32);
    let y = x.mul(&x).unwrap().add_scalar(1.0).unwrap();
    let b = Bindings::from([(n.name.clone(), 5)]);
    let mut f = Feeds::new();
    f.insert("x".into(), HostData::from(rand_vec(15, 3, 1.0)));
    let got = s.realize(&[&y], &f, &b).unwrap();
    let want = interpret_tensors(&[&y], &f, &b).unwrap();
    assert_eq!(got[0].shape, vec![5, 3]);
    assert!(worst(&got[0].to_f32(), &want[0].to_f32(), 1e-6, 1e-6) <= 1.0);
}

#[test]
fn symbol_out_of_bounds_is_an_error_before_any_kernel() {
    let pos = Symbol::new("pos", 0, 63).unwrap();
    let (_g, out) = kv_graph(&pos);
    let mut feeds = Feeds::new();
    feeds.insert("cache".into(), HostData::from(rand_vec(64 * 8, 1, 1.0)));
    feeds.insert("q".into(), HostData::from(rand_vec(8, 2, 1.0)));
    let mut s = session();
    let err = s
        .realize(&[&out], &feeds, &Bindings::from([(pos.name.clone(), 64)]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("pos = 64") && err.contains("0..=63"), "{err}");
    let err = s
        .realize(&[&out], &feeds, &Bindings::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("pos") && err.contains("not bound"), "{err}");
}

fn chain(rows: usize) -> Tensor {
    let g = Graph::new();
    let x = g
        .input_with_data("x", Shape::of(&[rows, 16]), rand_vec(rows * 16, 5, 1.0))
        .unwrap();
    x.exp().unwrap().add(&x).unwrap().softmax(-1).unwrap()
}

#[test]
fn identical_graph_compiles_nothing_and_new_shape_compiles() {
    let mut s = session();
    let a = chain(8);
    s.realize(&[&a], &Feeds::new(), &Bindings::new()).unwrap();
    let first = s.cache_stats();
    assert!(first.misses > 0);
    // Rebuilt from scratch in a new graph: same structure, so the plan cache serves it.
    let b = chain(8);
    s.realize(&[&b], &Feeds::new(), &Bindings::new()).unwrap();
    assert_eq!(
        s.cache_stats().misses,
        first.misses,
        "identical graph compiled again"
    );
    assert!(s.last_report().plan_cached);
    assert_eq!(s.last_report().compile_ms, 0.0);
    // A changed static shape is a new plan with new kernels.
    let c = chain(9);
    s.realize(&[&c], &Feeds::new(), &Bindings::new()).unwrap();
    assert!(!s.last_report().plan_cached);
    assert!(
        s.cache_stats().misses > first.misses,
        "new static shape must compile"
    );
    // Identical kernels inside one plan are compiled once.
    let g = Graph::new();
    let x = g
        .input_with_data("x", Shape::of(&[4, 4]), rand_vec(16, 1, 1.0))
        .unwrap();
    let y = g
        .input_with_data("y", Shape::of(&[4, 4]), rand_vec(16, 2, 1.0))
        .unwrap();
    let (sx, sy) = (x.sum(1, true).unwrap(), y.sum(1, true).unwrap());
    let mut fresh = session();
    let out = fresh
        .realize(&[&sx, &sy], &Feeds::new(), &Bindings::new())
        .unwrap();
    assert_eq!(fresh.cache_stats().misses, 1);
    assert_eq!(fresh.cache_stats().hits, 1);
    assert_ne!(out[0].to_f32(), out[1].to_f32());
}

/// Row `pos` of a `[40, 8]` cache, doubled: `pos` appears only in the slice's start, never in
/// a shape.
fn row_at(pos: &Symbol) -> Tensor {
    let g = Graph::new();
    let cache = g
        .input_with_data("cache", Shape::of(&[40, 8]), rand_vec(320, 21, 1.0))
        .unwrap();
    cache
        .narrow(0, Dim::sym(pos), 1)
        .unwrap()
        .mul_scalar(2.0)
        .unwrap()
}

#[test]
fn symbol_bounds_in_slice_starts_are_part_of_the_plan_key() {
    let narrow_pos = Symbol::new("pos", 1, 16).unwrap();
    let wide_pos = Symbol::new("pos", 1, 32).unwrap();
    let (narrow, wide) = (row_at(&narrow_pos), row_at(&wide_pos));
    let mut s = session();
    let b3 = Bindings::from([(narrow_pos.name.clone(), 3)]);
    s.realize(&[&narrow], &Feeds::new(), &b3).unwrap();
    // Same ops and shapes, other bounds: a plan built for 1..=16 must not serve 1..=32.
    let b20 = Bindings::from([(wide_pos.name.clone(), 20)]);
    let got = s.realize(&[&wide], &Feeds::new(), &b20).unwrap();
    assert!(!s.last_report().plan_cached);
    let want: Vec<f32> = rand_vec(320, 21, 1.0)[160..168]
        .iter()
        .map(|v| 2.0 * v)
        .collect();
    assert_eq!(got[0].to_f32(), want);
    // The narrow graph still rejects 20 with its own bounds.
    let err = s
        .realize(&[&narrow], &Feeds::new(), &b20)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pos = 20") && err.contains("1..=16"), "{err}");
}

#[test]
fn a_new_symbol_value_reuses_the_compiled_kernels() {
    // Plans are dropped between runs, so each run lowers again and looks every kernel up by
    // key: a new value of `n` must hit, because values are passed at run time, not compiled in.
    let n = Symbol::new("n", 1, 32).unwrap();
    let g = Graph::new();
    let x = g.input("x", Shape(vec![Dim::sym(&n), Dim::Const(3)]), DType::F32);
    let y = x
        .mul(&x)
        .unwrap()
        .add_scalar(1.0)
        .unwrap()
        .softmax(-1)
        .unwrap();
    let mut s = session();
    let mut compiled = None;
    for v in [3i64, 9, 32] {
        s.clear_plans();
        let b = Bindings::from([(n.name.clone(), v)]);
        let mut f = Feeds::new();
        f.insert("x".into(), HostData::from(rand_vec(3 * v as usize, 4, 1.0)));
        let got = s.realize(&[&y], &f, &b).unwrap();
        let want = interpret_tensors(&[&y], &f, &b).unwrap();
        assert_eq!(got[0].shape, vec![v as usize, 3]);
        assert!(
            worst(&got[0].to_f32(), &want[0].to_f32(), 1e-6, 1e-6) <= 1.0,
            "n={v}"
        );
        assert!(!s.last_report().plan_cached);
        let misses = s.cache_stats().misses;
        match compiled {
            None => compiled = Some(misses),
            Some(m) => {
                assert_eq!(misses, m, "n={v} compiled a kernel again");
                assert!(s.last_report().cache_hits > 0);
            }
        }
    }
}
