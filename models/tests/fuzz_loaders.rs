//! A proptest-driven mutation fuzzer for the model loaders.
//!
//! Each case takes a real fixture from `models/testdata` (HF folders, a sharded copy made at
//! start-up, GGUF F32/Q8_0/Q4_K_M, minimind JSON, `tokenizer.json`, GGUF vocabularies), breaks one of its files
//! (truncation, bit flips, byte overwrites, huge values in header fields, hostile JSON values in
//! configs, shard indexes and safetensors headers) and loads it in process, through
//! `Model::load` and the lower-level entry points. A case passes when every call returns, within
//! `CASE_TIME_LIMIT`, either `Ok` or an error that names a file of the case, without panicking
//! and without its thread allocating more than `PEAK_LIMIT` at once.
//!
//! The case being run sits in `$CARGO_TARGET_TMPDIR/fuzz-loaders/<fixture>/current`; a failing
//! case is moved to `failed-<n>` beside it and the failure names that folder. An abort (an
//! allocation above `ALLOC_LIMIT` is refused, which aborts) leaves the input in `current`.
//!
//! CI runs `DEFAULT_CASES` cases per fixture; `scripts/fuzz-loaders.sh` runs many more.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cranegrad_models::Model;
use cranegrad_models::loader::{
    GgufFile, detect_format, load_gguf_bytes, load_model, load_safetensors_file,
};
use cranegrad_models::tokenizer::Tokenizer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;
use serde_json::{Value, json};

mod common;

use common::td;

// ---------------------------------------------------------------- allocation accounting

/// Largest single allocation a fuzzed load may request. Refusing it aborts the process, which
/// beats letting an unchecked length reach the OS: with overcommit a huge `calloc` succeeds and
/// the machine starts swapping only when the loader writes into it.
const ALLOC_LIMIT: usize = 1 << 30;
/// Most memory one case may hold at once. The fixtures load in a few MB; the largest legitimate
/// outlier is a config raised to `MAX_POSITIONS` (2^20) positions, whose two RoPE tables take
/// 2 * 2^20 * head_dim * 4 bytes = 128 MiB for llama3-tied (head_dim 16).
const PEAK_LIMIT: usize = 512 << 20;
/// Wall-clock bound for one case; the slowest fixture loads in milliseconds.
const CASE_TIME_LIMIT: Duration = Duration::from_secs(20);
/// Cases per fixture when `PROPTEST_CASES` is unset: about 2 s per fixture on two shared cores.
const DEFAULT_CASES: u32 = 256;

thread_local! {
    /// Bytes this thread holds (allocated here, not yet freed here).
    static LIVE: Cell<usize> = const { Cell::new(0) };
    /// Highest `LIVE` since the last reset.
    static PEAK: Cell<usize> = const { Cell::new(0) };
    /// Whether this thread runs a fuzz case (only then is `ALLOC_LIMIT` enforced).
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// The system allocator plus per-thread accounting, so a case can be charged for what it holds.
struct Counting;

fn grew(n: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(n);
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn shrank(n: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(n)));
}

fn refused(size: usize) -> bool {
    size > ALLOC_LIMIT && GUARDED.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is forwarded to `System` unchanged; the bookkeeping only touches
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refused(new_size) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---------------------------------------------------------------- fixtures

/// What a fixture is loaded as.
#[derive(Clone, Copy, Debug)]
enum Entry {
    /// A HF folder: loaded as the folder, its weights file or its config.
    Folder,
    /// The file at this index of `files` is the model.
    File(usize),
    /// `tokenizer.json`.
    Tokenizer,
}

/// A fixture's files as bytes, written afresh into the case folder for every case.
struct Fixture {
    name: &'static str,
    files: Vec<(String, Vec<u8>)>,
    entry: Entry,
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(td(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn hf_folder(name: &'static str) -> Fixture {
    let files = ["config.json", "generation_config.json", "model.safetensors"]
        .iter()
        .map(|f| (f.to_string(), read(&format!("{name}/{f}"))))
        .collect();
    Fixture {
        name,
        files,
        entry: Entry::Folder,
    }
}

/// llama-tiny split into two shards plus `model.safetensors.index.json`, as HF writes them.
fn sharded() -> Fixture {
    let bytes = read("llama-tiny/model.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = st.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut shards: [Vec<(String, TensorView)>; 2] = [Vec::new(), Vec::new()];
    let mut weight_map = serde_json::Map::new();
    for (i, (name, view)) in tensors.into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i % 2 + 1);
        weight_map.insert(name.clone(), file.into());
        shards[i % 2].push((name, view));
    }
    let index = json!({"metadata": {"total_size": bytes.len()}, "weight_map": weight_map});
    let mut files = vec![
        ("config.json".into(), read("llama-tiny/config.json")),
        (
            "generation_config.json".into(),
            read("llama-tiny/generation_config.json"),
        ),
        (
            "model.safetensors.index.json".into(),
            serde_json::to_vec_pretty(&index).unwrap(),
        ),
    ];
    for (i, shard) in shards.into_iter().enumerate() {
        let name = format!("model-0000{}-of-00002.safetensors", i + 1);
        files.push((name, safetensors::serialize(shard, &None).unwrap()));
    }
    Fixture {
        name: "sharded",
        files,
        entry: Entry::Folder,
    }
}

fn single_file(name: &'static str, rel: &str) -> Fixture {
    let file = Path::new(rel).file_name().unwrap().to_str().unwrap();
    Fixture {
        name,
        files: vec![(file.to_string(), read(rel))],
        entry: Entry::File(0),
    }
}

fn tokenizer() -> Fixture {
    Fixture {
        name: "tokenizer",
        files: vec![("tokenizer.json".into(), read("llama-small/tokenizer.json"))],
        entry: Entry::Tokenizer,
    }
}

/// A GGUF vocabulary (no tensors), loaded as a tokenizer with its chat template if any.
fn gguf_vocabulary(name: &'static str, rel: &str) -> Fixture {
    Fixture {
        name,
        files: vec![("vocab.gguf".into(), read(rel))],
        entry: Entry::Tokenizer,
    }
}

// ---------------------------------------------------------------- mutations

/// One change to the bytes of a file. Positions are fractions so one strategy fits every file.
#[derive(Clone, Debug)]
enum Mutation {
    /// Keep only this fraction of the file.
    Truncate(f64),
    /// Flip one bit.
    Flip { at: f64, bit: u8 },
    /// Overwrite bytes at a position.
    Overwrite { at: f64, bytes: Vec<u8> },
    /// Write a huge little-endian integer at a 4-aligned offset of the header (counts, lengths,
    /// dims, offsets live there); in a JSON file, a number value is replaced instead.
    Huge { at: f64, value: u64, wide: bool },
    /// Replace the `pick`-th value (pre-order) of the file's JSON, or of a safetensors header.
    Json { pick: usize, value: u8 },
    /// Remove the `pick`-th object key of the file's JSON, or of a safetensors header.
    DropKey { pick: usize },
}

/// Which file of the fixture to break, how, and through which path to load it.
#[derive(Clone, Debug)]
struct Case {
    file: usize,
    mutations: Vec<Mutation>,
    spec: u8,
}

fn huge_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(1 << 63),
        Just(i64::MAX as u64),
        Just(u64::from(u32::MAX)),
        Just(1 << 32),
        Just(1 << 40),
        Just((1 << 31) + 1),
        (0u64..1 << 20),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0.0..1.0f64).prop_map(Mutation::Truncate),
        (0.0..1.0f64, 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (0.0..1.0f64, prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
        (0.0..1.0f64, huge_value(), any::<bool>()).prop_map(|(at, value, wide)| Mutation::Huge {
            at,
            value,
            wide
        }),
        (any::<usize>(), any::<u8>()).prop_map(|(pick, value)| Mutation::Json { pick, value }),
        any::<usize>().prop_map(|pick| Mutation::DropKey { pick }),
    ]
}

fn case(n_files: usize) -> impl Strategy<Value = Case> {
    (
        0..n_files,
        prop::collection::vec(mutation(), 1..4),
        any::<u8>(),
    )
        .prop_map(|(file, mutations, spec)| Case {
            file,
            mutations,
            spec,
        })
}

/// Values a careless edit or a hostile file puts where a JSON value was.
fn hostile(k: u8) -> Value {
    match k % 26 {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!(0),
        3 => json!(u64::MAX),
        4 => json!(1u64 << 31),
        5 => json!(2f64.powi(53)),
        6 => json!(1e308),
        7 => json!(-0.5),
        8 => json!("x"),
        9 => json!("../../etc/passwd"),
        10 => json!("/etc/passwd"),
        11 => json!([]),
        12 => json!({}),
        13 => json!(true),
        14 => json!([u64::MAX, u64::MAX]),
        // Shapes whose element count overflows u64.
        15 => json!([1u64 << 32, 1u64 << 32, 1u64 << 32]),
        16 => json!([0, u64::MAX]),
        17 => json!(1 << 20),
        18 => json!((1 << 20) + 1),
        19 => json!("F64"),
        20 => json!("I64"),
        21 => json!("A".repeat(300)),
        22 => json!(1.5),
        23 => json!(65),
        24 => json!(7),
        _ => json!([3, 7]),
    }
}

/// Visits every value of `v` in pre-order; `f` may replace the one it is given.
fn nth_value(v: &mut Value, n: &mut usize, f: &mut dyn FnMut(&mut Value)) -> bool {
    if *n == 0 {
        f(v);
        return true;
    }
    *n -= 1;
    match v {
        Value::Array(items) => items.iter_mut().any(|x| nth_value(x, n, f)),
        Value::Object(map) => map.values_mut().any(|x| nth_value(x, n, f)),
        _ => false,
    }
}

fn count_values(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(count_values).sum(),
        Value::Object(map) => map.values().map(count_values).sum(),
        _ => 0,
    }
}

/// Removes the `k`-th object key of `v` in pre-order; false if there are fewer keys.
fn drop_nth_key(v: &mut Value, k: &mut usize) -> bool {
    match v {
        Value::Array(items) => items.iter_mut().any(|x| drop_nth_key(x, k)),
        Value::Object(map) => {
            if *k < map.len() {
                let key = map.keys().nth(*k).unwrap().clone();
                map.remove(&key);
                return true;
            }
            *k -= map.len();
            map.values_mut().any(|x| drop_nth_key(x, k))
        }
        _ => false,
    }
}

fn mutate_json(doc: &mut Value, m: &Mutation) {
    match *m {
        Mutation::Json { pick, value } => {
            let mut n = pick % count_values(doc);
            nth_value(doc, &mut n, &mut |v| *v = hostile(value));
        }
        Mutation::Huge { at, value, .. } => {
            let mut n = (at * count_values(doc) as f64) as usize;
            nth_value(doc, &mut n, &mut |v| *v = json!(value));
        }
        Mutation::DropKey { pick } => {
            let mut probe = usize::MAX;
            drop_nth_key(&mut doc.clone(), &mut probe);
            let keys = usize::MAX - probe;
            if keys > 0 {
                drop_nth_key(doc, &mut (pick % keys));
            }
        }
        _ => {}
    }
}

fn at(len: usize, frac: f64) -> usize {
    ((len as f64 * frac) as usize).min(len.saturating_sub(1))
}

/// Where a binary file's header ends (mutating data bytes only changes weight values).
fn header_len(bytes: &[u8], name: &str) -> usize {
    if name.ends_with(".gguf") {
        GgufFile::parse(bytes, Path::new(name))
            .map(|g| g.data_offset as usize)
            .unwrap_or(bytes.len())
    } else if let Some(n) = bytes.first_chunk::<8>() {
        (8 + u64::from_le_bytes(*n) as usize).min(bytes.len())
    } else {
        bytes.len()
    }
}

fn mutate_bytes(bytes: &mut Vec<u8>, name: &str, m: &Mutation) {
    let is_json = name.ends_with(".json");
    let is_safetensors = name.ends_with(".safetensors");
    match m {
        Mutation::Truncate(f) => bytes.truncate((bytes.len() as f64 * f) as usize),
        _ if bytes.is_empty() => {}
        Mutation::Flip { at: f, bit } => {
            // Binary files: aim at the header, where a flip changes structure, not a weight.
            let span = if is_json {
                bytes.len()
            } else {
                header_len(bytes, name)
            };
            let i = at(span.max(1), *f);
            bytes[i] ^= 1 << bit;
        }
        Mutation::Overwrite { at: f, bytes: new } => {
            let span = if is_json {
                bytes.len()
            } else {
                header_len(bytes, name)
            };
            let i = at(span.max(1), *f);
            let end = (i + new.len()).min(bytes.len());
            bytes[i..end].copy_from_slice(&new[..end - i]);
        }
        Mutation::Huge { at: f, value, wide } if !is_json => {
            let span = header_len(bytes, name);
            let i = at(span.max(1), *f) & !3;
            let le = value.to_le_bytes();
            let w = if *wide { 8 } else { 4 };
            let end = (i + w).min(bytes.len());
            bytes[i..end].copy_from_slice(&le[..end - i]);
        }
        _ if is_json => {
            if let Ok(mut doc) = serde_json::from_slice::<Value>(bytes) {
                mutate_json(&mut doc, m);
                *bytes = serde_json::to_vec(&doc).unwrap();
            }
        }
        _ if is_safetensors => mutate_safetensors_header(bytes, m),
        _ => {}
    }
}

/// Applies a JSON mutation to a safetensors header and re-frames the file around it.
fn mutate_safetensors_header(bytes: &mut Vec<u8>, m: &Mutation) {
    let Some(n) = bytes
        .first_chunk::<8>()
        .map(|n| u64::from_le_bytes(*n) as usize)
    else {
        return;
    };
    let Some(header) = bytes.get(8..8 + n) else {
        return;
    };
    let Ok(mut doc) = serde_json::from_slice::<Value>(header) else {
        return;
    };
    mutate_json(&mut doc, m);
    let new_header = serde_json::to_vec(&doc).unwrap();
    let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&new_header);
    out.extend_from_slice(&bytes[8 + n..]);
    *bytes = out;
}

// ---------------------------------------------------------------- running one case

fn case_root(fixture: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-loaders")
        .join(fixture)
}

/// Writes the fixture with `case` applied into `current`, returning that folder.
fn write_case(fx: &Fixture, case: &Case) -> PathBuf {
    let dir = case_root(fx.name).join("current");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, (name, bytes)) in fx.files.iter().enumerate() {
        let mut bytes = bytes.clone();
        if i == case.file {
            for m in &case.mutations {
                mutate_bytes(&mut bytes, name, m);
            }
        }
        std::fs::write(dir.join(name), &bytes).unwrap();
    }
    dir
}

/// Loads the case through every entry point that applies; returns an error text when an error
/// fails to name the case's folder or file (the user could not tell what to fix).
fn load_everything(fx_entry: Entry, files: Vec<String>, spec: u8, dir: PathBuf) -> Vec<String> {
    let mut unnamed = Vec::new();
    let mut check = |what: &str, err: Option<String>| {
        if let Some(e) = err
            && !e.contains(&*dir.to_string_lossy())
        {
            unnamed.push(format!("{what}: {e}"));
        }
    };
    match fx_entry {
        Entry::Folder => {
            let target = match spec % 4 {
                0 | 1 => dir.clone(),
                2 => dir.join("config.json"),
                _ => dir.join(&files[files.len() - 1]),
            };
            let spec = target.to_string_lossy().into_owned();
            check(
                "Model::load",
                Model::load(&spec, 0).err().map(|e| e.to_string()),
            );
            check(
                "detect_format",
                detect_format(&target).err().map(|e| e.to_string()),
            );
            for f in files.iter().filter(|f| f.ends_with(".safetensors")) {
                let r = load_safetensors_file(&dir.join(f));
                check("load_safetensors_file", r.err().map(|e| e.to_string()));
            }
        }
        Entry::File(i) => {
            let path = dir.join(&files[i]);
            let spec = path.to_string_lossy().into_owned();
            check(
                "Model::load",
                Model::load(&spec, 0).err().map(|e| e.to_string()),
            );
            check("load_model", load_model(&path).err().map(|e| e.to_string()));
            if files[i].ends_with(".gguf") {
                let bytes = std::fs::read(&path).unwrap();
                let r = load_gguf_bytes(&bytes, &path);
                check("load_gguf_bytes", r.err().map(|e| e.to_string()));
                // Every tensor, including those `load_gguf` would not reach past an early error.
                if let Ok(g) = GgufFile::parse(&bytes, &path) {
                    for t in &g.tensors {
                        let r = g.read_tensor(&bytes, t);
                        check("read_tensor", r.err().map(|e| e.to_string()));
                    }
                }
            }
        }
        Entry::Tokenizer => {
            let path = dir.join(&files[0]);
            match Tokenizer::from_file(&path) {
                Ok(t) => {
                    if let Ok(ids) = t.encode("Hello, world! ünïcödé 123 <|im_start|><s>") {
                        let _ = t.decode_bytes(&ids);
                    }
                }
                Err(e) => check("Tokenizer::from_file", Some(e.to_string())),
            }
        }
    }
    unnamed
}

/// Moves the failing case aside and returns the failure text naming where it is.
fn keep(fx: &Fixture, dir: &Path, why: String) -> TestCaseError {
    static N: AtomicUsize = AtomicUsize::new(0);
    let kept = case_root(fx.name).join(format!(
        "failed-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&kept);
    let saved = match std::fs::rename(dir, &kept) {
        Ok(()) => kept.display().to_string(),
        Err(e) => format!("(could not keep {}: {e})", dir.display()),
    };
    TestCaseError::fail(format!("{why}; input kept in {saved}"))
}

fn run_case(fx: &Fixture, case: &Case) -> Result<(), TestCaseError> {
    let dir = write_case(fx, case);
    let files: Vec<String> = fx.files.iter().map(|(n, _)| n.clone()).collect();
    let (entry, spec, case_dir) = (fx.entry, case.spec, dir.clone());
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    // A thread per case: the time bound is enforced from outside, and the allocation
    // accounting charges only this case.
    std::thread::Builder::new()
        .name(format!("fuzz-{}", fx.name))
        .spawn(move || {
            GUARDED.with(|g| g.set(true));
            LIVE.with(|l| l.set(0));
            PEAK.with(|p| p.set(0));
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                load_everything(entry, files, spec, case_dir)
            }));
            let peak = PEAK.with(Cell::get);
            let _ = tx.send((r, peak));
        })
        .unwrap();
    match rx.recv_timeout(CASE_TIME_LIMIT) {
        Err(_) => Err(keep(
            fx,
            &dir,
            format!("no answer within {CASE_TIME_LIMIT:?} (hang?)"),
        )),
        Ok((Err(panic), _)) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(keep(fx, &dir, format!("panicked: {msg}")))
        }
        Ok((Ok(_), peak)) if peak > PEAK_LIMIT => Err(keep(
            fx,
            &dir,
            format!(
                "held {} MiB at once (limit {} MiB) in {:?}",
                peak >> 20,
                PEAK_LIMIT >> 20,
                started.elapsed()
            ),
        )),
        Ok((Ok(unnamed), _)) if !unnamed.is_empty() => Err(keep(
            fx,
            &dir,
            format!("errors that name no file: {unnamed:?}"),
        )),
        Ok(_) => Ok(()),
    }
}

fn config() -> Config {
    let mut config = Config {
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    config
}

fn fuzz(fx: Fixture) {
    let mut runner = TestRunner::new(config());
    let result = runner.run(&case(fx.files.len()), |c| run_case(&fx, &c));
    match result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(case_root(fx.name).join("current"));
        }
        Err(TestError::Fail(why, case)) => {
            panic!("{}: {why}\nminimal case: {case:#?}", fx.name)
        }
        Err(e) => panic!("{}: {e}", fx.name),
    }
}

/// The untouched fixtures must load: otherwise every case fails for the wrong reason.
#[test]
fn fixtures_load_unmutated() {
    for fx in [
        hf_folder("llama-tiny"),
        sharded(),
        single_file("gguf-f32", "llama-tiny/model-f32.gguf"),
        single_file("minimind", "llama-tiny/minimind.json"),
    ] {
        // Its own folder: the fuzz tests run in parallel on the same fixture names.
        let fx = Fixture {
            name: "unmutated",
            ..fx
        };
        let case = Case {
            file: 0,
            mutations: Vec::new(),
            spec: 0,
        };
        let dir = write_case(&fx, &case);
        let spec = match fx.entry {
            Entry::File(i) => dir.join(&fx.files[i].0),
            _ => dir.clone(),
        };
        Model::load(&spec.to_string_lossy(), 0).unwrap_or_else(|e| panic!("{}: {e}", fx.name));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn fuzz_hf_llama_tiny() {
    fuzz(hf_folder("llama-tiny"));
}

#[test]
fn fuzz_hf_llama3_tied() {
    fuzz(hf_folder("llama3-tied"));
}

#[test]
fn fuzz_hf_gpt2_tiny() {
    fuzz(hf_folder("gpt2-tiny"));
}

#[test]
fn fuzz_sharded_llama_tiny() {
    fuzz(sharded());
}

#[test]
fn fuzz_gguf_f32() {
    fuzz(single_file("gguf-f32", "llama-tiny/model-f32.gguf"));
}

#[test]
fn fuzz_gguf_q8_0() {
    fuzz(single_file("gguf-q8_0", "llama-tiny/model-q8_0.gguf"));
}

#[test]
fn fuzz_gguf_k_quant_mix() {
    fuzz(single_file(
        "gguf-q4_k_m",
        "llama-small-quant/model-q4_k_m.gguf",
    ));
}

#[test]
fn fuzz_minimind() {
    fuzz(single_file("minimind", "llama-tiny/minimind.json"));
}

#[test]
fn fuzz_tokenizer_json() {
    fuzz(tokenizer());
}

#[test]
fn fuzz_gguf_sentencepiece_vocabulary() {
    fuzz(gguf_vocabulary("vocab-spm", "tokenizers/spm.gguf"));
}

#[test]
fn fuzz_gguf_bpe_vocabulary() {
    fuzz(gguf_vocabulary("vocab-bpe", "tokenizers/llama-bpe.gguf"));
}
