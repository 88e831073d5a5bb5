//! Running a model: logits of a token batch, and a plain greedy loop of full forwards (the
//! oracle the KV-cached decoder is checked against).

use cranegrad_graph::{Bindings, HostData};
use cranegrad_runtime::{Feeds, Session};

use crate::{Model, ModelError};

/// Checks a token batch: rectangular, non-empty, every id inside the vocabulary.
pub fn check_tokens(model: &Model, tokens: &[Vec<i32>]) -> Result<(usize, usize), ModelError> {
    let b = tokens.len();
    let s = tokens.first().map_or(0, Vec::len);
    if b == 0 || s == 0 || tokens.iter().any(|r| r.len() != s) {
        return Err(ModelError::Input(format!(
            "tokens must be a non-empty rectangular batch, got {b} rows of lengths {:?}",
            tokens.iter().map(Vec::len).collect::<Vec<_>>()
        )));
    }
    let vocab = model.vocab();
    if let Some(bad) = tokens
        .iter()
        .flatten()
        .find(|&&t| t < 0 || t as usize >= vocab)
    {
        return Err(ModelError::Input(format!(
            "token id {bad} is outside the vocabulary 0..{vocab}"
        )));
    }
    Ok((b, s))
}

/// Logits `[B, S, vocab]` (flattened) of a full forward over `tokens`.
pub fn logits(
    session: &mut Session,
    model: &Model,
    tokens: &[Vec<i32>],
) -> Result<Vec<f32>, ModelError> {
    let (b, s) = check_tokens(model, tokens)?;
    let (_g, out) = model.forward_graph(b, s)?;
    let mut feeds = Feeds::new();
    feeds.insert(
        "tokens".into(),
        HostData::from(tokens.iter().flatten().copied().collect::<Vec<i32>>()),
    );
    let v = session.realize(&[&out], &feeds, &Bindings::new())?;
    Ok(v[0].to_f32())
}

/// Index of the largest value (the first on ties), as HF's argmax.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// Greedy generation by recomputing the full sequence every step; returns prompt + `new`
/// tokens per row.
pub fn greedy_full_recompute(
    session: &mut Session,
    model: &Model,
    prompt: &[Vec<i32>],
    new: usize,
) -> Result<Vec<Vec<i32>>, ModelError> {
    let mut seqs = prompt.to_vec();
    let v = model.vocab();
    for _ in 0..new {
        let s = seqs[0].len();
        let l = logits(session, model, &seqs)?;
        for (b, row) in seqs.iter_mut().enumerate() {
            let off = (b * s + s - 1) * v;
            row.push(argmax(&l[off..off + v]) as i32);
        }
    }
    Ok(seqs)
}
