//! Weights quantized as llama.cpp's reference quantizers do (`quantize_row_q8_0_ref`,
//! `quantize_row_q4_0_ref` in ggml-quants.c), block for block and byte for byte, so a model
//! quantized here is the file `llama-quantize` would write. The blocks are what
//! `loader::quant_blocks` reads back.

use half::f16;

use crate::loader::SourceDType;

/// Values per block of the types quantized here.
pub const BLOCK: usize = 32;

/// Quantizes `row` (a multiple of 32 values) to `dtype` blocks; `None` for a type this module
/// does not write.
pub fn quantize_row(dtype: SourceDType, row: &[f32]) -> Option<Vec<u8>> {
    if !row.len().is_multiple_of(BLOCK) {
        return None;
    }
    let mut out = Vec::new();
    for x in row.chunks_exact(BLOCK) {
        match dtype {
            SourceDType::Q8_0 => q8_0(x, &mut out),
            SourceDType::Q4_0 => q4_0(x, &mut out),
            _ => return None,
        }
    }
    Some(out)
}

/// `d = max|x| / 127`, `q = round(x / d)` (half away from zero, as C's `roundf`); the scale is
/// stored as f16 but the values are divided by the f32 one, as llama.cpp does.
fn q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend(f16::from_f32(d).to_le_bytes());
    out.extend(x.iter().map(|&v| (v * id).round() as i8 as u8));
}

/// The value of largest magnitude (the first such, sign kept) gives `d = max / -8`; each value
/// becomes `min(15, trunc(x / d + 8.5))`, value j in the low nibble of byte j and value j + 16
/// in its high nibble.
fn q4_0(x: &[f32], out: &mut Vec<u8>) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend(f16::from_f32(d).to_le_bytes());
    let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
    out.extend((0..16).map(|j| q(x[j]) | (q(x[j + 16]) << 4)));
}
