//! Chat templates render exactly as Hugging Face's `apply_chat_template` does: real templates
//! of several model families, conversations with a system prompt, newlines and non-ASCII
//! text, and the errors the templates raise. Expected outputs were written by transformers
//! (`scripts/make_template_fixtures.py`).

use std::path::{Path, PathBuf};

use serde_json::Value;

use cranegrad_models::chat_template::ChatTemplate;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/templates")
}

#[test]
fn templates_render_as_transformers_renders_them() {
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap();
    assert!(cases.len() >= 100, "{} cases", cases.len());
    let mut failures = Vec::new();
    let mut errors_checked = 0;
    for case in &cases {
        let s = |k: &str| case[k].as_str().unwrap_or_default().to_string();
        let name = format!(
            "{} / {} / gen={}",
            s("template"),
            s("messages"),
            case["add_generation_prompt"]
        );
        let t =
            ChatTemplate::from_file(&dir().join(s("template")), &s("bos_token"), &s("eos_token"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        let messages: Value =
            serde_json::from_str(&std::fs::read_to_string(dir().join(s("messages"))).unwrap())
                .unwrap();
        let extra = case["extra"].as_object().cloned().unwrap_or_default();
        let got = t.render_json(
            &messages,
            case["add_generation_prompt"].as_bool().unwrap(),
            &extra,
        );
        match (case["expected"].as_str(), case["error"].as_str()) {
            (Some(file), _) => {
                let want = std::fs::read_to_string(dir().join(file)).unwrap();
                match got {
                    Ok(g) if g == want => {}
                    Ok(g) => failures.push(format!("{name}:\n  want {want:?}\n  got  {g:?}")),
                    Err(e) => failures.push(format!("{name}: {e}")),
                }
            }
            (None, Some(err)) => {
                errors_checked += 1;
                match got {
                    Err(e) if e.to_string().contains(err) => {}
                    other => {
                        failures.push(format!("{name}: expected error {err:?}, got {other:?}"))
                    }
                }
            }
            _ => panic!("{name}: case has neither an expected output nor an error"),
        }
    }
    assert!(errors_checked > 0);
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn a_syntax_error_names_the_template_and_line() {
    let e = ChatTemplate::new(
        "{% for m in messages %}\n{{ m.content }",
        "my.jinja",
        "",
        "",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("my.jinja") && e.contains("line"), "{e}");
}

#[test]
fn a_runaway_template_stops_with_an_error() {
    let t = ChatTemplate::new(
        "{% for i in range(100000000) %}x{% endfor %}",
        "loop.jinja",
        "",
        "",
    )
    .unwrap();
    let e = t.render(&[], true).unwrap_err().to_string();
    assert!(e.contains("loop.jinja"), "{e}");
}

#[test]
fn tojson_writes_what_python_json_dumps_writes() {
    let t = ChatTemplate::new(
        "{{ messages | tojson }}|{{ {'a': [1, 2.5, none, true], 'b': '<é>\"'} | tojson(indent=2) }}",
        "t",
        "",
        "",
    )
    .unwrap();
    let got = t
        .render_json(
            &serde_json::json!([{"role": "user", "content": "x"}]),
            false,
            &Default::default(),
        )
        .unwrap();
    assert_eq!(
        got,
        "[{\"role\": \"user\", \"content\": \"x\"}]|{\n  \"a\": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n  \"b\": \"<é>\\\"\"\n}"
    );
}
