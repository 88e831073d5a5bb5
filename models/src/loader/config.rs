//! The validated model configs every loader produces, read from Hugging Face `config.json`
//! (both the transformers v5 layout with `rope_parameters` and the older `rope_theta` +
//! `rope_scaling` layout) and `generation_config.json` through `hf_config`.
//!
//! Anything that would change the math but is not implemented (another activation, biases,
//! another RoPE type) is refused while reading, by name, so a model never runs with a silently
//! ignored setting.

use std::path::Path;

use serde_json::Value;

use super::error::{LoadError, Result};
use super::hf_config;
use super::json::read_json_file;

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
        hf_config::generation_config(&read_json_file(path)?, path)
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
        hf_config::model_config(value, path)
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
