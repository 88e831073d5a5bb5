//! The lazy Tensor API of cranegrad: primitive ops recorded into a petgraph graph, their scalar
//! meaning, symbolic dimensions, and the text/DOT forms of a graph (the text form parses back).

pub mod compact;
pub mod composite;
pub mod data;
pub mod dim;
pub mod dtype;
pub mod error;
pub mod eval;
pub mod graph;
pub mod op;
pub mod parse;
pub mod print;
pub mod shape;
pub mod tensor;

pub use compact::{CompactFormat, Q8_BLOCK, q4_block, q8_block, q8_offset_block};
pub use data::{HostData, lcg_values};
pub use dim::{Bindings, Dim, Symbol};
pub use dtype::DType;
pub use error::GraphError;
pub use eval::{eval_arange, eval_binary, eval_reduce, eval_unary, eval_where, round_to};
pub use graph::{Graph, GraphData, Node, NodeId};
pub use op::{BinaryOp, Op, ReduceOp, UnaryOp};
pub use parse::{ParseError, parse_graph_text};
pub use print::{graph_dot, graph_text, structural_hash};
pub use shape::Shape;
pub use tensor::Tensor;
