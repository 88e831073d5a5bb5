//! The one error type of the graph crate; every message names the op and shapes at fault.

use thiserror::Error;

use crate::dtype::DType;
use crate::shape::Shape;

/// Why recording an op failed.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum GraphError {
    /// Two shapes that do not broadcast under NumPy rules.
    #[error("{op}: shapes {lhs} and {rhs} do not broadcast")]
    Broadcast {
        /// The op being recorded.
        op: String,
        /// Left operand shape.
        lhs: Shape,
        /// Right operand shape.
        rhs: Shape,
    },
    /// A general shape error with both shapes named.
    #[error("{op}: shape {got} is not compatible with {expected}")]
    Shape {
        /// The op being recorded.
        op: String,
        /// The offending shape.
        got: Shape,
        /// What the op needed.
        expected: String,
    },
    /// An axis outside the tensor's rank.
    #[error("{op}: axis {axis} is out of range for a tensor of shape {shape}")]
    Axis {
        /// The op being recorded.
        op: String,
        /// The requested axis.
        axis: isize,
        /// The tensor's shape.
        shape: Shape,
    },
    /// Operands of incompatible element types.
    #[error("{op}: dtypes {lhs} and {rhs} do not match")]
    DType {
        /// The op being recorded.
        op: String,
        /// Left operand dtype.
        lhs: DType,
        /// Right operand dtype.
        rhs: DType,
    },
    /// An op that does not accept this dtype.
    #[error("{op}: dtype {dtype} is not supported")]
    UnsupportedDType {
        /// The op being recorded.
        op: String,
        /// The rejected dtype.
        dtype: DType,
    },
    /// Tensors that belong to two different graphs.
    #[error("{op}: operands belong to different graphs")]
    DifferentGraphs {
        /// The op being recorded.
        op: String,
    },
    /// A symbol with impossible bounds.
    #[error("symbol {name}: bounds {min}..={max} are invalid")]
    BadSymbol {
        /// Symbol name.
        name: String,
        /// Lower bound.
        min: i64,
        /// Upper bound.
        max: i64,
    },
    /// A symbol used in a shape but given no value.
    #[error("symbol {0} is not bound to a value")]
    UnboundSymbol(String),
    /// A symbol bound to a value outside its declared bounds.
    #[error("symbol {name} = {value} is outside its bounds {min}..={max}")]
    SymbolOutOfRange {
        /// Symbol name.
        name: String,
        /// The bound value.
        value: i64,
        /// Lower bound.
        min: i64,
        /// Upper bound.
        max: i64,
    },
    /// Host data whose length does not match the declared shape.
    #[error("input {name}: {len} values given for shape {shape}")]
    DataLength {
        /// Input name.
        name: String,
        /// Values supplied.
        len: usize,
        /// Declared shape.
        shape: Shape,
    },
}
