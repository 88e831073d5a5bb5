//! `--stop STRING`: generation ends where the text first contains a stop string, and the stop
//! string itself is not printed (as llama.cpp's server does). Text that could be the start of
//! a stop string is held back until the next token decides it.

/// Filters streamed text against the stop strings.
pub struct StopFilter {
    stops: Vec<Vec<u8>>,
    /// Bytes received but not yet released: a possible start of a stop string.
    pending: Vec<u8>,
    /// A stop string was found: nothing more is released.
    stopped: bool,
}

impl StopFilter {
    /// A filter for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> StopFilter {
        StopFilter {
            stops: stops
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            pending: Vec::new(),
            stopped: false,
        }
    }

    /// True once a stop string was seen: the caller ends generation.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Takes the next bytes of text and returns what may be printed now.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.stopped {
            return Vec::new();
        }
        self.pending.extend_from_slice(bytes);
        let found = self
            .stops
            .iter()
            .filter_map(|s| find(&self.pending, s))
            .min();
        if let Some(at) = found {
            self.stopped = true;
            let out = self.pending[..at].to_vec();
            self.pending.clear();
            return out;
        }
        // Hold back the longest tail that a stop string starts with.
        let keep = self
            .stops
            .iter()
            .map(|s| {
                (1..s.len().min(self.pending.len() + 1))
                    .rev()
                    .find(|&n| self.pending.ends_with(&s[..n]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let release = self.pending.len() - keep;
        self.pending.drain(..release).collect()
    }

    /// What is still held back, when generation ends without a stop string.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

/// The first position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::StopFilter;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut f = StopFilter::new(&stops);
        let mut out = Vec::new();
        for p in pieces {
            out.extend(f.push(p.as_bytes()));
            if f.stopped() {
                break;
            }
        }
        out.extend(f.finish());
        (String::from_utf8(out).unwrap(), f.stopped())
    }

    #[test]
    fn text_stops_before_a_stop_string_split_over_tokens() {
        assert_eq!(
            run(&["\nUser:"], &["Hi", " there\nU", "ser: more"]),
            ("Hi there".into(), true)
        );
        assert_eq!(
            run(&["END"], &["abc", "E", "N", "D", "x"]),
            ("abc".into(), true)
        );
    }

    #[test]
    fn held_back_text_is_released_when_it_is_not_a_stop() {
        assert_eq!(
            run(&["END"], &["abcE", "Nx", "y"]),
            ("abcENxy".into(), false)
        );
        assert_eq!(run(&["END"], &["abcEN"]), ("abcEN".into(), false));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }
}
