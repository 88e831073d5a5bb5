//! Weight and config loading: Hugging Face folders (safetensors, sharded or not), llama.cpp
//! GGUF (F32/F16/BF16/Q8_0) and MiniMind JSON, all turned into one HF-named, HF-layout
//! `WeightStore` of f32 tensors plus a `ModelConfig`. No graph is built here.
//!
//! `load_model` recognises the format by content, not extension, so a renamed file still loads
//! and a mislabelled one fails with a message saying what it actually is.

pub mod config;
mod config_fields;
mod convert;
pub mod error;
pub(crate) mod file;
pub mod gguf;
pub mod gguf_llama;
pub mod gguf_value;
pub mod golden;
mod hf_config;
mod identity;
mod json;
pub mod minimind;
pub mod quant_blocks;
pub mod rope;
pub mod safetensors;
pub mod tensor;
pub mod validate;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub use config::{
    GenerationConfig, Gpt2Config, LlamaConfig, MAX_POSITIONS, ModelConfig, RopeScaling,
};
pub use error::LoadError;
pub use gguf::{GgufFile, GgufValue};
pub use gguf_llama::{load_gguf, load_gguf_bytes};
pub use golden::{Golden, IntTensor, read_golden, write_golden};
pub use identity::file_identity;
pub use minimind::load_minimind;
pub use rope::rope_inv_freq;
pub use safetensors::{load_hf_dir, load_hf_file, load_safetensors_file};
pub use tensor::{HostTensor, SourceDType, WeightStore};
pub use validate::{expected_tensors, validate};

use error::Result;

/// The on-disk formats `load_model` understands, with the path each one loads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFormat {
    /// A Hugging Face folder (`config.json` + safetensors weights).
    HfDir(PathBuf),
    /// One safetensors file with `config.json` in the same folder.
    Safetensors(PathBuf),
    /// A llama.cpp GGUF file.
    Gguf(PathBuf),
    /// A MiniMind base64 JSON file.
    Minimind(PathBuf),
}

/// What probing a path found; JSON is kept parsed so it is not read twice.
enum Probe {
    Format(ModelFormat),
    Minimind(Value),
}

/// Loads a model from a folder or file of any supported format, validated against its config.
pub fn load_model(path: &Path) -> Result<(ModelConfig, WeightStore)> {
    match probe(path)? {
        Probe::Minimind(doc) => minimind::minimind_from_json(&doc, path),
        Probe::Format(ModelFormat::HfDir(dir)) => load_hf_dir(&dir),
        Probe::Format(ModelFormat::Safetensors(file)) => load_hf_file(&file),
        Probe::Format(ModelFormat::Gguf(file)) => load_gguf(&file),
        Probe::Format(ModelFormat::Minimind(file)) => load_minimind(&file),
    }
}

/// Recognises the format of `path` from its contents.
pub fn detect_format(path: &Path) -> Result<ModelFormat> {
    Ok(match probe(path)? {
        Probe::Format(f) => f,
        Probe::Minimind(_) => ModelFormat::Minimind(path.to_path_buf()),
    })
}

fn probe(path: &Path) -> Result<Probe> {
    let unknown = |reason: String| LoadError::UnknownFormat {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| LoadError::io(path, e))?;
    if meta.is_dir() {
        if path.join("config.json").is_file() {
            return Ok(Probe::Format(ModelFormat::HfDir(path.to_path_buf())));
        }
        return Err(unknown("a folder without config.json".into()));
    }
    let head = file::read_prefix(path, 16)?;
    if head.starts_with(&gguf::GGUF_MAGIC) {
        return Ok(Probe::Format(ModelFormat::Gguf(path.to_path_buf())));
    }
    if looks_like_safetensors(&head) {
        let dir = safetensors::parent_dir(path);
        if dir.join("config.json").is_file() {
            return Ok(Probe::Format(ModelFormat::Safetensors(path.to_path_buf())));
        }
        return Err(unknown(format!(
            "a safetensors file without config.json beside it in {}",
            dir.display()
        )));
    }
    let body = head
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(&head);
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        let doc = json::read_json_file(path)?;
        if minimind::is_minimind(&doc) {
            return Ok(Probe::Minimind(doc));
        }
        // A config.json or shard index stands for the folder it is in.
        if doc.get("model_type").is_some()
            || doc.get("architectures").is_some()
            || doc.get("weight_map").is_some()
        {
            return Ok(Probe::Format(ModelFormat::HfDir(safetensors::parent_dir(
                path,
            ))));
        }
        return Err(unknown(
            "a JSON file that is neither a minimind model, a HF config nor a shard index".into(),
        ));
    }
    Err(unknown(format!(
        "no GGUF magic, safetensors header or JSON object (first bytes {:02x?})",
        &head[..head.len().min(8)]
    )))
}

/// An 8-byte little-endian header length followed by `{`. Real headers are far below 4 GiB,
/// so the length's high bytes are zero, which no JSON text has; this still holds for a
/// truncated file, which then gets the safetensors loader's precise error.
fn looks_like_safetensors(head: &[u8]) -> bool {
    head.len() >= 9 && head[4..8] == [0, 0, 0, 0] && head[8] == b'{'
}
