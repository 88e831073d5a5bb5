//! The font every picture is drawn with, bundled in the binary (DejaVu Sans, its license in
//! `assets/DejaVuSans-LICENSE.txt`), so plots and PNGs render the same on a machine with no
//! fonts installed.

use std::sync::OnceLock;

use plotters::style::{FontStyle, register_font};

static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Registers the bundled font as `sans-serif` (once per process); every plot calls it before
/// drawing text.
pub fn ensure_registered() -> anyhow::Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        [FontStyle::Normal, FontStyle::Bold]
            .into_iter()
            .all(|style| register_font("sans-serif", style, DEJAVU_SANS).is_ok())
    });
    anyhow::ensure!(ok, "the bundled font (DejaVu Sans) could not be loaded");
    Ok(())
}
