//! A prepared plan: the lowered schedule with compiled kernels, a planned arena and output
//! buffers. Running it again only binds inputs and symbols and launches kernels.

use std::collections::HashMap;
use std::sync::Arc;

use cranegrad_codegen::{KernelCache, KernelFn};
use cranegrad_graph::{Bindings, DType, HostData, Shape};
use cranegrad_lower::{BufKind, Lowered};

use crate::buffer::AlignedBuf;
use crate::error::RuntimeError;
use crate::pack::{PackCache, PackInput};
use crate::planner::{MemoryPlan, plan_memory};
use crate::pool::ThreadPool;
use crate::value::Value;

/// Launches with less work than this (elements x reduce length) run on the caller alone:
/// waking the pool costs more than it saves.
const PARALLEL_MIN_WORK: usize = 1 << 15;

/// Compile statistics of one kernel of a plan.
#[derive(Clone, Debug)]
pub struct KernelInfo {
    /// Kernel name.
    pub name: String,
    /// Compile time (0 when it came from the cache).
    pub compile_micros: f64,
    /// True when the kernel cache already had it.
    pub cache_hit: bool,
}

/// Facts about a launch fixed at plan time, so a run does no pattern matching.
#[derive(Clone, Debug)]
struct LaunchInfo {
    /// Dimensions whose product is the parallel range.
    parallel: Vec<cranegrad_graph::Dim>,
    /// Chunk alignment of the range split.
    align: i64,
    /// Per body (one, or each part of a group), all loop extents: the work estimate is the
    /// sum of their products.
    work: Vec<Vec<cranegrad_graph::Dim>>,
    /// How each GEMM body reads B, and each packed gather its table, from packed panels.
    packed_b: Vec<PackedB>,
}

/// A GEMM's packed B operand.
#[derive(Clone, Copy, Debug)]
struct PackedB {
    /// Argument slot of B.
    slot: usize,
    /// Rows of B (the contraction length).
    k: usize,
    /// Columns of B.
    n: usize,
    /// B is stored `[N, K]`.
    transposed: bool,
    /// Argument slot of the vector scaling B's rows (a folded norm gain).
    scale: Option<usize>,
    /// The second weight of a paired GEMM: (slot, transposed, scale slot).
    pair: Option<(usize, bool, Option<usize>)>,
    /// The compact format the panels hold, if any.
    compact: Option<cranegrad_graph::CompactFormat>,
}

/// Packed panels with the addresses of the weights they were made from.
type PackedMemo = ([usize; 4], Arc<AlignedBuf>);

/// The weights one packed B is made from, with its K and N and its panels' compact format.
pub(crate) type PackSources<'a> = (
    Vec<PackInput<'a>>,
    usize,
    usize,
    Option<cranegrad_graph::CompactFormat>,
);

/// One kernel launch as measured by a profiled run.
#[derive(Clone, Copy, Debug)]
pub struct KernelTiming {
    /// Index into the schedule's launches.
    pub launch: usize,
    /// Start, microseconds since the plan was created.
    pub start_us: f64,
    /// Duration in microseconds.
    pub micros: f64,
}

/// A schedule ready to run.
pub struct Plan {
    /// The lowered graph and schedule.
    pub lowered: Lowered,
    /// Arena layout of the temporaries.
    pub memory: MemoryPlan,
    /// Per-kernel compile facts.
    pub kernels: Vec<KernelInfo>,
    funcs: Vec<KernelFn>,
    arena: AlignedBuf,
    owned: HashMap<usize, AlignedBuf>,
    outputs: HashMap<usize, Arc<AlignedBuf>>,
    infos: Vec<LaunchInfo>,
    /// When set, every launch is timed into `timings`.
    pub profile: bool,
    /// Launch timings of profiled runs (cleared by the caller).
    pub timings: Vec<KernelTiming>,
    epoch: std::time::Instant,
    /// Per launch and packed B, the panels of the last run and the addresses of the weights
    /// they were packed from: a replay with the same weights (every decode step) reuses them
    /// without a pack-cache lookup. The addresses stay unique: the session's pack cache,
    /// which never drops an entry, keeps those weights alive.
    packed_memo: Vec<Vec<Option<PackedMemo>>>,
    /// Input buffers some launch reads unpacked (not as packed panels): their raw data must
    /// stay.
    raw_reads: Vec<bool>,
    /// Per-run working vectors, kept so a replay (a decode step) allocates none.
    scratch: RunScratch,
}

/// The vectors one run fills: the data bound to each input buffer, every buffer's address,
/// and one launch's arguments and symbols.
#[derive(Default)]
struct RunScratch {
    bound: Vec<Option<HostData>>,
    ptrs: Vec<*mut u8>,
    args: Vec<*mut u8>,
    syms: Vec<i64>,
    /// The zero-length buffer a write into a state returns.
    empty: Option<Arc<AlignedBuf>>,
}

impl Plan {
    /// Per packed B of launch `li`, the weights it is packed from (one, or two for a paired
    /// GEMM) with its K and N, each buffer resolved by `weight`.
    pub(crate) fn pack_inputs<'a>(
        &self,
        li: usize,
        weight: impl Fn(usize) -> Option<&'a HostData> + Copy,
    ) -> Result<Vec<PackSources<'a>>, RuntimeError> {
        self.infos[li]
            .packed_b
            .iter()
            .map(|&pb| self.pack_sources(li, pb, weight))
            .collect()
    }

    /// The weights of one packed B of launch `li`.
    fn pack_sources<'a>(
        &self,
        li: usize,
        pb: PackedB,
        weight: impl Fn(usize) -> Option<&'a HostData>,
    ) -> Result<PackSources<'a>, RuntimeError> {
        let l = &self.lowered.schedule.launches[li];
        let get = |slot: usize| {
            weight(l.args[slot]).ok_or_else(|| {
                RuntimeError::Bounds(format!("{}: packed B is not an input", l.kernel.name))
            })
        };
        let scale = |slot: Option<usize>| -> Result<Option<&'a HostData>, RuntimeError> {
            let Some(s) = slot else { return Ok(None) };
            let v = get(s)?;
            if v.as_words().len() < pb.k {
                return Err(RuntimeError::Bounds(format!(
                    "{}: the scale of packed B has {} values, K is {}",
                    l.kernel.name,
                    v.as_words().len(),
                    pb.k
                )));
            }
            Ok(Some(v))
        };
        let mut sources = vec![PackInput {
            data: get(pb.slot)?,
            transposed: pb.transposed,
            scale: scale(pb.scale)?,
        }];
        if let Some((slot, transposed, s)) = pb.pair {
            sources.push(PackInput {
                data: get(slot)?,
                transposed,
                scale: scale(s)?,
            });
        }
        Ok((sources, pb.k, pb.n, pb.compact))
    }

    /// Compiles every kernel of `lowered` (through the cache) and allocates its memory.
    pub fn new(lowered: Lowered, cache: &mut KernelCache) -> Result<Plan, RuntimeError> {
        let sched = &lowered.schedule;
        check_memory(sched)?;
        let mut funcs = Vec::with_capacity(sched.launches.len());
        let mut kernels = Vec::with_capacity(sched.launches.len());
        for l in &sched.launches {
            let c = cache.get_or_compile(&l.kernel)?;
            funcs.push(c.func);
            kernels.push(KernelInfo {
                name: l.kernel.name.clone(),
                compile_micros: c.compile_micros,
                cache_hit: c.hit,
            });
        }
        let infos: Vec<LaunchInfo> = sched
            .launches
            .iter()
            .map(|l| {
                let k = &l.kernel;
                let packed_b = k
                    .bodies()
                    .iter()
                    .filter_map(|k| k.gemm().filter(|g| g.packed).map(|g| (k, g)))
                    .map(|(k, g)| PackedB {
                        slot: k.b_arg(&g).unwrap_or(0),
                        k: k.loops[g.k_loop].extent.max_value(),
                        n: g.cols,
                        transposed: g.b_transposed,
                        scale: k.b_scale_arg(&g),
                        pair: g.pair.map(|p| {
                            (
                                k.load_arg(p.b).unwrap_or(0),
                                p.b_transposed,
                                p.b_scale.and_then(|e| k.load_arg(e)),
                            )
                        }),
                        compact: g.compact,
                    })
                    .chain(
                        k.packed_gathers()
                            .into_iter()
                            .map(|(slot, rows, k, format)| {
                                // A row lookup reads the panels a GEMM on the table's transpose
                                // would: the same cache entry when both run (a tied LM head).
                                PackedB {
                                    slot,
                                    k,
                                    n: rows,
                                    transposed: true,
                                    scale: None,
                                    pair: None,
                                    compact: Some(format),
                                }
                            }),
                    )
                    .collect();
                LaunchInfo {
                    parallel: k.parallel_dims(),
                    align: if k.parallel_over_inner() { 16 } else { 1 },
                    work: k
                        .bodies()
                        .iter()
                        .map(|k| k.loops.iter().map(|lp| lp.extent.clone()).collect())
                        .collect(),
                    packed_b,
                }
            })
            .collect();
        let memory = plan_memory(sched);
        let arena = AlignedBuf::zeroed(memory.arena_bytes / 4);
        let mut owned = HashMap::new();
        let mut outputs = HashMap::new();
        for (i, b) in sched.buffers.iter().enumerate() {
            let staged = matches!(b.kind, BufKind::Input { .. }) && !b.shape.is_static();
            if staged {
                owned.insert(i, AlignedBuf::zeroed(b.len()));
            }
            if matches!(b.kind, BufKind::Output) {
                outputs.insert(i, Arc::new(AlignedBuf::zeroed(b.len())));
            }
        }
        let packed_memo = infos.iter().map(|i| vec![None; i.packed_b.len()]).collect();
        let mut raw_reads = vec![false; sched.buffers.len()];
        for l in &sched.launches {
            for slot in l.kernel.raw_read_slots() {
                let buf = l.args[slot];
                if matches!(sched.buffers[buf].kind, BufKind::Input { .. }) {
                    raw_reads[buf] = true;
                }
            }
        }
        Ok(Plan {
            lowered,
            memory,
            kernels,
            funcs,
            arena,
            owned,
            outputs,
            infos,
            profile: false,
            timings: Vec::new(),
            epoch: std::time::Instant::now(),
            packed_memo,
            raw_reads,
            scratch: RunScratch::default(),
        })
    }

    /// The input name bound to a launch's argument slot (for errors).
    pub(crate) fn input_name(&self, li: usize, slot: usize) -> String {
        let l = &self.lowered.schedule.launches[li];
        match &self.lowered.schedule.buffers[l.args[slot]].kind {
            BufKind::Input { name, .. } => name.clone(),
            _ => format!("buf{}", l.args[slot]),
        }
    }

    /// True when some launch reads input buffer `buf` unpacked.
    pub(crate) fn reads_raw(&self, buf: usize) -> bool {
        self.raw_reads[buf]
    }

    /// Number of kernels launched per run.
    pub fn kernel_count(&self) -> usize {
        self.funcs.len()
    }

    /// Binds inputs by name from the feed layers (the first layer holding a name wins; data
    /// attached when the plan was built is the fallback), runs every kernel, and returns the
    /// outputs at their bound shapes.
    pub fn run(
        &mut self,
        pool: &ThreadPool,
        packs: &mut PackCache,
        states: &HashMap<String, AlignedBuf>,
        feeds: &[&HashMap<String, HostData>],
        bindings: &Bindings,
    ) -> Result<Vec<Value>, RuntimeError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let out = self.run_with(&mut scratch, pool, packs, states, feeds, bindings);
        // The run keeps no feed alive (a caller may reuse its buffers).
        scratch.bound.iter_mut().for_each(|b| *b = None);
        self.scratch = scratch;
        out
    }

    /// [`Plan::run`] with its working vectors.
    fn run_with(
        &mut self,
        scratch: &mut RunScratch,
        pool: &ThreadPool,
        packs: &mut PackCache,
        states: &HashMap<String, AlignedBuf>,
        feeds: &[&HashMap<String, HostData>],
        bindings: &Bindings,
    ) -> Result<Vec<Value>, RuntimeError> {
        let sched = &self.lowered.schedule;
        let n_bufs = sched.buffers.len();
        let bound = &mut scratch.bound;
        bound.clear();
        bound.resize(n_bufs, None);
        // A result still held by the caller keeps its buffer; this run writes a fresh one.
        for (&i, buf) in self.outputs.iter_mut() {
            if Arc::strong_count(buf) > 1 {
                *buf = Arc::new(AlignedBuf::zeroed(sched.buffers[i].len()));
            }
        }
        let ptrs = &mut scratch.ptrs;
        ptrs.clear();
        ptrs.resize(n_bufs, std::ptr::null_mut());
        for (i, b) in sched.buffers.iter().enumerate() {
            ptrs[i] = match &b.kind {
                BufKind::Temp => match self.memory.offsets[i] {
                    // SAFETY: the planner keeps every offset + size inside the arena.
                    Some(off) => unsafe { self.arena.as_mut_ptr().add(off) },
                    None => self.arena.as_mut_ptr(),
                },
                BufKind::Output => self.outputs[&i].as_mut_ptr(),
                BufKind::Input { name, .. } if states.contains_key(name) => {
                    let st = &states[name];
                    if st.len() < b.len() || b.dtype != DType::F32 && b.dtype != DType::I32 {
                        return Err(RuntimeError::InputLength {
                            name: name.clone(),
                            expected: b.len(),
                            got: st.len(),
                        });
                    }
                    st.as_mut_ptr()
                }
                BufKind::Input { name, data } => {
                    let d = feeds
                        .iter()
                        .find_map(|f| f.get(name))
                        .or(data.as_ref())
                        .ok_or_else(|| RuntimeError::MissingInput(name.clone()))?;
                    let want = b.dtype;
                    let got = d.dtype();
                    if got != want && !(want == DType::Bool && got == DType::I32) {
                        return Err(RuntimeError::InputDType {
                            name: name.clone(),
                            expected: want,
                            got,
                        });
                    }
                    let dims = b.shape.eval(bindings)?;
                    let numel: usize = dims.iter().product();
                    if d.len() != numel {
                        return Err(RuntimeError::InputLength {
                            name: name.clone(),
                            expected: numel,
                            got: d.len(),
                        });
                    }
                    if self.raw_reads[i] && crate::pack::is_released(d) {
                        return Err(RuntimeError::Released(name.clone()));
                    }
                    bound[i] = Some(d.clone());
                    match self.owned.get_mut(&i) {
                        Some(stage) => {
                            scatter_to_layout(&b.shape, &dims, d.as_words(), stage.words_mut());
                            stage.as_mut_ptr()
                        }
                        None => d.as_words().as_ptr().cast_mut().cast::<u8>(),
                    }
                }
            };
        }
        // Ids read by a gather must name a row of its table.
        for &(b, rows) in &sched.index_checks {
            if let BufKind::Input { name, .. } = &sched.buffers[b].kind
                && let Some(ids) = bound[b].as_ref().and_then(HostData::as_i32)
                && let Some(bad) = ids.iter().find(|&&i| i < 0 || i as usize >= rows)
            {
                return Err(RuntimeError::Bounds(format!(
                    "input {name}: id {bad} is outside the table's {rows} rows"
                )));
            }
        }
        // Validate every symbol before any kernel runs.
        for l in &sched.launches {
            for s in &l.kernel.symbols {
                cranegrad_graph::Dim::sym(s).eval(bindings)?;
            }
        }
        // Packed weights for GEMM kernels that read B from panels.
        for li in 0..sched.launches.len() {
            for (pi, &pb) in self.infos[li].packed_b.iter().enumerate() {
                let args = &sched.launches[li].args;
                let addr = |slot: Option<usize>| {
                    slot.and_then(|s| bound[args[s]].as_ref())
                        .map_or(0, HostData::addr)
                };
                let pair = pb.pair.map(|p| (p.0, p.2));
                let key = [
                    addr(Some(pb.slot)),
                    addr(pb.scale),
                    addr(pair.map(|p| p.0)),
                    addr(pair.and_then(|p| p.1)),
                ];
                if self.packed_memo[li][pi]
                    .as_ref()
                    .is_some_and(|(k, _)| *k == key)
                {
                    continue;
                }
                let weight = |buf: usize| bound[buf].as_ref();
                let (sources, k, n, format) = self.pack_sources(li, pb, weight)?;
                let packed = packs
                    .get(&sources, k, n, format)
                    .ok_or_else(|| RuntimeError::Released(self.input_name(li, pb.slot)))?;
                self.packed_memo[li][pi] = Some((key, packed));
            }
        }
        let (args, syms) = (&mut scratch.args, &mut scratch.syms);
        for (li, (l, &f)) in sched.launches.iter().zip(&self.funcs).enumerate() {
            args.clear();
            args.extend(l.args.iter().map(|&b| ptrs[b]));
            let info = &self.infos[li];
            for (memo, pb) in self.packed_memo[li].iter().zip(&info.packed_b) {
                if let Some((_, p)) = memo {
                    args[pb.slot] = p.as_mut_ptr();
                }
            }
            syms.clear();
            syms.extend(l.kernel.symbols.iter().map(|s| bindings[&s.name]));
            let total: usize = info
                .parallel
                .iter()
                .map(|d| d.eval(bindings))
                .product::<Result<usize, _>>()?;
            let mut work = 0usize;
            for body in &info.work {
                work += body
                    .iter()
                    .map(|d| d.eval(bindings))
                    .product::<Result<usize, _>>()?;
            }
            let align = info.align;
            let threads = if work < PARALLEL_MIN_WORK {
                1
            } else {
                pool.threads()
            };
            // SAFETY: `args` holds a live pointer for every argument slot, each buffer is at
            // least `Arg::len` elements (checked by codegen's bounds proof against the same
            // lengths), symbols were validated above, and kernels write disjoint ranges.
            let t0 = self.profile.then(std::time::Instant::now);
            unsafe {
                pool.run(
                    f,
                    args.as_ptr(),
                    syms.as_ptr(),
                    total as i64,
                    align,
                    threads,
                );
            }
            if let Some(t0) = t0 {
                self.timings.push(KernelTiming {
                    launch: li,
                    start_us: t0.duration_since(self.epoch).as_secs_f64() * 1e6,
                    micros: t0.elapsed().as_secs_f64() * 1e6,
                });
            }
        }
        sched
            .outputs
            .iter()
            .map(|&o| {
                let b = &sched.buffers[o];
                if let BufKind::Input { name, .. } = &b.kind
                    && states.contains_key(name)
                {
                    // A write into a state is an effect: its contents stay in the state.
                    let empty = scratch
                        .empty
                        .get_or_insert_with(|| Arc::new(AlignedBuf::zeroed(0)));
                    return Ok(Value::from_buffer(vec![0], b.dtype, empty.clone()));
                }
                let dims = b.shape.eval(bindings)?;
                if let (true, Some(buf)) = (b.shape.is_static(), self.outputs.get(&o)) {
                    return Ok(Value::from_buffer(dims, b.dtype, buf.clone()));
                }
                // SAFETY: ptrs[o] points at a buffer of b.len() words (an output or an input).
                let words = unsafe { std::slice::from_raw_parts(ptrs[o].cast::<u32>(), b.len()) };
                let compact = gather_from_layout(&b.shape, &dims, words);
                let mut buf = AlignedBuf::zeroed(compact.len());
                buf.words_mut().copy_from_slice(&compact);
                Ok(Value::from_buffer(dims, b.dtype, Arc::new(buf)))
            })
            .collect()
    }
}

/// Visits `(compact index, layout index)` pairs of a bound shape inside its max layout.
fn for_each_layout_index(shape: &Shape, dims: &[usize], mut f: impl FnMut(usize, usize)) {
    let strides = shape.layout_strides();
    let n: usize = dims.iter().product();
    if shape.is_static() {
        (0..n).for_each(|i| f(i, i));
        return;
    }
    let mut idx = vec![0usize; dims.len()];
    for c in 0..n {
        let l: usize = idx.iter().zip(&strides).map(|(i, &s)| i * s as usize).sum();
        f(c, l);
        for d in (0..dims.len()).rev() {
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

fn scatter_to_layout(shape: &Shape, dims: &[usize], src: &[u32], dst: &mut [u32]) {
    for_each_layout_index(shape, dims, |c, l| dst[l] = src[c]);
}

fn gather_from_layout(shape: &Shape, dims: &[usize], src: &[u32]) -> Vec<u32> {
    let n: usize = dims.iter().product();
    if shape.is_static() {
        return src[..n].to_vec();
    }
    let mut out = vec![0u32; n];
    for_each_layout_index(shape, dims, |c, l| out[c] = src[l]);
    out
}

/// Refuses, before compiling or allocating anything, a plan whose buffers exceed the memory
/// the machine has available (an allocation that large would abort the process).
fn check_memory(sched: &cranegrad_lower::Schedule) -> Result<(), RuntimeError> {
    let arena = plan_memory(sched).arena_bytes as u64;
    let others: u64 = sched
        .buffers
        .iter()
        .filter(|b| {
            matches!(b.kind, BufKind::Output)
                || (matches!(b.kind, BufKind::Input { .. }) && !b.shape.is_static())
        })
        .map(|b| b.len() as u64 * 4)
        .sum();
    let needed = arena.saturating_add(others);
    match crate::probe::available_memory_bytes() {
        Some(available) if needed > available => Err(RuntimeError::OutOfMemory {
            needed,
            arena,
            available,
        }),
        _ => Ok(()),
    }
}
