//! Pieces of `cranegrad bench` that are worth testing on their own: work estimates of a
//! schedule, output comparison, the per-kernel profile, resident memory, the Chrome trace and
//! the latency plot, and the warm timing loop the criterion benches share.

use std::time::Instant;

use cranegrad_graph::{Bindings, Tensor};
use cranegrad_lower::Schedule;
use cranegrad_lower::kernel::Expr;
use cranegrad_runtime::{Feeds, Session};

use crate::stats::{median, quantile};

/// Estimated floating-point operations and bytes moved by one run of a schedule with every
/// symbol at its maximum. Per kernel: ops inside a reduce loop run once per (output, reduce
/// index) — once per (row, reduce index) when the reduction is hoisted per row — and every
/// other op once per output (a GEMM's multiply and add are 2 per (m, n, k), a paired GEMM's
/// twice, its norm statistic 2 per (m, k); an attention kernel's dot products, softmax and
/// accumulator per (query row, key)). Bytes are the sizes of every argument buffer (each read
/// or written once).
pub fn work_estimate(s: &Schedule) -> (f64, f64) {
    let (mut flops, mut bytes) = (0f64, 0f64);
    for l in &s.launches {
        bytes += l
            .kernel
            .args
            .iter()
            .map(|a| a.len as f64 * 4.0)
            .sum::<f64>();
        for k in l.kernel.bodies() {
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
            let ext = |v: usize| k.loops[v].extent.max_value() as f64;
            let arith = |e: &Expr| {
                matches!(
                    e,
                    Expr::Unary { .. }
                        | Expr::Binary { .. }
                        | Expr::Reduce { .. }
                        | Expr::Where { .. }
                )
            };
            // Templates: count what the generated code does, not the IR's loop nest (a folded
            // gain costs nothing per call; a norm's statistic is once per row, not per output).
            if let Some(a) = k.attention() {
                let (keys, dot) = (ext(a.key_loop), ext(a.dot_loop));
                // Per query row and key: the dot product, the weight (about 8 ops) and the
                // accumulator update.
                flops += out / row_len * keys * (2.0 * dot + 8.0 + 2.0 * row_len);
                continue;
            }
            if let Some(g) = k.gemm() {
                let kk = ext(g.k_loop);
                let products = if g.pair.is_some() { 2.0 } else { 1.0 };
                flops += 2.0 * products * out * kk;
                if g.row_reduce.is_some() {
                    flops += 2.0 * out / row_len * kk;
                }
                flops += k
                    .exprs
                    .iter()
                    .zip(&under)
                    .filter(|(e, u)| u.is_none() && arith(e))
                    .count() as f64
                    * out;
                continue;
            }
            let inner_scale = if per_row && !reds.is_empty() {
                out / row_len
            } else {
                out
            };
            for (e, u) in k.exprs.iter().zip(&under) {
                if !arith(e) {
                    continue;
                }
                flops += match u {
                    Some(r) => inner_scale * k.loops[*r].extent.max_value() as f64,
                    None => out,
                };
            }
        }
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

/// Restarts the peak-RSS count from the current RSS (Linux `clear_refs` 5), so the machine
/// probe's scratch buffers do not count as the model's memory; a no-op elsewhere.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
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

/// One row of the per-kernel profile: every launch of one compiled kernel in a forward.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelProfile {
    /// Name of the first launch of the kernel.
    pub name: String,
    /// Its fused ops, joined by `+`.
    pub ops: String,
    /// Launches in the profiled run.
    pub calls: usize,
    /// Total time of those launches, microseconds.
    pub micros: f64,
    /// Estimated floating-point operations of those launches.
    pub flops: f64,
    /// Estimated bytes moved by those launches.
    pub bytes: f64,
}

/// Aggregates profiled launches `(launch index into s, microseconds)` per compiled kernel and
/// sorts them by total time, longest first. Launches with the same kernel body share one
/// compiled function (the kernel cache keys on the body, not the name), so a transformer's
/// per-layer kernels become one row with `calls` = layers.
pub fn kernel_profile(s: &Schedule, timings: &[(usize, f64)]) -> Vec<KernelProfile> {
    let mut rows: Vec<KernelProfile> = Vec::new();
    let mut by_body: std::collections::HashMap<String, usize> = Default::default();
    for &(li, us) in timings {
        let l = &s.launches[li];
        let one = Schedule {
            launches: vec![l.clone()],
            ..Default::default()
        };
        let (f, by) = work_estimate(&one);
        let i = *by_body.entry(l.kernel.key_text()).or_insert_with(|| {
            rows.push(KernelProfile {
                name: l.kernel.name.clone(),
                ops: l.kernel.ops.join("+"),
                calls: 0,
                micros: 0.0,
                flops: 0.0,
                bytes: 0.0,
            });
            rows.len() - 1
        });
        let r = &mut rows[i];
        r.calls += 1;
        r.micros += us;
        r.flops += f;
        r.bytes += by;
    }
    rows.sort_by(|x, y| y.micros.total_cmp(&x.micros));
    rows
}

/// `(min, median, max)` of `samples`, or `None` when there are none.
pub fn spread(samples: &[f64]) -> Option<(f64, f64, f64)> {
    (!samples.is_empty()).then(|| {
        (
            quantile(samples, 0.0),
            median(samples),
            quantile(samples, 1.0),
        )
    })
}

/// An SVG plot (plotters) of per-iteration latency: `ms[0]` is the cold first run, marked and
/// labelled, against the steady state that follows it. The y axis is logarithmic because the
/// cold run is often tens of times the warm one, which would flatten a linear axis.
pub fn latency_svg(title: &str, ms: &[f64]) -> anyhow::Result<String> {
    use plotters::prelude::*;
    crate::fonts::ensure_registered()?;
    let ms: Vec<f64> = ms.iter().map(|&v| v.max(1e-6)).collect();
    let (lo, hi) = ms
        .iter()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if ms.is_empty() {
        anyhow::bail!("no latencies to plot");
    }
    let last = (ms.len() - 1).max(1);
    let steady = median(&ms[1.min(ms.len() - 1)..]);
    // plotters labels a log axis at powers of ten and the steps between them, so the range is
    // widened to whole decades: a narrower one could have no labelled tick at all.
    let decade = |v: f64, round: fn(f64) -> f64| 10f64.powf(round(v.log10()));
    let y0 = decade(lo, f64::floor);
    let y1 = decade(hi, f64::ceil).max(y0 * 10.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 360)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0..last, (y0..y1).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("iteration (0 = cold first run)")
            .y_desc("ms (log scale)")
            .y_label_formatter(&|v| format!("{}", (v * 1e3).round() / 1e3))
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                ms.iter().enumerate().skip(1).map(|(i, &v)| (i, v)),
                &BLUE,
            ))?
            .label(format!("steady state (median {steady:.3} ms)"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        let cold = ms[0];
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((0, cold))
                    + Circle::new((0, 0), 5, RED.filled())
                    + Text::new(
                        format!("cold {cold:.2} ms"),
                        (10, -4),
                        ("sans-serif", 12).into_font().color(&RED),
                    ),
            ))?
            .label("cold first run")
            .legend(|(x, y)| Circle::new((x + 8, y), 4, RED.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// Milliseconds of each of `n` warm realizes of `out` (no feeds), after one untimed run, so
/// its kernels are compiled and its data is as warm as in a steady state of its own.
pub fn warm_runs_ms(s: &mut Session, out: &Tensor, n: usize) -> anyhow::Result<Vec<f64>> {
    let (f, b) = (Feeds::new(), Bindings::new());
    s.realize(&[out], &f, &b)?;
    (0..n)
        .map(|_| {
            let t = Instant::now();
            s.realize(&[out], &f, &b)?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        })
        .collect()
}

/// The median of [`warm_runs_ms`].
pub fn warm_median_ms(s: &mut Session, out: &Tensor, n: usize) -> anyhow::Result<f64> {
    Ok(median(&warm_runs_ms(s, out, n)?))
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
        let svg = latency_svg("t", &[10.0, 1.0, 1.1, 1.2]).unwrap();
        let svg = svg.trim();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.ends_with("</svg>"), "{svg}");
        // The cold run is labelled with its value, and drawn as the one red dot.
        assert!(svg.contains("cold 10.00 ms"), "{svg}");
        assert!(svg.contains("steady state (median 1.100 ms)"), "{svg}");
        assert_eq!(
            svg.matches("<circle").count(),
            2,
            "the cold dot and its legend: {svg}"
        );
        assert!(latency_svg("t", &[]).is_err());
        // Every value on one power of ten still gets an axis (a decade, not an empty range).
        let flat = latency_svg("t", &[10.0, 10.0]).unwrap();
        assert!(flat.contains("cold 10.00 ms"), "{flat}");
        assert!(
            flat.contains("\n100\n</text>"),
            "the axis spans 10..100: {flat}"
        );
        let t: serde_json::Value =
            serde_json::from_str(&chrome_trace(&[("k0".into(), "mul".into(), 0.0, 5.0)])).unwrap();
        assert_eq!(t["traceEvents"][0]["dur"], 5.0);
    }

    #[test]
    fn spread_is_min_median_max() {
        assert_eq!(spread(&[300.0, 40.0, 120.0]), Some((40.0, 120.0, 300.0)));
        assert_eq!(spread(&[]), None);
    }
}
