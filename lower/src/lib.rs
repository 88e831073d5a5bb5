//! Lowering: the whole pipeline from a graph to a schedule of kernels, as one list of named
//! steps in four stages, in order:
//!
//! 1. graph passes (graph -> graph): [`GRAPH_PASSES`];
//! 2. fusion steps, each a decision on one partition of the graph into kernels
//!    ([`fusion::Fusion`], checked after every step): [`FUSION_STEPS`];
//! 3. the partition is built into kernels (`schedule::build_schedule`), then kernel passes
//!    (kernel -> kernel) run on every kernel: [`KERNEL_PASSES`];
//! 4. schedule passes (schedule -> schedule): [`SCHEDULE_PASSES`].
//!
//! Each step is a function in a file of its own; shared predicates live in [`patterns`], and
//! no step file imports another. `--dump-graph` lists every step with its count of changes and
//! its time.

pub mod affine;
pub mod filetest;
pub mod fusion;
pub mod fusion_steps;
pub mod graph_passes;
pub mod kernel;
pub mod kernel_analysis;
pub mod kernel_parse;
pub mod kernel_passes;
pub mod label;
pub mod patterns;
mod rewrite;
pub mod schedule;
pub mod schedule_passes;

use std::collections::BTreeSet;
use std::time::Instant;

use cranegrad_graph::{GraphData, NodeId, Tensor};
use fusion::Fusion;
use fusion_steps::{
    fuse_attention::fuse_attention, fuse_epilogues::fuse_epilogues,
    fuse_gemm_prologues::fuse_gemm_prologues, fuse_rows::fuse_rows,
    realize_every_op::realize_every_op, realize_operands::realize_operands,
    realize_roots::realize_roots, realize_row_scaled_matmuls::realize_row_scaled_matmuls,
    realize_shared_values::realize_shared_values,
};
use graph_passes::{
    cse::eliminate_common_subexpressions, dead_nodes::eliminate_dead_nodes,
    fold_constants::fold_constants, fold_norm_into_matmul::fold_norm_into_matmul,
    hoist_scale_out_of_max::hoist_scale_out_of_max, sink_slices::sink_slices,
};
use kernel_passes::{
    bound_exp2::bound_exp2, carry_first_reduction::carry_first_reduction,
    contract_fma::contract_fma, mark_sequential_loops::mark_sequential_loops,
    nan_blind_max::nan_blind_max, plan_rows::plan_rows,
    reduced_axis_innermost::reduced_axis_innermost, select_gemm::select_gemm,
    select_integer_dot::select_integer_dot, select_packed_gather::select_packed_gather,
    simplify_loops::simplify_loops, store_and_rescale::store_and_rescale,
};
use schedule_passes::{fuse_sibling_gemms::fuse_sibling_gemms, name_kernels::name_kernels};
use thiserror::Error;

pub use kernel::Kernel;
pub use schedule::{BufDecl, BufId, BufKind, Launch, Schedule};

/// Why lowering failed.
#[derive(Debug, Error)]
pub enum LowerError {
    /// A graph the scheduler cannot express; names the op and shapes.
    #[error("lowering: {0}")]
    Internal(String),
}

/// Switches for the pipeline.
#[derive(Clone, Copy, Debug)]
pub struct LowerOptions {
    /// Fuse elementwise ops into their consumers; off gives one kernel per primitive op.
    pub fuse: bool,
    /// With `fuse`: run attention as one flash-attention kernel (off: the scores, the softmax
    /// and `@ v` are three kernels, for comparison).
    pub attention: bool,
    /// GEMMs over Q8 weights with few rows quantise A to 8 bits and multiply in integers
    /// (`select_integer_dot`); off, every kernel dequantises exactly and accumulates in f32.
    pub integer_dot: bool,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions {
            fuse: true,
            attention: true,
            integer_dot: true,
        }
    }
}

/// Which stage of the pipeline a step belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stage {
    /// Graph -> graph.
    Graph,
    /// A decision on the partition into kernels.
    Fusion,
    /// The partition built into kernels (`build_schedule`).
    Build,
    /// Kernel -> kernel, on every kernel.
    Kernel,
    /// Schedule -> schedule.
    Schedule,
}

impl Stage {
    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Graph => "graph",
            Stage::Fusion => "fusion",
            Stage::Build => "build",
            Stage::Kernel => "kernel",
            Stage::Schedule => "schedule",
        }
    }
}

/// What one step did, for `--dump-graph` and timing.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PassStat {
    /// Step function name.
    pub name: std::borrow::Cow<'static, str>,
    /// Its stage.
    pub stage: Stage,
    /// What changed: nodes rewritten or removed (graph passes), nodes whose realization
    /// changed (fusion steps), kernels built or changed, launches merged or renamed.
    pub changed: usize,
    /// Nodes left afterwards.
    pub nodes: usize,
    /// Wall time in microseconds.
    pub micros: f64,
}

/// When a step runs.
#[derive(Clone, Copy, Debug)]
pub enum When {
    /// Always.
    Always,
    /// With fusion on.
    Fused,
    /// With fusion off (`--no-fuse`).
    Unfused,
    /// With fusion and the attention template on.
    FusedAttention,
    /// With integer dot products allowed (off for exact runs).
    IntegerDot,
}

impl When {
    /// True when a step under this condition runs with `opts`.
    pub fn holds(self, opts: LowerOptions) -> bool {
        match self {
            When::Always => true,
            When::Fused => opts.fuse,
            When::Unfused => !opts.fuse,
            When::FusedAttention => opts.fuse && opts.attention,
            When::IntegerDot => opts.integer_dot,
        }
    }
}

/// A named step of one stage: its function and when it runs.
pub struct Step<F> {
    /// The function's name.
    pub name: &'static str,
    /// The step.
    pub run: F,
    /// When it runs.
    pub when: When,
}

/// A graph pass: rewrites the graph, may replace outputs; returns the nodes it changed.
pub type GraphPass = fn(&mut GraphData, &mut Vec<NodeId>) -> usize;
/// A fusion step: one decision on the partition, over the nodes in topological order.
pub type FusionStep = fn(&GraphData, &[NodeId], &[NodeId], &mut Fusion);
/// A kernel pass: rewrites one launch's kernel (the buffers say which are weights); returns
/// whether it changed.
pub type KernelPass = fn(&mut Launch, &[BufDecl]) -> bool;
/// A schedule pass: rewrites the schedule; returns what it changed.
pub type SchedulePass = fn(&mut Schedule) -> usize;

/// The graph passes, in order.
pub const GRAPH_PASSES: &[Step<GraphPass>] = &[
    Step {
        name: "eliminate_dead_nodes",
        run: |g, o| eliminate_dead_nodes(g, o),
        when: When::Always,
    },
    Step {
        name: "fold_constants",
        run: |g, o| fold_constants(g, o),
        when: When::Always,
    },
    Step {
        name: "eliminate_common_subexpressions",
        run: |g, o| eliminate_common_subexpressions(g, o),
        when: When::Always,
    },
    Step {
        name: "eliminate_dead_nodes",
        run: |g, o| eliminate_dead_nodes(g, o),
        when: When::Always,
    },
    // Before sink_slices and CSE: the max's scale is hoisted out of a softmax so attention
    // matching sees `c * (x - max(x))`.
    Step {
        name: "hoist_scale_out_of_max",
        run: |g, o| hoist_scale_out_of_max(g, o),
        when: When::Fused,
    },
    Step {
        name: "sink_slices",
        run: |g, o| sink_slices(g, o),
        when: When::Fused,
    },
    Step {
        name: "eliminate_common_subexpressions",
        run: |g, o| eliminate_common_subexpressions(g, o),
        when: When::Fused,
    },
    Step {
        name: "fold_norm_into_matmul",
        run: |g, o| fold_norm_into_matmul(g, o),
        when: When::Fused,
    },
    Step {
        name: "eliminate_dead_nodes",
        run: |g, o| eliminate_dead_nodes(g, o),
        when: When::Fused,
    },
];

/// The fusion steps, in order: later steps read the realizations earlier ones made.
pub const FUSION_STEPS: &[Step<FusionStep>] = &[
    Step {
        name: "realize_roots",
        run: realize_roots,
        when: When::Always,
    },
    Step {
        name: "realize_every_op",
        run: realize_every_op,
        when: When::Unfused,
    },
    // Before the operands: a row-scaled matmul's product becomes its root.
    Step {
        name: "realize_row_scaled_matmuls",
        run: realize_row_scaled_matmuls,
        when: When::Fused,
    },
    Step {
        name: "realize_operands",
        run: realize_operands,
        when: When::Always,
    },
    // Row groups before shared values, so values a group shares (x in softmax) are seen by
    // one kernel.
    Step {
        name: "fuse_rows",
        run: fuse_rows,
        when: When::Fused,
    },
    Step {
        name: "realize_shared_values",
        run: realize_shared_values,
        when: When::Always,
    },
    // Epilogues skip row-group exits, which fuse_rows must have marked.
    Step {
        name: "fuse_epilogues",
        run: fuse_epilogues,
        when: When::Fused,
    },
    // After the epilogues: a prologue's roots are the GEMM kernels the epilogues formed.
    Step {
        name: "fuse_gemm_prologues",
        run: fuse_gemm_prologues,
        when: When::Fused,
    },
    // Last: attention matches the softmax and matmul kernels the steps above formed.
    Step {
        name: "fuse_attention",
        run: fuse_attention,
        when: When::FusedAttention,
    },
];

/// The kernel passes, in order, run on every kernel.
pub const KERNEL_PASSES: &[Step<KernelPass>] = &[
    // Before simplify_loops, which would merge the loops it reorders.
    Step {
        name: "reduced_axis_innermost",
        run: |l, _| {
            l.row_axis
                .is_some_and(|a| reduced_axis_innermost(&mut l.kernel, a))
        },
        when: When::Always,
    },
    // A template's loops stay as built: its spec names them.
    Step {
        name: "simplify_loops",
        run: |l, _| {
            if !matches!(l.kernel.body, kernel::KernelBody::Loops(_)) {
                return false;
            }
            let simplified = simplify_loops(l.kernel.clone());
            let changed = simplified != l.kernel;
            l.kernel = simplified;
            changed
        },
        when: When::Always,
    },
    Step {
        name: "select_gemm",
        run: |l, bufs| {
            let args = &l.args;
            select_gemm(
                &mut l.kernel,
                |slot| args.get(slot).is_some_and(|&b| bufs[b].is_weight()),
                |slot| args.get(slot).and_then(|&b| bufs[b].compact_weight()),
            )
        },
        when: When::Always,
    },
    Step {
        name: "select_integer_dot",
        run: |l, _| select_integer_dot(&mut l.kernel),
        when: When::IntegerDot,
    },
    Step {
        name: "select_packed_gather",
        run: |l, bufs| {
            let args = &l.args;
            select_packed_gather(&mut l.kernel, |slot| {
                args.get(slot).and_then(|&b| bufs[b].compact_weight())
            })
        },
        when: When::Always,
    },
    // After select_gemm: a GEMM splits its own units.
    Step {
        name: "mark_sequential_loops",
        run: |l, _| mark_sequential_loops(&mut l.kernel),
        when: When::Always,
    },
    // The row passes read the final loops: after every pass that changes them.
    Step {
        name: "plan_rows",
        run: |l, _| plan_rows(&mut l.kernel),
        when: When::Always,
    },
    Step {
        name: "store_and_rescale",
        run: |l, _| store_and_rescale(&mut l.kernel),
        when: When::Always,
    },
    // Reads the rescale: the max it blinds is the rescaled softmax's.
    Step {
        name: "nan_blind_max",
        run: |l, _| nan_blind_max(&mut l.kernel),
        when: When::Always,
    },
    Step {
        name: "carry_first_reduction",
        run: |l, _| carry_first_reduction(&mut l.kernel),
        when: When::Always,
    },
    // Expression rewrites last: the row passes above match the plain `exp2` and `add`.
    Step {
        name: "bound_exp2",
        run: |l, _| bound_exp2(&mut l.kernel),
        when: When::Always,
    },
    Step {
        name: "contract_fma",
        run: |l, _| contract_fma(&mut l.kernel),
        when: When::Always,
    },
];

/// The schedule passes, in order.
pub const SCHEDULE_PASSES: &[Step<SchedulePass>] = &[
    Step {
        name: "fuse_sibling_gemms",
        run: fuse_sibling_gemms,
        when: When::Fused,
    },
    // Last: names follow the final launches and templates.
    Step {
        name: "name_kernels",
        run: name_kernels,
        when: When::Always,
    },
];

/// A lowered graph: the rewritten graph, its outputs and the schedule.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Lowered {
    /// The graph after the rewrite passes.
    pub graph: GraphData,
    /// Outputs in that graph.
    pub outputs: Vec<NodeId>,
    /// Kernels and buffers.
    pub schedule: Schedule,
    /// Per-step statistics, in order.
    pub passes: Vec<PassStat>,
}

/// Lowers tensors of one graph: [`lower`] on their graph and node ids.
pub fn lower_tensors(outputs: &[&Tensor], opts: LowerOptions) -> Result<Lowered, LowerError> {
    let first = outputs
        .first()
        .ok_or_else(|| LowerError::Internal("no tensor to lower".into()))?;
    if outputs.iter().any(|t| !t.graph().same(first.graph())) {
        return Err(LowerError::Internal(
            "the tensors to lower belong to different graphs".into(),
        ));
    }
    let ids: Vec<NodeId> = outputs.iter().map(|t| t.id()).collect();
    first.graph().with(|g| lower(g, &ids, opts))
}

/// True when the partition's invariants are checked after every fusion step: debug builds,
/// and `CRANEGRAD_VERIFY=1` (set by CI, which also turns on Cranelift's verifier).
pub fn checks_enabled() -> bool {
    cfg!(debug_assertions) || std::env::var_os("CRANEGRAD_VERIFY").is_some_and(|v| v == "1")
}

/// Records one step's statistics.
fn record(
    stats: &mut Vec<PassStat>,
    name: &'static str,
    stage: Stage,
    changed: usize,
    nodes: usize,
    t: Instant,
) {
    stats.push(PassStat {
        name: name.into(),
        stage,
        changed,
        nodes,
        micros: t.elapsed().as_secs_f64() * 1e6,
    });
}

/// Nodes whose realization differs between two partitions, plus template kernels gained or
/// lost: a fusion step's count of changes.
fn partition_changes(before: &Fusion, after: &Fusion) -> usize {
    fn differ<'a>(
        a: impl Iterator<Item = &'a NodeId>,
        b: impl Iterator<Item = &'a NodeId>,
    ) -> usize {
        let a: BTreeSet<NodeId> = a.copied().collect();
        let b: BTreeSet<NodeId> = b.copied().collect();
        a.symmetric_difference(&b).count()
    }
    differ(before.realized.iter(), after.realized.iter())
        + differ(before.attention.keys(), after.attention.keys())
        + differ(before.row_exits.keys(), after.row_exits.keys())
}

/// Runs the pipeline (see the module doc) on a copy of `graph`.
pub fn lower(
    graph: &GraphData,
    outputs: &[NodeId],
    opts: LowerOptions,
) -> Result<Lowered, LowerError> {
    let mut g = graph.clone();
    let mut outs = outputs.to_vec();
    let mut stats = Vec::new();
    for step in GRAPH_PASSES.iter().filter(|s| s.when.holds(opts)) {
        let t = Instant::now();
        let changed = (step.run)(&mut g, &mut outs);
        record(
            &mut stats,
            step.name,
            Stage::Graph,
            changed,
            g.g.node_count(),
            t,
        );
    }
    let order = g.topo_from(&outs);
    let mut fusion = Fusion::default();
    let check = checks_enabled();
    for step in FUSION_STEPS.iter().filter(|s| s.when.holds(opts)) {
        let t = Instant::now();
        let before = fusion.clone();
        (step.run)(&g, &order, &outs, &mut fusion);
        let changed = partition_changes(&before, &fusion);
        record(
            &mut stats,
            step.name,
            Stage::Fusion,
            changed,
            g.g.node_count(),
            t,
        );
        if check {
            fusion
                .check(&g, &outs)
                .map_err(|e| LowerError::Internal(format!("after {}: {e}", step.name)))?;
        }
    }
    let t = Instant::now();
    let mut schedule = schedule::build_schedule(&g, &outs, &fusion)?;
    let built = schedule.launches.len();
    record(
        &mut stats,
        "build_schedule",
        Stage::Build,
        built,
        g.g.node_count(),
        t,
    );
    for step in KERNEL_PASSES.iter().filter(|s| s.when.holds(opts)) {
        let t = Instant::now();
        let buffers = &schedule.buffers;
        let changed = schedule
            .launches
            .iter_mut()
            .map(|l| (step.run)(l, buffers))
            .filter(|&changed| changed)
            .count();
        record(
            &mut stats,
            step.name,
            Stage::Kernel,
            changed,
            g.g.node_count(),
            t,
        );
    }
    for step in SCHEDULE_PASSES.iter().filter(|s| s.when.holds(opts)) {
        let t = Instant::now();
        let changed = (step.run)(&mut schedule);
        record(
            &mut stats,
            step.name,
            Stage::Schedule,
            changed,
            g.g.node_count(),
            t,
        );
    }
    schedule.check_distinct_args()?;
    Ok(Lowered {
        graph: g,
        outputs: outs,
        schedule,
        passes: stats,
    })
}
