//! A prompt's attention maps: each layer's weights `[heads, S, S]` for one sequence, from the
//! model's own forward with the weights recorded (`attention::causal_attention_weights`: the
//! fused attention kernel run with an identity as its values).

use std::cell::RefCell;

use cranegrad_graph::{Bindings, DType, Graph, HostData, Shape, Tensor};
use cranegrad_runtime::{Feeds, Session};

use crate::llama::Context;
use crate::loader::ModelConfig;
use crate::{Model, ModelError, gpt2, llama};

/// One layer's attention weights for one sequence.
#[derive(Clone, Debug)]
pub struct LayerMap {
    /// Query heads.
    pub heads: usize,
    /// Tokens (queries and keys).
    pub len: usize,
    /// `[heads, len, len]`: row q of head h sums to 1 over keys `0..=q`.
    pub weights: Vec<f32>,
}

impl LayerMap {
    /// Weight of key `k` for query `q` in head `h`.
    pub fn at(&self, h: usize, q: usize, k: usize) -> f32 {
        self.weights[(h * self.len + q) * self.len + k]
    }
}

/// Every layer's attention map for `tokens` (one sequence), run in `session`.
pub fn attention_maps(
    model: &Model,
    session: &mut Session,
    tokens: &[i32],
) -> Result<Vec<LayerMap>, ModelError> {
    if tokens.is_empty() || tokens.len() > model.max_positions() {
        return Err(ModelError::Input(format!(
            "attention maps need 1..={} tokens, got {}",
            model.max_positions(),
            tokens.len()
        )));
    }
    let g = Graph::new();
    let t = g.input("tokens", Shape::of(&[1, tokens.len()]), DType::I32);
    let recorded = RefCell::new(Vec::<Tensor>::new());
    let ctx = Context::Prefill {
        padding: None,
        weights: Some(&recorded),
    };
    match &model.config {
        ModelConfig::Llama(c) => llama::forward_kv(c, &model.weights, &g, &t, &ctx)?,
        ModelConfig::Gpt2(c) => gpt2::forward_kv(c, &model.weights, &g, &t, &ctx)?,
    };
    let maps = recorded.into_inner();
    let outs: Vec<&Tensor> = maps.iter().collect();
    let mut feeds = Feeds::new();
    feeds.insert("tokens".into(), HostData::from(tokens.to_vec()));
    let values = session.realize(&outs, &feeds, &Bindings::new())?;
    Ok(maps
        .iter()
        .zip(values)
        .map(|(m, v)| LayerMap {
            heads: m.dims()[1].as_const().unwrap_or(0),
            len: tokens.len(),
            weights: v.to_f32(),
        })
        .collect())
}
