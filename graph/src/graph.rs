//! The op graph: a petgraph `StableGraph` of nodes whose edges run producer -> consumer and
//! carry the operand slot, so passes can rewrite it in place and it can always be drawn.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;

use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::EdgeRef;

use crate::data::HostData;
use crate::dtype::DType;
use crate::op::Op;
use crate::shape::Shape;

/// Index of a node in a graph.
pub type NodeId = NodeIndex<u32>;

/// One recorded operation with its result type.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Node {
    /// The operation.
    pub op: Op,
    /// Result shape.
    pub shape: Shape,
    /// Result dtype.
    pub dtype: DType,
    /// Data attached to an input node (weights, prompts); not part of the graph's identity
    /// (nor of a cached schedule, which binds it again by name).
    #[serde(skip)]
    pub data: Option<HostData>,
    /// The part of the model that recorded it (`layer.3.attn`), kept through the passes so
    /// drawings can group a layer; not part of the graph's identity.
    #[serde(default)]
    pub scope: Option<Arc<str>>,
}

/// The graph itself, without the shared handle.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct GraphData {
    /// Nodes and operand edges (edge weight = operand slot).
    pub g: StableGraph<Node, u8>,
    /// The scope nodes recorded now are tagged with (see [`Graph::scope`]).
    #[serde(skip)]
    recording_scope: Option<Arc<str>>,
}

impl GraphData {
    /// Records a node with its operands in slot order.
    pub fn add(&mut self, node: Node, inputs: &[NodeId]) -> NodeId {
        let id = self.g.add_node(node);
        for (slot, &i) in inputs.iter().enumerate() {
            self.g.add_edge(i, id, slot as u8);
        }
        id
    }

    /// The scope nodes recorded now are tagged with.
    pub fn recording_scope(&self) -> Option<&Arc<str>> {
        self.recording_scope.as_ref()
    }

    /// The node at `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }

    /// Operands of `id` in slot order.
    pub fn inputs(&self, id: NodeId) -> Vec<NodeId> {
        let mut e: Vec<(u8, NodeId)> = self
            .g
            .edges_directed(id, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        e.sort_unstable_by_key(|p| p.0);
        e.into_iter().map(|p| p.1).collect()
    }

    /// Distinct consumers of `id`.
    pub fn consumers(&self, id: NodeId) -> Vec<NodeId> {
        let mut c: Vec<NodeId> = self.g.neighbors_directed(id, Direction::Outgoing).collect();
        c.sort_unstable();
        c.dedup();
        c
    }

    /// Every node reachable backwards from `outputs`, producers before consumers.
    pub fn topo_from(&self, outputs: &[NodeId]) -> Vec<NodeId> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        // Iterative post-order DFS: deep graphs (many layers) must not overflow the stack.
        let mut stack: Vec<(NodeId, bool)> = outputs.iter().rev().map(|&o| (o, false)).collect();
        while let Some((n, done)) = stack.pop() {
            if done {
                order.push(n);
                continue;
            }
            if !seen.insert(n) {
                continue;
            }
            stack.push((n, true));
            for i in self.inputs(n).into_iter().rev() {
                if !seen.contains(&i) {
                    stack.push((i, false));
                }
            }
        }
        order
    }

    /// Redirects every use of `old` to `new` (the rewrite primitive of CSE and folding).
    pub fn replace_uses(&mut self, old: NodeId, new: NodeId) {
        let uses: Vec<(petgraph::stable_graph::EdgeIndex<u32>, NodeId, u8)> = self
            .g
            .edges_directed(old, Direction::Outgoing)
            .map(|e| (e.id(), e.target(), *e.weight()))
            .collect();
        for (e, target, slot) in uses {
            self.g.remove_edge(e);
            self.g.add_edge(new, target, slot);
        }
    }
}

/// Restores the enclosing scope when dropped (see [`Graph::scope`]).
pub struct ScopeGuard {
    graph: Graph,
    before: Option<Arc<str>>,
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        self.graph.0.borrow_mut().recording_scope = self.before.take();
    }
}

/// A shared, growable graph that tensors record into. Cloning the handle shares the graph.
#[derive(Clone, Debug, Default)]
pub struct Graph(pub(crate) Rc<RefCell<GraphData>>);

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Runs `f` with read access to the graph.
    pub fn with<R>(&self, f: impl FnOnce(&GraphData) -> R) -> R {
        f(&self.0.borrow())
    }

    /// A copy of the graph for passes to rewrite (host data is shared, not copied).
    pub fn snapshot(&self) -> GraphData {
        self.0.borrow().clone()
    }

    /// True when both handles refer to the same graph.
    pub fn same(&self, other: &Graph) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }

    /// Tags every node recorded until the returned guard drops with `name`, nested in the
    /// current scope (`layer.3` then `attn` gives `layer.3.attn`). Models mark their parts
    /// this way so drawings can group them; the compiler never reads it.
    pub fn scope(&self, name: &str) -> ScopeGuard {
        let mut d = self.0.borrow_mut();
        let before = d.recording_scope.clone();
        d.recording_scope = Some(match &before {
            Some(outer) => format!("{outer}.{name}").into(),
            None => name.into(),
        });
        ScopeGuard {
            graph: self.clone(),
            before,
        }
    }

    /// Number of recorded nodes.
    pub fn len(&self) -> usize {
        self.0.borrow().g.node_count()
    }

    /// True when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn node(name: &str) -> Node {
        Node {
            op: Op::Input { name: name.into() },
            shape: Shape::of(&[2]),
            dtype: DType::F32,
            data: None,
            scope: None,
        }
    }

    fn neg() -> Node {
        Node {
            op: Op::Unary(crate::op::UnaryOp::Neg),
            ..node("")
        }
    }

    fn add() -> Node {
        Node {
            op: Op::Binary(crate::op::BinaryOp::Add),
            ..node("")
        }
    }

    #[test]
    fn scopes_nest_and_the_guard_restores_the_outer_one() {
        let g = Graph::new();
        let a = g.input("a", Shape::of(&[2]), DType::F32);
        let (b, c, d);
        {
            let _l = g.scope("layer.0");
            b = a.neg().unwrap();
            {
                let _m = g.scope("mlp");
                c = b.neg().unwrap();
            }
            d = c.neg().unwrap();
        }
        let e = d.neg().unwrap();
        let scope = |t: &crate::Tensor| g.with(|gd| gd.node(t.id()).scope.clone());
        assert_eq!(scope(&a), None);
        assert_eq!(scope(&b).as_deref(), Some("layer.0"));
        assert_eq!(scope(&c).as_deref(), Some("layer.0.mlp"));
        assert_eq!(scope(&d).as_deref(), Some("layer.0"));
        assert_eq!(scope(&e), None);
    }

    #[test]
    fn inputs_come_back_in_slot_order() {
        let mut g = GraphData::default();
        let a = g.add(node("a"), &[]);
        let b = g.add(node("b"), &[]);
        let ba = g.add(add(), &[b, a]);
        assert_eq!(g.inputs(ba), vec![b, a]);
        // The same operand in both slots is two edges, not one.
        let aa = g.add(add(), &[a, a]);
        assert_eq!(g.inputs(aa), vec![a, a]);
        assert_eq!(g.consumers(a), vec![ba, aa]);
    }

    #[test]
    fn topo_order_puts_producers_first_and_skips_unreachable_nodes() {
        let mut g = GraphData::default();
        let a = g.add(node("a"), &[]);
        let unused = g.add(node("unused"), &[]);
        let n = g.add(neg(), &[a]);
        let shared = g.add(add(), &[n, a]);
        let out = g.add(add(), &[shared, shared]);
        let order = g.topo_from(&[out]);
        assert_eq!(order, vec![a, n, shared, out]);
        assert!(!order.contains(&unused));
    }

    #[test]
    fn a_deep_chain_does_not_overflow_the_stack() {
        let mut g = GraphData::default();
        let mut last = g.add(node("x"), &[]);
        for _ in 0..200_000 {
            last = g.add(neg(), &[last]);
        }
        assert_eq!(g.topo_from(&[last]).len(), 200_001);
    }

    #[test]
    fn replace_uses_moves_every_use_and_keeps_its_slot() {
        let mut g = GraphData::default();
        let a = g.add(node("a"), &[]);
        let b = g.add(node("b"), &[]);
        let c = g.add(node("c"), &[]);
        let sum = g.add(add(), &[c, a]);
        let twice = g.add(add(), &[a, a]);
        g.replace_uses(a, b);
        assert_eq!(g.inputs(sum), vec![c, b]);
        assert_eq!(g.inputs(twice), vec![b, b]);
        assert!(g.consumers(a).is_empty());
    }

    #[test]
    fn cloned_handles_share_one_graph_and_snapshots_do_not() {
        let g = Graph::new();
        assert!(g.is_empty());
        let h = g.clone();
        let x = h.input("x", Shape::of(&[2]), DType::F32);
        assert_eq!(g.len(), 1);
        assert!(g.same(&h));
        assert!(!g.same(&Graph::new()));
        let mut copy = g.snapshot();
        copy.add(neg(), &[x.id()]);
        assert_eq!(g.len(), 1);
    }
}
