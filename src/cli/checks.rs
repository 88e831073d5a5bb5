//! One rule for every argument, in every subcommand, checked before any work: a value out of
//! range is an error naming the flag and the range (exit 2), never clamped, ignored or left to
//! fail later; an output path is checked writable first, `-` is stdout, and files are written
//! atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};

/// The most threads a run may ask for (the pool spawns one OS thread per thread).
pub const MAX_THREADS: usize = 1024;

/// The most timed iterations, requests or steps a count flag takes: far past any useful
/// measurement, and small enough that a buffer per iteration cannot exhaust memory.
pub const MAX_COUNT: usize = 1_000_000;

/// `--threads`: the cores by default; `1..=MAX_THREADS` otherwise, with a warning above the
/// core count (oversubscribed threads wait on each other).
pub fn threads(flag: Option<usize>) -> anyhow::Result<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let Some(t) = flag else {
        return Ok(cores);
    };
    if !(1..=MAX_THREADS).contains(&t) {
        bail!("--threads {t} is outside 1..={MAX_THREADS}");
    }
    if t > cores {
        eprintln!("warning: --threads {t} is more than this machine's {cores} cores");
    }
    Ok(t)
}

/// A size or count flag where 0 means nothing to do: `1..=max`.
pub fn positive(flag: &str, v: usize, max: usize) -> anyhow::Result<usize> {
    if !(1..=max).contains(&v) {
        bail!("{flag} {v} is outside 1..={max}");
    }
    Ok(v)
}

/// A count flag where 0 is meaningful (skip the phase): `0..=max`.
pub fn count(flag: &str, v: usize, max: usize) -> anyhow::Result<usize> {
    if v > max {
        bail!("{flag} {v} is above {max}");
    }
    Ok(v)
}

/// `--temperature`: finite and at least 0 (0 is greedy).
pub fn temperature(t: f32) -> anyhow::Result<f32> {
    if !(t.is_finite() && t >= 0.0) {
        bail!("--temperature {t} must be a finite number >= 0 (0 is greedy)");
    }
    Ok(t)
}

/// `--top-p`: in (0, 1].
pub fn top_p(p: f32) -> anyhow::Result<f32> {
    if !(p > 0.0 && p <= 1.0) {
        bail!("--top-p {p} is outside (0, 1]");
    }
    Ok(p)
}

/// A penalty factor (`--repetition-penalty`): finite and above 0 (1 is off).
pub fn penalty(flag: &str, p: f32) -> anyhow::Result<f32> {
    if !(p.is_finite() && p > 0.0) {
        bail!("{flag} {p} must be a finite number > 0 (1 is off)");
    }
    Ok(p)
}

/// `a + b` for lengths, or an error naming what was added.
pub fn add_lengths(what: &str, a: usize, b: usize) -> anyhow::Result<usize> {
    a.checked_add(b)
        .ok_or_else(|| anyhow!("{what}: {a} + {b} overflows"))
}

/// Where an output goes: standard output (`-`) or a file.
#[derive(Clone, Debug)]
pub enum Output {
    /// `-`.
    Stdout,
    /// A file, checked writable.
    File(PathBuf),
}

/// An output flag's path, checked before any work: `-` is stdout; otherwise its folder must
/// exist and take a new file (tried with a probe file, removed at once), and with `extension`
/// the file name must end in it.
pub fn output(flag: &str, path: &Path, extension: Option<&str>) -> anyhow::Result<Output> {
    if path.as_os_str() == "-" {
        return Ok(Output::Stdout);
    }
    if let Some(ext) = extension
        && path
            .extension()
            .is_none_or(|e| !e.eq_ignore_ascii_case(ext))
    {
        bail!(
            "{flag} {}: the file is written as {}, so its name must end in .{ext}",
            path.display(),
            ext.to_uppercase()
        );
    }
    if path.is_dir() {
        bail!("{flag} {}: is a folder", path.display());
    }
    let probe = temp_beside(path);
    std::fs::File::create(&probe)
        .map_err(|e| anyhow!("{flag} {}: cannot write there: {e}", path.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(Output::File(path.to_path_buf()))
}

/// A folder outputs are written into: created if absent, checked writable before any work.
pub fn output_dir(flag: &str, dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("{flag} {}: is not a folder", dir.display());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow!("{flag} {}: cannot create it: {e}", dir.display()))?;
    let probe = dir.join(format!(".cranegrad-probe-{}", std::process::id()));
    std::fs::File::create(&probe)
        .map_err(|e| anyhow!("{flag} {}: cannot write there: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// [`output`] of a flag that may be absent.
pub fn optional_output(
    flag: &str,
    path: Option<&Path>,
    extension: Option<&str>,
) -> anyhow::Result<Option<Output>> {
    path.map(|p| output(flag, p, extension)).transpose()
}

/// The sampling flags `generate` and `chat` share: temperature, top-p, repetition penalty.
pub fn sampling(temp: f32, nucleus: f32, repetition: f32) -> anyhow::Result<()> {
    temperature(temp)?;
    top_p(nucleus)?;
    penalty("--repetition-penalty", repetition)?;
    Ok(())
}

/// A temporary file name in `path`'s folder, unique to this process.
fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Stdout => f.write_str("stdout"),
            Output::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Output {
    /// Writes `bytes` whole: to stdout, or to a temporary file renamed over the path, so a
    /// reader never sees a half-written file and an interrupted run leaves the old one.
    pub fn write(&self, bytes: &[u8]) -> anyhow::Result<()> {
        match self {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()?;
                Ok(())
            }
            Output::File(path) => {
                let tmp = temp_beside(path);
                std::fs::write(&tmp, bytes)
                    .and_then(|()| std::fs::rename(&tmp, path))
                    .map_err(|e| {
                        let _ = std::fs::remove_file(&tmp);
                        anyhow!("cannot write {}: {e}", path.display())
                    })
            }
        }
    }
}
