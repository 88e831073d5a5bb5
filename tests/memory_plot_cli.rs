//! `bench --memory-plot FILE.svg`: both panels drawn with their labels and the peak, from a
//! real run; a path that is not `.svg` is refused before any work.

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cranegrad"))
        .env("CRANEGRAD_NO_DISK_CACHE", "1")
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_plot_stacks_planned_memory_and_follows_the_resident_set() {
    let svg = std::env::temp_dir().join(format!("cranegrad-mem-{}.svg", std::process::id()));
    let o = bench(&[
        "-m",
        "small",
        "-n",
        "3",
        "--iters",
        "2",
        "--requests",
        "1",
        "--memory-plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    let _ = std::fs::remove_file(&svg);
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    for label in [
        "planned memory per kernel",
        "weights",
        "activations (live)",
        "KV cache",
        "peak ",
        "process resident set",
        "load",
        "machine probe",
        "cold start",
        "warm runs",
        "generate",
    ] {
        assert!(text.contains(label), "{label}");
    }
    // Three stacked areas (polygons) over the kernels, and the RSS line with many points.
    assert_eq!(text.matches("<polygon").count(), 3);
    let longest_line = text
        .split("<polyline")
        .skip(1)
        .map(|p| p[..p.find("/>").unwrap()].matches(',').count())
        .max()
        .unwrap();
    assert!(longest_line > 20, "{longest_line} points");
}

#[test]
fn a_plot_that_is_not_svg_is_refused_before_any_work() {
    let o = bench(&["--memory-plot", "plot.png"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--memory-plot"));
}
