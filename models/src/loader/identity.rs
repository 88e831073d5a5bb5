//! A stable name of a model file's (or folder's) contents, so what the runtime derives from
//! its weights (packed panels) can be found again on disk by a later process.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// Bytes of each file's start hashed into its identity: the header and metadata of every
/// format this loader reads, and far cheaper than hashing gigabytes of tensors.
const HEAD_BYTES: u64 = 1 << 20;

/// The identity of `path`'s contents: the cranegrad version (which fixes how the loader
/// converts them), and per file (the file, or each file of a folder, in name order) its
/// name, size, modification time and the SHA-256 of its first megabyte. Only regular files are
/// opened. `None` when the path is not a regular file or folder, or a file cannot be read;
/// the caller then caches nothing derived from it.
pub fn file_identity(path: &Path) -> Option<String> {
    let mut files = if path.is_dir() {
        fs::read_dir(path)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect::<Vec<_>>()
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        // A pipe or a device has no stable contents (and opening a pipe would block).
        return None;
    };
    files.sort();
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(fs::canonicalize(path).ok()?.as_os_str().as_encoded_bytes());
    for f in files {
        let meta = fs::metadata(&f).ok()?;
        let mtime = meta
            .modified()
            .ok()?
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_nanos();
        h.update(f.file_name()?.as_encoded_bytes());
        h.update(meta.len().to_le_bytes());
        h.update(mtime.to_le_bytes());
        let mut head = Vec::new();
        fs::File::open(&f)
            .ok()?
            .take(HEAD_BYTES)
            .read_to_end(&mut head)
            .ok()?;
        h.update(Sha256::digest(&head));
    }
    let digest: String = h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(format!("file-{digest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_changes_with_the_contents_and_not_otherwise() {
        let dir = std::env::temp_dir().join(format!("cg-ident-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("m.gguf");
        fs::write(&f, b"GGUF one").unwrap();
        let a = file_identity(&f).unwrap();
        assert_eq!(file_identity(&f).unwrap(), a);
        fs::write(&f, b"GGUF two").unwrap();
        assert_ne!(file_identity(&f).unwrap(), a);
        // A folder's identity covers each of its files.
        let d = file_identity(&dir).unwrap();
        fs::write(dir.join("config.json"), b"{}").unwrap();
        assert_ne!(file_identity(&dir).unwrap(), d);
        assert!(file_identity(&dir.join("absent")).is_none());
        let _ = fs::remove_dir_all(&dir);
    }
}
