//! Kernel cache keys: symbol bounds are part of a kernel's key (they decide its bounds proof),
//! and a key is a pure function of the kernel and the ISA, pinned here so a change to the
//! canonical text or the hashing shows up as a failing test rather than as silent misses.

use cranegrad_codegen::cache::kernel_key;
use cranegrad_codegen::isa::{self, OptLevel};
use cranegrad_codegen::{CodegenError, KernelCache};
use cranegrad_graph::{DType, Dim, Graph, Shape, Symbol, Tensor, structural_hash};
use cranegrad_lower::{Kernel, LowerOptions, lower};

/// A cache whose ISAs run the IR verifier (release test runs would skip it otherwise).
fn cache() -> Result<KernelCache, CodegenError> {
    isa::force_verifier();
    KernelCache::new()
}

/// The single fused kernel of `t`.
fn only_kernel(t: &Tensor) -> Kernel {
    let l = t
        .graph()
        .with(|g| lower(g, &[t.id()], LowerOptions::default()))
        .unwrap();
    assert_eq!(l.schedule.launches.len(), 1, "{}", l.schedule.text());
    l.schedule.launches[0].kernel.clone()
}

/// `x * x + 1` over `[n, 8]` with `n` in `1..=max`.
fn symbolic(max: i64) -> Tensor {
    let n = Symbol::new("n", 1, max).unwrap();
    let x = Graph::new().input("x", Shape(vec![Dim::sym(&n), Dim::Const(8)]), DType::F32);
    x.mul(&x).unwrap().add_scalar(1.0).unwrap()
}

#[test]
fn symbol_bounds_are_part_of_the_key() {
    let c = cache().unwrap();
    let (a, again, wide) = (
        only_kernel(&symbolic(16)),
        only_kernel(&symbolic(16)),
        only_kernel(&symbolic(32)),
    );
    assert_eq!(c.key(&a), c.key(&again), "same kernel, same key");
    assert_ne!(
        c.key(&a),
        c.key(&wide),
        "bounds 1..=16 and 1..=32 share a key"
    );
    assert!(wide.key_text().contains("n[1..=32]"), "{}", wide.key_text());
}

/// `x * 2 + 1` over a static `[4, 8]`: the kernel whose key is pinned.
fn fixed() -> Tensor {
    let x = Graph::new().input("x", Shape::of(&[4, 8]), DType::F32);
    x.mul_scalar(2.0).unwrap().add_scalar(1.0).unwrap()
}

#[test]
fn key_of_a_fixed_kernel_is_pinned() {
    let t = fixed();
    let k = only_kernel(&t);
    // Pinned once from this kernel: an on-disk cache (or any cross-process reuse) needs the
    // key to depend only on the kernel and the ISA, never on process state such as hash seeds,
    // addresses or build order. The fingerprint is fixed here so the pin holds on every host;
    // update the pins only for a deliberate change of the canonical text or the hashing.
    assert_eq!(
        kernel_key(&k, "pinned-isa"),
        "8b94dd71e2819079c7f6ce59ebdafa25",
        "{}",
        k.key_text()
    );
    assert_eq!(
        t.graph().with(|g| structural_hash(g, &[t.id()])),
        "eefa170fe2b0fe5ff2584921260955b8"
    );
    // The cache keys with the host fingerprint it compiles under, through the same function.
    let c = cache().unwrap();
    let host = [OptLevel::Speed, OptLevel::None]
        .map(|o| isa::isa_fingerprint(&*isa::host_isa(o).unwrap()));
    assert!(host.iter().any(|f| f == c.fingerprint_for(&k)));
    assert_eq!(c.key(&k), kernel_key(&k, c.fingerprint_for(&k)));
    assert_ne!(c.key(&k), kernel_key(&k, "pinned-isa"));
}
