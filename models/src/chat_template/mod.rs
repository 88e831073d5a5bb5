//! Chat templates as model files carry them (GGUF `tokenizer.chat_template`, a Hugging Face
//! folder's `chat_template.jinja` or `tokenizer_config.json`), rendered the way transformers'
//! `apply_chat_template` renders them: Jinja with `trim_blocks` and `lstrip_blocks`, loop
//! controls, Python's string and dict methods, `raise_exception`, `strftime_now` and Python's
//! `json.dumps` as `tojson`.

mod py_json;
mod py_str;
mod strftime;

use std::path::Path;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::ModelError;

pub use py_json::python_float;
pub use strftime::strftime;

/// Instructions a template may run before it is stopped (a loop over `range(10**9)` in a
/// hostile template ends with an error instead of hanging; real templates use thousands).
const FUEL: u64 = 50_000_000;
/// Largest rendered prompt accepted, in bytes (a template can multiply strings).
const MAX_OUTPUT: usize = 64 << 20;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message.
    pub fn new(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template with the special-token strings it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    /// Where the template came from, for messages (`tokenizer.chat_template of x.gguf`).
    pub origin: String,
    /// `bos_token` as the template sees it.
    pub bos_token: String,
    /// `eos_token` as the template sees it.
    pub eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("bytes", &self.source.len())
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error names `origin` and the line.
    pub fn new(
        source: &str,
        origin: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, ModelError> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ModelError::Input(format!("chat template syntax: {e}")))?;
        env.set_syntax(syntax);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(py_str::unknown_method);
        env.add_filter("tojson", py_json::tojson);
        env.add_filter("trim", |s: String, chars: Option<String>| {
            py_str::trim(&s, chars.as_deref())
        });
        env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |format: String| {
            strftime::strftime_now(&format)
        });
        env.add_template_owned("chat_template", source.to_string())
            .map_err(|e| {
                ModelError::Input(format!(
                    "{origin}: not a valid chat template: {}",
                    describe(&e)
                ))
            })?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            origin: origin.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The template's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` (a JSON list of message objects, passed to the template as they
    /// are), with a prompt for the assistant's turn at the end when `add_generation_prompt`;
    /// `extra` adds template variables (`date_string`, `tools`...).
    pub fn render_json(
        &self,
        messages: &Json,
        add_generation_prompt: bool,
        extra: &Map<String, Json>,
    ) -> Result<String, ModelError> {
        // transformers' variables: `tools` and `documents` are None unless given.
        let mut ctx = Map::new();
        ctx.insert("tools".into(), Json::Null);
        ctx.insert("documents".into(), Json::Null);
        for (k, v) in extra {
            ctx.insert(k.clone(), v.clone());
        }
        ctx.insert("messages".into(), without_nulls(messages));
        ctx.insert("add_generation_prompt".into(), add_generation_prompt.into());
        // A model without the token (Qwen's `bos_token: null`) leaves it undefined, as there.
        for (name, text) in [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
        ] {
            if !text.is_empty() && !extra.contains_key(name) {
                ctx.insert(name.into(), text.clone().into());
            }
        }
        let tmpl = self
            .env
            .get_template("chat_template")
            .map_err(|e| self.error(&e))?;
        let out = tmpl
            .render(Value::from(minijinja::value::Serde(&ctx)))
            .map_err(|e| self.error(&e))?;
        if out.len() > MAX_OUTPUT {
            return Err(ModelError::Input(format!(
                "{}: the rendered prompt is {} bytes, more than the {MAX_OUTPUT} accepted",
                self.origin,
                out.len()
            )));
        }
        Ok(out)
    }

    /// Renders a conversation.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let json = serde_json::to_value(messages)
            .map_err(|e| ModelError::Input(format!("chat messages: {e}")))?;
        self.render_json(&json, add_generation_prompt, &Map::new())
    }

    fn error(&self, e: &Error) -> ModelError {
        ModelError::Input(format!("{}: {}", self.origin, describe(e)))
    }

    /// The template of a Hugging Face folder: `chat_template.jinja`, else `chat_template` in
    /// `tokenizer_config.json` (a string, or a list of named templates of which `default` is
    /// used); `None` when the folder has neither.
    pub fn from_hf_folder(dir: &Path) -> Result<Option<ChatTemplate>, ModelError> {
        let config = read_tokenizer_config(dir)?;
        let token = |key: &str| config.as_ref().and_then(|c| special_token_text(c.get(key)));
        let bos = token("bos_token").unwrap_or_default();
        let eos = token("eos_token").unwrap_or_default();
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let source = read_text(&jinja)?;
            return ChatTemplate::new(&source, &jinja.display().to_string(), &bos, &eos).map(Some);
        }
        let Some(config) = config else {
            return Ok(None);
        };
        let origin = format!(
            "{}: `chat_template`",
            dir.join("tokenizer_config.json").display()
        );
        let source = match config.get("chat_template") {
            None | Some(Json::Null) => return Ok(None),
            Some(Json::String(s)) => s.clone(),
            Some(Json::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
                .and_then(|t| t.get("template").and_then(Json::as_str))
                .map(str::to_string)
                .ok_or_else(|| {
                    ModelError::Input(format!(
                        "{origin} is a list of templates without one named `default`"
                    ))
                })?,
            Some(_) => {
                return Err(ModelError::Input(format!(
                    "{origin} must be a string or a list of {{name, template}}"
                )));
            }
        };
        ChatTemplate::new(&source, &origin, &bos, &eos).map(Some)
    }

    /// A template file given by hand (`--template FILE.jinja`).
    pub fn from_file(path: &Path, bos: &str, eos: &str) -> Result<ChatTemplate, ModelError> {
        let source = read_text(path)?;
        ChatTemplate::new(&source, &path.display().to_string(), bos, eos)
    }
}

/// Messages with their `null`-valued keys dropped, as transformers passes them (so a template
/// testing `message.tool_calls is defined` sees what it sees there).
fn without_nulls(messages: &Json) -> Json {
    match messages {
        Json::Array(list) => Json::Array(
            list.iter()
                .map(|m| match m {
                    Json::Object(o) => Json::Object(
                        o.iter()
                            .filter(|(_, v)| !v.is_null())
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    ),
                    other => other.clone(),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `tokenizer_config.json` of a folder, if present.
pub fn read_tokenizer_config(dir: &Path) -> Result<Option<Map<String, Json>>, ModelError> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = read_text(&path)?;
    match serde_json::from_str::<Json>(&text) {
        Ok(Json::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(ModelError::Input(format!(
            "{}: must be a JSON object",
            path.display()
        ))),
        Err(e) => Err(ModelError::Input(format!(
            "{}: invalid JSON: {e}",
            path.display()
        ))),
    }
}

/// A special token in `tokenizer_config.json`: a string, or an AddedToken object's `content`.
pub fn special_token_text(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

fn read_text(path: &Path) -> Result<String, ModelError> {
    crate::loader::file::check_regular(path)?;
    std::fs::read_to_string(path).map_err(|e| ModelError::Input(format!("{}: {e}", path.display())))
}

/// A template error as one line: the message, then where (template line) when known.
fn describe(e: &Error) -> String {
    let what = match e.kind() {
        // `raise_exception("...")` is the template's own message: show it as written.
        ErrorKind::InvalidOperation => e.detail().unwrap_or("invalid operation").to_string(),
        ErrorKind::OutOfFuel => "the template ran too long (a runaway loop?)".to_string(),
        _ => e.to_string(),
    };
    match e.line() {
        Some(line) if !what.contains("line ") => format!("{what} (template line {line})"),
        _ => what,
    }
}
