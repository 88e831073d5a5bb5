//! Read-only memory maps of weight files, so multi-GB checkpoints are paged in on demand and
//! converted tensor by tensor instead of being copied into memory whole first.

use std::fs::File;
use std::io::Read;
use std::ops::Deref;
use std::path::Path;

use memmap2::Mmap;

use super::error::{LoadError, Result};

/// The bytes of a file: a memory map, or nothing for an empty file (which cannot be mapped).
pub enum FileBytes {
    /// A read-only map of the whole file.
    Mapped(Mmap),
    /// The file is empty.
    Empty,
}

impl Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Empty => &[],
        }
    }
}

/// Refuses anything but a regular file (after following symlinks) before it is opened: opening
/// a FIFO blocks until someone writes to it, `/dev/zero` reports a length of 0 and would read
/// forever, and a directory opens fine on Linux only to fail later with a vaguer message.
pub fn check_regular(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| LoadError::io(path, e))?;
    if meta.is_file() {
        return Ok(());
    }
    let kind = file_kind(&meta.file_type());
    Err(LoadError::corrupt(
        path,
        format!("is {kind}, not a regular file"),
    ))
}

#[cfg(unix)]
fn file_kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a named pipe (FIFO)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn file_kind(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

/// Maps `path` read-only, naming it on failure.
pub fn map_file(path: &Path) -> Result<FileBytes> {
    check_regular(path)?;
    let file = File::open(path).map_err(|e| LoadError::io(path, e))?;
    let len = file.metadata().map_err(|e| LoadError::io(path, e))?.len();
    if len == 0 {
        return Ok(FileBytes::Empty);
    }
    // SAFETY: the map is read-only and private to this process. Like every mmap-based loader
    // (safetensors, llama.cpp) this assumes nobody truncates the file while it is mapped; the
    // loader copies what it needs into owned f32 buffers and drops the map right after loading.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| LoadError::io(path, e))?;
    Ok(FileBytes::Mapped(map))
}

/// The first bytes of a file (fewer if it is shorter), for recognising its format.
pub fn read_prefix(path: &Path, n: usize) -> Result<Vec<u8>> {
    check_regular(path)?;
    let file = File::open(path).map_err(|e| LoadError::io(path, e))?;
    let mut buf = Vec::with_capacity(n);
    file.take(n as u64)
        .read_to_end(&mut buf)
        .map_err(|e| LoadError::io(path, e))?;
    Ok(buf)
}
