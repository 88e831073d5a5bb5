//! `tokenize`, `detokenize` and `info` on GGUF vocabularies, as a user runs them.

use std::io::Write;
use std::process::{Command, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cranegrad"));
    c.env("CRANEGRAD_NO_DISK_CACHE", "1");
    c
}

fn vocab(name: &str) -> String {
    format!(
        "{}/models/testdata/tokenizers/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn ok(args: &[&str]) -> String {
    let o = bin().args(args).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn tokenize_prints_ids_and_pieces_like_llama_tokenize() {
    let m = vocab("llama-bpe.gguf");
    // Llama 3 adds BOS; --no-bos adds nothing.
    let with = ok(&["tokenize", "-m", &m, "--ids-only", "Hello world"]);
    let without = ok(&[
        "tokenize",
        "-m",
        &m,
        "--ids-only",
        "--no-bos",
        "Hello world",
    ]);
    assert!(with.starts_with("[994, "), "{with}");
    assert_eq!(with.replacen("994, ", "", 1), without);
    // One line per token: `id -> 'piece'`, a newline piece shown escaped.
    let lines = ok(&["tokenize", "-m", &m, "--no-bos", "-p", "Hi\nthere"]);
    let pieces: Vec<&str> = lines
        .lines()
        .map(|l| {
            let piece = l.split_once(" -> ").unwrap().1;
            piece
                .strip_prefix('\'')
                .unwrap()
                .strip_suffix('\'')
                .unwrap()
        })
        .collect();
    assert!(pieces.len() >= 3, "{lines}");
    assert_eq!(pieces.concat(), "Hi\\nthere");
    // Control tokens written in the text are recognised.
    let ids = ok(&["tokenize", "-m", &m, "--ids-only", "--no-bos", "<|eot_id|>"]);
    assert_eq!(ids.trim(), "[998]");
    // -f - reads stdin, newlines included.
    let mut child = bin()
        .args(["tokenize", "-m", &m, "--ids-only", "--no-bos", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello world")
        .unwrap();
    let piped = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(piped.stdout).unwrap(), without);
}

#[test]
fn detokenize_inverts_tokenize() {
    for name in ["spm.gguf", "qwen2.gguf", "smollm.gguf"] {
        let m = vocab(name);
        let text = "Línea  uno\n\tcode(x) = 12345; 日本 🚀";
        let ids = ok(&["tokenize", "-m", &m, "--ids-only", "--no-bos", text]);
        // The list pastes as it is printed.
        let back = ok(&["detokenize", "-m", &m, ids.trim()]);
        assert_eq!(back, text, "{name}");
    }
    let o = bin()
        .args(["detokenize", "-m", &vocab("spm.gguf"), "5", "99999"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("99999"));
}

#[test]
fn info_describes_a_vocabulary_only_gguf_and_models_refuse_it() {
    let m = vocab("spm.gguf");
    let info = ok(&["info", "-m", &m]);
    for needle in [
        "GGUF llama (SentencePiece)",
        "1003",
        "<s>",
        "vocabulary only",
        "chat template",
    ] {
        assert!(info.contains(needle), "{needle}: {info}");
    }
    let o = bin()
        .args(["generate", "-m", &m, "-p", "hi"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no tensors"));
    let o = bin().args(["tokenize", "-m", &m]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("give the text"));
}
