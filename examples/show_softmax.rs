//! Prints every stage of the fused softmax kernel (kernel IR, Cranelift IR, machine code).

use cranegrad::codegen::KernelCache;
use cranegrad::graph::{DType, Graph, Shape};
use cranegrad::lower::{LowerOptions, lower};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[4, 64]), DType::F32);
    let s = x.mul_scalar(0.125)?.softmax(-1)?;
    let lowered = g.with(|d| lower(d, &[s.id()], LowerOptions::default()))?;
    let mut cache = KernelCache::new()?;
    for l in &lowered.schedule.launches {
        println!("{}", l.kernel);
        println!("{}", cache.disassemble(&l.kernel)?);
    }
    Ok(())
}
