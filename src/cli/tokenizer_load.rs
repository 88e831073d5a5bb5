//! The tokenizer of a model spec without loading its weights, for the commands that only
//! tokenize or render text (`tokenize`, `detokenize`, `template`).

use std::path::Path;

use anyhow::Context;

use cranegrad_models::loader::{ModelConfig, load_model};
use cranegrad_models::presets::{PRESETS, preset};
use cranegrad_models::tokenizer::Tokenizer;

/// `--tokenizer FILE` when given, else what `model`'s files carry, else byte-level over the
/// model's vocabulary (read from its config).
pub fn load(model: &str, tokenizer: Option<&Path>) -> anyhow::Result<Tokenizer> {
    if let Some(t) = tokenizer {
        return Ok(Tokenizer::from_file(t)?);
    }
    if let Some(cfg) = preset(model) {
        return Ok(Tokenizer::bytes(cfg.vocab()));
    }
    let path = Path::new(model);
    if !path.exists() {
        anyhow::bail!(
            "{model}: no such file or folder, and not a preset ({})",
            PRESETS.join(", ")
        );
    }
    let pb = super::progress::spinner(&format!("reading {model}"));
    let found = Tokenizer::of_files(model);
    pb.finish_and_clear();
    if let Some(t) = found? {
        return Ok(t);
    }
    // No tokenizer in the files: byte-level, over the vocabulary the model's config gives.
    let pb = super::progress::spinner(&format!("reading {model}"));
    let loaded = load_model(path);
    pb.finish_and_clear();
    let (cfg, _): (ModelConfig, _) = loaded.with_context(|| format!("loading {model}"))?;
    Ok(Tokenizer::bytes(cfg.vocab()))
}
