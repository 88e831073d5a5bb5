//! A product read only by an add is contracted into one FMA in the emitted Cranelift IR; a
//! product that something else also reads is not (it would be computed twice).

use cranegrad_codegen::KernelCache;
use cranegrad_graph::{DType, Graph, Shape, Tensor};
use cranegrad_lower::{LowerOptions, lower};

/// The machine code of every kernel of `outs` (a dead product is left in the Cranelift IR,
/// and Cranelift does not lower it).
fn asm(outs: &[&Tensor]) -> String {
    let ids: Vec<_> = outs.iter().map(|t| t.id()).collect();
    let l = outs[0]
        .graph()
        .with(|g| lower(g, &ids, LowerOptions::default()))
        .unwrap();
    let mut cache = KernelCache::new().unwrap();
    l.schedule
        .launches
        .iter()
        .map(|launch| cache.disassemble(&launch.kernel).unwrap())
        .collect()
}

#[test]
fn a_product_read_only_by_an_add_is_one_fma() {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[64, 33]), DType::F32);
    let y = g.input("y", Shape::of(&[64, 33]), DType::F32);
    let z = g.input("z", Shape::of(&[33]), DType::F32);
    let out = x.mul(&y).unwrap().add(&z).unwrap();
    let text = asm(&[&out]);
    assert!(text.contains("vfmadd"), "{text}");
    assert!(!text.contains("vmulp") && !text.contains("vmuls"), "{text}");
    assert!(!text.contains("vaddp") && !text.contains("vadds"), "{text}");
}

#[test]
fn a_product_with_another_reader_stays_a_multiply() {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[64, 33]), DType::F32);
    let y = g.input("y", Shape::of(&[64, 33]), DType::F32);
    let p = x.mul(&y).unwrap();
    let out = p.add_scalar(1.0).unwrap();
    let text = asm(&[&out, &p]);
    assert!(text.contains("vmulp"), "{text}");
    assert!(!text.contains("vfmadd"), "{text}");
}
