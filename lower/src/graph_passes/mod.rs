//! Graph passes (graph -> graph), one per file; their order is `GRAPH_PASSES` in `lib.rs`.

pub mod cse;
pub mod dead_nodes;
pub mod fold_constants;
pub mod fold_norm_into_matmul;
pub mod hoist_scale_out_of_max;
pub mod sink_slices;
