//! The runtime's error type; messages name the input, symbol or shape at fault.

use thiserror::Error;

/// Why realizing a graph failed.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// A shape or symbol error from the graph.
    #[error(transparent)]
    Graph(#[from] cranegrad_graph::GraphError),
    /// Lowering failed.
    #[error(transparent)]
    Lower(#[from] cranegrad_lower::LowerError),
    /// Code generation failed.
    #[error(transparent)]
    Codegen(#[from] cranegrad_codegen::CodegenError),
    /// The run needs more memory than the machine has available.
    #[error(
        "this run needs {} of memory (intermediates {}, outputs and staged inputs {}) but the machine has {} available",
        gib(*needed),
        gib(*arena),
        gib(needed - arena),
        gib(*available)
    )]
    OutOfMemory {
        /// Bytes the plan would allocate.
        needed: u64,
        /// Of which the intermediate arena.
        arena: u64,
        /// Bytes available (MemAvailable, or the cgroup's limit if lower).
        available: u64,
    },
    /// An input with neither attached data nor a feed.
    #[error("input {0} has no data: attach it to the graph or pass it as a feed")]
    MissingInput(String),
    /// Input data of the wrong length.
    #[error("input {name}: expected {expected} values at the bound shape, got {got}")]
    InputLength {
        /// Input name.
        name: String,
        /// Elements the bound shape needs.
        expected: usize,
        /// Elements supplied.
        got: usize,
    },
    /// Input data of the wrong dtype.
    #[error("input {name}: expected {expected} data, got {got}")]
    InputDType {
        /// Input name.
        name: String,
        /// Declared dtype.
        expected: cranegrad_graph::DType,
        /// Supplied dtype.
        got: cranegrad_graph::DType,
    },
    /// An index outside its tensor.
    #[error("bounds: {0}")]
    Bounds(String),
    /// A weight whose raw data was returned to the OS once packed is needed raw again.
    #[error(
        "input {0}: its raw data was freed after packing, and this graph reads it raw (or \
         packs it another way); realize it in a session that keeps raw weights"
    )]
    Released(String),
    /// Tensors from different graphs realized together.
    #[error("realize: outputs belong to different graphs")]
    MixedGraphs,
}

/// Bytes as GiB for messages.
fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}
