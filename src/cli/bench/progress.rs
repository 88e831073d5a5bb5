//! Progress on stderr while phases run: bars for counted work, spinners for one long call.

use std::time::Duration;

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
