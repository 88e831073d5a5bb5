//! Hugging Face `config.json` and `generation_config.json` as serde reads them, and their
//! validation into [`LlamaConfig`] / [`Gpt2Config`].
//!
//! The derived structs take every key as optional: serde checks types (and names the key path
//! of a wrong one), while what is required, positive or consistent is checked here with
//! messages naming the key. GGUF metadata reaches the same structs through a `config.json`
//! shaped value (see `gguf_llama`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use super::config::{
    GenerationConfig, Gpt2Config, LlamaConfig, ModelConfig, RopeScaling, check_positions,
};
use super::config_fields::{Dim, TokenIds, from_config_json, null_as_default, object};
use super::error::{LoadError, Result};

/// HF architectures implemented for `model_type = "llama"`.
const LLAMA_ARCHS: &[&str] = &["LlamaForCausalLM", "LlamaModel"];
/// HF architectures implemented for `model_type = "gpt2"`.
const GPT2_ARCHS: &[&str] = &["GPT2LMHeadModel", "GPT2Model"];
/// Every implemented architecture, for messages.
const SUPPORTED_ARCHS: &str = "LlamaForCausalLM, LlamaModel, GPT2LMHeadModel, GPT2Model";

/// The keys that pick the model family.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Family {
    model_type: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    architectures: Vec<String>,
}

/// A LLaMA `config.json` as written.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct LlamaFile {
    hidden_size: Option<Dim>,
    num_hidden_layers: Option<Dim>,
    num_attention_heads: Option<Dim>,
    num_key_value_heads: Option<Dim>,
    head_dim: Option<Dim>,
    intermediate_size: Option<Dim>,
    vocab_size: Option<Dim>,
    max_position_embeddings: Option<Dim>,
    rms_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    attention_bias: bool,
    #[serde(deserialize_with = "null_as_default")]
    mlp_bias: bool,
    rope_theta: Option<f64>,
    /// transformers v5: theta and scaling together.
    #[serde(deserialize_with = "object")]
    rope_parameters: Option<RopeFields>,
    /// Older configs: the scaling alone (theta is `rope_theta`).
    #[serde(deserialize_with = "object")]
    rope_scaling: Option<RopeFields>,
    #[serde(deserialize_with = "null_as_default")]
    tie_word_embeddings: bool,
    bos_token_id: Option<u32>,
    eos_token_id: Option<TokenIds>,
}

/// The RoPE types implemented; serde refuses any other by name, listing these.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RopeType {
    /// Plain RoPE.
    Default,
    /// Llama 3.x frequency-dependent scaling.
    Llama3,
}

/// A `rope_parameters` or `rope_scaling` object as written. The type (`rope_type`, once
/// `type`) picks the variant of [`RopeScaling`] and which of the other keys it needs.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RopeFields {
    rope_type: Option<RopeType>,
    #[serde(rename = "type")]
    legacy_type: Option<RopeType>,
    rope_theta: Option<f64>,
    partial_rotary_factor: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<Dim>,
    /// Keys of no variant: only looked at to recognise the per-layer-type layout.
    #[serde(flatten)]
    other: BTreeMap<String, IgnoredAny>,
}

impl RopeFields {
    /// Whether the object has any non-null entry.
    fn is_empty(&self) -> bool {
        self.rope_type.is_none()
            && self.legacy_type.is_none()
            && self.rope_theta.is_none()
            && self.partial_rotary_factor.is_none()
            && self.factor.is_none()
            && self.low_freq_factor.is_none()
            && self.high_freq_factor.is_none()
            && self.original_max_position_embeddings.is_none()
            && self.other.is_empty()
    }
}

/// A GPT-2 `config.json` as written.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Gpt2File {
    n_embd: Option<Dim>,
    n_layer: Option<Dim>,
    n_head: Option<Dim>,
    n_inner: Option<Dim>,
    vocab_size: Option<Dim>,
    n_positions: Option<Dim>,
    layer_norm_epsilon: Option<f64>,
    activation_function: Option<String>,
    scale_attn_weights: Option<bool>,
    #[serde(deserialize_with = "null_as_default")]
    scale_attn_by_inverse_layer_idx: bool,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<TokenIds>,
}

/// `generation_config.json` as written (only the token keys matter here).
#[derive(Deserialize, Default)]
#[serde(default)]
struct GenerationFile {
    bos_token_id: Option<u32>,
    eos_token_id: Option<TokenIds>,
}

/// Errors about keys of one object of a config file.
#[derive(Clone, Copy)]
struct Keys<'a> {
    /// File the config came from.
    path: &'a Path,
    /// Dotted key of the object (empty at top level).
    prefix: &'a str,
}

impl<'a> Keys<'a> {
    fn top(path: &'a Path) -> Self {
        Keys { path, prefix: "" }
    }

    fn nested(self, prefix: &'a str) -> Self {
        Keys { prefix, ..self }
    }

    fn key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    fn err(&self, key: &str, msg: impl Into<String>) -> LoadError {
        LoadError::config(self.path, &self.key(key), msg)
    }

    fn required<T>(&self, value: Option<T>, key: &str) -> Result<T> {
        value.ok_or_else(|| self.err(key, "required field is missing"))
    }

    /// A required dimension that must not be 0 (sizes of zero make no model).
    fn positive(&self, value: Option<Dim>, key: &str) -> Result<usize> {
        match self.required(value, key)? {
            Dim(0) => Err(self.err(key, "must be positive, found 0")),
            Dim(n) => Ok(n),
        }
    }

    /// An optional dimension that must not be 0 when given.
    fn positive_or(&self, value: Option<Dim>, key: &str, default: usize) -> Result<usize> {
        match value {
            None => Ok(default),
            some => self.positive(some, key),
        }
    }
}

/// Parses a HF `config.json` already read into `value`.
pub(crate) fn model_config(value: &Value, path: &Path) -> Result<ModelConfig> {
    let family: Family = from_config_json(value, path)?;
    let model_type = match family.model_type {
        Some(t) => t,
        None => infer_model_type(&family.architectures, path)?,
    };
    let allowed = match model_type.as_str() {
        "llama" => LLAMA_ARCHS,
        "gpt2" => GPT2_ARCHS,
        _ => {
            return Err(LoadError::UnsupportedModel {
                path: path.to_path_buf(),
                what: "model_type",
                name: model_type,
                supported: "llama, gpt2",
            });
        }
    };
    if let Some(bad) = family
        .architectures
        .iter()
        .find(|a| !allowed.contains(&a.as_str()))
    {
        return Err(LoadError::UnsupportedModel {
            path: path.to_path_buf(),
            what: "architectures",
            name: bad.clone(),
            supported: SUPPORTED_ARCHS,
        });
    }
    if model_type == "llama" {
        llama_config(&from_config_json(value, path)?, path).map(ModelConfig::Llama)
    } else {
        gpt2_config(from_config_json(value, path)?, path).map(ModelConfig::Gpt2)
    }
}

/// Parses `generation_config.json` already read into `value`.
pub(crate) fn generation_config(value: &Value, path: &Path) -> Result<GenerationConfig> {
    let g: GenerationFile = from_config_json(value, path)?;
    Ok(GenerationConfig {
        bos_token_id: g.bos_token_id,
        eos_token_ids: g.eos_token_id.map(|t| t.0),
    })
}

fn infer_model_type(archs: &[String], path: &Path) -> Result<String> {
    let Some(first) = archs.first() else {
        return Err(LoadError::config(
            path,
            "model_type",
            "neither `model_type` nor `architectures` is set",
        ));
    };
    if LLAMA_ARCHS.contains(&first.as_str()) {
        Ok("llama".into())
    } else if GPT2_ARCHS.contains(&first.as_str()) {
        Ok("gpt2".into())
    } else {
        Err(LoadError::UnsupportedModel {
            path: path.to_path_buf(),
            what: "architectures",
            name: first.clone(),
            supported: SUPPORTED_ARCHS,
        })
    }
}

/// Validates a LLaMA config; anything that would change the math but is not implemented is
/// refused by name. Errors name `config.json` keys (GGUF renames them to its own).
pub(crate) fn llama_config(f: &LlamaFile, path: &Path) -> Result<LlamaConfig> {
    let k = Keys::top(path);
    let hidden = k.positive(f.hidden_size, "hidden_size")?;
    let heads = k.positive(f.num_attention_heads, "num_attention_heads")?;
    let kv_heads = f.num_key_value_heads.map_or(heads, |d| d.0);
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(k.err(
            "num_key_value_heads",
            format!("{kv_heads} does not divide num_attention_heads = {heads}"),
        ));
    }
    let head_dim = match f.head_dim {
        Some(Dim(0)) => return Err(k.err("head_dim", "must be positive, found 0")),
        Some(Dim(d)) => d,
        None if hidden % heads == 0 => hidden / heads,
        None => {
            return Err(k.err(
                "head_dim",
                format!("absent, and hidden_size {hidden} is not a multiple of {heads} heads"),
            ));
        }
    };
    if head_dim % 2 != 0 {
        return Err(k.err(
            "head_dim",
            format!("RoPE needs an even head_dim, found {head_dim}"),
        ));
    }
    let act = f.hidden_act.as_deref().unwrap_or("silu");
    if act != "silu" {
        return Err(k.err(
            "hidden_act",
            format!("activation `{act}` is not supported (supported: silu)"),
        ));
    }
    for (key, on) in [
        ("attention_bias", f.attention_bias),
        ("mlp_bias", f.mlp_bias),
    ] {
        if on {
            return Err(k.err(key, "projection biases are not supported"));
        }
    }
    let (rope_theta, rope_scaling) = rope(f, k)?;
    Ok(LlamaConfig {
        hidden,
        layers: k.positive(f.num_hidden_layers, "num_hidden_layers")?,
        heads,
        kv_heads,
        head_dim,
        intermediate: k.positive(f.intermediate_size, "intermediate_size")?,
        vocab: k.positive(f.vocab_size, "vocab_size")?,
        // transformers' LlamaConfig defaults, used when a key is absent.
        max_positions: check_positions(
            k.positive_or(f.max_position_embeddings, "max_position_embeddings", 2048)?,
            path,
            "max_position_embeddings",
        )?,
        rms_norm_eps: f.rms_norm_eps.unwrap_or(1e-6),
        rope_theta,
        rope_scaling,
        tie_word_embeddings: f.tie_word_embeddings,
        bos_token_id: f.bos_token_id,
        eos_token_ids: f.eos_token_id.clone().map(|t| t.0).unwrap_or_default(),
    })
}

/// v5 keeps theta and type together in `rope_parameters`; older configs split them into
/// `rope_theta` and `rope_scaling`. Both mean the same model.
fn rope(f: &LlamaFile, k: Keys<'_>) -> Result<(f64, RopeScaling)> {
    if let Some(p) = &f.rope_parameters {
        // v5 nests one such object per layer type when the types differ.
        if p.rope_type.is_none() && p.rope_theta.is_none() && !p.is_empty() {
            return Err(k.err(
                "rope_parameters",
                "per-layer-type RoPE parameters are not supported",
            ));
        }
        let theta = p.rope_theta.or(f.rope_theta).unwrap_or(10000.0);
        return Ok((theta, rope_scaling(p, k.nested("rope_parameters"))?));
    }
    let scaling = match &f.rope_scaling {
        Some(p) => rope_scaling(p, k.nested("rope_scaling"))?,
        None => RopeScaling::None,
    };
    Ok((f.rope_theta.unwrap_or(10000.0), scaling))
}

fn rope_scaling(p: &RopeFields, k: Keys<'_>) -> Result<RopeScaling> {
    if let Some(frac) = p.partial_rotary_factor
        && frac != 1.0
    {
        return Err(k.err(
            "partial_rotary_factor",
            format!("{frac} is not supported (only 1.0)"),
        ));
    }
    // transformers reads `rope_type` first and falls back to the older `type`.
    match p.rope_type.or(p.legacy_type).unwrap_or(RopeType::Default) {
        RopeType::Default => Ok(RopeScaling::None),
        RopeType::Llama3 => {
            let factor = k.required(p.factor, "factor")?;
            let low_freq_factor = k.required(p.low_freq_factor, "low_freq_factor")?;
            let high_freq_factor = k.required(p.high_freq_factor, "high_freq_factor")?;
            let original = k.positive(
                p.original_max_position_embeddings,
                "original_max_position_embeddings",
            )?;
            if factor <= 0.0 {
                return Err(k.err("factor", format!("must be positive, found {factor}")));
            }
            if !(low_freq_factor > 0.0 && high_freq_factor > low_freq_factor) {
                return Err(k.err(
                    "high_freq_factor",
                    format!(
                        "needs 0 < low_freq_factor < high_freq_factor, found {low_freq_factor} and {high_freq_factor}"
                    ),
                ));
            }
            Ok(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: original,
            })
        }
    }
}

fn gpt2_config(f: Gpt2File, path: &Path) -> Result<Gpt2Config> {
    let k = Keys::top(path);
    let n_embd = k.positive(f.n_embd, "n_embd")?;
    let n_head = k.positive(f.n_head, "n_head")?;
    if n_embd % n_head != 0 {
        return Err(k.err(
            "n_head",
            format!("{n_head} heads do not divide n_embd = {n_embd}"),
        ));
    }
    let act = f.activation_function.as_deref().unwrap_or("gelu_new");
    if act != "gelu_new" {
        return Err(k.err(
            "activation_function",
            format!("activation `{act}` is not supported (supported: gelu_new)"),
        ));
    }
    if !f.scale_attn_weights.unwrap_or(true) {
        return Err(k.err("scale_attn_weights", "unscaled attention is not supported"));
    }
    if f.scale_attn_by_inverse_layer_idx {
        return Err(k.err(
            "scale_attn_by_inverse_layer_idx",
            "per-layer attention scaling is not supported",
        ));
    }
    let n_inner = k.positive_or(f.n_inner, "n_inner", n_embd.saturating_mul(4))?;
    Ok(Gpt2Config {
        n_embd,
        n_layer: k.positive(f.n_layer, "n_layer")?,
        n_head,
        n_inner,
        vocab: k.positive(f.vocab_size, "vocab_size")?,
        n_positions: check_positions(
            k.positive(f.n_positions, "n_positions")?,
            path,
            "n_positions",
        )?,
        layer_norm_epsilon: f.layer_norm_epsilon.unwrap_or(1e-5),
        // GPT-2 ties its head unless the config says otherwise.
        tie_word_embeddings: f.tie_word_embeddings.unwrap_or(true),
        bos_token_id: f.bos_token_id,
        eos_token_ids: f.eos_token_id.map(|t| t.0).unwrap_or_default(),
    })
}
