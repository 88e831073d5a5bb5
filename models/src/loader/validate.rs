//! The tensors each config implies, and the check that a weight store holds exactly those.
//!
//! Extra tensors are refused as well as missing ones: a bias or an MoE expert the model code
//! would not read means the checkpoint is not the model the config describes.

use std::collections::HashSet;

use super::config::{Gpt2Config, LlamaConfig, ModelConfig};
use super::error::{LoadError, Result};
use super::tensor::WeightStore;

/// Name of the output projection in both families; absent when embeddings are tied.
pub const LM_HEAD: &str = "lm_head.weight";

/// Every tensor the model reads, with its shape, in the HF naming of the family.
pub fn expected_tensors(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let _ = for_each_expected(cfg, &mut |name, shape| {
        out.push((name, shape));
        Ok(())
    });
    out
}

/// Checks that `w` holds every expected tensor with the expected shape and nothing else
/// (except an `lm_head.weight` that tied embeddings make redundant).
pub fn validate(cfg: &ModelConfig, w: &WeightStore) -> Result<()> {
    // Walk the expected names lazily and stop at the first one missing: a corrupt layer count
    // then costs one lookup, not billions of names.
    let mut expected = HashSet::new();
    for_each_expected(cfg, &mut |name, shape| {
        let t = w.get(&name)?;
        if t.shape != shape {
            return Err(LoadError::ShapeMismatch {
                name,
                expected: shape,
                found: t.shape.clone(),
                origin: w.origin().to_string(),
            });
        }
        expected.insert(name);
        Ok(())
    })?;
    for (name, t) in w.iter() {
        if expected.contains(name) {
            continue;
        }
        if name == LM_HEAD && cfg.tie_word_embeddings() {
            // HF ignores a stored head when tying, but a wrong shape still means a wrong config.
            let want = [cfg.vocab(), embed_width(cfg)];
            if t.shape != want {
                return Err(LoadError::ShapeMismatch {
                    name: name.to_string(),
                    expected: want.to_vec(),
                    found: t.shape.clone(),
                    origin: w.origin().to_string(),
                });
            }
        } else {
            return Err(LoadError::UnexpectedTensor {
                name: name.to_string(),
                shape: t.shape.clone(),
                origin: w.origin().to_string(),
            });
        }
    }
    Ok(())
}

/// A visitor over expected `(name, shape)` pairs; an error stops the walk.
type Visit<'a> = dyn FnMut(String, Vec<usize>) -> Result<()> + 'a;

/// Calls `f` on each expected tensor in order, stopping at its first error.
fn for_each_expected(cfg: &ModelConfig, f: &mut Visit<'_>) -> Result<()> {
    match cfg {
        ModelConfig::Llama(c) => llama_tensors(c, f),
        ModelConfig::Gpt2(c) => gpt2_tensors(c, f),
    }
}

fn embed_width(cfg: &ModelConfig) -> usize {
    match cfg {
        ModelConfig::Llama(c) => c.hidden,
        ModelConfig::Gpt2(c) => c.n_embd,
    }
}

fn llama_tensors(c: &LlamaConfig, f: &mut Visit<'_>) -> Result<()> {
    let h = c.hidden;
    // Saturating: a corrupt config must produce a shape mismatch, not an overflow panic.
    let q = c.heads.saturating_mul(c.head_dim);
    let kv = c.kv_heads.saturating_mul(c.head_dim);
    f("model.embed_tokens.weight".into(), vec![c.vocab, h])?;
    for i in 0..c.layers {
        let p = format!("model.layers.{i}");
        f(format!("{p}.input_layernorm.weight"), vec![h])?;
        f(format!("{p}.self_attn.q_proj.weight"), vec![q, h])?;
        f(format!("{p}.self_attn.k_proj.weight"), vec![kv, h])?;
        f(format!("{p}.self_attn.v_proj.weight"), vec![kv, h])?;
        f(format!("{p}.self_attn.o_proj.weight"), vec![h, q])?;
        f(format!("{p}.post_attention_layernorm.weight"), vec![h])?;
        f(format!("{p}.mlp.gate_proj.weight"), vec![c.intermediate, h])?;
        f(format!("{p}.mlp.up_proj.weight"), vec![c.intermediate, h])?;
        f(format!("{p}.mlp.down_proj.weight"), vec![h, c.intermediate])?;
    }
    f("model.norm.weight".into(), vec![h])?;
    if !c.tie_word_embeddings {
        f(LM_HEAD.into(), vec![c.vocab, h])?;
    }
    Ok(())
}

/// GPT-2's Conv1D stores weights `[in, out]` (y = x @ W + b), transposed from `nn.Linear`.
fn gpt2_tensors(c: &Gpt2Config, f: &mut Visit<'_>) -> Result<()> {
    let e = c.n_embd;
    let e3 = e.saturating_mul(3);
    f("transformer.wte.weight".into(), vec![c.vocab, e])?;
    f("transformer.wpe.weight".into(), vec![c.n_positions, e])?;
    for i in 0..c.n_layer {
        let p = format!("transformer.h.{i}");
        f(format!("{p}.ln_1.weight"), vec![e])?;
        f(format!("{p}.ln_1.bias"), vec![e])?;
        f(format!("{p}.attn.c_attn.weight"), vec![e, e3])?;
        f(format!("{p}.attn.c_attn.bias"), vec![e3])?;
        f(format!("{p}.attn.c_proj.weight"), vec![e, e])?;
        f(format!("{p}.attn.c_proj.bias"), vec![e])?;
        f(format!("{p}.ln_2.weight"), vec![e])?;
        f(format!("{p}.ln_2.bias"), vec![e])?;
        f(format!("{p}.mlp.c_fc.weight"), vec![e, c.n_inner])?;
        f(format!("{p}.mlp.c_fc.bias"), vec![c.n_inner])?;
        f(format!("{p}.mlp.c_proj.weight"), vec![c.n_inner, e])?;
        f(format!("{p}.mlp.c_proj.bias"), vec![e])?;
    }
    f("transformer.ln_f.weight".into(), vec![e])?;
    f("transformer.ln_f.bias".into(), vec![e])?;
    if !c.tie_word_embeddings {
        f(LM_HEAD.into(), vec![c.vocab, e])?;
    }
    Ok(())
}
