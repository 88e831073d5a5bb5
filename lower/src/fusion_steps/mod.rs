//! Fusion steps (decisions on the partition into kernels), one per file; their order is
//! `FUSION_STEPS` in `lib.rs`.

pub mod fuse_attention;
pub mod fuse_epilogues;
pub mod fuse_gemm_prologues;
pub mod fuse_rows;
pub mod realize_every_op;
pub mod realize_operands;
pub mod realize_roots;
pub mod realize_row_scaled_matmuls;
pub mod realize_shared_values;
