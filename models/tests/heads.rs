//! Which matrix the LM head multiplies by: `lm_head.weight` when the config unties the
//! embeddings, the token embedding when it ties them (even if a head is stored, as HF does).

use std::path::Path;

use cranegrad_models::Model;
use cranegrad_models::loader::{HostTensor, MAX_POSITIONS, ModelConfig, WeightStore, load_model};
use cranegrad_models::presets::preset;
use cranegrad_models::run::logits;
use cranegrad_runtime::{Session, SessionOptions};
use safetensors::{Dtype, tensor::TensorView};

mod common;

use common::{Scratch, td};

/// Writes `store` as `dir/model.safetensors` (F32) next to `config` as `dir/config.json`.
fn write_model(dir: &Path, config: &serde_json::Value, store: &WeightStore) {
    std::fs::write(dir.join("config.json"), serde_json::to_vec(config).unwrap()).unwrap();
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = store
        .iter()
        .map(|(n, t)| {
            let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (n.to_string(), t.shape.clone(), b)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, &None, &dir.join("model.safetensors")).unwrap();
}

fn config_json(dir: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(td(&format!("{dir}/config.json"))).unwrap()).unwrap()
}

fn run(model: &Model) -> Vec<f32> {
    let mut s = Session::new(SessionOptions {
        fuse: true,
        threads: 2,
    })
    .unwrap();
    logits(&mut s, model, &[vec![5, 17, 99, 3], vec![1, 2, 3, 4]]).unwrap()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

#[test]
fn untied_gpt2_multiplies_by_lm_head_weight() {
    let (_, tied_store) = load_model(&td("gpt2-tiny")).unwrap();
    let tied = run(&Model::load(&td("gpt2-tiny").to_string_lossy(), 0).unwrap());
    assert!(max_abs(&tied) > 1e-2, "logits too small to compare");

    let mut cfg = config_json("gpt2-tiny");
    cfg["tie_word_embeddings"] = false.into();
    let s = Scratch::new("gpt2-untied");
    // Untied without a head is refused by name.
    write_model(&s.0, &cfg, &tied_store);
    let e = load_model(&s.0).unwrap_err().to_string();
    assert!(e.contains("lm_head.weight"), "{e}");
    // A head equal to twice the embedding doubles every logit: it is the head that is used.
    let wte = tied_store.get("transformer.wte.weight").unwrap();
    let mut store = tied_store.clone();
    store
        .insert(
            "lm_head.weight",
            HostTensor::new(
                wte.shape.clone(),
                wte.data.iter().map(|x| 2.0 * x).collect(),
                wte.source_dtype,
            )
            .unwrap(),
        )
        .unwrap();
    write_model(&s.0, &cfg, &store);
    let model = Model::load(&s.0.to_string_lossy(), 0).unwrap();
    assert!(!model.config.tie_word_embeddings());
    assert_eq!(
        model.config.param_count(),
        tied_store.param_count() + 256 * 64
    );
    let untied = run(&model);
    assert_eq!(untied.len(), tied.len());
    for (i, (u, t)) in untied.iter().zip(&tied).enumerate() {
        assert!((u - 2.0 * t).abs() <= 1e-5, "logit {i}: {u} vs 2 x {t}");
    }
}

#[test]
fn tied_models_ignore_a_stored_lm_head() {
    for (dir, vocab, width) in [("llama3-tied", 256, 64), ("gpt2-tiny", 256, 64)] {
        let (cfg, store) = load_model(&td(dir)).unwrap();
        assert!(cfg.tie_word_embeddings(), "{dir}");
        let plain = run(&Model::load(&td(dir).to_string_lossy(), 0).unwrap());
        assert!(max_abs(&plain) > 1e-2, "{dir}: logits too small to compare");
        // A zero head would zero every logit if it were used.
        let mut with_head = store.clone();
        with_head
            .insert(
                "lm_head.weight",
                HostTensor::new(
                    vec![vocab, width],
                    vec![0.0; vocab * width],
                    cranegrad_models::loader::SourceDType::F32,
                )
                .unwrap(),
            )
            .unwrap();
        let s = Scratch::new(dir);
        write_model(&s.0, &config_json(dir), &with_head);
        let model = Model::load(&s.0.to_string_lossy(), 0).unwrap();
        assert!(!model.weights.contains("lm_head.weight"), "{dir}");
        assert_eq!(run(&model), plain, "{dir}");
    }
}

#[test]
fn hand_built_configs_are_bounded_before_rope_tables_are_built() {
    let Some(ModelConfig::Llama(mut c)) = preset("small") else {
        unreachable!()
    };
    c.max_positions = MAX_POSITIONS + 1;
    // An empty store: the bound must trip before any weight or table is touched.
    let r = Model::from_parts(
        ModelConfig::Llama(c),
        WeightStore::new("empty"),
        "hand-built".into(),
    );
    let e = match r {
        Ok(_) => panic!("a {}-position config was accepted", MAX_POSITIONS + 1),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("hand-built") && e.contains("1048577") && e.contains("1048576"),
        "{e}"
    );
}
