//! The quantizers write what llama.cpp's `llama-quantize` wrote: llama-small's f32 weights
//! quantized here to Q8_0 and Q4_0 are, tensor by tensor, byte-identical to the Q8_0 and Q4_0
//! tensors of `testdata/llama-small-quant/model-{q8_0,q4_0}.gguf` (made by llama.cpp 0c1e570
//! from the same weights).

use std::path::{Path, PathBuf};

use cranegrad_models::loader::quant_blocks::dequantize;
use cranegrad_models::loader::{GgufFile, SourceDType, load_hf_dir};
use cranegrad_models::quantize::quantize_row;

fn td(p: &str) -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "testdata", p].iter().collect()
}

/// The HF name of a llama.cpp tensor, and the head count its rows are permuted by (q, k).
fn hf_name(gguf: &str, heads: usize, kv_heads: usize) -> Option<(String, Option<usize>)> {
    match gguf {
        "token_embd.weight" => return Some(("model.embed_tokens.weight".into(), None)),
        "output.weight" => return Some(("lm_head.weight".into(), None)),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let (name, perm) = match part {
        "attn_q.weight" => ("self_attn.q_proj.weight", Some(heads)),
        "attn_k.weight" => ("self_attn.k_proj.weight", Some(kv_heads)),
        "attn_v.weight" => ("self_attn.v_proj.weight", None),
        "attn_output.weight" => ("self_attn.o_proj.weight", None),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", None),
        "ffn_up.weight" => ("mlp.up_proj.weight", None),
        "ffn_down.weight" => ("mlp.down_proj.weight", None),
        _ => return None,
    };
    Some((format!("model.layers.{layer}.{name}"), perm))
}

/// The HF row that llama.cpp's converter stores at row `r` of a q/k weight permuted for its
/// adjacent-pair RoPE (`reshape(heads, 2, d/2, in).swapaxes(1, 2)`).
fn hf_row(r: usize, rows: usize, heads: usize) -> usize {
    let d = rows / heads;
    let (h, within) = (r / d, r % d);
    h * d + (within % 2) * (d / 2) + within / 2
}

fn check(file: &str, dtype: SourceDType) -> usize {
    let (_, hf) = load_hf_dir(&td("llama-small")).unwrap();
    let path = td(&format!("llama-small-quant/{file}"));
    let bytes = std::fs::read(&path).unwrap();
    let g = GgufFile::parse(&bytes, Path::new(&path)).unwrap();
    let mut compared = 0;
    for info in &g.tensors {
        if info.ggml_type.source_dtype() != Some(dtype) {
            continue;
        }
        let (name, perm) = hf_name(&info.name, 8, 2).unwrap_or_else(|| panic!("{}", info.name));
        let t = hf.get(&name).unwrap();
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let start = (g.data_offset + info.offset) as usize;
        let stored = &bytes[start..start + info.byte_len.unwrap()];
        let row_bytes = stored.len() / rows;
        for r in 0..rows {
            let src = perm.map_or(r, |heads| hf_row(r, rows, heads));
            let ours = quantize_row(dtype, &t.data[src * cols..(src + 1) * cols]).unwrap();
            assert_eq!(
                ours,
                stored[r * row_bytes..(r + 1) * row_bytes],
                "{file}: {} row {r}",
                info.name
            );
        }
        compared += 1;
    }
    compared
}

#[test]
fn q8_0_blocks_are_llama_quantizes() {
    // Every 2-D tensor of the Q8_0 file: 4 layers x 7 matrices + embedding + head.
    assert_eq!(check("model-q8_0.gguf", SourceDType::Q8_0), 30);
}

#[test]
fn q4_0_blocks_are_llama_quantizes() {
    // All but the head, which llama-quantize's Q4_0 mix stores as Q6_K.
    assert_eq!(check("model-q4_0.gguf", SourceDType::Q4_0), 29);
}

#[test]
fn a_row_that_is_not_whole_blocks_is_refused() {
    assert!(quantize_row(SourceDType::Q8_0, &[1.0; 33]).is_none());
    assert!(quantize_row(SourceDType::Q6_K, &[1.0; 256]).is_none());
    // An all-zero block has scale 0 and zero values.
    let z = quantize_row(SourceDType::Q4_0, &[0.0; 32]).unwrap();
    assert!(dequantize(SourceDType::Q4_0, &z).iter().all(|&v| v == 0.0));
}
