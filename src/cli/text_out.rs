//! Generated text on its way to stdout. A terminal interprets control bytes (a byte-level
//! model's raw output may hold ESC sequences that move the cursor or change colours), so on a
//! terminal they are shown escaped as `\xNN`; a pipe or file gets the bytes unchanged.

use std::io::{IsTerminal, Write};

/// Stdout for generated text: escapes control bytes when it is a terminal.
pub struct TextOut {
    out: std::io::StdoutLock<'static>,
    terminal: bool,
}

impl Default for TextOut {
    fn default() -> Self {
        Self::new()
    }
}

impl TextOut {
    /// Locks stdout.
    pub fn new() -> TextOut {
        let out = std::io::stdout().lock();
        let terminal = out.is_terminal();
        TextOut { out, terminal }
    }

    /// Writes `bytes` (escaped on a terminal) and flushes, so streamed text shows at once.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.terminal {
            self.out.write_all(&escape_controls(bytes))?;
        } else {
            self.out.write_all(bytes)?;
        }
        self.out.flush()
    }

    /// Ends the line.
    pub fn newline(&mut self) -> std::io::Result<()> {
        self.write(b"\n")
    }
}

/// `bytes` with every control byte but newline and tab (C0, DEL) as `\xNN`.
pub fn escape_controls(bytes: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7F {
            s.extend(format!("\\x{b:02x}").bytes());
        } else {
            s.push(b);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_bytes_are_escaped_text_is_not() {
        assert_eq!(
            escape_controls(b"a\x1b[31mb\n\tc\x7f\x00"),
            b"a\\x1b[31mb\n\tc\\x7f\\x00".to_vec()
        );
        assert_eq!(escape_controls("héllo".as_bytes()), "héllo".as_bytes());
    }
}
