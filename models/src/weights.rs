//! Weights prepared for the graph: HF-named tensors with linear layers transposed once to
//! `[in, out]` (so matmuls stream contiguous rows), shared by every graph built from them.

use std::collections::BTreeMap;
use std::sync::Arc;

use cranegrad_graph::{Graph, GraphError, HostData, Shape, Tensor};

use crate::loader::{ModelConfig, WeightStore};

/// One prepared weight.
#[derive(Clone, Debug)]
pub struct Weight {
    /// Shape as used in the graph.
    pub shape: Vec<usize>,
    /// Values (shared, never copied per graph).
    pub data: Arc<Vec<f32>>,
}

/// Prepared weights by name.
#[derive(Clone, Debug, Default)]
pub struct Weights {
    map: BTreeMap<String, Weight>,
}

impl Weights {
    /// Adds a weight.
    pub fn insert(&mut self, name: &str, shape: Vec<usize>, data: Vec<f32>) {
        self.map.insert(
            name.to_string(),
            Weight {
                shape,
                data: Arc::new(data),
            },
        );
    }

    /// The weight as a graph input carrying its data.
    pub fn tensor(&self, g: &Graph, name: &str) -> Result<Tensor, GraphError> {
        let w = self.map.get(name).ok_or_else(|| GraphError::Shape {
            op: "weights".into(),
            got: Shape(vec![]),
            expected: format!("a prepared weight named {name}"),
        })?;
        g.input_with_data(name, Shape::of(&w.shape), HostData::F32(w.data.clone()))
    }

    /// Number of parameters held.
    pub fn param_count(&self) -> usize {
        self.map.values().map(|w| w.data.len()).sum()
    }

    /// Total bytes held.
    pub fn bytes(&self) -> usize {
        self.param_count() * 4
    }
}

fn transpose(shape: &[usize], data: &[f32]) -> (Vec<usize>, Vec<f32>) {
    let (r, c) = (shape[0], shape[1]);
    let mut out = vec![0f32; r * c];
    if r == 0 || c == 0 {
        return (vec![c, r], out);
    }
    // Blocked so both sides stay in cache for big matrices; output row blocks split across
    // threads (a 1B model transposes gigabytes at load).
    const B: usize = 64;
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let rows_per = c.div_ceil(threads).div_ceil(B).max(1) * B;
    std::thread::scope(|s| {
        for (t, chunk) in out.chunks_mut(rows_per * r).enumerate() {
            s.spawn(move || {
                let j_start = t * rows_per;
                let j_end = (j_start + rows_per).min(c);
                for j0 in (j_start..j_end).step_by(B) {
                    for i0 in (0..r).step_by(B) {
                        for j in j0..(j0 + B).min(j_end) {
                            for i in i0..(i0 + B).min(r) {
                                chunk[(j - j_start) * r + i] = data[i * c + j];
                            }
                        }
                    }
                }
            });
        }
    });
    (vec![c, r], out)
}

/// True for HF `nn.Linear` weights (`[out, in]`), which the graph wants as `[in, out]`.
fn is_llama_linear(name: &str) -> bool {
    name.ends_with("_proj.weight") || name == "lm_head.weight"
}

/// Prepares loaded weights for the model code: LLaMA linears transposed, the tied or untied
/// output projection as `lm_head.weight` `[hidden, vocab]`; GPT-2 names without the
/// `transformer.` prefix and its tied head as `lm_head.weight`.
pub fn prepare(cfg: &ModelConfig, mut store: WeightStore) -> Result<Weights, crate::ModelError> {
    let mut w = Weights::default();
    let names: Vec<String> = store.names().map(str::to_string).collect();
    for name in names {
        let t = store.take(&name)?;
        match cfg {
            ModelConfig::Llama(_) => {
                if is_llama_linear(&name) {
                    let (s, d) = transpose(&t.shape, &t.data);
                    w.insert(&name, s, d);
                } else {
                    w.insert(&name, t.shape, t.data);
                }
            }
            ModelConfig::Gpt2(_) => {
                let short = name.strip_prefix("transformer.").unwrap_or(&name);
                w.insert(short, t.shape, t.data);
            }
        }
    }
    let tied = match cfg {
        ModelConfig::Llama(c) => c.tie_word_embeddings.then_some("model.embed_tokens.weight"),
        ModelConfig::Gpt2(_) => Some("wte.weight"),
    };
    if let Some(src) = tied
        && !w.map.contains_key("lm_head.weight")
    {
        let e = w.map.get(src).ok_or_else(|| {
            crate::ModelError::Missing(format!("{src} (the tied output embedding)"))
        })?;
        let (s, d) = transpose(&e.shape, &e.data);
        w.insert("lm_head.weight", s, d);
    }
    Ok(w)
}

/// Deterministic pseudo-normal values (sum of uniforms) scaled by `std`.
fn random_values(n: usize, seed: u64, std: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0x2545_F491_4F6C_DD1D);
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    // Irwin-Hall with 4 terms: mean 2, variance 1/3; normalised to unit variance.
    let k = (3.0f32).sqrt();
    (0..n)
        .map(|_| (next() + next() + next() + next() - 2.0) * k * std)
        .collect()
}

/// Random weights for `cfg` in HF names and layouts, one independent stream per tensor
/// (seeded by `seed` and the tensor's position), gains near 1, small biases.
pub fn random_store(cfg: &ModelConfig, seed: u64) -> Result<WeightStore, crate::ModelError> {
    let mut store = WeightStore::new(format!("random weights (seed {seed})"));
    for (i, (name, shape)) in crate::loader::expected_tensors(cfg).into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let s = seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
        let data = if name.contains("norm") || name.contains("ln_") {
            if name.ends_with(".bias") {
                random_values(n, s, 0.02)
            } else {
                random_values(n, s, 0.1)
                    .into_iter()
                    .map(|v| v + 1.0)
                    .collect()
            }
        } else {
            // Matrices, embeddings and biases alike: HF's usual initializer_range.
            random_values(n, s, 0.02)
        };
        store.insert(
            name,
            crate::loader::HostTensor::new(shape, data, crate::loader::SourceDType::F32)?,
        )?;
    }
    Ok(store)
}
