//! Tokenizers built from GGUF `tokenizer.ggml.*` metadata give the ids of the independent
//! references: the Hugging Face `tokenizers` library with the equivalent tokenizer.json, and
//! llama.cpp where it differs from it (its ids win: a GGUF means what llama.cpp does with it).
//! Fixtures: `scripts/make_tokenizer_fixtures.py` (a SentencePiece `llama` vocabulary, four
//! byte-level `gpt2` ones with the pre-tokenizers `gpt-2`, `llama-bpe`, `qwen2`, `smollm`,
//! `default`, and the llama-small vocabulary llama.cpp's converter wrote).

use std::path::{Path, PathBuf};

use serde_json::Value;

use cranegrad_models::tokenizer::Tokenizer;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tokenizers")
}

fn ids(v: &Value) -> Vec<i32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() as i32)
        .collect()
}

#[test]
fn gguf_vocabularies_tokenize_as_the_references_do() {
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap();
    let fixtures = cases["fixtures"].as_object().unwrap();
    assert!(fixtures.len() >= 6);
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, f) in fixtures {
        let tok = Tokenizer::from_file(&dir().join(f["gguf"].as_str().unwrap()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let info = tok.info();
        assert_eq!(
            info.vocab_size as u64,
            f["n_tokens"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(info.bos.map(u64::from), f["bos_id"].as_u64(), "{name}");
        assert_eq!(info.eos.map(u64::from), f["eos_id"].as_u64(), "{name}");
        assert_eq!(info.pre.as_deref(), f["pre"].as_str(), "{name}");
        for case in f["cases"].as_array().unwrap() {
            let case_name = case["name"].as_str().unwrap();
            let text = case["text"].as_str().unwrap();
            let llama_cpp = &case["llama_cpp"];
            let want = |key: &str| {
                ids(if llama_cpp[key].is_array() {
                    &llama_cpp[key]
                } else {
                    &case[key]
                })
            };
            let with = tok.encode_prompt(text).unwrap();
            let without = tok.encode(text).unwrap();
            if with != want("ids") {
                failures.push(format!(
                    "{name}/{case_name} {text:?} (with BOS): want {:?}, got {with:?}",
                    want("ids")
                ));
            }
            if without != want("ids_no_special") {
                failures.push(format!(
                    "{name}/{case_name} {text:?}: want {:?}, got {without:?}",
                    want("ids_no_special")
                ));
            }
            // Decoding gives back what the tokenizers library decodes (llama.cpp's decode
            // differs only by its clean_spaces rule around punctuation).
            let decoded = String::from_utf8_lossy(&tok.decode_bytes(&ids(&case["ids"])).unwrap())
                .into_owned();
            if decoded != case["decode"].as_str().unwrap() {
                failures.push(format!(
                    "{name}/{case_name}: decode want {:?}, got {decoded:?}",
                    case["decode"]
                ));
            }
            checked += 1;
        }
    }
    assert!(checked > 250, "{checked} cases");
    assert!(
        failures.is_empty(),
        "{} of {checked} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_llama_small_golden_passes_through_its_gguf_vocabulary() {
    let tok = Tokenizer::from_file(&dir().join("llama-small.vocab.gguf")).unwrap();
    let golden: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(dir().join("../llama-small/tokenizer_golden.json")).unwrap(),
    )
    .unwrap();
    assert!(golden.len() >= 10);
    for g in &golden {
        let text = g["text"].as_str().unwrap();
        assert_eq!(tok.encode(text).unwrap(), ids(&g["ids"]), "{text:?}");
        assert_eq!(
            String::from_utf8(tok.decode_bytes(&ids(&g["ids"])).unwrap()).unwrap(),
            g["decoded"].as_str().unwrap()
        );
    }
}

#[test]
fn a_vocabulary_only_gguf_loads_for_tokenizing_but_not_as_a_model() {
    let path = dir().join("spm.gguf");
    assert!(Tokenizer::from_file(&path).is_ok());
    let err = cranegrad_models::Model::load(path.to_str().unwrap(), 0)
        .err()
        .expect("a vocabulary is not a model")
        .to_string();
    assert!(err.contains("spm.gguf"), "{err}");
}

#[test]
fn a_gguf_chat_template_renders_with_the_vocabularys_special_tokens() {
    // smollm.gguf carries SmolLM2's template, copied into `tokenizer.chat_template` by
    // llama.cpp's converter path; its BOS/EOS texts come from the vocabulary.
    let tok = Tokenizer::from_file(&dir().join("smollm.gguf")).unwrap();
    let t = tok
        .chat_template()
        .expect("smollm.gguf carries a chat template");
    assert_eq!(
        (t.bos_token.as_str(), t.eos_token.as_str()),
        ("<|im_start|>", "<|im_end|>")
    );
    let templates = dir().join("../templates");
    let messages: Value = serde_json::from_str(
        &std::fs::read_to_string(templates.join("messages/sys_multiturn.json")).unwrap(),
    )
    .unwrap();
    let want = std::fs::read_to_string(
        templates.join("expected/HuggingFaceTB-SmolLM2-Instruct__sys_multiturn__gen.txt"),
    )
    .unwrap();
    assert_eq!(
        t.render_json(&messages, true, &Default::default()).unwrap(),
        want
    );
    // Its end-of-turn token ends generation.
    assert!(
        tok.info()
            .end_of_generation
            .contains(&tok.info().eos.unwrap())
    );
}
