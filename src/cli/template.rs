//! `cranegrad template`: a conversation rendered with a model's chat template (or a template
//! file), printed exactly as the model would be prompted.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Map, Value};

use cranegrad_models::chat_template::ChatTemplate;

use super::tokenizer_load;

/// Options of `cranegrad template`.
#[derive(Args, Debug)]
pub struct TemplateArgs {
    /// A model whose files carry a chat template (GGUF or Hugging Face folder).
    #[arg(
        long,
        short = 'm',
        required_unless_present = "template",
        conflicts_with = "template"
    )]
    model: Option<String>,
    /// A Jinja chat template file instead of a model's.
    #[arg(long)]
    template: Option<PathBuf>,
    /// A JSON list of {"role", "content"} messages (`-` reads stdin).
    #[arg(long)]
    messages: PathBuf,
    /// Leave out the prompt for the assistant's turn at the end.
    #[arg(long)]
    no_generation_prompt: bool,
    /// `bos_token` as the template sees it (default: the model's, empty for a bare file).
    #[arg(long)]
    bos_token: Option<String>,
    /// `eos_token` as the template sees it (default: the model's, empty for a bare file).
    #[arg(long)]
    eos_token: Option<String>,
    /// An extra template variable, NAME=VALUE (VALUE is read as JSON when it parses, else as
    /// a string), e.g. `--var date_string="26 Jul 2024"`; repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
}

/// Runs the command.
pub fn template(a: TemplateArgs) -> anyhow::Result<ExitCode> {
    let mut extra = Map::new();
    for v in &a.vars {
        let Some((name, value)) = v.split_once('=') else {
            bail!("--var {v}: expected NAME=VALUE");
        };
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            bail!("--var {v}: `{name}` is not a template variable name");
        }
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::from(value));
        extra.insert(name.to_string(), value);
    }
    let text = if a.messages.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading messages from stdin")?
    } else {
        std::fs::read_to_string(&a.messages)
            .with_context(|| format!("reading {}", a.messages.display()))?
    };
    let messages: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: invalid JSON", a.messages.display()))?;
    check_messages(&messages).with_context(|| format!("{}", a.messages.display()))?;
    let template = match (&a.model, &a.template) {
        (_, Some(file)) => ChatTemplate::from_file(
            file,
            a.bos_token.as_deref().unwrap_or(""),
            a.eos_token.as_deref().unwrap_or(""),
        )?,
        (Some(model), None) => {
            let tok = tokenizer_load::load(model, None)?;
            let Some(t) = tok.chat_template() else {
                bail!("{model}: the model's files carry no chat template (give --template FILE)");
            };
            ChatTemplate::new(
                t.source(),
                &t.origin,
                a.bos_token.as_deref().unwrap_or(&t.bos_token),
                a.eos_token.as_deref().unwrap_or(&t.eos_token),
            )?
        }
        (None, None) => bail!("give --model M or --template FILE"),
    };
    let rendered = template.render_json(&messages, !a.no_generation_prompt, &extra)?;
    let mut out = std::io::stdout().lock();
    out.write_all(rendered.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Messages must be a list of objects with string `role` (and `content`, when present,
/// a string or a list of parts): what every template indexes.
fn check_messages(messages: &Value) -> anyhow::Result<()> {
    let Value::Array(list) = messages else {
        bail!("messages must be a JSON list of {{\"role\", \"content\"}} objects");
    };
    for (i, m) in list.iter().enumerate() {
        let Value::Object(o) = m else {
            bail!("message {i} is not an object");
        };
        if !o.get("role").is_some_and(Value::is_string) {
            bail!("message {i} has no string `role`");
        }
        if let Some(c) = o.get("content")
            && !(c.is_string() || c.is_array() || c.is_null())
        {
            bail!("message {i}: `content` must be a string or a list of parts");
        }
    }
    Ok(())
}
