//! SentencePiece-style tokenization of a GGUF `llama` vocabulary, as llama.cpp does it: start
//! from single characters, repeatedly merge the adjacent pair whose joined text is the
//! highest-scoring piece in the vocabulary (the leftmost on a tie), then spell any piece the
//! vocabulary lacks as `<0xNN>` byte tokens.
//!
//! Written here rather than through the `tokenizers` crate: its BPE model needs ranked merges,
//! which a `llama` GGUF does not store (only piece scores), and its Unigram model picks pieces
//! by a different rule (Viterbi over log-probabilities), which gives other ids.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::gguf_vocab::{GgufVocab, TokenKind};

/// SentencePiece's visible space.
pub const SPACE_MARKER: char = '\u{2581}';

/// A SentencePiece tokenizer over a GGUF vocabulary.
pub struct SpmTokenizer {
    vocab: GgufVocab,
    ids: HashMap<String, u32>,
    byte_ids: [Option<u32>; 256],
}

/// One piece of text being merged: a byte range of the text and its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of two adjacent symbols.
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// The heap pops the highest score first, and on a tie the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl SpmTokenizer {
    /// A tokenizer for `vocab` (which must be a SentencePiece vocabulary).
    pub fn new(vocab: GgufVocab) -> SpmTokenizer {
        let ids = vocab
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect::<HashMap<_, _>>();
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = ids.get(&format!("<0x{b:02X}>")).copied().or_else(|| {
                // A vocabulary without byte tokens spells an ASCII byte by its character.
                (b < 128)
                    .then(|| ids.get(&char::from(b as u8).to_string()).copied())
                    .flatten()
            });
        }
        SpmTokenizer {
            vocab,
            ids,
            byte_ids,
        }
    }

    /// The vocabulary.
    pub fn vocab(&self) -> &GgufVocab {
        &self.vocab
    }

    /// Ids of a piece of raw text (no special tokens in it): spaces become the marker, and a
    /// space is put in front when `space_prefix` says the text starts a fragment.
    pub fn encode_text(&self, text: &str, space_prefix: bool, out: &mut Vec<u32>) {
        let mut escaped = String::with_capacity(text.len() + 3);
        if space_prefix {
            escaped.push(SPACE_MARKER);
        }
        for c in text.chars() {
            escaped.push(if c == ' ' { SPACE_MARKER } else { c });
        }
        self.merge(&escaped, out);
    }

    fn merge(&self, text: &str, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let mut symbols: Vec<Symbol> = Vec::new();
        for (i, (start, c)) in text.char_indices().enumerate() {
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }
        let mut queue = BinaryHeap::new();
        for right in 1..symbols.len() {
            self.push_bigram(text, &symbols, right - 1, right, &mut queue);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            // Stale: one side has been merged into something else since.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(b.left);
            }
            if let Some(p) = l.prev {
                self.push_bigram(text, &symbols, p, b.left, &mut queue);
            }
            if let Some(n) = r.next {
                self.push_bigram(text, &symbols, b.left, n, &mut queue);
            }
        }
        let mut at = Some(0);
        while let Some(i) = at {
            self.spell(
                &text[symbols[i].start..symbols[i].start + symbols[i].len],
                out,
            );
            at = symbols[i].next;
        }
    }

    fn push_bigram(
        &self,
        text: &str,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Bigram>,
    ) {
        let (l, r) = (symbols[left], symbols[right]);
        let joined = &text[l.start..r.start + r.len];
        let Some(&id) = self.ids.get(joined) else {
            return;
        };
        queue.push(Bigram {
            left,
            right,
            score: self.vocab.scores[id as usize],
            len: joined.len(),
        });
    }

    /// Emits a final piece: its token, or its bytes where the vocabulary lacks it (only a
    /// single character can: every merge made a piece the vocabulary has).
    fn spell(&self, piece: &str, out: &mut Vec<u32>) {
        if let Some(&id) = self.ids.get(piece) {
            out.push(id);
            return;
        }
        for &b in piece.as_bytes() {
            if let Some(id) = self.byte_ids[b as usize].or(self.vocab.unk) {
                out.push(id);
            }
        }
    }

    /// The bytes token `id` stands for; control tokens print their text only when `special`.
    pub fn piece(&self, id: u32, special: bool) -> Vec<u8> {
        let text = &self.vocab.tokens[id as usize];
        match self.vocab.kinds[id as usize] {
            TokenKind::Normal => text.replace(SPACE_MARKER, " ").into_bytes(),
            TokenKind::Byte => byte_of(text).map_or_else(|| text.clone().into_bytes(), |b| vec![b]),
            TokenKind::Control | TokenKind::Unknown if !special => Vec::new(),
            TokenKind::Unused => Vec::new(),
            TokenKind::Control | TokenKind::Unknown | TokenKind::UserDefined => {
                text.clone().into_bytes()
            }
        }
    }
}

/// The byte of a `<0xNN>` token.
fn byte_of(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}
