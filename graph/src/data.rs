//! Host data attached to input nodes. It is shared (`Arc`, or a file mapping), never hashed,
//! and never copied when a graph is cloned, so weights cost nothing to carry through the
//! passes.

use std::sync::Arc;

use crate::compact::{CompactFormat, Q8_BLOCK};
use crate::dtype::DType;

/// Values for an input, in row-major order at the input's bound shape, with an optional
/// origin: a stable name of exactly these values (a cached file's key and offset) that lets
/// a fresh process find what an earlier one derived from them (packed panels) on disk.
#[derive(Clone, Debug)]
pub struct HostData {
    values: Values,
    origin: Option<Arc<str>>,
    /// Every value is exact in this format (checked when set): packed copies may be compact.
    compact: Option<CompactFormat>,
}

/// Where the values live.
#[derive(Clone, Debug)]
enum Values {
    F32(Arc<Vec<f32>>),
    I32(Arc<Vec<i32>>),
    Mapped(MappedWords),
}

/// A window of 4-byte words inside a read-only file mapping shared by many tensors.
#[derive(Clone, Debug)]
struct MappedWords {
    map: Arc<memmap2::Mmap>,
    /// Byte offset of the first word (a multiple of 4).
    start: usize,
    words: usize,
    dtype: DType,
}

impl HostData {
    /// `words` 4-byte values of `dtype` at byte `start` of `map`, named by `origin`. `None`
    /// when the window is misaligned or does not fit in the mapping.
    pub fn mapped(
        map: Arc<memmap2::Mmap>,
        start: usize,
        words: usize,
        dtype: DType,
        origin: &str,
    ) -> Option<HostData> {
        let end = words.checked_mul(4)?.checked_add(start)?;
        let aligned = (map.as_ptr() as usize + start).is_multiple_of(4);
        (end <= map.len() && aligned).then(|| HostData {
            values: Values::Mapped(MappedWords {
                map,
                start,
                words,
                dtype,
            }),
            origin: Some(origin.into()),
            compact: None,
        })
    }

    /// The same values named by `origin` (see [`HostData::origin`]).
    pub fn with_origin(mut self, origin: &str) -> HostData {
        self.origin = Some(origin.into());
        self
    }

    /// The same values marked exact in `format` (checked over every value, on every core
    /// for a large weight, see [`CompactFormat::holds`]), so the runtime may pack them
    /// compactly; `Err` with the values unchanged when they are not f32 or not all exact.
    pub fn into_compact(mut self, format: CompactFormat) -> Result<HostData, HostData> {
        let exact = self.as_f32().is_some_and(|v| holds_in_parallel(format, v));
        if exact {
            self.compact = Some(format);
            Ok(self)
        } else {
            Err(self)
        }
    }

    /// The compact format every value is exact in, if marked (see [`HostData::into_compact`]).
    pub fn compact(&self) -> Option<CompactFormat> {
        self.compact
    }

    /// The stable name of these values, if they have one.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// True when the values are a window of a file mapping.
    pub fn is_mapped(&self) -> bool {
        matches!(self.values, Values::Mapped(_))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.values {
            Values::F32(v) => v.len(),
            Values::I32(v) => v.len(),
            Values::Mapped(m) => m.words,
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dtype of the values.
    pub fn dtype(&self) -> DType {
        match &self.values {
            Values::F32(_) => DType::F32,
            Values::I32(_) => DType::I32,
            Values::Mapped(m) => m.dtype,
        }
    }

    /// The address of the data: what the runtime keys packed copies and freed weights by.
    pub fn addr(&self) -> usize {
        self.as_words().as_ptr() as usize
    }

    /// The raw 4-byte words, which is how every buffer stores every dtype.
    pub fn as_words(&self) -> &[u32] {
        let (ptr, len) = match &self.values {
            Values::F32(v) => (v.as_ptr().cast::<u32>(), v.len()),
            Values::I32(v) => (v.as_ptr().cast::<u32>(), v.len()),
            // SAFETY: `mapped` checked that the window lies inside the mapping.
            Values::Mapped(m) => (unsafe { m.map.as_ptr().add(m.start) }.cast(), m.words),
        };
        // SAFETY: f32, i32 and u32 have the same size and alignment and every bit pattern is
        // valid; mapped windows were checked 4-byte aligned and in bounds, and the mapping is
        // read-only and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    /// The values as f32, when that is their dtype.
    pub fn as_f32(&self) -> Option<&[f32]> {
        let w = self.as_words();
        // SAFETY: same size and alignment; every bit pattern is a valid f32.
        (self.dtype() == DType::F32)
            .then(|| unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<f32>(), w.len()) })
    }

    /// The values as i32, when that is their dtype (bool included).
    pub fn as_i32(&self) -> Option<&[i32]> {
        let w = self.as_words();
        // SAFETY: same size and alignment; every bit pattern is a valid i32.
        (self.dtype() != DType::F32)
            .then(|| unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<i32>(), w.len()) })
    }
}

/// [`CompactFormat::holds`] over chunks of whole blocks on every core: a billion-value
/// model is checked in a fraction of its load.
fn holds_in_parallel(format: CompactFormat, values: &[f32]) -> bool {
    const CHUNK: usize = Q8_BLOCK << 15;
    if values.len() <= CHUNK {
        return format.holds(values);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = values.len().div_ceil(threads).next_multiple_of(Q8_BLOCK);
    std::thread::scope(|sc| {
        let parts: Vec<_> = values
            .chunks(per)
            .map(|part| sc.spawn(move || format.holds(part)))
            .collect();
        parts.into_iter().all(|p| p.join().unwrap_or(false))
    })
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
        HostData {
            values: Values::F32(Arc::new(v)),
            origin: None,
            compact: None,
        }
    }
}

impl From<Vec<i32>> for HostData {
    fn from(v: Vec<i32>) -> HostData {
        HostData {
            values: Values::I32(Arc::new(v)),
            origin: None,
            compact: None,
        }
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
