//! Elementwise fusion: decides which nodes get a buffer ("realized"); every other node is
//! computed inline, inside the kernel of the realized node that consumes it.
//!
//! The rules, in order:
//! 1. Outputs, reductions and matmuls are realized (each is the root of a kernel). A
//!    reduction's elementwise producers are computed inside its loop, so `sum(x*x)` reads `x`
//!    once.
//! 2. A matmul operand that is more than a view (movement ops over a buffer or a constant) is
//!    realized: inlining it would recompute it for every output column.
//! 3. A reshape that merges axes of anything but a contiguous buffer is not affine; the node
//!    under the reshape chain is realized (a copy kernel) so the reshape becomes a free view.
//! 4. A gather's table is realized unless it is a buffer (rows are addressed directly); its
//!    indices are realized unless they are a view.
//! 5. A computed node whose value is needed by more than one kernel is realized once and read
//!    by each, rather than recomputed (recomputing a chain of transcendental ops per consumer
//!    costs more than one write and reads). Views and constants are never realized this way.
//!
//! 6. Epilogues: a reduction or matmul whose value feeds, through same-shape elementwise ops
//!    only, exactly one kernel rooted at a same-shape elementwise node is computed inside that
//!    kernel (bias, residual, activation applied before the store), as long as the kernel has
//!    no other reduction. The reduction's own loop becomes the kernel's reduce loop. A value
//!    read only through a realized permute is computed by the permute's kernel, which then
//!    stores it in the permuted layout; a reduction read only through a realized affine
//!    reshape (dropping its kept axis) likewise. Unrealized reshapes that only drop or add
//!    size-1 axes may sit between the reduction and its epilogue (`sqrt(sum(x, axis))`
//!    without the kept axis). A row group's exit (it computes its rows' reductions already)
//!    takes no epilogue reduction, and matmul epilogues are placed before reduction ones.
//!
//! 7. GEMM prologues (`fuse_gemm_prologue`): a matmul's B that is a weight scaled along K by
//!    a weight vector stays inline (packing folds it); `mm * r` with `r` a row broadcast is
//!    the matmul's kernel root; a row sum reaching only that kernel is computed inside it.
//!
//! With fusion off (`--no-fuse`) every non-view, non-source node is realized: one kernel per
//! primitive op.

use std::collections::{BTreeSet, HashMap};

use cranegrad_graph::{Dim, GraphData, NodeId, Op, Shape};

use super::fuse_gemm_prologue::{
    fuse_gemm_prologues, is_gemm_row_statistic, is_row_scale, is_scaled_weight, pairable,
    realize_row_scaled_matmuls,
};

/// The set of nodes that own a buffer (inputs always do and are not listed).
#[derive(Clone, Debug, Default)]
pub struct Fusion {
    /// Nodes computed by a kernel of their own.
    pub realized: BTreeSet<NodeId>,
    /// Kernel roots that run as one flash-attention kernel, with their pattern.
    pub attention: std::collections::BTreeMap<NodeId, super::fuse_attention::Attention>,
    /// Exits of row groups (`fuse_rows`), with the axis their rows run along: kernels that
    /// already compute their row's reductions, so they take no epilogue reduction.
    pub row_exits: std::collections::BTreeMap<NodeId, usize>,
}

impl Fusion {
    /// True when the node's value lives in a buffer (a realized node or an input).
    pub fn is_buffer(&self, g: &GraphData, n: NodeId) -> bool {
        self.realized.contains(&n) || matches!(g.node(n).op, Op::Input { .. })
    }

    /// True when reading the node costs only loads: a buffer, a constant, or views of them.
    pub fn is_free(&self, g: &GraphData, n: NodeId) -> bool {
        let mut cur = n;
        loop {
            if self.is_buffer(g, cur) {
                return true;
            }
            match g.node(cur).op {
                Op::Const { .. } | Op::Arange { .. } => return true,
                ref op if op.is_movement() => cur = g.inputs(cur)[0],
                _ => return false,
            }
        }
    }
}

/// Follows a chain of reshapes down to the first node that is not an unrealized reshape.
pub fn reshape_base(g: &GraphData, fusion: &Fusion, n: NodeId) -> NodeId {
    let mut cur = n;
    while matches!(g.node(cur).op, Op::Reshape) && (cur == n || !fusion.realized.contains(&cur)) {
        cur = g.inputs(cur)[0];
    }
    cur
}

/// Groups the axes of a reshape: `(input axes, output axes)` with equal products. Size-1 axes
/// are left out; symbolic axes must match one to one.
pub fn reshape_groups(input: &Shape, output: &Shape) -> Option<Vec<(Vec<usize>, Vec<usize>)>> {
    let ins: Vec<usize> = (0..input.rank())
        .filter(|&i| !input.dims()[i].is_one())
        .collect();
    let outs: Vec<usize> = (0..output.rank())
        .filter(|&i| !output.dims()[i].is_one())
        .collect();
    let (mut i, mut o) = (0, 0);
    let mut groups = Vec::new();
    while i < ins.len() && o < outs.len() {
        let (di, do_) = (&input.dims()[ins[i]], &output.dims()[outs[o]]);
        if let (Dim::Sym { .. }, _) | (_, Dim::Sym { .. }) = (di, do_) {
            if di != do_ {
                return None;
            }
            groups.push((vec![ins[i]], vec![outs[o]]));
            i += 1;
            o += 1;
            continue;
        }
        let (mut gi, mut go) = (vec![ins[i]], vec![outs[o]]);
        let (mut pi, mut po) = (di.max_value(), do_.max_value());
        i += 1;
        o += 1;
        while pi != po {
            if pi < po {
                let d = input.dims().get(*ins.get(i)?)?.as_const()?;
                pi *= d;
                gi.push(ins[i]);
                i += 1;
            } else {
                let d = output.dims().get(*outs.get(o)?)?.as_const()?;
                po *= d;
                go.push(outs[o]);
                o += 1;
            }
        }
        groups.push((gi, go));
    }
    (i == ins.len() && o == outs.len()).then_some(groups)
}

/// True when every group of the reshape splits (or keeps) one input axis, so input indices
/// are affine in output indices.
pub fn reshape_is_affine(input: &Shape, output: &Shape) -> bool {
    reshape_groups(input, output).is_some_and(|gs| gs.iter().all(|(gi, _)| gi.len() == 1))
}

/// Chooses the realized nodes of the graph reachable from `outputs` (see the module rules).
pub fn fuse_elementwise(g: &GraphData, outputs: &[NodeId], fuse: bool) -> Fusion {
    let order = g.topo_from(outputs);
    let mut f = Fusion::default();
    f.realized.extend(outputs.iter().copied());
    for &n in &order {
        let op = &g.node(n).op;
        let root = matches!(op, Op::Reduce { .. } | Op::MatMul | Op::WriteSlice { .. });
        if root || (!fuse && !op.is_movement() && !op.is_source()) {
            f.realized.insert(n);
        }
    }
    if fuse {
        realize_row_scaled_matmuls(g, &order, outputs, &mut f);
    }
    for &n in &order {
        match g.node(n).op {
            Op::Gather => {
                let ins = g.inputs(n);
                if !f.is_buffer(g, ins[0]) {
                    f.realized.insert(ins[0]);
                }
                if !f.is_free(g, ins[1]) {
                    f.realized.insert(ins[1]);
                }
            }
            Op::MatMul => {
                for i in g.inputs(n) {
                    if !(f.is_free(g, i) || fuse && is_scaled_weight(g, i)) {
                        f.realized.insert(i);
                    }
                }
            }
            Op::Reshape => {
                let child = g.inputs(n)[0];
                if !reshape_is_affine(&g.node(child).shape, &g.node(n).shape) {
                    let base = reshape_base(g, &f, n);
                    let base_op = &g.node(base).op;
                    if !f.is_buffer(g, base) && !matches!(base_op, Op::Const { .. }) {
                        f.realized.insert(base);
                    }
                }
            }
            _ => {}
        }
    }
    // Row groups first, so values they share (x in softmax) are seen by one kernel below.
    if fuse {
        super::fuse_rows::fuse_rows(g, &order, outputs, &mut f);
    }
    // Owners: the realized nodes whose kernels read a node's value through unrealized paths.
    let mut owners: HashMap<NodeId, BTreeSet<NodeId>> = HashMap::new();
    for &n in order.iter().rev() {
        if g.node(n).op.is_source() {
            continue;
        }
        if f.realized.contains(&n) {
            owners.insert(n, BTreeSet::from([n]));
            continue;
        }
        let mut o = BTreeSet::new();
        for c in g.consumers(n) {
            if f.realized.contains(&c) {
                o.insert(c);
            } else if let Some(co) = owners.get(&c) {
                o.extend(co.iter().copied());
            }
        }
        if o.len() > 1 && !f.is_free(g, n) && !(fuse && is_gemm_row_statistic(g, n)) {
            f.realized.insert(n);
            o = BTreeSet::from([n]);
        }
        owners.insert(n, o);
    }
    if fuse {
        fuse_epilogues(g, &order, outputs, &mut f);
        fuse_gemm_prologues(g, &order, outputs, &mut f);
    }
    f
}

/// The one kernel root a node's value flows into when every use on the way is a same-shape
/// elementwise op (so the value is read at the root's own index); `None` otherwise.
fn epilogue_root(g: &GraphData, f: &Fusion, r: NodeId) -> Option<NodeId> {
    let shape = &g.node(r).shape;
    // A value only read through a realized permute (attention's `p @ v` feeding the output
    // projection) is stored straight in the permuted layout: no copy kernel.
    if let [c] = g.consumers(r).as_slice()
        && matches!(g.node(*c).op, Op::Permute(_))
        && f.realized.contains(c)
    {
        return Some(*c);
    }
    // A reduction only read through a realized reshape that keeps its indices affine (an
    // output `sum(x, axis)` without the kept axis) is stored straight in that layout.
    if let [c] = g.consumers(r).as_slice()
        && matches!(g.node(r).op, Op::Reduce { .. })
        && matches!(g.node(*c).op, Op::Reshape)
        && f.realized.contains(c)
        && reshape_is_affine(shape, &g.node(*c).shape)
    {
        return Some(*c);
    }
    // A value only appended to a cache (a decode step's V projection) is computed by the
    // write kernel itself, straight into the cache.
    let mut v = r;
    while let [c] = g.consumers(v).as_slice() {
        match g.node(*c).op {
            Op::Reshape
                if !f.realized.contains(c)
                    && reshape_is_affine(&g.node(v).shape, &g.node(*c).shape) =>
            {
                v = *c;
            }
            // The row scale of a folded norm is applied by the write kernel too.
            Op::Binary(_) if !f.realized.contains(c) && is_row_scale(g, *c) => v = *c,
            Op::WriteSlice { .. } if g.inputs(*c)[1] == v => return Some(*c),
            _ => break,
        }
    }
    // Each use with the shape its value has there: an unrealized reshape that only drops or
    // adds size-1 axes (`sum(x, axis)` without the kept axis, then `sqrt`) renames indices.
    let mut root = None;
    let mut stack: Vec<(NodeId, Shape)> = g
        .consumers(r)
        .into_iter()
        .map(|c| (c, shape.clone()))
        .collect();
    let mut seen = BTreeSet::new();
    while let Some((c, at)) = stack.pop() {
        if !seen.insert(c) {
            continue;
        }
        let node = g.node(c);
        let uses = |c: NodeId| g.consumers(c).into_iter().map(|d| (d, node.shape.clone()));
        if matches!(node.op, Op::Reshape)
            && !f.realized.contains(&c)
            && only_unit_axes_differ(&at, &node.shape)
        {
            stack.extend(uses(c));
            continue;
        }
        if !node.op.is_elementwise() || node.shape != at {
            return None;
        }
        if f.realized.contains(&c) {
            if root.is_some_and(|x| x != c) {
                return None;
            }
            root = Some(c);
        } else {
            stack.extend(uses(c));
        }
    }
    root
}

/// True when `to` is `from` with size-1 axes dropped or added: the same index values, on
/// other axes.
fn only_unit_axes_differ(from: &Shape, to: &Shape) -> bool {
    reshape_groups(from, to).is_some_and(|gs| gs.iter().all(|(i, o)| i.len() == 1 && o.len() == 1))
}

/// Rule 6: un-realizes reductions and matmuls that can run as the head of their consumer's
/// kernel.
fn fuse_epilogues(g: &GraphData, order: &[NodeId], outputs: &[NodeId], f: &mut Fusion) {
    // Root -> the reductions already fused into its kernel: one, or two pairable matmuls.
    let mut fused: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    // Matmuls first: a root takes one reduction, and a GEMM gains the most from its epilogue.
    let matmuls = order
        .iter()
        .filter(|&&n| matches!(g.node(n).op, Op::MatMul));
    let reductions = order
        .iter()
        .filter(|&&n| matches!(g.node(n).op, Op::Reduce { .. }));
    for &n in matmuls.chain(reductions) {
        if outputs.contains(&n) {
            continue;
        }
        let Some(root) = epilogue_root(g, f, n).filter(|r| !f.row_exits.contains_key(r)) else {
            continue;
        };
        let taken = fused.entry(root).or_default();
        let ok = match taken.as_slice() {
            [] => true,
            [first] => pairable(g, *first, n),
            _ => false,
        };
        if ok {
            taken.push(n);
            f.realized.remove(&n);
        }
    }
}
