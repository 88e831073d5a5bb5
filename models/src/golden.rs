//! The golden-tensors workflow: compare our logits and greedy tokens with a file produced by an
//! independent reference (Hugging Face), or write such a file from our own outputs.

use std::path::Path;

use cranegrad_runtime::Session;

use crate::loader::{
    Golden, HostTensor, IntTensor, LoadError, SourceDType, read_golden, write_golden,
};
use crate::run::{greedy_full_recompute, logits};
use crate::{Model, ModelError};

/// Result of comparing against a golden file.
#[derive(Clone, Debug)]
pub struct GoldenReport {
    /// Largest |ours - golden| over all logits.
    pub max_abs_diff: f64,
    /// Largest |ours - golden| / (atol + rtol |golden|); <= 1 passes.
    pub worst_ratio: f64,
    /// Logits compared.
    pub logits_checked: usize,
    /// Generated tokens equal to the golden ones (over all rows), and how many were compared.
    pub tokens_matching: (usize, usize),
    /// True when the logits are within tolerance and every generated token matches.
    pub passed: bool,
}

fn rows(t: &IntTensor) -> Result<Vec<Vec<i32>>, ModelError> {
    let (b, s) = match t.shape.as_slice() {
        [b, s] => (*b, *s),
        other => {
            return Err(ModelError::Input(format!(
                "golden token tensor must be [batch, seq], got {other:?}"
            )));
        }
    };
    let mut out = Vec::with_capacity(b);
    for r in 0..b {
        let row = &t.data[r * s..(r + 1) * s];
        let row = row
            .iter()
            .map(|&x| {
                i32::try_from(x)
                    .map_err(|_| ModelError::Input(format!("token id {x} does not fit in i32")))
            })
            .collect::<Result<Vec<i32>, _>>()?;
        out.push(row);
    }
    Ok(out)
}

/// Checks that `golden` can be verified against `model` at all: logits over this model's
/// vocabulary, and a `generated` tensor that continues `input_ids` by at least one token.
/// Without that a "pass" would compare nothing (0/0 tokens), so these are input errors, not
/// failed checks.
fn check_compatible(model: &Model, golden: &Golden) -> Result<(), ModelError> {
    let vocab = model.vocab();
    if golden.logits.shape.len() != 3 || golden.logits.shape[2] != vocab {
        return Err(ModelError::Input(format!(
            "golden tensor `logits` has shape {:?}, but the model's vocabulary is {vocab} \
             (expected [batch, seq, {vocab}]): the golden file is for another model",
            golden.logits.shape
        )));
    }
    let Some(generated) = &golden.generated else {
        return Err(ModelError::Input(
            "golden tensor `generated` is missing: there are no greedy tokens to compare".into(),
        ));
    };
    let [batch, s] = golden.input_ids.shape[..] else {
        return Err(ModelError::Input(format!(
            "golden tensor `input_ids` must be [batch, seq], got {:?}",
            golden.input_ids.shape
        )));
    };
    if generated.shape.len() != 2 || generated.shape[0] != batch || generated.shape[1] <= s {
        return Err(ModelError::Input(format!(
            "golden tensor `generated` has shape {:?}: expected [{batch}, more than {s}] \
             (the prompt plus at least one greedy token)",
            generated.shape
        )));
    }
    for b in 0..batch {
        if generated.row(b).map(|r| &r[..s]) != golden.input_ids.row(b) {
            return Err(ModelError::Input(format!(
                "golden tensor `generated` row {b} does not start with `input_ids` row {b}"
            )));
        }
    }
    Ok(())
}

/// Runs the forward over the golden `input_ids` and a greedy generation as long as the golden
/// `generated`, and compares. A golden that does not fit the model (another vocabulary, no
/// `generated` tokens) is an error, so `Ok` always means the comparison ran. The session is
/// switched to exact kernels (no integer dot products, see `Session::set_integer_dot`).
pub fn verify(
    session: &mut Session,
    model: &Model,
    golden: &Golden,
    atol: f64,
    rtol: f64,
) -> Result<GoldenReport, ModelError> {
    check_compatible(model, golden)?;
    session.set_integer_dot(false);
    let input = rows(&golden.input_ids)?;
    let ours = logits(session, model, &input)?;
    if ours.len() != golden.logits.data.len() {
        return Err(ModelError::Input(format!(
            "golden tensor `logits` has shape {:?} but the model produced {} values",
            golden.logits.shape,
            ours.len()
        )));
    }
    let (mut max_abs, mut worst) = (0f64, 0f64);
    for (&a, &g) in ours.iter().zip(&golden.logits.data) {
        let d = (a as f64 - g as f64).abs();
        let d = if d.is_nan() { f64::INFINITY } else { d };
        max_abs = max_abs.max(d);
        worst = worst.max(d / (atol + rtol * (g as f64).abs()));
    }
    let mut tokens = (0, 0);
    if let Some(gen_t) = &golden.generated {
        let want = rows(gen_t)?;
        let s = input[0].len();
        let new = want[0].len().saturating_sub(s);
        let got = greedy_full_recompute(session, model, &input, new)?;
        for (g, w) in got.iter().zip(&want) {
            for (a, b) in g[s..].iter().zip(&w[s..]) {
                tokens.1 += 1;
                tokens.0 += usize::from(a == b);
            }
        }
    }
    Ok(GoldenReport {
        max_abs_diff: max_abs,
        worst_ratio: worst,
        logits_checked: ours.len(),
        tokens_matching: tokens,
        // An empty comparison never passes, whatever check_compatible let through.
        passed: worst <= 1.0 && tokens.1 > 0 && tokens.0 == tokens.1,
    })
}

/// Writes a golden file from our own outputs for `input` and `new` greedy tokens, computed
/// by exact kernels (as [`verify`] checks them).
pub fn write(
    session: &mut Session,
    model: &Model,
    input: &[Vec<i32>],
    new: usize,
    out: &Path,
) -> Result<(), ModelError> {
    if new == 0 {
        return Err(ModelError::Input(format!(
            "{}: a golden file needs at least one generated token, or verifying it compares none",
            out.display()
        )));
    }
    let (b, s) = crate::run::check_tokens(model, input)?;
    session.set_integer_dot(false);
    let l = logits(session, model, input)?;
    let generated = greedy_full_recompute(session, model, input, new)?;
    let ids = IntTensor::new(
        vec![b, s],
        input.iter().flatten().map(|&x| x as i64).collect(),
    )?;
    let logits = HostTensor::new(vec![b, s, model.vocab()], l, SourceDType::F32)?;
    let gen_t = IntTensor::new(
        vec![b, s + new],
        generated.iter().flatten().map(|&x| x as i64).collect(),
    )?;
    write_golden(out, &ids, &logits, Some(&gen_t))?;
    Ok(())
}

/// Reads a golden file for `verify`, which needs a `generated` tensor: its absence is reported
/// here, where the file name is known.
pub fn read(path: &Path) -> Result<Golden, ModelError> {
    let golden = read_golden(path)?;
    if golden.generated.is_none() {
        return Err(LoadError::bad_tensor(
            path,
            "generated",
            "missing: verifying needs the reference's greedy tokens",
        )
        .into());
    }
    Ok(golden)
}
