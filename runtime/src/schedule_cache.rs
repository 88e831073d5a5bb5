//! Schedules on disk: the passes' output for a graph, so a fresh process skips lowering too.
//! Entries live in the kernel cache (same checksum, build id, atomic writes and cap) as JSON
//! of the lowered program without its data. The key is the graph's structural hash and the
//! lowering options plus which inputs carry data and which compact format each of those is
//! exact in (a weight lowers differently from a feed, a bf16 or Q8 one differently again);
//! data itself is never stored: it is bound again by input name from the graph at hand, whose
//! structure the key says is the one lowered.

use cranegrad_codegen::disk_cache::DiskCache;
use cranegrad_graph::{HostData, Op};
use cranegrad_lower::{BufKind, Lowered};
use sha2::{Digest, Sha256};

use crate::session::Feeds;

/// Version of the entry's contents (bump when `Lowered`'s serialised form changes meaning).
const FORMAT: u32 = 3;

/// The disk key of the schedule of a graph whose plan key is `plan_key` and whose
/// data-carrying inputs are `data` (see `session::attached_data`).
pub fn key(plan_key: &str, data: &Feeds) -> String {
    let mut names: Vec<(&String, &HostData)> = data.iter().collect();
    names.sort_by_key(|(n, _)| *n);
    let mut h = Sha256::new();
    for (name, data) in names {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(data.compact().map_or("f32", |f| f.name()).as_bytes());
        h.update([0]);
    }
    let weights: String = h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("schedule v{FORMAT} {plan_key} weights {weights}")
}

/// The schedule stored under `key`, with `data` (the graph's data-carrying inputs, which the
/// key names) bound to it by input name; `None` when there is none or it does not parse.
pub fn load(disk: &DiskCache, key: &str, data: &Feeds) -> Option<Lowered> {
    let entry = disk.load(key)?;
    let mut lowered: Lowered = serde_json::from_slice(&entry.code).ok()?;
    for b in &mut lowered.schedule.buffers {
        if let BufKind::Input { name, data: d } = &mut b.kind {
            *d = data.get(name).cloned();
        }
    }
    for node in lowered.graph.g.node_weights_mut() {
        if let Op::Input { name } = &node.op {
            node.data = data.get(name).cloned();
        }
    }
    Some(lowered)
}

/// Stores `lowered` under `key` (failures are silent: the cache is an optimisation).
pub fn store(disk: &DiskCache, key: &str, lowered: &Lowered) {
    if let Ok(json) = serde_json::to_vec(lowered) {
        disk.store(key, &json, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cranegrad_codegen::disk_cache::DEFAULT_MAX_BYTES;
    use cranegrad_graph::{DType, Graph, Shape, lcg_values};
    use cranegrad_lower::{LowerOptions, lower};

    use crate::session::attached_data;

    #[test]
    fn a_stored_schedule_loads_equal_with_the_graphs_data_bound() {
        let root = std::env::temp_dir().join(format!("cg-sched-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let disk = DiskCache::open(&root, DEFAULT_MAX_BYTES).unwrap();
        let g = Graph::new();
        let x = g.input("x", Shape::of(&[3, 8]), DType::F32);
        let w = g
            .input_with_data("w", Shape::of(&[8, 16]), lcg_values(128, 1, 1.0))
            .unwrap();
        // A masked softmax of a matmul: constants of -inf must survive the round trip.
        let y = x.matmul(&w).unwrap();
        let m = y.max(1, true).unwrap();
        let big = g.constant(f64::NEG_INFINITY, y.shape().clone(), DType::F32);
        let y = y.cmplt(&big).unwrap().where_(&big, &y).unwrap();
        let out = y.sub(&m).unwrap().exp().unwrap();
        let ids = [out.id()];
        let lowered = g
            .with(|gd| lower(gd, &ids, LowerOptions::default()))
            .unwrap();
        let data = g.with(|gd| attached_data(gd, &ids));
        let k = key("plan", &data);
        assert!(load(&disk, &k, &data).is_none());
        store(&disk, &k, &lowered);
        let back = load(&disk, &k, &data).unwrap();
        assert_eq!(back.schedule.text(), lowered.schedule.text());
        let kernels = |l: &Lowered| -> Vec<_> {
            l.schedule
                .launches
                .iter()
                .map(|l| l.kernel.clone())
                .collect()
        };
        assert_eq!(kernels(&back), kernels(&lowered));
        // The weight is bound again (from this graph, not from the entry), the feed is not.
        let weights = |l: &Lowered| -> Vec<bool> {
            l.schedule.buffers.iter().map(|b| b.is_weight()).collect()
        };
        assert_eq!(weights(&back), weights(&lowered));
        assert!(weights(&back).contains(&true));
        // The same weight marked exact in bf16 (packed at 16 bits) lowers under another key.
        let g3 = Graph::new();
        let x3 = g3.input("x", Shape::of(&[3, 8]), DType::F32);
        let bf16: Vec<f32> = lcg_values(128, 1, 1.0)
            .into_iter()
            .map(|v| f32::from_bits(v.to_bits() & 0xffff_0000))
            .collect();
        let plain = cranegrad_graph::HostData::from(bf16.clone());
        let marked = cranegrad_graph::HostData::from(bf16)
            .into_compact(cranegrad_graph::CompactFormat::Bf16)
            .unwrap();
        let w3 = g3
            .input_with_data("w", Shape::of(&[8, 16]), marked)
            .unwrap();
        let w4 = g3.input_with_data("w", Shape::of(&[8, 16]), plain).unwrap();
        let (o3, o4) = (x3.matmul(&w3).unwrap(), x3.matmul(&w4).unwrap());
        assert_ne!(
            key("plan", &g3.with(|gd| attached_data(gd, &[o3.id()]))),
            key("plan", &g3.with(|gd| attached_data(gd, &[o4.id()])))
        );
        // The same structure with the weight fed instead lowers under another key.
        let g2 = Graph::new();
        let x2 = g2.input("x", Shape::of(&[3, 8]), DType::F32);
        let w2 = g2.input("w", Shape::of(&[8, 16]), DType::F32);
        let o2 = x2.matmul(&w2).unwrap();
        let o1 = x.matmul(&w).unwrap();
        assert_ne!(
            key("plan", &g2.with(|gd| attached_data(gd, &[o2.id()]))),
            key("plan", &g.with(|gd| attached_data(gd, &[o1.id()])))
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
