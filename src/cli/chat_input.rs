//! Where chat's lines come from. On a terminal: a line editor (rustyline) with a `>>> `
//! prompt, editing keys, and history kept in the user's data folder across sessions; a line
//! ending in `\` continues on the next. From a pipe: one line per turn, as bytes (a line that
//! is not UTF-8 is the caller's to report).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use rustyline::error::ReadlineError;

/// The next thing the user gave.
pub enum Entry {
    /// A line (without its newline); not UTF-8 when it came from a pipe with other bytes.
    Line(Vec<u8>),
    /// The user pressed Ctrl-C at the prompt: nothing to do.
    Cancelled,
    /// End of input (Ctrl-D, or the pipe closed).
    End,
}

/// Chat's input.
pub enum ChatInput {
    /// A terminal, through the line editor.
    Terminal {
        /// The editor.
        editor: Box<rustyline::DefaultEditor>,
        /// Where its history is kept, if a data folder is known.
        history: Option<PathBuf>,
    },
    /// A pipe or file.
    Pipe(std::io::StdinLock<'static>),
}

/// `$XDG_DATA_HOME/cranegrad/chat_history`, or `~/.local/share/cranegrad/chat_history`.
fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("cranegrad").join("chat_history"))
}

impl ChatInput {
    /// The editor when stdin is a terminal (falling back to plain lines if it cannot start),
    /// plain lines otherwise.
    pub fn open() -> ChatInput {
        if std::io::stdin().is_terminal()
            && let Ok(mut editor) = rustyline::DefaultEditor::new()
        {
            let history = history_path();
            if let Some(h) = &history {
                // A first session has no history yet: not an error.
                let _ = editor.load_history(h);
            }
            return ChatInput::Terminal {
                editor: Box::new(editor),
                history,
            };
        }
        ChatInput::Pipe(std::io::stdin().lock())
    }

    /// The next entry.
    pub fn next(&mut self) -> std::io::Result<Entry> {
        match self {
            ChatInput::Pipe(input) => {
                let mut raw = Vec::new();
                if input.read_until(b'\n', &mut raw)? == 0 {
                    return Ok(Entry::End);
                }
                while matches!(raw.last(), Some(b'\n' | b'\r')) {
                    raw.pop();
                }
                Ok(Entry::Line(raw))
            }
            ChatInput::Terminal { editor, history } => {
                let mut text = String::new();
                let mut prompt = ">>> ";
                loop {
                    match editor.readline(prompt) {
                        Ok(line) => {
                            if let Some(head) = line.strip_suffix('\\') {
                                text.push_str(head);
                                text.push('\n');
                                prompt = "... ";
                                continue;
                            }
                            text.push_str(&line);
                            if !text.trim().is_empty() {
                                let _ = editor.add_history_entry(text.as_str());
                                if let Some(h) = history.as_ref() {
                                    if let Some(dir) = h.parent() {
                                        let _ = std::fs::create_dir_all(dir);
                                    }
                                    let _ = editor.save_history(h);
                                }
                            }
                            return Ok(Entry::Line(text.into_bytes()));
                        }
                        Err(ReadlineError::Interrupted) => return Ok(Entry::Cancelled),
                        // Ctrl-D: end on a fresh line, so the shell's prompt is not glued on.
                        Err(ReadlineError::Eof) => {
                            println!();
                            return Ok(Entry::End);
                        }
                        Err(e) => return Err(std::io::Error::other(e)),
                    }
                }
            }
        }
    }
}
