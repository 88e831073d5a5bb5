//! llama.cpp LLaMA GGUF -> Hugging Face config, names and layout.
//!
//! The config is read by turning the `llama.*` metadata into a `config.json`-shaped JSON value
//! (`llama.embedding_length` -> `hidden_size`, ...) and deserializing that with the same serde
//! structs and validation as a Hugging Face folder; errors are renamed back to the GGUF keys.
//!
//! llama.cpp's converter permutes the rows of `attn_q`/`attn_k` so that its adjacent-pair RoPE
//! matches HF's rotate_half. Undoing that here gives every format the same HF layout, so the
//! model code has one RoPE and one set of names whatever file it was loaded from.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::config::{LlamaConfig, ModelConfig, RopeScaling};
use super::config_fields::{Dim, from_config_json};
use super::error::{LoadError, Result};
use super::file::map_file;
use super::gguf::{GgufFile, GgufValue};
use super::hf_config::{LlamaFile, llama_config as validate_llama};
use super::tensor::{HostTensor, WeightStore};
use super::validate::validate;

/// Tensor holding llama.cpp's per-frequency RoPE divisors (its encoding of llama3 scaling).
const ROPE_FREQS: &str = "rope_freqs.weight";

/// Which row permutation a tensor carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Permuted {
    /// Not permuted.
    No,
    /// `attn_q`: grouped by query heads.
    Query,
    /// `attn_k`: grouped by key/value heads.
    Key,
}

/// Loads and validates a LLaMA GGUF file, returning HF names and HF (un-permuted) layout.
pub fn load_gguf(path: &Path) -> Result<(ModelConfig, WeightStore)> {
    let bytes = map_file(path)?;
    load_gguf_bytes(&bytes, path)
}

/// Like `load_gguf` for a file already in memory; `path` is only used in messages.
pub fn load_gguf_bytes(bytes: &[u8], path: &Path) -> Result<(ModelConfig, WeightStore)> {
    let file = GgufFile::parse(bytes, path)?;
    if file.tensors.is_empty() && file.get("tokenizer.ggml.model").is_some() {
        return Err(LoadError::corrupt(
            path,
            "holds a vocabulary and no tensors: it is not a model (tokenize, detokenize, \
             template and --tokenizer read it)",
        ));
    }
    let cfg = llama_config(&file, bytes)?;
    let mut store = WeightStore::new(path.display().to_string());
    for info in &file.tensors {
        if info.name == ROPE_FREQS {
            continue; // consumed by the config
        }
        let (hf, permuted) = hf_name(&info.name).ok_or_else(|| {
            LoadError::bad_tensor(path, &info.name, "not a tensor of llama.cpp's LLaMA layout")
        })?;
        let mut t = file.read_tensor(bytes, info)?;
        let groups = match permuted {
            Permuted::No => None,
            Permuted::Query => Some(cfg.heads),
            Permuted::Key => Some(cfg.kv_heads),
        };
        if let Some(n) = groups {
            unpermute_rows(&mut t, n).map_err(|m| LoadError::bad_tensor(path, &info.name, m))?;
        }
        store.insert(hf, t)?;
    }
    let cfg = ModelConfig::Llama(cfg);
    validate(&cfg, &store)?;
    Ok((cfg, store))
}

/// The HF name of a llama.cpp tensor name, and whether its rows are permuted.
fn hf_name(gguf: &str) -> Option<(String, Permuted)> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some((name.to_string(), Permuted::No));
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let layer: usize = layer.parse().ok()?;
    let (hf, permuted) = match suffix {
        "attn_norm.weight" => ("input_layernorm.weight", Permuted::No),
        "attn_q.weight" => ("self_attn.q_proj.weight", Permuted::Query),
        "attn_k.weight" => ("self_attn.k_proj.weight", Permuted::Key),
        "attn_v.weight" => ("self_attn.v_proj.weight", Permuted::No),
        "attn_output.weight" => ("self_attn.o_proj.weight", Permuted::No),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", Permuted::No),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", Permuted::No),
        "ffn_up.weight" => ("mlp.up_proj.weight", Permuted::No),
        "ffn_down.weight" => ("mlp.down_proj.weight", Permuted::No),
        _ => return None,
    };
    Some((format!("model.layers.{layer}.{hf}"), permuted))
}

/// Inverts `w.reshape(n, 2, hd/2, in).swapaxes(1, 2).reshape(out, in)`: GGUF row
/// `g*hd + 2i + h` goes back to HF row `g*hd + h*hd/2 + i`.
fn unpermute_rows(t: &mut HostTensor, n: usize) -> std::result::Result<(), String> {
    let [rows, cols] = t.shape[..] else {
        return Err(format!(
            "expected a matrix to un-permute, found shape {:?}",
            t.shape
        ));
    };
    if n == 0 || !rows.is_multiple_of(n) || !(rows / n).is_multiple_of(2) {
        return Err(format!(
            "{rows} rows do not split into {n} heads of even width"
        ));
    }
    let hd = rows / n;
    let half = hd / 2;
    let src = &t.data;
    let mut out = vec![0f32; src.len()];
    for g in 0..n {
        for i in 0..half {
            for h in 0..2 {
                let from = (g * hd + 2 * i + h) * cols;
                let to = (g * hd + h * half + i) * cols;
                out[to..to + cols].copy_from_slice(&src[from..from + cols]);
            }
        }
    }
    t.data = out;
    Ok(())
}

/// llama.cpp metadata keys and the `config.json` keys they stand for.
const HF_KEYS: [(&str, &str); 12] = [
    ("llama.embedding_length", "hidden_size"),
    ("llama.block_count", "num_hidden_layers"),
    ("llama.attention.head_count", "num_attention_heads"),
    ("llama.attention.head_count_kv", "num_key_value_heads"),
    ("llama.attention.key_length", "head_dim"),
    ("llama.feed_forward_length", "intermediate_size"),
    ("llama.vocab_size", "vocab_size"),
    ("llama.context_length", "max_position_embeddings"),
    ("llama.attention.layer_norm_rms_epsilon", "rms_norm_eps"),
    ("llama.rope.freq_base", "rope_theta"),
    ("tokenizer.ggml.bos_token_id", "bos_token_id"),
    ("tokenizer.ggml.eos_token_id", "eos_token_id"),
];

/// Keys `config.json` may leave to transformers' defaults but llama.cpp always writes: a file
/// without them is not what the converter made.
const REQUIRED: [&str; 2] = [
    "llama.context_length",
    "llama.attention.layer_norm_rms_epsilon",
];

/// Metadata with no `config.json` counterpart that decides whether this loader can run the
/// file.
#[derive(Deserialize, Default)]
#[serde(default)]
struct GgufOnly {
    #[serde(rename = "general.architecture")]
    architecture: Option<String>,
    #[serde(rename = "llama.expert_count")]
    expert_count: Option<Dim>,
    #[serde(rename = "llama.attention.value_length")]
    value_length: Option<Dim>,
    #[serde(rename = "llama.rope.dimension_count")]
    rope_dimension_count: Option<Dim>,
    #[serde(rename = "llama.rope.scaling.type")]
    rope_scaling_type: Option<String>,
}

/// Reads `llama.*` metadata into a HF-equivalent config.
fn llama_config(file: &GgufFile, bytes: &[u8]) -> Result<LlamaConfig> {
    let path = &file.path;
    let err = |key: &str, msg: String| LoadError::config(path, key, msg);
    let own: Map<String, Value> = file
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("general.") || k.starts_with("llama."))
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect();
    let own: GgufOnly = from_config_json(&Value::Object(own), path)?;
    let arch = own.architecture.ok_or_else(|| {
        err(
            "general.architecture",
            "required metadata is missing".into(),
        )
    })?;
    if arch != "llama" {
        return Err(LoadError::UnsupportedModel {
            path: path.clone(),
            what: "general.architecture",
            name: arch,
            supported: "llama",
        });
    }
    if own.expert_count.is_some_and(|n| n.0 > 0) {
        return Err(err(
            "llama.expert_count",
            "mixture-of-experts models are not supported".into(),
        ));
    }
    if let Some(kind) = own.rope_scaling_type
        && kind != "none"
    {
        return Err(err(
            "llama.rope.scaling.type",
            format!("RoPE scaling `{kind}` is not supported (supported: none, rope_freqs)"),
        ));
    }
    if let Some(key) = REQUIRED.iter().find(|k| file.get(k).is_none()) {
        return Err(err(key, "required metadata is missing".into()));
    }

    let hf = Value::Object(hf_config_json(file)?);
    let mut cfg = from_config_json::<LlamaFile>(&hf, path)
        .and_then(|f| validate_llama(&f, path))
        .map_err(to_gguf_key)?;
    let head_dim = cfg.head_dim;
    if let Some(Dim(v)) = own.value_length
        && v != head_dim
    {
        return Err(err(
            "llama.attention.value_length",
            format!("{v} differs from key_length {head_dim}, which LLaMA does not do"),
        ));
    }
    if let Some(Dim(r)) = own.rope_dimension_count
        && r != head_dim
    {
        return Err(err(
            "llama.rope.dimension_count",
            format!("partial RoPE ({r} of {head_dim} dims) is not supported"),
        ));
    }
    if let Some(info) = file.tensor(ROPE_FREQS) {
        let t = file.read_tensor(bytes, info)?;
        if t.data.len() != head_dim / 2 {
            return Err(LoadError::bad_tensor(
                path,
                ROPE_FREQS,
                format!("{} factors for {} frequencies", t.data.len(), head_dim / 2),
            ));
        }
        cfg.rope_scaling = RopeScaling::FreqFactors(t.data.iter().map(|&x| f64::from(x)).collect());
    }
    Ok(cfg)
}

/// The metadata as the `config.json` a Hugging Face export of the same model would have.
/// What llama.cpp does not store as metadata is read off the file: the vocabulary from the
/// token list or the embedding, and a tied head from the absence of `output.weight`.
fn hf_config_json(file: &GgufFile) -> Result<Map<String, Value>> {
    let mut hf: Map<String, Value> = HF_KEYS
        .iter()
        .filter_map(|(gguf, hf)| Some((hf.to_string(), file.get(gguf)?.to_json())))
        .collect();
    if !hf.contains_key("vocab_size") {
        let vocab = match file
            .get("tokenizer.ggml.tokens")
            .and_then(GgufValue::as_array)
        {
            Some(tokens) => tokens.len(),
            None => file
                .tensor("token_embd.weight")
                .and_then(|t| t.dims.get(1).copied())
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(|| {
                    LoadError::config(
                        &file.path,
                        "llama.vocab_size",
                        "absent, and no tokenizer.ggml.tokens or token_embd.weight to infer it",
                    )
                })?,
        };
        hf.insert("vocab_size".into(), vocab.into());
    }
    hf.insert(
        "tie_word_embeddings".into(),
        file.tensor("output.weight").is_none().into(),
    );
    Ok(hf)
}

/// Renames the `config.json` key an error names to the GGUF key it was read from.
fn to_gguf_key(e: LoadError) -> LoadError {
    match e {
        LoadError::Config { path, field, msg } => {
            let field = HF_KEYS
                .iter()
                .find(|(_, hf)| *hf == field)
                .map_or(field, |(gguf, _)| gguf.to_string());
            LoadError::Config { path, field, msg }
        }
        other => other,
    }
}
