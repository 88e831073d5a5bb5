//! The CelerInfer/MiniMind JSON format: a `config` section plus base64-encoded tensors
//! (`{name, shape, dtype, encoding: "base64", data}`), weights in HF layout under short names.

use std::path::Path;

use base64::Engine;
use serde_json::Value;

use super::config::{LlamaConfig, ModelConfig, RopeScaling, check_positions};
use super::convert;
use super::error::{LoadError, Result};
use super::json::{Fields, read_json_file, short};
use super::tensor::{HostTensor, SourceDType, WeightStore, checked_numel};
use super::validate::validate;

/// Whether a parsed JSON document has the minimind structure (a `config` and a `weights` object).
pub fn is_minimind(value: &Value) -> bool {
    value.get("config").is_some_and(Value::is_object)
        && value.get("weights").is_some_and(Value::is_object)
}

/// Loads and validates a minimind JSON file.
pub fn load_minimind(path: &Path) -> Result<(ModelConfig, WeightStore)> {
    minimind_from_json(&read_json_file(path)?, path)
}

/// Loads an already-parsed minimind document; `path` is only used in messages.
pub fn minimind_from_json(value: &Value, path: &Path) -> Result<(ModelConfig, WeightStore)> {
    if !is_minimind(value) {
        return Err(LoadError::corrupt(
            path,
            "not a minimind document (needs `config` and `weights` objects)",
        ));
    }
    let weights = &value["weights"];
    let cfg = ModelConfig::Llama(config(value, path)?);
    let mut store = WeightStore::new(path.display().to_string());
    for (key, entry) in weights.as_object().into_iter().flatten() {
        let hf = match key.as_str() {
            "tok_embedding" => "model.embed_tokens.weight",
            "final_rms" => "model.norm.weight",
            "lm_head" => "lm_head.weight",
            "layers" => {
                load_layers(entry, path, &mut store)?;
                continue;
            }
            _ => {
                return Err(LoadError::bad_tensor(
                    path,
                    &format!("weights.{key}"),
                    "unknown minimind weight",
                ));
            }
        };
        store.insert(hf, decode_weight(entry, path, &format!("weights.{key}"))?)?;
    }
    validate(&cfg, &store)?;
    Ok((cfg, store))
}

fn load_layers(layers: &Value, path: &Path, store: &mut WeightStore) -> Result<()> {
    let list = layers.as_array().ok_or_else(|| {
        LoadError::bad_tensor(path, "weights.layers", "expected a list of layers")
    })?;
    for (i, layer) in list.iter().enumerate() {
        let obj = layer.as_object().ok_or_else(|| {
            LoadError::bad_tensor(path, &format!("weights.layers[{i}]"), "expected an object")
        })?;
        for (key, entry) in obj {
            let label = format!("weights.layers[{i}].{key}");
            let hf = match key.as_str() {
                "rms_attn" => "input_layernorm.weight",
                "rms_ffn" => "post_attention_layernorm.weight",
                "wq" => "self_attn.q_proj.weight",
                "wk" => "self_attn.k_proj.weight",
                "wv" => "self_attn.v_proj.weight",
                "wo" => "self_attn.o_proj.weight",
                "w_gate" => "mlp.gate_proj.weight",
                "w_up" => "mlp.up_proj.weight",
                "w_down" => "mlp.down_proj.weight",
                _ => {
                    return Err(LoadError::bad_tensor(
                        path,
                        &label,
                        "unknown minimind weight",
                    ));
                }
            };
            store.insert(
                format!("model.layers.{i}.{hf}"),
                decode_weight(entry, path, &label)?,
            )?;
        }
    }
    Ok(())
}

fn config(doc: &Value, path: &Path) -> Result<LlamaConfig> {
    let f = Fields::new(&doc["config"], path, "config")?;
    if f.bool_or("use_moe", false)? {
        return Err(f.err("use_moe", "mixture-of-experts models are not supported"));
    }
    if f.bool_or("inference_rope_scaling", false)? {
        return Err(f.err(
            "inference_rope_scaling",
            "MiniMind's RoPE scaling is not supported",
        ));
    }
    if let Some(act) = f.opt_str("hidden_act")?
        && act != "silu"
    {
        return Err(f.err(
            "hidden_act",
            format!("activation `{act}` is not supported (supported: silu)"),
        ));
    }
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_attention_heads")?;
    let kv_heads = f.opt_usize("num_key_value_heads")?.unwrap_or(heads);
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(f.err(
            "num_key_value_heads",
            format!("{kv_heads} does not divide num_attention_heads = {heads}"),
        ));
    }
    let meta_head_dim = match doc.get("meta") {
        Some(m) if m.is_object() => Fields::new(m, path, "meta")?.opt_usize("head_dim")?,
        _ => None,
    };
    let head_dim = match f.opt_usize("head_dim")?.or(meta_head_dim) {
        Some(d) if d > 0 && d % 2 == 0 => d,
        Some(d) => {
            return Err(f.err(
                "head_dim",
                format!("RoPE needs a positive even head_dim, found {d}"),
            ));
        }
        None if hidden % heads == 0 && (hidden / heads) % 2 == 0 => hidden / heads,
        None => {
            return Err(f.err(
                "head_dim",
                format!("absent, and hidden_size {hidden} does not split into {heads} even heads"),
            ));
        }
    };
    Ok(LlamaConfig {
        hidden,
        layers: f.positive("num_hidden_layers")?,
        heads,
        kv_heads,
        head_dim,
        intermediate: f.positive("intermediate_size")?,
        vocab: f.positive("vocab_size")?,
        max_positions: check_positions(
            f.positive("max_position_embeddings")?,
            path,
            "config.max_position_embeddings",
        )?,
        rms_norm_eps: f.f64("rms_norm_eps")?,
        rope_theta: f.opt_f64("rope_theta")?.unwrap_or(10000.0),
        rope_scaling: RopeScaling::None,
        tie_word_embeddings: doc["weights"].get("lm_head").is_none(),
        bos_token_id: f.opt_token("bos_token_id")?,
        eos_token_ids: f.opt_token_list("eos_token_id")?.unwrap_or_default(),
    })
}

/// Decodes one weight entry like `decode_tensor`, but refuses integer dtypes before decoding:
/// the document also holds int `inputs`, and one of those filed under `weights` must not be
/// widened into a parameter.
pub fn decode_weight(entry: &Value, path: &Path, label: &str) -> Result<HostTensor> {
    let dtype = entry_dtype(entry, path, label)?;
    if matches!(dtype, SourceDType::I32 | SourceDType::I64) {
        return Err(LoadError::bad_tensor(
            path,
            label,
            format!(
                "dtype {} is not a floating-point type (weights must be float32, float16, bfloat16 or float64)",
                short(&entry["dtype"])
            ),
        ));
    }
    decode_tensor(entry, path, label)
}

fn entry_dtype(entry: &Value, path: &Path, label: &str) -> Result<SourceDType> {
    let bad = |msg: String| LoadError::bad_tensor(path, label, msg);
    let dtype = entry
        .get("dtype")
        .ok_or_else(|| bad("no `dtype` field".into()))?;
    Ok(match dtype.as_str() {
        Some("float32") => SourceDType::F32,
        Some("float16") => SourceDType::F16,
        Some("bfloat16") => SourceDType::BF16,
        Some("float64") => SourceDType::F64,
        Some("int32") => SourceDType::I32,
        Some("int64") => SourceDType::I64,
        _ => {
            return Err(bad(format!(
                "dtype {} is not supported (supported: float32, float16, bfloat16, float64, int32, int64)",
                short(dtype)
            )));
        }
    })
}

/// Decodes one `{shape, dtype, encoding: "base64", data}` entry of any dtype, integers
/// included (they hold token ids); `label` names it in errors.
pub fn decode_tensor(entry: &Value, path: &Path, label: &str) -> Result<HostTensor> {
    let bad = |msg: String| LoadError::bad_tensor(path, label, msg);
    let field = |key: &str| {
        entry
            .get(key)
            .ok_or_else(|| bad(format!("no `{key}` field")))
    };
    let shape: Vec<usize> = field("shape")?
        .as_array()
        .and_then(|s| {
            s.iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect()
        })
        .ok_or_else(|| bad("`shape` is not a list of non-negative integers".into()))?;
    let numel = checked_numel(&shape).ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    let dtype = entry_dtype(entry, path, label)?;
    match entry.get("encoding").and_then(Value::as_str) {
        Some("base64") | None => {}
        Some(other) => {
            return Err(bad(format!(
                "encoding `{other}` is not supported (supported: base64)"
            )));
        }
    }
    let text = field("data")?
        .as_str()
        .ok_or_else(|| bad("`data` is not a string".into()))?;
    let need = convert::needed_bytes(dtype, numel).map_err(bad)?;
    // Check the size before decoding so a lying shape cannot cause a large allocation.
    let have = base64::decoded_len_estimate(text.len());
    if have < need || have > need + 3 {
        return Err(bad(format!(
            "shape {shape:?} of {dtype} needs {need} bytes, the base64 data holds about {have}"
        )));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| bad(format!("invalid base64: {e}")))?;
    let data = convert::decode(dtype, &raw, numel).map_err(bad)?;
    Ok(HostTensor {
        shape,
        data,
        source_dtype: dtype,
    })
}
