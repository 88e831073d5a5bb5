//! Compact formats a weight's values may be exact in, so the runtime can pack them in fewer
//! bytes than f32 (see `HostData::into_compact`): 16-bit floats, or 8-bit integers per block
//! of 32 along a row with a scale (Q8_0, Q4_0, Q5_0, per-channel int8), a scale and an offset
//! (Q4_1, Q5_1, Q4_K, Q5_K) or a scale per half block (Q6_K), which every GGUF block type
//! dequantises to.

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
    /// Blocks of [`Q8_BLOCK`] consecutive values, each `q * s + o` with `q` an integer in
    /// `0..=127` and one f32 `s` and `o` per block (see [`q8_offset_block`]): the GGUF types
    /// with a minimum (Q4_1, Q5_1, and Q4_K/Q5_K's sub-blocks).
    Q8Offset,
    /// Blocks of [`Q8_BLOCK`] consecutive values whose two halves are each `q * s` with `q`
    /// an integer in `-127..=127` and their own f32 `s`: GGUF Q6_K's 16-value sub-blocks.
    Q8Split,
    /// Blocks of [`Q8_BLOCK`] consecutive values, each `q * s + o` with `q` an integer in
    /// `0..=15` (packed two to a byte) and one f32 `s` and `o` per block (see [`q4_block`]):
    /// GGUF Q4_0 (`o = -8 s` or the block's lowest level), Q4_1 and Q4_K's sub-blocks.
    Q4,
}

/// Values per block of [`CompactFormat::Q8`].
pub const Q8_BLOCK: usize = 32;

impl CompactFormat {
    /// Every format.
    pub const ALL: [CompactFormat; 6] = [
        CompactFormat::Bf16,
        CompactFormat::F16,
        CompactFormat::Q8,
        CompactFormat::Q8Offset,
        CompactFormat::Q8Split,
        CompactFormat::Q4,
    ];

    /// Short lowercase name (`bf16`, `f16`, `q8`), as kernel text and cache keys spell it.
    pub const fn name(self) -> &'static str {
        match self {
            CompactFormat::Bf16 => "bf16",
            CompactFormat::F16 => "f16",
            CompactFormat::Q8 => "q8",
            CompactFormat::Q8Offset => "q8o",
            CompactFormat::Q8Split => "q8s",
            CompactFormat::Q4 => "q4",
        }
    }

    /// True for the 16-bit float formats, whose values stand alone (no block scale).
    pub const fn is_half(self) -> bool {
        matches!(self, CompactFormat::Bf16 | CompactFormat::F16)
    }

    /// True for the block formats (8-bit, and 4-bit [`CompactFormat::Q4`]).
    pub const fn is_block(self) -> bool {
        !self.is_half()
    }

    /// True for the block formats whose values are `q * s + o`, `q` unsigned.
    pub const fn has_offset(self) -> bool {
        matches!(self, CompactFormat::Q8Offset | CompactFormat::Q4)
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
            _ => None,
        }
    }

    /// True when every value of `values` is exact in this format: each one for a 16-bit
    /// format; for [`CompactFormat::Q8`], each run of [`Q8_BLOCK`] values from the start (so
    /// rows whose length it divides are blocked along the row).
    pub fn holds(self, values: &[f32]) -> bool {
        let blocks = |len: usize, ok: fn(&[f32]) -> bool| {
            values.len().is_multiple_of(Q8_BLOCK) && values.chunks(len).all(ok)
        };
        match self {
            CompactFormat::Q8 => blocks(Q8_BLOCK, |b| q8_block(b).is_some()),
            CompactFormat::Q8Offset => blocks(Q8_BLOCK, |b| q8_offset_block(b).is_some()),
            CompactFormat::Q8Split => blocks(Q8_BLOCK / 2, |b| q8_block(b).is_some()),
            CompactFormat::Q4 => blocks(Q8_BLOCK, |b| q4_block(b).is_some()),
            _ => values.iter().all(|&x| self.exact_bits(x).is_some()),
        }
    }
}

/// The scale `s` and integers `q` of one block with `x[i] = q[i] * s` (the f32 product
/// within one rounding of `x[i]`, so an f32 per-channel scale qualifies as well as an f16
/// block scale), when there are such. The scale is the block's largest magnitude over the
/// largest integer, tried from 127 down: Q8_0 blocks reach 127, Q4_0's reach 8, Q5_0's 16,
/// an int8 row's blocks what they reach.
///
/// A shorter `x` (a half block) fills the first `x.len()` values of `q`.
pub fn q8_block(x: &[f32]) -> Option<(f32, [i8; Q8_BLOCK])> {
    if x.is_empty() || x.len() > Q8_BLOCK {
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

/// The scale `s`, offset `o` and integers `q` in `0..=127` of one block with
/// `x[i] ≈ q[i] * s + o` (each within a few roundings of the block's largest magnitude: the
/// offset and scale are recovered from rounded values), when there are such: the blocks
/// with a minimum (GGUF Q4_1, Q5_1, and Q4_K/Q5_K's sub-blocks). The offset is the block's
/// smallest value (any level can be the lowest used); the scale its range over the fewest
/// levels that fit.
pub fn q8_offset_block(x: &[f32]) -> Option<(f32, f32, [u8; Q8_BLOCK])> {
    offset_block(x, 127)
}

/// [`q8_offset_block`] with `q` in `0..=15`: a block of [`CompactFormat::Q4`].
pub fn q4_block(x: &[f32]) -> Option<(f32, f32, [u8; Q8_BLOCK])> {
    offset_block(x, 15)
}

/// The scale, offset and integers in `0..=max_level` of an offset block.
fn offset_block(x: &[f32], max_level: u8) -> Option<(f32, f32, [u8; Q8_BLOCK])> {
    if x.len() != Q8_BLOCK || !x.iter().all(|v| v.is_finite()) {
        return None;
    }
    let lo = x.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut q = [0u8; Q8_BLOCK];
    if hi == lo {
        return Some((0.0, lo, q));
    }
    let tol = 8.0 * lo.abs().max(hi.abs()) * f32::EPSILON;
    'top: for top in 1..=max_level {
        let s = (hi - lo) / f32::from(top);
        for (qi, &v) in q.iter_mut().zip(x) {
            let t = (v - lo) / s;
            let r = (t + 0.5) as i32;
            if !(0..=i32::from(top)).contains(&r) || (r as f32 * s + lo - v).abs() > tol {
                continue 'top;
            }
            *qi = r as u8;
        }
        return Some((s, lo, q));
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
        assert!(q8_block(&smooth).is_none() && q8_block(&[]).is_none());
        // Halves with their own scales (Q6_K's sub-blocks): Q8Split, not Q8.
        let split: Vec<f32> = (0..32)
            .map(|i| ((i * 5) % 64) as f32 - 32.0)
            .enumerate()
            .map(|(i, q)| q * if i < 16 { 0.011 } else { 0.0037 })
            .collect();
        assert!(CompactFormat::Q8Split.holds(&split) && !CompactFormat::Q8.holds(&split));
        assert!(CompactFormat::Q8.holds(&[q8.clone(), q4.clone()].concat()));
        assert!(!CompactFormat::Q8.holds(&q8[..31]));
    }

    #[test]
    fn offset_blocks_are_found_for_q4_1_like_blocks_and_refused_otherwise() {
        // x = d * q + m, q in 0..=15 (Q4_1) or 0..=31 (Q5_1), d and m f16 values; a block
        // whose lowest level is unused (its minimum is then a level above m).
        let (d, m) = (0.013_671_875f32, -0.103_515_625f32);
        for (levels, first) in [(16, 0), (32, 0), (16, 3)] {
            let x: Vec<f32> = (0..32)
                .map(|i| ((i * 7) % levels).max(first) as f32 * d + m)
                .collect();
            let (s, o, q) = q8_offset_block(&x).expect("an offset block");
            for (&v, &qi) in x.iter().zip(&q) {
                assert!((f32::from(qi) * s + o - v).abs() <= 8.0 * 0.3 * f32::EPSILON);
            }
        }
        assert_eq!(
            q8_offset_block(&[0.25; 32]).map(|(s, o, _)| (s, o)),
            Some((0.0, 0.25))
        );
        let smooth: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).sin()).collect();
        assert!(q8_offset_block(&smooth).is_none());
        assert!(
            CompactFormat::Q8Offset.holds(&[0.5; 64]) && !CompactFormat::Q8Offset.holds(&smooth)
        );
    }

    #[test]
    fn q4_blocks_take_sixteen_levels_and_no_more() {
        // Q4_0 (`(q - 8) d`), Q4_1 (`q d + m`) and a Q4_K sub-block (`q d sc - dmin mn`, the
        // scale and offset products no f16 holds): nibble blocks; Q5_1's 32 levels are not.
        let (d, m) = (0.013_671_875f32, -0.103_515_625f32);
        let q4_0: Vec<f32> = (0..32).map(|i| ((i * 7) % 16 - 8) as f32 * d).collect();
        let q4_1: Vec<f32> = (0..32).map(|i| ((i * 5) % 16) as f32 * d + m).collect();
        let q4_k: Vec<f32> = (0..32)
            .map(|i| ((i * 3) % 16) as f32 * (d * 37.0) - 0.007_812_5 * 11.0)
            .collect();
        for x in [&q4_0, &q4_1, &q4_k] {
            let (s, o, q) = q4_block(x).expect("a nibble block");
            let top = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (&v, &qi) in x.iter().zip(&q) {
                assert!(qi <= 15);
                assert!((f32::from(qi) * s + o - v).abs() <= 8.0 * top * f32::EPSILON);
            }
        }
        let q5_1: Vec<f32> = (0..32).map(|i| i as f32 * d + m).collect();
        assert!(q4_block(&q5_1).is_none() && q8_offset_block(&q5_1).is_some());
        assert!(CompactFormat::Q4.holds(&q4_1) && !CompactFormat::Q4.holds(&q5_1));
    }
}
