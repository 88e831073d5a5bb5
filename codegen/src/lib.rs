//! Kernel IR -> Cranelift IR -> machine code; math approximations; the kernel cache.

pub mod attention;
pub mod bounds;
pub mod cache;
mod columns;
pub mod disk_cache;
pub mod emit;
mod gather_packed;
pub mod gemm;
mod gemm_int8;
mod gemm_q8;
mod interleave;
pub mod isa;
pub mod math;
mod memory;
pub mod probe;
mod reduce;
mod scalar_ops;
mod strided_reduce;

use thiserror::Error;

pub use cache::{CacheStats, CompiledKernel, KernelCache, KernelFn};

/// Why a kernel could not be compiled.
#[derive(Debug, Error)]
pub enum CodegenError {
    /// The host ISA could not be configured.
    #[error("codegen: host ISA: {0}")]
    Isa(String),
    /// Cranelift rejected the function (with its IR for diagnosis).
    #[error("codegen: cranelift: {0}")]
    Cranelift(String),
    /// A load or store could leave its buffer.
    #[error("codegen: bounds: {0}")]
    OutOfBounds(String),
}
