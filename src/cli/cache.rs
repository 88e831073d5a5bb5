//! `cranegrad cache path|stats|clear`, and the process's disk caches (compiled kernels;
//! generated and packed weights) set up from `--cache-dir`, `--no-disk-cache` and the
//! environment before any command runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use cranegrad_codegen::disk_cache::{self, DEFAULT_MAX_BYTES, DiskCache};
use cranegrad_runtime::weight_cache::{self, WeightCache};

/// Options of `cranegrad cache`.
#[derive(Args, Debug)]
pub struct CacheArgs {
    #[command(subcommand)]
    action: CacheAction,
}

#[derive(Subcommand, Debug)]
enum CacheAction {
    /// Print the cache directory (kernels and weights live in subfolders).
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

/// Sets up the process's disk caches; an unusable directory is a warning and the run goes on
/// without it.
pub fn install(dir: Option<&Path>, off: bool) {
    if off || off_by_env() {
        return;
    }
    let root = match root(dir) {
        Ok(r) => r,
        Err(why) => {
            eprintln!("warning: disk cache off: {why}");
            return;
        }
    };
    match DiskCache::open(&root, DEFAULT_MAX_BYTES) {
        Ok(c) => disk_cache::set_global(Some(c)),
        Err(why) => eprintln!("warning: kernel disk cache off: {why}"),
    }
    match WeightCache::open(&root, weight_cache::DEFAULT_MAX_BYTES) {
        Ok(c) => weight_cache::set_global(Some(c)),
        Err(why) => eprintln!("warning: weights disk cache off: {why}"),
    }
}

/// Runs `cranegrad cache`.
pub fn cache(a: CacheArgs, dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let root = root(dir)?;
    let c = DiskCache::open(&root, DEFAULT_MAX_BYTES).map_err(|e| anyhow::anyhow!(e))?;
    let w = WeightCache::open(&root, weight_cache::DEFAULT_MAX_BYTES)
        .map_err(|e| anyhow::anyhow!(e))?;
    // One line per part: kernels (with schedules) in KB, weights in MB.
    let parts = [
        (
            c.entries(),
            "compiled kernels and schedules",
            (1e3, "KB"),
            format!("cap {} MB", DEFAULT_MAX_BYTES >> 20),
        ),
        (
            w.entries(),
            "weight entries",
            (1e6, "MB"),
            format!("cap {} GB", weight_cache::DEFAULT_MAX_BYTES >> 30),
        ),
    ];
    for (e, what, (unit, unit_name), cap) in parts {
        match a.action {
            CacheAction::Path => {
                println!("{}", root.display());
                break;
            }
            CacheAction::Stats => {
                let s = e.stats();
                println!(
                    "{}: {} {what}, {:.1} {unit_name} ({cap})",
                    e.dir().display(),
                    s.entries,
                    s.bytes as f64 / unit
                );
            }
            CacheAction::Clear => {
                let s = e.clear();
                println!(
                    "removed {} {what}, {:.1} {unit_name}, from {}",
                    s.entries,
                    s.bytes as f64 / unit,
                    e.dir().display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
