//! Built-in model shapes with deterministic random weights, so the CLI runs with no files. The
//! LLaMA presets are the benchmark sizes people already quote.

use crate::loader::{Gpt2Config, LlamaConfig, ModelConfig, RopeScaling};

/// Names accepted by `--model` besides paths.
pub const PRESETS: &[&str] = &[
    "small",
    "medium",
    "large",
    "xl",
    "llama-3.2-1b",
    "smollm-135m",
    "gpt2",
];

fn llama(
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
    intermediate: usize,
) -> LlamaConfig {
    LlamaConfig {
        hidden,
        layers,
        heads,
        kv_heads,
        head_dim: hidden / heads,
        intermediate,
        vocab,
        max_positions: 2048,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: RopeScaling::None,
        tie_word_embeddings: false,
        bos_token_id: None,
        eos_token_ids: vec![],
    }
}

/// The config of a preset, or `None` for an unknown name.
pub fn preset(name: &str) -> Option<ModelConfig> {
    Some(match name {
        "small" => ModelConfig::Llama(llama(64, 2, 8, 2, 128, 256)),
        "medium" => ModelConfig::Llama(llama(256, 4, 8, 2, 512, 768)),
        "large" => ModelConfig::Llama(llama(1024, 12, 16, 2, 8192, 4096)),
        "xl" => ModelConfig::Llama(llama(2048, 24, 32, 4, 32768, 8192)),
        "llama-3.2-1b" => {
            let mut c = llama(2048, 16, 32, 8, 128256, 8192);
            c.tie_word_embeddings = true;
            c.rope_theta = 500000.0;
            c.rope_scaling = RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            };
            c.bos_token_id = Some(128000);
            c.eos_token_ids = vec![128001];
            ModelConfig::Llama(c)
        }
        // SmolLM-135M's shape: small hidden, many layers, a large vocabulary (the LM head is
        // a fifth of a short prefill), head_dim 64 with GQA groups of 3.
        "smollm-135m" => {
            let mut c = llama(576, 30, 9, 3, 49152, 1536);
            c.tie_word_embeddings = true;
            c.rope_theta = 100000.0;
            c.max_positions = 8192;
            c.bos_token_id = Some(1);
            c.eos_token_ids = vec![2];
            ModelConfig::Llama(c)
        }
        "gpt2" => ModelConfig::Gpt2(Gpt2Config {
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: 3072,
            vocab: 50257,
            n_positions: 1024,
            layer_norm_epsilon: 1e-5,
            tie_word_embeddings: true,
            bos_token_id: Some(50256),
            eos_token_ids: vec![50256],
        }),
        _ => return None,
    })
}
