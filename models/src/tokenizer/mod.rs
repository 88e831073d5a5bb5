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
        crate::loader::file::check_regular(path)?;
        let bad = |msg: String| ModelError::Input(format!("{}: {msg}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        // Syntax first, so a truncated or hand-broken file gets serde's line and column.
        serde_json::from_str::<serde::de::IgnoredAny>(&text)
            .map_err(|e| bad(format!("invalid JSON: {e}")))?;
        // The tokenizers crate panics on some malformed sections (its decoder deserializer
        // `expect`s), so a bad file would take the whole process down instead of failing.
        std::panic::catch_unwind(|| text.parse::<tokenizers::Tokenizer>())
            .map_err(|panic| {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("unknown reason");
                bad(format!(
                    "not a valid tokenizer.json (the tokenizers crate gave up: {why})"
                ))
            })?
            .map(|t| Tokenizer::Hf(Box::new(t)))
            .map_err(|e| bad(format!("not a valid tokenizer.json: {e}")))
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
                let vocab = t.get_vocab_size(true);
                let u: Vec<u32> = ids
                    .iter()
                    .map(|&i| match u32::try_from(i) {
                        Ok(u) if (u as usize) < vocab => Ok(u),
                        _ => Err(ModelError::Input(format!(
                            "token id {i} is outside the tokenizer's vocabulary of {vocab}"
                        ))),
                    })
                    .collect::<Result<_, _>>()?;
                t.decode(&u, false)
                    .map(String::into_bytes)
                    .map_err(|e| ModelError::Input(format!("tokenizer: {e}")))
            }
        }
    }
}

/// Streaming detokenizer: the new text of each generated token, held back while it ends in
/// an incomplete character (a multi-byte character split over tokens) and decoded in context,
/// so decoders that treat a leading space or byte pieces specially print what a whole decode
/// would.
pub struct TextStream<'t> {
    tok: &'t Tokenizer,
    /// Recent ids, decoded together (a short window keeps each step cheap).
    ids: Vec<i32>,
    /// Bytes of `ids`' decode already printed.
    printed: usize,
}

/// Ids kept as context once the window is trimmed.
const STREAM_CONTEXT: usize = 8;

impl<'t> TextStream<'t> {
    /// A stream continuing after `context` (the prompt), which is not printed again.
    pub fn new(tok: &'t Tokenizer, context: &[i32]) -> Result<TextStream<'t>, ModelError> {
        let ids = context[context.len().saturating_sub(STREAM_CONTEXT)..].to_vec();
        let printed = tok.decode_bytes(&ids)?.len();
        Ok(TextStream { tok, ids, printed })
    }

    /// The printable bytes `id` adds (possibly none yet).
    pub fn push(&mut self, id: i32) -> Result<Vec<u8>, ModelError> {
        if let Tokenizer::Bytes { .. } = self.tok {
            return self.tok.decode_bytes(&[id]);
        }
        self.ids.push(id);
        let text = self.tok.decode_bytes(&self.ids)?;
        if text.ends_with("\u{FFFD}".as_bytes()) || text.len() < self.printed {
            return Ok(Vec::new());
        }
        let new = text[self.printed..].to_vec();
        self.printed = text.len();
        if self.ids.len() > 2 * STREAM_CONTEXT {
            self.ids.drain(..self.ids.len() - STREAM_CONTEXT);
            self.printed = self.tok.decode_bytes(&self.ids)?.len();
        }
        Ok(new)
    }

    /// What the stream still holds back, once generation has ended: the rest of the whole
    /// decode, with an incomplete character at its end as U+FFFD (what a whole decode prints).
    pub fn finish(&mut self) -> Result<Vec<u8>, ModelError> {
        if let Tokenizer::Bytes { .. } = self.tok {
            return Ok(Vec::new());
        }
        let text = self.tok.decode_bytes(&self.ids)?;
        let rest = text.get(self.printed..).unwrap_or_default().to_vec();
        self.printed = text.len();
        Ok(rest)
    }
}
