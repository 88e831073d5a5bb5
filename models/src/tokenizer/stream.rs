//! Streaming detokenization: the text of each generated token as soon as it is whole.

use super::Tokenizer;
use crate::ModelError;

/// Streaming detokenizer: the new text of each generated token, held back while it ends in
/// an incomplete character (a multi-byte character split over tokens) and decoded in context,
/// so decoders that treat a leading space or byte pieces specially print what a whole decode
/// would.
pub struct TextStream<'t> {
    tok: &'t Tokenizer,
    /// Recent ids, decoded together (a short window keeps each step cheap).
    ids: Vec<i32>,
    /// Bytes of `ids`' decode already printed.
    printed: usize,
}

/// Ids kept as context once the window is trimmed.
const STREAM_CONTEXT: usize = 8;

impl<'t> TextStream<'t> {
    /// A stream continuing after `context` (the prompt), which is not printed again.
    pub fn new(tok: &'t Tokenizer, context: &[i32]) -> Result<TextStream<'t>, ModelError> {
        let ids = context[context.len().saturating_sub(STREAM_CONTEXT)..].to_vec();
        let printed = tok.decode_bytes(&ids)?.len();
        Ok(TextStream { tok, ids, printed })
    }

    /// The printable bytes `id` adds (possibly none yet).
    pub fn push(&mut self, id: i32) -> Result<Vec<u8>, ModelError> {
        if self.tok.is_bytes() {
            return self.tok.decode_bytes(&[id]);
        }
        self.ids.push(id);
        let text = self.tok.decode_bytes(&self.ids)?;
        if ends_mid_character(&text) || text.len() < self.printed {
            return Ok(Vec::new());
        }
        let new = text[self.printed..].to_vec();
        self.printed = text.len();
        if self.ids.len() > 2 * STREAM_CONTEXT {
            self.ids.drain(..self.ids.len() - STREAM_CONTEXT);
            self.printed = self.tok.decode_bytes(&self.ids)?.len();
        }
        Ok(new)
    }

    /// What the stream still holds back, once generation has ended: the rest of the whole
    /// decode, with an incomplete character at its end as U+FFFD (what a whole decode prints).
    pub fn finish(&mut self) -> Result<Vec<u8>, ModelError> {
        if self.tok.is_bytes() {
            return Ok(Vec::new());
        }
        let text = self.tok.decode_bytes(&self.ids)?;
        let rest = text.get(self.printed..).unwrap_or_default().to_vec();
        self.printed = text.len();
        Ok(rest)
    }
}

/// Whether decoded text ends inside a character: a replacement character (the decoder met an
/// incomplete sequence) or raw bytes that do not yet form a whole UTF-8 character.
fn ends_mid_character(text: &[u8]) -> bool {
    if text.ends_with("\u{FFFD}".as_bytes()) {
        return true;
    }
    match std::str::from_utf8(&text[text.len().saturating_sub(4)..]) {
        Ok(_) => false,
        Err(e) => e.error_len().is_none(),
    }
}
