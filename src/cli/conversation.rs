//! A chat conversation as the model sees it: the messages rendered by the model's chat
//! template (or, without one, the raw lines one after another), turned into the token ids the
//! KV cache should hold, so each turn feeds only what differs from what the cache has.

use cranegrad_models::ModelError;
use cranegrad_models::chat_template::{ChatMessage, ChatTemplate};
use cranegrad_models::tokenizer::Tokenizer;

/// The messages of a chat and how they become a prompt.
pub struct Conversation<'t> {
    tok: &'t Tokenizer,
    template: Option<&'t ChatTemplate>,
    /// The system prompt, rendered first.
    pub system: Option<String>,
    /// User and assistant turns, oldest first.
    pub turns: Vec<ChatMessage>,
}

impl<'t> Conversation<'t> {
    /// A conversation rendered with `template`, or raw lines when it is `None`.
    pub fn new(
        tok: &'t Tokenizer,
        template: Option<&'t ChatTemplate>,
        system: Option<String>,
    ) -> Conversation<'t> {
        Conversation {
            tok,
            template,
            system,
            turns: Vec::new(),
        }
    }

    /// Every message, the system prompt first: what `/save` writes and the template renders.
    pub fn messages(&self) -> Vec<ChatMessage> {
        let mut all: Vec<ChatMessage> = self
            .system
            .iter()
            .map(|s| ChatMessage::new("system", s))
            .collect();
        all.extend(self.turns.iter().cloned());
        all
    }

    /// The ids the model reads before replying to `user` after the turns so far: the
    /// template's rendering with the assistant's prompt at the end (its special tokens written
    /// in the text, so no BOS is added on top), or the raw text with the model's BOS.
    pub fn prompt_ids(&self, user: &str) -> Result<Vec<i32>, ModelError> {
        let mut all = self.messages();
        all.push(ChatMessage::new("user", user));
        match self.template {
            Some(t) => self.tok.encode(&t.render(&all, true)?),
            None => {
                let mut text = String::new();
                for m in &all {
                    text.push_str(&m.content);
                    // A user line ends with the newline typed; a reply is as generated.
                    if m.role != "assistant" {
                        text.push('\n');
                    }
                }
                self.tok.encode_prompt(&text)
            }
        }
    }

    /// Drops the oldest user turn and the reply to it; false when there is none.
    pub fn drop_oldest_turn(&mut self) -> bool {
        let Some(next_user) = self.turns.iter().skip(1).position(|m| m.role == "user") else {
            let had = !self.turns.is_empty();
            self.turns.clear();
            return had;
        };
        self.turns.drain(..=next_user);
        true
    }
}

/// Length of the common prefix of two id lists: what the KV cache can keep.
pub fn common_prefix(a: &[i32], b: &[i32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
