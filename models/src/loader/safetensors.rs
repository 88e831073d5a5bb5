//! Hugging Face folders: `config.json` + `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`.
//!
//! The safetensors crate validates the header, but its errors name neither the file nor the
//! tensor, so the framing and each tensor's byte range are checked here first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use super::config::ModelConfig;
use super::convert;
use super::error::{LoadError, Result};
use super::file::map_file;
use super::json::{kind, read_json_file};
use super::tensor::{HostTensor, SourceDType, WeightStore, checked_numel};
use super::validate::validate;

/// Name of the single-file checkpoint in a HF folder.
pub const SAFETENSORS_FILE: &str = "model.safetensors";
/// Name of the shard index in a sharded HF folder.
pub const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";

/// The crate refuses headers above 100 MB; say so with the file name instead of its bare error.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Loads and validates a HF folder (config, generation config and safetensors weights).
pub fn load_hf_dir(dir: &Path) -> Result<(ModelConfig, WeightStore)> {
    let cfg = ModelConfig::from_dir(dir)?;
    let index = dir.join(SAFETENSORS_INDEX);
    let single = dir.join(SAFETENSORS_FILE);
    // `exists`, not `is_file`: a weights file that is a symlink to a device or a folder must
    // get the weight loader's "not a regular file", not "no model.safetensors".
    let store = if index.exists() {
        load_sharded(&cfg, &index)?
    } else if single.exists() {
        load_weights_file(&cfg, &single)?
    } else {
        return Err(LoadError::UnknownFormat {
            path: dir.to_path_buf(),
            reason: format!(
                "no {SAFETENSORS_FILE} or {SAFETENSORS_INDEX} (PyTorch .bin checkpoints are not supported)"
            ),
        });
    };
    validate(&cfg, &store)?;
    Ok((cfg, store))
}

/// Loads and validates one safetensors file whose folder holds the matching `config.json`.
pub fn load_hf_file(path: &Path) -> Result<(ModelConfig, WeightStore)> {
    let dir = parent_dir(path);
    let cfg = ModelConfig::from_dir(&dir)?;
    let store = load_weights_file(&cfg, path)?;
    validate(&cfg, &store)?;
    Ok((cfg, store))
}

/// Every tensor of one safetensors file under its stored name, widened to f32 (all must be
/// floating-point).
pub fn load_safetensors_file(path: &Path) -> Result<WeightStore> {
    let mut store = WeightStore::new(path.display().to_string());
    load_into(&mut store, path, None, &|n| Some(n.to_string()))?;
    Ok(store)
}

/// The folder a file sits in (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn load_weights_file(cfg: &ModelConfig, path: &Path) -> Result<WeightStore> {
    let mut store = WeightStore::new(path.display().to_string());
    load_into(&mut store, path, None, &|n| hf_name(cfg, n))?;
    Ok(store)
}

fn load_sharded(cfg: &ModelConfig, index: &Path) -> Result<WeightStore> {
    let by_file = read_index(index)?;
    let dir = parent_dir(index);
    let mut store = WeightStore::new(dir.display().to_string());
    for (file, names) in &by_file {
        let shard = dir.join(file);
        let found = load_into(&mut store, &shard, Some(names), &|n| hf_name(cfg, n))?;
        if let Some(missing) = names.iter().find(|n| !found.contains(*n)) {
            return Err(LoadError::bad_tensor(
                &shard,
                missing,
                format!("listed in {SAFETENSORS_INDEX} but absent from this shard"),
            ));
        }
    }
    Ok(store)
}

/// `weight_map` grouped by shard file.
fn read_index(index: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let value = read_json_file(index)?;
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| LoadError::corrupt(index, "no `weight_map` object"))?;
    let mut by_file: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| {
            LoadError::bad_tensor(
                index,
                tensor,
                format!("shard must be a file name, found {}", kind(file)),
            )
        })?;
        // The index is data: never let it point outside the model folder.
        let plain = !file.is_empty() && !file.contains(['/', '\\']) && file != ".." && file != ".";
        if !plain {
            return Err(LoadError::bad_tensor(
                index,
                tensor,
                format!("shard `{file}` must be a plain file name in the same folder"),
            ));
        }
        by_file
            .entry(file.to_string())
            .or_default()
            .insert(tensor.clone());
    }
    Ok(by_file)
}

/// Maps a stored name to the canonical HF name of the family, or `None` for non-parameter
/// buffers that old checkpoints saved (causal-mask `attn.bias`, `rotary_emb.inv_freq`).
pub fn hf_name(cfg: &ModelConfig, stored: &str) -> Option<String> {
    match cfg {
        ModelConfig::Llama(_) => {
            if stored.ends_with("rotary_emb.inv_freq") {
                None
            } else if stored.starts_with("model.") || stored.starts_with("lm_head.") {
                Some(stored.to_string())
            } else {
                // A bare `LlamaModel` checkpoint stores its layers without the `model.` prefix.
                Some(format!("model.{stored}"))
            }
        }
        ModelConfig::Gpt2(_) => {
            let mut parts = stored.rsplit('.');
            let last = parts.next();
            let module = parts.next();
            if module == Some("attn") && matches!(last, Some("bias" | "masked_bias")) {
                None
            } else if stored.starts_with("transformer.") || stored.starts_with("lm_head.") {
                Some(stored.to_string())
            } else {
                // The original Hub gpt2 checkpoint was saved from GPT2Model: no prefix.
                Some(format!("transformer.{stored}"))
            }
        }
    }
}

/// Loads the tensors of `path` (only `wanted` ones if given) into `store` under `rename`'s
/// names; returns the stored names the file holds.
fn load_into(
    store: &mut WeightStore,
    path: &Path,
    wanted: Option<&BTreeSet<String>>,
    rename: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeSet<String>> {
    let bytes = map_file(path)?;
    let st = parse(&bytes, path)?;
    let mut names = BTreeSet::new();
    // Sorted, so that of several bad tensors the same one is always reported.
    let mut tensors = st.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, view) in tensors {
        let skip = wanted.is_some_and(|w| !w.contains(&name));
        if !skip && let Some(hf) = rename(&name) {
            let tensor = to_host(view.dtype(), view.shape(), view.data(), &name, path)?;
            store.insert(hf, tensor)?;
        }
        names.insert(name);
    }
    Ok(names)
}

/// Checks the framing and every tensor's byte range, then lets the crate parse.
pub(crate) fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    check_header(bytes, path)?;
    SafeTensors::deserialize(bytes)
        .map_err(|e| LoadError::corrupt(path, format!("invalid safetensors file: {e}")))
}

fn check_header(bytes: &[u8], path: &Path) -> Result<()> {
    let len = bytes.len() as u64;
    let Some(len_field) = bytes.first_chunk::<8>() else {
        return Err(LoadError::corrupt(
            path,
            format!("file is {len} bytes, shorter than the 8-byte safetensors header length"),
        ));
    };
    let n = u64::from_le_bytes(*len_field);
    if n > len - 8 {
        return Err(LoadError::corrupt(
            path,
            format!(
                "header length {n} exceeds the {} bytes after the length field (truncated file?)",
                len - 8
            ),
        ));
    }
    if n > MAX_HEADER_BYTES {
        return Err(LoadError::corrupt(
            path,
            format!("header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit"),
        ));
    }
    // n <= len - 8 <= usize::MAX, so these casts are exact.
    let header = &bytes[8..8 + n as usize];
    let data_len = len - 8 - n;
    let header = super::json::parse_unique(header)
        .map_err(|e| LoadError::corrupt(path, format!("header is not valid JSON: {e}")))?;
    let Value::Object(header) = header else {
        return Err(LoadError::corrupt(
            path,
            format!("header is {}, not a JSON object", kind(&header)),
        ));
    };
    for (name, info) in &header {
        if name != "__metadata__" {
            check_entry(name, info, data_len, path)?;
        }
    }
    Ok(())
}

fn check_entry(name: &str, info: &Value, data_len: u64, path: &Path) -> Result<()> {
    let bad = |msg: String| LoadError::bad_tensor(path, name, msg);
    let shape: Vec<u64> = info
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|s| s.iter().map(Value::as_u64).collect())
        .ok_or_else(|| bad("`shape` is not a list of non-negative integers".into()))?;
    let offsets: Vec<u64> = info
        .get("data_offsets")
        .and_then(Value::as_array)
        .and_then(|s| s.iter().map(Value::as_u64).collect())
        .filter(|v: &Vec<u64>| v.len() == 2)
        .ok_or_else(|| bad("`data_offsets` is not a pair of non-negative integers".into()))?;
    let (start, end) = (offsets[0], offsets[1]);
    if start > end || end > data_len {
        return Err(bad(format!(
            "data_offsets [{start}, {end}] fall outside the {data_len} data bytes (truncated file?)"
        )));
    }
    let numel = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(|| bad(format!("shape {shape:?} overflows the element count")))?;
    let elem = info
        .get("dtype")
        .and_then(Value::as_str)
        .and_then(elem_size);
    if let Some(elem) = elem {
        let need = numel
            .checked_mul(elem)
            .ok_or_else(|| bad(format!("shape {shape:?} overflows the byte count")))?;
        if need != end - start {
            return Err(bad(format!(
                "shape {shape:?} needs {need} bytes, data_offsets [{start}, {end}] hold {}",
                end - start
            )));
        }
    }
    Ok(())
}

/// Element size of a safetensors dtype name; unknown names are left to the crate to refuse.
fn elem_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// Widens one stored float tensor to f32. Integer tensors are refused even when their values
/// would fit: a weight stored as I32/I64 is a mislabelled or non-weight tensor (an index, a
/// mask), and widening it would run the model on garbage instead of saying so.
pub(crate) fn to_host(
    dtype: Dtype,
    shape: &[usize],
    data: &[u8],
    name: &str,
    path: &Path,
) -> Result<HostTensor> {
    let source = match dtype {
        Dtype::F32 => SourceDType::F32,
        Dtype::F16 => SourceDType::F16,
        Dtype::BF16 => SourceDType::BF16,
        Dtype::F64 => SourceDType::F64,
        other => {
            return Err(LoadError::bad_tensor(
                path,
                name,
                format!(
                    "dtype {other:?} is not supported: weights must be floating-point (F32, F16, BF16 or F64)"
                ),
            ));
        }
    };
    let numel = checked_numel(shape)
        .ok_or_else(|| LoadError::bad_tensor(path, name, format!("shape {shape:?} overflows")))?;
    let values =
        convert::decode(source, data, numel).map_err(|m| LoadError::bad_tensor(path, name, m))?;
    Ok(HostTensor {
        shape: shape.to_vec(),
        data: values,
        source_dtype: source,
    })
}
