//! llama.cpp LLaMA GGUF -> Hugging Face config, names and layout.
//!
//! llama.cpp's converter permutes the rows of `attn_q`/`attn_k` so that its adjacent-pair RoPE
//! matches HF's rotate_half. Undoing that here gives every format the same HF layout, so the
//! model code has one RoPE and one set of names whatever file it was loaded from.

use std::path::Path;

use super::config::{LlamaConfig, ModelConfig, RopeScaling, check_positions};
use super::error::{LoadError, Result};
use super::file::map_file;
use super::gguf::{GgufFile, GgufValue};
use super::json::MAX_DIM;
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

/// Reads `llama.*` metadata into a HF-equivalent config.
fn llama_config(file: &GgufFile, bytes: &[u8]) -> Result<LlamaConfig> {
    let m = Meta { file };
    let arch = m.str("general.architecture")?;
    if arch != "llama" {
        return Err(LoadError::UnsupportedModel {
            path: file.path.clone(),
            what: "general.architecture",
            name: arch.to_string(),
            supported: "llama",
        });
    }
    if m.opt_usize("llama.expert_count")?.unwrap_or(0) > 0 {
        return Err(m.err(
            "llama.expert_count",
            "mixture-of-experts models are not supported",
        ));
    }
    let hidden = m.positive("llama.embedding_length")?;
    let heads = m.positive("llama.attention.head_count")?;
    let kv_heads = m
        .opt_usize("llama.attention.head_count_kv")?
        .unwrap_or(heads);
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(m.err(
            "llama.attention.head_count_kv",
            format!("{kv_heads} does not divide head_count = {heads}"),
        ));
    }
    let head_dim = match m.opt_usize("llama.attention.key_length")? {
        Some(d) if d > 0 => d,
        _ if hidden % heads == 0 => hidden / heads,
        _ => {
            return Err(m.err(
                "llama.attention.key_length",
                format!("absent, and embedding_length {hidden} is not a multiple of {heads} heads"),
            ));
        }
    };
    if head_dim % 2 != 0 {
        return Err(m.err(
            "llama.attention.key_length",
            format!("RoPE needs an even head dim, found {head_dim}"),
        ));
    }
    if let Some(v) = m.opt_usize("llama.attention.value_length")?
        && v != head_dim
    {
        return Err(m.err(
            "llama.attention.value_length",
            format!("{v} differs from key_length {head_dim}, which LLaMA does not do"),
        ));
    }
    if let Some(r) = m.opt_usize("llama.rope.dimension_count")?
        && r != head_dim
    {
        return Err(m.err(
            "llama.rope.dimension_count",
            format!("partial RoPE ({r} of {head_dim} dims) is not supported"),
        ));
    }
    if let Some(kind) = m.opt_str("llama.rope.scaling.type")?
        && kind != "none"
    {
        return Err(m.err(
            "llama.rope.scaling.type",
            format!("RoPE scaling `{kind}` is not supported (supported: none, rope_freqs)"),
        ));
    }
    let rope_scaling = match file.tensor(ROPE_FREQS) {
        None => RopeScaling::None,
        Some(info) => {
            let t = file.read_tensor(bytes, info)?;
            if t.data.len() != head_dim / 2 {
                return Err(LoadError::bad_tensor(
                    &file.path,
                    ROPE_FREQS,
                    format!("{} factors for {} frequencies", t.data.len(), head_dim / 2),
                ));
            }
            RopeScaling::FreqFactors(t.data.iter().map(|&x| f64::from(x)).collect())
        }
    };
    let vocab = match m.opt_usize("llama.vocab_size")? {
        Some(v) => v,
        None => match file
            .get("tokenizer.ggml.tokens")
            .and_then(GgufValue::as_array)
        {
            Some(tokens) => tokens.len(),
            None => file
                .tensor("token_embd.weight")
                .and_then(|t| t.dims.get(1).copied())
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(|| {
                    m.err(
                        "llama.vocab_size",
                        "absent, and no tokenizer.ggml.tokens or token_embd.weight to infer it",
                    )
                })?,
        },
    };
    Ok(LlamaConfig {
        hidden,
        layers: m.positive("llama.block_count")?,
        heads,
        kv_heads,
        head_dim,
        intermediate: m.positive("llama.feed_forward_length")?,
        vocab,
        max_positions: check_positions(
            m.positive("llama.context_length")?,
            &file.path,
            "llama.context_length",
        )?,
        rms_norm_eps: m.float("llama.attention.layer_norm_rms_epsilon")?,
        rope_theta: m.opt_float("llama.rope.freq_base")?.unwrap_or(10000.0),
        rope_scaling,
        tie_word_embeddings: file.tensor("output.weight").is_none(),
        bos_token_id: m.opt_token("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: m
            .opt_token("tokenizer.ggml.eos_token_id")?
            .into_iter()
            .collect(),
    })
}

/// Typed metadata reads whose errors name the file and key.
struct Meta<'a> {
    file: &'a GgufFile,
}

impl Meta<'_> {
    fn err(&self, key: &str, msg: impl Into<String>) -> LoadError {
        LoadError::config(&self.file.path, key, msg)
    }

    fn str(&self, key: &str) -> Result<&str> {
        self.opt_str(key)?
            .ok_or_else(|| self.err(key, "required metadata is missing"))
    }

    fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a string, found {v:?}"))),
        }
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                None => Err(self.err(key, format!("expected a non-negative integer, found {v:?}"))),
                // Bounded so corrupt metadata cannot drive huge allocations or overflows.
                Some(n) if n > MAX_DIM as u64 => {
                    Err(self.err(key, format!("{n} is implausibly large (limit {MAX_DIM})")))
                }
                Some(n) => Ok(Some(n as usize)),
            },
        }
    }

    fn positive(&self, key: &str) -> Result<usize> {
        match self.opt_usize(key)? {
            None => Err(self.err(key, "required metadata is missing")),
            Some(0) => Err(self.err(key, "must be positive, found 0")),
            Some(n) => Ok(n),
        }
    }

    fn opt_token(&self, key: &str) -> Result<Option<u32>> {
        self.opt_usize(key)?
            .map(|n| {
                u32::try_from(n).map_err(|_| self.err(key, format!("token id {n} exceeds u32")))
            })
            .transpose()
    }

    /// GGUF stores these floats as f32; widening via the shortest decimal that round-trips
    /// recovers the value the converter was given (`1e-5`, not `9.99999974e-6`), so GGUF and
    /// `config.json` describe equal configs. The f32 the model computes with is unchanged.
    fn opt_float(&self, key: &str) -> Result<Option<f64>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(GgufValue::F32(x)) => Ok(Some(x.to_string().parse().unwrap_or(f64::from(*x)))),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a float, found {v:?}"))),
        }
    }

    fn float(&self, key: &str) -> Result<f64> {
        self.opt_float(key)?
            .ok_or_else(|| self.err(key, "required metadata is missing"))
    }
}
