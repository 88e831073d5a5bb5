//! Weights prepared for the graph: HF-named tensors with linear layers transposed once to
//! `[in, out]` (so matmuls stream contiguous rows), shared by every graph built from them.

use std::collections::BTreeMap;

use cranegrad_graph::{CompactFormat, Graph, GraphError, HostData, Shape, Tensor};

use crate::loader::{ModelConfig, SourceDType, WeightStore};

/// One prepared weight.
#[derive(Clone, Debug)]
pub struct Weight {
    /// Shape as used in the graph.
    pub shape: Vec<usize>,
    /// Values (shared, never copied per graph; possibly a window of a mapped cache file). A
    /// session that frees raw weights once packed (`Session::set_free_raw_weights`) returns
    /// these pages to the OS: read them only through the runtime, which refuses freed data.
    pub data: HostData,
}

/// Prepared weights by name.
#[derive(Clone, Debug, Default)]
pub struct Weights {
    map: BTreeMap<String, Weight>,
}

impl Weights {
    /// Adds a weight.
    pub fn insert(&mut self, name: &str, shape: Vec<usize>, data: Vec<f32>) {
        self.insert_data(name, shape, HostData::from(data));
    }

    /// Adds a weight whose values are already host data (mapped, or named by an origin).
    pub fn insert_data(&mut self, name: &str, shape: Vec<usize>, data: HostData) {
        self.map.insert(name.to_string(), Weight { shape, data });
    }

    /// Every weight's name, in order.
    pub fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    /// The weight named `name`.
    pub fn get(&self, name: &str) -> Option<&Weight> {
        self.map.get(name)
    }

    /// The weight as a graph input carrying its data.
    pub fn tensor(&self, g: &Graph, name: &str) -> Result<Tensor, GraphError> {
        let w = self.map.get(name).ok_or_else(|| GraphError::Shape {
            op: "weights".into(),
            got: Shape(vec![]),
            expected: format!("a prepared weight named {name}"),
        })?;
        g.input_with_data(name, Shape::of(&w.shape), w.data.clone())
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

/// The name the model code knows a stored tensor by (GPT-2 loses its `transformer.` prefix).
pub fn prepared_name<'a>(cfg: &ModelConfig, name: &'a str) -> &'a str {
    match cfg {
        ModelConfig::Llama(_) => name,
        ModelConfig::Gpt2(_) => name.strip_prefix("transformer.").unwrap_or(name),
    }
}

/// Prepares loaded weights for the model code: names only (see [`prepared_name`]). Linear
/// weights stay in the file's `[out, in]` layout: the graph reads them through a transposed
/// view and the runtime packs them once for the GEMM, so nothing is copied here. With an
/// `origin` (a stable name of the file's contents), each weight is named `origin:tensor`, so
/// what the runtime derives from it (packed panels) can be cached on disk.
pub fn prepare(
    cfg: &ModelConfig,
    mut store: WeightStore,
    origin: Option<&str>,
) -> Result<Weights, crate::ModelError> {
    let mut w = Weights::default();
    let names: Vec<String> = store.names().map(str::to_string).collect();
    for name in names {
        let t = store.take(&name)?;
        let short = prepared_name(cfg, &name);
        let mut data = HostData::from(t.data);
        if let Some(o) = origin {
            data = data.with_origin(&format!("{o}:{short}"));
        }
        // Widened from a compact type, so exact in it: packed compactly.
        data = into_first_compact(data, packed_formats(t.source_dtype));
        w.insert_data(short, t.shape, data);
    }
    Ok(w)
}

/// The compact formats a tensor stored as `dtype` is exact in, the most compact first (the
/// loader packs it in the first its values fit): bf16 as itself; the 4-bit types (Q4_0,
/// Q4_1, and Q4_K, whose sub-blocks are 32) as nibbles with a scale and offset per block of
/// 32; the other symmetric block types (a scale times small integers per block of 32) as
/// Q8; those with a minimum per block of 32 (Q5_1, Q5_K) as Q8 with offsets; Q6_K (a scale
/// per 16) as Q8 with a scale per half block. f16 is packed as f32 (see `Model::quantize`).
pub fn packed_formats(dtype: SourceDType) -> &'static [CompactFormat] {
    use CompactFormat::{Bf16, Q4, Q8, Q8Offset, Q8Split};
    match dtype {
        SourceDType::BF16 => &[Bf16],
        SourceDType::Q4_0 => &[Q4, Q8],
        SourceDType::Q4_1 | SourceDType::Q4_K => &[Q4, Q8Offset],
        SourceDType::Q8_0 | SourceDType::Q5_0 => &[Q8],
        SourceDType::Q5_1 | SourceDType::Q5_K => &[Q8Offset],
        SourceDType::Q6_K => &[Q8Split],
        _ => &[],
    }
}

/// `data` marked in the first of `formats` its values are exact in, or as it was.
pub fn into_first_compact(mut data: HostData, formats: &[CompactFormat]) -> HostData {
    for &f in formats {
        match data.into_compact(f) {
            Ok(d) => return d,
            Err(d) => data = d,
        }
    }
    data
}

/// Fills `out` with deterministic pseudo-normal values (sum of uniforms) scaled by `std`,
/// plus `shift`.
fn fill_random(out: &mut [f32], seed: u64, std: f32, shift: f32) {
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
    for o in out {
        let v = (next() + next() + next() + next() - 2.0) * k * std;
        // Adding a zero shift would turn -0.0 into 0.0.
        *o = if shift == 0.0 { v } else { v + shift };
    }
}

/// Fills `outs[i]` with the random values of tensor `specs[i]` of a preset: one independent
/// stream per tensor (seeded by `seed` and the tensor's position), gains near 1, small
/// biases. Each tensor has its own stream, so the values do not depend on how the work is
/// split; threads take tensors largest first from a shared counter.
fn generate_into(specs: &[(String, Vec<usize>)], seed: u64, outs: Vec<&mut [f32]>) {
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(specs[i].1.iter().product::<usize>()));
    let outs: Vec<std::sync::Mutex<&mut [f32]>> =
        outs.into_iter().map(std::sync::Mutex::new).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| {
                loop {
                    let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&i) = order.get(j) else { break };
                    let name = &specs[i].0;
                    let mut out = outs[i].lock().unwrap_or_else(|e| e.into_inner());
                    let s = seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
                    let (std, shift) = if name.contains("norm") || name.contains("ln_") {
                        if name.ends_with(".bias") {
                            (0.02, 0.0)
                        } else {
                            (0.1, 1.0)
                        }
                    } else {
                        // Matrices, embeddings and biases alike: HF's initializer_range.
                        (0.02, 0.0)
                    };
                    fill_random(&mut out, s, std, shift);
                }
            });
        }
    });
}

/// Random weights for `cfg` in HF names and layouts (see [`generate_into`]).
pub fn random_store(cfg: &ModelConfig, seed: u64) -> Result<WeightStore, crate::ModelError> {
    let specs = crate::loader::expected_tensors(cfg);
    let mut made: Vec<Vec<f32>> = specs
        .iter()
        .map(|(_, shape)| vec![0.0; shape.iter().product()])
        .collect();
    generate_into(
        &specs,
        seed,
        made.iter_mut().map(Vec::as_mut_slice).collect(),
    );
    let mut store = WeightStore::new(format!("random weights (seed {seed})"));
    for ((name, shape), data) in specs.into_iter().zip(made) {
        store.insert(
            name,
            crate::loader::HostTensor::new(shape, data, crate::loader::SourceDType::F32)?,
        )?;
    }
    Ok(store)
}
