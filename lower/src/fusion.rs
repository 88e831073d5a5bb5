//! The partition of a graph into kernels: which nodes own a buffer (are "realized") and which
//! kernels are templates. Fusion steps make these decisions one after another (see the
//! pipeline in `lib.rs`); [`Fusion::check`] states what must hold after each of them.

use std::collections::{BTreeMap, BTreeSet};

use cranegrad_graph::{GraphData, NodeId, Op};

/// One matched attention.
#[derive(Clone, Debug)]
pub struct Attention {
    /// The `p @ v` matmul.
    pub pv: NodeId,
    /// Queries `[.., S, D]` (the score matmul's A).
    pub q: NodeId,
    /// Keys transposed `[.., D, T]` (the score matmul's B).
    pub kt: NodeId,
    /// Values `[.., T, Dv]`.
    pub v: NodeId,
    /// A bool `[.., S, T]` marking hidden keys, and the score they get.
    pub mask: Option<(NodeId, f64)>,
    /// Factor on the raw scores.
    pub scale: f64,
    /// Factor inside the exp2 (log2 e for a natural-exp softmax).
    pub exp_scale: f64,
    /// Nodes computed inside the kernel (not realized).
    pub interior: BTreeSet<NodeId>,
}

/// The set of nodes that own a buffer (inputs always do and are not listed).
#[derive(Clone, Debug, Default)]
pub struct Fusion {
    /// Nodes computed by a kernel of their own.
    pub realized: BTreeSet<NodeId>,
    /// Kernel roots that run as one flash-attention kernel, with their pattern.
    pub attention: BTreeMap<NodeId, Attention>,
    /// Exits of row groups (`fuse_rows`), with the axis their rows run along: kernels that
    /// already compute their row's reductions, so they take no epilogue reduction.
    pub row_exits: BTreeMap<NodeId, usize>,
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

impl Fusion {
    /// The partition as text, nodes numbered as `graph_text` numbers them: one line per
    /// realized node, attention kernel and row-group exit.
    pub fn text(&self, g: &GraphData, outputs: &[NodeId]) -> String {
        use std::fmt::Write;
        let order = g.topo_from(outputs);
        let num: BTreeMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let mut s = String::new();
        for &n in &order {
            if self.realized.contains(&n) {
                let _ = writeln!(s, "realized %{} {}", num[&n], g.node(n).op.name());
            }
        }
        for (root, att) in &self.attention {
            let inner: Vec<String> = att
                .interior
                .iter()
                .map(|n| format!("%{}", num[n]))
                .collect();
            let _ = writeln!(
                s,
                "attention %{} pv %{} interior {}",
                num[root],
                num[&att.pv],
                inner.join(" ")
            );
        }
        for (exit, axis) in &self.row_exits {
            let _ = writeln!(s, "row_exit %{} axis {axis}", num[exit]);
        }
        s
    }

    /// The invariants every fusion step keeps, checked after each step in debug builds and
    /// under `CRANEGRAD_VERIFY=1` (CI); `Err` names the node and the rule it breaks.
    pub fn check(&self, g: &GraphData, outputs: &[NodeId]) -> Result<(), String> {
        let order = g.topo_from(outputs);
        let reachable: BTreeSet<NodeId> = order.iter().copied().collect();
        let name = |n: NodeId| format!("node {} ({})", n.index(), g.node(n).op.name());
        for &o in outputs {
            if !self.realized.contains(&o) {
                return Err(format!("{}: an output is not realized", name(o)));
            }
        }
        for &n in &self.realized {
            if !reachable.contains(&n) {
                return Err(format!("{}: realized but no output reads it", name(n)));
            }
            if matches!(g.node(n).op, Op::Input { .. }) && !outputs.contains(&n) {
                return Err(format!(
                    "{}: an input realized though not an output",
                    name(n)
                ));
            }
        }
        for &n in &order {
            if matches!(g.node(n).op, Op::WriteSlice { .. }) && !self.realized.contains(&n) {
                return Err(format!("{}: a cache write is computed inline", name(n)));
            }
        }
        for (&root, att) in &self.attention {
            if !self.realized.contains(&root) {
                return Err(format!(
                    "{}: an attention kernel's root is not realized",
                    name(root)
                ));
            }
            let stored_through =
                g.consumers(att.pv).contains(&root) && matches!(g.node(root).op, Op::Permute(_));
            if root != att.pv && !stored_through {
                return Err(format!(
                    "{}: an attention kernel's root is neither its p @ v nor a permute of it",
                    name(root)
                ));
            }
            if let Some(&n) = att.interior.iter().find(|n| self.realized.contains(n)) {
                return Err(format!("{}: realized inside an attention kernel", name(n)));
            }
        }
        if let Some(&n) = self.row_exits.keys().find(|n| !self.realized.contains(n)) {
            return Err(format!("{}: a row group's exit is not realized", name(n)));
        }
        // An inline matmul runs in exactly one kernel: recomputing it would multiply its work.
        let mut owners: BTreeMap<NodeId, BTreeSet<NodeId>> = BTreeMap::new();
        for &n in order.iter().rev() {
            let o = if self.realized.contains(&n) {
                BTreeSet::from([n])
            } else {
                g.consumers(n)
                    .into_iter()
                    .filter(|c| reachable.contains(c))
                    .flat_map(|c| owners.get(&c).cloned().unwrap_or_default())
                    .collect()
            };
            if matches!(g.node(n).op, Op::MatMul) && o.len() != 1 {
                return Err(format!(
                    "{}: an inline matmul runs in {} kernels",
                    name(n),
                    o.len()
                ));
            }
            owners.insert(n, o);
        }
        Ok(())
    }
}
