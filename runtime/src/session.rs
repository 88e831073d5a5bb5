//! The entry point for running graphs: a session owns the kernel cache, the plan cache and the
//! thread pool. The first realize of a graph structure lowers and compiles it ("cold"); later
//! realizes of the same structure replay the cached plan ("warm").

use std::collections::HashMap;
use std::time::Instant;

use cranegrad_codegen::{CacheStats, KernelCache};
use cranegrad_graph::{Bindings, GraphData, HostData, NodeId, Op, Tensor, structural_hash};
use cranegrad_lower::{BufKind, LowerOptions, lower};

use crate::buffer::AlignedBuf;
use crate::error::RuntimeError;
use crate::pack::PackCache;
use crate::plan::Plan;
use crate::pool::ThreadPool;
use crate::schedule_cache;
use crate::value::Value;

/// How a session lowers and runs graphs.
#[derive(Clone, Copy, Debug)]
pub struct SessionOptions {
    /// Fuse elementwise ops (off: one kernel per primitive op).
    pub fuse: bool,
    /// Threads including the caller.
    pub threads: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            fuse: true,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Where the time of one realize went.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// True when the plan came from the plan cache (nothing lowered or compiled).
    pub plan_cached: bool,
    /// Hashing the graph structure (plan-cache lookup).
    pub hash_ms: f64,
    /// Rewrite passes and scheduling (or reading their output from the disk cache).
    pub passes_ms: f64,
    /// The schedule came from the disk cache: no pass ran.
    pub schedule_from_disk: bool,
    /// Cranelift compilation of the kernels that missed the kernel cache.
    pub compile_ms: f64,
    /// Binding inputs, launching kernels and copying outputs.
    pub execute_ms: f64,
    /// Whole realize.
    pub total_ms: f64,
    /// Kernels launched.
    pub kernels: usize,
    /// Kernel-cache hits during this realize.
    pub cache_hits: u64,
    /// Kernel-cache misses (compilations) during this realize.
    pub cache_misses: u64,
    /// Planned intermediate memory (arena) in bytes.
    pub arena_bytes: usize,
}

/// What [`Session::prepack`] found and packed.
#[derive(Clone, Copy, Debug, Default)]
pub struct PackStats {
    /// GEMM weight matrices the plan reads from packed panels.
    pub matrices: usize,
    /// Of those, packed by this call (the rest were already in the pack cache).
    pub packed: usize,
    /// Of the packed, mapped from the weights cache on disk (the session's total).
    pub mapped: usize,
    /// Bytes held by every packed copy of the session.
    pub bytes: usize,
    /// Bytes of raw weight data returned to the OS once packed (the session's total).
    pub freed_bytes: usize,
}

/// Runs graphs through the JIT.
pub struct Session {
    opts: SessionOptions,
    cache: KernelCache,
    plans: HashMap<String, Plan>,
    pool: ThreadPool,
    packs: PackCache,
    states: HashMap<String, AlignedBuf>,
    last: RunReport,
    /// Attention runs as one flash-attention kernel (see [`Session::set_attention_fusion`]).
    attention: bool,
    /// See [`Session::set_integer_dot`].
    integer_dot: bool,
    /// [`Session::prepack`] frees raw weights (see [`Session::set_free_raw_weights`]).
    free_raw: bool,
}

/// Input data by name.
pub type Feeds = HashMap<String, HostData>;

/// A plan captured for replay: its cache key and the graph's attached input data.
#[derive(Clone, Debug)]
pub struct Captured {
    key: String,
    attached: Feeds,
}

impl Session {
    /// A session with its own kernel cache and thread pool.
    pub fn new(opts: SessionOptions) -> Result<Session, RuntimeError> {
        Ok(Session {
            opts,
            cache: KernelCache::new()?,
            plans: HashMap::new(),
            pool: ThreadPool::new(opts.threads),
            packs: PackCache::default(),
            states: HashMap::new(),
            last: RunReport::default(),
            attention: true,
            integer_dot: true,
            free_raw: false,
        })
    }

    /// The options this session was made with.
    pub fn options(&self) -> SessionOptions {
        self.opts
    }

    /// Changes fusion for later realizes (plans are cached per setting).
    pub fn set_fuse(&mut self, fuse: bool) {
        self.opts.fuse = fuse;
    }

    /// Kernel-cache counters since the session started.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// The report of the most recent realize.
    pub fn last_report(&self) -> &RunReport {
        &self.last
    }

    /// The thread pool (shared with captured plans).
    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// Creates (or zeroes) a state: a session-owned buffer that an input of this name binds to
    /// instead of feeds, and that `write_slice` updates in place across runs (a KV cache).
    pub fn set_state(&mut self, name: &str, words: usize) {
        self.states
            .insert(name.to_string(), AlignedBuf::zeroed(words));
    }

    /// A state's current contents.
    pub fn state(&self, name: &str) -> Option<&AlignedBuf> {
        self.states.get(name)
    }

    /// Drops every state.
    pub fn clear_states(&mut self) {
        self.states.clear();
    }

    /// Drops every cached plan (the kernel cache stays).
    pub fn clear_plans(&mut self) {
        self.plans.clear();
    }

    fn key(&self, g: &GraphData, outs: &[NodeId]) -> String {
        format!(
            "{}:{}:{}:{}",
            structural_hash(g, outs),
            self.opts.fuse,
            self.attention,
            self.integer_dot
        )
    }

    /// Lets GEMMs over Q8 weights with few rows (decode) quantise their activations to 8 bits
    /// and multiply in integers (the default, as llama.cpp does); off, every kernel
    /// dequantises exactly and accumulates in f32, as goldens are checked.
    pub fn set_integer_dot(&mut self, on: bool) {
        self.integer_dot = on;
    }

    /// Runs attention as one flash-attention kernel (the default) or, when off, as three
    /// kernels (scores, softmax, `@ v`): the unfused path kept for comparison.
    pub fn set_attention_fusion(&mut self, on: bool) {
        self.attention = on;
    }

    /// Lowers and compiles the plan for `outputs` if it is not cached; returns its key.
    pub fn prepare(&mut self, outputs: &[&Tensor]) -> Result<String, RuntimeError> {
        let (graph, ids) = same_graph(outputs)?;
        let t0 = Instant::now();
        let key = graph.with(|g| self.key(g, &ids));
        self.last = RunReport {
            hash_ms: ms(t0),
            plan_cached: self.plans.contains_key(&key),
            ..RunReport::default()
        };
        if !self.last.plan_cached {
            let before = self.cache.stats();
            let t1 = Instant::now();
            // The graph's data is collected once, for the key and for binding a hit.
            let disk = cranegrad_codegen::disk_cache::global().map(|d| {
                let data = graph.with(|g| attached_data(g, &ids));
                (schedule_cache::key(&key, &data), d, data)
            });
            let cached = disk
                .as_ref()
                .and_then(|(k, d, data)| schedule_cache::load(d, k, data));
            self.last.schedule_from_disk = cached.is_some();
            let lowered = match cached {
                Some(l) => l,
                None => {
                    let l = graph.with(|g| {
                        lower(
                            g,
                            &ids,
                            LowerOptions {
                                fuse: self.opts.fuse,
                                attention: self.attention,
                                integer_dot: self.integer_dot,
                            },
                        )
                    })?;
                    if let Some((k, d, _)) = &disk {
                        schedule_cache::store(d, k, &l);
                    }
                    l
                }
            };
            self.last.passes_ms = ms(t1);
            let plan = Plan::new(lowered, &mut self.cache)?;
            let after = self.cache.stats();
            self.last.compile_ms = (after.compile_micros - before.compile_micros) / 1e3;
            self.last.cache_hits = after.hits - before.hits;
            self.last.cache_misses = after.misses - before.misses;
            self.plans.insert(key.clone(), plan);
        }
        let plan = &self.plans[&key];
        self.last.kernels = plan.kernel_count();
        self.last.arena_bytes = plan.memory.arena_bytes;
        Ok(key)
    }

    /// Packs every GEMM weight that the plan of `outputs` reads from panels (preparing the plan
    /// if needed) without running a kernel, so the first realize only executes: lets a caller
    /// count packing as part of loading. Inputs resolve as in a realize (feeds, then data
    /// attached to the graph or the plan); one that cannot be resolved is left for the run to
    /// report. The last report is left as it was.
    pub fn prepack(
        &mut self,
        outputs: &[&Tensor],
        feeds: &Feeds,
    ) -> Result<PackStats, RuntimeError> {
        let last = self.last.clone();
        let key = self.prepare(outputs);
        self.last = last;
        let key = key?;
        let attached = attached_inputs(outputs);
        let plan = &self.plans[&key];
        let sched = &plan.lowered.schedule;
        let resolve = |buf: usize| match &sched.buffers[buf].kind {
            BufKind::Input { name, .. } if self.states.contains_key(name) => None,
            BufKind::Input { name, data } => feeds
                .get(name)
                .or_else(|| attached.get(name))
                .or(data.as_ref()),
            _ => None,
        };
        let before = self.packs.len();
        let mut matrices = 0;
        // Weights some kernel reads unpacked keep their raw data.
        let raw: std::collections::HashSet<usize> = (0..sched.buffers.len())
            .filter(|&b| plan.reads_raw(b))
            .filter_map(|b| resolve(b).map(HostData::addr))
            .collect();
        // An input that cannot be resolved yet is left for the run to report.
        let all: Vec<_> = (0..sched.launches.len())
            .filter_map(|li| plan.pack_inputs(li, resolve).ok())
            .flatten()
            .collect();
        // Packings left per weight: its raw data goes once the last of them exists, so raw
        // and packed copies of all the weights are never resident together.
        let mut left: HashMap<usize, usize> = HashMap::new();
        for (sources, _, _, _) in &all {
            for s in sources {
                *left.entry(s.data.addr()).or_default() += 1;
            }
        }
        for (sources, k, n, format) in &all {
            // A source freed by an earlier plan: the run reports it by name.
            let packed = self.packs.get(sources, *k, *n, *format).is_some();
            matrices += usize::from(packed);
            for s in sources {
                let n_left = left.get_mut(&s.data.addr()).expect("counted above");
                *n_left -= 1;
                if packed && self.free_raw && *n_left == 0 && !raw.contains(&s.data.addr()) {
                    self.packs.release(s.data);
                }
            }
        }
        Ok(PackStats {
            matrices,
            packed: self.packs.len() - before,
            mapped: self.packs.disk_hits,
            bytes: self.packs.bytes,
            freed_bytes: self.packs.released_bytes,
        })
    }

    /// From now on [`Session::prepack`] returns each weight's raw pages to the OS once its
    /// panels exist, when no kernel of the plan reads it unpacked: resident weight memory
    /// halves. The data then lives on only as packed panels: a later graph that reads such a
    /// weight raw, or packs it differently, fails with [`RuntimeError::Released`] naming it,
    /// and so does the reference interpreter. Freeing is process-wide: every holder of the
    /// same data (the model's weights, a clone) sees the pages gone, so no other session
    /// may be running on those weights meanwhile, and code outside the runtime must not read
    /// them raw.
    pub fn set_free_raw_weights(&mut self, on: bool) {
        self.free_raw = on;
    }

    /// Bytes of raw weight data this session returned to the OS once packed.
    pub fn freed_raw_bytes(&self) -> usize {
        self.packs.released_bytes
    }

    /// True when [`Session::prepack`] frees raw weights.
    pub fn frees_raw_weights(&self) -> bool {
        self.free_raw
    }

    /// Bytes of the packed weight copies held by this session, by panel format (`f32`, or a
    /// compact format's name).
    pub fn packed_bytes_by_format(&self) -> &std::collections::BTreeMap<&'static str, usize> {
        &self.packs.bytes_by_format
    }

    /// Packed weight copies held by this session: `(matrices, bytes)`.
    pub fn packed(&self) -> (usize, usize) {
        (self.packs.len(), self.packs.bytes)
    }

    /// Captures `outputs` for replay (like tinygrad's TinyJit): lowers and compiles once and
    /// remembers the graph's attached data, so [`Session::replay`] does no graph walk, no
    /// hashing and no compilation per call.
    pub fn capture(&mut self, outputs: &[&Tensor]) -> Result<Captured, RuntimeError> {
        let key = self.prepare(outputs)?;
        Ok(Captured {
            key,
            attached: attached_inputs(outputs),
        })
    }

    /// Runs a captured plan with new feeds and symbol values.
    pub fn replay(
        &mut self,
        captured: &Captured,
        feeds: &Feeds,
        bindings: &Bindings,
    ) -> Result<Vec<Value>, RuntimeError> {
        let t0 = Instant::now();
        let plan = self
            .plans
            .get_mut(&captured.key)
            .ok_or(RuntimeError::MixedGraphs)?;
        // Feeds first, then the graph's attached data: nothing is copied per call.
        let layers = [feeds, &captured.attached];
        let out = plan.run(&self.pool, &mut self.packs, &self.states, &layers, bindings)?;
        self.last = RunReport {
            plan_cached: true,
            execute_ms: ms(t0),
            total_ms: ms(t0),
            kernels: plan.kernel_count(),
            arena_bytes: plan.memory.arena_bytes,
            ..RunReport::default()
        };
        Ok(out)
    }

    /// The cached plan for a key from [`Session::prepare`].
    pub fn plan(&self, key: &str) -> Option<&Plan> {
        self.plans.get(key)
    }

    /// The cached plan for a key, mutably (to switch profiling on or read timings).
    pub fn plan_mut(&mut self, key: &str) -> Option<&mut Plan> {
        self.plans.get_mut(key)
    }

    /// The key of a captured plan.
    pub fn captured_key(c: &Captured) -> &str {
        &c.key
    }

    /// Computes `outputs`. Inputs take their data from the graph or from `feeds` (by name);
    /// symbolic dimensions take their values from `bindings`.
    pub fn realize(
        &mut self,
        outputs: &[&Tensor],
        feeds: &Feeds,
        bindings: &Bindings,
    ) -> Result<Vec<Value>, RuntimeError> {
        let t0 = Instant::now();
        let key = self.prepare(outputs)?;
        let attached = attached_inputs(outputs);
        let t1 = Instant::now();
        let plan = self.plans.get_mut(&key).expect("prepared above");
        let out = plan.run(
            &self.pool,
            &mut self.packs,
            &self.states,
            &[feeds, &attached],
            bindings,
        )?;
        self.last.execute_ms = ms(t1);
        self.last.total_ms = ms(t0);
        Ok(out)
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The graph and node ids of `outputs`, which must share one graph.
pub fn same_graph(
    outputs: &[&Tensor],
) -> Result<(cranegrad_graph::Graph, Vec<NodeId>), RuntimeError> {
    let first = outputs.first().ok_or(RuntimeError::MixedGraphs)?;
    if outputs.iter().any(|t| !t.graph().same(first.graph())) {
        return Err(RuntimeError::MixedGraphs);
    }
    Ok((
        first.graph().clone(),
        outputs.iter().map(|t| t.id()).collect(),
    ))
}

/// Data attached to the input nodes that `outputs` depend on, by name.
pub fn attached_inputs(outputs: &[&Tensor]) -> Feeds {
    let Some(first) = outputs.first() else {
        return Feeds::new();
    };
    let ids: Vec<NodeId> = outputs.iter().map(|t| t.id()).collect();
    first.graph().with(|g| attached_data(g, &ids))
}

/// The inputs carrying data in `g` reachable from `outputs`, by name (what
/// [`attached_inputs`] answers for tensors).
pub fn attached_data(g: &GraphData, outputs: &[NodeId]) -> Feeds {
    g.topo_from(outputs)
        .into_iter()
        .filter_map(|n| {
            let node = g.node(n);
            match (&node.op, &node.data) {
                (Op::Input { name }, Some(d)) => Some((name.clone(), d.clone())),
                _ => None,
            }
        })
        .collect()
}

/// Runs `outputs` through the reference interpreter (the oracle).
pub fn interpret_tensors(
    outputs: &[&Tensor],
    feeds: &Feeds,
    bindings: &Bindings,
) -> Result<Vec<Value>, RuntimeError> {
    let (graph, ids) = same_graph(outputs)?;
    graph.with(|g| crate::interp::interpret(g, &ids, feeds, bindings))
}
