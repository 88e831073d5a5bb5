//! Rewrite passes, one per file, each with a name you can grep for: functions from graph to
//! graph (or to the fusion decisions over it), and `fuse_sibling_gemms`, from schedule to
//! schedule.

pub mod cse;
pub mod dead_nodes;
pub mod fold_constants;
pub mod fold_norm_into_matmul;
pub mod fuse_attention;
pub mod fuse_elementwise;
pub mod fuse_gemm_prologue;
pub mod fuse_rows;
pub mod fuse_sibling_gemms;
pub mod hoist_scale_out_of_max;
pub mod reduced_axis_innermost;
pub mod simplify_loops;
pub mod sink_slices;
