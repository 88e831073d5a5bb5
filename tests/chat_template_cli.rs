//! `chat`, `generate --chat` and `template` with a model folder that carries a chat template:
//! every turn the model sees is exactly the template's rendering of the conversation, whether
//! the KV cache is reused across turns (chat) or the prompt runs from scratch (generate).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cranegrad"));
    c.env("CRANEGRAD_VERIFY", "1");
    c.env("CRANEGRAD_NO_DISK_CACHE", "1");
    c
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A ChatML-like template over llama-small's specials, with a system prompt and a
/// generation prompt.
const TEMPLATE: &str = "{% for m in messages %}<s>{{ m.role }}\n{{ m.content | trim }}</s>\n{% endfor %}\
{% if add_generation_prompt %}<s>assistant\n{% endif %}";

/// llama-small (byte-level BPE tokenizer, random weights) with a `tokenizer_config.json`
/// carrying the template.
fn model_with_template(name: &str) -> PathBuf {
    let src: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "models",
        "testdata",
        "llama-small",
    ]
    .iter()
    .collect();
    let d = std::env::temp_dir().join(format!("cranegrad-tmpl-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
    ] {
        std::fs::copy(src.join(f), d.join(f)).unwrap();
    }
    let config =
        serde_json::json!({"bos_token": "<s>", "eos_token": "</s>", "chat_template": TEMPLATE});
    std::fs::write(d.join("tokenizer_config.json"), config.to_string()).unwrap();
    d
}

fn messages(path: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `chat` on `model`, greedy with no repetition penalty (as `generate`'s defaults), `n` tokens
/// per reply, fed `input`.
fn greedy_chat(model: &str, n: usize, extra: &[&str], input: &[u8]) -> Output {
    let n = n.to_string();
    let mut args = vec![
        "chat",
        "-m",
        model,
        "--temp",
        "0",
        "--repeat-penalty",
        "1",
        "-n",
        &n,
    ];
    args.extend(extra);
    run(&args, input)
}

/// What `generate` continues a prompt with (its stdout starts with the prompt itself).
fn continuation(model: &str, prompt: &str, n: usize) -> String {
    let o = run(
        &[
            "generate",
            "-m",
            model,
            "-p",
            prompt,
            "--temp",
            "0",
            "-n",
            &n.to_string(),
        ],
        b"",
    );
    let out = String::from_utf8(o.stdout).unwrap();
    out.strip_prefix(prompt)
        .unwrap_or_else(|| panic!("generate's output {out:?} does not start with the prompt"))
        .trim_end_matches('\n')
        .to_string()
}

#[test]
fn chat_turns_are_the_templates_rendering() {
    let d = model_with_template("chat");
    let m = d.to_str().unwrap();
    let save1 = d.join("turn1.json");
    let save2 = d.join("turn2.json");
    let input = format!(
        "Hello there\n/save {}\nAnd  again, with é?\n/save {}\n",
        save1.display(),
        save2.display()
    );
    let o = greedy_chat(m, 12, &["--system", "Be brief."], input.as_bytes());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("chat template from"), "{stderr}");
    let replies: Vec<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(replies.len(), 2, "{replies:?}");
    // /save writes the messages the template renders: the system prompt first.
    let all = messages(&save2);
    let roles: Vec<&str> = all.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user", "assistant"]);
    assert_eq!(all[0]["content"], "Be brief.");
    assert_eq!(all[2]["content"], replies[0]);
    assert_eq!(all[4]["content"], replies[1]);
    assert_eq!(messages(&save1), all[..3].to_vec());

    // Each turn from scratch: render the conversation before the reply with `template`, and
    // let `generate` continue that text. The chat, which fed only each turn's new tokens into
    // its KV cache, said exactly the same.
    for (turn, reply) in [(1usize, &replies[0]), (2, &replies[1])] {
        let before = d.join(format!("before{turn}.json"));
        let upto = 2 * turn; // system + (user, assistant) pairs + this user message
        std::fs::write(&before, serde_json::to_string(&all[..upto]).unwrap()).unwrap();
        let rendered = run(
            &["template", "-m", m, "--messages", before.to_str().unwrap()],
            b"",
        );
        let prompt = String::from_utf8(rendered.stdout).unwrap();
        assert!(
            prompt.starts_with("<s>system\nBe brief.</s>\n"),
            "{prompt:?}"
        );
        assert!(prompt.ends_with("<s>assistant\n"), "{prompt:?}");
        assert_eq!(&continuation(m, &prompt, 12), reply, "turn {turn}");
    }

    // generate --chat renders one turn the same way.
    let o = run(
        &[
            "generate",
            "-m",
            m,
            "-p",
            "Hello there",
            "--chat",
            "--system",
            "Be brief.",
            "--temp",
            "0",
            "-n",
            "12",
        ],
        b"",
    );
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.trim_end().ends_with(replies[0].as_str()), "{out:?}");
}

#[test]
fn system_command_and_raw_mode() {
    let d = model_with_template("system");
    let m = d.to_str().unwrap();
    let save = d.join("s.json");
    let o = greedy_chat(
        m,
        4,
        &[],
        format!(
            "/system Answer in French.\n/system\nBonjour\n/save {}\n",
            save.display()
        )
        .as_bytes(),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("[system prompt: Answer in French.]"),
        "{stderr}"
    );
    assert_eq!(messages(&save)[0]["content"], "Answer in French.");
    // --no-template: the raw line is what the model reads.
    let o = greedy_chat(m, 6, &["--no-template"], b"Bonjour\n");
    let reply = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        continuation(m, "Bonjour\n", 6),
        reply.trim_end_matches('\n'),
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("--no-template"));
}

#[test]
fn template_command_errors_are_exit_2() {
    let d = model_with_template("errors");
    let msgs = d.join("m.json");
    std::fs::write(&msgs, r#"[{"role": "user", "content": "hi"}]"#).unwrap();
    let bad = d.join("bad.jinja");
    std::fs::write(&bad, "{% if %}").unwrap();
    let raising = d.join("raise.jinja");
    std::fs::write(&raising, "{{ raise_exception('Only user turns, please') }}").unwrap();
    let not_list = d.join("n.json");
    std::fs::write(&not_list, r#"{"role": "user"}"#).unwrap();
    for (args, needle) in [
        (vec!["--template", bad.to_str().unwrap()], "bad.jinja"),
        (
            vec!["--template", raising.to_str().unwrap()],
            "Only user turns, please",
        ),
        (vec!["-m", "small"], "carry no chat template"),
    ] {
        let o = bin()
            .arg("template")
            .args(&args)
            .args(["--messages", msgs.to_str().unwrap()])
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    let o = bin()
        .args(["template", "-m", d.to_str().unwrap(), "--messages"])
        .arg(&not_list)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("list"));
    // No newline is added: the output is the rendering, byte for byte.
    let o = bin()
        .args([
            "template",
            "-m",
            d.to_str().unwrap(),
            "--no-generation-prompt",
            "--messages",
        ])
        .arg(&msgs)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(o.stdout).unwrap(), "<s>user\nhi</s>\n");
}
