//! `cranegrad info`: what a model is — config, parameter count, bytes per stored dtype.

use std::process::ExitCode;

use clap::Args;

use cranegrad_models::loader::{ModelConfig, RopeScaling, WeightStore, load_model};
use cranegrad_models::presets::{PRESETS, preset};

use cranegrad_models::tokenizer::Tokenizer;

use super::table::Table;

/// Options of `cranegrad info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A preset, a Hugging Face folder, a .gguf file or a minimind JSON file.
    #[arg(long, short = 'm', default_value = "small")]
    model: String,
    /// Also list every tensor the file stores: name, shape, stored type and bytes.
    #[arg(long)]
    tensors: bool,
}

/// Runs the command.
pub fn info(a: InfoArgs) -> anyhow::Result<ExitCode> {
    // A preset's weights would be random numbers generated only to be counted (gigabytes for
    // xl): its sizes come from the config alone. `load_model` has validated a file's store.
    let (cfg, store): (ModelConfig, Option<WeightStore>) = match preset(&a.model) {
        Some(cfg) => (cfg, None),
        None => {
            let path = std::path::Path::new(&a.model);
            // The same words as `run` for a name that is neither a file nor a preset.
            if !path.exists() {
                anyhow::bail!(
                    "{}: no such file or folder, and not a preset ({})",
                    a.model,
                    PRESETS.join(", ")
                );
            }
            // A vocabulary-only GGUF (as llama.cpp ships for its tokenizer tests) has no model
            // to describe, only its tokenizer.
            if let Some(tok) = vocabulary_only(path)? {
                let mut t = Table::default();
                t.row("model", a.model.clone()).row(
                    "weights from",
                    "none: the file holds a vocabulary only".to_string(),
                );
                tokenizer_rows(&mut t, &tok);
                print!("{}", t.render());
                return Ok(ExitCode::SUCCESS);
            }
            let pb = super::progress::spinner(&format!("reading {}", a.model));
            let loaded = load_model(path);
            pb.finish_and_clear();
            let (cfg, store) = loaded?;
            (cfg, Some(store))
        }
    };
    let params = cfg.param_count();
    let mut t = Table::default();
    t.row("model", a.model.clone());
    t.row(
        "weights from",
        store.as_ref().map_or_else(
            || "preset (random f32 weights when run)".to_string(),
            |s| s.origin().to_string(),
        ),
    );
    match &cfg {
        ModelConfig::Llama(c) => {
            t.row(
                "architecture",
                "llama (RMSNorm, RoPE, GQA attention, SwiGLU)",
            )
            .row("hidden", c.hidden.to_string())
            .row("layers", c.layers.to_string())
            .row("heads / kv heads", format!("{} / {}", c.heads, c.kv_heads))
            .row("head dim", c.head_dim.to_string())
            .row("intermediate", c.intermediate.to_string())
            .row("vocab", c.vocab.to_string())
            .row("max positions", c.max_positions.to_string())
            .row("rms_norm_eps", format!("{:e}", c.rms_norm_eps))
            .row("rope", rope_text(c.rope_theta, &c.rope_scaling))
            .row("tied embeddings", c.tie_word_embeddings.to_string());
        }
        ModelConfig::Gpt2(c) => {
            t.row(
                "architecture",
                "gpt2 (LayerNorm, learned positions, gelu_new)",
            )
            .row("n_embd", c.n_embd.to_string())
            .row("n_layer", c.n_layer.to_string())
            .row("n_head", c.n_head.to_string())
            .row("n_inner", c.n_inner.to_string())
            .row("vocab", c.vocab.to_string())
            .row("n_positions", c.n_positions.to_string())
            .row("layer_norm_epsilon", format!("{:e}", c.layer_norm_epsilon))
            .row("tied embeddings", c.tie_word_embeddings.to_string());
        }
    }
    let eos: Vec<String> = cfg.eos_token_ids().iter().map(u32::to_string).collect();
    t.row(
        "eos tokens",
        if eos.is_empty() {
            "none".to_string()
        } else {
            eos.join(", ")
        },
    );
    // The architecture's parameters, as run and bench count them (RoPE tables and a head
    // tied to the embeddings are not parameters).
    t.row("parameters", params.to_string());
    match &store {
        None => {
            t.row("bytes F32", params.saturating_mul(4).to_string());
        }
        Some(store) => {
            // Only a redundant head under tied embeddings makes these differ; show what is stored.
            if store.param_count() != params {
                t.row("stored values", store.param_count().to_string());
            }
            for (dtype, bytes) in store.bytes_by_dtype() {
                t.row(format!("bytes {}", dtype.name()), bytes.to_string());
            }
        }
    }
    let tok = match preset(&a.model) {
        Some(_) => Tokenizer::bytes(cfg.vocab()),
        None => Tokenizer::for_model(&a.model, cfg.vocab())?,
    };
    tokenizer_rows(&mut t, &tok);
    print!("{}", t.render());
    if a.tensors {
        match &store {
            Some(store) => print!("{}", tensor_table(store)),
            None => println!("\n(a preset stores no tensors: its weights are generated when run)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per stored tensor: name, shape, the type the file stores it in, and its bytes.
fn tensor_table(store: &WeightStore) -> String {
    let mut rows: Vec<(&str, String, &str, usize)> = store
        .iter()
        .map(|(name, t)| {
            let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
            (
                name,
                format!("[{}]", shape.join(", ")),
                t.source_dtype.name(),
                t.source_bytes(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(6).max(6);
    let mut out = format!(
        "\n  {:<w$}  {:<14} {:<5} {:>12}\n",
        "tensor", "shape", "type", "bytes"
    );
    for (name, shape, dtype, bytes) in rows {
        out.push_str(&format!(
            "  {name:<w$}  {shape:<14} {dtype:<5} {bytes:>12}\n"
        ));
    }
    out
}

/// The tokenizer of a GGUF file that carries a vocabulary and no tensors.
fn vocabulary_only(path: &std::path::Path) -> anyhow::Result<Option<Tokenizer>> {
    // Only a file whose header declares no tensors is read whole, so a model file is not.
    if !path.is_file() || cranegrad_models::loader::gguf::peek_tensor_count(path) != Some(0) {
        return Ok(None);
    }
    let bytes = std::fs::read(path)?;
    let file = cranegrad_models::loader::GgufFile::parse(&bytes, path)?;
    if !file.tensors.is_empty() {
        return Ok(None);
    }
    Ok(Some(Tokenizer::from_gguf(&file)?))
}

/// What the tokenizer is: kind, vocabulary, pre-tokenizer, BOS/EOS, the chat template.
fn tokenizer_rows(t: &mut Table, tok: &Tokenizer) {
    let i = tok.info();
    let named = |id: Option<u32>| match id {
        Some(id) => match tok.token_text(id) {
            Some(text) => format!("{id} {text:?}"),
            None => id.to_string(),
        },
        None => "none".to_string(),
    };
    t.row("tokenizer", format!("{} ({})", i.kind, i.source))
        .row("tokenizer vocab", i.vocab_size.to_string());
    if let Some(pre) = &i.pre {
        t.row("pre-tokenizer", pre.clone());
    }
    if !tok.is_bytes() {
        let adds: Vec<String> = i.adds.iter().map(|&id| named(Some(id))).collect();
        let eog: Vec<String> = i
            .end_of_generation
            .iter()
            .map(|&id| named(Some(id)))
            .collect();
        t.row("bos", named(i.bos))
            .row("eos", named(i.eos))
            .row(
                "adds to a prompt",
                if adds.is_empty() {
                    "nothing".into()
                } else {
                    adds.join(", ")
                },
            )
            .row(
                "ends generation",
                if eog.is_empty() {
                    "none".into()
                } else {
                    eog.join(", ")
                },
            );
    }
    t.row(
        "chat template",
        match tok.chat_template() {
            Some(c) => format!("yes, {} bytes, from {}", c.source().len(), c.origin),
            None => "none".to_string(),
        },
    );
}

/// RoPE's base and scaling in words.
fn rope_text(theta: f64, scaling: &RopeScaling) -> String {
    match scaling {
        RopeScaling::None => format!("theta {theta}, no scaling"),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => format!(
            "theta {theta}, llama3 scaling: factor {factor}, low-frequency factor {low_freq_factor}, \
             high-frequency factor {high_freq_factor}, pre-trained on {original_max_position_embeddings} positions"
        ),
        RopeScaling::FreqFactors(f) => {
            format!(
                "theta {theta}, {} per-frequency divisors from the file",
                f.len()
            )
        }
    }
}
