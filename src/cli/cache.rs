//! `cranegrad cache path|stats|clear`, and the process's kernel disk cache set up from
//! `--cache-dir`, `--no-disk-cache` and the environment before any command runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use cranegrad_codegen::disk_cache::{self, DEFAULT_MAX_BYTES, DiskCache};

/// Options of `cranegrad cache`.
#[derive(Args, Debug)]
pub struct CacheArgs {
    #[command(subcommand)]
    action: CacheAction,
}

#[derive(Subcommand, Debug)]
enum CacheAction {
    /// Print the kernel cache directory.
    Path,
    /// Print the entries and bytes the cache holds.
    Stats,
    /// Remove every entry.
    Clear,
}

/// The cache root in use: `--cache-dir`, else `CRANEGRAD_CACHE_DIR`, XDG or `~/.cache`.
fn root(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(disk_cache::default_root)
        .ok_or_else(|| {
            anyhow::anyhow!("no cache directory: set --cache-dir, CRANEGRAD_CACHE_DIR or HOME")
        })
}

/// Whether the environment turns the disk cache off (`CRANEGRAD_NO_DISK_CACHE` set and not
/// `0`).
fn off_by_env() -> bool {
    std::env::var_os("CRANEGRAD_NO_DISK_CACHE").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Sets up the process's disk cache; an unusable directory is a warning and the run goes on
/// without it.
pub fn install(dir: Option<&Path>, off: bool) {
    if off || off_by_env() {
        return;
    }
    let opened = root(dir)
        .map_err(|e| e.to_string())
        .and_then(|r| DiskCache::open(&r, DEFAULT_MAX_BYTES));
    match opened {
        Ok(c) => disk_cache::set_global(Some(c)),
        Err(why) => eprintln!("warning: kernel disk cache off: {why}"),
    }
}

/// Runs `cranegrad cache`.
pub fn cache(a: CacheArgs, dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let root = root(dir)?;
    let c = DiskCache::open(&root, DEFAULT_MAX_BYTES).map_err(|e| anyhow::anyhow!(e))?;
    match a.action {
        CacheAction::Path => println!("{}", c.dir().display()),
        CacheAction::Stats => {
            let s = c.stats();
            println!(
                "{}: {} compiled kernels, {:.1} KB (cap {} MB)",
                c.dir().display(),
                s.entries,
                s.bytes as f64 / 1e3,
                DEFAULT_MAX_BYTES >> 20
            );
        }
        CacheAction::Clear => {
            let s = c.clear();
            println!(
                "removed {} compiled kernels, {:.1} KB, from {}",
                s.entries,
                s.bytes as f64 / 1e3,
                c.dir().display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
