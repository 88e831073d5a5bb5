//! Tokenizers: byte-level (byte b is id b; reversible; the default for random-weight presets)
//! and Hugging Face `tokenizer.json` through the `tokenizers` crate.

use std::path::Path;

use crate::ModelError;

/// Text <-> token ids.
pub enum Tokenizer {
    /// Byte b is id b; ids of 256 and above print as `<|id|>`.
    Bytes {
        /// The model's vocabulary (a prompt byte at or above it is an error).
        vocab: usize,
    },
    /// A Hugging Face tokenizer.
    Hf(Box<tokenizers::Tokenizer>),
}

impl Tokenizer {
    /// The tokenizer for a model spec: `tokenizer.json` beside a model folder or file when
    /// present, else byte-level.
    pub fn for_model(spec: &str, vocab: usize) -> Result<Tokenizer, ModelError> {
        let p = Path::new(spec);
        let dir = if p.is_dir() { Some(p) } else { p.parent() };
        match dir.map(|d| d.join("tokenizer.json")) {
            Some(t) if p.exists() && t.is_file() => Tokenizer::from_file(&t),
            _ => Ok(Tokenizer::Bytes { vocab }),
        }
    }

    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer, ModelError> {
        tokenizers::Tokenizer::from_file(path)
            .map(|t| Tokenizer::Hf(Box::new(t)))
            .map_err(|e| ModelError::Input(format!("{}: {e}", path.display())))
    }

    /// Short description for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Tokenizer::Bytes { .. } => "byte-level",
            Tokenizer::Hf(_) => "tokenizer.json",
        }
    }

    /// Token ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<i32>, ModelError> {
        match self {
            Tokenizer::Bytes { vocab } => text
                .bytes()
                .map(|b| {
                    if (b as usize) < *vocab {
                        Ok(i32::from(b))
                    } else {
                        Err(ModelError::Input(format!(
                            "prompt byte {b} is outside the model's vocabulary of {vocab} (byte-level tokenizer)"
                        )))
                    }
                })
                .collect(),
            Tokenizer::Hf(t) => t
                .encode(text, false)
                .map(|e| e.get_ids().iter().map(|&i| i as i32).collect())
                .map_err(|e| ModelError::Input(format!("tokenizer: {e}"))),
        }
    }

    /// The text of `ids` as bytes (byte-level output may not be valid UTF-8 on its own).
    pub fn decode_bytes(&self, ids: &[i32]) -> Result<Vec<u8>, ModelError> {
        match self {
            Tokenizer::Bytes { .. } => Ok(ids
                .iter()
                .flat_map(|&i| {
                    if (0..256).contains(&i) {
                        vec![i as u8]
                    } else {
                        format!("<|{i}|>").into_bytes()
                    }
                })
                .collect()),
            Tokenizer::Hf(t) => {
                let u: Vec<u32> = ids
                    .iter()
                    .map(|&i| {
                        u32::try_from(i)
                            .map_err(|_| ModelError::Input(format!("token id {i} is negative")))
                    })
                    .collect::<Result<_, _>>()?;
                t.decode(&u, false)
                    .map(String::into_bytes)
                    .map_err(|e| ModelError::Input(format!("tokenizer: {e}")))
            }
        }
    }
}
