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

/// A 16-bit float format weights may be kept in (see `HostData::into_half_exact`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum HalfFormat {
    /// bfloat16: the top 16 bits of an f32.
    Bf16,
    /// IEEE binary16.
    F16,
}

impl HalfFormat {
    /// Short lowercase name (`bf16`, `f16`), as kernel text and cache keys spell it.
    pub const fn name(self) -> &'static str {
        match self {
            HalfFormat::Bf16 => "bf16",
            HalfFormat::F16 => "f16",
        }
    }

    /// The 16 bits of `x` in this format, when `x` is exactly representable in it.
    pub fn exact_bits(self, x: f32) -> Option<u16> {
        match self {
            HalfFormat::Bf16 => (x.to_bits() & 0xffff == 0).then_some((x.to_bits() >> 16) as u16),
            HalfFormat::F16 => {
                let h = half::f16::from_f32(x);
                (h.to_f32().to_bits() == x.to_bits()).then_some(h.to_bits())
            }
        }
    }
}
