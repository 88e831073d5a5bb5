//! Pieces of `cranegrad bench` that are worth testing on their own: work estimates of a
//! schedule, output comparison, resident memory, the Chrome trace and the latency plot.

use std::fmt::Write;

use cranegrad_lower::Schedule;
use cranegrad_lower::kernel::Expr;

/// Estimated floating-point operations and bytes moved by one run of a schedule with every
/// symbol at its maximum. Per kernel: ops inside a reduce loop run once per (output, reduce
/// index) — once per (row, reduce index) when the reduction is hoisted per row — and every
/// other op once per output (a GEMM's multiply and add are 2 per (m, n, k)). Bytes are the
/// sizes of every argument buffer (each read or written once).
pub fn work_estimate(s: &Schedule) -> (f64, f64) {
    let (mut flops, mut bytes) = (0f64, 0f64);
    for l in &s.launches {
        let k = &l.kernel;
        let outs = k.output_loops();
        let out: f64 = outs.iter().map(|lp| lp.extent.max_value() as f64).product();
        let reds: Vec<usize> = (outs.len()..k.loops.len()).collect();
        let uses = |a: &cranegrad_lower::affine::Affine, v: usize| a.coeff(v) != 0;
        // Reduce variable each expression runs under, if any.
        let mut under: Vec<Option<usize>> = Vec::with_capacity(k.exprs.len());
        let mut per_row = true;
        for e in &k.exprs {
            let own = match e {
                Expr::Load { index, .. } | Expr::Gather { index, .. } | Expr::Index(index) => {
                    reds.iter().copied().find(|&r| uses(index, r))
                }
                _ => None,
            };
            if let (Some(_), Expr::Load { index, .. }) = (own, e)
                && let Some(lv) = outs.len().checked_sub(1)
                && uses(index, lv)
            {
                per_row = false;
            }
            let v = match e {
                Expr::Reduce { var, .. } => Some(*var),
                // A reduced value is outside its loop: its users are not under it.
                _ => own.or_else(|| {
                    e.operands()
                        .iter()
                        .filter(|&&o| !matches!(k.exprs[o], Expr::Reduce { .. }))
                        .find_map(|&o| under[o])
                }),
            };
            under.push(v);
        }
        let row_len = outs.last().map_or(1.0, |lp| lp.extent.max_value() as f64);
        let inner_scale = if per_row && !reds.is_empty() {
            out / row_len
        } else {
            out
        };
        for (e, u) in k.exprs.iter().zip(&under) {
            let arith = matches!(
                e,
                Expr::Unary { .. } | Expr::Binary { .. } | Expr::Reduce { .. } | Expr::Where { .. }
            );
            if !arith {
                continue;
            }
            flops += match u {
                Some(r) => inner_scale * k.loops[*r].extent.max_value() as f64,
                None => out,
            };
        }
        bytes += k.args.iter().map(|a| a.len as f64 * 4.0).sum::<f64>();
    }
    (flops, bytes)
}

/// Largest |a - b| (NaN counts as infinite), and whether it exceeds `tol`.
pub fn max_abs_diff(a: &[f32], b: &[f32], tol: f64) -> (f64, bool) {
    if a.len() != b.len() {
        return (f64::INFINITY, true);
    }
    let d = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = (x as f64 - y as f64).abs();
            if d.is_nan() { f64::INFINITY } else { d }
        })
        .fold(0f64, f64::max);
    (d, d > tol)
}

/// Peak resident set size of this process in bytes (`VmHWM`), if the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Chrome trace JSON (chrome://tracing, Perfetto) of one profiled forward: `(name, ops,
/// start_us, dur_us)` per kernel.
pub fn chrome_trace(events: &[(String, String, f64, f64)]) -> String {
    let list: Vec<serde_json::Value> = events
        .iter()
        .map(|(name, ops, ts, dur)| {
            serde_json::json!({"name": name, "cat": "kernel", "ph": "X", "ts": ts, "dur": dur,
                "pid": 1, "tid": 1, "args": {"ops": ops}})
        })
        .collect();
    serde_json::json!({ "traceEvents": list, "displayTimeUnit": "ms" }).to_string()
}

/// An SVG line plot of per-iteration latency: the cold first run against the steady state.
pub fn latency_svg(title: &str, ms: &[f64]) -> String {
    let (w, h, m) = (720.0, 360.0, 50.0);
    let max = ms.iter().cloned().fold(0f64, f64::max).max(1e-9);
    let n = ms.len().max(2) as f64 - 1.0;
    let x = |i: usize| m + (w - 2.0 * m) * i as f64 / n;
    let y = |v: f64| h - m - (h - 2.0 * m) * v / max;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = write!(s, r#"<text x="{m}" y="24" font-size="14">{title}</text>"#);
    let _ = write!(
        s,
        r#"<line x1="{m}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{}" stroke="black"/>"#,
        h - m,
        w - m,
        h - m,
        h - m
    );
    let _ = write!(
        s,
        r#"<text x="4" y="{}">{max:.2} ms</text><text x="4" y="{}">0</text>"#,
        m + 4.0,
        h - m
    );
    let pts: Vec<String> = ms
        .iter()
        .enumerate()
        .map(|(i, &v)| format!("{:.1},{:.1}", x(i), y(v)))
        .collect();
    let _ = write!(
        s,
        r#"<polyline fill="none" stroke="steelblue" stroke-width="2" points="{}"/>"#,
        pts.join(" ")
    );
    if let Some(&c) = ms.first() {
        let _ = write!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="5" fill="crimson"/><text x="{:.1}" y="{:.1}" fill="crimson">cold {c:.2} ms</text>"#,
            x(0),
            y(c),
            x(0) + 8.0,
            y(c) + 4.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}">iteration</text></svg>"#,
        w / 2.0,
        h - 12.0
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_mismatch_is_flagged() {
        let a = vec![1.0f32, 2.0, 3.0];
        let mut b = a.clone();
        assert_eq!(max_abs_diff(&a, &b, 1e-4), (0.0, false));
        b[1] += 0.01;
        let (d, bad) = max_abs_diff(&a, &b, 1e-4);
        assert!(bad && (d - 0.01).abs() < 1e-6);
        b[2] = f32::NAN;
        assert_eq!(max_abs_diff(&a, &b, 1e-4), (f64::INFINITY, true));
    }

    #[test]
    fn svg_and_trace_are_well_formed() {
        let svg = latency_svg("t", &[10.0, 1.0, 1.1]);
        assert!(
            svg.starts_with("<svg") && svg.ends_with("</svg>") && svg.contains("cold 10.00 ms")
        );
        let t: serde_json::Value =
            serde_json::from_str(&chrome_trace(&[("k0".into(), "mul".into(), 0.0, 5.0)])).unwrap();
        assert_eq!(t["traceEvents"][0]["dur"], 5.0);
    }
}
