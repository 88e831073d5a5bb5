//! Compact formats a weight's values may be exact in, so the runtime can pack them in fewer
//! bytes than f32 (see `HostData::into_compact`): 16-bit floats, or 8-bit integers with one
//! scale per block of 32 along a row, which every symmetric GGUF block type (Q8_0, Q4_0,
//! Q5_0) and per-channel int8 dequantise to.

/// A compact format of weight values.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum CompactFormat {
    /// bfloat16: the top 16 bits of an f32.
    Bf16,
    /// IEEE binary16.
    F16,
    /// Blocks of [`Q8_BLOCK`] consecutive values, each `q * s` with `q` an integer in
    /// `-127..=127` and one f32 `s` per block (see [`q8_block`]).
    Q8,
}

/// Values per block of [`CompactFormat::Q8`].
pub const Q8_BLOCK: usize = 32;

impl CompactFormat {
    /// Short lowercase name (`bf16`, `f16`, `q8`), as kernel text and cache keys spell it.
    pub const fn name(self) -> &'static str {
        match self {
            CompactFormat::Bf16 => "bf16",
            CompactFormat::F16 => "f16",
            CompactFormat::Q8 => "q8",
        }
    }

    /// True for the 16-bit float formats, whose values stand alone (no block scale).
    pub const fn is_half(self) -> bool {
        matches!(self, CompactFormat::Bf16 | CompactFormat::F16)
    }

    /// The 16 bits of `x` in this 16-bit format, when `x` is exactly representable in it;
    /// `None` for a block format, whose values are not single numbers.
    pub fn exact_bits(self, x: f32) -> Option<u16> {
        match self {
            CompactFormat::Bf16 => {
                (x.to_bits() & 0xffff == 0).then_some((x.to_bits() >> 16) as u16)
            }
            CompactFormat::F16 => {
                let h = half::f16::from_f32(x);
                (h.to_f32().to_bits() == x.to_bits()).then_some(h.to_bits())
            }
            CompactFormat::Q8 => None,
        }
    }

    /// True when every value of `values` is exact in this format: each one for a 16-bit
    /// format; for [`CompactFormat::Q8`], each run of [`Q8_BLOCK`] values from the start (so
    /// rows whose length it divides are blocked along the row).
    pub fn holds(self, values: &[f32]) -> bool {
        if self == CompactFormat::Q8 {
            return values.len().is_multiple_of(Q8_BLOCK)
                && values.chunks(Q8_BLOCK).all(|b| q8_block(b).is_some());
        }
        values.iter().all(|&x| self.exact_bits(x).is_some())
    }
}

/// The scale `s` and integers `q` of one block with `x[i] = q[i] * s` (the f32 product
/// within one rounding of `x[i]`, so an f32 per-channel scale qualifies as well as an f16
/// block scale), when there are such. The scale is the block's largest magnitude over the
/// largest integer, tried from 127 down: Q8_0 blocks reach 127, Q4_0's reach 8, Q5_0's 16,
/// an int8 row's blocks what they reach.
pub fn q8_block(x: &[f32]) -> Option<(f32, [i8; Q8_BLOCK])> {
    if x.len() != Q8_BLOCK {
        return None;
    }
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if !amax.is_finite() {
        return None;
    }
    let mut q = [0i8; Q8_BLOCK];
    if amax == 0.0 {
        return Some((0.0, q));
    }
    for top in (1..=127u8).rev() {
        // An f32 row scale `r` comes back from `q * r` rounded as `amax / top` within an ulp.
        let s = amax / f32::from(top);
        let bits = s.to_bits();
        for s in [s, f32::from_bits(bits - 1), f32::from_bits(bits + 1)] {
            if fill_block(x, s, &mut q) {
                return Some((s, q));
            }
        }
    }
    None
}

/// Sets `q` to `x / s` rounded and answers whether each `q * s` is within one rounding of
/// its `x` and each `q` fits in `-127..=127`.
fn fill_block(x: &[f32], s: f32, q: &mut [i8; Q8_BLOCK]) -> bool {
    for (qi, &v) in q.iter_mut().zip(x) {
        let t = v / s;
        // Rounded by a truncating cast (`round` is a libm call): halves are never exact.
        if t.abs() > 127.5 {
            return false;
        }
        let r = (t + 0.5f32.copysign(t)) as i32 as f32;
        if !within_one_rounding(r * s, v) {
            return false;
        }
        *qi = r as i8;
    }
    true
}

/// `a` and `b` are equal or neighbouring f32 values of one sign.
fn within_one_rounding(a: f32, b: f32) -> bool {
    a == b || (a.signum() == b.signum() && a.to_bits().abs_diff(b.to_bits()) <= 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_blocks_are_found_for_each_symmetric_scheme_and_refused_otherwise() {
        let d = 0.013_671_875f32; // an f16 value
        // Q8_0 (reaches 127), Q4_0 (-8..=7), Q5_0 (-16..=15), an int8 row's partial block.
        let q8: Vec<f32> = (0..32).map(|i| (i * 8 - 127).min(127) as f32 * d).collect();
        let q4: Vec<f32> = (0..32).map(|i| ((i % 16) - 8) as f32 * d).collect();
        let q5: Vec<f32> = (0..32).map(|i| (i - 16) as f32 * d).collect();
        let row_scale = 0.003_141_592_7f32;
        let int8: Vec<f32> = (0..32)
            .map(|i| ((i * 5) % 61 - 30) as f32 * row_scale)
            .collect();
        for block in [&q8, &q4, &q5, &int8] {
            let (s, q) = q8_block(block).expect("a symmetric block");
            for (&x, &qi) in block.iter().zip(&q) {
                assert!(
                    within_one_rounding(f32::from(qi) * s, x),
                    "{x} vs {qi} * {s}"
                );
            }
        }
        assert_eq!(q8_block(&[0.0; 32]).map(|(s, _)| s), Some(0.0));
        let mut smooth: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).sin()).collect();
        assert!(q8_block(&smooth).is_none());
        smooth[3] = f32::NAN;
        assert!(q8_block(&smooth).is_none() && q8_block(&q8[..16]).is_none());
        assert!(CompactFormat::Q8.holds(&[q8.clone(), q4].concat()));
        assert!(!CompactFormat::Q8.holds(&q8[..31]));
    }
}
