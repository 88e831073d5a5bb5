//! Prints the kernel IR, Cranelift IR and machine code of the `chain` example's fused kernel:
//! every stage of the compiler, for one kernel.

use cranegrad::builtins::chain;
use cranegrad::codegen::KernelCache;
use cranegrad::lower::{LowerOptions, lower};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ex = chain(64, 64)?;
    let ids = [ex.output.id()];
    let lowered = ex
        .output
        .graph()
        .with(|g| lower(g, &ids, LowerOptions::default()))?;
    let mut cache = KernelCache::new()?;
    for l in &lowered.schedule.launches {
        println!("{}", l.kernel);
        println!("{}", cache.clif_text(&l.kernel));
        println!("{}", cache.disassemble(&l.kernel)?);
    }
    Ok(())
}
