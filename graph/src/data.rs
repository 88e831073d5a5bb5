//! Host data attached to input nodes. It is shared (`Arc`), never hashed, and never copied
//! when a graph is cloned, so weights cost nothing to carry through the passes.

use std::sync::Arc;

use crate::dtype::DType;

/// Values for an input, in row-major order at the input's bound shape.
#[derive(Clone, Debug)]
pub enum HostData {
    /// f32 values.
    F32(Arc<Vec<f32>>),
    /// i32 values (also used for bool inputs, as 0/1).
    I32(Arc<Vec<i32>>),
}

impl HostData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            HostData::F32(v) => v.len(),
            HostData::I32(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dtype of the values.
    pub fn dtype(&self) -> DType {
        match self {
            HostData::F32(_) => DType::F32,
            HostData::I32(_) => DType::I32,
        }
    }

    /// The address of the data: what the runtime keys packed copies and freed weights by.
    pub fn addr(&self) -> usize {
        self.as_words().as_ptr() as usize
    }

    /// The raw 4-byte words, which is how every buffer stores every dtype.
    pub fn as_words(&self) -> &[u32] {
        match self {
            HostData::F32(v) => {
                // SAFETY: f32 and u32 have the same size and alignment; every bit pattern is valid.
                unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u32>(), v.len()) }
            }
            HostData::I32(v) => {
                // SAFETY: i32 and u32 have the same size and alignment; every bit pattern is valid.
                unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u32>(), v.len()) }
            }
        }
    }
}

/// Deterministic pseudo-random values in `[-scale, scale)` (a 64-bit LCG), so examples,
/// benches and tests need no RNG crate and give the same data everywhere.
pub fn lcg_values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

impl From<Vec<f32>> for HostData {
    fn from(v: Vec<f32>) -> HostData {
        HostData::F32(Arc::new(v))
    }
}

impl From<Vec<i32>> for HostData {
    fn from(v: Vec<i32>) -> HostData {
        HostData::I32(Arc::new(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcg_values_are_deterministic_and_inside_the_scale() {
        let a = lcg_values(1000, 7, 0.5);
        assert_eq!(a, lcg_values(1000, 7, 0.5));
        assert_ne!(a, lcg_values(1000, 8, 0.5));
        assert!(a.iter().all(|v| (-0.5..0.5).contains(v)));
        // Spread over the range, not stuck near one value.
        assert!(a.iter().any(|&v| v < -0.4) && a.iter().any(|&v| v > 0.4));
    }

    #[test]
    fn words_are_the_values_bits() {
        let f = HostData::from(vec![1.0f32, -2.5]);
        assert_eq!(f.as_words(), &[1.0f32.to_bits(), (-2.5f32).to_bits()]);
        assert_eq!((f.len(), f.dtype()), (2, DType::F32));
        let i = HostData::from(vec![-1i32, 3]);
        assert_eq!(i.as_words(), &[u32::MAX, 3]);
        assert_eq!(i.dtype(), DType::I32);
        assert!(HostData::from(Vec::<f32>::new()).is_empty());
    }

    #[test]
    fn clones_share_their_data() {
        let d = HostData::from(vec![0.0f32; 4]);
        assert_eq!(d.clone().addr(), d.addr());
        assert_ne!(HostData::from(vec![0.0f32; 4]).addr(), d.addr());
    }
}
