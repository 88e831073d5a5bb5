//! Streaming detokenization: the text printed token by token equals the whole decode, also
//! when multi-byte characters are split over several byte-level tokens.

use std::path::Path;

use cranegrad_models::tokenizer::{TextStream, Tokenizer};

fn tokenizer() -> Tokenizer {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/llama-small/tokenizer.json");
    Tokenizer::from_file(&dir).expect("fixture tokenizer")
}

#[test]
fn streamed_text_equals_the_whole_decode() {
    let tok = tokenizer();
    for text in [
        "Hello world, hello again.",
        "héllo wörld — ünïcode ✓ 日本語 🚀 done",
        "  leading spaces and\nnew lines\n",
    ] {
        let ids = tok.encode(text).unwrap();
        assert!(ids.len() > 3, "{text:?} encodes to several tokens");
        // A prompt is whole text: split where the first ids decode to complete characters.
        let cut = (2..ids.len())
            .find(|&k| {
                std::str::from_utf8(&tok.decode_bytes(&ids[..k]).unwrap())
                    .is_ok_and(|t| !t.contains('\u{FFFD}'))
            })
            .unwrap();
        let (prompt, rest) = ids.split_at(cut);
        let mut stream = TextStream::new(&tok, prompt).unwrap();
        let mut out = tok.decode_bytes(prompt).unwrap();
        let mut held = 0;
        for &id in rest {
            let piece = stream.push(id).unwrap();
            held += usize::from(piece.is_empty());
            // Every piece is whole UTF-8: no replacement character is ever printed.
            assert!(std::str::from_utf8(&piece).is_ok());
            out.extend(piece);
        }
        assert_eq!(out, tok.decode_bytes(&ids).unwrap(), "{text:?}");
        if !text.is_ascii() {
            assert!(held > 0, "a split character was held back in {text:?}");
        }
    }
}

#[test]
fn ids_outside_the_vocabulary_are_errors() {
    let tok = tokenizer();
    let err = tok.decode_bytes(&[1, 100_000]).unwrap_err().to_string();
    assert!(
        err.contains("100000") && err.contains("vocabulary"),
        "{err}"
    );
    assert!(tok.decode_bytes(&[-3]).is_err());
}
