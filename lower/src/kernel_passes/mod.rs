//! Kernel passes (kernel -> kernel), one per file; their order is `KERNEL_PASSES` in `lib.rs`.

pub mod mark_sequential_loops;
pub mod reduced_axis_innermost;
pub mod select_gemm;
pub mod simplify_loops;
