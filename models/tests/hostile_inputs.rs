//! Hand-made hostile inputs for the loaders, and regressions for what `fuzz_loaders` found:
//! each must fail with an error naming the file and the problem, never hang or panic.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use cranegrad_models::Model;
use cranegrad_models::loader::{GgufFile, load_gguf_bytes};
use cranegrad_models::tokenizer::Tokenizer;
use serde_json::{Value, json};

mod common;

use common::{Scratch, td};

/// Loads `spec` on a thread so a hang fails the test instead of stalling the run; returns
/// the error text.
fn load_err(spec: &Path) -> String {
    let spec = spec.to_string_lossy().into_owned();
    let (tx, rx) = mpsc::channel();
    let shown = spec.clone();
    std::thread::spawn(move || {
        let _ = tx.send(Model::load(&spec, 0).err().map(|e| e.to_string()));
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Some(e)) => e,
        Ok(None) => panic!("{shown}: loaded, expected an error"),
        Err(_) => panic!("{shown}: no answer within 20 s (hang)"),
    }
}

fn assert_mentions(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "error `{msg}` does not mention `{n}`");
    }
}

/// llama-tiny's config files copied into a fresh folder.
fn llama_tiny_configs(tag: &str) -> Scratch {
    let s = Scratch::new(tag);
    for f in ["config.json", "generation_config.json"] {
        s.copy(&td(&format!("llama-tiny/{f}")), f);
    }
    s
}

// ---------------------------------------------------------------- file kinds

#[cfg(unix)]
#[test]
fn weights_that_are_devices_folders_or_pipes_are_refused_by_kind() {
    use std::os::unix::fs::symlink;
    for (target, kind) in [
        ("/dev/zero", "character device"),
        ("/dev/null", "character device"),
        ("/", "directory"),
    ] {
        let s = llama_tiny_configs("weights-kind");
        symlink(target, s.path("model.safetensors")).unwrap();
        let msg = load_err(&s.0);
        assert_mentions(&msg, &["model.safetensors", kind, "not a regular file"]);

        // The same file as a shard named by the index.
        let s = llama_tiny_configs("shard-kind");
        let index = json!({"weight_map": {"model.norm.weight": "shard.safetensors"}});
        s.write("model.safetensors.index.json", index.to_string().as_bytes());
        symlink(target, s.path("shard.safetensors")).unwrap();
        let msg = load_err(&s.0);
        assert_mentions(&msg, &["shard.safetensors", kind, "not a regular file"]);

        // And given directly as the model path.
        if target != "/" {
            let msg = load_err(&s.path("shard.safetensors"));
            assert_mentions(&msg, &["shard.safetensors", kind]);
        }
    }
}

/// Opening a FIFO blocks until a writer appears: before the fix these loads hung for good.
#[cfg(unix)]
#[test]
fn named_pipes_fail_instead_of_hanging() {
    let s = llama_tiny_configs("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(s.path("shard.safetensors"))
        .arg(s.path("model.gguf"))
        .status();
    if !made.is_ok_and(|st| st.success()) {
        eprintln!("mkfifo unavailable; skipping");
        return;
    }
    let index = json!({"weight_map": {"model.norm.weight": "shard.safetensors"}});
    s.write("model.safetensors.index.json", index.to_string().as_bytes());
    assert_mentions(&load_err(&s.0), &["shard.safetensors", "named pipe"]);
    assert_mentions(
        &load_err(&s.path("model.gguf")),
        &["model.gguf", "named pipe"],
    );
    let tok = Tokenizer::from_file(&s.path("model.gguf")).err().unwrap();
    assert_mentions(&tok.to_string(), &["model.gguf", "named pipe"]);
}

// ---------------------------------------------------------------- shard index paths

#[test]
fn index_naming_files_outside_the_folder_is_refused() {
    for file in [
        "../../etc/passwd",
        "/etc/passwd",
        "..\\..\\secret.safetensors",
        "sub/model.safetensors",
        "..",
        ".",
        "",
    ] {
        let s = llama_tiny_configs("index-escape");
        let index = json!({"weight_map": {"model.norm.weight": file}});
        s.write("model.safetensors.index.json", index.to_string().as_bytes());
        let msg = load_err(&s.0);
        assert_mentions(
            &msg,
            &[
                "model.safetensors.index.json",
                "model.norm.weight",
                "plain file name",
            ],
        );
    }
}

// ---------------------------------------------------------------- duplicate names

/// A safetensors file whose header names `name` twice (hand-written: no writer does this).
fn safetensors_with_twice(name: &str) -> Vec<u8> {
    let entry = |start: u32| {
        format!(
            r#""{name}":{{"dtype":"F32","shape":[1],"data_offsets":[{start},{}]}}"#,
            start + 4
        )
    };
    let header = format!("{{{},{}}}", entry(0), entry(4));
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b.extend(1f32.to_le_bytes());
    b.extend(2f32.to_le_bytes());
    b
}

/// serde_json keeps the last of two equal keys, so before the fix the first tensor's bytes
/// were silently dropped (or the crate said only `InvalidOffset`).
#[test]
fn duplicate_tensor_names_in_a_safetensors_header_are_refused() {
    let s = llama_tiny_configs("dup-st");
    s.write(
        "model.safetensors",
        &safetensors_with_twice("model.norm.weight"),
    );
    let msg = load_err(&s.0);
    assert_mentions(
        &msg,
        &["model.safetensors", "`model.norm.weight` appears twice"],
    );
}

#[test]
fn a_tensor_listed_twice_in_the_shard_index_is_refused() {
    let s = llama_tiny_configs("dup-index");
    let index = r#"{"weight_map": {"model.norm.weight": "a.safetensors",
                                   "model.norm.weight": "b.safetensors"}}"#;
    s.write("model.safetensors.index.json", index.as_bytes());
    let msg = load_err(&s.0);
    assert_mentions(
        &msg,
        &[
            "model.safetensors.index.json",
            "`model.norm.weight` appears twice",
        ],
    );
}

#[test]
fn a_config_key_given_twice_is_refused() {
    let s = Scratch::new("dup-config");
    let cfg = std::fs::read_to_string(td("llama-tiny/config.json")).unwrap();
    let cfg = cfg.replacen('{', "{\"hidden_size\": 32,", 1);
    s.write("config.json", cfg.as_bytes());
    s.copy(&td("llama-tiny/model.safetensors"), "model.safetensors");
    let msg = load_err(&s.0);
    assert_mentions(&msg, &["config.json", "`hidden_size` appears twice"]);
}

// ---------------------------------------------------------------- GGUF

fn real_gguf() -> Vec<u8> {
    std::fs::read(td("llama-tiny/model-f32.gguf")).unwrap()
}

/// Byte position of the offset field of the tensor-info entry named `name`.
fn offset_field(bytes: &[u8], name: &str) -> usize {
    let g = GgufFile::parse(bytes, Path::new("x.gguf")).unwrap();
    let info = g.tensor(name).unwrap();
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend(name.as_bytes());
    let at = bytes
        .windows(key.len())
        .rposition(|w| w == key.as_slice())
        .unwrap();
    at + key.len() + 4 + 8 * info.dims.len() + 4
}

#[test]
fn misaligned_gguf_tensor_offsets_are_refused() {
    let mut b = real_gguf();
    let at = offset_field(&b, "output_norm.weight");
    let off = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    b[at..at + 8].copy_from_slice(&(off + 4).to_le_bytes());
    let msg = load_gguf_bytes(&b, Path::new("misaligned.gguf"))
        .unwrap_err()
        .to_string();
    assert_mentions(
        &msg,
        &[
            "misaligned.gguf",
            "output_norm.weight",
            "not a multiple of the alignment",
        ],
    );
}

#[test]
fn gguf_tensor_offset_past_the_end_is_refused() {
    let mut b = real_gguf();
    let at = offset_field(&b, "output_norm.weight");
    b[at..at + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    let msg = load_gguf_bytes(&b, Path::new("far.gguf"))
        .unwrap_err()
        .to_string();
    assert_mentions(&msg, &["far.gguf", "output_norm.weight", "past the end"]);
}

#[test]
fn gguf_huge_tensor_count_and_string_length_are_refused() {
    let real = real_gguf();
    let mut b = real.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let msg = load_gguf_bytes(&b, Path::new("count.gguf"))
        .unwrap_err()
        .to_string();
    assert_mentions(&msg, &["count.gguf", "tensor count 18446744073709551615"]);

    // The first metadata key's length field follows magic, version and the two counts.
    let mut b = real.clone();
    b[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    let msg = load_gguf_bytes(&b, Path::new("key.gguf"))
        .unwrap_err()
        .to_string();
    assert_mentions(&msg, &["key.gguf", "string length 18446744073709551615"]);

    // A string value: `general.architecture`'s length field follows its key and type.
    let mut b = real;
    let key = b"general.architecture";
    let at = b.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4;
    b[at..at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let msg = load_gguf_bytes(&b, Path::new("value.gguf"))
        .unwrap_err()
        .to_string();
    assert_mentions(&msg, &["value.gguf", "runs past the end"]);
}

// ---------------------------------------------------------------- tokenizer.json

/// The tokenizers crate `expect`s its decoder section; before the fix this aborted the load
/// with a panic (found by `fuzz_tokenizer_json` on a truncated file).
#[test]
fn malformed_tokenizer_json_is_an_error_not_a_panic() {
    let s = Scratch::new("tok");
    let text = std::fs::read_to_string(td("llama-small/tokenizer.json")).unwrap();
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    doc["decoder"] = json!({"type": "Sequence", "decoders": 5});
    let p = s.write("tokenizer.json", doc.to_string().as_bytes());
    let r = std::panic::catch_unwind(|| Tokenizer::from_file(&p).err().map(|e| e.to_string()));
    let msg = r.expect("Tokenizer::from_file panicked").expect("loaded");
    assert_mentions(&msg, &["tokenizer.json", "not a valid tokenizer.json"]);

    let p = s.write("tokenizer.json", &text.as_bytes()[..text.len() / 2]);
    let msg = Tokenizer::from_file(&p).err().unwrap().to_string();
    assert_mentions(&msg, &["tokenizer.json", "invalid JSON", "line"]);
}
