//! Kernels per LLaMA layer, prefill and decode, fused and unfused: counted from the schedule
//! of whole models (the difference between the 4-layer `medium` and 2-layer `small` presets,
//! which share every layer's structure, over the two extra layers).

use cranegrad_graph::Tensor;
use cranegrad_lower::{LowerOptions, lower_tensors};
use cranegrad_models::Model;
use cranegrad_models::llama::decode_step_graph;
use cranegrad_models::loader::ModelConfig;

/// Kernels of a schedule of `outs`.
fn kernels(outs: &[&Tensor], fuse: bool) -> usize {
    let opts = LowerOptions {
        fuse,
        ..Default::default()
    };
    lower_tensors(outs, opts).unwrap().schedule.launches.len()
}

/// Kernels of one prefill forward of `spec` (batch 2, seq 5).
fn prefill(spec: &str, fuse: bool) -> usize {
    let model = Model::load(spec, 0).unwrap();
    let (_g, logits) = model.forward_graph(2, 5).unwrap();
    kernels(&[&logits], fuse)
}

/// Kernels of one decode step of `spec` (batch 1, a 64-position cache).
fn decode(spec: &str, fuse: bool) -> usize {
    let model = Model::load(spec, 0).unwrap();
    let ModelConfig::Llama(c) = &model.config else {
        panic!("{spec} is a llama preset");
    };
    let (_g, outs) = decode_step_graph(c, &model.weights, 1, 64).unwrap();
    kernels(&outs.iter().collect::<Vec<_>>(), fuse)
}

fn per_layer(count: impl Fn(&str) -> usize) -> usize {
    let (medium, small) = (count("medium"), count("small"));
    assert_eq!((medium - small) % 2, 0, "layers differ in structure");
    (medium - small) / 2
}

#[test]
fn kernels_per_llama_layer() {
    let fused = per_layer(|s| prefill(s, true));
    let unfused = per_layer(|s| prefill(s, false));
    let fused_decode = per_layer(|s| decode(s, true));
    let unfused_decode = per_layer(|s| decode(s, false));
    eprintln!(
        "kernels per layer: prefill {fused} fused / {unfused} unfused, \
         decode {fused_decode} fused / {unfused_decode} unfused"
    );
    assert!(fused <= 6, "prefill: {fused} kernels per layer");
    assert!(
        fused_decode <= 6,
        "decode: {fused_decode} kernels per layer"
    );
    assert!(unfused >= 4 * fused);
}
