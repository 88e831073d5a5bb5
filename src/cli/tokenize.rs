//! `cranegrad tokenize` and `cranegrad detokenize`: text to ids and back with a model's own
//! tokenizer, printed as llama.cpp's `llama-tokenize` prints them.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use super::{text_out, tokenizer_load};

/// Options of `cranegrad tokenize`.
#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// A preset, a Hugging Face folder, a .gguf file (a vocabulary-only GGUF will do).
    #[arg(long, short = 'm')]
    model: String,
    /// The text to tokenize.
    #[arg(conflicts_with_all = ["prompt", "prompt_file"])]
    text: Option<String>,
    /// The text to tokenize (as llama-tokenize's -p).
    #[arg(long, short = 'p', conflicts_with = "prompt_file")]
    prompt: Option<String>,
    /// Read the text from a file (`-` reads stdin); taken as it is, newlines included.
    #[arg(long, short = 'f')]
    prompt_file: Option<PathBuf>,
    /// Add no BOS or EOS, even where the model's tokenizer would.
    #[arg(long)]
    no_bos: bool,
    /// Print only the ids, as a list.
    #[arg(long)]
    ids_only: bool,
    /// A tokenizer.json or GGUF vocabulary to use instead of the model's own.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

/// Runs `tokenize`.
pub fn tokenize(a: TokenizeArgs) -> anyhow::Result<ExitCode> {
    let text = match (&a.text, &a.prompt, &a.prompt_file) {
        (Some(t), _, _) | (None, Some(t), _) => t.clone(),
        (None, None, Some(f)) if f.as_os_str() == "-" => {
            std::io::read_to_string(std::io::stdin()).context("reading the text from stdin")?
        }
        (None, None, Some(f)) => std::fs::read(f)
            .with_context(|| format!("reading {}", f.display()))
            .and_then(|b| {
                String::from_utf8(b).with_context(|| format!("{}: not UTF-8 text", f.display()))
            })?,
        (None, None, None) => bail!("give the text: TEXT, --prompt TEXT or --prompt-file FILE"),
    };
    let tok = tokenizer_load::load(&a.model, a.tokenizer.as_deref())?;
    let ids = if a.no_bos {
        tok.encode(&text)?
    } else {
        tok.encode_prompt(&text)?
    };
    let mut out = std::io::stdout().lock();
    if a.ids_only {
        let list: Vec<String> = ids.iter().map(i32::to_string).collect();
        writeln!(out, "[{}]", list.join(", "))?;
    } else {
        for &id in &ids {
            let piece = tok.piece(id)?;
            // One line per token: newlines and tabs in a piece are shown escaped.
            let shown = String::from_utf8_lossy(&text_out::escape_controls(&piece))
                .replace('\n', "\\n")
                .replace('\t', "\\t");
            writeln!(out, "{id:>6} -> '{shown}'")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Options of `cranegrad detokenize`.
#[derive(Args, Debug)]
pub struct DetokenizeArgs {
    /// A preset, a Hugging Face folder, a .gguf file (a vocabulary-only GGUF will do).
    #[arg(long, short = 'm')]
    model: String,
    /// Token ids (commas and brackets are allowed, so `tokenize --ids-only` output pastes).
    #[arg(required = true, num_args = 1.., allow_negative_numbers = true)]
    ids: Vec<String>,
    /// A tokenizer.json or GGUF vocabulary to use instead of the model's own.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

/// Runs `detokenize`.
pub fn detokenize(a: DetokenizeArgs) -> anyhow::Result<ExitCode> {
    let mut ids = Vec::new();
    for arg in &a.ids {
        for word in arg
            .split(|c: char| c == ',' || c == '[' || c == ']' || c.is_whitespace())
            .filter(|w| !w.is_empty())
        {
            let id: i32 = word
                .parse()
                .with_context(|| format!("`{word}` is not a token id"))?;
            ids.push(id);
        }
    }
    let tok = tokenizer_load::load(&a.model, a.tokenizer.as_deref())?;
    let text = tok.decode_bytes(&ids)?;
    // Exactly the text when piped; on a terminal control bytes escaped and a final newline.
    let mut out = text_out::TextOut::new();
    out.write(&text)?;
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        out.newline()?;
    }
    Ok(ExitCode::SUCCESS)
}
