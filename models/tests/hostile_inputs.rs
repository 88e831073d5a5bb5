//! Hand-made hostile inputs for the loaders, and regressions for what `fuzz_loaders` found:
//! each must fail with an error naming the file and the problem, never hang or panic.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use cranegrad_models::Model;
use cranegrad_models::loader::{GgufFile, load_gguf_bytes};
use serde_json::json;

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
