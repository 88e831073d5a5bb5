//! `--memory-plot FILE.svg`: where the memory goes. The top panel stacks, over the kernel
//! sequence of one forward and then one decode step, the weights, the intermediate bytes the
//! planner keeps live at each kernel and the KV cache, with the peak marked; the bottom panel
//! is the process's resident set sampled every few milliseconds through load, cold start
//! (compile and packing), the warm runs and generation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use plotters::prelude::*;

/// Resident set size now, bytes (`VmRSS` of `/proc/self/status`).
fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One RSS sample: ms since the sampler started, bytes.
pub type Sample = (f64, u64);

/// A phase's start: ms since the sampler started, its name.
pub type Mark = (f64, &'static str);

/// Samples the resident set on a thread until stopped, and marks where phases start.
pub struct RssSampler {
    t0: Instant,
    marks: Vec<Mark>,
    own: Vec<Sample>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Sample>>,
}

impl RssSampler {
    /// Starts sampling every 5 ms, in phase `phase`.
    pub fn start(phase: &'static str) -> RssSampler {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out = Vec::new();
            while !s.load(Ordering::Relaxed) {
                if let Some(b) = rss_bytes() {
                    out.push((t0.elapsed().as_secs_f64() * 1e3, b));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            out
        });
        let mut sampler = RssSampler {
            t0,
            marks: Vec::new(),
            own: Vec::new(),
            stop,
            handle,
        };
        sampler.phase(phase);
        sampler
    }

    /// Marks the start of `phase` (with a sample of its own: short phases fall between the
    /// thread's samples).
    pub fn phase(&mut self, phase: &'static str) {
        let t = self.t0.elapsed().as_secs_f64() * 1e3;
        self.marks.push((t, phase));
        if let Some(b) = rss_bytes() {
            self.own.push((t, b));
        }
    }

    /// Stops; returns the samples in time order and the phase marks.
    pub fn finish(self) -> (Vec<Sample>, Vec<Mark>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = self.handle.join().unwrap_or_default();
        all.extend(self.own);
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        (all, self.marks)
    }
}

/// A stacked band: its name, colour, and the height of its top at a kernel.
type Layer = (&'static str, RGBColor, fn(&Live) -> u64);

/// Marks the start of `phase` when sampling (`--memory-plot`); nothing otherwise.
pub fn mark(sampler: &mut Option<RssSampler>, phase: &'static str) {
    if let Some(s) = sampler {
        s.phase(phase);
    }
}

/// What the top panel stacks at one kernel.
#[derive(Clone, Copy, Debug)]
pub struct Live {
    /// Weights resident (raw plus packed).
    pub weights: u64,
    /// Intermediate bytes live at this kernel.
    pub activations: u64,
    /// KV cache.
    pub kv: u64,
}

/// The two panels as SVG. `forward` then `decode` are the kernel sequences; `rss` the samples.
pub fn memory_svg(
    title: &str,
    forward: &[Live],
    decode: &[Live],
    rss: &[Sample],
    marks: &[Mark],
) -> anyhow::Result<String> {
    cranegrad::fonts::ensure_registered()?;
    let seq: Vec<Live> = forward.iter().chain(decode).copied().collect();
    if seq.is_empty() || rss.is_empty() {
        anyhow::bail!("nothing to draw: no kernels or no RSS samples");
    }
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let total = |l: &Live| mib(l.weights + l.activations + l.kv);
    let (peak_at, peak) = seq
        .iter()
        .enumerate()
        .map(|(i, l)| (i, total(l)))
        .fold((0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 720)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 18))?;
        let (top, bottom) = root.split_vertically(380);
        let n = seq.len();
        let mut c = ChartBuilder::on(&top)
            .caption(
                "planned memory per kernel: forward, then one decode step",
                ("sans-serif", 14),
            )
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(70)
            .build_cartesian_2d(0..n, 0.0..peak * 1.15)?;
        c.configure_mesh()
            .x_desc(format!(
                "kernel (0..{} forward, {}..{} decode step)",
                forward.len(),
                forward.len(),
                n
            ))
            .y_desc("MiB")
            .draw()?;
        let layers: [Layer; 3] = [
            ("KV cache", RGBColor(0x9b, 0x59, 0xb6), |l| {
                l.weights + l.activations + l.kv
            }),
            ("activations (live)", RGBColor(0xe6, 0x7e, 0x22), |l| {
                l.weights + l.activations
            }),
            ("weights", RGBColor(0x34, 0x98, 0xdb), |l| l.weights),
        ];
        for (name, color, top_of) in layers {
            c.draw_series(AreaSeries::new(
                seq.iter().enumerate().map(|(i, l)| (i, mib(top_of(l)))),
                0.0,
                color.mix(0.55),
            ))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
        }
        c.draw_series(std::iter::once(
            EmptyElement::at((peak_at, peak))
                + Circle::new((0, 0), 4, RED.filled())
                + Text::new(
                    format!("peak {peak:.1} MiB at kernel {peak_at}"),
                    (8, -14),
                    ("sans-serif", 12).into_font().color(&RED),
                ),
        ))?;
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;

        let t1 = rss.last().map_or(1.0, |s| s.0).max(1.0);
        let r_hi = rss.iter().map(|s| mib(s.1)).fold(0.0, f64::max);
        let mut c = ChartBuilder::on(&bottom)
            .caption(
                "process resident set (sampled every 5 ms)",
                ("sans-serif", 14),
            )
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..t1, 0.0..r_hi * 1.15)?;
        c.configure_mesh()
            .x_desc("ms since start")
            .y_desc("MiB")
            .draw()?;
        c.draw_series(LineSeries::new(rss.iter().map(|s| (s.0, mib(s.1))), &BLACK))?;
        // Each phase's start, labelled at staggered heights so close phases stay legible.
        for (nth, &(t, name)) in marks.iter().enumerate() {
            let y = r_hi * (1.12 - 0.08 * (nth % 3) as f64);
            c.draw_series(std::iter::once(PathElement::new(
                vec![(t, 0.0), (t, r_hi * 1.12)],
                BLUE.mix(0.5),
            )))?;
            c.draw_series(std::iter::once(Text::new(
                name,
                (t, y),
                ("sans-serif", 12).into_font().color(&BLUE),
            )))?;
        }
        root.present()?;
    }
    Ok(svg)
}
