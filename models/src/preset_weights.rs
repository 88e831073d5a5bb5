//! A preset's random weights, generated once into the weights cache and mapped by every later
//! process: generating a 1B preset takes seconds, mapping it does not. The entry's key holds
//! the generator version, the preset, the seed and the whole config, and every tensor is
//! named `entry:tensor` so the panels packed from it are cached too.

use std::sync::Arc;

use cranegrad_graph::{DType, HostData};
use cranegrad_runtime::weight_cache::{self, HEADER_BYTES};
use sha2::{Digest, Sha256};

use crate::ModelError;
use crate::loader::validate::LM_HEAD;
use crate::loader::{ModelConfig, expected_tensors, validate};
use crate::weights::{Weights, prepare, prepared_name, random_store};

/// Version of the values `generate_into` makes: bump when they change.
const GENERATOR: u32 = 1;

/// One tensor's place in an entry: HF name, shape, byte offset in the payload.
type Slot = (String, Vec<usize>, usize);

/// The tensors of `cfg` the model keeps (a tied head is dropped, as loading does), each at a
/// 64-byte aligned offset, and the payload's length.
fn layout(cfg: &ModelConfig) -> (Vec<Slot>, usize) {
    let mut at = 0usize;
    let mut slots = Vec::new();
    for (name, shape) in expected_tensors(cfg) {
        if name == LM_HEAD && cfg.tie_word_embeddings() {
            continue;
        }
        let bytes = shape.iter().product::<usize>() * 4;
        slots.push((name, shape, at));
        at = (at + bytes).next_multiple_of(64);
    }
    (slots, at)
}

/// The weights of an entry mapped as `entry`; `None` when it is shorter than the layout.
fn mapped(
    cfg: &ModelConfig,
    entry: &Arc<memmap2::Mmap>,
    slots: &[Slot],
    id: &str,
) -> Option<Weights> {
    let mut w = Weights::default();
    for (name, shape, at) in slots {
        let short = prepared_name(cfg, name);
        let n = shape.iter().product();
        let data = HostData::mapped(
            entry.clone(),
            HEADER_BYTES + at,
            n,
            DType::F32,
            &format!("{id}:{short}"),
        )?;
        w.insert_data(short, shape.clone(), data);
    }
    Some(w)
}

/// The random weights of preset `preset` (config `cfg`) from `seed`: mapped from the weights
/// cache when it holds them, else generated (and then written to the cache, named as the
/// mapped ones are, so this process's packed panels are cached too).
pub fn preset_weights(cfg: &ModelConfig, preset: &str, seed: u64) -> Result<Weights, ModelError> {
    let cache = weight_cache::global();
    let key = format!("preset weights: generator v{GENERATOR}, {preset}, seed {seed}, {cfg:?}");
    let id: String = Sha256::digest(key.as_bytes())[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let id = format!("preset-{id}");
    let (slots, len) = layout(cfg);
    if let Some(c) = &cache
        && let Some(e) = c.load(&key)
        && let Some(w) = mapped(cfg, &e, &slots, &id)
    {
        return Ok(w);
    }
    let store = random_store(cfg, seed)?;
    validate(cfg, &store)?;
    let Some(cache) = cache else {
        return prepare(cfg, store, None);
    };
    let weights = prepare(cfg, store, Some(&id))?;
    cache.store(&key, len, |w| {
        let mut at = 0;
        for (name, _, offset) in &slots {
            let t = weights
                .get(prepared_name(cfg, name))
                .ok_or_else(|| std::io::Error::other(format!("{name} was not generated")))?;
            w.zeros(offset - at)?;
            w.words(t.data.as_words())?;
            at = offset + t.data.len() * 4;
        }
        w.zeros(len - at)
    });
    Ok(weights)
}
