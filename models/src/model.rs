//! A loaded model: config plus prepared weights, from a preset name or any supported file, and
//! the forward pass that builds its graph.

use std::path::Path;

use cranegrad_graph::{DType, Graph, GraphError, Shape, Tensor};

use crate::loader::validate::LM_HEAD;
use crate::loader::{MAX_POSITIONS, ModelConfig, load_model, validate};
use crate::preset_weights::preset_weights;
use crate::presets::{PRESETS, preset};
use crate::weights::{Weights, prepare};
use crate::{ModelError, gpt2, llama};

/// A model ready to build graphs from.
pub struct Model {
    /// Architecture and sizes.
    pub config: ModelConfig,
    /// Prepared weights (plus RoPE tables for LLaMA).
    pub weights: Weights,
    /// Where the weights came from (a path or `preset NAME (seed N)`).
    pub origin: String,
}

impl Model {
    /// Loads `spec`: a preset name (random weights from `seed`) or a path in any supported
    /// format (recognised by content).
    pub fn load(spec: &str, seed: u64) -> Result<Model, ModelError> {
        if let Some(cfg) = preset(spec) {
            let weights = preset_weights(&cfg, spec, seed)?;
            return Model::from_weights(
                cfg,
                weights,
                format!("preset {spec} (weights seed {seed})"),
            );
        }
        let path = Path::new(spec);
        if !path.exists() {
            return Err(ModelError::NotFound(format!(
                "{spec}: no such file or folder, and not a preset ({})",
                PRESETS.join(", ")
            )));
        }
        let identity = crate::loader::file_identity(path);
        let (config, store) = load_model(path)?;
        validate(&config, &store)?;
        Model::from_store(config, store, spec.to_string(), identity.as_deref())
    }

    /// Builds a model from a validated config and weight store.
    pub fn from_parts(
        config: ModelConfig,
        store: crate::loader::WeightStore,
        origin: String,
    ) -> Result<Model, ModelError> {
        Model::from_store(config, store, origin, None)
    }

    /// [`Model::from_parts`], naming each weight `identity:tensor` when the store's contents
    /// have a stable identity (see [`crate::loader::file_identity`]).
    fn from_store(
        config: ModelConfig,
        mut store: crate::loader::WeightStore,
        origin: String,
        identity: Option<&str>,
    ) -> Result<Model, ModelError> {
        // Configs built in code skip the loaders' bound, and the RoPE tables below are sized by it.
        if config.max_positions() > MAX_POSITIONS {
            return Err(ModelError::Input(format!(
                "{origin}: max positions {} exceed the limit of {MAX_POSITIONS}",
                config.max_positions()
            )));
        }
        // HF ignores a stored head when embeddings are tied; dropping it makes every forward
        // use the embedding and saves its memory.
        if config.tie_word_embeddings() && store.contains(LM_HEAD) {
            store.take(LM_HEAD)?;
        }
        let weights = prepare(&config, store, identity)?;
        Model::from_weights(config, weights, origin)
    }

    /// Builds a model from prepared weights, adding LLaMA's RoPE tables.
    fn from_weights(
        config: ModelConfig,
        mut weights: Weights,
        origin: String,
    ) -> Result<Model, ModelError> {
        if config.max_positions() > MAX_POSITIONS {
            return Err(ModelError::Input(format!(
                "{origin}: max positions {} exceed the limit of {MAX_POSITIONS}",
                config.max_positions()
            )));
        }
        if let ModelConfig::Llama(c) = &config {
            let (cos, sin) = llama::rope_tables(c);
            weights.insert("rope.cos", vec![c.max_positions, c.head_dim], cos);
            weights.insert("rope.sin", vec![c.max_positions, c.head_dim], sin);
        }
        Ok(Model {
            config,
            weights,
            origin,
        })
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.config.vocab()
    }

    /// Longest sequence the model supports.
    pub fn max_positions(&self) -> usize {
        self.config.max_positions()
    }

    /// Logits `[B, S, vocab]` for i32 `tokens` `[B, S]`, recorded into `g`.
    pub fn forward(&self, g: &Graph, tokens: &Tensor) -> Result<Tensor, GraphError> {
        match &self.config {
            ModelConfig::Llama(c) => llama::forward(c, &self.weights, g, tokens),
            ModelConfig::Gpt2(c) => gpt2::forward(c, &self.weights, g, tokens),
        }
    }

    /// A fresh graph with a `tokens` input of `[batch, seq]` and the logits of a forward.
    pub fn forward_graph(&self, batch: usize, seq: usize) -> Result<(Graph, Tensor), ModelError> {
        if seq == 0 || seq > self.max_positions() {
            return Err(ModelError::Input(format!(
                "sequence length {seq} is outside 1..={}",
                self.max_positions()
            )));
        }
        let g = Graph::new();
        let tokens = g.input("tokens", Shape::of(&[batch, seq]), DType::I32);
        let logits = self.forward(&g, &tokens)?;
        Ok((g, logits))
    }
}
