//! A loaded model: config plus prepared weights, from a preset name or any supported file, and
//! the forward pass that builds its graph.

use std::path::Path;

use cranegrad_graph::{DType, Graph, GraphError, HostData, Shape, Tensor};

use crate::loader::validate::LM_HEAD;
use crate::loader::{MAX_POSITIONS, ModelConfig, load_model, validate};
use crate::preset_weights::preset_weights;
use crate::presets::{PRESETS, preset};
use crate::quantize::Quantize;
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

    /// Converts the model's matrices to `kind` and back (see [`Quantize`]: the values are the
    /// quantized model's, packed compactly where `kind` has a packed format), by
    /// llama.cpp's rule: every 2-D weight, the embedding and the head included, is quantized
    /// along its rows (a GPT-2 `Conv1D` weight along its output columns, as it is stored
    /// transposed); norms, biases, GPT-2's position table and the RoPE tables stay f32, and so
    /// does an untied head under Q4_0 (llama.cpp stores it as Q6_K, not quantized here) and
    /// any matrix whose rows its blocks do not divide. Returns the matrices converted.
    pub fn quantize(&mut self, kind: Quantize) -> Result<usize, ModelError> {
        let gpt2 = matches!(self.config, ModelConfig::Gpt2(_));
        let mut converted = 0;
        for name in self.weights.names() {
            let Some(w) = self.weights.get(&name) else {
                continue;
            };
            let keep = w.shape.len() != 2
                || name.starts_with("rope.")
                || name == "wpe.weight"
                || (kind == Quantize::Q4_0 && name == LM_HEAD);
            if keep {
                continue;
            }
            let Some(values) = w.data.as_f32() else {
                continue;
            };
            let (rows, cols) = (w.shape[0], w.shape[1]);
            let conv1d = gpt2 && !matches!(name.as_str(), "wte.weight" | LM_HEAD);
            let back = if conv1d {
                let t = transpose(values, rows, cols);
                kind.round_trip(&t, rows).map(|q| transpose(&q, cols, rows))
            } else {
                kind.round_trip(values, cols)
            };
            let Some(back) = back else {
                continue;
            };
            let mut data = HostData::from(back);
            if let Some(o) = w.data.origin() {
                data = data.with_origin(&format!("{o}~{}", kind.name()));
            }
            let data = crate::weights::into_first_compact(data, kind.packed_formats());
            let shape = w.shape.clone();
            self.weights.insert_data(&name, shape, data);
            converted += 1;
        }
        Ok(converted)
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

/// `rows x cols` row-major values transposed.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| v[r * cols + c]))
        .collect()
}
