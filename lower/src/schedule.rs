//! Scheduling: turns the realized nodes chosen by fusion into kernels (loop nests with a fused
//! body), plus the buffers they read and write.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

use cranegrad_graph::{DType, Dim, GraphData, HostData, NodeId, Op, ReduceOp, Shape, Symbol};

use crate::LowerError;
use crate::affine::{Affine, Cond, IndexMap};
use crate::fusion::{Attention, Fusion};
use crate::kernel::{
    Access, Arg, AttentionSpec, Expr, ExprId, Kernel, KernelBody, Loop, LoopKind, RowPlan, Store,
};
use crate::patterns::{reshape_base, reshape_groups};

/// Index of a buffer in `Schedule::buffers`.
pub type BufId = usize;

/// Where a buffer's contents come from.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum BufKind {
    /// Supplied by the caller (by name) or carried by the graph (weights).
    Input {
        /// Input name.
        name: String,
        /// Data attached to the graph, if any (bound again by name when a cached schedule is
        /// loaded).
        #[serde(skip)]
        data: Option<HostData>,
    },
    /// Written by one kernel, read by later ones; the memory planner may share its memory.
    Temp,
    /// A requested output (index into the outputs list).
    Output,
}

/// One buffer of the program, laid out contiguously at every symbol's maximum.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BufDecl {
    /// Logical shape.
    pub shape: Shape,
    /// Element type.
    pub dtype: DType,
    /// Origin.
    pub kind: BufKind,
}

impl BufDecl {
    /// Elements allocated.
    pub fn len(&self) -> usize {
        self.shape.max_numel()
    }

    /// True for a zero-element buffer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The 16-bit format a weight's values are exact in (it may be packed at 16 bits).
    pub fn compact_weight(&self) -> Option<cranegrad_graph::CompactFormat> {
        match &self.kind {
            BufKind::Input { data: Some(d), .. } if self.is_weight() => d.compact(),
            _ => None,
        }
    }

    /// True for a weight: an input carrying data, of static shape (the runtime may pack it).
    pub fn is_weight(&self) -> bool {
        matches!(self.kind, BufKind::Input { data: Some(_), .. }) && self.shape.is_static()
    }
}

/// A kernel with the program buffers bound to its argument slots.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Launch {
    /// The kernel.
    pub kernel: Kernel,
    /// `args[slot]` = program buffer.
    pub args: Vec<BufId>,
    /// Graph nodes computed inside this kernel (its root last; a sibling group lists each
    /// part's nodes in turn).
    pub nodes: Vec<NodeId>,
    /// The output axis a row group's reductions run along when it is not the last (see
    /// `fuse_rows`): the kernel pass `reduced_axis_innermost` moves it innermost.
    pub row_axis: Option<usize>,
}

impl Schedule {
    /// No launch binds a buffer it writes to a second argument slot. Code generation relies
    /// on it: it moves loads past stores of other slots. (A kernel that reads back what it
    /// stored, softmax's `exp`, reads it through the store's own slot.)
    pub fn check_distinct_args(&self) -> Result<(), LowerError> {
        for l in &self.launches {
            let written = (l.kernel.args.iter().zip(&l.args))
                .filter(|(a, _)| a.access == Access::Write)
                .map(|(_, &b)| b);
            for w in written {
                if l.args.iter().filter(|&&b| b == w).count() > 1 {
                    return Err(LowerError::Internal(format!(
                        "kernel {} binds buffer {w}, which it writes, to two argument slots",
                        l.kernel.name
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The lowered program: kernels in execution order over a set of buffers.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Schedule {
    /// Kernels in dependency order.
    pub launches: Vec<Launch>,
    /// Every buffer.
    pub buffers: Vec<BufDecl>,
    /// Buffer of each requested output, in request order.
    pub outputs: Vec<BufId>,
    /// `(input buffer, rows)`: ids read by a gather, checked to be `< rows` before launch.
    pub index_checks: Vec<(BufId, usize)>,
}

impl Schedule {
    /// Readable listing: every kernel with its fused ops, operands and loop nest.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for (i, b) in self.buffers.iter().enumerate() {
            let kind = match &b.kind {
                BufKind::Input { name, .. } => format!("input \"{name}\""),
                BufKind::Temp => "temp".to_string(),
                BufKind::Output => "output".to_string(),
            };
            let _ = writeln!(s, "buf{i}: {}{} {kind}", b.dtype, b.shape);
        }
        for (i, l) in self.launches.iter().enumerate() {
            let ins: Vec<String> = l
                .kernel
                .args
                .iter()
                .zip(&l.args)
                .filter(|(a, _)| a.access == Access::Read)
                .map(|(_, b)| format!("buf{b}"))
                .collect();
            let outs: Vec<String> = l
                .kernel
                .args
                .iter()
                .zip(&l.args)
                .filter(|(a, _)| a.access == Access::Write)
                .map(|(_, b)| format!("buf{b}"))
                .collect();
            let _ = writeln!(
                s,
                "kernel {i}: {} [{}] -> {}  ({})",
                l.kernel.ops.join("+"),
                ins.join(", "),
                outs.join(", "),
                crate::label::pattern(&l.kernel)
            );
            let _ = write!(s, "{}", l.kernel);
        }
        s
    }
}

impl Schedule {
    /// Graphviz DOT of the fused graph: one cluster per kernel around the nodes it computes,
    /// buffers (inputs) outside any cluster.
    pub fn dot(&self, g: &GraphData) -> String {
        let mut s = String::from(
            "digraph cranegrad {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
        );
        let mut drawn: BTreeSet<NodeId> = BTreeSet::new();
        // Kernels of one model part (a layer) sit in one outer cluster, in order of first use.
        let mut groups: Vec<(Option<String>, Vec<usize>)> = Vec::new();
        for i in 0..self.launches.len() {
            let group = self.launch_scope(g, i).map(|s| group_of(&s).to_string());
            match groups.iter_mut().find(|(k, _)| *k == group) {
                Some((_, members)) => members.push(i),
                None => groups.push((group, vec![i])),
            }
        }
        for (gi, (group, members)) in groups.iter().enumerate() {
            let indent = if group.is_some() { "    " } else { "  " };
            if let Some(name) = group {
                let _ = writeln!(
                    s,
                    "  subgraph cluster_g{gi} {{\n    label=\"{name}\";\n    style=rounded; color=\"#888888\";"
                );
            }
            for &i in members {
                let l = &self.launches[i];
                let _ = writeln!(
                    s,
                    "{indent}subgraph cluster_k{i} {{\n{indent}  label=\"kernel {i}: {}\";\n{indent}  style=filled; fillcolor=\"#fff6d5\";",
                    l.kernel.ops.join("+")
                );
                for &n in &l.nodes {
                    if drawn.insert(n) {
                        dot_node(&mut s, g, n, &format!("{indent}  "), "");
                    }
                }
                let _ = writeln!(s, "{indent}}}");
            }
            if group.is_some() {
                s.push_str("  }\n");
            }
        }
        let mut edges = BTreeSet::new();
        for l in &self.launches {
            for &n in &l.nodes {
                for i in g.inputs(n) {
                    if drawn.insert(i) {
                        dot_node(&mut s, g, i, "  ", ", style=filled, fillcolor=lightblue");
                    }
                    edges.insert((i.index(), n.index()));
                }
            }
        }
        for (a, b) in edges {
            let _ = writeln!(s, "  n{a} -> n{b};");
        }
        s.push_str("}\n");
        s
    }
}

impl Schedule {
    /// The model part launch `i` computes: the longest dotted prefix its nodes' scopes share
    /// (`layer.3.attn`), ignoring nodes recorded outside any scope; a kernel fused across
    /// layers (one layer's residual add with the next one's norm) belongs to its root's.
    pub fn launch_scope(&self, g: &GraphData, i: usize) -> Option<String> {
        let nodes = &self.launches[i].nodes;
        let root = nodes.iter().rev().find_map(|&n| g.node(n).scope.as_deref());
        let mut common: Option<Vec<&str>> = None;
        for &n in nodes {
            let Some(scope) = g.node(n).scope.as_deref() else {
                continue;
            };
            let parts: Vec<&str> = scope.split('.').collect();
            common = Some(match common {
                None => parts,
                Some(c) => c
                    .iter()
                    .zip(&parts)
                    .take_while(|(a, b)| a == b)
                    .map(|(a, _)| *a)
                    .collect(),
            });
        }
        match common {
            Some(c) if c.len() >= 2 || c.first().is_some_and(|f| *f != "layer") => {
                Some(c.join("."))
            }
            _ => root.map(str::to_string),
        }
    }
}

/// The group a scope is drawn in: `layer.N` for anything inside a layer, else its first part.
pub fn group_of(scope: &str) -> &str {
    let mut parts = scope.splitn(3, '.');
    match (parts.next(), parts.next()) {
        (Some("layer"), Some(n)) => &scope[..6 + n.len()],
        (Some(first), _) => first,
        _ => scope,
    }
}

/// One DOT node line: op, attributes, dtype and shape.
fn dot_node(s: &mut String, g: &GraphData, n: NodeId, indent: &str, style: &str) {
    let node = g.node(n);
    let _ = writeln!(
        s,
        "{indent}n{} [label=\"{} {}\\n{}{}\"{style}];",
        n.index(),
        node.op.name(),
        node.op.attrs().replace('"', "\\\""),
        node.dtype,
        node.shape
    );
}

/// Builds the kernels of every realized node.
pub fn build_schedule(
    g: &GraphData,
    outputs: &[NodeId],
    fusion: &Fusion,
) -> Result<Schedule, LowerError> {
    let order = g.topo_from(outputs);
    let mut sched = Schedule::default();
    let mut buf_of: HashMap<NodeId, BufId> = HashMap::new();
    let out_set: BTreeSet<NodeId> = outputs.iter().copied().collect();
    for &n in &order {
        let node = g.node(n);
        if matches!(node.op, Op::WriteSlice { .. }) {
            // In place: the write's value lives in its target input's buffer.
            let target = g.inputs(n)[0];
            if g.consumers(target).len() != 1 {
                return Err(LowerError::Internal(format!(
                    "write_slice: its target {} is also read elsewhere, which an in-place write would race",
                    g.node(target).op.attrs()
                )));
            }
            buf_of.insert(n, buf_of[&target]);
            continue;
        }
        let kind = if let Op::Input { name } = &node.op {
            BufKind::Input {
                name: name.clone(),
                data: node.data.clone(),
            }
        } else if out_set.contains(&n) {
            BufKind::Output
        } else if fusion.realized.contains(&n) {
            BufKind::Temp
        } else {
            continue;
        };
        buf_of.insert(n, sched.buffers.len());
        sched.buffers.push(BufDecl {
            shape: node.shape.clone(),
            dtype: node.dtype,
            kind,
        });
    }
    let mut out_buf_of: HashMap<NodeId, BufId> = HashMap::new();
    for &n in &order {
        if !fusion.realized.contains(&n) {
            continue;
        }
        // An input requested as an output is copied into a buffer of its own.
        let out_buf = if matches!(g.node(n).op, Op::Input { .. }) {
            sched.buffers.push(BufDecl {
                shape: g.node(n).shape.clone(),
                dtype: g.node(n).dtype,
                kind: BufKind::Output,
            });
            out_buf_of.insert(n, sched.buffers.len() - 1);
            sched.buffers.len() - 1
        } else {
            buf_of[&n]
        };
        let idx = sched.launches.len();
        let builder = KernelBuilder::new(g, fusion, &buf_of, n);
        let launch = if let Some(att) = fusion.attention.get(&n) {
            builder.build_attention(idx, out_buf, att)?
        } else if matches!(g.node(n).op, Op::WriteSlice { .. }) {
            builder.build_write(idx, out_buf)?
        } else {
            builder.build(idx, out_buf)?
        };
        sched.launches.push(launch);
    }
    for &n in &order {
        if matches!(g.node(n).op, Op::Gather) {
            let ins = g.inputs(n);
            let mut src = ins[1];
            while g.node(src).op.is_movement() && !fusion.realized.contains(&src) {
                src = g.inputs(src)[0];
            }
            if let (Op::Input { .. }, Some(&b)) = (&g.node(src).op, buf_of.get(&src)) {
                sched
                    .index_checks
                    .push((b, g.node(ins[0]).shape.dims()[0].max_value()));
            }
        }
    }
    sched.outputs = outputs
        .iter()
        .map(|o| out_buf_of.get(o).copied().unwrap_or(buf_of[o]))
        .collect();
    Ok(sched)
}

struct KernelBuilder<'a> {
    g: &'a GraphData,
    fusion: &'a Fusion,
    buf_of: &'a HashMap<NodeId, BufId>,
    root: NodeId,
    args: Vec<(BufId, Arg)>,
    exprs: Vec<Expr>,
    interned: HashMap<Expr, ExprId>,
    memo: HashMap<(NodeId, IndexMap), ExprId>,
    symbols: BTreeMap<String, Symbol>,
    ops: Vec<String>,
    counted: BTreeSet<NodeId>,
    movement: BTreeSet<NodeId>,
    /// Output loops of the kernel (the reduce variable's index is this).
    n_out_loops: usize,
    /// Extents of the kernel's reduce loops, one per inlined reduction, in order.
    reduce_loops: Vec<Dim>,
    /// An output loop for the kernel pass `reduced_axis_innermost` to move innermost.
    innermost: Option<usize>,
}

impl<'a> KernelBuilder<'a> {
    fn new(
        g: &'a GraphData,
        fusion: &'a Fusion,
        buf_of: &'a HashMap<NodeId, BufId>,
        root: NodeId,
    ) -> Self {
        KernelBuilder {
            g,
            fusion,
            buf_of,
            root,
            args: Vec::new(),
            exprs: Vec::new(),
            interned: HashMap::new(),
            memo: HashMap::new(),
            symbols: BTreeMap::new(),
            ops: Vec::new(),
            counted: BTreeSet::new(),
            movement: BTreeSet::new(),
            n_out_loops: g.node(root).shape.rank(),
            reduce_loops: Vec::new(),
            innermost: None,
        }
    }

    fn push(&mut self, e: Expr) -> ExprId {
        if let Some(&id) = self.interned.get(&e) {
            return id;
        }
        let id = self.exprs.len();
        self.exprs.push(e.clone());
        self.interned.insert(e, id);
        id
    }

    fn note_dim(&mut self, d: &Dim) {
        if let Some(s) = d.symbol() {
            self.symbols.insert(s.name.to_string(), s.clone());
        }
    }

    fn dim(&mut self, d: &Dim) -> Affine {
        self.note_dim(d);
        Affine::dim(d)
    }

    fn arg(&mut self, buf: BufId, access: Access, decl: (&Shape, DType)) -> usize {
        if let Some(i) = self
            .args
            .iter()
            .position(|(b, a)| *b == buf && a.access == access)
        {
            return i;
        }
        self.args.push((
            buf,
            Arg {
                dtype: decl.1,
                len: decl.0.max_numel(),
                access,
            },
        ));
        self.args.len() - 1
    }

    fn constant(&mut self, v: f64, dtype: DType) -> ExprId {
        self.push(Expr::Const {
            bits: v.to_bits(),
            dtype,
        })
    }

    fn load(&mut self, buf_node: NodeId, layout: &Shape, map: &IndexMap) -> ExprId {
        let node = self.g.node(buf_node);
        let buf = self.buf_of[&buf_node];
        let slot = self.arg(buf, Access::Read, (&node.shape, node.dtype));
        let index = map.offset(&layout.layout_strides());
        self.push(Expr::Load {
            arg: slot,
            index,
            conds: map.conds.clone(),
            dtype: node.dtype,
        })
    }

    fn note_op(&mut self, n: NodeId) {
        let op = &self.g.node(n).op;
        if op.is_movement() || matches!(op, Op::Const { .. } | Op::Arange { .. }) {
            self.movement.insert(n);
        }
        if !op.is_movement() && !op.is_source() && self.counted.insert(n) {
            self.ops.push(op.name().to_string());
        }
    }

    /// The node's value at `map`, computed inline unless it lives in a buffer.
    fn eval(&mut self, n: NodeId, map: &IndexMap) -> Result<ExprId, LowerError> {
        if n != self.root && self.fusion.is_buffer(self.g, n) {
            let shape = self.g.node(n).shape.clone();
            return Ok(self.load(n, &shape, map));
        }
        if let Some(&e) = self.memo.get(&(n, map.clone())) {
            return Ok(e);
        }
        let e = self.compute(n, map)?;
        self.memo.insert((n, map.clone()), e);
        Ok(e)
    }

    fn compute(&mut self, n: NodeId, map: &IndexMap) -> Result<ExprId, LowerError> {
        let node = self.g.node(n).clone();
        let ins = self.g.inputs(n);
        for d in node.shape.dims() {
            self.note_dim(d);
        }
        let e = match &node.op {
            Op::Input { .. } => self.load(n, &node.shape, map),
            Op::Const { value } => self.constant(*value, node.dtype),
            Op::Arange { axis } => {
                let i = self.push(Expr::Index(map.dims[*axis].clone()));
                if node.dtype == DType::I32 {
                    i
                } else {
                    self.push(Expr::Unary {
                        op: cranegrad_graph::UnaryOp::Cast,
                        x: i,
                        dtype: node.dtype,
                    })
                }
            }
            Op::Unary(op) => {
                let x = self.eval(ins[0], map)?;
                self.push(Expr::Unary {
                    op: *op,
                    x,
                    dtype: node.dtype,
                })
            }
            Op::Binary(op) => {
                let a = self.eval(ins[0], map)?;
                let b = self.eval(ins[1], map)?;
                self.push(Expr::Binary {
                    op: *op,
                    a,
                    b,
                    dtype: node.dtype,
                })
            }
            Op::Where => {
                let c = self.eval(ins[0], map)?;
                let a = self.eval(ins[1], map)?;
                let b = self.eval(ins[2], map)?;
                self.push(Expr::Where {
                    c,
                    a,
                    b,
                    dtype: node.dtype,
                })
            }
            Op::Reshape => {
                let base = reshape_base(self.g, self.fusion, n);
                let base_node = self.g.node(base);
                if base != self.root && self.fusion.is_buffer(self.g, base) {
                    // A contiguous buffer read through any reshape is addressed with the
                    // reshaped shape's own strides.
                    self.load(base, &node.shape, map)
                } else if let Op::Const { value } = base_node.op {
                    self.constant(value, node.dtype)
                } else {
                    let child = &self.g.node(ins[0]).shape;
                    let cmap = reshape_map(child, &node.shape, map).ok_or_else(|| {
                        LowerError::Internal(format!(
                            "reshape {} -> {} is not affine over a computed value",
                            child, node.shape
                        ))
                    })?;
                    self.eval(ins[0], &cmap)?
                }
            }
            Op::Permute(perm) => {
                let mut dims = vec![Affine::default(); perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    dims[p] = map.dims[i].clone();
                }
                self.eval(
                    ins[0],
                    &IndexMap {
                        dims,
                        conds: map.conds.clone(),
                    },
                )?
            }
            Op::Expand => {
                let child = self.g.node(ins[0]).shape.clone();
                let dims = child
                    .dims()
                    .iter()
                    .zip(&map.dims)
                    .zip(node.shape.dims())
                    .map(|((c, m), o)| {
                        if c.is_one() && !o.is_one() {
                            Affine::default()
                        } else {
                            m.clone()
                        }
                    })
                    .collect();
                self.eval(
                    ins[0],
                    &IndexMap {
                        dims,
                        conds: map.conds.clone(),
                    },
                )?
            }
            Op::Slice { starts } => {
                let dims = starts
                    .iter()
                    .zip(&map.dims)
                    .map(|(s, m)| m.add(&self.dim(s)))
                    .collect();
                self.eval(
                    ins[0],
                    &IndexMap {
                        dims,
                        conds: map.conds.clone(),
                    },
                )?
            }
            Op::Pad(pads) => {
                let child = self.g.node(ins[0]).shape.clone();
                let mut dims = Vec::new();
                let mut new_conds = Vec::new();
                for ((m, (before, after)), len) in map.dims.iter().zip(pads).zip(child.dims()) {
                    let d = m.add(&self.dim(before).scale(-1));
                    if *before != Dim::Const(0) || *after != Dim::Const(0) {
                        self.note_dim(len);
                        new_conds.push(Cond {
                            expr: d.clone(),
                            len: len.clone(),
                        });
                    }
                    dims.push(d);
                }
                let mut conds = map.conds.clone();
                conds.extend(new_conds.iter().cloned());
                let v = self.eval(ins[0], &IndexMap { dims, conds })?;
                let c = self.push(Expr::InBounds(new_conds));
                let z = self.constant(0.0, node.dtype);
                self.push(Expr::Where {
                    c,
                    a: v,
                    b: z,
                    dtype: node.dtype,
                })
            }
            Op::Gather => {
                let table = self.g.node(ins[0]).clone();
                let k = self.g.node(ins[1]).shape.rank();
                let imap = IndexMap {
                    dims: map.dims[..k].to_vec(),
                    conds: map.conds.clone(),
                };
                let row = self.eval(ins[1], &imap)?;
                let strides = table.shape.layout_strides();
                let rest = IndexMap {
                    dims: map.dims[k..].to_vec(),
                    conds: vec![],
                };
                let buf = self.buf_of[&ins[0]];
                let slot = self.arg(buf, Access::Read, (&table.shape, table.dtype));
                self.push(Expr::Gather {
                    arg: slot,
                    row,
                    rows: table.shape.dims()[0].max_value(),
                    row_stride: strides[0],
                    index: rest.offset(&strides[1..]),
                    dtype: table.dtype,
                    packed: None,
                })
            }
            Op::Reduce { .. } | Op::MatMul => self.inline_reduction(n, map)?,
            Op::WriteSlice { .. } => {
                return Err(LowerError::Internal(
                    "write_slice reached inline; it is always realized".into(),
                ));
            }
        };
        // Noted after the operands, so the op list reads in dataflow order.
        self.note_op(n);
        Ok(e)
    }

    /// A reduction computed inside this kernel (an epilogue kernel): its reduce loop becomes
    /// the kernel's, and its value is the accumulator.
    fn inline_reduction(&mut self, n: NodeId, map: &IndexMap) -> Result<ExprId, LowerError> {
        let node = self.g.node(n).clone();
        let ins = self.g.inputs(n);
        let red = self.n_out_loops + self.reduce_loops.len();
        let rank = node.shape.rank();
        match node.op {
            Op::Reduce { op, axis } => {
                let input = self.g.node(ins[0]).shape.clone();
                self.reduce_loops.push(input.dims()[axis].clone());
                self.note_dim(&input.dims()[axis]);
                let mut m = map.clone();
                m.dims[axis] = Affine::var(red);
                let x = self.eval(ins[0], &m)?;
                Ok(self.push(Expr::Reduce {
                    op,
                    x,
                    dtype: node.dtype,
                    var: red,
                }))
            }
            Op::MatMul => {
                let a_shape = self.g.node(ins[0]).shape.clone();
                let kd = a_shape.dims()[rank - 1].clone();
                self.note_dim(&kd);
                self.reduce_loops.push(kd);
                let mut ma = map.clone();
                ma.dims[rank - 1] = Affine::var(red);
                let mut mb = map.clone();
                mb.dims[rank - 2] = Affine::var(red);
                let a = self.eval(ins[0], &ma)?;
                let b = self.eval(ins[1], &mb)?;
                let x = self.push(Expr::Binary {
                    op: cranegrad_graph::BinaryOp::Mul,
                    a,
                    b,
                    dtype: DType::F32,
                });
                Ok(self.push(Expr::Reduce {
                    op: ReduceOp::Sum,
                    x,
                    dtype: DType::F32,
                    var: red,
                }))
            }
            _ => Err(LowerError::Internal("not a reduction".into())),
        }
    }

    /// A write_slice kernel: iterate over the value, store into the target at the window.
    fn build_write(mut self, idx: usize, out_buf: BufId) -> Result<Launch, LowerError> {
        let root = self.g.node(self.root).clone();
        let Op::WriteSlice { starts } = &root.op else {
            return Err(LowerError::Internal("not a write_slice".into()));
        };
        let value = self.g.inputs(self.root)[1];
        let vshape = self.g.node(value).shape.clone();
        self.n_out_loops = vshape.rank();
        let mut loops = parallel_loops(vshape.dims());
        for d in vshape.dims() {
            self.note_dim(d);
        }
        let ident = IndexMap {
            dims: (0..vshape.rank()).map(Affine::var).collect(),
            conds: vec![],
        };
        let v = self.eval(value, &ident)?;
        // An inlined producer (a projection written straight into the cache) brings its
        // reduce loop.
        for extent in self.reduce_loops.clone() {
            loops.push(Loop {
                extent,
                kind: LoopKind::Reduce,
            });
        }
        let at = IndexMap {
            dims: ident
                .dims
                .iter()
                .zip(starts)
                .map(|(a, s)| a.add(&self.dim(s)))
                .collect(),
            conds: vec![],
        };
        self.ops.push("write_slice".into());
        let out = self.arg(out_buf, Access::Write, (&root.shape, root.dtype));
        let store = Store {
            arg: out,
            index: at.offset(&root.shape.layout_strides()),
            value: v,
        };
        Ok(self.finish(format!("k{idx}_write"), loops, store, None))
    }

    /// A flash-attention kernel for root `self.root` (the `p @ v` matmul or the permute it
    /// is stored through); see [`AttentionSpec`].
    fn build_attention(
        mut self,
        idx: usize,
        out_buf: BufId,
        att: &Attention,
    ) -> Result<Launch, LowerError> {
        let root = self.g.node(self.root).clone();
        let pv = self.g.node(att.pv).shape.clone();
        let rank = pv.rank();
        for d in pv.dims() {
            self.note_dim(d);
        }
        let var = |i: usize| Affine::var(i);
        // Loops: pv's output [.., S, Dv], then keys j (T) and the dot product c (D).
        let t = self.g.node(att.v).shape.dims()[rank - 2].clone();
        let dq = self.g.node(att.q).shape.dims()[rank - 1].clone();
        self.note_dim(&t);
        let (j, c) = (rank, rank + 1);
        let mut loops = parallel_loops(pv.dims());
        for extent in [t, dq] {
            loops.push(Loop {
                extent,
                kind: LoopKind::Reduce,
            });
        }
        self.n_out_loops = rank + 2;
        let map = |dims: Vec<Affine>| IndexMap {
            dims,
            conds: vec![],
        };
        let batch: Vec<Affine> = (0..rank - 2).map(var).collect();
        let with = |tail: [Affine; 2]| {
            let mut d = batch.clone();
            d.extend(tail);
            map(d)
        };
        let q = self.eval(att.q, &with([var(rank - 2), var(c)]))?;
        let k = self.eval(att.kt, &with([var(c), var(j)]))?;
        let v = self.eval(att.v, &with([var(j), var(rank - 1)]))?;
        let mask = match att.mask {
            Some((m, _)) => Some(self.eval(m, &with([var(rank - 2), var(j)]))?),
            None => None,
        };
        for n in &att.interior {
            self.note_op(*n);
        }
        self.note_op(att.pv);
        // Where the output lands: pv's own layout, or the permuted layout of its root.
        let index = if self.root == att.pv {
            map((0..rank).map(var).collect()).offset(&pv.layout_strides())
        } else {
            let Op::Permute(perm) = &root.op else {
                return Err(LowerError::Internal(
                    "attention stored through something other than a permute".into(),
                ));
            };
            let strides = root.shape.layout_strides();
            let mut a = Affine::default();
            for (k, &p) in perm.iter().enumerate() {
                a = a.add(&var(p).scale(strides[k]));
            }
            a
        };
        let out = self.arg(out_buf, Access::Write, (&root.shape, root.dtype));
        let spec = AttentionSpec {
            q,
            k,
            v,
            mask,
            fill_bits: att.mask.map_or(0.0, |m| m.1).to_bits(),
            scale_bits: att.scale.to_bits(),
            exp_scale_bits: att.exp_scale.to_bits(),
            key_loop: j,
            dot_loop: c,
        };
        let store = Store {
            arg: out,
            index,
            value: v,
        };
        Ok(self.finish(format!("k{idx}_attention"), loops, store, Some(spec)))
    }

    /// The launch of the kernel built so far, with one store; the kernel passes of the
    /// pipeline (`lib.rs`) run on it afterwards.
    fn finish(
        self,
        name: String,
        loops: Vec<Loop>,
        store: Store,
        attention: Option<AttentionSpec>,
    ) -> Launch {
        let kernel = Kernel {
            name,
            ops: self.ops,
            args: self.args.iter().map(|(_, a)| a.clone()).collect(),
            symbols: self.symbols.into_values().collect(),
            loops,
            exprs: self.exprs,
            stores: vec![store],
            body: attention.map_or(KernelBody::Loops(RowPlan::default()), KernelBody::Attention),
        };
        // The launch's nodes: the ops and views computed inside it, root last.
        let root = self.root;
        let mut nodes: Vec<NodeId> = self
            .counted
            .iter()
            .chain(&self.movement)
            .copied()
            .filter(|&n| n != root)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes.push(root);
        Launch {
            kernel,
            args: self.args.iter().map(|(b, _)| *b).collect(),
            nodes,
            row_axis: self.innermost,
        }
    }

    fn build(mut self, idx: usize, out_buf: BufId) -> Result<Launch, LowerError> {
        let root = self.g.node(self.root).clone();
        let mut loops = parallel_loops(root.shape.dims());
        for d in root.shape.dims() {
            self.note_dim(d);
        }
        let rank = root.shape.rank();
        let ident = IndexMap {
            dims: (0..rank).map(Affine::var).collect(),
            conds: vec![],
        };
        let value = self.compute(self.root, &ident)?;
        for extent in self.reduce_loops.clone() {
            loops.push(Loop {
                extent,
                kind: LoopKind::Reduce,
            });
        }
        let has_matmul = self.ops.iter().any(|o| o == "matmul");
        // A row group over a strided axis (the root is its row-shaped exit): its rows become
        // the innermost loop.
        if let Some(&axis) = self.fusion.row_exits.get(&self.root)
            && !root.shape.dims()[axis].is_one()
        {
            self.innermost = Some(axis);
        }
        let kind = match &root.op {
            Op::Reduce {
                op: ReduceOp::Sum, ..
            } => "sum",
            Op::Reduce {
                op: ReduceOp::Max, ..
            } => "max",
            Op::MatMul => "matmul",
            op if op.is_elementwise() && has_matmul => "matmul_epilogue",
            op if op.is_elementwise() && !self.reduce_loops.is_empty() => "reduce_epilogue",
            op if op.is_elementwise() => "elementwise",
            _ if has_matmul => "matmul_permuted",
            _ => "copy",
        };
        if self.ops.is_empty() {
            self.ops.push("copy".to_string());
        }
        let out = self.arg(out_buf, Access::Write, (&root.shape, root.dtype));
        let store = Store {
            arg: out,
            index: ident.offset(&root.shape.layout_strides()),
            value,
        };
        Ok(self.finish(format!("k{idx}_{kind}"), loops, store, None))
    }
}

/// One parallel output loop per dimension, outermost first.
fn parallel_loops(dims: &[Dim]) -> Vec<Loop> {
    dims.iter()
        .map(|d| Loop {
            extent: d.clone(),
            kind: LoopKind::Parallel,
        })
        .collect()
}

/// Input indices of a reshape that only splits or keeps axes, from its output indices.
fn reshape_map(input: &Shape, output: &Shape, map: &IndexMap) -> Option<IndexMap> {
    let groups = reshape_groups(input, output)?;
    let mut dims = vec![Affine::default(); input.rank()];
    for (gi, go) in groups {
        if gi.len() != 1 {
            return None;
        }
        let mut acc = Affine::default();
        let mut stride = 1i64;
        for &o in go.iter().rev() {
            acc = acc.add(&map.dims[o].scale(stride));
            stride *= output.dims()[o].max_value() as i64;
        }
        dims[gi[0]] = acc;
    }
    Some(IndexMap {
        dims,
        conds: map.conds.clone(),
    })
}
