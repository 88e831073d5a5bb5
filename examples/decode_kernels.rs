//! Lists the kernels of one decode step of a model (default: the `small` preset), the graph a
//! generation replays for every token.

use cranegrad::graph::{DType, Dim, Graph, Shape, Symbol};
use cranegrad::lower::{LowerOptions, lower};
use cranegrad::models::Model;
use cranegrad::models::llama::{Context, forward_kv};
use cranegrad::models::loader::ModelConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec = std::env::args().nth(1).unwrap_or_else(|| "small".into());
    let model = Model::load(&spec, 0)?;
    let ModelConfig::Llama(c) = &model.config else {
        return Err("a llama model, please".into());
    };
    let g = Graph::new();
    let ctx = 64;
    let pos = Symbol::new("pos", 0, ctx as i64 - 1)?;
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
    let (logits, writes) = forward_kv(
        c,
        &model.weights,
        &g,
        &tokens,
        &Context::Decode {
            pos: &p,
            caches: &caches,
            padding: None,
        },
    )?;
    let mut outs = vec![logits.id()];
    for (k, v) in &writes {
        outs.push(k.id());
        outs.push(v.id());
    }
    let l = g.with(|d| lower(d, &outs, LowerOptions::default()))?;
    for (i, launch) in l.schedule.launches.iter().enumerate() {
        println!(
            "kernel {i}: {} ({})",
            launch.kernel.name,
            launch.kernel.ops.join("+")
        );
    }
    Ok(())
}
