//! The compiled-kernel disk cache as a user meets it: a second process loads its kernels
//! instead of compiling them and computes the same; a damaged entry is compiled again, never
//! run; an unsafe directory is a warning and the run goes on; `cranegrad cache`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(dir: &Path, args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_cranegrad"))
        .env("CRANEGRAD_VERIFY", "1")
        .env_remove("CRANEGRAD_NO_DISK_CACHE")
        .args(args)
        .arg("--cache-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cranegrad-disk-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `(misses, loaded from disk)` from `run`'s kernel-cache row.
fn cache_row(o: &Output) -> (u64, u64) {
    let out = String::from_utf8_lossy(&o.stdout);
    let row = out
        .lines()
        .find(|l| l.trim_start().starts_with("kernel cache"))
        .unwrap_or_else(|| panic!("no kernel cache row in {out}"));
    let nums: Vec<u64> = row
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[1], nums[2])
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("kernels"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "kernel"))
        .collect()
}

#[test]
fn a_second_process_loads_its_kernels_and_computes_the_same() {
    let d = tmp("warm");
    let first = run(&d, &["run", "llama", "-m", "medium"]);
    let (misses, from_disk) = cache_row(&first);
    assert!(misses > 0 && from_disk == 0, "{misses} {from_disk}");
    // One entry per compiled kernel, plus the forward's schedule.
    assert_eq!(entries(&d).len() as u64, misses + 1);
    let second = run(&d, &["run", "llama", "-m", "medium"]);
    assert_eq!(
        cache_row(&second),
        (misses, misses),
        "every kernel from disk"
    );
    // The same text, greedy, from compiled and from loaded kernels.
    let generated = |extra: &[&str]| {
        let mut args = vec!["generate", "-m", "small", "-p", "Hello", "-n", "12"];
        args.extend(extra);
        String::from_utf8(run(&d, &args).stdout).unwrap()
    };
    assert_eq!(generated(&["--no-disk-cache"]), generated(&[]));
    assert_eq!(generated(&[]), generated(&[]));
    // cache stats / path / clear.
    let stats = String::from_utf8(run(&d, &["cache", "stats"]).stdout).unwrap();
    assert!(stats.contains("compiled kernels"), "{stats}");
    let path = String::from_utf8(run(&d, &["cache", "path"]).stdout).unwrap();
    assert_eq!(Path::new(path.trim()), d);
    let cleared = String::from_utf8(run(&d, &["cache", "clear"]).stdout).unwrap();
    assert!(cleared.starts_with("removed"), "{cleared}");
    assert!(entries(&d).is_empty());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_damaged_entry_is_compiled_again_never_run() {
    let d = tmp("damaged");
    let (misses, _) = cache_row(&run(&d, &["run", "llama", "-m", "small"]));
    let all = entries(&d);
    // Flip one code byte of every entry: the checksum catches it before anything runs.
    for p in &all {
        let mut b = std::fs::read(p).unwrap();
        *b.last_mut().unwrap() ^= 0x40;
        std::fs::write(p, &b).unwrap();
    }
    let o = run(&d, &["run", "llama", "-m", "small"]);
    assert_eq!(cache_row(&o), (misses, 0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("checksum mismatch") && err.contains("compiling it again"),
        "{err}"
    );
    // The entries were replaced by good ones.
    assert_eq!(
        cache_row(&run(&d, &["run", "llama", "-m", "small"])),
        (misses, misses)
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_directory_others_may_write_is_refused_and_the_run_goes_on() {
    use std::os::unix::fs::PermissionsExt;
    let d = tmp("unsafe");
    std::fs::create_dir_all(d.join("kernels")).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = run(&d, &["run", "llama", "-m", "small"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("kernel disk cache off") && err.contains("others may write"),
        "{err}"
    );
    assert_eq!(cache_row(&o).1, 0);
    assert!(
        entries(&d).is_empty(),
        "nothing written to an unsafe directory"
    );
    let _ = std::fs::remove_dir_all(&d);
}
