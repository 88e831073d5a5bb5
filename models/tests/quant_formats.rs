//! Every GGUF quant type llama.cpp writes for LLaMA files (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, and the
//! K-quant mixes Q4_K_M, Q5_K_M, Q6_K that also hold Q4_K, Q5_K and Q6_K tensors) loads and
//! reproduces its golden: the Hugging Face model run on exactly dequantised weights
//! (`testdata/llama-small-quant`, made with llama.cpp's converter and quantizer), at the
//! default tolerance with identical greedy tokens. Each block format is also checked on blocks
//! packed by hand in this test from known values, by the layout alone.

use std::path::PathBuf;

use cranegrad_graph::CompactFormat;
use half::f16;

use cranegrad_models::Model;
use cranegrad_models::golden::{read, verify};
use cranegrad_models::loader::SourceDType;
use cranegrad_models::loader::quant_blocks::{block_shape, dequantize};
use cranegrad_runtime::{Session, SessionOptions};

fn td(p: &str) -> String {
    let d: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "testdata",
        "llama-small-quant",
        p,
    ]
    .iter()
    .collect();
    d.to_string_lossy().into_owned()
}

#[test]
fn every_quantized_file_reproduces_its_golden() {
    for t in [
        "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k_m", "q5_k_m", "q6_k", "bf16", "f16",
    ] {
        let model =
            Model::load(&td(&format!("model-{t}.gguf")), 0).unwrap_or_else(|e| panic!("{t}: {e}"));
        // The block types are packed compactly (every projection, so the golden below checks
        // those GEMMs): 4-bit types as nibbles with offsets, 8- and 5-bit ones as Q8 (with
        // offsets for the types with a minimum), Q6_K with a scale per half block. f16 and
        // bf16 are not block formats.
        let projections: Vec<String> = model
            .weights
            .names()
            .into_iter()
            .filter(|n| n.contains("_proj."))
            .collect();
        assert!(!projections.is_empty(), "{t}");
        let count = |f: CompactFormat| {
            projections
                .iter()
                .filter(|n| model.weights.get(n).unwrap().data.compact() == Some(f))
                .count()
        };
        let q8 = count(CompactFormat::Q8);
        let q8o = count(CompactFormat::Q8Offset);
        let q8s = count(CompactFormat::Q8Split);
        let q4 = count(CompactFormat::Q4);
        let all = projections.len();
        match t {
            "q5_0" | "q8_0" => assert_eq!((q8, q8o, q8s, q4), (all, 0, 0, 0), "{t}"),
            "q4_0" | "q4_1" => assert_eq!((q8, q8o, q8s, q4), (0, 0, 0, all), "{t}"),
            "q5_1" => assert_eq!((q8, q8o, q8s, q4), (0, all, 0, 0), "{t}"),
            "q6_k" => assert_eq!((q8, q8o, q8s, q4), (0, 0, all, 0), "{t}"),
            // The K mixes keep some tensors in Q6_K.
            "q4_k_m" => assert!(q4 > all / 2 && q8s > 0 && q4 + q8s == all, "{t}"),
            "q5_k_m" => assert!(q8o > all / 2 && q8s > 0 && q8o + q8s == all, "{t}"),
            _ => assert_eq!((q8, q8o, q8s, q4), (0, 0, 0, 0), "{t}"),
        }
        let golden = read(std::path::Path::new(&td(&format!(
            "golden-{t}.safetensors"
        ))))
        .unwrap();
        let mut s = Session::new(SessionOptions {
            fuse: true,
            threads: 2,
        })
        .unwrap();
        let r = verify(&mut s, &model, &golden, 1e-4, 1e-4).unwrap();
        eprintln!(
            "{t}: max |diff| {:.3e}, tokens {}/{}",
            r.max_abs_diff, r.tokens_matching.0, r.tokens_matching.1
        );
        assert!(r.passed, "{t}: {r:?}");
    }
}

/// A deterministic stream of small integers for filling blocks.
fn values(seed: u32, n: usize, modulo: u32) -> Vec<u32> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % modulo
        })
        .collect()
}

fn half_bytes(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

fn check(dtype: SourceDType, block: &[u8], want: &[f64]) {
    assert_eq!(block_shape(dtype).unwrap().1, block.len(), "{dtype}");
    let got = dequantize(dtype, block);
    assert_eq!(got.len(), want.len(), "{dtype}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert_eq!(f64::from(g), w, "{dtype} value {i}");
    }
}

#[test]
fn legacy_blocks_decode_by_their_layout() {
    let (d, m) = (0.375f32, -1.25f32);
    for bits in [4u32, 5] {
        let q = values(bits, 32, 1 << bits);
        // Low nibbles: byte j holds value j (low) and j + 16 (high); fifth bits in a u32.
        let mut qs = [0u8; 16];
        let mut qh = 0u32;
        for (i, &v) in q.iter().enumerate() {
            qs[i % 16] |= ((v & 0xF) as u8) << (4 * (i / 16));
            qh |= (v >> 4) << i;
        }
        let offset = f64::from(1u32 << (bits - 1));
        let symmetric: Vec<f64> = q
            .iter()
            .map(|&v| f64::from(d) * (f64::from(v) - offset))
            .collect();
        let asymmetric: Vec<f64> = q
            .iter()
            .map(|&v| f64::from(d) * f64::from(v) + f64::from(m))
            .map(|x| f64::from(x as f32))
            .collect();
        let mut sym = half_bytes(d).to_vec();
        let mut asym = [half_bytes(d), half_bytes(m)].concat();
        if bits == 5 {
            sym.extend(qh.to_le_bytes());
            asym.extend(qh.to_le_bytes());
        }
        sym.extend(qs);
        asym.extend(qs);
        let (s, a) = if bits == 4 {
            (SourceDType::Q4_0, SourceDType::Q4_1)
        } else {
            (SourceDType::Q5_0, SourceDType::Q5_1)
        };
        check(s, &sym, &symmetric);
        check(a, &asym, &asymmetric);
    }
    let q: Vec<i8> = values(8, 32, 256).iter().map(|&v| v as u8 as i8).collect();
    let mut block = half_bytes(d).to_vec();
    block.extend(q.iter().map(|&v| v as u8));
    check(
        SourceDType::Q8_0,
        &block,
        &q.iter()
            .map(|&v| f64::from(d) * f64::from(v))
            .collect::<Vec<_>>(),
    );
}

/// The 12 scale bytes of a K-quant from eight 6-bit scales and mins.
fn pack_scales(sc: &[u32], mn: &[u32]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] |= sc[j] as u8 & 63;
            s[j + 4] |= mn[j] as u8 & 63;
        } else {
            s[j + 4] |= (sc[j] as u8 & 0xF) | ((mn[j] as u8 & 0xF) << 4);
            s[j - 4] |= ((sc[j] >> 4) as u8) << 6;
            s[j] |= ((mn[j] >> 4) as u8) << 6;
        }
    }
    s
}

#[test]
fn k_quant_blocks_decode_by_their_layout() {
    let (d, dmin) = (0.0625f32, 0.03125f32);
    let sc = values(1, 8, 64);
    let mn = values(2, 8, 64);
    for bits in [4u32, 5] {
        let q = values(bits + 10, 256, 1 << bits);
        // Group c of 32 bytes: value 64c + l in the low nibble of byte l, 64c + 32 + l in the
        // high one; the fifth bit of those in bits 2c and 2c + 1 of qh[l].
        let mut qs = [0u8; 128];
        let mut qh = [0u8; 32];
        for (i, &v) in q.iter().enumerate() {
            let (c, upper, l) = (i / 64, (i / 32) % 2, i % 32);
            qs[32 * c + l] |= ((v & 0xF) as u8) << (4 * upper);
            qh[l] |= ((v >> 4) as u8) << (2 * c + upper);
        }
        let want: Vec<f64> = q
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let j = i / 32;
                let scale = f64::from(d) * f64::from(sc[j]);
                let min = f64::from(dmin) * f64::from(mn[j]);
                f64::from((scale * f64::from(v) - min) as f32)
            })
            .collect();
        let mut block = [half_bytes(d), half_bytes(dmin)].concat();
        block.extend(pack_scales(&sc, &mn));
        if bits == 5 {
            block.extend(qh);
        }
        block.extend(qs);
        let dtype = if bits == 4 {
            SourceDType::Q4_K
        } else {
            SourceDType::Q5_K
        };
        check(dtype, &block, &want);
    }
    // Q6_K: two halves of 128; within a half, value l, 32 + l, 64 + l, 96 + l share ql/qh bytes.
    let q = values(6, 256, 64);
    let scales: Vec<i8> = values(7, 16, 256).iter().map(|&v| v as u8 as i8).collect();
    let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
    for (i, &v) in q.iter().enumerate() {
        let (h, r) = (i / 128, i % 128);
        let (quarter, l) = (r / 32, r % 32);
        let low = (v & 0xF) as u8;
        let byte = 64 * h + l + 32 * (quarter % 2);
        ql[byte] |= low << (4 * (quarter / 2));
        qh[32 * h + l] |= ((v >> 4) as u8) << (2 * quarter);
    }
    let d6 = 0.015625f32;
    let want: Vec<f64> = q
        .iter()
        .enumerate()
        .map(|(i, &v)| f64::from(d6) * f64::from(scales[i / 16]) * (f64::from(v) - 32.0))
        .collect();
    let mut block = ql.to_vec();
    block.extend(qh);
    block.extend(scales.iter().map(|&s| s as u8));
    block.extend(half_bytes(d6));
    check(SourceDType::Q6_K, &block, &want);
}
