//! Weights on disk, mapped instead of rebuilt: a preset's generated tensors and packed GEMM
//! panels, so a second process "loads" by mapping files the first one wrote. Entries are
//! large (a 1B model's panels are gigabytes), so the process that builds one keeps using its
//! own copy and streams it to a temporary file renamed into place (concurrent writers never
//! expose half an entry); later processes map it, never copy it. Each entry's header holds its key's hash, the
//! cranegrad version and an xxh3 hash per chunk of the payload, all checked (chunks in
//! parallel) before the payload is used: damage, truncation and another version's entry are
//! detected, the entry removed and rebuilt. The directory is capped in size, least recently
//! used entries evicted first, and refused if another user owns or may write it, as the
//! kernel cache is.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use cranegrad_codegen::disk_cache::{EntryDir, unsafe_reason, warn_once};
use memmap2::{Mmap, MmapOptions};
use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// The first bytes of every entry.
const MAGIC: &[u8; 8] = b"CGWEIGHT";
/// Layout version of an entry (bump when the header changes).
const FORMAT: u32 = 1;
/// Header bytes: the payload starts on a page boundary, so mapped payloads are aligned for
/// any load the kernels do.
pub const HEADER_BYTES: usize = 4096;
/// Payload bytes per checksum chunk (at least; large payloads use larger chunks so every
/// chunk's hash fits in the header).
const CHUNK_BYTES: usize = 32 << 20;
/// Most chunk hashes a header holds.
const MAX_CHUNKS: usize = 384;
/// Default size cap of the weights directory.
pub const DEFAULT_MAX_BYTES: u64 = 32 << 30;

/// A weights cache directory.
#[derive(Clone, Debug)]
pub struct WeightCache {
    entries: EntryDir,
}

/// Entries a process read from the cache and wrote to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Entries mapped from disk.
    pub hits: usize,
    /// Entries written.
    pub stores: usize,
}

static GLOBAL: OnceLock<Mutex<Option<WeightCache>>> = OnceLock::new();
static HITS: AtomicUsize = AtomicUsize::new(0);
static STORES: AtomicUsize = AtomicUsize::new(0);

/// Sets the process's weights cache (`None` turns it off).
pub fn set_global(cache: Option<WeightCache>) {
    *GLOBAL
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = cache;
}

/// The process's weights cache, if any.
pub fn global() -> Option<WeightCache> {
    GLOBAL
        .get()
        .and_then(|m| m.lock().ok().and_then(|c| c.clone()))
}

/// Entries this process mapped from and wrote to any weights cache so far.
pub fn counts() -> CacheCounts {
    CacheCounts {
        hits: HITS.load(Ordering::Relaxed),
        stores: STORES.load(Ordering::Relaxed),
    }
}

/// The payload size of each checksum chunk of a `len`-byte payload.
fn chunk_bytes(len: usize) -> usize {
    CHUNK_BYTES.max(len.div_ceil(MAX_CHUNKS).next_multiple_of(4096))
}

/// xxh3 of each chunk of `payload`, hashed on all cores.
fn chunk_hashes(payload: &[u8]) -> Vec<u64> {
    let chunks: Vec<&[u8]> = payload.chunks(chunk_bytes(payload.len())).collect();
    let hashes: Vec<AtomicU64> = chunks.iter().map(|_| AtomicU64::new(0)).collect();
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(chunks.len());
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(c) = chunks.get(i) else { break };
                    hashes[i].store(xxh3_64(c), Ordering::Relaxed);
                }
            });
        }
    });
    hashes.into_iter().map(AtomicU64::into_inner).collect()
}

/// The header of an entry of `key` whose payload has these chunk hashes.
fn header(key: &str, len: usize, hashes: &[u64]) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_BYTES);
    h.extend(MAGIC);
    h.extend(FORMAT.to_le_bytes());
    h.extend(Sha256::digest(key.as_bytes()));
    let version = env!("CARGO_PKG_VERSION").as_bytes();
    h.extend((version.len() as u32).to_le_bytes());
    h.extend(version);
    h.extend((len as u64).to_le_bytes());
    h.extend((hashes.len() as u32).to_le_bytes());
    for x in hashes {
        h.extend(x.to_le_bytes());
    }
    h.resize(HEADER_BYTES, 0);
    h
}

/// Why the mapped entry `bytes` is not a whole entry of `key`, if it is not.
fn check(bytes: &[u8], key: &str) -> Result<(), String> {
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err("not a cranegrad weights entry".into());
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if u32_at(8) != FORMAT {
        return Err("from another entry format".into());
    }
    if bytes[12..44] != Sha256::digest(key.as_bytes())[..] {
        return Err("stored under another key".into());
    }
    let vlen = u32_at(44) as usize;
    let version = env!("CARGO_PKG_VERSION").as_bytes();
    if vlen != version.len() || &bytes[48..48 + vlen] != version {
        return Err("from another cranegrad version".into());
    }
    let at = 48 + vlen;
    let len = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes")) as usize;
    let n = u32_at(at + 8) as usize;
    if bytes.len() - HEADER_BYTES != len || n > MAX_CHUNKS {
        return Err("truncated".into());
    }
    let stored: Vec<u64> = (0..n)
        .map(|i| {
            let o = at + 12 + 8 * i;
            u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"))
        })
        .collect();
    if chunk_hashes(&bytes[HEADER_BYTES..]) != stored {
        return Err("damaged (checksum mismatch)".into());
    }
    Ok(())
}

/// Writes an entry's payload, hashing each chunk on the way.
pub struct PayloadWriter<'f> {
    out: std::io::BufWriter<&'f fs::File>,
    chunk: usize,
    at: usize,
    state: Xxh3,
    hashes: Vec<u64>,
}

impl PayloadWriter<'_> {
    /// Appends `bytes` to the payload.
    pub fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let room = self.chunk - self.at % self.chunk;
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.state.update(now);
            self.out.write_all(now)?;
            self.at += now.len();
            if self.at.is_multiple_of(self.chunk) {
                self.hashes.push(self.state.digest());
                self.state.reset();
            }
            bytes = rest;
        }
        Ok(())
    }

    /// Appends `n` zero bytes (padding).
    pub fn zeros(&mut self, n: usize) -> std::io::Result<()> {
        self.write(&vec![0; n])
    }

    /// Appends 4-byte words.
    pub fn words(&mut self, words: &[u32]) -> std::io::Result<()> {
        // SAFETY: any initialised u32 slice is a valid byte slice of four times the length.
        self.write(unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), words.len() * 4) })
    }
}

/// A whole entry, mapped; its payload starts at [`HEADER_BYTES`].
pub type Entry = Arc<Mmap>;

impl WeightCache {
    /// The weights cache under `root` (`root/weights`), created private (0700) if absent. An
    /// unusable or unsafe directory is an error naming why; callers warn and go on without.
    pub fn open(root: &Path, max_bytes: u64) -> Result<WeightCache, String> {
        let entries = EntryDir::open(root, "weights", "weights", max_bytes)?;
        remove_stale_temporaries(entries.dir());
        Ok(WeightCache { entries })
    }

    /// The directory and its entries.
    pub fn entries(&self) -> &EntryDir {
        &self.entries
    }

    /// The entry file of `key`.
    fn path(&self, key: &str) -> PathBuf {
        self.entries.file(key.as_bytes())
    }

    /// The entry under `key`, mapped, if it is there and whole; a damaged or foreign one is
    /// removed (with a warning) so the caller rebuilds it.
    pub fn load(&self, key: &str) -> Option<Entry> {
        let path = self.path(key);
        let file = fs::File::open(&path).ok()?;
        if let Some(why) = unsafe_reason(&path) {
            warn_once(&format!(
                "cranegrad: warning: weights cache entry {} not used: {why}",
                path.display()
            ));
            return None;
        }
        // SAFETY: entries are only ever replaced by rename, never written in place, so the
        // mapped file does not change under us (another user's tampering is refused above).
        let map = match unsafe { MmapOptions::new().populate().map(&file) } {
            Ok(m) => m,
            Err(_) => return None,
        };
        if let Err(why) = check(&map, key) {
            warn_once(&format!(
                "cranegrad: warning: weights cache entry {} is {why}; rebuilding it",
                path.display()
            ));
            let _ = fs::remove_file(&path);
            return None;
        }
        // Recently used: eviction keeps it.
        let _ = file.set_modified(SystemTime::now());
        HITS.fetch_add(1, Ordering::Relaxed);
        Some(Arc::new(map))
    }

    /// Writes an entry of `len` payload bytes, which `write` writes in order, through a
    /// temporary file renamed into place. False (and nothing left behind) when the directory
    /// cannot take it or `write` wrote another length: the cache is an optimisation.
    pub fn store(
        &self,
        key: &str,
        len: usize,
        write: impl FnOnce(&mut PayloadWriter) -> std::io::Result<()>,
    ) -> bool {
        let Some(stem) = self
            .path(key)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
        else {
            return false;
        };
        // Unique per process and per write, so concurrent writers never share a file.
        static WRITES: AtomicUsize = AtomicUsize::new(0);
        let tmp = self.entries.dir().join(format!(
            ".{stem}.{}.{}.tmp",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| -> std::io::Result<()> {
            use std::os::unix::fs::FileExt;
            let file = fs::File::create(&tmp)?;
            let mut w = PayloadWriter {
                out: std::io::BufWriter::with_capacity(1 << 20, &file),
                chunk: chunk_bytes(len),
                at: 0,
                state: Xxh3::new(),
                hashes: Vec::new(),
            };
            w.out.write_all(&[0; HEADER_BYTES])?;
            write(&mut w)?;
            if w.at != len {
                return Err(std::io::Error::other(format!(
                    "{} payload bytes written, {len} announced",
                    w.at
                )));
            }
            if !w.at.is_multiple_of(w.chunk) {
                w.hashes.push(w.state.digest());
            }
            w.out.flush()?;
            file.write_all_at(&header(key, len, &w.hashes), 0)?;
            fs::rename(&tmp, self.path(key))
        })();
        match written {
            Ok(()) => {
                STORES.fetch_add(1, Ordering::Relaxed);
                self.entries.evict();
                true
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                warn_once(&format!(
                    "cranegrad: warning: weights cache {}: cannot write an entry: {e}",
                    self.entries.dir().display()
                ));
                false
            }
        }
    }
}

/// A temporary file untouched this long belongs to a writer that died (a write of gigabytes
/// takes seconds to minutes).
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Removes temporary files that writers which were killed mid-write left behind.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let stale = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMPORARY);
        if stale && e.path().extension().is_some_and(|x| x == "tmp") {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cg-weights-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn put(c: &WeightCache, key: &str, bytes: &[u8]) -> bool {
        c.store(key, bytes.len(), |w| w.write(bytes))
    }

    #[test]
    fn entries_round_trip_and_damage_is_detected() {
        let c = WeightCache::open(&tmp("rt"), DEFAULT_MAX_BYTES).unwrap();
        let data = payload(100_000);
        assert!(put(&c, "k", &data));
        assert_eq!(&c.load("k").unwrap()[HEADER_BYTES..], &data[..]);
        assert!(c.load("other").is_none());
        let p = c.path("k");
        // A flipped payload byte, a truncation, another version, another key: each is
        // refused and removed.
        type Damage = fn(&mut Vec<u8>);
        let damage: [Damage; 4] = [
            |b| b[HEADER_BYTES + 5000] ^= 1,
            |b| b.truncate(b.len() - 10),
            |b| b[48] ^= 1,
            |b| b[20] ^= 1,
        ];
        for d in damage {
            assert!(put(&c, "k", &data));
            let mut b = fs::read(&p).unwrap();
            d(&mut b);
            fs::write(&p, &b).unwrap();
            assert!(c.load("k").is_none());
            assert!(!p.exists());
        }
        // A writer that announces one length and writes another leaves nothing.
        assert!(!c.store("short", 10, |w| w.write(&[1; 5])));
        assert!(c.load("short").is_none());
        assert_eq!(c.entries().stats().entries, 0);
        let _ = fs::remove_dir_all(c.entries().dir().parent().unwrap());
    }

    #[test]
    fn payloads_span_many_chunks_and_empty_ones_work() {
        let c = WeightCache::open(&tmp("chunks"), DEFAULT_MAX_BYTES).unwrap();
        let data = payload(2 * CHUNK_BYTES + 12_345);
        assert!(c.store("big", data.len(), |w| {
            for part in data.chunks(999_983) {
                w.write(part)?;
            }
            Ok(())
        }));
        let e = c.load("big").unwrap();
        assert!(e[HEADER_BYTES..] == data[..]);
        assert!(put(&c, "empty", &[]));
        assert_eq!(c.load("empty").unwrap().len(), HEADER_BYTES);
        let _ = fs::remove_dir_all(c.entries().dir().parent().unwrap());
    }

    #[test]
    fn concurrent_writers_of_one_key_leave_one_whole_entry() {
        let c = WeightCache::open(&tmp("race"), DEFAULT_MAX_BYTES).unwrap();
        let data = payload(3 << 20);
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    for _ in 0..3 {
                        put(&c, "same", &data);
                        if let Some(e) = c.load("same") {
                            assert!(e[HEADER_BYTES..] == data[..]);
                        }
                    }
                });
            }
        });
        assert!(c.load("same").is_some());
        assert_eq!(
            c.entries().stats().entries,
            1,
            "no temporary file left behind"
        );
        let _ = fs::remove_dir_all(c.entries().dir().parent().unwrap());
    }

    #[test]
    fn the_cap_evicts_the_least_recently_used() {
        let entry = (HEADER_BYTES + 1000) as u64;
        let c = WeightCache::open(&tmp("cap"), 3 * entry).unwrap();
        for k in ["a", "b", "c"] {
            assert!(put(&c, k, &[0; 1000]));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(c.load("a").is_some(), "a used again");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(put(&c, "d", &[0; 1000]));
        assert!(c.load("b").is_none(), "b was the least recently used");
        assert!(c.load("a").is_some() && c.load("d").is_some());
        assert_eq!(c.entries().clear().entries, 3);
        let _ = fs::remove_dir_all(c.entries().dir().parent().unwrap());
    }

    #[test]
    fn a_dead_writers_temporary_file_is_removed_when_stale() {
        let root = tmp("stale");
        let c = WeightCache::open(&root, DEFAULT_MAX_BYTES).unwrap();
        let (old, fresh) = (
            c.entries().dir().join(".a.1.0.tmp"),
            c.entries().dir().join(".b.2.0.tmp"),
        );
        for p in [&old, &fresh] {
            fs::write(p, b"half an entry").unwrap();
        }
        let long_ago = SystemTime::now() - STALE_TEMPORARY - std::time::Duration::from_secs(60);
        fs::File::options()
            .append(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        WeightCache::open(&root, DEFAULT_MAX_BYTES).unwrap();
        assert!(!old.exists(), "stale: removed");
        assert!(fresh.exists(), "maybe still being written: kept");
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn an_unusable_directory_is_an_error_naming_it() {
        let f = tmp("file");
        fs::write(&f, b"").unwrap();
        let e = WeightCache::open(&f.join("sub"), DEFAULT_MAX_BYTES).unwrap_err();
        assert!(e.contains("cannot create"), "{e}");
        let _ = fs::remove_file(&f);
    }
}
