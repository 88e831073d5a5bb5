//! Element types. Every dtype is four bytes wide so that one vector width (4 lanes of 128 bits)
//! serves every kernel; `Bool` is stored as a 32-bit 0/1 word for the same reason.

use std::fmt;

/// The element type of a tensor.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum DType {
    /// IEEE-754 binary32.
    F32,
    /// Two's-complement 32-bit integer (token ids, indices).
    I32,
    /// Truth value stored as a 32-bit word holding 0 or 1.
    Bool,
}

impl DType {
    /// Bytes per element in memory.
    pub const fn size_bytes(self) -> usize {
        4
    }

    /// True for the floating-point dtype.
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F32)
    }

    /// Short lowercase name used in every printed form (`f32`, `i32`, `bool`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::Bool => "bool",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
