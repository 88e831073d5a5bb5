//! Readable text and Graphviz DOT forms of a graph, and a stable structural hash.

use std::collections::HashMap;
use std::fmt::Write;

use sha2::{Digest, Sha256};

use crate::graph::{GraphData, NodeId};

/// One line per node, producers first: `%id = op attrs (inputs) : dtype[shape]`. Nodes are
/// renumbered in order so the text does not depend on how the graph was built.
pub fn graph_text(g: &GraphData, outputs: &[NodeId]) -> String {
    let order = g.topo_from(outputs);
    let num: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut s = String::new();
    for &n in &order {
        let node = g.node(n);
        let args: Vec<String> = g.inputs(n).iter().map(|i| format!("%{}", num[i])).collect();
        let attrs = node.op.attrs();
        let _ = write!(s, "%{} = {}", num[&n], node.op.name());
        if !attrs.is_empty() {
            let _ = write!(s, " {attrs}");
        }
        if !args.is_empty() {
            let _ = write!(s, " ({})", args.join(", "));
        }
        let _ = writeln!(s, " : {}{}", node.dtype, node.shape);
    }
    let outs: Vec<String> = outputs.iter().map(|o| format!("%{}", num[o])).collect();
    let _ = writeln!(s, "outputs: {}", outs.join(", "));
    s
}

/// Graphviz DOT of the graph reachable from `outputs`; `dot -Tsvg` renders it.
pub fn graph_dot(g: &GraphData, outputs: &[NodeId]) -> String {
    let order = g.topo_from(outputs);
    let num: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut s = String::from(
        "digraph cranegrad {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    for &n in &order {
        let node = g.node(n);
        let attrs = node.op.attrs().replace('"', "\\\"");
        let color = if node.op.is_movement() {
            "lightgray"
        } else if node.op.is_source() {
            "lightblue"
        } else if node.op.is_elementwise() {
            "white"
        } else {
            "gold"
        };
        let _ = writeln!(
            s,
            "  n{} [label=\"%{} {} {}\\n{}{}\", style=filled, fillcolor={}];",
            num[&n],
            num[&n],
            node.op.name(),
            attrs,
            node.dtype,
            node.shape,
            color
        );
        for (slot, i) in g.inputs(n).iter().enumerate() {
            let _ = writeln!(s, "  n{} -> n{} [label=\"{}\"];", num[i], num[&n], slot);
        }
    }
    s.push_str("}\n");
    s
}

/// A hash of the graph's structure (ops, shapes, dtypes, symbols with bounds, input names) that
/// is stable across processes; host data and symbol values are not part of it.
pub fn structural_hash(g: &GraphData, outputs: &[NodeId]) -> String {
    let mut text = graph_text(g, outputs);
    for n in g.topo_from(outputs) {
        // Whether an input carries data decides how it may be laid out (weights are packed).
        if let (crate::op::Op::Input { name }, Some(_)) = (&g.node(n).op, &g.node(n).data) {
            let _ = write!(text, "data:{name};");
        }
        // Bounds decide the kernels' bounds proofs and run-time checks; slice starts can hold a
        // symbol that no shape mentions, so the op's own dims count too.
        let node = g.node(n);
        for d in node.shape.dims().iter().chain(node.op.dims()) {
            if let Some(sym) = d.symbol() {
                let _ = write!(text, "{sym};");
            }
        }
    }
    hex(&Sha256::digest(text.as_bytes())[..16])
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
