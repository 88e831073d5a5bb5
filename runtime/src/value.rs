//! Host-side results of a realized graph. A result shares the plan's output buffer instead of
//! copying it (a 64 MB copy into fresh pages costs more than most kernels); the plan takes a
//! new buffer for its next run while a result is still held.

use std::sync::Arc;

use cranegrad_graph::{DType, HostData};

use crate::buffer::AlignedBuf;

/// A realized tensor: its bound shape, dtype and elements in row-major order.
#[derive(Clone, Debug)]
pub struct Value {
    /// Concrete shape.
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    words: Arc<AlignedBuf>,
}

impl Value {
    /// Wraps a buffer whose first `shape.product()` words are the elements.
    pub fn from_buffer(shape: Vec<usize>, dtype: DType, words: Arc<AlignedBuf>) -> Value {
        debug_assert!(words.len() >= shape.iter().product::<usize>());
        Value {
            shape,
            dtype,
            words,
        }
    }

    /// Builds a value of `dtype` from f64 elements (rounded to the dtype).
    pub fn from_f64(shape: Vec<usize>, dtype: DType, data: &[f64]) -> Value {
        let mut buf = AlignedBuf::zeroed(data.len());
        for (w, &x) in buf.words_mut().iter_mut().zip(data) {
            *w = match dtype {
                DType::F32 => (x as f32).to_bits(),
                DType::I32 | DType::Bool => (x as i32) as u32,
            };
        }
        Value::from_buffer(shape, dtype, Arc::new(buf))
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The raw 4-byte words.
    pub fn words(&self) -> &[u32] {
        &self.words.words()[..self.numel()]
    }

    /// The elements of an f32 value without copying (`None` for other dtypes).
    pub fn as_f32(&self) -> Option<&[f32]> {
        (self.dtype == DType::F32).then(|| &self.words.as_f32()[..self.numel()])
    }

    /// The elements as f32 (integers converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match self.dtype {
            DType::F32 => self.words().iter().map(|&w| f32::from_bits(w)).collect(),
            _ => self.words().iter().map(|&w| w as i32 as f32).collect(),
        }
    }

    /// The elements as i32 (floats truncated).
    pub fn to_i32(&self) -> Vec<i32> {
        match self.dtype {
            DType::F32 => self
                .words()
                .iter()
                .map(|&w| f32::from_bits(w) as i32)
                .collect(),
            _ => self.words().iter().map(|&w| w as i32).collect(),
        }
    }

    /// A copy as graph input data (to feed a result back in).
    pub fn to_host_data(&self) -> HostData {
        match self.dtype {
            DType::F32 => HostData::from(self.to_f32()),
            _ => HostData::from(self.to_i32()),
        }
    }
}
