//! `--dump-graph=html:FILE`: one self-contained page (nothing fetched) with the primitive graph
//! and the fused schedule side by side, each grouped by the model part that recorded it
//! (`embed`, `layer.N`, `head`; layers collapsed until clicked), every kernel clickable for its
//! fused ops, kernel IR, Cranelift IR and machine code (and its time when measured), a search
//! over node and kernel names, and the passes with their counts and times.

use std::collections::HashMap;
use std::fmt::Write;

use cranegrad_codegen::KernelCache;
use cranegrad_graph::{Bindings, GraphData, NodeId, Tensor};
use cranegrad_runtime::{Feeds, Session};

use super::checks::Output;
use cranegrad_lower::kernel::Access;
use cranegrad_lower::schedule::group_of;
use cranegrad_runtime::plan::Plan;

/// What the page shows.
pub struct View<'a> {
    /// Page title (the example or model).
    pub title: String,
    /// The graph as the model recorded it, and its outputs.
    pub primitive: &'a GraphData,
    /// Outputs of `primitive`.
    pub outputs: &'a [NodeId],
    /// The compiled plan of the same outputs.
    pub plan: &'a Plan,
    /// One profiled forward: its wall time and each launch's time, microseconds.
    pub times_us: Option<(f64, Vec<f64>)>,
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            _ => o.push(c),
        }
    }
    o
}

/// Items under their groups, groups in order of first appearance.
fn grouped<T>(items: impl Iterator<Item = (Option<String>, T)>) -> Vec<(String, Vec<T>)> {
    let mut groups: Vec<(String, Vec<T>)> = Vec::new();
    for (scope, item) in items {
        let name = scope.map_or_else(|| "(no scope)".to_string(), |s| group_of(&s).to_string());
        match groups.iter_mut().find(|(g, _)| *g == name) {
            Some((_, v)) => v.push(item),
            None => groups.push((name, vec![item])),
        }
    }
    groups
}

/// Opens a collapsible group; layers start closed, the rest open.
fn open_group(s: &mut String, name: &str, count: usize, what: &str) {
    let open = if name.starts_with("layer.") {
        ""
    } else {
        " open"
    };
    let _ = writeln!(
        s,
        "<details class=\"group\"{open}><summary>{} <span class=\"count\">{count} {what}</span></summary>",
        esc(name)
    );
}

/// The primitive graph column.
fn primitive_column(v: &View) -> String {
    let g = v.primitive;
    let order = g.topo_from(v.outputs);
    let num: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let items = order
        .iter()
        .map(|&n| (g.node(n).scope.as_deref().map(str::to_string), n));
    let mut s = String::new();
    for (name, nodes) in grouped(items) {
        open_group(&mut s, &name, nodes.len(), "nodes");
        for n in nodes {
            let node = g.node(n);
            let args: Vec<String> = g
                .inputs(n)
                .iter()
                .map(|i| format!("<a href=\"#p{0}\">%{0}</a>", num[i]))
                .collect();
            let _ = writeln!(
                s,
                "<div class=\"node\" id=\"p{id}\" data-name=\"{op} %{id} {scope}\"><b>%{id}</b> {op} {attrs} ({args}) <span class=\"shape\">{dt}{shape}</span></div>",
                id = num[&n],
                op = node.op.name(),
                attrs = esc(&node.op.attrs()),
                args = args.join(", "),
                scope = esc(node.scope.as_deref().unwrap_or("")),
                dt = node.dtype,
                shape = esc(&node.shape.to_string()),
            );
        }
        s.push_str("</details>\n");
    }
    s
}

/// The fused schedule column and every kernel's detail section.
fn fused_column(v: &View, cache: &mut KernelCache) -> anyhow::Result<(String, String)> {
    let sched = &v.plan.lowered.schedule;
    let lg = &v.plan.lowered.graph;
    let items = (0..sched.launches.len()).map(|i| (sched.launch_scope(lg, i), i));
    // Which launch writes each buffer, so a kernel links to the kernels it reads from.
    let mut writer: HashMap<usize, usize> = HashMap::new();
    let mut inputs: Vec<Vec<usize>> = Vec::with_capacity(sched.launches.len());
    for (i, l) in sched.launches.iter().enumerate() {
        let mut from: Vec<usize> = Vec::new();
        for (a, &buf) in l.kernel.args.iter().zip(&l.args) {
            if a.access == Access::Write {
                writer.insert(buf, i);
            } else if let Some(&w) = writer.get(&buf)
                && !from.contains(&w)
            {
                from.push(w);
            }
        }
        inputs.push(from);
    }
    let (mut col, mut details) = (String::new(), String::new());
    for (name, launches) in grouped(items) {
        open_group(&mut col, &name, launches.len(), "kernels");
        for i in launches {
            let l = &sched.launches[i];
            let k = &l.kernel;
            let time = v.times_us.as_ref().map(|(wall, t)| {
                let us = t.get(i).copied().unwrap_or(0.0);
                (us, 100.0 * us / wall.max(1e-9))
            });
            let time_text = time.map_or(String::new(), |(us, share)| {
                format!(" <span class=\"time\">{us:.1} us, {share:.1}%</span>")
            });
            let from: Vec<String> = inputs[i]
                .iter()
                .map(|w| format!("<a href=\"#k{w}\">k{w}</a>"))
                .collect();
            let from_text = if from.is_empty() {
                String::new()
            } else {
                format!("<div class=\"from\">reads from {}</div>", from.join(" "))
            };
            let _ = writeln!(
                col,
                "<div class=\"kernel\" id=\"k{i}\" data-k=\"{i}\" data-name=\"{name} kernel {i} {ops}\"><b>kernel {i}</b> {name}{time_text}<div class=\"ops\">{ops}</div>{from_text}</div>",
                name = esc(&k.name),
                ops = esc(&k.ops.join("+")),
            );
            let reads: Vec<String> = l.args.iter().map(|b| format!("buf{b}")).collect();
            let _ = writeln!(
                details,
                "<section class=\"detail\" id=\"d{i}\" hidden><h2>kernel {i}: {name}</h2>\n<p>scope {scope}; fused ops: {ops}; buffers {bufs}{time}</p>\n<h3>Kernel IR</h3><pre class=\"kir\">{kir}</pre>\n<h3>Cranelift IR</h3><pre class=\"clif\">{clif}</pre>\n<h3>Machine code</h3><pre class=\"asm\">{asm}</pre></section>",
                name = esc(&k.name),
                scope = esc(&sched.launch_scope(lg, i).unwrap_or_else(|| "-".into())),
                ops = esc(&k.ops.join(" + ")),
                bufs = reads.join(", "),
                time = time.map_or(String::new(), |(us, share)| format!(
                    "; {us:.1} us, {share:.1}% of the forward"
                )),
                kir = esc(&k.to_string()),
                clif = esc(&cache.clif_text(k)),
                asm = esc(&cache.disassemble(k)?),
            );
        }
        col.push_str("</details>\n");
    }
    Ok((col, details))
}

/// The passes table.
fn passes_table(v: &View) -> String {
    let mut s = String::from(
        "<table class=\"passes\"><tr><th>stage</th><th>step</th><th>changed</th><th>nodes</th><th>us</th></tr>\n",
    );
    for p in &v.plan.lowered.passes {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td></tr>",
            p.stage.name(),
            esc(&p.name),
            p.changed,
            p.nodes,
            p.micros
        );
    }
    s.push_str("</table>\n");
    s
}

const STYLE: &str = r#"
body { font: 13px system-ui, sans-serif; margin: 0; color: #222; }
header { padding: 8px 12px; background: #20232a; color: #eee; display: flex; gap: 16px; align-items: center; }
header h1 { font-size: 16px; margin: 0; }
header input { font: inherit; padding: 3px 6px; width: 260px; }
main { display: grid; grid-template-columns: 1fr 1fr 1.2fr; gap: 10px; padding: 10px; }
.column h2 { font-size: 14px; margin: 4px 0; }
.group { border: 1px solid #bbb; border-radius: 6px; margin: 4px 0; padding: 2px 6px; }
.group summary { cursor: pointer; font-weight: 600; }
.count { color: #777; font-weight: normal; }
.node { font: 12px monospace; padding: 1px 4px; border-left: 3px solid #9cc3e6; margin: 1px 0; }
.kernel { background: #fff6d5; border: 1px solid #d9b44a; border-radius: 4px; margin: 3px 0; padding: 3px 6px; cursor: pointer; }
.kernel.selected { outline: 2px solid #c60; }
.ops { font: 11px monospace; color: #555; word-break: break-all; }
.from { font-size: 11px; color: #555; }
.time { color: #a40; }
.shape { color: #777; }
.hidden { display: none; }
pre { background: #f6f6f6; padding: 6px; overflow: auto; max-height: 420px; font-size: 11px; }
table.passes { border-collapse: collapse; font-size: 12px; }
table.passes td, table.passes th { border: 1px solid #ddd; padding: 1px 6px; text-align: right; }
table.passes td:nth-child(2), table.passes th:nth-child(2) { text-align: left; }
"#;

const SCRIPT: &str = r#"
(function () {
  const kernels = Array.from(document.querySelectorAll('.kernel'));
  function show(i) {
    document.querySelectorAll('.detail').forEach(d => { d.hidden = d.id !== 'd' + i; });
    kernels.forEach(k => k.classList.toggle('selected', k.dataset.k === String(i)));
  }
  kernels.forEach(k => k.addEventListener('click', () => show(k.dataset.k)));
  // A link to a producer (node or kernel) opens its group, scrolls to it and, for a
  // kernel, selects it.
  document.querySelectorAll('.from a, .node a').forEach(a => a.addEventListener('click', e => {
    e.preventDefault();
    e.stopPropagation();
    const t = document.getElementById(a.getAttribute('href').slice(1));
    t.closest('details').open = true;
    t.scrollIntoView({ block: 'center' });
    if (t.dataset.k !== undefined) { show(t.dataset.k); }
  }));
  const search = document.getElementById('search');
  search.addEventListener('input', () => {
    const q = search.value.trim().toLowerCase();
    document.querySelectorAll('.node, .kernel').forEach(e => {
      const hit = !q || e.dataset.name.toLowerCase().includes(q);
      e.classList.toggle('hidden', !hit);
      if (hit && q) { e.closest('details').open = true; }
    });
  });
  if (kernels.length) { show(kernels[0].dataset.k); }
  console.log('cranegrad-view-ready kernels=' + kernels.length);
})();
"#;

/// The whole page. Each kernel is compiled once more by `cache` for its Cranelift IR and
/// machine code.
pub fn render(v: &View, cache: &mut KernelCache) -> anyhow::Result<String> {
    let (fused, details) = fused_column(v, cache)?;
    let sched = &v.plan.lowered.schedule;
    let nodes = v.primitive.topo_from(v.outputs).len();
    let timing = v.times_us.as_ref().map_or(String::new(), |(wall, _)| {
        format!(", one forward {:.3} ms", wall / 1e3)
    });
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} - cranegrad</title><style>{STYLE}</style></head><body>\n<header><h1>{title}</h1><span>{nodes} primitive nodes, {kernels} kernels, arena {arena} bytes{timing}</span><input id=\"search\" type=\"search\" placeholder=\"search nodes and kernels\"></header>\n<main>\n<div class=\"column\" id=\"primitive\"><h2>Primitive graph</h2>\n{primitive}</div>\n<div class=\"column\" id=\"fused\"><h2>Fused schedule</h2>\n{fused}</div>\n<div class=\"column\" id=\"details\"><h2>Kernel</h2>\n{details}<h2>Passes</h2>\n{passes}</div>\n</main>\n<script>{SCRIPT}</script>\n</body></html>\n",
        title = esc(&v.title),
        kernels = sched.launches.len(),
        arena = v.plan.memory.arena_bytes,
        primitive = primitive_column(v),
        passes = passes_table(v),
    ))
}

/// Prepares `out` in `session`, times one run of it launch by launch, and writes the page
/// (titled `title`) to `page`.
pub fn write_page(
    session: &mut Session,
    out: &Tensor,
    feeds: &Feeds,
    title: &str,
    page: &Output,
) -> anyhow::Result<()> {
    let pb = super::progress::spinner("writing the HTML view");
    let key = session.prepare(&[out])?;
    let missing = || anyhow::anyhow!("the prepared graph has no plan");
    let plan = session.plan_mut(&key).ok_or_else(missing)?;
    plan.profile = true;
    plan.timings.clear();
    let run = session.realize(&[out], feeds, &Bindings::new());
    let wall_us = session.last_report().total_ms * 1e3;
    let plan = session.plan_mut(&key).ok_or_else(missing)?;
    plan.profile = false;
    run?;
    let plan = session.plan(&key).ok_or_else(missing)?;
    let mut times = vec![0.0; plan.lowered.schedule.launches.len()];
    for t in &plan.timings {
        times[t.launch] += t.micros;
    }
    let view = View {
        title: title.to_string(),
        primitive: &out.graph().snapshot(),
        outputs: &[out.id()],
        plan,
        times_us: Some((wall_us, times)),
    };
    let html = render(&view, &mut KernelCache::new()?)?;
    pb.finish_and_clear();
    page.write(html.as_bytes())
}

/// `--dump-graph=html:FILE`'s file, checked writable before any work (`None` when absent).
pub fn page_flag(value: Option<&str>) -> anyhow::Result<Option<Output>> {
    let Some(v) = value else {
        return Ok(None);
    };
    match v.strip_prefix("html:") {
        Some(f) if !f.is_empty() => Ok(Some(super::checks::output(
            "--dump-graph",
            std::path::Path::new(f),
            Some("html"),
        )?)),
        _ => anyhow::bail!("--dump-graph here takes html:FILE (a self-contained page), got {v:?}"),
    }
}
