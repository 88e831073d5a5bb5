//! The primitive ops: deliberately few (tinygrad-style). Everything else is composed from these
//! in the Tensor API and fused back together by the compiler.

use std::fmt;

use crate::dim::Dim;
use crate::dtype::DType;

/// One-input elementwise ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum UnaryOp {
    /// `-x`.
    Neg,
    /// `2^x`.
    Exp2,
    /// `log2(x)`.
    Log2,
    /// `sqrt(x)`.
    Sqrt,
    /// `1/x`.
    Recip,
    /// `sin(x)` (radians).
    Sin,
    /// Conversion to the node's dtype (f32 -> i32 truncates toward zero).
    Cast,
}

/// Two-input elementwise ops (operands broadcast to one shape first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a * b`.
    Mul,
    /// `a < b ? b : a`: the maximum, returning `a` when either is NaN (one x86 maxps).
    Max,
    /// `a < b`, producing bool.
    CmpLt,
}

/// Reductions over one axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ReduceOp {
    /// Sum of the axis.
    Sum,
    /// Maximum of the axis.
    Max,
}

/// Constants keep their exact bits when serialised (JSON has no NaN or infinity).
mod f64_bits {
    pub fn serialize<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.to_bits())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(f64::from_bits)
    }
}

/// A node's operation. Shapes and dtypes live on the node; ops carry only what the shape
/// cannot say.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// A named buffer supplied at run time (activations, weights, token ids).
    Input {
        /// The name inputs are bound by.
        name: String,
    },
    /// Every element equal to `value`.
    Const {
        /// The value, cast to the node's dtype.
        #[serde(with = "f64_bits")]
        value: f64,
    },
    /// Element value = its index along `axis` (as the node's dtype): the source of masks and
    /// position tables.
    Arange {
        /// The axis whose index becomes the value.
        axis: usize,
    },
    /// Elementwise op of one input.
    Unary(UnaryOp),
    /// Elementwise op of two inputs of the node's shape.
    Binary(BinaryOp),
    /// `cond ? a : b`, elementwise.
    Where,
    /// Reduction of `axis`, kept as a size-1 axis.
    Reduce {
        /// Which reduction.
        op: ReduceOp,
        /// The reduced axis.
        axis: usize,
    },
    /// Same elements, new shape (the node's shape).
    Reshape,
    /// Axes reordered: output axis i is input axis `perm[i]`.
    Permute(Vec<usize>),
    /// Size-1 axes broadcast to the node's shape without copying.
    Expand,
    /// A window starting at `starts` with the node's shape as its extent.
    Slice {
        /// Start index per axis (may be symbolic, e.g. a KV-cache position).
        starts: Vec<Dim>,
    },
    /// Zero padding `(before, after)` per axis; amounts may be symbolic (a KV cache's
    /// position), which is how a symbolic-length concat is expressed.
    Pad(Vec<(Dim, Dim)>),
    /// Row lookup (embedding): output `[idx.., rest..]` takes row `idx[i]` of a table
    /// `[rows, rest..]`; operands are `(table, indices)`, indices i32.
    Gather,
    /// `target` with the window at `starts` replaced by `value` (operands `(target, value)`).
    /// The target must be an input; the kernel writes into that input's buffer in place (a
    /// KV-cache append), so the old contents are gone once it has run.
    WriteSlice {
        /// Window start per axis (may be symbolic).
        starts: Vec<Dim>,
    },
    /// Batched contraction `[.., M, K] x [.., K, N] -> [.., M, N]`, kept whole so lowering can
    /// give it a tiled kernel.
    MatMul,
}

impl Op {
    /// The mnemonic used in every printed form.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Const { .. } => "const",
            Op::Arange { .. } => "arange",
            Op::Unary(u) => match u {
                UnaryOp::Neg => "neg",
                UnaryOp::Exp2 => "exp2",
                UnaryOp::Log2 => "log2",
                UnaryOp::Sqrt => "sqrt",
                UnaryOp::Recip => "recip",
                UnaryOp::Sin => "sin",
                UnaryOp::Cast => "cast",
            },
            Op::Binary(b) => match b {
                BinaryOp::Add => "add",
                BinaryOp::Mul => "mul",
                BinaryOp::Max => "max",
                BinaryOp::CmpLt => "cmplt",
            },
            Op::Where => "where",
            Op::Reduce { op, .. } => match op {
                ReduceOp::Sum => "sum",
                ReduceOp::Max => "reduce_max",
            },
            Op::Reshape => "reshape",
            Op::Permute(_) => "permute",
            Op::Expand => "expand",
            Op::Slice { .. } => "slice",
            Op::Pad(_) => "pad",
            Op::MatMul => "matmul",
            Op::Gather => "gather",
            Op::WriteSlice { .. } => "write_slice",
        }
    }

    /// True for ops that only re-index their input (views that copy nothing).
    pub fn is_movement(&self) -> bool {
        matches!(
            self,
            Op::Reshape | Op::Permute(_) | Op::Expand | Op::Slice { .. } | Op::Pad(_)
        )
    }

    /// True for elementwise ops (one output element from the same-index input elements).
    pub fn is_elementwise(&self) -> bool {
        matches!(self, Op::Unary(_) | Op::Binary(_) | Op::Where)
    }

    /// True for leaf ops with no inputs.
    pub fn is_source(&self) -> bool {
        matches!(
            self,
            Op::Input { .. } | Op::Const { .. } | Op::Arange { .. }
        )
    }

    /// Dimensions carried by the op itself rather than by a shape (slice starts, pad amounts):
    /// a symbol can appear only here, so whatever keys on a graph's symbols must read these.
    pub fn dims(&self) -> Vec<&Dim> {
        // Exhaustive on purpose: a new op carrying a `Dim` must decide here.
        match self {
            Op::Slice { starts } | Op::WriteSlice { starts } => starts.iter().collect(),
            Op::Pad(p) => p.iter().flat_map(|(a, b)| [a, b]).collect(),
            Op::Input { .. }
            | Op::Const { .. }
            | Op::Arange { .. }
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Where
            | Op::Reduce { .. }
            | Op::Reshape
            | Op::Permute(_)
            | Op::Expand
            | Op::Gather
            | Op::MatMul => Vec::new(),
        }
    }

    /// The op's attributes as text (empty when the shape says everything).
    pub fn attrs(&self) -> String {
        match self {
            Op::Input { name } => format!("\"{name}\""),
            Op::Const { value } => format_value(*value),
            Op::Arange { axis } | Op::Reduce { axis, .. } => format!("axis={axis}"),
            Op::Permute(p) => format!("{p:?}"),
            Op::Slice { starts } | Op::WriteSlice { starts } => {
                let s: Vec<String> = starts.iter().map(|d| d.to_string()).collect();
                format!("starts=[{}]", s.join(", "))
            }
            Op::Pad(p) => {
                let s: Vec<String> = p.iter().map(|(a, b)| format!("({a}, {b})")).collect();
                format!("[{}]", s.join(", "))
            }
            _ => String::new(),
        }
    }
}

/// Prints a constant so that it reads back to the same f64 and looks like a number.
pub fn format_value(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v:?}")
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The dtype an elementwise op produces from its input dtype.
pub fn binary_result_dtype(op: BinaryOp, input: DType) -> DType {
    match op {
        BinaryOp::CmpLt => DType::Bool,
        _ => input,
    }
}
