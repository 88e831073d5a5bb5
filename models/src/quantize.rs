//! Weights quantized as llama.cpp's reference quantizers do (`quantize_row_q8_0_ref`,
//! `quantize_row_q4_0_ref` in ggml-quants.c), block for block and byte for byte, so a model
//! quantized here is the file `llama-quantize` would write. The blocks are what
//! `loader::quant_blocks` reads back.

use cranegrad_graph::CompactFormat;
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

/// What `--quantize` converts a model's matrices to. A quantized weight is held as the exact
/// dequantisation of its blocks, so the model computes what the quantized model computes
/// (goldens of llama.cpp's files hold); those of [`Quantize::packed_formats`] are then packed
/// compactly for the GEMMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantize {
    /// IEEE half precision.
    F16,
    /// bfloat16 (rounded to nearest even).
    Bf16,
    /// llama.cpp Q8_0 (blocks of 32, f16 scale), byte-identical to `llama-quantize`.
    Q8_0,
    /// llama.cpp Q4_0 (blocks of 32, f16 scale), byte-identical to `llama-quantize`.
    Q4_0,
    /// Symmetric int8 per output channel: one f32 scale per row, `max|row| / 127`.
    Int8,
    /// bitsandbytes NF4: blocks of 64 values, an f32 absmax each, 4-bit NormalFloat codes.
    Nf4,
}

/// The 16 NormalFloat-4 levels (bitsandbytes' `NF4` table).
const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// Values per NF4 block (bitsandbytes' default).
const NF4_BLOCK: usize = 64;

impl Quantize {
    /// Every choice, as spelled on the command line.
    pub const ALL: [Quantize; 6] = [
        Quantize::F16,
        Quantize::Bf16,
        Quantize::Q8_0,
        Quantize::Q4_0,
        Quantize::Int8,
        Quantize::Nf4,
    ];

    /// The command-line spelling.
    pub fn name(self) -> &'static str {
        match self {
            Quantize::F16 => "f16",
            Quantize::Bf16 => "bf16",
            Quantize::Q8_0 => "q8_0",
            Quantize::Q4_0 => "q4_0",
            Quantize::Int8 => "int8",
            Quantize::Nf4 => "nf4",
        }
    }

    /// The compact formats the converted values are packed in, the first they fit (see
    /// `weights::into_first_compact`): bf16 as itself, Q4_0 as nibbles (Q8 should a block
    /// not fit), Q8_0 and int8 as Q8 (a scale per block of 32 along each row). f16 panels
    /// exist too, but their in-register conversion cost more than the bytes they save
    /// (docs/cli.md), and NF4's levels are not integers: both are packed as f32.
    pub fn packed_formats(self) -> &'static [CompactFormat] {
        match self {
            Quantize::Bf16 => &[CompactFormat::Bf16],
            Quantize::Q4_0 => &[CompactFormat::Q4, CompactFormat::Q8],
            Quantize::Q8_0 | Quantize::Int8 => &[CompactFormat::Q8],
            Quantize::F16 | Quantize::Nf4 => &[],
        }
    }

    /// Parses a command-line spelling; the error lists the choices.
    pub fn parse(s: &str) -> Result<Quantize, String> {
        Quantize::ALL
            .into_iter()
            .find(|q| q.name() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                let names: Vec<&str> = Quantize::ALL.iter().map(|q| q.name()).collect();
                format!("{s:?} is not one of {}", names.join(", "))
            })
    }

    /// `data` (`rows` rows of `cols`) quantized and dequantized again; `None` when the blocks
    /// do not divide a row (Q8_0/Q4_0 need rows of a multiple of 32 values).
    pub fn round_trip(self, data: &[f32], cols: usize) -> Option<Vec<f32>> {
        if cols == 0 || !data.len().is_multiple_of(cols) {
            return None;
        }
        Some(match self {
            Quantize::F16 => data.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
            Quantize::Bf16 => data
                .iter()
                .map(|&x| half::bf16::from_f32(x).to_f32())
                .collect(),
            Quantize::Q8_0 | Quantize::Q4_0 => {
                let dtype = if self == Quantize::Q8_0 {
                    SourceDType::Q8_0
                } else {
                    SourceDType::Q4_0
                };
                let mut out = Vec::with_capacity(data.len());
                for row in data.chunks_exact(cols) {
                    let blocks = quantize_row(dtype, row)?;
                    out.extend(crate::loader::quant_blocks::dequantize(dtype, &blocks));
                }
                out
            }
            Quantize::Int8 => data
                .chunks_exact(cols)
                .flat_map(|row| {
                    let scale = row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
                    row.iter().map(move |&x| {
                        if scale == 0.0 {
                            0.0
                        } else {
                            (x / scale).round().clamp(-127.0, 127.0) * scale
                        }
                    })
                })
                .collect(),
            Quantize::Nf4 => data
                .chunks(NF4_BLOCK)
                .flat_map(|block| {
                    let absmax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                    block.iter().map(move |&x| {
                        if absmax == 0.0 {
                            return 0.0;
                        }
                        let v = x / absmax;
                        let code = NF4
                            .iter()
                            .enumerate()
                            .min_by(|a, b| (a.1 - v).abs().total_cmp(&(b.1 - v).abs()))
                            .map_or(7, |(i, _)| i);
                        NF4[code] * absmax
                    })
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_round_trips_within_its_precision_and_spelling_parses() {
        let data: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 31.0)
            .collect();
        let max = data.iter().fold(0f32, |m, v| m.max(v.abs()));
        for q in Quantize::ALL {
            assert_eq!(Quantize::parse(q.name()), Ok(q));
            let back = q.round_trip(&data, 64).unwrap();
            let err = data
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // Half a step of each grid, relative to the largest value (the GGUF types store
            // their scale as f16 but divide by the f32 one, hence a little more).
            let bound = match q {
                Quantize::F16 => max / 2048.0,
                Quantize::Bf16 => max / 256.0,
                Quantize::Int8 => max / 254.0 * 1.001,
                Quantize::Q8_0 => max / 254.0 * 1.05,
                // Q4_0 clips the far end of the sign opposite the largest value to 7 steps.
                Quantize::Q4_0 => max / 8.0 * 1.05,
                Quantize::Nf4 => max * 0.16,
            };
            assert!(err <= bound && err > 0.0, "{}: {err} > {bound}", q.name());
        }
        assert!(Quantize::parse("q3").unwrap_err().contains("q8_0"));
        // Q8_0 blocks must divide a row.
        assert!(Quantize::Q8_0.round_trip(&data[..48], 48).is_none());
    }

    #[test]
    fn nf4_codes_are_the_table_scaled_by_each_blocks_absmax() {
        let mut block = vec![0.1f32; 64];
        block[3] = -2.0;
        let back = Quantize::Nf4.round_trip(&block, 64).unwrap();
        assert_eq!(back[3], -2.0);
        // 0.1 / 2 = 0.05 is nearest to the level 0.0796.
        assert!((back[0] - 0.079_580_3 * 2.0).abs() < 1e-6);
    }
}
