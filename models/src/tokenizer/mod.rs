//! Tokenizers: byte-level (byte b is id b; the default for random-weight presets), Hugging
//! Face `tokenizer.json` through the `tokenizers` crate, and the vocabularies GGUF files carry
//! (`llama` SentencePiece, written here; `gpt2` byte-level BPE, run by the `tokenizers` crate).

mod bpe;
pub mod gguf_vocab;
mod hf;
pub mod special_split;
mod spm;
mod stream;

use std::path::Path;

use crate::ModelError;
use crate::chat_template::{ChatTemplate, read_tokenizer_config, special_token_text};
use crate::loader::file::map_file;
use crate::loader::gguf::{GgufFile, peek_tensor_count};
use gguf_vocab::{GgufVocab, TokenKind, VocabModel};
use special_split::{Fragment, SpecialTokens};
use spm::SpmTokenizer;

pub use bpe::KNOWN_PRE;
pub use stream::TextStream;

/// Texts of the tokens that end a turn in common chat formats; llama.cpp stops on them too.
const END_OF_TURN_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<|return|>",
    "<EOT>",
];

/// What runs the tokenization.
enum Engine {
    /// Byte b is id b; ids of 256 and above print as `<|id|>`.
    Bytes,
    /// A `tokenizers` pipeline (tokenizer.json, or built from a GGUF `gpt2` vocabulary).
    Hf(Box<tokenizers::Tokenizer>),
    /// A GGUF `llama` vocabulary.
    Spm {
        spm: Box<SpmTokenizer>,
        specials: SpecialTokens,
    },
}

/// What a tokenizer is, for `info` and reports.
#[derive(Debug, Clone, Default)]
pub struct TokenizerInfo {
    /// `byte-level`, `tokenizer.json`, `GGUF llama (SentencePiece)`, `GGUF gpt2 (byte-level BPE)`.
    pub kind: String,
    /// Where it was read from.
    pub source: String,
    /// The pre-tokenizer name (GGUF `tokenizer.ggml.pre`).
    pub pre: Option<String>,
    /// Number of ids.
    pub vocab_size: usize,
    /// Beginning-of-sequence id.
    pub bos: Option<u32>,
    /// End-of-sequence id.
    pub eos: Option<u32>,
    /// Ids a prompt gets around it when special tokens are added (BOS first, EOS last).
    pub adds: Vec<u32>,
    /// Ids that end generation: EOS and the end-of-turn tokens.
    pub end_of_generation: Vec<u32>,
}

/// Text <-> token ids, with the model's chat template when its files carry one.
pub struct Tokenizer {
    engine: Engine,
    info: TokenizerInfo,
    template: Option<ChatTemplate>,
}

impl Tokenizer {
    /// The byte-level tokenizer for a model of `vocab` ids.
    pub fn bytes(vocab: usize) -> Tokenizer {
        Tokenizer {
            engine: Engine::Bytes,
            info: TokenizerInfo {
                kind: "byte-level".into(),
                source: "built in".into(),
                vocab_size: vocab,
                ..TokenizerInfo::default()
            },
            template: None,
        }
    }

    /// The tokenizer for a model spec: the one its files carry (see [`Tokenizer::of_files`]),
    /// else byte-level over `vocab` ids.
    pub fn for_model(spec: &str, vocab: usize) -> Result<Tokenizer, ModelError> {
        Ok(Tokenizer::of_files(spec)?.unwrap_or_else(|| Tokenizer::bytes(vocab)))
    }

    /// The tokenizer a model's files carry: the vocabulary of a GGUF file, or the
    /// `tokenizer.json` of (or beside) a model folder or file; `None` when they carry none
    /// (a preset, a GGUF without `tokenizer.ggml.*`, a folder without tokenizer.json).
    pub fn of_files(spec: &str) -> Result<Option<Tokenizer>, ModelError> {
        let p = Path::new(spec);
        if p.is_file() && is_gguf(p) {
            let bytes = map_file(p)?;
            let file = GgufFile::parse(&bytes, p)?;
            if GgufVocab::present(&file) {
                return Tokenizer::from_gguf(&file).map(Some);
            }
            return Ok(None);
        }
        let dir = if p.is_dir() { Some(p) } else { p.parent() };
        match dir {
            Some(d) if p.exists() && d.join("tokenizer.json").is_file() => {
                Tokenizer::from_hf_folder(d).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Loads a tokenizer file given by hand: a `tokenizer.json` (with the
    /// `tokenizer_config.json` beside it, if any) or a GGUF file's vocabulary.
    pub fn from_file(path: &Path) -> Result<Tokenizer, ModelError> {
        crate::loader::file::check_regular(path)?;
        if is_gguf(path) {
            let bytes = map_file(path)?;
            let file = GgufFile::parse(&bytes, path)?;
            if !GgufVocab::present(&file) {
                return Err(ModelError::Input(format!(
                    "{}: this GGUF file carries no vocabulary (no `tokenizer.ggml.model`)",
                    path.display()
                )));
            }
            return Tokenizer::from_gguf(&file);
        }
        let inner = hf::load(path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let beside = path.file_name().is_some_and(|n| n == "tokenizer.json");
        Tokenizer::from_hf(inner, &path.display().to_string(), beside.then_some(dir))
    }

    /// The tokenizer of a Hugging Face folder: `tokenizer.json`, `tokenizer_config.json`'s
    /// special tokens and the chat template.
    pub fn from_hf_folder(dir: &Path) -> Result<Tokenizer, ModelError> {
        let path = dir.join("tokenizer.json");
        let inner = hf::load(&path)?;
        Tokenizer::from_hf(inner, &path.display().to_string(), Some(dir))
    }

    fn from_hf(
        inner: tokenizers::Tokenizer,
        source: &str,
        folder: Option<&Path>,
    ) -> Result<Tokenizer, ModelError> {
        let config = match folder {
            Some(d) => read_tokenizer_config(d)?,
            None => None,
        };
        let id_of = |key: &str| {
            let text = special_token_text(config.as_ref()?.get(key))?;
            inner.token_to_id(&text)
        };
        let (bos, eos) = (id_of("bos_token"), id_of("eos_token"));
        // What the post-processor puts around a prompt shows in the encoding of no text.
        let adds = inner
            .encode("", true)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default();
        let mut end_of_generation: Vec<u32> = eos.into_iter().collect();
        for t in inner.get_added_tokens_decoder().values() {
            if t.special && END_OF_TURN_TEXTS.contains(&t.content.as_str()) {
                end_of_generation.extend(inner.token_to_id(&t.content));
            }
        }
        end_of_generation.sort_unstable();
        end_of_generation.dedup();
        let template = match folder {
            Some(d) => ChatTemplate::from_hf_folder(d)?,
            None => None,
        };
        Ok(Tokenizer {
            info: TokenizerInfo {
                kind: "tokenizer.json".into(),
                source: source.into(),
                pre: None,
                vocab_size: inner.get_vocab_size(true),
                bos,
                eos,
                adds,
                end_of_generation,
            },
            engine: Engine::Hf(Box::new(inner)),
            template,
        })
    }

    /// The tokenizer a GGUF file's `tokenizer.ggml.*` metadata describes, with its chat
    /// template.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, ModelError> {
        let vocab = GgufVocab::read(file)?;
        let source = file.path.display().to_string();
        let text = |id: Option<u32>| {
            id.map(|i| vocab.tokens[i as usize].clone())
                .unwrap_or_default()
        };
        let template = match &vocab.chat_template {
            Some(t) => Some(ChatTemplate::new(
                t,
                &format!("{source}: `tokenizer.chat_template`"),
                &text(vocab.bos),
                &text(vocab.eos),
            )?),
            None => None,
        };
        let mut end_of_generation: Vec<u32> = [vocab.eos, vocab.eot, vocab.eom]
            .into_iter()
            .flatten()
            .collect();
        for (i, (t, k)) in vocab.tokens.iter().zip(&vocab.kinds).enumerate() {
            if *k == TokenKind::Control && END_OF_TURN_TEXTS.contains(&t.as_str()) {
                end_of_generation.push(i as u32);
            }
        }
        end_of_generation.sort_unstable();
        end_of_generation.dedup();
        let mut adds: Vec<u32> = vocab.bos.filter(|_| vocab.add_bos).into_iter().collect();
        adds.extend(vocab.eos.filter(|_| vocab.add_eos));
        let info = TokenizerInfo {
            kind: match vocab.model {
                VocabModel::SentencePiece => "GGUF llama (SentencePiece)".into(),
                VocabModel::BytePairs => "GGUF gpt2 (byte-level BPE)".into(),
            },
            source: source.clone(),
            pre: Some(vocab.pre.clone()),
            vocab_size: vocab.tokens.len(),
            bos: vocab.bos,
            eos: vocab.eos,
            adds,
            end_of_generation,
        };
        let engine = match vocab.model {
            VocabModel::BytePairs => {
                let json = bpe::tokenizer_json(&vocab, &source)?;
                Engine::Hf(Box::new(hf::parse(
                    &json.to_string(),
                    &format!("{source} (its gpt2 vocabulary)"),
                )?))
            }
            VocabModel::SentencePiece => {
                let specials = SpecialTokens::new(
                    vocab
                        .tokens
                        .iter()
                        .zip(&vocab.kinds)
                        .enumerate()
                        .filter(|(_, (_, k))| k.is_matched_in_text())
                        .map(|(i, (t, _))| (t.clone(), i as u32))
                        .collect(),
                );
                Engine::Spm {
                    spm: Box::new(SpmTokenizer::new(vocab)),
                    specials,
                }
            }
        };
        Ok(Tokenizer {
            engine,
            info,
            template,
        })
    }

    /// Short description for reports.
    pub fn name(&self) -> &str {
        &self.info.kind
    }

    /// What this tokenizer is.
    pub fn info(&self) -> &TokenizerInfo {
        &self.info
    }

    /// The chat template the model's files carry.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// Whether this is the byte-level tokenizer.
    pub fn is_bytes(&self) -> bool {
        matches!(self.engine, Engine::Bytes)
    }

    /// Token ids of `text`, with no BOS or EOS added; special tokens written in the text
    /// (`<|im_start|>`) become their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<i32>, ModelError> {
        self.encode_with(text, false)
    }

    /// Token ids of a prompt: BOS (and EOS) added where the model's tokenizer adds them.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<i32>, ModelError> {
        self.encode_with(text, true)
    }

    fn encode_with(&self, text: &str, add_special: bool) -> Result<Vec<i32>, ModelError> {
        let ids: Vec<u32> = match &self.engine {
            Engine::Bytes => {
                let vocab = self.info.vocab_size;
                return text
                    .bytes()
                    .map(|b| {
                        if (b as usize) < vocab {
                            Ok(i32::from(b))
                        } else {
                            Err(ModelError::Input(format!(
                                "prompt byte {b} is outside the model's vocabulary of {vocab} (byte-level tokenizer)"
                            )))
                        }
                    })
                    .collect();
            }
            Engine::Hf(t) => t
                .encode(text, add_special)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| ModelError::Input(format!("tokenizer: {e}")))?,
            Engine::Spm { spm, specials } => {
                let v = spm.vocab();
                let mut out = Vec::new();
                if add_special && v.add_bos {
                    out.extend(v.bos);
                }
                // llama.cpp puts a space before text that starts the input or follows a
                // special token (SentencePiece's dummy prefix, per fragment).
                let mut after_special = true;
                for f in specials.split(text) {
                    match f {
                        Fragment::Text(t) => {
                            spm.encode_text(t, v.add_space_prefix && after_special, &mut out);
                            after_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                    }
                }
                if add_special && v.add_eos {
                    out.extend(v.eos);
                }
                out
            }
        };
        Ok(ids.into_iter().map(|i| i as i32).collect())
    }

    fn check_ids(&self, ids: &[i32]) -> Result<Vec<u32>, ModelError> {
        let vocab = self.info.vocab_size;
        ids.iter()
            .map(|&i| match u32::try_from(i) {
                Ok(u) if (u as usize) < vocab => Ok(u),
                _ => Err(ModelError::Input(format!(
                    "token id {i} is outside the tokenizer's vocabulary of {vocab}"
                ))),
            })
            .collect()
    }

    /// The text of `ids` as bytes (byte-level output may not be valid UTF-8 on its own);
    /// special tokens print as their text.
    pub fn decode_bytes(&self, ids: &[i32]) -> Result<Vec<u8>, ModelError> {
        match &self.engine {
            Engine::Bytes => Ok(ids
                .iter()
                .flat_map(|&i| {
                    if (0..256).contains(&i) {
                        vec![i as u8]
                    } else {
                        format!("<|{i}|>").into_bytes()
                    }
                })
                .collect()),
            Engine::Hf(t) => {
                let u = self.check_ids(ids)?;
                t.decode(&u, false)
                    .map(String::into_bytes)
                    .map_err(|e| ModelError::Input(format!("tokenizer: {e}")))
            }
            Engine::Spm { spm, .. } => {
                let u = self.check_ids(ids)?;
                let mut out = Vec::new();
                for (k, &id) in u.iter().enumerate() {
                    let piece = spm.piece(id, true);
                    // The space prefix added when encoding is taken off the first piece.
                    let strip =
                        k == 0 && spm.vocab().add_space_prefix && piece.first() == Some(&b' ');
                    out.extend_from_slice(&piece[usize::from(strip)..]);
                }
                Ok(out)
            }
        }
    }

    /// The text of one token on its own (what `tokenize` prints beside each id).
    pub fn piece(&self, id: i32) -> Result<Vec<u8>, ModelError> {
        let u = self.check_ids(&[id])?[0];
        match &self.engine {
            Engine::Spm { spm, .. } => Ok(spm.piece(u, true)),
            _ => self.decode_bytes(&[id]),
        }
    }

    /// The text a token id stands for in the vocabulary (BOS/EOS names), if it has one.
    pub fn token_text(&self, id: u32) -> Option<String> {
        match &self.engine {
            Engine::Bytes => None,
            Engine::Hf(t) => t.id_to_token(id),
            Engine::Spm { spm, .. } => spm.vocab().tokens.get(id as usize).cloned(),
        }
    }
}

/// Whether a file is GGUF.
fn is_gguf(path: &Path) -> bool {
    peek_tensor_count(path).is_some()
}
