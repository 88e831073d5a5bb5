//! Every kernel of whole models reads back from its text: the `medium` (LLaMA) and `gpt2`
//! presets' prefill forward and decode step, lowered as `examples/model_kernels.rs` lowers
//! them. Parsing a kernel's printed text gives the same kernel, which prints the same text;
//! its key text (no names) reads back to the same key text.

use cranegrad_graph::{DType, Dim, Graph, Shape, Symbol, Tensor};
use cranegrad_lower::kernel::Kernel;
use cranegrad_lower::kernel_parse::check_round_trip;
use cranegrad_lower::{LowerOptions, lower_tensors};
use cranegrad_models::llama::{Context, decode_step_graph};
use cranegrad_models::loader::{Gpt2Config, ModelConfig};
use cranegrad_models::weights::Weights;
use cranegrad_models::{Model, gpt2};

/// Asserts that `k`'s text and key text read back and print the same again.
fn round_trip(k: &Kernel) {
    check_round_trip(k).unwrap_or_else(|e| panic!("{e}"));
}

/// Round-trips every kernel of `outs`, fused; returns how many there were.
fn round_trip_all(outs: &[Tensor]) -> usize {
    let refs: Vec<&Tensor> = outs.iter().collect();
    let l = lower_tensors(&refs, LowerOptions::default()).unwrap();
    for launch in &l.schedule.launches {
        round_trip(&launch.kernel);
    }
    l.schedule.launches.len()
}

/// A GPT-2 decode step as the generator builds it: one token per row at symbolic position
/// `pos` over caches of `ctx` positions; outputs the logits and every cache write.
fn gpt2_decode_step(c: &Gpt2Config, w: &Weights, batch: usize, ctx: usize) -> (Graph, Vec<Tensor>) {
    let g = Graph::new();
    let pos = Symbol::new("pos", 0, ctx as i64 - 1).unwrap();
    let tokens = g.input("tokens", Shape::of(&[batch, 1]), DType::I32);
    let shape = Shape::of(&[batch, ctx, c.n_head, c.head_dim()]);
    let caches: Vec<(Tensor, Tensor)> = (0..c.n_layer)
        .map(|l| {
            (
                g.input(&format!("cache.{l}.k"), shape.clone(), DType::F32),
                g.input(&format!("cache.{l}.v"), shape.clone(), DType::F32),
            )
        })
        .collect();
    let p = Dim::sym(&pos);
    let step = Context::Decode {
        pos: &p,
        caches: &caches,
        padding: None,
    };
    let (logits, writes) = gpt2::forward_kv(c, w, &g, &tokens, &step).unwrap();
    let mut outs = vec![logits];
    for (k, v) in writes {
        outs.push(k);
        outs.push(v);
    }
    (g, outs)
}

#[test]
fn medium_kernels_read_back_from_their_text() {
    let model = Model::load("medium", 0).unwrap();
    let (_g, logits) = model.forward_graph(4, 32).unwrap();
    assert!(round_trip_all(&[logits]) > 0);
    let ModelConfig::Llama(c) = &model.config else {
        panic!("medium is a llama preset");
    };
    let (_g, outs) = decode_step_graph(c, &model.weights, 1, 64).unwrap();
    assert!(round_trip_all(&outs) > 0);
}

#[test]
fn gpt2_kernels_read_back_from_their_text() {
    let model = Model::load("gpt2", 0).unwrap();
    let (_g, logits) = model.forward_graph(1, 8).unwrap();
    assert!(round_trip_all(&[logits]) > 0);
    let ModelConfig::Gpt2(c) = &model.config else {
        panic!("gpt2 is a gpt2 preset");
    };
    let (_g, outs) = gpt2_decode_step(c, &model.weights, 1, 64);
    assert!(round_trip_all(&outs) > 0);
}
