//! Progress on stderr while phases run: bars for counted work, spinners for one long call.

use std::time::Duration;

use cranegrad_models::quantize::Quantize;
use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `msg`.
pub fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// A spinner that keeps ticking while the caller blocks in one long call (load, compile,
/// the interpreter). Like every bar here it draws on stderr and only to a terminal; when it is
/// hidden no ticker thread is started, so it cannot disturb the timings.
pub fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(msg.to_string());
    if !pb.is_hidden() {
        pb.enable_steady_tick(Duration::from_millis(80));
    }
    pb
}

/// Loads model `spec` under a spinner naming it; on a terminal, then one line on stderr with
/// what was loaded (parameters, bytes, time), so a user knows what the wait was for.
pub fn load_model(
    spec: &str,
    seed: u64,
    quantize: Option<Quantize>,
) -> anyhow::Result<cranegrad_models::Model> {
    use anyhow::Context;
    use std::io::IsTerminal;
    let pb = spinner(&format!("reading {spec}"));
    let t = std::time::Instant::now();
    let mut model =
        cranegrad_models::Model::load(spec, seed).with_context(|| format!("loading {spec}"))?;
    let converted = match quantize {
        Some(q) => Some((q, model.quantize(q)?)),
        None => None,
    };
    pb.finish_and_clear();
    if let Some((q, n)) = converted {
        eprintln!(
            "quantized {n} matrices to {} ({})",
            q.name(),
            match q.packed_formats().first() {
                Some(f) => format!("packed as {} panels", f.name()),
                None => "held as their exact dequantisation".to_string(),
            }
        );
    }
    if std::io::stderr().is_terminal() {
        eprintln!(
            "loaded {}: {} parameters, {:.1} MB of f32 weights, {:.0} ms",
            model.origin,
            model.config.param_count(),
            model.weights.bytes() as f64 / 1e6,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(model)
}
