//! Host-side results of a realized graph.

use cranegrad_graph::{DType, HostData};

/// A realized tensor: its bound shape and its elements in row-major order.
#[derive(Clone, Debug)]
pub struct Value {
    /// Concrete shape.
    pub shape: Vec<usize>,
    /// Elements.
    pub data: HostData,
}

impl Value {
    /// Builds a value of `dtype` from f64 elements (rounded to the dtype).
    pub fn from_f64(shape: Vec<usize>, dtype: DType, data: &[f64]) -> Value {
        let data = match dtype {
            DType::F32 => HostData::from(data.iter().map(|&x| x as f32).collect::<Vec<f32>>()),
            DType::I32 | DType::Bool => {
                HostData::from(data.iter().map(|&x| x as i32).collect::<Vec<i32>>())
            }
        };
        Value { shape, data }
    }

    /// The elements as f32 (integers converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            HostData::F32(v) => v.to_vec(),
            HostData::I32(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }
}
