//! Byte-level BPE from a GGUF `gpt2` vocabulary: the vocabulary, merges and pre-tokenizer are
//! written as the `tokenizer.json` a Hugging Face model of that family ships, and the
//! `tokenizers` crate runs it, so GGUF and tokenizer.json models share one BPE.

use serde_json::{Value, json};

use super::gguf_vocab::{GgufVocab, TokenKind};
use crate::ModelError;

/// GPT-2's split: contractions, letters, digits, other symbols, whitespace.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's split: case-insensitive contractions, digits in threes, newlines apart.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split: Llama 3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How text is cut before BPE for a `tokenizer.ggml.pre` name, as llama.cpp's
/// `llm_tokenizer_bpe` lists it: regexes applied in turn, each keeping what it matched and
/// what lay between, and whether merges are skipped for words already in the vocabulary.
struct PreTokenizer {
    regexes: &'static [&'static str],
    ignore_merges: bool,
}

/// The pre-tokenizer names this reader knows, with llama.cpp's aliases.
pub const KNOWN_PRE: &[&str] = &[
    "default",
    "gpt-2",
    "gpt2",
    "llama-bpe",
    "llama3",
    "llama-v3",
    "qwen2",
    "smollm",
    "starcoder",
    "refact",
    "command-r",
    "olmo",
    "mpt",
    "falcon",
    "stablelm2",
    "deepseek-r1-qwen",
];

fn pre_tokenizer(pre: &str) -> Option<PreTokenizer> {
    let (regexes, ignore_merges): (&'static [&'static str], bool) = match pre {
        "default" => (
            &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
            false,
        ),
        "gpt-2" | "gpt2" | "olmo" | "mpt" => (&[GPT2], false),
        "llama-bpe" | "llama3" | "llama-v3" => (&[LLAMA3], true),
        "qwen2" | "stablelm2" | "deepseek-r1-qwen" => (&[QWEN2], false),
        "smollm" | "starcoder" | "refact" | "command-r" => (&[r"\p{N}", GPT2], false),
        "falcon" => (&[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"], false),
        _ => return None,
    };
    Some(PreTokenizer {
        regexes,
        ignore_merges,
    })
}

/// The `tokenizer.json` equivalent to a `gpt2` GGUF vocabulary.
pub fn tokenizer_json(vocab: &GgufVocab, source: &str) -> Result<Value, ModelError> {
    let pre = pre_tokenizer(&vocab.pre).ok_or_else(|| {
        ModelError::Input(format!(
            "{source}: `tokenizer.ggml.pre` = `{}` is not a pre-tokenizer cranegrad knows (known: {})",
            vocab.pre,
            KNOWN_PRE.join(", ")
        ))
    })?;
    let mut splits: Vec<Value> = pre
        .regexes
        .iter()
        .map(|r| {
            json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false})
        })
        .collect();
    splits.push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}));
    let vocab_map: serde_json::Map<String, Value> = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added: Vec<Value> = vocab
        .tokens
        .iter()
        .zip(&vocab.kinds)
        .enumerate()
        .filter(|(_, (_, k))| k.is_matched_in_text())
        .map(|(i, (t, k))| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": *k != TokenKind::UserDefined})
        })
        .collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": splits},
        "post_processor": post_processor(vocab),
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": pre.ignore_merges, "vocab": vocab_map, "merges": vocab.merges,
        },
    }))
}

/// BOS/EOS added as the vocabulary's flags say (a template processor, as Llama 3 ships).
fn post_processor(vocab: &GgufVocab) -> Value {
    let bos = vocab.bos.filter(|_| vocab.add_bos);
    let eos = vocab.eos.filter(|_| vocab.add_eos);
    if bos.is_none() && eos.is_none() {
        return Value::Null;
    }
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = serde_json::Map::new();
    let mut special = |id: u32, seq: &mut Vec<Value>| {
        let text = &vocab.tokens[id as usize];
        seq.push(json!({"SpecialToken": {"id": text, "type_id": 0}}));
        specials.insert(
            text.clone(),
            json!({"id": text, "ids": [id], "tokens": [text]}),
        );
    };
    if let Some(b) = bos {
        special(b, &mut single);
        special(b, &mut pair);
    }
    single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
    pair.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
    pair.push(json!({"Sequence": {"id": "B", "type_id": 1}}));
    if let Some(e) = eos {
        special(e, &mut single);
        special(e, &mut pair);
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
}
