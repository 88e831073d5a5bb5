//! Runs every filetest in `lower/filetests/` (see its README): each file's step on its input,
//! then its `check` directives on the output. All files run; every failure is printed with
//! its file, the failing directive and the step's full output.

use std::path::PathBuf;

use cranegrad_lower::filetest::{Failure, run_filetest};
use cranegrad_lower::{FUSION_STEPS, GRAPH_PASSES, KERNEL_PASSES, SCHEDULE_PASSES};

fn filetests() -> Vec<PathBuf> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/filetests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_step_of_the_pipeline_has_a_filetest() {
    let steps: Vec<String> = filetests()
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            let line = text.lines().find(|l| l.starts_with("; step:"))?;
            line.trim_start_matches("; step:")
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .collect();
    let names = GRAPH_PASSES
        .iter()
        .map(|s| s.name)
        .chain(FUSION_STEPS.iter().map(|s| s.name))
        .chain(KERNEL_PASSES.iter().map(|s| s.name))
        .chain(SCHEDULE_PASSES.iter().map(|s| s.name));
    for name in names {
        assert!(steps.iter().any(|s| s == name), "no filetest runs `{name}`");
    }
}

#[test]
fn every_filetest_passes() {
    let files = filetests();
    assert!(!files.is_empty(), "no filetests found");
    let mut failed = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        if let Err(e) = run_filetest(&text) {
            eprintln!("FAILED {}\n{e}\n", f.display());
            failed.push(f.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} filetests failed: {}",
        failed.len(),
        files.len(),
        failed.join(", ")
    );
}

/// A small kernel and a step that leaves it as it is, with `checks` appended.
fn with_checks(checks: &str) -> String {
    format!(
        "; step: mark_sequential_loops
kernel k (exp2)
  arg0: in f32[4]
  arg1: out f32[4]
  loop i0 in 0..4 parallel
  e0 = load.f32 arg0[i0]
  e1 = exp2.f32 e0
  store arg1[i0] = e1
{checks}"
    )
}

fn failure(checks: &str) -> Failure {
    match run_filetest(&with_checks(checks)) {
        Ok(out) => panic!("the filetest passed, checks:\n{checks}\noutput:\n{out}"),
        Err(f) => f,
    }
}

#[test]
fn the_harness_fails_what_does_not_match() {
    // The file as written passes...
    let ok =
        "; check: loop i0 in 0..4 parallel\n; nextln: e0 = load\n; not: exp2\n; check: store\n";
    assert!(
        run_filetest(&with_checks(ok)).is_err(),
        "`not: exp2` is between the matches"
    );
    let ok =
        "; check: loop i0 in 0..4 parallel\n; nextln: e0 = load\n; not: sqrt\n; check: store\n";
    run_filetest(&with_checks(ok)).unwrap_or_else(|f| panic!("{f}"));
    // ...and each kind of directive fails when it does not hold, naming itself and its line.
    let f = failure("; check: loop i0 in 0..5 parallel\n");
    assert_eq!(f.line, 9);
    assert_eq!(f.directive, "; check: loop i0 in 0..5 parallel");
    assert!(
        f.output
            .as_deref()
            .is_some_and(|o| o.contains("kernel k (exp2)"))
    );
    assert!(f.to_string().contains("--- output ---"), "{f}");
    let f = failure(
        "; check: loop i0 in 0..4 parallel\n; nextln: e0 = load\n; not: exp2\n; check: store\n",
    );
    assert_eq!(f.directive, "; not: exp2");
    // Checks match in order: a line before the previous match is not found again.
    let f = failure("; check: store\n; check: e0 = load\n");
    assert_eq!(f.directive, "; check: e0 = load");
    let f = failure("; check: loop i0\n; nextln: e1 = exp2\n");
    assert_eq!(f.directive, "; nextln: e1 = exp2");
    assert!(f.message.contains("e0 = load"), "{}", f.message);
    let f = failure("; check: e1 = exp2\n; not: store\n");
    assert_eq!(f.directive, "; not: store");
    let f = failure("; nextln: kernel\n");
    assert!(f.message.contains("needs a match"), "{}", f.message);
    // A file without checks, or whose step fails, fails.
    assert!(run_filetest(&with_checks("")).is_err());
    let f = run_filetest("; step: no_such_pass\n; check: x\n").unwrap_err();
    assert!(f.message.contains("unknown step"), "{f}");
    let f = run_filetest("; step: simplify_loops\n  loop i0 in 0..n parallel\n; check: x\n")
        .unwrap_err();
    assert!(f.message.contains("line 2"), "{f}");
}
