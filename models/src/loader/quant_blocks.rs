//! llama.cpp's quantized block formats, dequantised to f32 as ggml's `dequantize_row_*` does
//! (layouts: ggml-common.h). In every format the products `d * sc * q` are exact in f32 and at
//! most one rounding follows (`+ m`, `- dmin * m`), so these give ggml's values bit for bit.

use half::f16;

use super::tensor::SourceDType;

/// `(values, bytes)` of one block of a quantized type; `None` for plain types.
pub fn block_shape(dtype: SourceDType) -> Option<(usize, usize)> {
    Some(match dtype {
        SourceDType::Q4_0 => (32, 18),
        SourceDType::Q4_1 => (32, 20),
        SourceDType::Q5_0 => (32, 22),
        SourceDType::Q5_1 => (32, 24),
        SourceDType::Q8_0 => (32, 34),
        SourceDType::Q4_K => (256, 144),
        SourceDType::Q5_K => (256, 176),
        SourceDType::Q6_K => (256, 210),
        _ => return None,
    })
}

fn half(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Dequantises whole blocks of `dtype` (`bytes` a multiple of its block size).
pub fn dequantize(dtype: SourceDType, bytes: &[u8]) -> Vec<f32> {
    let (n, size) = block_shape(dtype).expect("a block type");
    let mut out = Vec::with_capacity(bytes.len() / size * n);
    for block in bytes.chunks_exact(size) {
        match dtype {
            SourceDType::Q4_0 => q4_0(block, &mut out),
            SourceDType::Q4_1 => q4_1(block, &mut out),
            SourceDType::Q5_0 => q5_0(block, &mut out),
            SourceDType::Q5_1 => q5_1(block, &mut out),
            SourceDType::Q8_0 => q8_0(block, &mut out),
            SourceDType::Q4_K => q4_k(block, &mut out),
            SourceDType::Q5_K => q5_k(block, &mut out),
            SourceDType::Q6_K => q6_k(block, &mut out),
            _ => unreachable!("block_shape accepted it"),
        }
    }
    out
}

/// The 32 4-bit values of a Q4_0/Q4_1 block: byte j holds value j (low) and j + 16 (high).
fn nibbles(qs: &[u8]) -> [u8; 32] {
    let mut q = [0u8; 32];
    for (j, &b) in qs.iter().enumerate().take(16) {
        q[j] = b & 0xF;
        q[j + 16] = b >> 4;
    }
    q
}

/// The 32 5-bit values of a Q5_0/Q5_1 block: nibbles as Q4_0, bit i of `qh` the fifth bit.
fn five_bits(qh: &[u8], qs: &[u8]) -> [u8; 32] {
    let high = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut q = nibbles(qs);
    for (i, v) in q.iter_mut().enumerate() {
        *v |= (((high >> i) & 1) as u8) << 4;
    }
    q
}

fn q4_0(b: &[u8], out: &mut Vec<f32>) {
    let d = half(b, 0);
    out.extend(
        nibbles(&b[2..18])
            .iter()
            .map(|&q| d * f32::from(q as i8 - 8)),
    );
}

fn q4_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (half(b, 0), half(b, 2));
    out.extend(nibbles(&b[4..20]).iter().map(|&q| d * f32::from(q) + m));
}

fn q5_0(b: &[u8], out: &mut Vec<f32>) {
    let d = half(b, 0);
    out.extend(
        five_bits(&b[2..6], &b[6..22])
            .iter()
            .map(|&q| d * f32::from(q as i8 - 16)),
    );
}

fn q5_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (half(b, 0), half(b, 2));
    out.extend(
        five_bits(&b[4..8], &b[8..24])
            .iter()
            .map(|&q| d * f32::from(q) + m),
    );
}

fn q8_0(b: &[u8], out: &mut Vec<f32>) {
    let d = half(b, 0);
    out.extend(b[2..34].iter().map(|&q| d * f32::from(q as i8)));
}

/// The 8 six-bit (scale, min) pairs packed in a K-quant's 12 scale bytes.
fn scales_mins(s: &[u8]) -> [(u8, u8); 8] {
    let mut out = [(0u8, 0u8); 8];
    for (j, slot) in out.iter_mut().enumerate() {
        *slot = if j < 4 {
            (s[j] & 63, s[j + 4] & 63)
        } else {
            (
                (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
                (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
            )
        };
    }
    out
}

/// Q4_K and Q5_K: 8 sub-blocks of 32; `high` gives the fifth bit of value (group c, byte l,
/// upper half or not) for Q5_K.
fn k_quant(b: &[u8], qs: &[u8], high: impl Fn(usize, usize, bool) -> u8, out: &mut Vec<f32>) {
    let (d, dmin) = (half(b, 0), half(b, 2));
    let sm = scales_mins(&b[4..16]);
    for c in 0..4 {
        for upper in [false, true] {
            let (sc, m) = sm[2 * c + usize::from(upper)];
            let (scale, min) = (d * f32::from(sc), dmin * f32::from(m));
            for l in 0..32 {
                let byte = qs[32 * c + l];
                let q = if upper { byte >> 4 } else { byte & 0xF } | (high(c, l, upper) << 4);
                out.push(scale * f32::from(q) - min);
            }
        }
    }
}

fn q4_k(b: &[u8], out: &mut Vec<f32>) {
    k_quant(b, &b[16..144], |_, _, _| 0, out);
}

fn q5_k(b: &[u8], out: &mut Vec<f32>) {
    let qh = &b[16..48];
    k_quant(
        b,
        &b[48..176],
        |c, l, upper| (qh[l] >> (2 * c + usize::from(upper))) & 1,
        out,
    );
}

fn q6_k(b: &[u8], out: &mut Vec<f32>) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = half(b, 208);
    for h in 0..2 {
        let (ql, qh) = (&ql[64 * h..64 * h + 64], &qh[32 * h..32 * h + 32]);
        let mut q = [0u8; 128];
        for l in 0..32 {
            q[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
            q[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
            q[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            q[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
        for (i, &v) in q.iter().enumerate() {
            let sc = f32::from(scales[(128 * h + i) / 16] as i8);
            out.push(d * sc * f32::from(v as i8 - 32));
        }
    }
}
