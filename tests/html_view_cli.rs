//! `--dump-graph=html:FILE`: the page's structure (every kernel of the schedule with its IR
//! sections filled, layers grouped and collapsed, nothing fetched), the same page from bench
//! and generate, bad values refused before any work, and the page loaded in headless
//! Chromium: no console errors, and a screenshot that shows the kernel boxes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cranegrad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cranegrad"))
        .env("CRANEGRAD_NO_DISK_CACHE", "1")
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> Output {
    let o = cranegrad(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cranegrad-html-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The page of `run llama -m small`, and the kernel count `run` reports.
fn small_page(dir: &Path) -> (String, usize) {
    let page = dir.join("small.html");
    let arg = format!("--dump-graph=html:{}", page.display());
    let o = ok(&["run", "llama", "-m", "small", "--iters", "1", &arg]);
    let table = String::from_utf8_lossy(&o.stdout);
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with("kernels"))
        .unwrap();
    let fused: usize = row
        .split("-> ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{row}"));
    (std::fs::read_to_string(page).unwrap(), fused)
}

/// The text of every `<pre class="CLASS">` block.
fn pre_blocks<'a>(html: &'a str, class: &str) -> Vec<&'a str> {
    let open = format!("<pre class=\"{class}\">");
    html.split(&open)
        .skip(1)
        .map(|b| &b[..b.find("</pre>").unwrap()])
        .collect()
}

#[test]
fn the_page_holds_every_kernel_with_its_ir_and_the_layers_grouped() {
    let d = tmp("structure");
    let (html, kernels) = small_page(&d);
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    for i in 0..kernels {
        assert!(html.contains(&format!("id=\"k{i}\"")), "kernel {i} box");
        assert!(html.contains(&format!("id=\"d{i}\"")), "kernel {i} details");
    }
    assert!(!html.contains(&format!("id=\"k{kernels}\"")));
    for (class, needle) in [("kir", "kernel k"), ("clif", "function"), ("asm", "ret")] {
        let blocks = pre_blocks(&html, class);
        assert_eq!(blocks.len(), kernels, "{class} sections");
        assert!(
            blocks.iter().all(|b| b.contains(needle)),
            "{class}: {needle}"
        );
    }
    // Layers collapsed, the rest open; the passes listed; times measured.
    assert!(html.contains("<details class=\"group\"><summary>layer.0 "));
    assert!(html.contains("<details class=\"group\"><summary>layer.1 "));
    assert!(html.contains("<details class=\"group\" open><summary>embed "));
    assert!(html.contains("fold_norm_into_matmul") && html.contains("fuse_attention"));
    assert!(html.contains("% of the forward"));
    // Kernels link to the kernels that wrote what they read (the first reads only inputs).
    assert!(html.contains("reads from <a href=\"#k0\">k0</a>"));
    let first_box: String = html
        .split("id=\"k0\"")
        .nth(1)
        .unwrap()
        .chars()
        .take(300)
        .collect();
    assert!(!first_box.contains("reads from"), "{first_box}");
    // Self-contained: nothing to fetch.
    for outside in ["http://", "https://", " src=", "<link"] {
        assert!(!html.contains(outside), "{outside}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bench_and_generate_write_the_page_and_bad_values_fail_first() {
    let d = tmp("commands");
    let b = d.join("bench.html");
    let g = d.join("gen.html");
    ok(&[
        "bench",
        "-m",
        "small",
        "-n",
        "2",
        "--iters",
        "1",
        "--requests",
        "1",
        "--no-probe",
        &format!("--dump-graph=html:{}", b.display()),
    ]);
    ok(&[
        "generate",
        "-m",
        "small",
        "-p",
        "Hello",
        "-n",
        "2",
        &format!("--dump-graph=html:{}", g.display()),
    ]);
    for p in [&b, &g] {
        let html = std::fs::read_to_string(p).unwrap();
        assert!(html.contains("class=\"kernel\"") && html.contains("<pre class=\"asm\">"));
    }
    for (args, says) in [
        (
            vec!["run", "--dump-graph=svg"],
            "not text, dot or html:FILE",
        ),
        (vec!["run", "--dump-graph=html:"], "needs a file"),
        (
            vec!["bench", "--dump-graph=html:/nonexistent-dir/x.html"],
            "cannot write there",
        ),
        (
            vec!["generate", "-p", "hi", "--dump-graph=dot"],
            "takes html:FILE",
        ),
    ] {
        let o = cranegrad(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Headless Chromium, if installed (CI installs it and sets CRANEGRAD_REQUIRE_CHROMIUM=1,
/// so there a missing browser fails the test).
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|b| Path::new("/usr/bin").join(b))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CRANEGRAD_REQUIRE_CHROMIUM").is_none_or(|v| v != "1"),
            "CRANEGRAD_REQUIRE_CHROMIUM=1 but no Chromium in /usr/bin"
        );
        eprintln!("skipping: no Chromium in /usr/bin (apt-get install chromium to run this test)");
    }
    found
}

#[test]
fn chromium_loads_the_page_without_errors_and_draws_the_kernels() {
    let Some(browser) = chromium() else {
        return;
    };
    let d = tmp("chromium");
    let (_, kernels) = small_page(&d);
    let shot = d.join("shot.png");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", d.join("profile").display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", d.join("small.html").display()))
        .stdout(std::process::Stdio::null())
        // To a file: a full pipe would block the browser while this test polls it.
        .stderr(std::fs::File::create(d.join("chrome.log")).unwrap())
        .spawn()
        .unwrap();
    // A browser that hangs fails the test instead of stalling the run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("Chromium did not finish within 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(d.join("chrome.log")).unwrap_or_default();
    assert!(status.success(), "{log}");
    // The script ran to its end, and nothing on the page logged an error.
    assert!(
        log.contains(&format!("cranegrad-view-ready kernels={kernels}")),
        "{log}"
    );
    for bad in ["Uncaught", "ERROR:CONSOLE", "Failed to load"] {
        assert!(!log.contains(bad), "{bad} in {log}");
    }
    // The screenshot is not blank and shows kernel boxes (their fill colour, #fff6d5).
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    let kernel_fill = pixels
        .iter()
        .filter(|p| p[..3] == [0xff, 0xf6, 0xd5])
        .count();
    let distinct: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    assert!(distinct.len() > 20, "a nearly uniform screenshot");
    assert!(kernel_fill > 2000, "kernel boxes: {kernel_fill} pixels");
    let _ = std::fs::remove_dir_all(&d);
}
