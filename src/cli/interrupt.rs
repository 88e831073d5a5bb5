//! Ctrl-C as a request, not a kill: the first SIGINT sets a flag that generation loops poll,
//! so they stop at the next token with the text so far printed and their figures reported; a
//! second SIGINT while the first is still pending exits at once (130), as a user pressing it
//! twice expects.

use std::sync::atomic::{AtomicBool, Ordering};

static PENDING: AtomicBool = AtomicBool::new(false);

/// The exit code of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Installs the handler (once per process; later calls do nothing).
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let installed = ctrlc::set_handler(|| {
            if PENDING.swap(true, Ordering::SeqCst) {
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
        });
        if let Err(e) = installed {
            eprintln!("warning: Ctrl-C will kill the process at once: {e}");
        }
    });
}

/// True when Ctrl-C was pressed and not yet taken: for a run that stops everything at once.
pub fn pending() -> bool {
    PENDING.load(Ordering::SeqCst)
}

/// True (once) when Ctrl-C was pressed since the last call: the caller stops what it is doing.
pub fn take() -> bool {
    PENDING.swap(false, Ordering::SeqCst)
}
