//! Built-in example graphs that need no files: what `cranegrad run` executes by name.

use cranegrad_graph::{Graph, GraphError, Shape, Tensor};

pub use cranegrad_graph::lcg_values;

/// A built-in example: its graph and output.
pub struct Example {
    /// Name on the command line.
    pub name: &'static str,
    /// One-line description.
    pub about: String,
    /// The graph's output.
    pub output: Tensor,
}

/// Names of the built-in examples.
pub const EXAMPLES: &[&str] = &["mlp", "chain"];

/// Builds the named example, or `None` for an unknown name.
pub fn build_example(name: &str) -> Option<Result<Example, GraphError>> {
    match name {
        "mlp" => Some(mlp(32, 1024)),
        "chain" => Some(chain(4096, 4096)),
        _ => None,
    }
}

/// A two-layer MLP block: `gelu(x @ W1 + b1) @ W2 + b2`, hidden width 4 x `width`.
pub fn mlp(batch: usize, width: usize) -> Result<Example, GraphError> {
    let g = Graph::new();
    let hidden = 4 * width;
    let x = g.input_with_data(
        "x",
        Shape::of(&[batch, width]),
        lcg_values(batch * width, 1, 1.0),
    )?;
    let s1 = 1.0 / (width as f32).sqrt();
    let s2 = 1.0 / (hidden as f32).sqrt();
    let w1 = g.input_with_data(
        "w1",
        Shape::of(&[width, hidden]),
        lcg_values(width * hidden, 2, s1),
    )?;
    let b1 = g.input_with_data("b1", Shape::of(&[hidden]), lcg_values(hidden, 3, 0.1))?;
    let w2 = g.input_with_data(
        "w2",
        Shape::of(&[hidden, width]),
        lcg_values(hidden * width, 4, s2),
    )?;
    let b2 = g.input_with_data("b2", Shape::of(&[width]), lcg_values(width, 5, 0.1))?;
    let h = x.matmul(&w1)?.add(&b1)?.gelu_tanh()?;
    let y = h.matmul(&w2)?.add(&b2)?;
    Ok(Example {
        name: "mlp",
        about: format!(
            "gelu(x @ W1 + b1) @ W2 + b2, batch {batch}, width {width}, hidden {hidden}"
        ),
        output: y,
    })
}

/// Eight memory-bound elementwise ops over `x` and a broadcast row `b`:
/// `max(x*b + 1, 0) * x - x*0.5 + b`.
pub fn chain(rows: usize, cols: usize) -> Result<Example, GraphError> {
    let g = Graph::new();
    let x = g.input_with_data(
        "x",
        Shape::of(&[rows, cols]),
        lcg_values(rows * cols, 11, 2.0),
    )?;
    let b = g.input_with_data("b", Shape::of(&[cols]), lcg_values(cols, 12, 2.0))?;
    let y = x
        .mul(&b)?
        .add_scalar(1.0)?
        .relu()?
        .mul(&x)?
        .sub(&x.mul_scalar(0.5)?)?
        .add(&b)?;
    Ok(Example {
        name: "chain",
        about: format!("max(x*b + 1, 0) * x - x*0.5 + b over x[{rows}, {cols}], b[{cols}]"),
        output: y,
    })
}
