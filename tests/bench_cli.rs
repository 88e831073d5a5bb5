//! `cranegrad bench` as a harness: every documented JSON key, cold-start parts measured
//! separately, per-request generation figures, the per-kernel profile, the context check before
//! any work, prepacking, and `--compare` catching a planted numerical mismatch. These check the
//! harness's logic, not speed.

use std::path::PathBuf;
use std::process::{Command, Output};

use cranegrad_graph::{Bindings, HostData};
use cranegrad_models::Model;
use cranegrad_runtime::{Feeds, Session, SessionOptions};

fn bench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cranegrad"));
    c.arg("bench");
    c.env_remove("CRANEGRAD_PLANT_MISMATCH");
    // Cold-start figures are of a cold process: no kernels from the disk cache.
    c.env("CRANEGRAD_NO_DISK_CACHE", "1");
    c
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cranegrad-bench-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

fn explain(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn num(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} is not a number in {v}"))
}

/// The CLI reference's `cranegrad bench` section (docs/cli.md).
fn readme_bench_section() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md")).unwrap();
    let start = readme.find("## `cranegrad bench`").expect("bench section");
    let rest = &readme[start + 1..];
    let end = rest.find("\n## ").map_or(rest.len(), |e| e + 1);
    rest[..end].to_string()
}

#[test]
fn json_has_every_documented_key_and_the_cold_parts_are_measured_separately() {
    let d = tmp("keys");
    let (out, trace, plot) = (d.join("b.json"), d.join("trace.json"), d.join("lat.svg"));
    let o = bench()
        // One thread: on a shared machine a pool thread waiting for a core can make a warm
        // forward as slow as a cold one, which is not what this test is about.
        .args([
            "--model",
            "small",
            "--iters",
            "3",
            "--warmup",
            "1",
            "--threads",
            "1",
        ])
        .args(["--requests", "3", "--gen-len", "4", "--profile", "--trace"])
        .arg(&trace)
        .arg("--plot")
        .arg(&plot)
        .arg("--json")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(code(&o), Some(0), "{}", explain(&o));
    // Progress bars draw only to a terminal: a piped stderr stays clean.
    assert!(o.stderr.is_empty(), "{}", explain(&o));
    let v = json(&out);
    for k in [
        "batch_size",
        "prompt_len",
        "gen_len",
        "threads",
        "load_ms",
        "load_file_ms",
        "pack_ms",
        "packed_weights",
        "packed_bytes",
        "raw_freed_bytes",
        "cold_ms",
        "cold_session_ms",
        "cold_build_ms",
        "cold_hash_ms",
        "cold_passes_ms",
        "cold_setup_ms",
        "cold_execute_ms",
        "compile_ms",
        "kernels_compiled",
        "compile_us_min",
        "compile_us_median",
        "compile_us_max",
        "warm_min_ms",
        "warm_median_ms",
        "warm_p90_ms",
        "ttft_ms",
        "decode_ms_per_token",
        "tokens_per_s",
        "decode_weight_gbps",
        "peak_rss_bytes",
        "weights_bytes",
        "weights_bytes_f32",
        "weights_bytes_bf16",
        "weights_bytes_f16",
        "weights_bytes_q8",
        "weights_bytes_q4",
        "activations_bytes",
        "kv_cache_bytes",
        "kernels_unfused",
        "kernels_fused",
        "kernels_fused_decode",
        "cache_hits",
        "cache_misses",
        "forward_gflops",
        "forward_gbps",
        "peak_gflops",
        "dram_gbps",
        "dram_read_gbps",
    ] {
        num(&v, k);
    }
    assert_eq!(v["model"], "small");
    assert!(v["compare"].as_array().unwrap().is_empty());

    // Every key the harness writes is documented in the README's bench section.
    let doc = readme_bench_section();
    for k in v.as_object().unwrap().keys() {
        assert!(doc.contains(&format!("`{k}`")), "{k} is not documented");
    }
    for k in v["requests"][0].as_object().unwrap().keys() {
        assert!(
            doc.contains(&format!("`{k}`")),
            "requests.{k} is not documented"
        );
    }

    // The cold start is timed in disjoint parts that add up to the whole: none is counted
    // twice and graph build and compilation are both in it.
    let cold = num(&v, "cold_ms");
    assert!(cold >= num(&v, "warm_median_ms"), "{v}");
    assert!(
        cold >= num(&v, "cold_build_ms") + num(&v, "compile_ms"),
        "{v}"
    );
    assert!(num(&v, "cold_build_ms") > 0.0 && num(&v, "compile_ms") > 0.0);
    let parts: f64 = [
        "cold_session_ms",
        "cold_build_ms",
        "cold_hash_ms",
        "cold_passes_ms",
        "compile_ms",
        "cold_setup_ms",
        "cold_execute_ms",
    ]
    .iter()
    .map(|k| num(&v, k))
    .sum();
    assert!(
        (parts - cold).abs() < 1e-6 * cold.max(1.0),
        "{parts} vs {cold}: {v}"
    );

    // Per-kernel compile times bracket the total.
    let n = num(&v, "kernels_compiled");
    let (lo, mid, hi) = (
        num(&v, "compile_us_min"),
        num(&v, "compile_us_median"),
        num(&v, "compile_us_max"),
    );
    assert!(n >= 1.0 && n <= num(&v, "kernels_fused"), "{v}");
    assert!(0.0 < lo && lo <= mid && mid <= hi, "{v}");
    let total_us = num(&v, "compile_ms") * 1e3;
    assert!(
        n * lo <= total_us * (1.0 + 1e-9) && total_us <= n * hi * (1.0 + 1e-9),
        "{v}"
    );

    // Packing is part of load, measured on its own.
    assert!(num(&v, "packed_weights") >= 1.0 && num(&v, "packed_bytes") > 0.0);
    // Without --compare the raw copies of packed weights are freed (and generation still
    // ran on the packed panels).
    assert!(num(&v, "raw_freed_bytes") > 0.0, "{v}");
    assert!(num(&v, "pack_ms") > 0.0);
    let load = num(&v, "load_file_ms") + num(&v, "pack_ms");
    assert!(
        (num(&v, "load_ms") - load).abs() < 1e-9 * load.max(1.0),
        "{v}"
    );

    // One entry per request; the aggregate is over the warm ones (after the first).
    let reqs = v["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 3);
    let b = num(&v, "batch_size");
    for r in reqs {
        assert_eq!(
            r["decode_steps"], 3,
            "gen-len 4 is a prefill and 3 steps: {r}"
        );
        let d = num(r, "decode_ms_per_token");
        assert!((num(r, "tokens_per_s") - b * 1000.0 / d).abs() < 1e-6 * num(r, "tokens_per_s"));
        num(r, "ttft_ms");
        num(r, "kernels_compiled");
    }
    assert!(
        num(&reqs[0], "kernels_compiled") >= 1.0,
        "request 1 compiles"
    );
    assert_eq!(reqs[1]["kernels_compiled"], 0);
    let warm_ttft: Vec<f64> = reqs[1..].iter().map(|r| num(r, "ttft_ms")).collect();
    assert!(warm_ttft.contains(&num(&v, "ttft_ms")), "{v}");
    let ttft = num(&v, "ttft_ms");
    assert!(warm_ttft.iter().cloned().fold(f64::INFINITY, f64::min) <= ttft);
    assert!(ttft <= warm_ttft.iter().cloned().fold(0.0, f64::max));

    // The profile has one row per compiled kernel, sorted by total time, covering every launch
    // of the forward.
    let stdout = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<(usize, f64, f64)> = stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("kernel "))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].trim_end_matches('%').parse().unwrap(),
            )
        })
        .collect();
    assert!(!rows.is_empty(), "{stdout}");
    let calls: usize = rows.iter().map(|r| r.0).sum();
    assert_eq!(calls as f64, num(&v, "kernels_fused"), "{stdout}");
    assert!(
        rows.len() < calls,
        "the per-layer kernels share rows: {stdout}"
    );
    assert!(rows.windows(2).all(|w| w[0].1 >= w[1].1), "{stdout}");
    let pct: f64 = rows.iter().map(|r| r.2).sum();
    assert!(
        pct > 0.0 && pct <= 100.0 + 0.1 * rows.len() as f64,
        "{stdout}"
    );
    let t = json(&trace);
    assert_eq!(t["traceEvents"].as_array().unwrap().len(), calls);

    // The plot marks the cold first run with its value.
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.trim_start().starts_with("<svg"));
    assert!(svg.contains(&format!("cold {cold:.2} ms")), "{svg}");
}

/// The names the README's `--json` paragraph of the bench section lists: every backticked
/// name, `{a, b}` groups split, options (`--json`) left out.
fn readme_bench_json_names() -> std::collections::BTreeSet<String> {
    let doc = readme_bench_section();
    let start = doc
        .find("`--json` writes one flat object")
        .expect("the --json paragraph of the bench section");
    let para = &doc[start..];
    let para = &para[..para.find("\n\n").unwrap_or(para.len())];
    para.split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|span| span.trim_matches(['{', '}']).split(','))
        .map(|name| name.trim().to_string())
        .filter(|name| !name.starts_with("--"))
        .collect()
}

#[test]
fn json_keys_are_exactly_the_readme_list() {
    let d = tmp("keyset");
    let out = d.join("b.json");
    let o = bench()
        .args(["--model", "small", "--iters", "1", "--warmup", "0"])
        .args(["--requests", "2", "--gen-len", "2", "--compare", "--json"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(code(&o), Some(0), "{}", explain(&o));
    let v = json(&out);
    let keys = |x: &serde_json::Value| -> Vec<String> {
        x.as_object()
            .unwrap_or_else(|| panic!("not an object: {x}"))
            .keys()
            .cloned()
            .collect()
    };
    let mut written: std::collections::BTreeSet<String> = keys(&v).into_iter().collect();
    written.extend(keys(&v["requests"][0]));
    written.extend(keys(&v["compare"][0]));
    for c in v["compare"].as_array().unwrap() {
        written.insert(c["backend"].as_str().unwrap().to_string());
    }
    let documented = readme_bench_json_names();
    let undocumented: Vec<_> = written.difference(&documented).collect();
    let unwritten: Vec<_> = documented.difference(&written).collect();
    assert!(
        undocumented.is_empty() && unwritten.is_empty(),
        "written but not in the README: {undocumented:?}; in the README but not written: \
         {unwritten:?}"
    );
    // Top-level values are flat: numbers, strings, null, or the two documented lists.
    for (k, x) in v.as_object().unwrap() {
        assert!(
            !x.is_object() && (!x.is_array() || k == "requests" || k == "compare"),
            "{k} is not flat: {x}"
        );
    }
}

#[test]
fn gen_len_zero_leaves_generation_keys_null() {
    let d = tmp("gen0");
    let out = d.join("b.json");
    let o = bench()
        .args(["--model", "small", "--iters", "1", "--warmup", "0"])
        .args(["--gen-len", "0", "--json"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(code(&o), Some(0), "{}", explain(&o));
    let v = json(&out);
    for k in ["ttft_ms", "decode_ms_per_token", "tokens_per_s", "requests"] {
        assert!(v[k].is_null(), "{k} in {v}");
    }
    num(&v, "cold_build_ms");
}

#[test]
fn compare_flags_a_planted_mismatch() {
    let d = tmp("plant");
    let out = d.join("b.json");
    let run = |plant: &str| {
        bench()
            .args(["--model", "small", "--iters", "2", "--warmup", "0"])
            .args(["--gen-len", "0", "--compare", "--json"])
            .arg(&out)
            .env("CRANEGRAD_PLANT_MISMATCH", plant)
            .output()
            .unwrap()
    };
    let o = run("0.5");
    assert_eq!(code(&o), Some(1), "{}", explain(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let flagged: Vec<&str> = stdout.lines().filter(|l| l.contains("MISMATCH")).collect();
    assert_eq!(flagged.len(), 1, "{stdout}");
    assert!(flagged[0].trim_start().starts_with("unfused"), "{stdout}");
    let v = json(&out);
    let c = v["compare"].as_array().unwrap();
    let names: Vec<&str> = c.iter().map(|x| x["backend"].as_str().unwrap()).collect();
    assert_eq!(names, ["fused", "unfused", "interpreter"]);
    assert_eq!(c[1]["mismatch"], true);
    // The planted 0.5 is the difference found (the backends otherwise agree to ~1e-6).
    assert!((num(&c[1], "max_abs_diff") - 0.5).abs() < 1e-3, "{v}");
    assert_eq!(c[0]["mismatch"], false);
    assert_eq!(c[2]["mismatch"], false);
    for x in c {
        assert!(num(x, "runs") >= 1.0, "{x}");
    }

    // Below the 1e-3 tolerance a difference is reported but not flagged.
    let o = run("0.0002");
    assert_eq!(code(&o), Some(0), "{}", explain(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("MISMATCH"));
    let v = json(&out);
    let diff = num(&v["compare"][1], "max_abs_diff");
    assert!((1.9e-4..1e-3).contains(&diff), "{v}");

    // A hook value that is not a number is a usage error, not a silent pass.
    assert_eq!(code(&run("lots")), Some(2));
}

#[test]
fn a_context_overflow_fails_before_any_work() {
    let d = tmp("ctx");
    let llama_tiny = concat!(env!("CARGO_MANIFEST_DIR"), "/models/testdata/llama-tiny");
    // small has 2048 positions, the llama-tiny files 128.
    for (model, prompt) in [("small", "2040"), (llama_tiny, "120")] {
        let trace = d.join("trace.json");
        let _ = std::fs::remove_file(&trace);
        let o = bench()
            .args(["--model", model, "--prompt-len", prompt, "--gen-len", "16"])
            .args(["--profile", "--trace"])
            .arg(&trace)
            .output()
            .unwrap();
        assert_eq!(code(&o), Some(2), "{}", explain(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("exceeds") && err.contains(prompt), "{err}");
        // No forward ran: nothing printed, no profile trace written.
        assert!(o.stdout.is_empty(), "{}", explain(&o));
        assert!(!trace.exists(), "{model}: a forward ran before the check");
    }
}

#[test]
fn zero_requests_is_refused() {
    let o = bench()
        .args(["--model", "small", "--requests", "0"])
        .output()
        .unwrap();
    assert_eq!(code(&o), Some(2), "{}", explain(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--requests"));
}

#[test]
fn prepack_leaves_nothing_for_the_first_run_and_changes_no_result() {
    let model = Model::load("small", 0).unwrap();
    let (_g, out) = model.forward_graph(2, 5).unwrap();
    let tokens: Vec<i32> = (0..10).map(|i| (i * 37 % model.vocab()) as i32).collect();
    let mut feeds = Feeds::new();
    feeds.insert("tokens".into(), HostData::from(tokens));
    let none = Bindings::new();
    let opts = SessionOptions {
        fuse: true,
        threads: 2,
    };

    let mut s = Session::new(opts).unwrap();
    s.prepare(&[&out]).unwrap();
    let compiled = s.last_report().cache_misses;
    let p = s.prepack(&[&out], &feeds).unwrap();
    assert!(
        p.matrices >= 1 && p.packed >= 1 && p.packed <= p.matrices,
        "{p:?}"
    );
    assert_eq!(s.packed(), (p.packed, p.bytes));
    // prepack is not a realize: the report of the prepare stays.
    assert_eq!(s.last_report().cache_misses, compiled);
    // A second call finds every copy cached.
    assert_eq!(s.prepack(&[&out], &feeds).unwrap().packed, 0);
    let a = s.realize(&[&out], &feeds, &none).unwrap()[0].to_f32();
    assert_eq!(s.packed(), (p.packed, p.bytes), "the first run packed more");

    let mut fresh = Session::new(opts).unwrap();
    let b = fresh.realize(&[&out], &feeds, &none).unwrap()[0].to_f32();
    assert_eq!(fresh.packed().0, p.packed);
    assert_eq!(a, b, "prepacked and lazily packed runs differ");
}

/// llama-bench-style rows: a sweep over comma lists gives a `ppP` and a `tgN` row per
/// combination, in every row format; one combination with `-o json` is the flat report.
#[test]
fn sweeps_give_llama_bench_rows_in_every_format() {
    let rows = bench()
        .args([
            "-m", "small", "-p", "8,16", "-n", "4", "-t", "1", "-r", "2", "-o", "jsonl",
        ])
        .output()
        .unwrap();
    assert_eq!(
        rows.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rows.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(rows.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tests: Vec<&str> = lines.iter().map(|r| r["test"].as_str().unwrap()).collect();
    assert_eq!(tests, ["pp8", "tg4", "pp16", "tg4"]);
    for r in &lines {
        assert!(r["tokens_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["repetitions"], 2);
        assert_eq!(r["threads"], 1);
    }
    let csv = bench()
        .args(["-m", "small", "-p", "8", "-n", "2", "-r", "1", "-o", "csv"])
        .output()
        .unwrap();
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert!(
        csv.starts_with("model,params,batch_size,threads,test,tokens_per_s"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let md = bench()
        .args(["-m", "small", "-p", "8", "-n", "2", "-r", "1", "-o", "md"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&md.stdout).contains("| small | "));
    let flat = bench()
        .args(["-m", "small", "--gen-len", "0", "-o", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&flat.stdout).unwrap();
    assert!(v["warm_median_ms"].is_number(), "{v}");
    // The probe is skippable: its figures are then null, not made up.
    let quick = bench()
        .args(["-m", "small", "--gen-len", "0", "--no-probe", "-o", "json"])
        .output()
        .unwrap();
    let q: serde_json::Value = serde_json::from_slice(&quick.stdout).unwrap();
    assert!(
        q["peak_gflops"].is_null() && q["dram_read_gbps"].is_null(),
        "{q}"
    );
    assert!(String::from_utf8_lossy(&quick.stderr).contains("not measured (--no-probe)"));
}

#[test]
fn one_forward_flags_are_refused_with_rows() {
    for (args, flag) in [
        (&["-p", "4,8", "--colds"][..], "--colds"),
        (
            &["-o", "csv", "--memory-plot", "m.svg"][..],
            "--memory-plot",
        ),
        (
            &["-t", "1,2", "--dump-graph=html:p.html"][..],
            "--dump-graph",
        ),
    ] {
        let o = bench().args(args).output().unwrap();
        assert_eq!(code(&o), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(flag) && err.contains("one combination"),
            "{err}"
        );
    }
}
