//! Host-side f32 tensors and the named store the model code pulls its weights from.
//!
//! Every format is widened to f32 at load time so the model code sees one dtype; the source
//! dtype is kept so reports can say how big the checkpoint really was.

use std::collections::BTreeMap;
use std::fmt;

use super::error::{LoadError, Result};

/// Element type a tensor had in its file, before widening to f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
// The quantized variants keep ggml's spelling (`Q4_K`), which users know them by.
#[allow(non_camel_case_types)]
pub enum SourceDType {
    /// IEEE single precision.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16 (the top half of an f32).
    BF16,
    /// IEEE double precision (narrowed to f32).
    F64,
    /// llama.cpp Q8_0: blocks of 32 values, one f16 scale + 32 i8 (34 bytes per block).
    Q8_0,
    /// llama.cpp Q4_0: blocks of 32 4-bit values with an f16 scale (18 bytes).
    Q4_0,
    /// llama.cpp Q4_1: blocks of 32 4-bit values with an f16 scale and minimum (20 bytes).
    Q4_1,
    /// llama.cpp Q5_0: blocks of 32 5-bit values with an f16 scale (22 bytes).
    Q5_0,
    /// llama.cpp Q5_1: blocks of 32 5-bit values with an f16 scale and minimum (24 bytes).
    Q5_1,
    /// llama.cpp Q4_K: super-blocks of 256 4-bit values, 6-bit sub-block scales (144 bytes).
    Q4_K,
    /// llama.cpp Q5_K: super-blocks of 256 5-bit values, 6-bit sub-block scales (176 bytes).
    Q5_K,
    /// llama.cpp Q6_K: super-blocks of 256 6-bit values, 8-bit sub-block scales (210 bytes).
    Q6_K,
    /// Signed 64-bit integers.
    I64,
    /// Signed 32-bit integers.
    I32,
}

impl SourceDType {
    /// Bytes the file spent on `numel` values of this type (block types count whole blocks).
    pub fn storage_bytes(self, numel: usize) -> usize {
        if let Some((n, bytes)) = super::quant_blocks::block_shape(self) {
            return numel.div_ceil(n) * bytes;
        }
        match self {
            SourceDType::F32 | SourceDType::I32 => numel * 4,
            SourceDType::F16 | SourceDType::BF16 => numel * 2,
            _ => numel * 8,
        }
    }

    /// Conventional short name, as the formats spell it.
    pub fn name(self) -> &'static str {
        match self {
            SourceDType::F32 => "F32",
            SourceDType::F16 => "F16",
            SourceDType::BF16 => "BF16",
            SourceDType::F64 => "F64",
            SourceDType::Q8_0 => "Q8_0",
            SourceDType::Q4_0 => "Q4_0",
            SourceDType::Q4_1 => "Q4_1",
            SourceDType::Q5_0 => "Q5_0",
            SourceDType::Q5_1 => "Q5_1",
            SourceDType::Q4_K => "Q4_K",
            SourceDType::Q5_K => "Q5_K",
            SourceDType::Q6_K => "Q6_K",
            SourceDType::I64 => "I64",
            SourceDType::I32 => "I32",
        }
    }
}

impl fmt::Display for SourceDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dense row-major f32 tensor in host memory, with the dtype it was stored in.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first (PyTorch order).
    pub shape: Vec<usize>,
    /// Row-major values; `data.len()` equals the product of `shape`.
    pub data: Vec<f32>,
    /// Element type in the source file.
    pub source_dtype: SourceDType,
}

impl HostTensor {
    /// Builds a tensor, refusing a data length that disagrees with the shape.
    pub fn new(shape: Vec<usize>, data: Vec<f32>, source_dtype: SourceDType) -> Result<Self> {
        let expected = checked_numel(&shape).unwrap_or(usize::MAX);
        if expected != data.len() {
            return Err(LoadError::LengthMismatch {
                name: "<host tensor>".into(),
                shape,
                expected,
                len: data.len(),
            });
        }
        Ok(HostTensor {
            shape,
            data,
            source_dtype,
        })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Bytes this tensor occupied in its source file.
    pub fn source_bytes(&self) -> usize {
        self.source_dtype.storage_bytes(self.numel())
    }
}

/// Product of a shape, `None` on overflow (shapes come from untrusted files).
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Weights by Hugging Face name, in name order so iteration and reports are deterministic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WeightStore {
    tensors: BTreeMap<String, HostTensor>,
    origin: String,
}

impl WeightStore {
    /// An empty store; `origin` (usually the path) is quoted by every error about its tensors.
    pub fn new(origin: impl Into<String>) -> Self {
        WeightStore {
            tensors: BTreeMap::new(),
            origin: origin.into(),
        }
    }

    /// Where the weights came from, as given to `new`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Adds a tensor; a second tensor of the same name is an error, never a silent overwrite.
    pub fn insert(&mut self, name: impl Into<String>, tensor: HostTensor) -> Result<()> {
        let name = name.into();
        if self.tensors.contains_key(&name) {
            return Err(LoadError::DuplicateTensor {
                name,
                origin: self.origin.clone(),
            });
        }
        self.tensors.insert(name, tensor);
        Ok(())
    }

    /// The tensor called `name`, or an error naming it.
    pub fn get(&self, name: &str) -> Result<&HostTensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| LoadError::MissingTensor {
                name: name.to_string(),
                origin: self.origin.clone(),
            })
    }

    /// Removes and returns the tensor called `name`, so the model can own it without a copy.
    pub fn take(&mut self, name: &str) -> Result<HostTensor> {
        self.tensors
            .remove(name)
            .ok_or_else(|| LoadError::MissingTensor {
                name: name.to_string(),
                origin: self.origin.clone(),
            })
    }

    /// Whether a tensor called `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Tensor names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// `(name, tensor)` pairs in sorted name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &HostTensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the store holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total number of scalar parameters (tied weights counted once, as they are stored once).
    pub fn param_count(&self) -> usize {
        self.tensors.values().map(HostTensor::numel).sum()
    }

    /// Bytes the weights occupied in their source files, per source dtype.
    pub fn bytes_by_dtype(&self) -> BTreeMap<SourceDType, usize> {
        let mut out = BTreeMap::new();
        for t in self.tensors.values() {
            *out.entry(t.source_dtype).or_insert(0) += t.source_bytes();
        }
        out
    }

    /// Bytes the widened f32 copies occupy in memory.
    pub fn f32_bytes(&self) -> usize {
        self.param_count() * 4
    }
}
