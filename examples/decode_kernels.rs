//! Lists the kernels of one decode step of a model (default: the `small` preset), the graph a
//! generation replays for every token.

use cranegrad::lower::{LowerOptions, lower_tensors};
use cranegrad::models::Model;
use cranegrad::models::llama::decode_step_graph;
use cranegrad::models::loader::ModelConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec = std::env::args().nth(1).unwrap_or_else(|| "small".into());
    let model = Model::load(&spec, 0)?;
    let ModelConfig::Llama(c) = &model.config else {
        return Err("a llama model, please".into());
    };
    let (_g, outs) = decode_step_graph(c, &model.weights, 1, 64)?;
    let l = lower_tensors(&outs.iter().collect::<Vec<_>>(), LowerOptions::default())?;
    for (i, launch) in l.schedule.launches.iter().enumerate() {
        println!(
            "kernel {i}: {} ({})",
            launch.kernel.name,
            launch.kernel.ops.join("+")
        );
    }
    Ok(())
}
