//! The built-in presets have exactly the shapes they advertise, and `ModelConfig::param_count`
//! gives their sizes from the config alone (no weights are allocated here).

use cranegrad_models::loader::{LlamaConfig, ModelConfig, RopeScaling, expected_tensors};
use cranegrad_models::presets::{PRESETS, preset};

/// Elements of every tensor the config implies: the slow, independent way to count.
fn counted(cfg: &ModelConfig) -> usize {
    expected_tensors(cfg)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}

fn llama(name: &str) -> LlamaConfig {
    match preset(name) {
        Some(ModelConfig::Llama(c)) => c,
        other => panic!("{name}: expected a llama preset, got {other:?}"),
    }
}

#[test]
fn every_preset_has_exactly_its_advertised_shape() {
    assert_eq!(
        PRESETS,
        [
            "small",
            "medium",
            "large",
            "xl",
            "llama-3.2-1b",
            "smollm-135m",
            "gpt2"
        ]
    );
    // (hidden, layers, heads, kv heads, vocab, intermediate) and the parameter count worked
    // out by hand from those sizes.
    let cases = [
        ("small", (64, 2, 8, 2, 128, 256), 135_488),
        ("medium", (256, 4, 8, 2, 512, 768), 3_279_104),
        ("large", (1024, 12, 16, 2, 8192, 4096), 196_109_312),
        ("xl", (2048, 24, 32, 4, 32768, 8192), 1_568_770_048),
        // Meta's published size of Llama 3.2 1B (tied head counted once).
        (
            "llama-3.2-1b",
            (2048, 16, 32, 8, 128256, 8192),
            1_235_814_400,
        ),
        // SmolLM-135M: 49152 x 576 embedding (tied) + 30 x (4 attention + 3 MLP matrices
        // + 2 gains) + the final gain.
        ("smollm-135m", (576, 30, 9, 3, 49152, 1536), 134_515_008),
    ];
    for (name, shape, params) in cases {
        let c = llama(name);
        assert_eq!(
            (
                c.hidden,
                c.layers,
                c.heads,
                c.kv_heads,
                c.vocab,
                c.intermediate
            ),
            shape,
            "{name}"
        );
        assert_eq!(c.head_dim, c.hidden / c.heads, "{name}");
        let positions = if name == "smollm-135m" { 8192 } else { 2048 };
        assert_eq!(c.max_positions, positions, "{name}");
        let cfg = ModelConfig::Llama(c);
        assert_eq!(cfg.param_count(), params, "{name}");
        assert_eq!(counted(&cfg), params, "{name}");
    }
    for name in ["small", "medium", "large", "xl"] {
        let c = llama(name);
        assert!(!c.tie_word_embeddings, "{name}");
        assert_eq!(
            (c.rope_theta, &c.rope_scaling),
            (10000.0, &RopeScaling::None),
            "{name}"
        );
    }
    let c = llama("llama-3.2-1b");
    assert!(c.tie_word_embeddings);
    assert_eq!(c.rope_theta, 500000.0);
    assert_eq!(
        c.rope_scaling,
        RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }
    );
    assert_eq!(
        (c.bos_token_id, c.eos_token_ids.as_slice()),
        (Some(128000), &[128001][..])
    );

    let gpt2 = preset("gpt2").unwrap();
    let ModelConfig::Gpt2(g) = &gpt2 else {
        panic!("gpt2 preset is not GPT-2: {gpt2:?}")
    };
    assert_eq!(
        (g.n_embd, g.n_layer, g.n_head, g.vocab, g.n_positions),
        (768, 12, 12, 50257, 1024)
    );
    assert_eq!((g.n_inner, g.head_dim()), (3072, 64));
    assert!(g.tie_word_embeddings);
    // The "124M" GPT-2: HF's GPT2LMHeadModel.num_parameters() for the Hub checkpoint.
    assert_eq!(gpt2.param_count(), 124_439_808);
    assert_eq!(counted(&gpt2), 124_439_808);

    assert!(preset("nosuch").is_none());
    assert!(preset("Small").is_none());
}

#[test]
fn param_count_follows_tying_and_saturates_on_absurd_configs() {
    // Untying adds exactly one [vocab, width] head.
    let mut c = llama("llama-3.2-1b");
    c.tie_word_embeddings = false;
    let untied = ModelConfig::Llama(c);
    assert_eq!(untied.param_count(), 1_235_814_400 + 128256 * 2048);
    assert_eq!(counted(&untied), untied.param_count());
    let Some(ModelConfig::Gpt2(mut g)) = preset("gpt2") else {
        unreachable!()
    };
    g.tie_word_embeddings = false;
    let untied = ModelConfig::Gpt2(g);
    assert_eq!(untied.param_count(), 124_439_808 + 50257 * 768);
    assert_eq!(counted(&untied), untied.param_count());
    // Sizes no file could back: a saturated count, never an overflow panic.
    let mut huge = llama("small");
    huge.hidden = usize::MAX / 2;
    huge.vocab = usize::MAX / 2;
    assert_eq!(ModelConfig::Llama(huge).param_count(), usize::MAX);
}
