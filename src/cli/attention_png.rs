//! `generate --attention-png DIR`: one PNG per layer of the prompt's attention, a grid of
//! heads (query rows x key columns, darker = more weight), a colour bar, and the tokens on the
//! axes when the prompt is short. Drawn with plotters' bitmap backend and the bundled font,
//! encoded with the `png` crate.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use cranegrad_models::attention_maps::LayerMap;

/// Prompts up to this many tokens get token labels on the axes.
const LABELLED_TOKENS: usize = 24;
/// Pixels per head panel (square).
const PANEL: u32 = 300;
/// Width of the colour bar strip.
const BAR: u32 = 90;

/// The colour of weight `w` in `[0, 1]`: white through blue to near black.
fn colour(w: f64) -> RGBColor {
    let w = w.clamp(0.0, 1.0);
    let stops = [
        (0.0, (255.0, 255.0, 255.0)),
        (0.25, (158.0, 202.0, 225.0)),
        (0.6, (33.0, 113.0, 181.0)),
        (1.0, (8.0, 29.0, 70.0)),
    ];
    let i = stops.iter().rposition(|s| s.0 <= w).unwrap_or(0).min(2);
    let (a, b) = (stops[i], stops[i + 1]);
    let f = (w - a.0) / (b.0 - a.0);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(mix(a.1.0, b.1.0), mix(a.1.1, b.1.1), mix(a.1.2, b.1.2))
}

/// A token's label: its text trimmed to fit, spaces shown.
fn label(piece: &str) -> String {
    let s: String = piece
        .chars()
        .map(|c| if c.is_control() { '·' } else { c })
        .take(8)
        .collect();
    if s.trim().is_empty() {
        format!("'{s}'")
    } else {
        s
    }
}

/// Draws one layer's map as PNG bytes.
pub fn layer_png(layer: usize, map: &LayerMap, tokens: &[String]) -> anyhow::Result<Vec<u8>> {
    cranegrad::fonts::ensure_registered()?;
    let cols = (map.heads as f64).sqrt().ceil().max(1.0) as u32;
    let rows = (map.heads as u32).div_ceil(cols).max(1);
    let (w, h) = (cols * PANEL + BAR, rows * PANEL + 40);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let n = map.len;
    let peak = map.weights.iter().copied().fold(0f32, f32::max).max(1e-9) as f64;
    let labelled = n <= LABELLED_TOKENS && tokens.len() == n;
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(
            &format!(
                "layer {layer}: attention weights, {} heads, {n} tokens",
                map.heads
            ),
            ("sans-serif", 18),
        )?;
        let (grid, bar) = root.split_horizontally(cols * PANEL);
        let panels = grid.split_evenly((rows as usize, cols as usize));
        for (head, area) in panels.iter().enumerate().take(map.heads) {
            // Labels sit at cell centres (segmented axes); query 0 is the top row.
            let name = |k: usize| {
                if labelled {
                    tokens.get(k).map_or(String::new(), |t| label(t))
                } else {
                    k.to_string()
                }
            };
            let fmt_key = |k: &SegmentValue<usize>| match k {
                SegmentValue::CenterOf(k) if *k < n => name(*k),
                _ => String::new(),
            };
            let fmt_query = |q: &SegmentValue<usize>| match q {
                SegmentValue::CenterOf(q) if *q < n => name(n - 1 - q),
                _ => String::new(),
            };
            let mut chart = ChartBuilder::on(area)
                .caption(format!("head {head}"), ("sans-serif", 13))
                .margin(4)
                .x_label_area_size(if labelled { 40 } else { 22 })
                .y_label_area_size(if labelled { 56 } else { 30 })
                .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(n.min(12))
                .y_labels(n.min(12))
                .x_label_formatter(&fmt_key)
                .y_label_formatter(&fmt_query)
                .label_style(("sans-serif", 10))
                .draw()?;
            // Query 0 at the top: row q is drawn at n - 1 - q.
            chart.draw_series((0..n).flat_map(|q| {
                (0..n).map(move |k| {
                    let v = f64::from(map.at(head, q, k)) / peak;
                    let y = n - 1 - q;
                    let at = SegmentValue::Exact;
                    Rectangle::new([(at(k), at(y)), (at(k + 1), at(y + 1))], colour(v).filled())
                })
            }))?;
        }
        // The colour bar: weight 0 at the bottom, the largest weight at the top.
        let mut c = ChartBuilder::on(&bar)
            .margin_top(30)
            .margin_bottom(30)
            .margin_right(8)
            .y_label_area_size(46)
            .build_cartesian_2d(0..1, 0.0..peak)?;
        c.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_labels(6)
            .y_label_formatter(&|v| format!("{v:.2}"))
            .label_style(("sans-serif", 11))
            .draw()?;
        let steps = 100;
        c.draw_series((0..steps).map(|i| {
            let (lo, hi) = (
                peak * i as f64 / steps as f64,
                peak * (i + 1) as f64 / steps as f64,
            );
            Rectangle::new([(0, lo), (1, hi)], colour(hi / peak).filled())
        }))?;
        root.present()?;
    }
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()?.write_image_data(&buf)?;
    }
    Ok(png_bytes)
}

/// Writes `DIR/layer-NN.png` for every layer (atomically); returns the paths.
pub fn write_all(dir: &Path, maps: &[LayerMap], tokens: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::with_capacity(maps.len());
    for (l, m) in maps.iter().enumerate() {
        let path = dir.join(format!("layer-{l:02}.png"));
        let out = super::checks::output("--attention-png", &path, Some("png"))?;
        out.write(&layer_png(l, m, tokens)?)?;
        written.push(path);
    }
    Ok(written)
}
