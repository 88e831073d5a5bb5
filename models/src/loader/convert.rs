//! Raw little-endian bytes of any supported source dtype -> f32.
//!
//! One entry point, so every format (safetensors, GGUF, minimind) widens identically and
//! checks the byte count the same way. Errors are plain messages; callers add file and tensor.

use half::{bf16, f16};

use super::tensor::SourceDType;

/// Largest integer magnitude an f32 holds exactly; integers beyond it would be silently rounded.
const F32_EXACT_INT: u64 = 1 << 24;

/// Decodes `numel` values of `dtype` from `bytes` (exactly as many bytes as they need).
pub fn decode(dtype: SourceDType, bytes: &[u8], numel: usize) -> Result<Vec<f32>, String> {
    let need = needed_bytes(dtype, numel)?;
    if bytes.len() != need {
        return Err(format!(
            "{numel} {dtype} values need {need} bytes, the file has {}",
            bytes.len()
        ));
    }
    Ok(match dtype {
        SourceDType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        SourceDType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        SourceDType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        SourceDType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")) as f32)
            .collect(),
        SourceDType::Q8_0
        | SourceDType::Q4_0
        | SourceDType::Q4_1
        | SourceDType::Q5_0
        | SourceDType::Q5_1
        | SourceDType::Q4_K
        | SourceDType::Q5_K
        | SourceDType::Q6_K => super::quant_blocks::dequantize(dtype, bytes),
        SourceDType::I64 => ints_to_f32(
            bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("chunk of 8"))),
        )?,
        SourceDType::I32 => ints_to_f32(
            bytes
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        )?,
    })
}

/// Bytes needed for `numel` values, or a message if that overflows or breaks a block type's
/// blocking.
pub fn needed_bytes(dtype: SourceDType, numel: usize) -> Result<usize, String> {
    let overflow = || format!("{numel} {dtype} values overflow the address space");
    if let Some((n, bytes)) = super::quant_blocks::block_shape(dtype) {
        if !numel.is_multiple_of(n) {
            return Err(format!(
                "{dtype} needs a multiple of {n} values, got {numel}"
            ));
        }
        return (numel / n).checked_mul(bytes).ok_or_else(overflow);
    }
    match dtype {
        SourceDType::F32 | SourceDType::I32 => numel.checked_mul(4).ok_or_else(overflow),
        SourceDType::F16 | SourceDType::BF16 => numel.checked_mul(2).ok_or_else(overflow),
        _ => numel.checked_mul(8).ok_or_else(overflow),
    }
}

/// Integers are only accepted when f32 represents them exactly; otherwise say which one broke.
fn ints_to_f32(values: impl Iterator<Item = i64>) -> Result<Vec<f32>, String> {
    values
        .enumerate()
        .map(|(i, v)| {
            if v.unsigned_abs() <= F32_EXACT_INT {
                Ok(v as f32)
            } else {
                Err(format!(
                    "integer {v} at index {i} is not exactly representable as f32"
                ))
            }
        })
        .collect()
}
