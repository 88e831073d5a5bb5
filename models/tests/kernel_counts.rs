//! Kernels per LLaMA layer, prefill and decode, fused and unfused: counted from the schedule
//! of whole models (the difference between the 4-layer `medium` and 2-layer `small` presets,
//! which share every layer's structure, over the two extra layers).

use cranegrad_graph::{DType, Dim, Graph, Shape, Symbol};
use cranegrad_lower::{LowerOptions, lower};
use cranegrad_models::Model;
use cranegrad_models::llama::{Context, forward_kv};
use cranegrad_models::loader::ModelConfig;

/// Kernels of one prefill forward of `spec` (batch 2, seq 5).
fn prefill(spec: &str, fuse: bool) -> usize {
    let model = Model::load(spec, 0).unwrap();
    let (g, logits) = model.forward_graph(2, 5).unwrap();
    g.with(|d| {
        lower(
            d,
            &[logits.id()],
            LowerOptions {
                fuse,
                ..Default::default()
            },
        )
    })
    .unwrap()
    .schedule
    .launches
    .len()
}

/// Kernels of one decode step of `spec` (batch 1, a 64-position cache).
fn decode(spec: &str, fuse: bool) -> usize {
    let model = Model::load(spec, 0).unwrap();
    let ModelConfig::Llama(c) = &model.config else {
        panic!("{spec} is a llama preset");
    };
    let g = Graph::new();
    let ctx = 64;
    let pos = Symbol::new("pos", 0, ctx as i64 - 1).unwrap();
    let tokens = g.input("tokens", Shape::of(&[1, 1]), DType::I32);
    let shape = Shape::of(&[1, ctx, c.kv_heads, c.head_dim]);
    let caches: Vec<_> = (0..c.layers)
        .map(|l| {
            (
                g.input(&format!("cache.{l}.k"), shape.clone(), DType::F32),
                g.input(&format!("cache.{l}.v"), shape.clone(), DType::F32),
            )
        })
        .collect();
    let p = Dim::sym(&pos);
    let ctx = Context::Decode {
        pos: &p,
        caches: &caches,
        padding: None,
    };
    let (logits, writes) = forward_kv(c, &model.weights, &g, &tokens, &ctx).unwrap();
    let mut outs = vec![logits.id()];
    for (k, v) in &writes {
        outs.push(k.id());
        outs.push(v.id());
    }
    g.with(|d| {
        lower(
            d,
            &outs,
            LowerOptions {
                fuse,
                ..Default::default()
            },
        )
    })
    .unwrap()
    .schedule
    .launches
    .len()
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
    assert!(fused <= 9, "prefill: {fused} kernels per layer");
    assert!(
        fused_decode <= 11,
        "decode: {fused_decode} kernels per layer"
    );
    assert!(unfused >= 4 * fused);
}
