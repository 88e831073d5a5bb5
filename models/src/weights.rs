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
    /// Values (shared, never copied per graph). A session that frees raw weights once packed
    /// (`Session::set_free_raw_weights`) returns these pages to the OS: read them only
    /// through the runtime, which refuses freed data.
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

    /// An `nn.Linear` weight (`[out, in]`) as the `[in, out]` matmul operand: a transposed
    /// view, packed by the runtime on first use.
    pub fn linear(&self, g: &Graph, name: &str) -> Result<Tensor, GraphError> {
        self.tensor(g, name)?.transpose(0, 1)
    }

    /// True when a weight of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
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

/// Prepares loaded weights for the model code: names only (GPT-2 loses its `transformer.`
/// prefix). Linear weights stay in the file's `[out, in]` layout: the graph reads them through
/// a transposed view and the runtime packs them once for the GEMM, so nothing is copied here.
pub fn prepare(cfg: &ModelConfig, mut store: WeightStore) -> Result<Weights, crate::ModelError> {
    let mut w = Weights::default();
    let names: Vec<String> = store.names().map(str::to_string).collect();
    for name in names {
        let t = store.take(&name)?;
        let short = match cfg {
            ModelConfig::Llama(_) => name.as_str(),
            ModelConfig::Gpt2(_) => name.strip_prefix("transformer.").unwrap_or(&name),
        };
        w.insert(short, t.shape, t.data);
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
    let specs = crate::loader::expected_tensors(cfg);
    // Each tensor has its own stream, so the values do not depend on how the work is split;
    // threads take tensors largest first from a shared counter.
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(specs[i].1.iter().product::<usize>()));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let mut made: Vec<(usize, Vec<f32>)> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                sc.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&i) = order.get(j) else { break };
                        let (name, shape) = &specs[i];
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
                            // Matrices, embeddings and biases alike: HF's initializer_range.
                            random_values(n, s, 0.02)
                        };
                        out.push((i, data));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    made.sort_by_key(|m| m.0);
    if made.len() != specs.len() {
        return Err(crate::ModelError::Input(
            "random weight generation lost a tensor (a worker thread failed)".into(),
        ));
    }
    let mut store = WeightStore::new(format!("random weights (seed {seed})"));
    for ((name, shape), (_, data)) in specs.into_iter().zip(made) {
        store.insert(
            name,
            crate::loader::HostTensor::new(shape, data, crate::loader::SourceDType::F32)?,
        )?;
    }
    Ok(store)
}
