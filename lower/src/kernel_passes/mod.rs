//! Kernel passes (kernel -> kernel), one per file; their order is `KERNEL_PASSES` in `lib.rs`.

pub mod bound_exp2;
pub mod carry_first_reduction;
pub mod contract_fma;
pub mod mark_sequential_loops;
pub mod nan_blind_max;
pub mod plan_rows;
pub mod reduced_axis_innermost;
pub mod select_gemm;
pub mod select_integer_dot;
pub mod select_packed_gather;
pub mod simplify_loops;
pub mod store_and_rescale;
