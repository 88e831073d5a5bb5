//! Prints every kernel of a model's prefill forward and decode step (default: the `medium`
//! preset), with `--unfused-attention` its attention as separate kernels, or with `rows` a set
//! of row kernels (softmax over either axis, scaled and masked, norms): its kernel IR, or with
//! `--asm` its machine code. Two builds' outputs compared with `diff` show whether a compiler
//! change moved any kernel's code.

use cranegrad::codegen::KernelCache;
use cranegrad::graph::{DType, Graph, Shape, Tensor};
use cranegrad::lower::{LowerOptions, lower_tensors};
use cranegrad::models::loader::ModelConfig;
use cranegrad::models::{Model, gpt2, llama};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let asm = args.iter().any(|a| a == "--asm");
    let opts = LowerOptions {
        attention: !args.iter().any(|a| a == "--unfused-attention"),
        ..LowerOptions::default()
    };
    let spec = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "medium".into());
    if spec == "rows" {
        return print_kernels(&row_kernels()?, opts, asm);
    }
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
    print_kernels(&graphs, opts, asm)
}

/// Softmaxes over the last axis and axis 0, scaled and masked, RMSNorm and LayerNorm, each
/// on a graph of its own, over `x` `[64, 96]`, a mask `m` like it, a gain `g` and bias `b`.
fn row_kernels() -> Result<Vec<Vec<Tensor>>, Box<dyn std::error::Error>> {
    type Build = fn([&Tensor; 4]) -> Result<Tensor, cranegrad::graph::GraphError>;
    let builds: [Build; 6] = [
        |[x, ..]| x.softmax(-1),
        |[x, ..]| x.softmax(0),
        |[x, ..]| x.mul_scalar(0.125)?.softmax(-1),
        |[x, m, ..]| x.add(m)?.softmax(-1),
        |[x, _, g, _]| x.rms_norm(g, 1e-5),
        |[x, _, g, b]| x.layer_norm(g, b, 1e-5),
    ];
    let mut graphs = Vec::new();
    for build in builds {
        let g = Graph::new();
        let x = g.input("x", Shape::of(&[64, 96]), DType::F32);
        let m = g.input("m", Shape::of(&[64, 96]), DType::F32);
        let gain = g.input("g", Shape::of(&[96]), DType::F32);
        let bias = g.input("b", Shape::of(&[96]), DType::F32);
        graphs.push(vec![build([&x, &m, &gain, &bias])?]);
    }
    Ok(graphs)
}

/// Lowers each graph's outputs and prints every kernel.
fn print_kernels(
    graphs: &[Vec<Tensor>],
    opts: LowerOptions,
    asm: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut cache = KernelCache::new()?;
    for outs in graphs {
        let l = lower_tensors(&outs.iter().collect::<Vec<_>>(), opts)?;
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
