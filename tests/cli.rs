//! The command line as a user meets it: exit codes, JSON keys, errors naming what is wrong.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// The binary with Cranelift's IR verifier on: a release build skips it unless asked, and these
/// runs compile real models' kernels.
fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cranegrad"));
    c.env("CRANEGRAD_VERIFY", "1");
    // Every run compiles: the disk cache has tests of its own (disk_cache_cli.rs).
    c.env("CRANEGRAD_NO_DISK_CACHE", "1");
    c
}

fn td(p: &str) -> String {
    let d: PathBuf = [env!("CARGO_MANIFEST_DIR"), "models", "testdata", p]
        .iter()
        .collect();
    d.to_string_lossy().into_owned()
}

/// `chat` with `args`, fed `input` on stdin until it ends.
fn chat_with(args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = bin()
        .arg("chat")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cranegrad-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn golden_verify_exit_codes() {
    let ok = bin()
        .args([
            "golden",
            "verify",
            "--model",
            &td("llama-tiny"),
            "--golden",
            &td("llama-tiny/golden.safetensors"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("PASS"));
    // Q8_0 weights move logits by ~6e-3: a failed check at the default tolerance is exit 1 ...
    let q8 = td("llama-tiny/model-q8_0.gguf");
    let g = td("llama-tiny/golden.safetensors");
    let fail = bin()
        .args(["golden", "verify", "--model", &q8, "--golden", &g])
        .output()
        .unwrap();
    assert_eq!(fail.status.code(), Some(1));
    // ... and passes at the tolerance the fixture suggests for it.
    let pass = bin()
        .args([
            "golden", "verify", "--model", &q8, "--golden", &g, "--atol", "1e-2",
        ])
        .output()
        .unwrap();
    assert_eq!(pass.status.code(), Some(0));
    // Bad input is exit 2 with the path in the message.
    let bad = bin()
        .args([
            "golden",
            "verify",
            "--model",
            "/no/such/model",
            "--golden",
            &g,
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/no/such/model"));
}

#[test]
fn golden_write_then_verify_round_trips() {
    let out = tmp("golden").join("ours.safetensors");
    let w = bin()
        .args([
            "golden",
            "write",
            "--model",
            "small",
            "--input-ids",
            "1,2,3,4",
            "--input-ids",
            "9,8,7,6",
        ])
        .args(["--new-tokens", "4", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        w.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&w.stderr)
    );
    let v = bin()
        .args(["golden", "verify", "--model", "small", "--golden"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    // A different weight seed is a different model: the check must fail.
    let v = bin()
        .args([
            "golden",
            "verify",
            "--model",
            "small",
            "--weights-seed",
            "1",
            "--golden",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(1));
}

#[test]
fn run_json_has_every_documented_key() {
    let json = tmp("run").join("run.json");
    let r = bin()
        .args(["run", "--iters", "2", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for k in [
        "cold_ms",
        "compile_ms",
        "warm_median_ms",
        "warm_p90_ms",
        "warm_min_ms",
        "kernels_unfused",
        "kernels_fused",
        "cache_hits",
        "cache_misses",
        "passes_ms",
        "arena_bytes",
    ] {
        assert!(v[k].is_number(), "missing numeric key {k} in {v}");
    }
    assert!(v["kernels_fused"].as_u64() < v["kernels_unfused"].as_u64());
    assert_eq!(v["example"], "small");
}

/// The keys the CLI reference's `--json` keys table (of `run`, docs/cli.md) lists: the
/// backticked names in the first cell of each row.
fn readme_run_json_keys() -> BTreeSet<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md")).unwrap();
    let start = readme
        .find("## `--json` keys")
        .expect("the --json keys section");
    let section = &readme[start..];
    let section = &section[..section[4..].find("\n#").map_or(section.len(), |e| e + 4)];
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .flat_map(|row| {
            let cell = row.split(" |").next().unwrap_or("");
            cell.split('`')
                .step_by(2)
                .map(|k| k.trim_matches([',', ' ']).to_string())
                .filter(|k| !k.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn run_json_keys_are_exactly_the_readme_table() {
    let documented = readme_run_json_keys();
    assert!(documented.contains("cold_ms") && documented.contains("layers"));
    // A model forward writes every key; a built-in graph has no layers.
    for (example, absent) in [("llama", None), ("chain", Some("layers"))] {
        let json = tmp("run-keys").join(format!("{example}.json"));
        let r = bin()
            .args(["run", example, "--iters", "1", "--json"])
            .arg(&json)
            .output()
            .unwrap();
        assert_eq!(
            r.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&r.stderr)
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let written: BTreeSet<String> = v.as_object().unwrap().keys().cloned().collect();
        let mut expected = documented.clone();
        if let Some(k) = absent {
            expected.remove(k);
        }
        assert_eq!(written, expected, "{example}: {v}");
    }
}

#[test]
fn dump_graph_shows_every_stage() {
    let r = bin()
        .args(["run", "chain", "--iters", "1", "--dump-graph"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&r.stdout);
    assert_eq!(r.status.code(), Some(0));
    for s in [
        "== primitive graph",
        "== passes",
        "realize_roots",
        "fuse_epilogues",
        "mark_sequential_loops",
        "== fused schedule (1 kernels)",
        "loop i0",
        "== compilation",
        "k0_e_4096_4096",
        "== totals",
        "8 unfused -> 1 fused",
    ] {
        assert!(out.contains(s), "missing {s:?} in\n{out}");
    }
    let dot = bin()
        .args(["run", "chain", "--iters", "1", "--dump-graph=dot"])
        .output()
        .unwrap();
    let d = String::from_utf8_lossy(&dot.stdout);
    assert!(d.starts_with("digraph") && d.contains("cluster_k0") && d.trim_end().ends_with('}'));
}

#[test]
fn dot_of_a_model_groups_its_kernels_by_layer() {
    let dot = bin()
        .args([
            "run",
            "llama",
            "-m",
            "small",
            "--iters",
            "1",
            "--dump-graph=dot",
        ])
        .output()
        .unwrap();
    assert_eq!(dot.status.code(), Some(0));
    let d = String::from_utf8_lossy(&dot.stdout);
    let groups: Vec<&str> = d
        .lines()
        .filter(|l| l.starts_with("    label=\""))
        .map(|l| {
            l.trim()
                .trim_start_matches("label=\"")
                .trim_end_matches("\";")
        })
        .collect();
    assert_eq!(groups, ["embed", "layer.0", "layer.1", "head"], "{d}");
    // Every kernel cluster sits inside a group (indented one level deeper).
    let kernels = d.matches("subgraph cluster_k").count();
    assert!(kernels > 4);
    assert_eq!(d.matches("    subgraph cluster_k").count(), kernels);
}

#[test]
fn dump_graph_of_a_model_names_every_fusion_pattern() {
    for extra in [&[][..], &["--unfused-attention"][..]] {
        let r = bin()
            .args([
                "run",
                "llama",
                "--model",
                &td("llama-tiny"),
                "--iters",
                "1",
                "--dump-graph",
            ])
            .args(extra)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&r.stdout);
        assert_eq!(
            r.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&r.stderr)
        );
        let flash = out.matches("(flash attention").count();
        // llama-tiny has 2 layers: one attention kernel each, unless attention is unfused.
        assert_eq!(flash, if extra.is_empty() { 2 } else { 0 }, "{out}");
        for s in [
            "fold_norm_into_matmul",
            "rmsnorm+gemm, packed weights with the norm gain folded in",
            "gemm, packed weights + epilogue",
        ] {
            assert!(out.contains(s), "missing {s:?} in\n{out}");
        }
    }
}

#[test]
fn bad_input_is_exit_2_naming_the_fault() {
    let r = bin().args(["run", "nosuch"]).output().unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("nosuch"));
    // An unknown architecture is refused by name.
    let d = tmp("bert");
    std::fs::write(
        d.join("config.json"),
        r#"{"model_type": "bert", "architectures": ["BertModel"]}"#,
    )
    .unwrap();
    std::fs::write(d.join("model.safetensors"), b"").unwrap();
    let r = bin().args(["info", "--model"]).arg(&d).output().unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("bert"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // A truncated GGUF is an error, not a crash.
    let g = d.join("cut.gguf");
    let bytes = std::fs::read(td("llama-tiny/model-f32.gguf")).unwrap();
    std::fs::write(&g, &bytes[..bytes.len() / 3]).unwrap();
    let r = bin().args(["info", "--model"]).arg(&g).output().unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("cut.gguf"));
}

#[test]
fn generate_is_deterministic_per_seed_and_checks_the_context() {
    let run = |seed: &str| {
        let o = bin()
            .args([
                "generate",
                "--model",
                &td("llama-tiny"),
                "--prompt",
                "Hi there",
                "--max-new",
                "12",
            ])
            .args(["--temperature", "0.9", "--top-k", "50", "--seed", seed])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stderr).contains("ms/token"));
        o.stdout
    };
    assert_eq!(run("5"), run("5"));
    assert!(run("5").starts_with(b"Hi there"));
    let o = bin()
        .args([
            "generate",
            "--model",
            &td("llama-tiny"),
            "--prompt",
            "Hi",
            "--max-new",
            "200",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("exceeds the context"));
}

#[test]
fn chat_reads_prompts_from_a_pipe() {
    let o = chat_with(
        &[
            "--model",
            &td("llama-tiny"),
            "--max-new",
            "8",
            "--temperature",
            "0",
        ],
        b"Hi\nAgain\n",
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("tokens/s").count(), 2, "{err}");
}

#[test]
fn bench_json_has_every_field_and_compares_backends() {
    let d = tmp("bench");
    let json = d.join("bench.json");
    let r = bin()
        .args([
            "bench",
            "--model",
            "small",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--requests",
            "2",
            "--gen-len",
            "4",
        ])
        .args(["--compare", "--profile", "--trace"])
        .arg(d.join("trace.json"))
        .arg("--plot")
        .arg(d.join("lat.svg"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for k in [
        "load_ms",
        "cold_ms",
        "compile_ms",
        "kernels_compiled",
        "warm_min_ms",
        "warm_median_ms",
        "warm_p90_ms",
        "ttft_ms",
        "decode_ms_per_token",
        "tokens_per_s",
        "peak_rss_bytes",
        "kernels_unfused",
        "kernels_fused",
        "kernels_fused_decode",
        "peak_gflops",
        "dram_gbps",
    ] {
        assert!(v[k].is_number(), "missing numeric {k} in {v}");
    }
    // Cold and warm are measured separately: the cold run includes compilation.
    assert!(v["compile_ms"].as_f64().unwrap() > 0.0);
    assert!(v["cold_ms"].as_f64().unwrap() >= v["compile_ms"].as_f64().unwrap());
    let backends: Vec<&str> = v["compare"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["backend"].as_str().unwrap())
        .collect();
    assert_eq!(backends, ["fused", "unfused", "interpreter"]);
    for c in v["compare"].as_array().unwrap() {
        assert!(c["max_abs_diff"].as_f64().unwrap() < 1e-3);
    }
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("trace.json")).unwrap()).unwrap();
    assert!(!trace["traceEvents"].as_array().unwrap().is_empty());
    assert!(
        std::fs::read_to_string(d.join("lat.svg"))
            .unwrap()
            .contains("cold")
    );
    // --gen-len 0 is legal: generation keys are null.
    let r = bin()
        .args([
            "bench",
            "--model",
            "small",
            "--iters",
            "1",
            "--gen-len",
            "0",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(0));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(v["ttft_ms"].is_null() && v["decode_ms_per_token"].is_null());
}

/// The `value` of the `label` row of a rendered table (rows are `  label  value`).
fn table_value(out: &str, label: &str) -> Option<String> {
    out.lines().find_map(|l| {
        let (l, v) = l.trim().split_once("  ")?;
        (l.trim() == label).then(|| v.trim().to_string())
    })
}

#[test]
fn info_counts_the_parameters_stored_in_the_file() {
    // Count the elements in model.safetensors straight from its header, independently of the
    // loader: 8-byte little-endian length, then JSON with a shape per tensor.
    let bytes = std::fs::read(td("llama-tiny/model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let stored: u64 = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| {
            v["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product::<u64>()
        })
        .sum();
    assert!(stored > 0);
    let r = bin()
        .args(["info", "--model", &td("llama-tiny")])
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let out = String::from_utf8_lossy(&r.stdout);
    assert_eq!(
        table_value(&out, "parameters"),
        Some(stored.to_string()),
        "{out}"
    );
    assert_eq!(
        table_value(&out, "bytes F32"),
        Some((stored * 4).to_string())
    );
    assert_eq!(table_value(&out, "hidden").as_deref(), Some("64"), "{out}");
    assert_eq!(table_value(&out, "layers").as_deref(), Some("2"), "{out}");
    assert_eq!(
        table_value(&out, "heads / kv heads").as_deref(),
        Some("8 / 2")
    );
    assert_eq!(table_value(&out, "vocab").as_deref(), Some("128"));
    // A preset is counted from its config: xl's 1.57e9 f32 weights are never generated.
    let r = bin().args(["info", "--model", "xl"]).output().unwrap();
    assert_eq!(r.status.code(), Some(0));
    let out = String::from_utf8_lossy(&r.stdout);
    assert_eq!(
        table_value(&out, "parameters").as_deref(),
        Some("1568770048")
    );
    assert_eq!(
        table_value(&out, "bytes F32").as_deref(),
        Some("6275080192")
    );
}

#[test]
fn golden_that_does_not_fit_the_model_is_exit_2() {
    // Another model's golden (vocab 128 vs gpt2-tiny's 256): nothing was compared, so exit 2.
    let g = td("llama-tiny/golden.safetensors");
    let r = bin()
        .args([
            "golden",
            "verify",
            "--model",
            &td("gpt2-tiny"),
            "--golden",
            &g,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(
        err.contains("golden.safetensors") && err.contains("`logits`") && err.contains("256"),
        "{err}"
    );
    // A golden without `generated` names the file and the tensor.
    let golden = cranegrad_models::loader::read_golden(std::path::Path::new(&g)).unwrap();
    let p = tmp("golden-nogen").join("no-generated.safetensors");
    cranegrad_models::loader::write_golden(&p, &golden.input_ids, &golden.logits, None).unwrap();
    let r = bin()
        .args(["golden", "verify", "--model", &td("llama-tiny"), "--golden"])
        .arg(&p)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no-generated.safetensors") && err.contains("`generated`"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&r.stdout).contains("PASS"));
    // Writing such a file is refused too.
    let r = bin()
        .args(["golden", "write", "--model", "small", "--input-ids", "1,2"])
        .args(["--new-tokens", "0", "--out"])
        .arg(p.with_file_name("zero.safetensors"))
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("zero.safetensors"));
}

/// `generate`'s stdout is the whole decode of the prompt and the greedy tokens, computed here
/// by the library and decoded at once by the model's Hugging Face tokenizer: text the stream
/// held back inside a multi-byte character at the end is printed, not lost.
#[test]
fn generated_text_held_back_at_the_end_is_printed() {
    use cranegrad_models::Model;
    use cranegrad_models::generate::Generator;
    use cranegrad_models::tokenizer::Tokenizer;
    use cranegrad_runtime::{Session, SessionOptions};
    let (model_dir, prompt, new) = (td("llama-small"), "Path objects are", 12);
    let model = Model::load(&model_dir, 0).unwrap();
    let tok = Tokenizer::for_model(&model_dir, model.vocab()).unwrap();
    let mut ids = tok.encode(prompt).unwrap();
    let mut session = Session::new(SessionOptions::default()).unwrap();
    let mut g = Generator::new(&model, &mut session, 1, 64).unwrap();
    let mut logits = g.prefill(&mut session, std::slice::from_ref(&ids)).unwrap();
    for i in 0..new {
        let next = logits
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (j, &x)| if x > b.1 { (j, x) } else { b })
            .0 as i32;
        ids.push(next);
        if i + 1 < new {
            logits = g.step(&mut session, &[next]).unwrap();
        }
    }
    let mut expected = tok.decode_bytes(&ids).unwrap();
    expected.push(b'\n');
    let r = bin()
        .args(["generate", "--model", &model_dir, "--prompt", prompt])
        .args(["--max-new", &new.to_string()])
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&expected)
    );
    // The case the fix is for: the whole decode ends inside a character.
    assert!(String::from_utf8_lossy(&expected).contains('\u{FFFD}'));
}

/// Careless arguments are refused before any work, with exit 2 and a message naming the flag:
/// out-of-range counts and sizes, sampling parameters outside their domain, flags that do not
/// apply, unwritable or wrongly named outputs.
#[test]
fn careless_arguments_are_refused_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--threads", "100000"], "--threads 100000"),
        (&["run", "--threads", "0"], "--threads 0"),
        (
            &["run", "--batch-size", "99999999"],
            "--batch-size 99999999",
        ),
        (&["run", "--iters", "18446744073709551615"], "--iters"),
        (&["run", "--seq-len", "4096"], "--seq-len 4096"),
        (&["run", "chain", "--seq-len", "5"], "--seq-len applies"),
        (
            &["run", "--json", "/nonexistent-dir/x.json"],
            "--json /nonexistent-dir/x.json",
        ),
        (
            &[
                "generate",
                "--prompt",
                "hi",
                "--max-new",
                "18446744073709551615",
            ],
            "--max-new",
        ),
        (
            &["generate", "--prompt", "hi", "--temperature", "-1"],
            "--temperature -1",
        ),
        (
            &["generate", "--prompt", "hi", "--temperature", "nan"],
            "--temperature NaN",
        ),
        (&["generate", "--prompt", "hi", "--top-p", "2"], "--top-p 2"),
        (
            &["generate", "--prompt", "hi", "--repetition-penalty", "0"],
            "--repetition-penalty 0",
        ),
        (&["chat", "--top-p", "0"], "--top-p 0"),
        (&["bench", "--iters", "18446744073709551615"], "--iters"),
        (&["bench", "--threads", "0"], "--threads 0"),
        (&["bench", "--batch-size", "0"], "--batch-size 0"),
        (&["bench", "--trace", "t.json"], "--profile"),
        (&["bench", "--plot", "p.png"], ".svg"),
        (
            &["bench", "--json", "/nonexistent-dir/b.json"],
            "--json /nonexistent-dir/b.json",
        ),
    ];
    for (args, expected) in cases {
        let r = bin().args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

/// A run whose buffers exceed the machine's available memory is refused with the estimate,
/// before anything is compiled or allocated (84 GB of logits here), instead of aborting.
#[test]
fn a_run_larger_than_memory_is_refused_with_the_estimate() {
    let r = bin()
        .args([
            "run",
            "--batch-size",
            "20000",
            "--seq-len",
            "2048",
            "--iters",
            "1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(
        err.contains("this run needs") && err.contains("GiB"),
        "{err}"
    );
}

/// `--json -` writes the JSON to stdout (and the table to stderr), not a file named `-`.
#[test]
fn json_dash_is_stdout() {
    let d = tmp("dash");
    let r = bin()
        .current_dir(&d)
        .args(["run", "chain", "--iters", "1", "--json", "-"])
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["example"], "chain");
    assert!(!d.join("-").exists());
}

/// Ctrl-C during `generate` stops at the next token: the text so far stays printed, the
/// figures are reported, and the exit code is 130.
#[test]
fn ctrl_c_stops_generate_keeping_the_text() {
    use std::io::Read;
    let mut child = bin()
        .args(["generate", "--model", "medium", "--prompt", "hi"])
        .args(["--max-new", "1900", "--threads", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // The prompt is echoed before generation starts: wait for it, then interrupt.
    let mut first = [0u8; 2];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"hi");
    std::thread::sleep(std::time::Duration::from_millis(50));
    // SAFETY: signalling a child process we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("[interrupted: stopped after"), "{err}");
    assert!(err.contains("ms/token"), "the figures are reported: {err}");
    assert!(rest.ends_with(b"\n"), "the line is finished");
}

/// A line of `chat`'s stdin that is not UTF-8 is reported and skipped; the chat goes on.
#[test]
fn chat_skips_a_line_that_is_not_utf8() {
    let out = chat_with(
        &["--model", "small", "--max-new", "4", "--temperature", "0"],
        b"hello\n\xff\xfe\nworld\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("[skipped a line that is not valid UTF-8]"),
        "{err}"
    );
    assert_eq!(err.matches(" tokens, ").count(), 2, "two replies: {err}");
}

/// A generation with no decode step reports no decode figure (`-`, and null in JSON), not 0.
#[test]
fn no_decode_step_means_no_decode_figure() {
    let d = tmp("nodecode");
    let j = d.join("g.json");
    let r = bin()
        .args([
            "generate",
            "--model",
            "small",
            "--prompt",
            "hi",
            "--max-new",
            "1",
        ])
        .arg("--json")
        .arg(&j)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(0), "{err}");
    assert!(
        err.contains("decode - ms/token") && err.contains("| - tokens/s"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
    assert!(
        v["decode_ms_per_token"].is_null() && v["tokens_per_s"].is_null(),
        "{v}"
    );
}

/// On a terminal, control bytes in the text (here an ESC sequence in the echoed prompt) are
/// shown escaped, never sent raw; through a pipe the bytes are unchanged. The terminal is a
/// pseudo-terminal from util-linux's `script`.
#[test]
fn control_bytes_are_escaped_on_a_terminal_only() {
    let bin_path = env!("CARGO_BIN_EXE_cranegrad");
    let cmd =
        format!("{bin_path} generate --model small --prompt $(printf 'a\\033[31mb') --max-new 2");
    let Ok(r) = Command::new("script")
        .env("CRANEGRAD_NO_DISK_CACHE", "1")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env("CRANEGRAD_VERIFY", "1")
        .output()
    else {
        panic!("util-linux `script` is needed for the pseudo-terminal (package bsdutils)");
    };
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
    assert!(
        r.stdout.windows(8).any(|w| w == b"a\\x1b[31"),
        "{:?}",
        String::from_utf8_lossy(&r.stdout)
    );
    // (The spinner draws with its own escape sequences; the prompt's must not reach it raw.)
    assert!(
        !r.stdout.windows(5).any(|w| w == b"\x1b[31m"),
        "the prompt's raw ESC [31m reached the terminal"
    );
    let piped = bin()
        .args([
            "generate",
            "--model",
            "small",
            "--prompt",
            "a\x1b[31mb",
            "--max-new",
            "2",
        ])
        .output()
        .unwrap();
    assert!(piped.stdout.starts_with(b"a\x1b[31mb"));
}

/// A full context in chat drops the oldest turns with a notice and goes on; a line that can
/// never fit is skipped; a --max-new that leaves no room is refused at start.
#[test]
fn chat_drops_old_turns_when_the_context_is_full() {
    let out = chat_with(
        &[
            "--model",
            "small",
            "--ctx",
            "24",
            "--max-new",
            "6",
            "--temperature",
            "0",
        ],
        b"hello there\nsecond line\nthis line is far too long to fit at all\nfourth\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("full: dropped the oldest"), "{err}");
    assert!(err.contains("[skipped a line: its prompt of"), "{err}");
    assert_eq!(err.matches(" tokens, ").count(), 3, "three replies: {err}");
    let r = bin()
        .args(["chat", "--model", "small", "--ctx", "16", "--max-new", "16"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--max-new 16 leaves no room"));
}

/// Ctrl-C during `bench` stops the timed loops: the table covers what ran, and the exit code
/// is 130.
#[test]
fn ctrl_c_stops_bench_with_the_figures_so_far() {
    let child = bin()
        .args([
            "bench",
            "--model",
            "small",
            "--gen-len",
            "0",
            "--iters",
            "1000000",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: signalling a child process we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(130), "{so}{se}");
    assert!(se.contains("[interrupted"), "{se}");
    if se.contains("the figures above") {
        assert!(so.contains("warm forward"), "{so}");
    }
}

/// `--stop` ends generation where the text first contains the string, which is not printed;
/// the short flags and llama.cpp's aliases (`-m -p -n -t -s --temp --repeat-penalty
/// --n-predict`) mean what the long ones do.
#[test]
fn stop_strings_and_short_flags() {
    let model = td("llama-tiny");
    let full = bin()
        .args([
            "generate",
            "--model",
            &model,
            "--prompt",
            "hello",
            "--max-new",
            "40",
        ])
        .output()
        .unwrap();
    assert_eq!(full.status.code(), Some(0));
    let text = String::from_utf8(full.stdout).unwrap();
    // A stop string from the middle of the greedy continuation.
    let continuation = &text["hello".len()..text.len() - 1];
    let (cut, stop) = (
        continuation.len() / 2,
        &continuation[continuation.len() / 2..continuation.len() / 2 + 3],
    );
    let first = continuation.find(stop).unwrap();
    assert!(first <= cut);
    let stopped = bin()
        .args([
            "generate",
            "-m",
            &model,
            "-p",
            "hello",
            "--n-predict",
            "40",
            "-t",
            "1",
        ])
        .args([
            "-s",
            "0",
            "--temp",
            "0",
            "--repeat-penalty",
            "1",
            "--stop",
            stop,
        ])
        .output()
        .unwrap();
    assert_eq!(
        stopped.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert_eq!(
        String::from_utf8(stopped.stdout).unwrap(),
        format!("hello{}\n", &continuation[..first])
    );
}

/// `info` prints readable values, the parameter count `run` prints, and a missing model in
/// the words `run` uses, once.
#[test]
fn info_is_readable_and_agrees_with_run() {
    let info = bin().args(["info", "-m", "small"]).output().unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    let params = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("parameters"))
        .map(str::trim)
        .expect("a parameters row")
        .to_string();
    let run = bin().args(["run", "--iters", "1"]).output().unwrap();
    let run_text = String::from_utf8_lossy(&run.stdout);
    assert!(
        run_text.contains(&format!("{params} parameters")),
        "{params} vs {run_text}"
    );
    for debug_text in ["None", "Some(", "{ ", "[]"] {
        assert!(!text.contains(debug_text), "{debug_text:?} in {text}");
    }
    let tied = bin()
        .args(["info", "-m", &td("llama3-tied")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&tied.stdout).contains("llama3 scaling: factor 8"));
    let missing = bin().args(["info", "-m", "smal"]).output().unwrap();
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(
        err.matches("no such file or folder, and not a preset")
            .count(),
        1,
        "{err}"
    );
}

/// On a terminal, `generate` shows what it loads and a one-line summary on stderr; piped,
/// stderr holds only the figures.
#[test]
fn loading_feedback_on_a_terminal_only() {
    let bin_path = env!("CARGO_BIN_EXE_cranegrad");
    let cmd = format!("{bin_path} generate -m small -p hi -n 2");
    let r = Command::new("script")
        .env("CRANEGRAD_NO_DISK_CACHE", "1")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .output()
        .expect("util-linux `script` for the pseudo-terminal (package bsdutils)");
    let tty = String::from_utf8_lossy(&r.stdout);
    assert!(
        tty.contains("reading small") && tty.contains("135488 parameters"),
        "{tty}"
    );
    let piped = bin()
        .args(["generate", "-m", "small", "-p", "hi", "-n", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&piped.stderr);
    assert!(!err.contains("reading") && !err.contains("loaded"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Chat's commands: /help lists them, /stats reports the last reply, /save writes the
/// conversation as role/content messages, /clear starts over, /bye ends the chat (the line
/// after it is not answered); --json appends one object per turn.
#[test]
fn chat_commands_and_turn_log() {
    let d = tmp("chatcmd");
    let (saved, log) = (d.join("conv.json"), d.join("turns.jsonl"));
    let input = format!(
        "/help\nhello\n/stats\n/save {}\n/clear\n/stats\n/nope\n/bye\nnot answered\n",
        saved.display()
    );
    let out = chat_with(
        &[
            "-m",
            "small",
            "-n",
            "4",
            "--temp",
            "0",
            "--json",
            &log.to_string_lossy(),
        ],
        input.as_bytes(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("/save FILE"), "{err}");
    assert!(
        err.contains("[2 message(s) in the context,") && err.contains("last reply 4 tokens"),
        "{err}"
    );
    assert!(
        err.contains("[new conversation]") && err.contains("[no reply yet]"),
        "{err}"
    );
    assert!(err.contains("[unknown command /nope"), "{err}");
    let replies = err
        .lines()
        .filter(|l| l.contains(" tokens, ") && !l.contains("message(s)"))
        .count();
    assert_eq!(replies, 1, "one reply: {err}");
    let msgs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(msgs[0]["content"], "hello");
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs.as_array().unwrap().len(), 2);
    let turns = std::fs::read_to_string(&log).unwrap();
    let row: serde_json::Value = serde_json::from_str(turns.lines().next().unwrap()).unwrap();
    assert_eq!(turns.lines().count(), 1);
    assert_eq!(row["reply_tokens"], 4);
    assert!(
        row["ttft_ms"].is_number() && row["prompt_tokens"].as_u64() > Some(0),
        "{row}"
    );
}

/// On a terminal, chat reads through a line editor: a `>>> ` prompt, and history kept in the
/// user's data folder (`$XDG_DATA_HOME/cranegrad/chat_history`) for the next session.
#[test]
fn chat_on_a_terminal_has_a_prompt_and_history() {
    use std::io::Write;
    let data = tmp("chatdata");
    let bin_path = env!("CARGO_BIN_EXE_cranegrad");
    let mut child = Command::new("script")
        .env("CRANEGRAD_NO_DISK_CACHE", "1")
        .args([
            "-q",
            "-e",
            "-c",
            &format!("{bin_path} chat -m small -n 3 --temp 0"),
            "/dev/null",
        ])
        .env("XDG_DATA_HOME", &data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux `script` for the pseudo-terminal (package bsdutils)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello\n/bye\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{tty}");
    assert!(tty.contains(">>> "), "{tty}");
    assert!(tty.contains("[3 tokens, "), "{tty}");
    let history = std::fs::read_to_string(data.join("cranegrad/chat_history")).unwrap();
    assert!(history.lines().any(|l| l == "hello"), "{history}");
}
