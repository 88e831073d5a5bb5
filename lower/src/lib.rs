//! Lowering: graph rewrite passes (dead nodes, constant folding, CSE, fusion) and scheduling
//! of the fused graph into loop-nest kernels.

pub mod affine;
pub mod kernel;
pub mod label;
pub mod passes;
pub mod schedule;

use std::time::Instant;

use cranegrad_graph::{GraphData, NodeId, Tensor};
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
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions {
            fuse: true,
            attention: true,
        }
    }
}

/// What one pass did, for `--dump-graph` and timing.
#[derive(Clone, Debug)]
pub struct PassStat {
    /// Pass function name.
    pub name: &'static str,
    /// Nodes rewritten or removed (launches merged, for `fuse_sibling_gemms`).
    pub changed: usize,
    /// Nodes left afterwards.
    pub nodes: usize,
    /// Wall time in microseconds.
    pub micros: f64,
}

/// A lowered graph: the rewritten graph, its outputs and the schedule.
#[derive(Clone, Debug)]
pub struct Lowered {
    /// The graph after the rewrite passes.
    pub graph: GraphData,
    /// Outputs in that graph.
    pub outputs: Vec<NodeId>,
    /// Kernels and buffers.
    pub schedule: Schedule,
    /// Per-pass statistics, in order.
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

/// Runs the pass pipeline on a copy of `graph` and schedules the result.
pub fn lower(
    graph: &GraphData,
    outputs: &[NodeId],
    opts: LowerOptions,
) -> Result<Lowered, LowerError> {
    use passes::*;
    let mut g = graph.clone();
    let mut outs = outputs.to_vec();
    let mut stats = Vec::new();
    let mut run =
        |name: &'static str, g: &mut GraphData, f: &mut dyn FnMut(&mut GraphData) -> usize| {
            let t = Instant::now();
            let changed = f(g);
            stats.push(PassStat {
                name,
                changed,
                nodes: g.g.node_count(),
                micros: t.elapsed().as_secs_f64() * 1e6,
            });
        };
    let o = outs.clone();
    run("eliminate_dead_nodes", &mut g, &mut |g| {
        dead_nodes::eliminate_dead_nodes(g, &o)
    });
    run("fold_constants", &mut g, &mut |g| {
        fold_constants::fold_constants(g, &mut outs)
    });
    run("eliminate_common_subexpressions", &mut g, &mut |g| {
        cse::eliminate_common_subexpressions(g, &mut outs)
    });
    let o = outs.clone();
    run("eliminate_dead_nodes", &mut g, &mut |g| {
        dead_nodes::eliminate_dead_nodes(g, &o)
    });
    if opts.fuse {
        run("hoist_scale_out_of_max", &mut g, &mut |g| {
            hoist_scale_out_of_max::hoist_scale_out_of_max(g, &mut outs)
        });
        run("sink_slices", &mut g, &mut |g| {
            sink_slices::sink_slices(g, &mut outs)
        });
        run("eliminate_common_subexpressions", &mut g, &mut |g| {
            cse::eliminate_common_subexpressions(g, &mut outs)
        });
        run("fold_norm_into_matmul", &mut g, &mut |g| {
            fold_norm_into_matmul::fold_norm_into_matmul(g, &mut outs)
        });
        let o = outs.clone();
        run("eliminate_dead_nodes", &mut g, &mut |g| {
            dead_nodes::eliminate_dead_nodes(g, &o)
        });
    }
    let t = Instant::now();
    let mut fusion = fuse_elementwise::fuse_elementwise(&g, &outs, opts.fuse);
    stats.push(PassStat {
        name: "fuse_elementwise",
        changed: fusion.realized.len(),
        nodes: g.g.node_count(),
        micros: t.elapsed().as_secs_f64() * 1e6,
    });
    if opts.fuse && opts.attention {
        let t = Instant::now();
        fuse_attention::fuse_attention(&g, &g.topo_from(&outs), &outs, &mut fusion);
        stats.push(PassStat {
            name: "fuse_attention",
            changed: fusion.attention.len(),
            nodes: g.g.node_count(),
            micros: t.elapsed().as_secs_f64() * 1e6,
        });
    }
    let t = Instant::now();
    let mut schedule = schedule::build_schedule(&g, &outs, &fusion)?;
    stats.push(PassStat {
        name: "build_schedule",
        changed: schedule.launches.len(),
        nodes: g.g.node_count(),
        micros: t.elapsed().as_secs_f64() * 1e6,
    });
    if opts.fuse {
        let t = Instant::now();
        let merged = fuse_sibling_gemms::fuse_sibling_gemms(&mut schedule);
        stats.push(PassStat {
            name: "fuse_sibling_gemms",
            changed: merged,
            nodes: g.g.node_count(),
            micros: t.elapsed().as_secs_f64() * 1e6,
        });
    }
    let t = Instant::now();
    let renamed = label::name_kernels(&mut schedule);
    stats.push(PassStat {
        name: "name_kernels",
        changed: renamed,
        nodes: g.g.node_count(),
        micros: t.elapsed().as_secs_f64() * 1e6,
    });
    schedule.check_distinct_args()?;
    Ok(Lowered {
        graph: g,
        outputs: outs,
        schedule,
        passes: stats,
    })
}
