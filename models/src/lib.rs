//! LLaMA and GPT-2 on the Tensor API, weight loaders, and the model entry points.

pub mod attention;
pub mod attention_maps;
pub mod chat_template;
pub mod generate;
pub mod golden;
pub mod gpt2;
pub mod llama;
pub mod loader;
pub mod model;
pub mod preset_weights;
pub mod presets;
pub mod quantize;
pub mod run;
pub mod sample;
pub mod tokenizer;
pub mod weights;

use thiserror::Error;

pub use model::Model;

/// Why a model could not be loaded or run.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A file failed to load or validate.
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    /// The graph could not be built.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// Running the graph failed.
    #[error(transparent)]
    Runtime(#[from] cranegrad_runtime::RuntimeError),
    /// The model spec names nothing that exists.
    #[error("{0}")]
    NotFound(String),
    /// A tensor the model needs is absent.
    #[error("missing weight: {0}")]
    Missing(String),
    /// Bad tokens, lengths or options.
    #[error("{0}")]
    Input(String),
}

use cranegrad_graph::GraphError;
