//! Splitting text at the special tokens written in it (`<s>`, `<|im_start|>`, user-defined
//! tokens), before the model's tokenizer sees the pieces between them — llama.cpp's
//! partition: the longest token texts first, each at every place it occurs.

/// A fragment of text: raw text to tokenize, or a token written out in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fragment<'t> {
    /// Text between special tokens.
    Text(&'t str),
    /// A special token found in the text.
    Token(u32),
}

/// Special token texts and ids, longest text first.
#[derive(Debug, Clone, Default)]
pub struct SpecialTokens {
    tokens: Vec<(String, u32)>,
}

impl SpecialTokens {
    /// The tokens to find in text (empty texts are ignored).
    pub fn new(mut tokens: Vec<(String, u32)>) -> SpecialTokens {
        tokens.retain(|(t, _)| !t.is_empty());
        // Longest first, so `<|im_start|>` is not found as `<|im` + ...; then by id for a
        // deterministic order among texts of one length.
        tokens.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        SpecialTokens { tokens }
    }

    /// `text` cut at every special token in it.
    pub fn split<'t>(&self, text: &'t str) -> Vec<Fragment<'t>> {
        let mut fragments = if text.is_empty() {
            Vec::new()
        } else {
            vec![Fragment::Text(text)]
        };
        for (special, id) in &self.tokens {
            let mut next = Vec::with_capacity(fragments.len());
            for f in fragments {
                let Fragment::Text(mut rest) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(at) = rest.find(special.as_str()) {
                    if at > 0 {
                        next.push(Fragment::Text(&rest[..at]));
                    }
                    next.push(Fragment::Token(*id));
                    rest = &rest[at + special.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            fragments = next;
        }
        fragments
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_token_wins_and_text_between_is_kept() {
        let s = SpecialTokens::new(vec![("<|a|>".into(), 7), ("<|a|><|b|>".into(), 9)]);
        assert_eq!(
            s.split("x<|a|><|b|>y<|a|>"),
            vec![
                Fragment::Text("x"),
                Fragment::Token(9),
                Fragment::Text("y"),
                Fragment::Token(7)
            ]
        );
        assert_eq!(s.split(""), Vec::<Fragment>::new());
    }
}
