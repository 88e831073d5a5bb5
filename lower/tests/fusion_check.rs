//! `Fusion::check` holds after every fusion step of real graphs and names the broken rule on
//! partitions no step may produce.

use cranegrad_graph::{DType, Graph, Shape};
use cranegrad_lower::fusion::Fusion;
use cranegrad_lower::{FUSION_STEPS, LowerOptions};

/// `exp2(x @ w)` read by two outputs: a matmul with one consumer chain forking into two.
fn forked_matmul() -> (Graph, Vec<cranegrad_graph::NodeId>, cranegrad_graph::NodeId) {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[4, 8]), DType::F32);
    let w = g.input("w", Shape::of(&[8, 6]), DType::F32);
    let mm = x.matmul(&w).unwrap();
    let a = mm.exp2().unwrap();
    let b = mm.add_scalar(1.0).unwrap();
    (g, vec![a.id(), b.id()], mm.id())
}

#[test]
fn every_step_keeps_the_invariants_of_a_softmax_and_a_matmul() {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[4, 8]), DType::F32);
    let w = g.input("w", Shape::of(&[8, 8]), DType::F32);
    let y = x.softmax(-1).unwrap().matmul(&w).unwrap().relu().unwrap();
    let outs = [y.id()];
    g.with(|d| {
        let order = d.topo_from(&outs);
        let mut f = Fusion::default();
        for step in FUSION_STEPS {
            (step.run)(d, &order, &outs, &mut f);
            f.check(d, &outs)
                .unwrap_or_else(|e| panic!("after {}: {e}", step.name));
        }
        assert!(!f.realized.is_empty());
    });
    // The whole pipeline checks too (debug builds, CRANEGRAD_VERIFY=1).
    cranegrad_lower::lower_tensors(&[&y], LowerOptions::default()).unwrap();
}

#[test]
fn an_unrealized_output_is_refused() {
    let (g, outs, _) = forked_matmul();
    g.with(|d| {
        let f = Fusion::default();
        let e = f.check(d, &outs).unwrap_err();
        assert!(e.contains("an output is not realized"), "{e}");
    });
}

#[test]
fn a_matmul_inlined_into_two_kernels_is_refused() {
    let (g, outs, mm) = forked_matmul();
    g.with(|d| {
        let mut f = Fusion::default();
        f.realized.extend(outs.iter().copied());
        let e = f.check(d, &outs).unwrap_err();
        assert!(e.contains("an inline matmul runs in 2 kernels"), "{e}");
        // Realized once and read by both, it is fine.
        f.realized.insert(mm);
        f.check(d, &outs).unwrap();
    });
}
