//! Loader tests on the fixtures in `models/testdata` (copies of shared/models, see its README)
//! and on deliberately truncated or corrupted copies written to a temp dir.

use std::path::Path;

use cranegrad_models::loader::{
    GenerationConfig, GgufFile, HostTensor, IntTensor, LlamaConfig, LoadError, MAX_POSITIONS,
    ModelConfig, ModelFormat, RopeScaling, SourceDType, WeightStore, detect_format,
    expected_tensors, load_gguf, load_gguf_bytes, load_hf_dir, load_minimind, load_model,
    load_safetensors_file, read_golden, rope_inv_freq, validate, write_golden,
};
use safetensors::{Dtype, tensor::TensorView};

// ---------------------------------------------------------------- helpers

mod common;

use common::{Scratch, td};

fn llama(cfg: &ModelConfig) -> &LlamaConfig {
    match cfg {
        ModelConfig::Llama(c) => c,
        other => panic!("expected a llama config, got {other:?}"),
    }
}

fn assert_err_mentions<T: std::fmt::Debug>(r: Result<T, LoadError>, needles: &[&str]) -> String {
    let msg = match r {
        Ok(v) => panic!("expected an error mentioning {needles:?}, got Ok({v:?})"),
        Err(e) => e.to_string(),
    };
    for n in needles {
        assert!(msg.contains(n), "error `{msg}` does not mention `{n}`");
    }
    msg
}

fn assert_bit_identical(a: &WeightStore, b: &WeightStore) {
    let names_a: Vec<_> = a.names().collect();
    let names_b: Vec<_> = b.names().collect();
    assert_eq!(names_a, names_b, "{} vs {}", a.origin(), b.origin());
    for (name, ta) in a.iter() {
        let tb = b.get(name).unwrap();
        assert_eq!(ta.shape, tb.shape, "{name}");
        let same = ta
            .data
            .iter()
            .zip(&tb.data)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(
            same,
            "{name} differs between {} and {}",
            a.origin(),
            b.origin()
        );
    }
}

/// Deterministic pseudo-random numbers, so fuzz failures reproduce.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const LLAMA_DIRS: [&str; 3] = ["llama-tiny", "llama3-tied", "llama-small"];

// ---------------------------------------------------------------- configs

#[test]
fn current_and_legacy_configs_are_equal() {
    for dir in LLAMA_DIRS {
        let cur = ModelConfig::from_file(&td(&format!("{dir}/config.json"))).unwrap();
        let old = ModelConfig::from_file(&td(&format!("{dir}/config.legacy.json"))).unwrap();
        assert_eq!(cur, old, "{dir}");
    }
}

#[test]
fn config_values_match_the_readmes() {
    let tiny = ModelConfig::from_dir(&td("llama-tiny")).unwrap();
    assert_eq!(
        *llama(&tiny),
        LlamaConfig {
            hidden: 64,
            layers: 2,
            heads: 8,
            kv_heads: 2,
            head_dim: 8,
            intermediate: 256,
            vocab: 128,
            max_positions: 128,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: RopeScaling::None,
            tie_word_embeddings: false,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
        }
    );
    let small = ModelConfig::from_dir(&td("llama-small")).unwrap();
    let s = llama(&small);
    assert_eq!((s.hidden, s.layers, s.head_dim, s.vocab), (256, 4, 32, 512));

    let l3 = ModelConfig::from_dir(&td("llama3-tied")).unwrap();
    let c = llama(&l3);
    assert_eq!((c.heads, c.kv_heads, c.head_dim, c.vocab), (4, 2, 16, 256));
    assert_eq!(c.rope_theta, 500000.0);
    assert!(c.tie_word_embeddings);
    assert_eq!(
        c.rope_scaling,
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 32,
        }
    );

    let gpt2 = ModelConfig::from_dir(&td("gpt2-tiny")).unwrap();
    let ModelConfig::Gpt2(g) = &gpt2 else {
        panic!("gpt2-tiny is not GPT-2: {gpt2:?}")
    };
    assert_eq!((g.n_embd, g.n_layer, g.n_head, g.n_inner), (64, 2, 4, 256));
    assert_eq!((g.vocab, g.n_positions, g.head_dim()), (256, 128, 16));
    assert_eq!(g.layer_norm_epsilon, 1e-5);
    assert!(g.tie_word_embeddings);
    assert_eq!(
        (g.bos_token_id, g.eos_token_ids.as_slice()),
        (Some(255), &[255][..])
    );
}

#[test]
fn generation_config_eos_overrides_int_or_list() {
    let g = GenerationConfig::from_file(&td("llama-tiny/generation_config.json")).unwrap();
    assert_eq!(g.eos_token_ids, Some(vec![2]));

    let s = Scratch::new("gencfg");
    s.copy(&td("llama-tiny/config.json"), "config.json");
    s.write(
        "generation_config.json",
        br#"{"bos_token_id": 1, "eos_token_id": [2, 7, 9]}"#,
    );
    let cfg = ModelConfig::from_dir(&s.0).unwrap();
    assert_eq!(cfg.eos_token_ids(), &[2, 7, 9]);
    assert_eq!(cfg.bos_token_id(), Some(1));

    s.write("generation_config.json", br#"{"eos_token_id": "two"}"#);
    assert_err_mentions(
        ModelConfig::from_dir(&s.0),
        &["generation_config.json", "eos_token_id"],
    );
}

/// Writes llama-tiny's config with `edit` applied and returns the parse result.
fn edited_config(edit: impl FnOnce(&mut serde_json::Value)) -> Result<ModelConfig, LoadError> {
    let text = std::fs::read(td("llama-tiny/config.legacy.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    edit(&mut v);
    let s = Scratch::new("cfg");
    let p = s.write("config.json", &serde_json::to_vec(&v).unwrap());
    ModelConfig::from_file(&p)
}

#[test]
fn unsupported_models_and_settings_are_refused_by_name() {
    assert_err_mentions(
        edited_config(|v| v["model_type"] = "mistral".into()),
        &["config.json", "model_type", "`mistral`"],
    );
    assert_err_mentions(
        edited_config(|v| {
            v["architectures"] = serde_json::json!(["LlamaForSequenceClassification"])
        }),
        &["architectures", "LlamaForSequenceClassification"],
    );
    assert_err_mentions(
        edited_config(|v| {
            v.as_object_mut().unwrap().remove("model_type");
            v["architectures"] = serde_json::json!(["MixtralForCausalLM"]);
        }),
        &["MixtralForCausalLM"],
    );
    assert_err_mentions(
        edited_config(|v| {
            v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0})
        }),
        &["rope_scaling.rope_type", "yarn"],
    );
    assert_err_mentions(
        edited_config(|v| v["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0})),
        &["rope_scaling.type", "linear"],
    );
    assert_err_mentions(
        edited_config(|v| v["hidden_act"] = "gelu".into()),
        &["hidden_act", "gelu"],
    );
    assert_err_mentions(
        edited_config(|v| v["attention_bias"] = true.into()),
        &["attention_bias"],
    );
    assert_err_mentions(
        edited_config(|v| v["num_key_value_heads"] = 3.into()),
        &["num_key_value_heads", "3"],
    );
    assert_err_mentions(
        edited_config(|v| {
            v.as_object_mut().unwrap().remove("hidden_size");
        }),
        &["hidden_size", "missing"],
    );
    assert_err_mentions(
        edited_config(|v| v["vocab_size"] = "many".into()),
        &["vocab_size", "\"many\""],
    );
    // Legacy `type` key and a null head_dim (derived from hidden / heads) are accepted.
    let cfg = edited_config(|v| {
        v["head_dim"] = serde_json::Value::Null;
        v["rope_scaling"] = serde_json::json!({"type": "default"});
    })
    .unwrap();
    assert_eq!(llama(&cfg).head_dim, 8);
}

#[test]
fn config_errors_name_the_key_path() {
    use serde_json::json;
    let llama3 = |factor: serde_json::Value| {
        json!({"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32})
    };
    assert_err_mentions(
        edited_config(|v| v["rope_scaling"] = llama3("x".into())),
        &[
            "config.json",
            "`rope_scaling.factor`",
            "invalid type: string \"x\", expected f64",
        ],
    );
    assert_err_mentions(
        edited_config(|v| v["rope_scaling"] = llama3(serde_json::Value::Null)),
        &["`rope_scaling.factor`", "required field is missing"],
    );
    assert_err_mentions(
        edited_config(|v| {
            v.as_object_mut().unwrap().remove("rope_theta");
            v["rope_parameters"] = json!({"rope_type": "llama3", "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32.5});
        }),
        &["`rope_parameters.original_max_position_embeddings`", "32.5"],
    );
    assert_err_mentions(
        edited_config(|v| v["rope_scaling"] = json!([8.0])),
        &["`rope_scaling`", "expected an object"],
    );
    assert_err_mentions(
        edited_config(|v| {
            v["rope_parameters"] = json!({"full_attention": {"rope_type": "default"}})
        }),
        &["`rope_parameters`", "per-layer-type"],
    );
    assert_err_mentions(
        edited_config(|v| v["eos_token_id"] = json!([2, "x"])),
        &["`eos_token_id[1]`", "\"x\""],
    );
    assert_err_mentions(
        edited_config(|v| v["eos_token_id"] = json!(-1)),
        &["`eos_token_id`", "-1", "token id"],
    );
    assert_err_mentions(
        edited_config(|v| v["architectures"] = json!([7])),
        &["`architectures[0]`", "expected a string"],
    );
    assert_err_mentions(
        edited_config(|v| v["vocab_size"] = (3u64 << 30).into()),
        &["`vocab_size`", "3221225472", "implausibly large"],
    );
    assert_err_mentions(
        edited_config(|v| v["max_position_embeddings"] = 0.into()),
        &["`max_position_embeddings`", "must be positive"],
    );
    let s = Scratch::new("cfg-root");
    let p = s.write("config.json", b"[1, 2]");
    assert_err_mentions(
        ModelConfig::from_file(&p),
        &["config.json", "<root>", "an array"],
    );
    // Loose typing HF exporters produce still loads: integral floats, null for the default.
    let cfg = edited_config(|v| {
        v["vocab_size"] = json!(128.0);
        v["tie_word_embeddings"] = serde_json::Value::Null;
        v["eos_token_id"] = json!([2, 3]);
    })
    .unwrap();
    let c = llama(&cfg);
    assert_eq!((c.vocab, c.tie_word_embeddings), (128, false));
    assert_eq!(c.eos_token_ids, [2, 3]);

    // GGUF metadata goes through the same structs; errors name the GGUF key.
    let gguf = |g: GgufBuilder, needles: &[&str]| {
        let mut all = vec!["crafted.gguf"];
        all.extend_from_slice(needles);
        assert_err_mentions(gguf_result(&g), &all)
    };
    gguf(
        tiny_llama().kv_str("llama.attention.key_length", "sixteen"),
        &["`llama.attention.key_length`", "string \"sixteen\""],
    );
    gguf(
        tiny_llama().kv_u32("llama.attention.key_length", 15),
        &["`llama.attention.key_length`", "even"],
    );
    gguf(
        tiny_llama().kv_f32("tokenizer.ggml.eos_token_id", 2.5),
        &["`tokenizer.ggml.eos_token_id`", "2.5"],
    );
    gguf(
        tiny_llama().kv_str("llama.expert_count", "many"),
        &["`llama.expert_count`", "\"many\""],
    );
    gguf(
        tiny_llama().kv_u32("llama.attention.value_length", 8),
        &["`llama.attention.value_length`", "differs"],
    );
    // Without `llama.vocab_size` and `llama.rope.freq_base`: the vocabulary is read off the
    // embedding and theta is transformers' default.
    let minimal = |eps: f32| GgufBuilder {
        tensors: tiny_llama().tensors,
        ..GgufBuilder::default()
            .kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 1)
            .kv_u32("llama.context_length", 64)
            .kv_u32("llama.embedding_length", 32)
            .kv_u32("llama.feed_forward_length", 48)
            .kv_u32("llama.attention.head_count", 2)
            .kv_u32("llama.attention.head_count_kv", 1)
            .kv_f32("llama.attention.layer_norm_rms_epsilon", eps)
    };
    let (cfg, _) = gguf_result(&minimal(1e-5)).unwrap();
    assert_eq!(
        (
            cfg.vocab(),
            llama(&cfg).rope_theta,
            llama(&cfg).rms_norm_eps
        ),
        (8, 10000.0, 1e-5)
    );
    // JSON has no NaN: a NaN float reaches the config as a string and is refused by key.
    gguf(
        minimal(f32::NAN),
        &["`llama.attention.layer_norm_rms_epsilon`", "NaN"],
    );
    let (cfg, _) = gguf_result(
        &tiny_llama()
            .kv_u32("llama.attention.key_length", 16)
            .kv_u32("tokenizer.ggml.eos_token_id", 7),
    )
    .unwrap();
    assert_eq!((llama(&cfg).head_dim, cfg.eos_token_ids()), (16, &[7][..]));
}

// ---------------------------------------------------------------- RoPE

#[test]
fn rope_default_reproduces_hf_cos_sin_tables() {
    // minimind.json carries HF's own rotary tables for llama-tiny: cos(cat(freqs, freqs)).
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(td("llama-tiny/minimind.json")).unwrap()).unwrap();
    let path = td("llama-tiny/minimind.json");
    let cos = cranegrad_models::loader::minimind::decode_tensor(&doc["rope"]["cos"], &path, "cos")
        .unwrap();
    let sin = cranegrad_models::loader::minimind::decode_tensor(&doc["rope"]["sin"], &path, "sin")
        .unwrap();
    assert_eq!(cos.shape, [128, 8]);
    let cfg = ModelConfig::from_dir(&td("llama-tiny")).unwrap();
    let inv = rope_inv_freq(llama(&cfg));
    assert_eq!(inv.len(), 4);
    let mut worst = 0f32;
    for pos in 0..128 {
        for j in 0..8 {
            // HF: freqs = inv_freq @ positions in f32, then f32 cos/sin.
            let angle = pos as f32 * inv[j % 4] as f32;
            worst = worst.max((angle.cos() - cos.data[pos * 8 + j]).abs());
            worst = worst.max((angle.sin() - sin.data[pos * 8 + j]).abs());
        }
    }
    assert!(worst <= 1e-6, "max |diff| vs HF rotary tables {worst}");
    for (got, want) in inv.iter().zip([1.0, 0.1, 0.01, 0.001]) {
        assert!(((got - want) / want).abs() < 1e-6, "{got} vs {want}");
    }
}

#[test]
fn rope_llama3_matches_hand_computed_values() {
    // transformers' _compute_llama3_parameters evaluated in float64 (see the fixture README).
    let cfg = ModelConfig::from_dir(&td("llama3-tied")).unwrap();
    let mut c = llama(&cfg).clone();
    let want_32 = [
        1.0,
        0.02424034309358572,
        0.004700753866357992,
        0.0009115830921521386,
        0.00017677669529663688,
        3.428102195952591e-05,
        6.647869871181236e-06,
        1.2891731721515574e-06,
    ];
    let check = |got: Vec<f64>, want: &[f64]| {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(((g - w) / w).abs() < 2e-6, "freq {i}: {g} vs {w}");
        }
    };
    check(rope_inv_freq(&c), &want_32);
    // A longer original context puts frequency 1 in the smoothly interpolated band.
    c.rope_scaling = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 64,
    };
    let mut want_64 = want_32;
    want_64[1] = 0.0794030091792082;
    check(rope_inv_freq(&c), &want_64);
    // Without scaling the low frequencies are 8x larger than with it.
    c.rope_scaling = RopeScaling::None;
    let plain = rope_inv_freq(&c);
    assert!((plain[7] / want_32[7] - 8.0).abs() < 1e-4);
    assert_eq!(plain[0], 1.0);
}

// ---------------------------------------------------------------- HF folders

#[test]
fn every_hf_fixture_loads_and_validates() {
    for dir in ["llama-tiny", "llama3-tied", "gpt2-tiny"] {
        let (cfg, w) = load_model(&td(dir)).unwrap();
        validate(&cfg, &w).unwrap();
        let expected = expected_tensors(&cfg);
        assert_eq!(w.len(), expected.len(), "{dir}");
        let params: usize = expected
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(w.param_count(), params, "{dir}");
        assert_eq!(cfg.param_count(), params, "{dir}");
        let bytes = w.bytes_by_dtype();
        assert_eq!(bytes.len(), 1);
        assert_eq!(bytes[&SourceDType::F32], params * 4);
        assert_eq!(w.f32_bytes(), params * 4);
        assert_eq!(cfg, ModelConfig::from_dir(&td(dir)).unwrap());
    }
    let (cfg, w) = load_model(&td("llama3-tied")).unwrap();
    assert!(cfg.tie_word_embeddings());
    assert!(!w.contains("lm_head.weight"));
    let (_, w) = load_model(&td("gpt2-tiny")).unwrap();
    assert_eq!(
        w.get("transformer.h.0.attn.c_attn.weight").unwrap().shape,
        [64, 192]
    );
    assert_eq!(
        w.get("transformer.h.1.mlp.c_proj.weight").unwrap().shape,
        [256, 64]
    );
    assert!(!w.contains("lm_head.weight"));
}

#[test]
fn llama_small_names_and_shapes_match_its_config() {
    let (cfg, w) = load_model(&td("llama-small")).unwrap();
    let mut stored: Vec<(String, Vec<usize>)> = w
        .iter()
        .map(|(n, t)| (n.to_string(), t.shape.clone()))
        .collect();
    stored.sort();
    let mut expected = expected_tensors(&cfg);
    expected.sort();
    assert_eq!(stored, expected);
}

/// Serialises `tensors` (name, dtype, shape, bytes) as a safetensors file.
fn write_safetensors(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

fn f32_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn gpt2_unprefixed_hub_layout_loads_to_the_same_store() {
    let (cfg, reference) = load_model(&td("gpt2-tiny")).unwrap();
    let mut tensors: Vec<_> = reference
        .iter()
        .map(|(n, t)| {
            (
                n.strip_prefix("transformer.").unwrap().to_string(),
                Dtype::F32,
                t.shape.clone(),
                f32_bytes(&t.data),
            )
        })
        .collect();
    // Old Hub checkpoints also saved the causal-mask buffers; they are not parameters.
    tensors.push((
        "h.0.attn.bias".into(),
        Dtype::F32,
        vec![1, 1, 4, 4],
        vec![0; 64],
    ));
    tensors.push((
        "h.1.attn.masked_bias".into(),
        Dtype::F32,
        vec![],
        vec![0; 4],
    ));
    let s = Scratch::new("gpt2hub");
    s.copy(&td("gpt2-tiny/config.json"), "config.json");
    write_safetensors(&s.path("model.safetensors"), &tensors);
    let (cfg2, w) = load_model(&s.0).unwrap();
    assert_eq!(
        cfg.clone(),
        ModelConfig::from_file(&td("gpt2-tiny/config.json")).unwrap()
    );
    assert_eq!(
        cfg2,
        ModelConfig::from_file(&td("gpt2-tiny/config.json")).unwrap()
    );
    assert_bit_identical(&w, &reference);
}

#[test]
fn sharded_folder_loads_like_the_single_file() {
    let (_, reference) = load_model(&td("llama-tiny")).unwrap();
    let s = Scratch::new("shards");
    s.copy(&td("llama-tiny/config.json"), "config.json");
    let all: Vec<_> = reference
        .iter()
        .map(|(n, t)| {
            (
                n.to_string(),
                Dtype::F32,
                t.shape.clone(),
                f32_bytes(&t.data),
            )
        })
        .collect();
    let (a, b) = all.split_at(all.len() / 2);
    write_safetensors(&s.path("model-00001-of-00002.safetensors"), a);
    write_safetensors(&s.path("model-00002-of-00002.safetensors"), b);
    let mut map = serde_json::Map::new();
    for (part, file) in [
        (a, "model-00001-of-00002.safetensors"),
        (b, "model-00002-of-00002.safetensors"),
    ] {
        for (n, ..) in part {
            map.insert(n.clone(), file.into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    let write_index = |v: &serde_json::Value| {
        s.write(
            "model.safetensors.index.json",
            &serde_json::to_vec(v).unwrap(),
        )
    };
    write_index(&index);
    let (_, w) = load_model(&s.0).unwrap();
    assert_bit_identical(&w, &reference);
    // The index path itself also stands for the folder.
    let (_, w2) = load_model(&s.path("model.safetensors.index.json")).unwrap();
    assert_bit_identical(&w2, &reference);

    let mut escaping = index.clone();
    escaping["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors".into();
    write_index(&escaping);
    assert_err_mentions(
        load_model(&s.0),
        &[
            "model.safetensors.index.json",
            "model.norm.weight",
            "../elsewhere",
        ],
    );

    let mut ghost = index.clone();
    ghost["weight_map"]["model.layers.9.mlp.up_proj.weight"] =
        "model-00001-of-00002.safetensors".into();
    write_index(&ghost);
    assert_err_mentions(
        load_model(&s.0),
        &[
            "model-00001-of-00002.safetensors",
            "model.layers.9.mlp.up_proj.weight",
            "absent",
        ],
    );
}

#[test]
fn f16_and_bf16_checkpoints_widen_exactly() {
    let (_, reference) = load_model(&td("llama-tiny")).unwrap();
    let s = Scratch::new("half");
    s.copy(&td("llama-tiny/config.json"), "config.json");
    let mut want = WeightStore::new("want");
    let tensors: Vec<_> = reference
        .iter()
        .enumerate()
        .map(|(i, (n, t))| {
            let (dtype, bytes, widened, src): (Dtype, Vec<u8>, Vec<f32>, SourceDType) = if i % 2
                == 0
            {
                let h: Vec<half::f16> = t.data.iter().map(|&x| half::f16::from_f32(x)).collect();
                (
                    Dtype::F16,
                    h.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    h.iter().map(|v| v.to_f32()).collect(),
                    SourceDType::F16,
                )
            } else {
                let h: Vec<half::bf16> = t.data.iter().map(|&x| half::bf16::from_f32(x)).collect();
                (
                    Dtype::BF16,
                    h.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    h.iter().map(|v| v.to_f32()).collect(),
                    SourceDType::BF16,
                )
            };
            want.insert(n, HostTensor::new(t.shape.clone(), widened, src).unwrap())
                .unwrap();
            (n.to_string(), dtype, t.shape.clone(), bytes)
        })
        .collect();
    write_safetensors(&s.path("model.safetensors"), &tensors);
    let (_, w) = load_model(&s.0).unwrap();
    assert_bit_identical(&w, &want);
    for (n, t) in w.iter() {
        assert_eq!(t.source_dtype, want.get(n).unwrap().source_dtype, "{n}");
    }
    let bytes = w.bytes_by_dtype();
    assert_eq!(bytes.values().sum::<usize>(), w.param_count() * 2);
    assert!(bytes.contains_key(&SourceDType::F16) && bytes.contains_key(&SourceDType::BF16));
}

// ---------------------------------------------------------------- GGUF and minimind

#[test]
fn safetensors_gguf_f32_and_minimind_are_bit_identical() {
    let (hf_cfg, hf) = load_model(&td("llama-tiny")).unwrap();
    let (gguf_cfg, gguf) = load_model(&td("llama-tiny/model-f32.gguf")).unwrap();
    let (mm_cfg, mm) = load_model(&td("llama-tiny/minimind.json")).unwrap();
    assert_bit_identical(&gguf, &hf);
    assert_bit_identical(&mm, &hf);
    // GGUF metadata (f32 eps, tokenizer ids, no lm_head => untied) gives the same config.
    assert_eq!(gguf_cfg, hf_cfg);
    // minimind has no special tokens; everything else agrees.
    let mut mm_llama = llama(&mm_cfg).clone();
    assert_eq!(
        (mm_llama.bos_token_id, mm_llama.eos_token_ids.len()),
        (None, 0)
    );
    mm_llama.bos_token_id = Some(1);
    mm_llama.eos_token_ids = vec![2];
    assert_eq!(ModelConfig::Llama(mm_llama), hf_cfg);
    // The q/k un-permutation really moved rows (the raw GGUF rows differ from HF's).
    let bytes = std::fs::read(td("llama-tiny/model-f32.gguf")).unwrap();
    let file = GgufFile::parse(&bytes, &td("llama-tiny/model-f32.gguf")).unwrap();
    let raw_q = file
        .read_tensor(&bytes, file.tensor("blk.0.attn_q.weight").unwrap())
        .unwrap();
    assert_eq!(raw_q.shape, [64, 64]);
    assert_ne!(
        raw_q.data,
        hf.get("model.layers.0.self_attn.q_proj.weight")
            .unwrap()
            .data
    );
    assert_eq!(file.version, 3);
    assert_eq!(file.alignment, 32);
    assert_eq!(file.data_offset, 5152);
    assert_eq!(
        file.get("general.name").and_then(|v| v.as_str()),
        Some("llama-tiny")
    );
    let tokens = file
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.as_array())
        .unwrap();
    assert_eq!(tokens.len(), 128);
}

#[test]
fn q8_0_weights_are_within_quantisation_error() {
    let (_, hf) = load_model(&td("llama-tiny")).unwrap();
    let (cfg, q8) = load_gguf(&td("llama-tiny/model-q8_0.gguf")).unwrap();
    assert_eq!(cfg, ModelConfig::from_dir(&td("llama-tiny")).unwrap());
    assert_eq!(
        q8.names().collect::<Vec<_>>(),
        hf.names().collect::<Vec<_>>()
    );
    let mut quantised = 0;
    let mut worst_ratio = 0f32;
    for (name, t) in q8.iter() {
        let r = hf.get(name).unwrap();
        assert_eq!(t.shape, r.shape, "{name}");
        match t.source_dtype {
            SourceDType::F32 => assert_eq!(t.data, r.data, "{name} (F32 in the Q8_0 file)"),
            SourceDType::Q8_0 => {
                quantised += 1;
                // Rows are multiples of 32 and un-permuting moves whole rows, so blocks of 32
                // consecutive values are the quantisation blocks.
                for (bq, br) in t.data.chunks(32).zip(r.data.chunks(32)) {
                    let amax = br.iter().fold(0f32, |m, x| m.max(x.abs()));
                    // d = amax/127 rounded to f16 (rel. error <= 2^-11, times |q| <= 127).
                    let d = amax / 127.0;
                    let bound = d * (0.5 + 127.0 / 2048.0) + 1e-9;
                    for (a, b) in bq.iter().zip(br) {
                        let diff = (a - b).abs();
                        assert!(diff <= bound, "{name}: |{a} - {b}| > {bound}");
                        if d > 0.0 {
                            worst_ratio = worst_ratio.max(diff / d);
                        }
                    }
                }
            }
            other => panic!("{name}: unexpected source dtype {other}"),
        }
    }
    assert_eq!(quantised, 2 * 7 + 2, "every matrix is Q8_0");
    assert!(
        worst_ratio > 0.1,
        "Q8_0 looks unquantised (worst diff/d {worst_ratio})"
    );
    let bytes = q8.bytes_by_dtype();
    assert_eq!(bytes[&SourceDType::F32], 5 * 64 * 4);
}

#[test]
fn golden_files_read_with_the_right_shapes() {
    let cases = [
        ("llama-tiny", [2, 5], 21, 128, 64),
        ("llama-small", [1, 33], 49, 512, 256),
        ("llama3-tied", [2, 12], 28, 256, 64),
        ("gpt2-tiny", [2, 9], 25, 256, 64),
    ];
    for (dir, [b, s], t, v, h) in cases {
        let g = read_golden(&td(&format!("{dir}/golden.safetensors"))).unwrap();
        assert_eq!(g.input_ids.shape, [b, s], "{dir}");
        assert_eq!(g.logits.shape, [b, s, v], "{dir}");
        let generated = g.generated.as_ref().unwrap();
        assert_eq!(generated.shape, [b, t], "{dir}");
        assert_eq!(
            g.logits_generated.as_ref().unwrap().shape,
            [b, t, v],
            "{dir}"
        );
        assert_eq!(
            g.hidden_after_layer0.as_ref().unwrap().shape,
            [b, s, h],
            "{dir}"
        );
        for row in 0..b {
            let prompt = g.input_ids.row(row).unwrap();
            assert_eq!(&generated.row(row).unwrap()[..s], prompt, "{dir} row {row}");
        }
    }
    // minimind.json repeats llama-tiny's golden inputs and logits.
    let g = read_golden(&td("llama-tiny/golden.safetensors")).unwrap();
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(td("llama-tiny/minimind.json")).unwrap()).unwrap();
    let path = td("llama-tiny/minimind.json");
    let decode = |v: &serde_json::Value| {
        cranegrad_models::loader::minimind::decode_tensor(v, &path, "t").unwrap()
    };
    assert_eq!(decode(&doc["reference"]["logits"]).data, g.logits.data);
    let ids: Vec<i64> = decode(&doc["inputs"]["input_ids"])
        .data
        .iter()
        .map(|&x| x as i64)
        .collect();
    assert_eq!(ids, g.input_ids.data);
}

#[test]
fn write_golden_round_trips() {
    let g = read_golden(&td("gpt2-tiny/golden.safetensors")).unwrap();
    let s = Scratch::new("golden");
    let p = s.path("out.safetensors");
    write_golden(&p, &g.input_ids, &g.logits, g.generated.as_ref()).unwrap();
    let back = read_golden(&p).unwrap();
    assert_eq!(back.input_ids, g.input_ids);
    assert_eq!(back.logits, g.logits);
    assert_eq!(back.generated, g.generated);
    assert_eq!(back.logits_generated, None);
    write_golden(&p, &g.input_ids, &g.logits, None).unwrap();
    assert_eq!(read_golden(&p).unwrap().generated, None);
    // Inconsistent shapes are refused on write and on read.
    let bad_ids = IntTensor {
        shape: vec![2, 3],
        data: vec![1, 2, 3],
    };
    assert_err_mentions(
        write_golden(&p, &bad_ids, &g.logits, None),
        &["input_ids", "[2, 3]"],
    );
    let short_ids = IntTensor::new(vec![1, 9], vec![0; 9]).unwrap();
    write_golden(&p, &short_ids, &g.logits, None).unwrap();
    assert_err_mentions(read_golden(&p), &["out.safetensors", "logits", "[1, 9, V]"]);
}

// ---------------------------------------------------------------- validation and the store

#[test]
fn validate_names_missing_mismatched_and_unexpected_tensors() {
    let (cfg, w) = load_model(&td("llama-tiny")).unwrap();

    let mut missing = w.clone();
    missing.take("model.layers.1.mlp.up_proj.weight").unwrap();
    assert_err_mentions(
        validate(&cfg, &missing),
        &["model.layers.1.mlp.up_proj.weight", "missing"],
    );

    let mut reshaped = w.clone();
    let mut t = reshaped
        .take("model.layers.0.self_attn.k_proj.weight")
        .unwrap();
    t.shape = vec![64, 16];
    reshaped
        .insert("model.layers.0.self_attn.k_proj.weight", t)
        .unwrap();
    assert_err_mentions(
        validate(&cfg, &reshaped),
        &[
            "model.layers.0.self_attn.k_proj.weight",
            "[64, 16]",
            "[16, 64]",
        ],
    );

    let mut extra = w.clone();
    extra
        .insert(
            "model.layers.0.self_attn.q_proj.bias",
            HostTensor::new(vec![64], vec![0.0; 64], SourceDType::F32).unwrap(),
        )
        .unwrap();
    assert_err_mentions(validate(&cfg, &extra), &["unexpected", "q_proj.bias"]);

    // Untied config without lm_head: missing; tied config with a redundant head: accepted.
    let mut headless = w.clone();
    let head = headless.take("lm_head.weight").unwrap();
    assert_err_mentions(validate(&cfg, &headless), &["lm_head.weight"]);
    let ModelConfig::Llama(mut tied) = cfg.clone() else {
        unreachable!()
    };
    tied.tie_word_embeddings = true;
    let tied = ModelConfig::Llama(tied);
    validate(&tied, &headless).unwrap();
    headless.insert("lm_head.weight", head).unwrap();
    validate(&tied, &headless).unwrap();
}

#[test]
fn weight_store_api() {
    let (_, mut w) = load_model(&td("llama-tiny")).unwrap();
    let n = w.len();
    assert_err_mentions(w.get("model.nope"), &["model.nope", "llama-tiny"]);
    let t = w.take("model.norm.weight").unwrap();
    assert_eq!(t.shape, [64]);
    assert_eq!(w.len(), n - 1);
    assert!(w.take("model.norm.weight").is_err());
    w.insert("model.norm.weight", t.clone()).unwrap();
    assert_err_mentions(
        w.insert("model.norm.weight", t),
        &["model.norm.weight", "twice"],
    );
    assert!(HostTensor::new(vec![2, 3], vec![0.0; 5], SourceDType::F32).is_err());
    assert!(HostTensor::new(vec![usize::MAX, 2], vec![], SourceDType::F32).is_err());
    let raw = load_safetensors_file(&td("llama3-tied/model.safetensors")).unwrap();
    assert_eq!(raw.len(), 2 * 9 + 2);
}

// ---------------------------------------------------------------- format detection

#[test]
fn formats_are_recognised_by_content() {
    let s = Scratch::new("detect");
    let gguf = s.copy(&td("llama-tiny/model-f32.gguf"), "weights.bin");
    assert_eq!(
        detect_format(&gguf).unwrap(),
        ModelFormat::Gguf(gguf.clone())
    );
    let mm = s.copy(&td("llama-tiny/minimind.json"), "model.dat");
    assert_eq!(
        detect_format(&mm).unwrap(),
        ModelFormat::Minimind(mm.clone())
    );
    let (_, a) = load_model(&gguf).unwrap();
    let (_, b) = load_model(&mm).unwrap();
    assert_bit_identical(&a, &b);

    let st = s.copy(&td("llama-tiny/model.safetensors"), "blob.data");
    assert_err_mentions(detect_format(&st), &["blob.data", "config.json"]);
    let cfg = s.copy(&td("llama-tiny/config.json"), "config.json");
    assert_eq!(
        detect_format(&st).unwrap(),
        ModelFormat::Safetensors(st.clone())
    );
    let (_, c) = load_model(&st).unwrap();
    assert_bit_identical(&a, &c);
    assert_eq!(
        detect_format(&cfg).unwrap(),
        ModelFormat::HfDir(s.0.clone())
    );
    assert_eq!(
        detect_format(&td("gpt2-tiny")).unwrap(),
        ModelFormat::HfDir(td("gpt2-tiny"))
    );

    let txt = s.write("notes.txt", b"hello, not a model");
    assert_err_mentions(load_model(&txt), &["notes.txt", "not a recognised model"]);
    let json = s.write("other.json", br#"{"hello": 1}"#);
    assert_err_mentions(load_model(&json), &["other.json", "JSON"]);
    let empty = s.write("empty", b"");
    assert_err_mentions(load_model(&empty), &["empty"]);
    assert_err_mentions(load_model(&s.path("absent")), &["absent"]);
    let sub = s.path("sub");
    std::fs::create_dir(&sub).unwrap();
    assert_err_mentions(load_model(&sub), &["sub", "config.json"]);
}

// ---------------------------------------------------------------- truncation

fn truncation_points(len: usize, extra: &[usize]) -> Vec<usize> {
    let mut pts = vec![
        0,
        1,
        3,
        4,
        7,
        8,
        9,
        12,
        16,
        20,
        23,
        24,
        31,
        64,
        100,
        1000,
        len / 2,
    ];
    pts.extend((1..=8).map(|k| len - k));
    pts.extend(extra.iter().flat_map(|&e| [e.saturating_sub(1), e, e + 1]));
    pts.retain(|&p| p < len);
    pts.sort();
    pts.dedup();
    pts
}

#[test]
fn truncated_safetensors_folders_fail_with_the_file_name() {
    let full = std::fs::read(td("llama-tiny/model.safetensors")).unwrap();
    let header_end = 8 + u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;
    let s = Scratch::new("trunc-st");
    s.copy(&td("llama-tiny/config.json"), "config.json");
    for cut in truncation_points(full.len(), &[header_end]) {
        s.write("model.safetensors", &full[..cut]);
        let msg = assert_err_mentions(load_model(&s.0), &["model.safetensors"]);
        assert!(!msg.is_empty(), "cut {cut}");
    }
    // Every cut inside the header, through the single-file API.
    for cut in (0..header_end).step_by(13) {
        let p = s.write("model.safetensors", &full[..cut]);
        assert!(load_safetensors_file(&p).is_err(), "cut {cut}");
    }
}

#[test]
fn truncated_gguf_fails_with_the_file_name() {
    for file in ["model-f32.gguf", "model-q8_0.gguf"] {
        let path = td(&format!("llama-tiny/{file}"));
        let full = std::fs::read(&path).unwrap();
        // In memory: every cut through the header and the first tensors.
        for cut in (0..6000).chain((6000..full.len()).step_by(997)) {
            let r = load_gguf_bytes(&full[..cut], &path);
            assert!(r.is_err(), "{file} cut at {cut} loaded");
        }
        // On disk, through load_model (content detection included).
        let s = Scratch::new("trunc-gguf");
        for cut in truncation_points(full.len(), &[5141, 5152]) {
            let p = s.write(file, &full[..cut]);
            assert_err_mentions(load_model(&p), &[file]);
        }
    }
}

#[test]
fn truncated_minimind_and_golden_fail_with_the_file_name() {
    let s = Scratch::new("trunc-misc");
    let mm = std::fs::read(td("llama-tiny/minimind.json")).unwrap();
    for cut in truncation_points(mm.len(), &[]) {
        let p = s.write("minimind.json", &mm[..cut]);
        assert_err_mentions(load_minimind(&p), &["minimind.json"]);
        assert_err_mentions(load_model(&p), &["minimind.json"]);
    }
    let golden = std::fs::read(td("llama-tiny/golden.safetensors")).unwrap();
    for cut in truncation_points(golden.len(), &[568]) {
        let p = s.write("golden.safetensors", &golden[..cut]);
        assert_err_mentions(read_golden(&p), &["golden.safetensors"]);
    }
}

// ---------------------------------------------------------------- corrupt safetensors

#[test]
fn corrupt_safetensors_headers_are_errors() {
    let s = Scratch::new("bad-st");
    s.copy(&td("gpt2-tiny/config.json"), "config.json");
    let with_header = |header: &str, data_len: usize| {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend(std::iter::repeat_n(0u8, data_len));
        s.write("model.safetensors", &b)
    };
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    let p = s.write("model.safetensors", &huge);
    assert_err_mentions(
        load_safetensors_file(&p),
        &["model.safetensors", "header length"],
    );

    let p = with_header("{not json", 0);
    assert_err_mentions(load_safetensors_file(&p), &["model.safetensors", "JSON"]);

    let p = with_header(
        r#"{"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,16]}}"#,
        16,
    );
    assert_err_mentions(
        load_safetensors_file(&p),
        &["model.safetensors", "`w`", "overflow"],
    );

    let p = with_header(
        r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,64]}}"#,
        16,
    );
    assert_err_mentions(load_safetensors_file(&p), &["`w`", "data_offsets"]);

    let p = with_header(
        r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
        16,
    );
    assert_err_mentions(load_safetensors_file(&p), &["`w`", "needs 12 bytes"]);

    let p = with_header(
        r#"{"w":{"dtype":"BOOL","shape":[16],"data_offsets":[0,16]}}"#,
        16,
    );
    assert_err_mentions(load_safetensors_file(&p), &["`w`", "BOOL", "not supported"]);

    let p = with_header(
        r#"{"w":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#,
        0,
    );
    assert_err_mentions(load_safetensors_file(&p), &["`w`"]);

    // Integer tensors are never weights, even when every value fits an f32.
    let mut b = Vec::new();
    let header = r#"{"w":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#;
    b.extend((header.len() as u64).to_le_bytes());
    b.extend(header.as_bytes());
    b.extend(7i64.to_le_bytes());
    b.extend(8i64.to_le_bytes());
    let p = s.write("model.safetensors", &b);
    assert_err_mentions(
        load_safetensors_file(&p),
        &["model.safetensors", "`w`", "I64", "floating-point"],
    );
}

#[test]
fn random_byte_flips_in_safetensors_never_panic() {
    let full = std::fs::read(td("gpt2-tiny/model.safetensors")).unwrap();
    let header_end = 8 + u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;
    let s = Scratch::new("flip-st");
    s.copy(&td("gpt2-tiny/config.json"), "config.json");
    let mut rng = Lcg(7);
    for _ in 0..300 {
        let mut b = full.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(header_end);
            b[i] = rng.next() as u8;
        }
        s.write("model.safetensors", &b);
        let _ = load_model(&s.0); // Ok or Err are both fine; a panic fails the test.
    }
}

// ---------------------------------------------------------------- corrupt GGUF

/// A minimal GGUF writer for hand-made (and hand-broken) files.
#[derive(Default, Clone)]
struct GgufBuilder {
    version: Option<u32>,
    kv: Vec<u8>,
    n_kv: u64,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    alignment: Option<u64>,
    n_tensors_override: Option<u64>,
    n_kv_override: Option<u64>,
}

fn gstr(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(s.as_bytes());
    b
}

impl GgufBuilder {
    fn kv_raw(mut self, key: &str, ty: u32, value: &[u8]) -> Self {
        self.kv.extend(gstr(key));
        self.kv.extend(ty.to_le_bytes());
        self.kv.extend_from_slice(value);
        self.n_kv += 1;
        self
    }

    fn kv_u32(self, key: &str, v: u32) -> Self {
        self.kv_raw(key, 4, &v.to_le_bytes())
    }

    fn kv_f32(self, key: &str, v: f32) -> Self {
        self.kv_raw(key, 6, &v.to_le_bytes())
    }

    fn kv_str(self, key: &str, v: &str) -> Self {
        self.kv_raw(key, 8, &gstr(v))
    }

    fn tensor(mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> Self {
        self.tensors.push((name.into(), dims.to_vec(), ty, data));
        self
    }

    fn f32_tensor(self, name: &str, dims: &[u64], rng: &mut Lcg) -> Self {
        let n: u64 = dims.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| (rng.below(2000) as f32 - 1000.0) / 1e4)
            .collect();
        self.tensor(name, dims, 0, f32_bytes(&data))
    }

    fn build(&self) -> Vec<u8> {
        let align = self.alignment.unwrap_or(32).max(1);
        let mut b = b"GGUF".to_vec();
        b.extend(self.version.unwrap_or(3).to_le_bytes());
        b.extend(
            self.n_tensors_override
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        b.extend(self.n_kv_override.unwrap_or(self.n_kv).to_le_bytes());
        b.extend(&self.kv);
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, data) in &self.tensors {
            b.extend(gstr(name));
            b.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(ty.to_le_bytes());
            b.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).next_multiple_of(align);
        }
        while !(b.len() as u64).is_multiple_of(align) {
            b.push(0);
        }
        let start = b.len() as u64;
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            b.resize((start + off) as usize, 0);
            b.extend(data);
        }
        b
    }
}

/// A valid 1-layer llama GGUF: hidden 32, 2 heads of 16, 1 kv head, ffn 48, vocab 8.
fn tiny_llama() -> GgufBuilder {
    tiny_llama_with_context(64)
}

/// `tiny_llama` declaring `context` positions.
fn tiny_llama_with_context(context: u32) -> GgufBuilder {
    let mut rng = Lcg(42);
    let mut g = GgufBuilder::default()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 1)
        .kv_u32("llama.context_length", context)
        .kv_u32("llama.embedding_length", 32)
        .kv_u32("llama.feed_forward_length", 48)
        .kv_u32("llama.attention.head_count", 2)
        .kv_u32("llama.attention.head_count_kv", 1)
        .kv_f32("llama.rope.freq_base", 10000.0)
        .kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-6)
        .kv_u32("llama.vocab_size", 8);
    for (name, dims) in [
        ("token_embd.weight", vec![32, 8]),
        ("blk.0.attn_norm.weight", vec![32]),
        ("blk.0.attn_q.weight", vec![32, 32]),
        ("blk.0.attn_k.weight", vec![32, 16]),
        ("blk.0.attn_v.weight", vec![32, 16]),
        ("blk.0.attn_output.weight", vec![32, 32]),
        ("blk.0.ffn_norm.weight", vec![32]),
        ("blk.0.ffn_gate.weight", vec![32, 48]),
        ("blk.0.ffn_up.weight", vec![32, 48]),
        ("blk.0.ffn_down.weight", vec![48, 32]),
        ("output_norm.weight", vec![32]),
    ] {
        g = g.f32_tensor(name, &dims, &mut rng);
    }
    g
}

fn gguf_result(g: &GgufBuilder) -> Result<(ModelConfig, WeightStore), LoadError> {
    load_gguf_bytes(&g.build(), Path::new("crafted.gguf"))
}

#[test]
fn hand_made_gguf_loads_with_tied_head_and_unpermuted_rows() {
    let g = tiny_llama();
    let bytes = g.build();
    let (cfg, w) = load_gguf_bytes(&bytes, Path::new("crafted.gguf")).unwrap();
    let c = llama(&cfg);
    assert!(c.tie_word_embeddings, "no output.weight means tied");
    assert_eq!(
        (c.head_dim, c.kv_heads, c.vocab, c.rms_norm_eps),
        (16, 1, 8, 1e-6)
    );
    // Un-permutation: HF row h*8 + i of each 16-row head is GGUF row 2i + h.
    let file = GgufFile::parse(&bytes, Path::new("crafted.gguf")).unwrap();
    let raw = file
        .read_tensor(&bytes, file.tensor("blk.0.attn_q.weight").unwrap())
        .unwrap();
    let hf = w.get("model.layers.0.self_attn.q_proj.weight").unwrap();
    for head in 0..2 {
        for h in 0..2 {
            for i in 0..8 {
                let hf_row = head * 16 + h * 8 + i;
                let gg_row = head * 16 + 2 * i + h;
                assert_eq!(hf.data[hf_row * 32..][..32], raw.data[gg_row * 32..][..32]);
            }
        }
    }
    // llama.cpp's encoding of llama3 scaling: per-frequency divisors.
    let factors: Vec<f32> = (0..8).map(|i| 1.0 + i as f32).collect();
    let g2 = tiny_llama().tensor("rope_freqs.weight", &[8], 0, f32_bytes(&factors));
    let (cfg2, w2) = gguf_result(&g2).unwrap();
    let inv_plain = rope_inv_freq(llama(&cfg));
    let inv_scaled = rope_inv_freq(llama(&cfg2));
    for i in 0..8 {
        assert!((inv_plain[i] / inv_scaled[i] - (1.0 + i as f64)).abs() < 1e-5);
    }
    assert!(!w2.contains("rope_freqs.weight"));
}

#[test]
fn corrupt_gguf_headers_are_errors_naming_file_and_tensor() {
    let base = tiny_llama();
    gguf_result(&base).unwrap();
    let check = |g: &GgufBuilder, needles: &[&str]| {
        let mut all = vec!["crafted.gguf"];
        all.extend_from_slice(needles);
        assert_err_mentions(gguf_result(g), &all);
    };

    check(
        &GgufBuilder {
            n_tensors_override: Some(u64::MAX),
            ..base.clone()
        },
        &["tensor count"],
    );
    check(
        &GgufBuilder {
            n_tensors_override: Some(1 << 40),
            ..base.clone()
        },
        &["tensor count"],
    );
    check(
        &GgufBuilder {
            n_kv_override: Some(u64::MAX / 2),
            ..base.clone()
        },
        &["metadata count"],
    );
    check(
        &GgufBuilder {
            version: Some(1),
            ..base.clone()
        },
        &["v1"],
    );
    check(
        &GgufBuilder {
            version: Some(7),
            ..base.clone()
        },
        &["version 7"],
    );
    check(
        &GgufBuilder {
            version: Some(3u32.swap_bytes()),
            ..base.clone()
        },
        &["big-endian"],
    );

    let mut bad_magic = base.build();
    bad_magic[0] = b'X';
    assert_err_mentions(
        load_gguf_bytes(&bad_magic, Path::new("crafted.gguf")),
        &["magic"],
    );

    // Huge key length, huge string value, huge array, unknown types, deep nesting.
    let mut huge_key = base.clone();
    huge_key.kv.extend((u64::MAX - 3).to_le_bytes());
    huge_key.n_kv += 1;
    check(&huge_key, &["string length"]);
    check(
        &base.clone().kv_raw("x.str", 8, &(1u64 << 62).to_le_bytes()),
        &["x.str", "string length"],
    );
    let mut arr = 4u32.to_le_bytes().to_vec();
    arr.extend((u64::MAX / 2).to_le_bytes());
    check(
        &base.clone().kv_raw("x.arr", 9, &arr),
        &["x.arr", "array length"],
    );
    let mut str_arr = 8u32.to_le_bytes().to_vec();
    str_arr.extend(2u64.to_le_bytes());
    str_arr.extend(gstr("ok"));
    str_arr.extend((1u64 << 40).to_le_bytes());
    check(
        &base.clone().kv_raw("x.strs", 9, &str_arr),
        &["element 1 of `x.strs`"],
    );
    check(
        &base.clone().kv_raw("x.odd", 13, &[0; 8]),
        &["x.odd", "unknown metadata value type 13"],
    );
    let mut nested = Vec::new();
    for _ in 0..20 {
        nested.extend(9u32.to_le_bytes());
        nested.extend(1u64.to_le_bytes());
    }
    nested.extend(4u32.to_le_bytes());
    nested.extend(0u64.to_le_bytes());
    check(
        &base.clone().kv_raw("x.deep", 9, &nested[12..]),
        &["x.deep", "nested"],
    );
    check(
        &base.clone().kv_u32("llama.block_count", 2),
        &["llama.block_count", "twice"],
    );

    // Alignment must be a power of two.
    check(
        &base.clone().kv_u32("general.alignment", 0),
        &["general.alignment"],
    );
    check(
        &base.clone().kv_u32("general.alignment", 24),
        &["general.alignment"],
    );
    let aligned = GgufBuilder {
        alignment: Some(64),
        ..base.clone().kv_u32("general.alignment", 64)
    };
    gguf_result(&aligned).unwrap();

    // Tensor table: dims, overflow, bounds, duplicates, types.
    let mut rng = Lcg(1);
    let with = |name: &str, dims: &[u64], ty: u32, data: Vec<u8>| {
        base.clone().tensor(name, dims, ty, data)
    };
    check(
        &with("blk.0.big", &[1 << 33, 1 << 33], 0, vec![]),
        &["`blk.0.big`", "overflow"],
    );
    check(
        &with("blk.0.big", &[u64::MAX, 2], 0, vec![]),
        &["`blk.0.big`", "overflow"],
    );
    check(
        &with("blk.0.long", &[1 << 30, 4], 0, vec![]),
        &["`blk.0.long`", "runs past the end"],
    );
    check(
        &with("blk.0.dims", &[1, 1, 1, 1, 1], 0, vec![0; 4]),
        &["`blk.0.dims`", "5 dimensions"],
    );
    check(
        &with("blk.0.q8", &[48, 2], 8, vec![0; 34 * 3]),
        &["`blk.0.q8`", "multiple of 32"],
    );
    check(
        &base
            .clone()
            .f32_tensor("output_norm.weight", &[32], &mut rng),
        &["`output_norm.weight`", "twice"],
    );
    // A type the loader does not decode (Q2_K) is named; a K-quant whose rows are not
    // whole 256-value super-blocks is refused by shape.
    for (ty, needles) in [
        (10, ["Q2_K", "not supported"]),
        (12, ["Q4_K", "multiple of 256"]),
    ] {
        let mut other = base.clone();
        other
            .tensors
            .iter_mut()
            .find(|t| t.0 == "blk.0.ffn_up.weight")
            .unwrap()
            .2 = ty;
        check(&other, &["`blk.0.ffn_up.weight`", needles[0], needles[1]]);
    }
    check(
        &with("blk.0.attn_q.bias", &[32], 0, vec![0; 128]),
        &["`blk.0.attn_q.bias`", "LLaMA"],
    );
    check(
        &with("rope_freqs.weight", &[3], 0, vec![0; 12]),
        &["rope_freqs.weight", "3 factors"],
    );

    let mut misaligned = base.build();
    // The first tensor's offset is the last 8 bytes of its info; make it 4.
    let info_end = {
        let file = GgufFile::parse(&misaligned, Path::new("crafted.gguf")).unwrap();
        let t0 = &file.tensors[0];
        assert_eq!(t0.name, "token_embd.weight");
        // name (8 + len) + n_dims (4) + dims (16) + type (4) + offset (8) after the kv block.
        let kv_end = 24 + base.kv.len();
        kv_end + 8 + t0.name.len() + 4 + 16 + 4
    };
    misaligned[info_end..info_end + 8].copy_from_slice(&4u64.to_le_bytes());
    assert_err_mentions(
        load_gguf_bytes(&misaligned, Path::new("crafted.gguf")),
        &["`token_embd.weight`", "alignment"],
    );
    misaligned[info_end..info_end + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    assert_err_mentions(
        load_gguf_bytes(&misaligned, Path::new("crafted.gguf")),
        &["`token_embd.weight`", "runs past the end"],
    );

    // Config metadata: wrong architecture, missing or inconsistent keys.
    let arch = {
        let mut g = base.clone();
        let needle = gstr("llama");
        let pos =
            g.kv.windows(needle.len())
                .position(|w| w == needle)
                .unwrap();
        g.kv.splice(pos..pos + needle.len(), gstr("falcon"));
        g
    };
    check(&arch, &["general.architecture", "`falcon`"]);
    check(
        &base.clone().kv_u32("llama.rope.dimension_count", 8),
        &["llama.rope.dimension_count", "partial"],
    );
    check(
        &base.clone().kv_str("llama.rope.scaling.type", "yarn"),
        &["llama.rope.scaling.type", "yarn"],
    );
    check(
        &base.clone().kv_u32("llama.expert_count", 8),
        &["llama.expert_count"],
    );
}

#[test]
fn real_gguf_with_patched_counts_is_refused() {
    let path = td("llama-tiny/model-f32.gguf");
    let full = std::fs::read(&path).unwrap();
    for (offset, value, needle) in [
        (8, u64::MAX, "tensor count"),
        (8, 1u64 << 32, "tensor count"),
        (16, u64::MAX, "metadata count"),
        (16, 30, "metadata entry"),
        // First key length (`general.architecture`, 20 bytes) blown up.
        (24, 1u64 << 63, "string length"),
    ] {
        let mut b = full.clone();
        b[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
        assert_err_mentions(load_gguf_bytes(&b, &path), &["model-f32.gguf", needle]);
    }
    // One tensor count too few leaves the data section misread; too many runs off the header.
    let mut b = full.clone();
    b[8..16].copy_from_slice(&22u64.to_le_bytes());
    assert!(load_gguf_bytes(&b, &path).is_err());
    assert!(load_gguf(&path).is_ok());
}

#[test]
fn random_byte_flips_in_gguf_never_panic() {
    for file in ["model-f32.gguf", "model-q8_0.gguf"] {
        let path = td(&format!("llama-tiny/{file}"));
        let full = std::fs::read(&path).unwrap();
        let mut rng = Lcg(file.len() as u64);
        let mut loaded = 0;
        for _ in 0..1500 {
            let mut b = full.clone();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(5200);
                b[i] = match rng.below(4) {
                    0 => 0xff,
                    1 => 0,
                    _ => rng.next() as u8,
                };
            }
            if load_gguf_bytes(&b, &path).is_ok() {
                loaded += 1;
            }
        }
        // Flips in string contents (e.g. token texts) leave a loadable model; most do not.
        assert!(loaded < 1500, "{file}: every corrupted copy loaded");
    }
    // Also flip bytes of a tensor-info-heavy crafted file.
    let base = tiny_llama().build();
    let mut rng = Lcg(3);
    for _ in 0..1500 {
        let mut b = base.clone();
        let i = rng.below(b.len().min(1200));
        b[i] ^= 1 << rng.below(8);
        let _ = load_gguf_bytes(&b, Path::new("crafted.gguf"));
    }
}

#[test]
fn hf_dir_with_mismatched_weights_is_refused() {
    // llama-tiny weights under llama3-tied's config: shapes disagree, error names both.
    let s = Scratch::new("mismatch");
    s.copy(&td("llama3-tied/config.json"), "config.json");
    s.copy(&td("llama-tiny/model.safetensors"), "model.safetensors");
    assert_err_mentions(
        load_hf_dir(&s.0),
        &["model.embed_tokens.weight", "[128, 64]", "[256, 64]"],
    );
}

#[test]
fn hf_tokenizer_matches_its_golden_ids() {
    use cranegrad_models::tokenizer::Tokenizer;
    let t = Tokenizer::from_file(&td("llama-small/tokenizer.json")).unwrap();
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(td("llama-small/tokenizer_golden.json")).unwrap(),
    )
    .unwrap();
    let cases = golden.as_array().unwrap();
    assert!(!cases.is_empty());
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<i32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap() as i32)
            .collect();
        assert_eq!(t.encode(text).unwrap(), want, "{text:?}");
        assert_eq!(t.decode_bytes(&want).unwrap(), text.as_bytes(), "{text:?}");
    }
    // Byte-level: reversible, and a byte outside the vocabulary is an error.
    let b = Tokenizer::bytes(256);
    let ids = b.encode("héllo").unwrap();
    assert_eq!(b.decode_bytes(&ids).unwrap(), "héllo".as_bytes());
    assert_eq!(b.decode_bytes(&[300]).unwrap(), b"<|300|>");
    let e = Tokenizer::bytes(128).encode("é").unwrap_err().to_string();
    assert!(e.contains("195") && e.contains("128"), "{e}");
}

// ---------------------------------------------------------------- dtypes, bounds, F16 GGUF

#[test]
fn integer_weight_tensors_are_refused_naming_tensor_and_dtype() {
    let (_, reference) = load_model(&td("llama-tiny")).unwrap();
    let s = Scratch::new("int-weights");
    s.copy(&td("llama-tiny/config.json"), "config.json");
    // model.norm.weight holds small integers (exact in f32), so only the dtype is wrong.
    let with_norm_as = |dtype: Dtype| -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
        reference
            .iter()
            .map(|(n, t)| {
                let (d, bytes) = match (n, dtype) {
                    ("model.norm.weight", Dtype::I32) => (
                        dtype,
                        t.data.iter().flat_map(|_| 1i32.to_le_bytes()).collect(),
                    ),
                    ("model.norm.weight", Dtype::I64) => (
                        dtype,
                        t.data.iter().flat_map(|_| 1i64.to_le_bytes()).collect(),
                    ),
                    _ => (Dtype::F32, f32_bytes(&t.data)),
                };
                (n.to_string(), d, t.shape.clone(), bytes)
            })
            .collect()
    };
    write_safetensors(&s.path("model.safetensors"), &with_norm_as(Dtype::F32));
    load_model(&s.0).unwrap();
    for (dtype, name) in [(Dtype::I32, "I32"), (Dtype::I64, "I64")] {
        write_safetensors(&s.path("model.safetensors"), &with_norm_as(dtype));
        assert_err_mentions(
            load_model(&s.0),
            &[
                "model.safetensors",
                "`model.norm.weight`",
                name,
                "floating-point",
            ],
        );
    }

    // minimind: an int entry under `weights` is refused before decoding, at the top level and
    // inside a layer; the same file with float32 values loads.
    use base64::Engine;
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    let path = td("llama-tiny/minimind.json");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let entry = |dtype: &str, bytes: Vec<u8>| serde_json::json!({"shape": [64], "dtype": dtype, "encoding": "base64", "data": b64(bytes)});
    let ones_f32: Vec<u8> = (0..64).flat_map(|_| 1f32.to_le_bytes()).collect();
    let ones_i32: Vec<u8> = (0..64).flat_map(|_| 1i32.to_le_bytes()).collect();
    let ones_i64: Vec<u8> = (0..64).flat_map(|_| 1i64.to_le_bytes()).collect();
    let mut ok = doc.clone();
    ok["weights"]["final_rms"] = entry("float32", ones_f32);
    let (_, w) = cranegrad_models::loader::minimind::minimind_from_json(&ok, &path).unwrap();
    assert_eq!(w.get("model.norm.weight").unwrap().data, vec![1.0; 64]);
    let mut top = doc.clone();
    top["weights"]["final_rms"] = entry("int32", ones_i32);
    assert_err_mentions(
        cranegrad_models::loader::minimind::minimind_from_json(&top, &path),
        &[
            "minimind.json",
            "weights.final_rms",
            "int32",
            "floating-point",
        ],
    );
    let mut layer = doc.clone();
    layer["weights"]["layers"][1]["rms_ffn"] = entry("int64", ones_i64);
    assert_err_mentions(
        cranegrad_models::loader::minimind::minimind_from_json(&layer, &path),
        &["weights.layers[1].rms_ffn", "int64", "floating-point"],
    );
    // Non-weight entries (token ids) still decode, exactly or not at all.
    let ids: Vec<u8> = [7i64, -3].iter().flat_map(|v| v.to_le_bytes()).collect();
    let e = serde_json::json!({"shape": [2], "dtype": "int64", "data": b64(ids)});
    let t = cranegrad_models::loader::minimind::decode_tensor(&e, &path, "inputs.ids").unwrap();
    assert_eq!(t.data, [7.0, -3.0]);
    let big: Vec<u8> = [7i64, i64::MIN]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let e = serde_json::json!({"shape": [2], "dtype": "int64", "data": b64(big)});
    assert_err_mentions(
        cranegrad_models::loader::minimind::decode_tensor(&e, &path, "inputs.ids"),
        &["inputs.ids", "not exactly representable"],
    );
}

#[test]
fn context_lengths_are_bounded_by_name_and_value() {
    assert_eq!(MAX_POSITIONS, 1 << 20);
    // HF config.json: the limit itself parses (parsing allocates nothing), one more is refused.
    let at_limit =
        edited_config(|v| v["max_position_embeddings"] = (MAX_POSITIONS as u64).into()).unwrap();
    assert_eq!(at_limit.max_positions(), MAX_POSITIONS);
    assert_err_mentions(
        edited_config(|v| v["max_position_embeddings"] = (MAX_POSITIONS as u64 + 1).into()),
        &[
            "config.json",
            "max_position_embeddings",
            "1048577",
            "1048576",
        ],
    );
    assert_err_mentions(
        edited_config(|v| v["max_position_embeddings"] = (1u64 << 31).into()),
        &["max_position_embeddings", "2147483648"],
    );
    // GPT-2's learned positions.
    let mut gpt2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(td("gpt2-tiny/config.json")).unwrap()).unwrap();
    gpt2["n_positions"] = (1u64 << 21).into();
    let s = Scratch::new("positions");
    let p = s.write("config.json", &serde_json::to_vec(&gpt2).unwrap());
    assert_err_mentions(
        ModelConfig::from_file(&p),
        &["config.json", "n_positions", "2097152"],
    );
    // GGUF metadata.
    let (cfg, _) = gguf_result(&tiny_llama_with_context(1 << 20)).unwrap();
    assert_eq!(cfg.max_positions(), 1 << 20);
    assert_err_mentions(
        gguf_result(&tiny_llama_with_context(1 << 21)),
        &["crafted.gguf", "llama.context_length", "2097152"],
    );
    assert_err_mentions(
        gguf_result(&tiny_llama_with_context(1 << 31)),
        &["llama.context_length", "2147483648"],
    );
    // minimind config.
    let path = td("llama-tiny/minimind.json");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    doc["config"]["max_position_embeddings"] = (1u64 << 21).into();
    assert_err_mentions(
        cranegrad_models::loader::minimind::minimind_from_json(&doc, &path),
        &["minimind.json", "config.max_position_embeddings", "2097152"],
    );
}

#[test]
fn gguf_f16_tensors_widen_exactly_to_their_f32_values() {
    // Round every value through f16 first, so an F32 file can hold exactly what F16 encodes;
    // matrices go F16 (type 1) and norms stay F32, as llama.cpp's converter writes them.
    let original = tiny_llama();
    let (mut exact, mut halved) = (original.clone(), original.clone());
    let mut f16_values = 0;
    for ((e, h), o) in exact
        .tensors
        .iter_mut()
        .zip(halved.tensors.iter_mut())
        .zip(&original.tensors)
    {
        let values: Vec<half::f16> =
            o.3.chunks_exact(4)
                .map(|c| half::f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
        let widened: Vec<f32> = values.iter().map(|v| v.to_f32()).collect();
        e.3 = f32_bytes(&widened);
        if o.1.len() == 2 {
            h.2 = 1;
            h.3 = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            f16_values += values.len();
        } else {
            h.3 = e.3.clone();
        }
    }
    let (cfg_e, want) = gguf_result(&exact).unwrap();
    let (cfg_h, got) = gguf_result(&halved).unwrap();
    assert_eq!(cfg_e, cfg_h);
    // Bit-identical after widening and after un-permuting the F16 q/k rows.
    assert_bit_identical(&got, &want);
    for (name, t) in got.iter() {
        let want_dtype = if t.shape.len() == 2 {
            SourceDType::F16
        } else {
            SourceDType::F32
        };
        assert_eq!(t.source_dtype, want_dtype, "{name}");
    }
    assert_eq!(f16_values, 32 * 8 + 32 * 32 * 2 + 32 * 16 * 2 + 48 * 32 * 3);
    assert_eq!(got.bytes_by_dtype()[&SourceDType::F16], f16_values * 2);
    // The rounding was real: the unrounded F32 file differs, so the F16 values were decoded.
    let (_, unrounded) = gguf_result(&original).unwrap();
    let q = "model.layers.0.self_attn.q_proj.weight";
    assert_ne!(got.get(q).unwrap().data, unrounded.get(q).unwrap().data);
    let worst = got
        .get(q)
        .unwrap()
        .data
        .iter()
        .zip(&unrounded.get(q).unwrap().data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    // |x| <= 0.1 here, where f16 spacing is at most 2^-14, so rounding moves at most 2^-15.
    assert!(worst > 0.0 && worst <= 1.0 / 32768.0, "worst {worst}");
    // A truncated F16 data section is an error naming the file and the tensor.
    let mut cut = halved.clone();
    // 1024 bytes where a 32x32 F16 tensor needs 2048.
    cut.tensors
        .push(("blk.0.extra".into(), vec![32, 32], 1, vec![0; 32 * 32]));
    assert_err_mentions(
        gguf_result(&cut),
        &["crafted.gguf", "`blk.0.extra`", "runs past the end"],
    );
}
