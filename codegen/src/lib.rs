//! Kernel IR -> Cranelift IR -> machine code; math approximations; the kernel cache.

pub mod isa;
pub mod math;
