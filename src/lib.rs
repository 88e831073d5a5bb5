//! cranegrad: lazy tensor graphs fused and JIT-compiled to CPU kernels with Cranelift.
//!
//! This crate re-exports the layers (graph -> lower -> codegen -> runtime, models on top) and
//! holds the built-in examples the CLI and benches run.

pub mod benchmark;
pub mod builtins;
pub mod fonts;
pub mod stats;
pub mod workload;

pub use cranegrad_codegen as codegen;
pub use cranegrad_graph as graph;
pub use cranegrad_lower as lower;
pub use cranegrad_models as models;
pub use cranegrad_runtime as runtime;
