//! The vocabulary a GGUF file carries in its `tokenizer.ggml.*` metadata, read and checked.

use std::collections::HashMap;
use std::path::Path;

use crate::ModelError;
use crate::loader::gguf::{GgufArray, GgufFile, GgufValue};

/// How a token is used, as llama.cpp's `tokenizer.ggml.token_type` numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Ordinary text piece (type 1, and 0 = undefined, which llama.cpp treats alike).
    Normal,
    /// The unknown token (2).
    Unknown,
    /// A control token such as BOS, EOS or `<|im_start|>` (3): matched in text, empty when
    /// decoded without special tokens.
    Control,
    /// A token added by the model's authors (4): always matched in text, decoded as written.
    UserDefined,
    /// Reserved and unused (5).
    Unused,
    /// A byte-fallback token `<0xNN>` (6).
    Byte,
}

impl TokenKind {
    fn from_code(code: i64) -> Option<TokenKind> {
        Some(match code {
            0 | 1 => TokenKind::Normal,
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => return None,
        })
    }

    /// Whether text is split at this token before the model's tokenizer runs (llama.cpp's
    /// special-token partition, which HF does for added tokens).
    pub fn is_matched_in_text(self) -> bool {
        matches!(
            self,
            TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown
        )
    }
}

/// Which tokenizer algorithm the vocabulary is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabModel {
    /// `llama`: SentencePiece-style BPE by piece scores, with byte fallback.
    SentencePiece,
    /// `gpt2`: byte-level BPE with ranked merges.
    BytePairs,
}

/// The `tokenizer.ggml.*` metadata of a GGUF file.
#[derive(Debug, Clone)]
pub struct GgufVocab {
    /// The algorithm.
    pub model: VocabModel,
    /// `tokenizer.ggml.pre` (`default` when absent).
    pub pre: String,
    /// Token texts by id.
    pub tokens: Vec<String>,
    /// Piece scores by id (SentencePiece; zeros when absent).
    pub scores: Vec<f32>,
    /// Token kinds by id.
    pub kinds: Vec<TokenKind>,
    /// Ranked merges `"left right"` (byte-level BPE).
    pub merges: Vec<String>,
    /// Beginning-of-sequence id.
    pub bos: Option<u32>,
    /// End-of-sequence id.
    pub eos: Option<u32>,
    /// End-of-turn id (`tokenizer.ggml.eot_token_id`).
    pub eot: Option<u32>,
    /// End-of-message id (`tokenizer.ggml.eom_token_id`).
    pub eom: Option<u32>,
    /// Unknown-token id.
    pub unk: Option<u32>,
    /// Whether encoding adds BOS.
    pub add_bos: bool,
    /// Whether encoding appends EOS.
    pub add_eos: bool,
    /// Whether SentencePiece text gets a leading space (`tokenizer.ggml.add_space_prefix`).
    pub add_space_prefix: bool,
    /// The chat template (`tokenizer.chat_template`), if any.
    pub chat_template: Option<String>,
}

impl GgufVocab {
    /// Whether the file carries a vocabulary at all.
    pub fn present(file: &GgufFile) -> bool {
        file.get("tokenizer.ggml.model").is_some()
    }

    /// Reads the vocabulary, checking every array's length and every special id.
    pub fn read(file: &GgufFile) -> Result<GgufVocab, ModelError> {
        let path = &file.path;
        let bad = |key: &str, msg: String| bad_key(path, key, msg);
        let model_name = str_key(file, "tokenizer.ggml.model")?
            .ok_or_else(|| bad("tokenizer.ggml.model", "is missing".into()))?;
        let model = match model_name.as_str() {
            "llama" => VocabModel::SentencePiece,
            "gpt2" => VocabModel::BytePairs,
            other => {
                return Err(bad(
                    "tokenizer.ggml.model",
                    format!("`{other}` is not supported (supported: llama, gpt2)"),
                ));
            }
        };
        let tokens = match file.get("tokenizer.ggml.tokens") {
            Some(GgufValue::Array(GgufArray::String(t))) if !t.is_empty() => t.clone(),
            Some(_) => {
                return Err(bad(
                    "tokenizer.ggml.tokens",
                    "must be a non-empty array of strings".into(),
                ));
            }
            None => return Err(bad("tokenizer.ggml.tokens", "is missing".into())),
        };
        let n = tokens.len();
        if u32::try_from(n).is_err() {
            return Err(bad(
                "tokenizer.ggml.tokens",
                format!("{n} tokens is too many"),
            ));
        }
        let scores = match file.get("tokenizer.ggml.scores") {
            None => vec![0.0; n],
            Some(GgufValue::Array(GgufArray::F32(s))) if s.len() == n => s.clone(),
            Some(v) => {
                return Err(bad(
                    "tokenizer.ggml.scores",
                    format!(
                        "must be {n} f32 values (one per token), found {}",
                        describe(v)
                    ),
                ));
            }
        };
        let kinds = match file.get("tokenizer.ggml.token_type") {
            None => vec![TokenKind::Normal; n],
            Some(GgufValue::Array(a)) if a.len() == n => {
                let codes = int_array(a).ok_or_else(|| {
                    bad(
                        "tokenizer.ggml.token_type",
                        "must be an array of integers".into(),
                    )
                })?;
                codes
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        TokenKind::from_code(c).ok_or_else(|| {
                            bad(
                                "tokenizer.ggml.token_type",
                                format!("token {i} has unknown type {c} (known: 0-6)"),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
            Some(v) => {
                return Err(bad(
                    "tokenizer.ggml.token_type",
                    format!(
                        "must be {n} integers (one per token), found {}",
                        describe(v)
                    ),
                ));
            }
        };
        let merges = match file.get("tokenizer.ggml.merges") {
            None => Vec::new(),
            Some(GgufValue::Array(GgufArray::String(m))) => m.clone(),
            Some(v) => {
                return Err(bad(
                    "tokenizer.ggml.merges",
                    format!("must be an array of strings, found {}", describe(v)),
                ));
            }
        };
        if model == VocabModel::BytePairs && merges.is_empty() {
            return Err(bad(
                "tokenizer.ggml.merges",
                "is missing; a gpt2 vocabulary needs its merges".into(),
            ));
        }
        let id = |key: &str| -> Result<Option<u32>, ModelError> {
            match file.get(key) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(i) if (i as usize) < n => Ok(Some(i as u32)),
                    // llama.cpp writes -1 (as u32::MAX in some converters) for "none".
                    _ if matches!(v, GgufValue::I32(-1)) || v.as_u64() == Some(u32::MAX as u64) => {
                        Ok(None)
                    }
                    _ => Err(bad(
                        key,
                        format!(
                            "{} is not a token id below the vocabulary size {n}",
                            describe(v)
                        ),
                    )),
                },
            }
        };
        let flag = |key: &str, default: bool| -> Result<bool, ModelError> {
            match file.get(key) {
                None => Ok(default),
                Some(GgufValue::Bool(b)) => Ok(*b),
                Some(v) => Err(bad(key, format!("must be a bool, found {}", describe(v)))),
            }
        };
        let spm = model == VocabModel::SentencePiece;
        Ok(GgufVocab {
            model,
            pre: str_key(file, "tokenizer.ggml.pre")?.unwrap_or_else(|| "default".into()),
            scores,
            kinds,
            merges,
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            eot: id("tokenizer.ggml.eot_token_id")?,
            eom: id("tokenizer.ggml.eom_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            // llama.cpp's defaults when the flags are absent: SentencePiece adds BOS and a
            // space prefix, byte-level BPE neither.
            add_bos: flag("tokenizer.ggml.add_bos_token", spm)?,
            add_eos: flag("tokenizer.ggml.add_eos_token", false)?,
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix", spm)?,
            chat_template: str_key(file, "tokenizer.chat_template")?,
            tokens,
        })
    }

    /// Id of each token text (the last id wins where a text repeats, as in llama.cpp).
    pub fn ids_by_text(&self) -> HashMap<&str, u32> {
        self.tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as u32))
            .collect()
    }
}

fn bad_key(path: &Path, key: &str, msg: String) -> ModelError {
    ModelError::Input(format!("{}: `{key}` {msg}", path.display()))
}

fn str_key(file: &GgufFile, key: &str) -> Result<Option<String>, ModelError> {
    match file.get(key) {
        None => Ok(None),
        Some(GgufValue::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(bad_key(
            &file.path,
            key,
            format!("must be a string, found {}", describe(v)),
        )),
    }
}

fn int_array(a: &GgufArray) -> Option<Vec<i64>> {
    fn all<T: Copy + Into<i64>>(v: &[T]) -> Vec<i64> {
        v.iter().map(|&x| x.into()).collect()
    }
    Some(match a {
        GgufArray::I32(v) => all(v),
        GgufArray::U32(v) => all(v),
        GgufArray::I8(v) => all(v),
        GgufArray::U8(v) => all(v),
        GgufArray::I16(v) => all(v),
        GgufArray::U16(v) => all(v),
        GgufArray::I64(v) => v.clone(),
        _ => return None,
    })
}

/// A short description of a value's type and size, for messages.
fn describe(v: &GgufValue) -> String {
    match v {
        GgufValue::Array(a) => format!("an array of {} elements", a.len()),
        GgufValue::String(s) => format!("the string {s:?}"),
        other => format!("{:?}", other),
    }
}
