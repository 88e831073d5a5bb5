//! Hugging Face `tokenizer.json` files, through the `tokenizers` crate.

use std::path::Path;

use crate::ModelError;

/// Parses a `tokenizer.json` text; `origin` names it in messages.
pub fn parse(text: &str, origin: &str) -> Result<tokenizers::Tokenizer, ModelError> {
    let bad = |msg: String| ModelError::Input(format!("{origin}: {msg}"));
    // Syntax first, so a truncated or hand-broken file gets serde's line and column.
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| bad(format!("invalid JSON: {e}")))?;
    // The tokenizers crate panics on some malformed sections (its decoder deserializer
    // `expect`s), so a bad file would take the whole process down instead of failing.
    std::panic::catch_unwind(|| text.parse::<tokenizers::Tokenizer>())
        .map_err(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown reason");
            bad(format!(
                "not a valid tokenizer.json (the tokenizers crate gave up: {why})"
            ))
        })?
        .map_err(|e| bad(format!("not a valid tokenizer.json: {e}")))
}

/// Reads and parses a `tokenizer.json` file.
pub fn load(path: &Path) -> Result<tokenizers::Tokenizer, ModelError> {
    crate::loader::file::check_regular(path)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| ModelError::Input(format!("{}: {e}", path.display())))?;
    parse(&text, &path.display().to_string())
}
