//! Weights and schedules on disk as a user meets them: a second process maps a preset's
//! weights and its packed panels and reads its schedule instead of generating, packing and
//! lowering, and computes the same; damaged and truncated entries are rebuilt and a golden
//! still holds; concurrent first runs both succeed; an unusable cache directory is a warning
//! and the run goes on; `bench --colds` shows the three starts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cranegrad(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cranegrad"));
    c.env("CRANEGRAD_VERIFY", "1")
        .env_remove("CRANEGRAD_NO_DISK_CACHE")
        .args(args)
        .arg("--cache-dir")
        .arg(dir);
    c
}

fn ok(o: Output, args: &[&str]) -> Output {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn run(dir: &Path, args: &[&str]) -> Output {
    ok(cranegrad(dir, args).output().unwrap(), args)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cranegrad-wdisk-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn weight_entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("weights"))
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "weights"))
                .collect()
        })
        .unwrap_or_default()
}

/// A short `bench` of the small preset with `extra` flags: its table and JSON report.
fn bench_with(dir: &Path, extra: &[&str]) -> (String, serde_json::Value) {
    let json = dir.with_extension(format!("{}.json", weight_entries(dir).len()));
    let mut args = vec!["bench", "-m", "small", "-n", "2", "--iters", "1"];
    args.extend([
        "--requests",
        "1",
        "--no-probe",
        "--json",
        json.to_str().unwrap(),
    ]);
    args.extend(extra);
    let o = run(dir, &args);
    let v = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    (String::from_utf8_lossy(&o.stdout).into_owned(), v)
}

/// `bench` of the small preset, its JSON report.
fn bench(dir: &Path) -> serde_json::Value {
    bench_with(dir, &[]).1
}

fn generated(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["generate", "-m", "small", "-p", "Hello", "-n", "12"];
    args.extend(extra);
    String::from_utf8(run(dir, &args).stdout).unwrap()
}

#[test]
fn a_second_process_maps_its_weights_and_packs_nothing() {
    let d = tmp("warm");
    let first = bench(&d);
    assert_eq!(first["weights_mapped"], false);
    assert_eq!(first["packed_mapped"], 0);
    let packed = first["packed_weights"].as_u64().unwrap();
    assert!(packed > 0);
    // The weights and one entry per packed matrix.
    assert_eq!(weight_entries(&d).len() as u64, 1 + packed);
    let second = bench(&d);
    assert_eq!(second["weights_mapped"], true);
    assert_eq!(second["packed_mapped"].as_u64(), Some(packed));
    assert_eq!(second["cache_disk_hits"], second["cache_misses"]);
    assert_eq!(first["cold_schedule_from_disk"], false);
    assert_eq!(second["cold_schedule_from_disk"], true, "no pass ran");
    // Compiled, generated and packed here, or all mapped from disk: the same text.
    assert_eq!(generated(&d, &["--no-disk-cache"]), generated(&d, &[]));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn damaged_entries_are_rebuilt_and_the_golden_still_holds() {
    let d = tmp("damaged");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/testdata/llama-small-quant");
    let model = data.join("model-q8_0.gguf");
    let golden = data.join("golden-q8_0.safetensors");
    let args = [
        "golden",
        "verify",
        "--model",
        model.to_str().unwrap(),
        "--golden",
        golden.to_str().unwrap(),
    ];
    run(&d, &args);
    let entries = weight_entries(&d);
    assert!(!entries.is_empty(), "a file's packed panels are cached");
    type Damage = fn(&mut Vec<u8>);
    let damages: [(Damage, &str); 2] = [
        (|b| *b.last_mut().unwrap() ^= 0x40, "checksum mismatch"),
        (|b| b.truncate(b.len() / 2), "truncated"),
    ];
    for (damage, why) in damages {
        for p in &weight_entries(&d) {
            let mut b = std::fs::read(p).unwrap();
            damage(&mut b);
            std::fs::write(p, &b).unwrap();
        }
        let o = run(&d, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(why) && err.contains("rebuilding it"), "{err}");
        assert_eq!(weight_entries(&d).len(), entries.len(), "rebuilt");
    }
    // Rebuilt entries are whole: no warning now.
    let o = run(&d, &args);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("warning"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn two_first_runs_at_once_both_succeed_and_leave_whole_entries() {
    let d = tmp("race");
    let args = ["generate", "-m", "small", "-p", "Hi", "-n", "4"];
    let children: Vec<_> = (0..2)
        .map(|_| {
            cranegrad(&d, &args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<String> = children
        .into_iter()
        .map(|c| String::from_utf8(ok(c.wait_with_output().unwrap(), &args).stdout).unwrap())
        .collect();
    assert_eq!(outs[0], outs[1]);
    let third = bench(&d);
    assert_eq!(third["weights_mapped"], true);
    assert_eq!(third["packed_mapped"], third["packed_weights"]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_unusable_cache_directory_is_a_warning_and_the_run_goes_on() {
    let f = tmp("plainfile");
    std::fs::write(&f, b"").unwrap();
    let o = run(
        &f.join("cache"),
        &["generate", "-m", "small", "-p", "Hi", "-n", "4"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("weights disk cache off") && err.contains("cannot create"),
        "{err}"
    );
    assert!(!o.stdout.is_empty());
    let _ = std::fs::remove_file(&f);
}

#[test]
fn bench_colds_times_an_empty_start_a_disk_start_and_a_warm_one() {
    let d = tmp("colds");
    let (table, v) = bench_with(&d, &["--colds"]);
    assert!(
        table.contains("start, empty") && table.contains("start, disk"),
        "{table}"
    );
    for k in [
        "start_empty_load_ms",
        "start_empty_first_ms",
        "start_disk_load_ms",
    ] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k} in {v}");
    }
    assert!(v["start_warm_first_ms"].as_f64().is_some_and(|x| x > 0.0));
    assert_eq!(v["start_disk_weights_mapped"], true);
    assert_eq!(v["start_disk_packed_mapped"], v["packed_weights"]);
    assert_eq!(v["start_disk_schedule_from_disk"], true);
    assert!(
        v["start_disk_kernels_from_disk"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_bf16_run_and_an_f32_run_of_one_preset_share_a_cache_without_mixing() {
    // The bf16 run caches a schedule with 16-bit panels; the same graph over f32 weights must
    // not load it (its key names the weights' 16-bit format).
    let d = tmp("mixed");
    let (_, bf16) = bench_with(&d, &["--quantize", "bf16"]);
    let (_, f32_run) = bench_with(&d, &[]);
    assert_eq!(f32_run["cold_schedule_from_disk"], false, "another key");
    assert_eq!(bf16["cold_schedule_from_disk"], false);
    let (_, again) = bench_with(&d, &["--quantize", "bf16"]);
    assert_eq!(again["cold_schedule_from_disk"], true);
    let _ = std::fs::remove_dir_all(&d);
}
