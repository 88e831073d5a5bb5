//! Prints every kernel of a model's prefill forward and decode step (default: the `medium`
//! preset): its kernel IR, or with `--asm` its machine code. Two builds' outputs compared with
//! `diff` show whether a compiler change moved any kernel's code.

use cranegrad::codegen::KernelCache;
use cranegrad::graph::{DType, Graph, Shape};
use cranegrad::lower::{LowerOptions, lower_tensors};
use cranegrad::models::loader::ModelConfig;
use cranegrad::models::{Model, gpt2, llama};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let asm = args.iter().any(|a| a == "--asm");
    let spec = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "medium".into());
    let model = Model::load(&spec, 0)?;
    let g = Graph::new();
    let tokens = g.input("tokens", Shape::of(&[4, 32]), DType::I32);
    let mut graphs = Vec::new();
    match &model.config {
        ModelConfig::Llama(c) => {
            graphs.push(vec![llama::forward(c, &model.weights, &g, &tokens)?]);
            graphs.push(llama::decode_step_graph(c, &model.weights, 1, 64)?.1);
        }
        ModelConfig::Gpt2(c) => graphs.push(vec![gpt2::forward(c, &model.weights, &g, &tokens)?]),
    }
    let mut cache = KernelCache::new()?;
    for outs in &graphs {
        let l = lower_tensors(&outs.iter().collect::<Vec<_>>(), LowerOptions::default())?;
        println!("== {} kernels", l.schedule.launches.len());
        for (i, launch) in l.schedule.launches.iter().enumerate() {
            println!("-- kernel {i}: {}", launch.kernel.ops.join("+"));
            if asm {
                println!("{}", cache.disassemble(&launch.kernel)?);
            } else {
                println!("{}", launch.kernel);
            }
        }
    }
    Ok(())
}
