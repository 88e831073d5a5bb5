//! Golden outputs (`golden.safetensors`): token ids and reference logits from Hugging Face,
//! read for tests and written in the same format so our own runs can be compared later.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::error::{LoadError, Result};
use super::file::map_file;
use super::safetensors::{parse, to_host};
use super::tensor::{HostTensor, checked_numel};

/// A row-major int64 tensor (token ids must stay exact, so they are not widened to f32).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<i64>,
}

impl IntTensor {
    /// Builds a tensor, refusing a data length that disagrees with the shape.
    pub fn new(shape: Vec<usize>, data: Vec<i64>) -> Result<Self> {
        let expected = checked_numel(&shape).unwrap_or(usize::MAX);
        if expected != data.len() {
            return Err(LoadError::LengthMismatch {
                name: "<int tensor>".into(),
                shape,
                expected,
                len: data.len(),
            });
        }
        Ok(IntTensor { shape, data })
    }

    /// Row `b` of a 2-D tensor (one sequence of a batch), or `None` out of range.
    pub fn row(&self, b: usize) -> Option<&[i64]> {
        let [rows, cols] = self.shape[..] else {
            return None;
        };
        (b < rows).then(|| &self.data[b * cols..(b + 1) * cols])
    }
}

/// The contents of a golden file.
#[derive(Debug, Clone, PartialEq)]
pub struct Golden {
    /// Prompt tokens `[B, S]`.
    pub input_ids: IntTensor,
    /// Logits of a full forward over the prompt `[B, S, V]`.
    pub logits: HostTensor,
    /// Prompt + greedy continuation `[B, S + N]`.
    pub generated: Option<IntTensor>,
    /// Logits of a full forward over `generated` `[B, S + N, V]`.
    pub logits_generated: Option<HostTensor>,
    /// Residual stream after the first block `[B, S, hidden]`.
    pub hidden_after_layer0: Option<HostTensor>,
}

/// Reads a golden file, checking that the shapes agree with each other.
pub fn read_golden(path: &Path) -> Result<Golden> {
    let bytes = map_file(path)?;
    let st = parse(&bytes, path)?;
    let input_ids = int_tensor(&st, "input_ids", path)?
        .ok_or_else(|| LoadError::bad_tensor(path, "input_ids", "missing"))?;
    let logits = float_tensor(&st, "logits", path)?
        .ok_or_else(|| LoadError::bad_tensor(path, "logits", "missing"))?;
    let golden = Golden {
        input_ids,
        logits,
        generated: int_tensor(&st, "generated", path)?,
        logits_generated: float_tensor(&st, "logits_generated", path)?,
        hidden_after_layer0: float_tensor(&st, "hidden_after_layer0", path)?,
    };
    check_shapes(&golden, path)?;
    Ok(golden)
}

fn check_shapes(g: &Golden, path: &Path) -> Result<()> {
    let bad = |name: &str, msg: String| Err(LoadError::bad_tensor(path, name, msg));
    let [b, s] = g.input_ids.shape[..] else {
        return bad(
            "input_ids",
            format!("expected [B, S], found {:?}", g.input_ids.shape),
        );
    };
    let lg = &g.logits.shape;
    if lg.len() != 3 || lg[0] != b || lg[1] != s {
        return bad("logits", format!("expected [{b}, {s}, V], found {lg:?}"));
    }
    let vocab = lg[2];
    if let Some(gen_ids) = &g.generated
        && (gen_ids.shape.len() != 2 || gen_ids.shape[0] != b || gen_ids.shape[1] < s)
    {
        return bad(
            "generated",
            format!("expected [{b}, >= {s}], found {:?}", gen_ids.shape),
        );
    }
    if let Some(lg2) = &g.logits_generated {
        let t = g.generated.as_ref().map_or(s, |x| x.shape[1]);
        if lg2.shape != [b, t, vocab] {
            return bad(
                "logits_generated",
                format!("expected [{b}, {t}, {vocab}], found {:?}", lg2.shape),
            );
        }
    }
    if let Some(h) = &g.hidden_after_layer0
        && (h.shape.len() != 3 || h.shape[0] != b || h.shape[1] != s)
    {
        return bad(
            "hidden_after_layer0",
            format!("expected [{b}, {s}, hidden], found {:?}", h.shape),
        );
    }
    Ok(())
}

fn int_tensor(st: &SafeTensors<'_>, name: &str, path: &Path) -> Result<Option<IntTensor>> {
    let Ok(view) = st.tensor(name) else {
        return Ok(None);
    };
    let data: Vec<i64> = match view.dtype() {
        Dtype::I64 => view
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("chunk of 8")))
            .collect(),
        Dtype::I32 => view
            .data()
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        other => {
            return Err(LoadError::bad_tensor(
                path,
                name,
                format!("expected I64 or I32 token ids, found {other:?}"),
            ));
        }
    };
    Ok(Some(IntTensor {
        shape: view.shape().to_vec(),
        data,
    }))
}

fn float_tensor(st: &SafeTensors<'_>, name: &str, path: &Path) -> Result<Option<HostTensor>> {
    let Ok(view) = st.tensor(name) else {
        return Ok(None);
    };
    if !matches!(
        view.dtype(),
        Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64
    ) {
        return Err(LoadError::bad_tensor(
            path,
            name,
            format!("expected floating-point values, found {:?}", view.dtype()),
        ));
    }
    to_host(view.dtype(), view.shape(), view.data(), name, path).map(Some)
}

/// Writes `input_ids`, `logits` (as F32) and optionally `generated` in the golden format.
pub fn write_golden(
    path: &Path,
    input_ids: &IntTensor,
    logits: &HostTensor,
    generated: Option<&IntTensor>,
) -> Result<()> {
    let ids_bytes = i64_bytes(input_ids, "input_ids")?;
    let logits_bytes: Vec<u8> = logits.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    if checked_numel(&logits.shape) != Some(logits.data.len()) {
        return Err(LoadError::LengthMismatch {
            name: "logits".into(),
            shape: logits.shape.clone(),
            expected: checked_numel(&logits.shape).unwrap_or(usize::MAX),
            len: logits.data.len(),
        });
    }
    let gen_bytes = generated.map(|g| i64_bytes(g, "generated")).transpose()?;
    fn view<'a>(
        dtype: Dtype,
        shape: &[usize],
        data: &'a [u8],
        name: &str,
        path: &Path,
    ) -> Result<TensorView<'a>> {
        TensorView::new(dtype, shape.to_vec(), data)
            .map_err(|e| LoadError::bad_tensor(path, name, format!("cannot serialise: {e}")))
    }
    let mut tensors = vec![
        (
            "input_ids".to_string(),
            view(Dtype::I64, &input_ids.shape, &ids_bytes, "input_ids", path)?,
        ),
        (
            "logits".to_string(),
            view(Dtype::F32, &logits.shape, &logits_bytes, "logits", path)?,
        ),
    ];
    if let (Some(g), Some(bytes)) = (generated, &gen_bytes) {
        tensors.push((
            "generated".to_string(),
            view(Dtype::I64, &g.shape, bytes, "generated", path)?,
        ));
    }
    let meta = HashMap::from([("generator".to_string(), "cranegrad".to_string())]);
    safetensors::serialize_to_file(tensors, &Some(meta), path).map_err(|e| match e {
        safetensors::SafeTensorError::IoError(io) => LoadError::io(path, io),
        other => LoadError::corrupt(path, format!("cannot serialise golden file: {other}")),
    })
}

fn i64_bytes(t: &IntTensor, name: &str) -> Result<Vec<u8>> {
    if checked_numel(&t.shape) != Some(t.data.len()) {
        return Err(LoadError::LengthMismatch {
            name: name.into(),
            shape: t.shape.clone(),
            expected: checked_numel(&t.shape).unwrap_or(usize::MAX),
            len: t.data.len(),
        });
    }
    Ok(t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
}
