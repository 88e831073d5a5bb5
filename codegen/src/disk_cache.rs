//! Compiled kernels on disk, so a fresh process starts warm: the machine code of each kernel
//! under its cache key (kernel text + Cranelift version + ISA flags, see `kernel_key`) and the
//! cranegrad version, with a SHA-256 of the code checked before the bytes are ever mapped
//! executable. A corrupt, truncated or foreign entry is removed and compiled again; entries are
//! written through a temporary file and a rename, so concurrent processes never read half an
//! entry; the directory is capped in size, least recently used entries evicted first. Entries
//! are executed, so a directory (or entry) that another user owns, or that others may write,
//! is refused with a warning: a checksum detects damage, not tampering.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// The first bytes of every entry.
const MAGIC: &[u8; 8] = b"CGKERNEL";
/// Layout version of an entry (bump when the header changes).
const FORMAT: u32 = 1;
/// Default size cap of the kernel directory.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// A kernel cache directory, checked safe to execute from.
#[derive(Clone, Debug)]
pub struct DiskCache {
    entries: EntryDir,
}

/// Machine code read back from an entry.
#[derive(Debug)]
pub struct Entry {
    /// The function's bytes (self-contained: entries are only written for code without
    /// relocations).
    pub code: Vec<u8>,
    /// Alignment the code needs.
    pub align: u64,
}

/// What a cache directory holds.
#[derive(Clone, Copy, Debug, Default)]
pub struct DirStats {
    /// Entries.
    pub entries: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The cache every `KernelCache` of this process uses (`None`: no disk cache, the default for
/// library use; the command line sets it).
static GLOBAL: OnceLock<Mutex<Option<DiskCache>>> = OnceLock::new();

/// Sets the process's disk cache (`None` turns it off).
pub fn set_global(cache: Option<DiskCache>) {
    *GLOBAL
        .get_or_init(|| Mutex::new(None))
        .lock()
        .expect("disk cache lock") = cache;
}

/// The process's disk cache, if any.
pub fn global() -> Option<DiskCache> {
    GLOBAL
        .get()
        .and_then(|m| m.lock().ok().and_then(|c| c.clone()))
}

/// What identifies the code generator that wrote an entry: the cranegrad version and the
/// running executable's size and modification time. The kernel key covers the kernel's text,
/// the Cranelift version and the ISA, but not how this build turns the text into code: a
/// rebuilt cranegrad of the same version may emit other code for the same kernel, so its
/// entries must not be reused.
pub fn build_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let exe = std::env::current_exe()
            .and_then(fs::metadata)
            .ok()
            .map(|m| {
                let t = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                format!("{}-{t}", m.len())
            })
            .unwrap_or_else(|| "unknown-executable".into());
        format!("{} {exe}", env!("CARGO_PKG_VERSION"))
    })
}

/// The default root: `$CRANEGRAD_CACHE_DIR`, else `$XDG_CACHE_HOME/cranegrad`, else
/// `~/.cache/cranegrad`.
pub fn default_root() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CRANEGRAD_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("cranegrad"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("cranegrad"))
}

/// Why a directory or entry is not safe to run code from, if it is not.
pub fn unsafe_reason(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot read it: {e}")),
    };
    if meta.file_type().is_symlink() {
        return Some("it is a symbolic link".into());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Some(format!(
            "it is owned by uid {}, not this user ({me})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "others may write to it (mode {:o})",
            meta.mode() & 0o777
        ));
    }
    None
}

impl DiskCache {
    /// The kernel cache under `root` (`root/kernels`), created private (0700) if absent.
    /// An unusable or unsafe directory is an error naming why; callers warn and go on
    /// without a disk cache.
    pub fn open(root: &Path, max_bytes: u64) -> Result<DiskCache, String> {
        Ok(DiskCache {
            entries: EntryDir::open(root, "kernels", "kernel", max_bytes)?,
        })
    }

    /// The directory and its entries.
    pub fn entries(&self) -> &EntryDir {
        &self.entries
    }

    /// The entry file of `key` for this build (two builds keep separate entries, so they
    /// do not evict each other's by overwriting).
    fn path(&self, key: &str) -> PathBuf {
        self.entries
            .file(format!("{key}\n{}", build_id()).as_bytes())
    }

    /// The entry under `key`, if it is there and whole; a damaged or foreign one is removed.
    pub fn load(&self, key: &str) -> Option<Entry> {
        let path = self.path(key);
        let bytes = fs::read(&path).ok()?;
        match parse(&bytes, key) {
            Ok(e) => {
                if let Some(why) = unsafe_reason(&path) {
                    warn_once(&format!(
                        "cranegrad: warning: kernel cache entry {} not used: {why}",
                        path.display()
                    ));
                    return None;
                }
                // Recently used: the eviction keeps it.
                if let Ok(f) = fs::File::options().append(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Some(e)
            }
            Err(why) => {
                warn_once(&format!(
                    "cranegrad: warning: kernel cache entry {} is {why}; compiling it again",
                    path.display()
                ));
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Writes an entry (temporary file + rename), then evicts past the size cap. Failures are
    /// silent: the cache is an optimisation.
    pub fn store(&self, key: &str, code: &[u8], align: u64) {
        let mut bytes = Vec::with_capacity(code.len() + 128);
        bytes.extend(MAGIC);
        bytes.extend(FORMAT.to_le_bytes());
        put_str(&mut bytes, key);
        put_str(&mut bytes, build_id());
        bytes.extend(align.to_le_bytes());
        bytes.extend((code.len() as u64).to_le_bytes());
        bytes.extend(Sha256::digest(code));
        bytes.extend(code);
        let tmp = self
            .entries
            .dir
            .join(format!(".{key}.{}.tmp", std::process::id()));
        let written = fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
            .and_then(|()| fs::rename(&tmp, self.path(key)));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
            return;
        }
        self.entries.evict();
    }
}

/// A directory of cache entries (files ending in `.ext`, capped at `max_bytes` with the least
/// recently used evicted first): what the kernel and the weights caches share.
#[derive(Clone, Debug)]
pub struct EntryDir {
    dir: PathBuf,
    ext: &'static str,
    max_bytes: u64,
}

impl EntryDir {
    /// `root/sub`, created private (0700) if absent, checked safe (see [`unsafe_reason`])
    /// and writable; the error names the directory and why.
    pub fn open(
        root: &Path,
        sub: &str,
        ext: &'static str,
        max_bytes: u64,
    ) -> Result<EntryDir, String> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = root.join(sub);
        for d in [root, dir.as_path()] {
            if !d.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(d)
                    .map_err(|e| format!("{}: cannot create it: {e}", d.display()))?;
            }
            if let Some(why) = unsafe_reason(d) {
                return Err(format!("{}: {why}", d.display()));
            }
        }
        // Writable by this user? A probe file answers what the mode bits alone cannot (a
        // read-only mount, say).
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        fs::write(&probe, b"")
            .map_err(|e| format!("{}: cannot write there: {e}", dir.display()))?;
        let _ = fs::remove_file(&probe);
        Ok(EntryDir {
            dir,
            ext,
            max_bytes,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry file named by the SHA-256 of `id`.
    pub fn file(&self, id: &[u8]) -> PathBuf {
        let name: String = Sha256::digest(id)[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(format!("{name}.{}", self.ext))
    }

    /// Removes the least recently used entries until they fit the cap. Entries mapped by
    /// running processes stay readable after the unlink.
    pub fn evict(&self) {
        let mut entries = list(&self.dir, self.ext);
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        if total <= self.max_bytes {
            return;
        }
        entries.sort_by_key(|e| e.2);
        for (path, len, _) in entries {
            if total <= self.max_bytes {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }

    /// Entries and bytes.
    pub fn stats(&self) -> DirStats {
        let entries = list(&self.dir, self.ext);
        DirStats {
            entries: entries.len() as u64,
            bytes: entries.iter().map(|e| e.1).sum(),
        }
    }

    /// Removes every entry; returns what was removed.
    pub fn clear(&self) -> DirStats {
        let mut removed = DirStats::default();
        for (path, len, _) in list(&self.dir, self.ext) {
            if fs::remove_file(&path).is_ok() {
                removed.entries += 1;
                removed.bytes += len;
            }
        }
        removed
    }
}

/// `(path, bytes, last use)` of every entry (file ending in `.ext`) in `dir`.
fn list(dir: &Path, ext: &str) -> Vec<(PathBuf, u64, SystemTime)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == ext))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((
                e.path(),
                m.len(),
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            ))
        })
        .collect()
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u32).to_le_bytes());
    out.extend(s.as_bytes());
}

/// Reads an entry, checking every field against what this process would have written.
fn parse(bytes: &[u8], key: &str) -> Result<Entry, String> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let end = at
            .checked_add(n)
            .filter(|&e| e <= bytes.len())
            .ok_or("truncated")?;
        let s = &bytes[at..end];
        at = end;
        Ok(s)
    };
    if take(8)? != MAGIC {
        return Err("not a cranegrad kernel entry".into());
    }
    let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    let u64_at = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    if u32_at(take(4)?) != FORMAT {
        return Err("from another entry format".into());
    }
    let n = u32_at(take(4)?) as usize;
    if take(n)? != key.as_bytes() {
        return Err("stored under another key".into());
    }
    let n = u32_at(take(4)?) as usize;
    if take(n)? != build_id().as_bytes() {
        return Err("from another cranegrad build".into());
    }
    let align = u64_at(take(8)?);
    if !align.is_power_of_two() || align > 4096 {
        return Err("damaged (bad alignment)".into());
    }
    let len = u64_at(take(8)?) as usize;
    let sum = take(32)?.to_vec();
    let code = take(len)?.to_vec();
    if at != bytes.len() {
        return Err("damaged (trailing bytes)".into());
    }
    if Sha256::digest(&code).as_slice() != sum.as_slice() {
        return Err("damaged (checksum mismatch)".into());
    }
    Ok(Entry { code, align })
}

/// Prints a warning once per message per process.
pub fn warn_once(msg: &str) {
    static SEEN: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(|| Mutex::new(Default::default()));
    if seen.lock().is_ok_and(|mut s| s.insert(msg.to_string())) {
        eprintln!("{msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cg-disk-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn entries_round_trip_and_damage_is_detected() {
        let root = tmp("rt");
        let c = DiskCache::open(&root, DEFAULT_MAX_BYTES).unwrap();
        c.store("abc", &[1, 2, 3, 4], 16);
        let e = c.load("abc").unwrap();
        assert_eq!((e.code, e.align), (vec![1, 2, 3, 4], 16));
        assert!(c.load("other").is_none());
        // A flipped code byte fails the checksum: the entry is removed, never returned.
        let p = c.path("abc");
        let mut b = fs::read(&p).unwrap();
        *b.last_mut().unwrap() ^= 1;
        fs::write(&p, &b).unwrap();
        assert!(c.load("abc").is_none());
        assert!(!p.exists());
        // Truncated, and an entry renamed to another key, are refused too.
        c.store("abc", &[9; 64], 16);
        let b = fs::read(&p).unwrap();
        fs::write(&p, &b[..b.len() - 3]).unwrap();
        assert!(c.load("abc").is_none());
        c.store("abc", &[9; 64], 16);
        fs::rename(&p, c.path("xyz")).unwrap();
        assert!(c.load("xyz").is_none());
        // An entry another build wrote (its build id differs) is not run.
        c.store("abc", &[9; 64], 16);
        let mut b = fs::read(&p).unwrap();
        let id = build_id().as_bytes();
        let at = b.windows(id.len()).position(|w| w == id).unwrap();
        b[at] ^= 1;
        fs::write(&p, &b).unwrap();
        assert!(c.load("abc").is_none());
        assert!(!p.exists());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn the_cap_evicts_the_least_recently_used() {
        let root = tmp("cap");
        // Each entry is 1000 bytes of code plus a header of under 200: three fit, four do not.
        let c = DiskCache::open(&root, 3600).unwrap();
        for k in ["a", "b", "c"] {
            c.store(k, &[0; 1000], 16);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(c.load("a").is_some(), "a used again");
        std::thread::sleep(std::time::Duration::from_millis(20));
        c.store("d", &[0; 1000], 16);
        assert!(c.load("b").is_none(), "b was the least recently used");
        assert!(c.load("a").is_some() && c.load("d").is_some());
        assert!(c.entries().stats().bytes <= 3600);
        assert_eq!(c.entries().clear().entries, 3);
        assert_eq!(c.entries().stats().entries, 0);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = tmp("perm");
        fs::create_dir_all(root.join("kernels")).unwrap();
        fs::set_permissions(root.join("kernels"), fs::Permissions::from_mode(0o777)).unwrap();
        let e = DiskCache::open(&root, DEFAULT_MAX_BYTES).unwrap_err();
        assert!(e.contains("others may write"), "{e}");
        let _ = fs::remove_dir_all(&root);
    }
}
