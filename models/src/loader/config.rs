//! Model configs parsed from Hugging Face `config.json` (both the transformers v5 layout with
//! `rope_parameters` and the older `rope_theta` + `rope_scaling` layout) and
//! `generation_config.json`.
//!
//! Anything that would change the math but is not implemented (another activation, biases,
//! another RoPE type) is refused here by name, so a model never runs with a silently ignored
//! setting.

use std::path::Path;

use serde_json::Value;

use super::error::{LoadError, Result};
use super::json::{Fields, read_json_file};

/// HF architectures implemented for `model_type = "llama"`.
const LLAMA_ARCHS: &[&str] = &["LlamaForCausalLM", "LlamaModel"];
/// HF architectures implemented for `model_type = "gpt2"`.
const GPT2_ARCHS: &[&str] = &["GPT2LMHeadModel", "GPT2Model"];

/// Largest context length a config may declare. Positions size the RoPE tables and KV caches
/// (`positions * head_dim` each), so an untrusted value near the generic 2^31 bound would
/// allocate gigabytes before any weight is read; 2^20 is above every released context length.
pub const MAX_POSITIONS: usize = 1 << 20;

/// Refuses a context length above `MAX_POSITIONS`, naming the key and the value.
pub(crate) fn check_positions(n: usize, path: &Path, key: &str) -> Result<usize> {
    if n > MAX_POSITIONS {
        return Err(LoadError::config(
            path,
            key,
            format!("{n} positions exceed the limit of {MAX_POSITIONS}"),
        ));
    }
    Ok(n)
}

/// How RoPE frequencies are rescaled for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE (`rope_type = "default"`).
    None,
    /// Llama 3.x frequency-dependent scaling (`rope_type = "llama3"`).
    Llama3 {
        /// Divisor for the low frequencies.
        factor: f64,
        /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are divided.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// Context length the model was pre-trained with.
        original_max_position_embeddings: usize,
    },
    /// Per-frequency divisors from a GGUF `rope_freqs.weight` (llama.cpp's form of llama3 scaling).
    FreqFactors(Vec<f64>),
}

/// A LLaMA-family decoder (RMSNorm, SwiGLU MLP, GQA attention, rotate_half RoPE).
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Model width (`hidden_size`).
    pub hidden: usize,
    /// Number of decoder layers (`num_hidden_layers`).
    pub layers: usize,
    /// Query heads (`num_attention_heads`).
    pub heads: usize,
    /// Key/value heads (`num_key_value_heads`; equals `heads` without GQA).
    pub kv_heads: usize,
    /// Width of one head (`head_dim`, default `hidden / heads`).
    pub head_dim: usize,
    /// MLP width (`intermediate_size`).
    pub intermediate: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest sequence the model supports (`max_position_embeddings`).
    pub max_positions: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// RoPE frequency rescaling.
    pub rope_scaling: RopeScaling,
    /// Whether `lm_head` reuses `model.embed_tokens.weight`.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token, if the config names one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens (any of them stops generation); empty if none.
    pub eos_token_ids: Vec<u32>,
}

/// A GPT-2 decoder (LayerNorm, learned positions, Conv1D `[in, out]` weights, gelu_new MLP).
#[derive(Debug, Clone, PartialEq)]
pub struct Gpt2Config {
    /// Model width.
    pub n_embd: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Attention heads.
    pub n_head: usize,
    /// MLP width (`n_inner`, default `4 * n_embd`).
    pub n_inner: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Number of learned positions (the longest sequence).
    pub n_positions: usize,
    /// LayerNorm epsilon.
    pub layer_norm_epsilon: f64,
    /// Whether `lm_head` reuses `transformer.wte.weight` (GPT-2's default).
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token, if the config names one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens; empty if none.
    pub eos_token_ids: Vec<u32>,
}

impl Gpt2Config {
    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
}

/// The model families this crate runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    /// LLaMA family.
    Llama(LlamaConfig),
    /// GPT-2.
    Gpt2(Gpt2Config),
}

/// The token fields of `generation_config.json`; `None` means the file does not set them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationConfig {
    /// Beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens (an int or a list in the file).
    pub eos_token_ids: Option<Vec<u32>>,
}

impl GenerationConfig {
    /// Parses `generation_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let value = read_json_file(path)?;
        let f = Fields::new(&value, path, "")?;
        Ok(GenerationConfig {
            bos_token_id: f.opt_token("bos_token_id")?,
            eos_token_ids: f.opt_token_list("eos_token_id")?,
        })
    }
}

impl ModelConfig {
    /// Parses a HF `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json(&read_json_file(path)?, path)
    }

    /// Parses `dir/config.json`, then lets `dir/generation_config.json` override the special
    /// tokens, as `generate()` does.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut cfg = Self::from_file(&dir.join("config.json"))?;
        let gen_path = dir.join("generation_config.json");
        if gen_path.is_file() {
            cfg.apply_generation_config(&GenerationConfig::from_file(&gen_path)?);
        }
        Ok(cfg)
    }

    /// Parses an already-read config; `path` is only used in error messages.
    pub fn from_json(value: &Value, path: &Path) -> Result<Self> {
        let f = Fields::new(value, path, "")?;
        let archs = f.opt_str_list("architectures")?.unwrap_or_default();
        let model_type = match f.opt_str("model_type")? {
            Some(t) => t.to_string(),
            None => infer_model_type(&archs, path)?,
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
        if let Some(bad) = archs.iter().find(|a| !allowed.contains(&a.as_str())) {
            return Err(LoadError::UnsupportedModel {
                path: path.to_path_buf(),
                what: "architectures",
                name: bad.clone(),
                supported: "LlamaForCausalLM, LlamaModel, GPT2LMHeadModel, GPT2Model",
            });
        }
        match model_type.as_str() {
            "llama" => parse_llama(f).map(ModelConfig::Llama),
            _ => parse_gpt2(f).map(ModelConfig::Gpt2),
        }
    }

    /// Replaces the special tokens the generation config sets.
    pub fn apply_generation_config(&mut self, generation: &GenerationConfig) {
        let (bos, eos) = match self {
            ModelConfig::Llama(c) => (&mut c.bos_token_id, &mut c.eos_token_ids),
            ModelConfig::Gpt2(c) => (&mut c.bos_token_id, &mut c.eos_token_ids),
        };
        if let Some(b) = generation.bos_token_id {
            *bos = Some(b);
        }
        if let Some(e) = &generation.eos_token_ids {
            *eos = e.clone();
        }
    }

    /// The HF `model_type` of this family.
    pub fn model_type(&self) -> &'static str {
        match self {
            ModelConfig::Llama(_) => "llama",
            ModelConfig::Gpt2(_) => "gpt2",
        }
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        match self {
            ModelConfig::Llama(c) => c.vocab,
            ModelConfig::Gpt2(c) => c.vocab,
        }
    }

    /// Longest sequence the model supports.
    pub fn max_positions(&self) -> usize {
        match self {
            ModelConfig::Llama(c) => c.max_positions,
            ModelConfig::Gpt2(c) => c.n_positions,
        }
    }

    /// End-of-sequence tokens.
    pub fn eos_token_ids(&self) -> &[u32] {
        match self {
            ModelConfig::Llama(c) => &c.eos_token_ids,
            ModelConfig::Gpt2(c) => &c.eos_token_ids,
        }
    }

    /// Beginning-of-sequence token.
    pub fn bos_token_id(&self) -> Option<u32> {
        match self {
            ModelConfig::Llama(c) => c.bos_token_id,
            ModelConfig::Gpt2(c) => c.bos_token_id,
        }
    }

    /// Whether the output projection reuses the token embedding.
    pub fn tie_word_embeddings(&self) -> bool {
        match self {
            ModelConfig::Llama(c) => c.tie_word_embeddings,
            ModelConfig::Gpt2(c) => c.tie_word_embeddings,
        }
    }

    /// Parameters the config implies: the elements of the tensors `expected_tensors` lists (a
    /// tied head counted once, as HF counts it). Computed from the sizes alone, so reporting on
    /// `xl` never allocates its weights; saturates rather than overflowing on absurd configs.
    pub fn param_count(&self) -> usize {
        fn total(terms: &[&[usize]]) -> usize {
            terms.iter().fold(0usize, |acc, factors| {
                let p = factors.iter().fold(1usize, |p, &f| p.saturating_mul(f));
                acc.saturating_add(p)
            })
        }
        match self {
            ModelConfig::Llama(c) => {
                let h = c.hidden;
                let q = c.heads.saturating_mul(c.head_dim);
                let kv = c.kv_heads.saturating_mul(c.head_dim);
                let layer = total(&[&[2, h], &[2, q, h], &[2, kv, h], &[3, c.intermediate, h]]);
                let head = if c.tie_word_embeddings { 0 } else { c.vocab };
                total(&[&[c.vocab, h], &[c.layers, layer], &[h], &[head, h]])
            }
            ModelConfig::Gpt2(c) => {
                let (e, inner) = (c.n_embd, c.n_inner);
                let layer = total(&[
                    &[4, e],
                    &[3, e, e],
                    &[3, e],
                    &[e, e],
                    &[e],
                    &[2, e, inner],
                    &[inner],
                    &[e],
                ]);
                let head = if c.tie_word_embeddings { 0 } else { c.vocab };
                total(&[
                    &[c.vocab, e],
                    &[c.n_positions, e],
                    &[c.n_layer, layer],
                    &[2, e],
                    &[head, e],
                ])
            }
        }
    }
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
            supported: "LlamaForCausalLM, LlamaModel, GPT2LMHeadModel, GPT2Model",
        })
    }
}

fn parse_llama(f: Fields<'_>) -> Result<LlamaConfig> {
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_attention_heads")?;
    let kv_heads = f.opt_usize("num_key_value_heads")?.unwrap_or(heads);
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(f.err(
            "num_key_value_heads",
            format!("{kv_heads} does not divide num_attention_heads = {heads}"),
        ));
    }
    let head_dim = match f.opt_usize("head_dim")? {
        Some(0) => return Err(f.err("head_dim", "must be positive, found 0")),
        Some(d) => d,
        None if hidden % heads == 0 => hidden / heads,
        None => {
            return Err(f.err(
                "head_dim",
                format!("absent, and hidden_size {hidden} is not a multiple of {heads} heads"),
            ));
        }
    };
    if head_dim % 2 != 0 {
        return Err(f.err(
            "head_dim",
            format!("RoPE needs an even head_dim, found {head_dim}"),
        ));
    }
    let act = f.opt_str("hidden_act")?.unwrap_or("silu");
    if act != "silu" {
        return Err(f.err(
            "hidden_act",
            format!("activation `{act}` is not supported (supported: silu)"),
        ));
    }
    for key in ["attention_bias", "mlp_bias"] {
        if f.bool_or(key, false)? {
            return Err(f.err(key, "projection biases are not supported"));
        }
    }
    let (rope_theta, rope_scaling) = parse_rope(f)?;
    Ok(LlamaConfig {
        hidden,
        layers: f.positive("num_hidden_layers")?,
        heads,
        kv_heads,
        head_dim,
        intermediate: f.positive("intermediate_size")?,
        vocab: f.positive("vocab_size")?,
        // transformers' LlamaConfig defaults, used when a key is absent.
        max_positions: check_positions(
            f.opt_usize("max_position_embeddings")?.unwrap_or(2048),
            f.path,
            "max_position_embeddings",
        )?,
        rms_norm_eps: f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta,
        rope_scaling,
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
        bos_token_id: f.opt_token("bos_token_id")?,
        eos_token_ids: f.opt_token_list("eos_token_id")?.unwrap_or_default(),
    })
}

/// v5 keeps theta and type together in `rope_parameters`; older configs split them into
/// `rope_theta` and `rope_scaling` (whose type key was once `type`). Both mean the same model.
fn parse_rope(f: Fields<'_>) -> Result<(f64, RopeScaling)> {
    let top_theta = f.opt_f64("rope_theta")?;
    if let Some(v) = f.object("rope_parameters")? {
        let p = Fields::new(v, f.path, "rope_parameters")?;
        if p.get("rope_type").is_none() && p.get("rope_theta").is_none() && !p.obj.is_empty() {
            return Err(f.err(
                "rope_parameters",
                "per-layer-type RoPE parameters are not supported",
            ));
        }
        let theta = p.opt_f64("rope_theta")?.or(top_theta).unwrap_or(10000.0);
        return Ok((theta, parse_rope_scaling(p)?));
    }
    let scaling = match f.object("rope_scaling")? {
        Some(v) => parse_rope_scaling(Fields::new(v, f.path, "rope_scaling")?)?,
        None => RopeScaling::None,
    };
    Ok((top_theta.unwrap_or(10000.0), scaling))
}

fn parse_rope_scaling(p: Fields<'_>) -> Result<RopeScaling> {
    if let Some(frac) = p.opt_f64("partial_rotary_factor")?
        && frac != 1.0
    {
        return Err(p.err(
            "partial_rotary_factor",
            format!("{frac} is not supported (only 1.0)"),
        ));
    }
    let (key, rope_type) = match p.opt_str("rope_type")? {
        Some(t) => ("rope_type", t),
        None => ("type", p.opt_str("type")?.unwrap_or("default")),
    };
    match rope_type {
        "default" => Ok(RopeScaling::None),
        "llama3" => {
            let factor = p.f64("factor")?;
            let low_freq_factor = p.f64("low_freq_factor")?;
            let high_freq_factor = p.f64("high_freq_factor")?;
            let original = p.positive("original_max_position_embeddings")?;
            if factor <= 0.0 {
                return Err(p.err("factor", format!("must be positive, found {factor}")));
            }
            if !(low_freq_factor > 0.0 && high_freq_factor > low_freq_factor) {
                return Err(p.err(
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
        other => Err(p.err(
            key,
            format!("RoPE type `{other}` is not supported (supported: default, llama3)"),
        )),
    }
}

fn parse_gpt2(f: Fields<'_>) -> Result<Gpt2Config> {
    let n_embd = f.positive("n_embd")?;
    let n_head = f.positive("n_head")?;
    if n_embd % n_head != 0 {
        return Err(f.err(
            "n_head",
            format!("{n_head} heads do not divide n_embd = {n_embd}"),
        ));
    }
    let act = f.opt_str("activation_function")?.unwrap_or("gelu_new");
    if act != "gelu_new" {
        return Err(f.err(
            "activation_function",
            format!("activation `{act}` is not supported (supported: gelu_new)"),
        ));
    }
    if !f.bool_or("scale_attn_weights", true)? {
        return Err(f.err("scale_attn_weights", "unscaled attention is not supported"));
    }
    if f.bool_or("scale_attn_by_inverse_layer_idx", false)? {
        return Err(f.err(
            "scale_attn_by_inverse_layer_idx",
            "per-layer attention scaling is not supported",
        ));
    }
    let n_inner = match f.opt_usize("n_inner")? {
        Some(0) => return Err(f.err("n_inner", "must be positive, found 0")),
        Some(n) => n,
        None => n_embd.saturating_mul(4),
    };
    Ok(Gpt2Config {
        n_embd,
        n_layer: f.positive("n_layer")?,
        n_head,
        n_inner,
        vocab: f.positive("vocab_size")?,
        n_positions: check_positions(f.positive("n_positions")?, f.path, "n_positions")?,
        layer_norm_epsilon: f.opt_f64("layer_norm_epsilon")?.unwrap_or(1e-5),
        tie_word_embeddings: f.bool_or("tie_word_embeddings", true)?,
        bos_token_id: f.opt_token("bos_token_id")?,
        eos_token_ids: f.opt_token_list("eos_token_id")?.unwrap_or_default(),
    })
}
