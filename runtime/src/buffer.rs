//! 64-byte aligned, zero-initialised host buffers of 4-byte words (every dtype is 4 bytes).
//! Large buffers ask the kernel for transparent huge pages, which matters for bandwidth-bound
//! kernels (fewer TLB misses when streaming weights).

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;
use std::sync::Arc;

use memmap2::Mmap;

/// Alignment of every buffer: a cache line, and enough for any vector load.
pub const ALIGN: usize = 64;

/// Buffers at least this large are advised to use huge pages.
const HUGE_PAGE_MIN: usize = 4 << 20;

/// An owned aligned allocation of `len` 4-byte words, or a read-only window of a mapped
/// cache entry (packed panels a previous process wrote).
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    words: usize,
    layout: Layout,
    /// The mapping a read-only buffer lies in, kept alive with it.
    file: Option<Arc<Mmap>>,
}

// SAFETY: the buffer owns its memory exclusively; sharing raw pointers across the thread pool
// is coordinated by the executor (kernels write disjoint ranges).
unsafe impl Send for AlignedBuf {}
// SAFETY: as above; `&AlignedBuf` only hands out pointers and slices.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `words` 4-byte elements (at least one cache line is allocated so the
    /// pointer is always valid).
    pub fn zeroed(words: usize) -> AlignedBuf {
        let bytes = (words.max(1) * 4).next_multiple_of(ALIGN);
        let layout = Layout::from_size_align(bytes, ALIGN).expect("buffer size fits in isize");
        if bytes >= HUGE_PAGE_MIN
            && let Some(ptr) = map_anonymous(bytes)
        {
            return AlignedBuf {
                ptr,
                words,
                layout,
                file: None,
            };
        }
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf {
            ptr,
            words,
            layout,
            file: None,
        }
    }

    /// `words` words at byte `start` of a read-only mapping; `None` when the window does not
    /// fit or is not aligned to [`ALIGN`].
    pub fn mapped(file: Arc<Mmap>, start: usize, words: usize) -> Option<AlignedBuf> {
        let end = words.checked_mul(4)?.checked_add(start)?;
        if end > file.len() || !(file.as_ptr() as usize + start).is_multiple_of(ALIGN) {
            return None;
        }
        // SAFETY: in bounds, checked above.
        let ptr = NonNull::new(unsafe { file.as_ptr().add(start) }.cast_mut())?;
        Some(AlignedBuf {
            ptr,
            words,
            layout: Layout::from_size_align(ALIGN, ALIGN).ok()?,
            file: Some(file),
        })
    }

    /// True for a read-only window of a mapped file.
    pub fn is_file_mapped(&self) -> bool {
        self.file.is_some()
    }

    fn is_anonymous_map(&self) -> bool {
        cfg!(target_os = "linux") && self.file.is_none() && self.layout.size() >= HUGE_PAGE_MIN
    }

    /// Number of 4-byte words.
    pub fn len(&self) -> usize {
        self.words
    }

    /// True when the buffer holds no words.
    pub fn is_empty(&self) -> bool {
        self.words == 0
    }

    /// Base pointer.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The words.
    pub fn words(&self) -> &[u32] {
        // SAFETY: the allocation holds at least `words` initialised u32s.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u32>(), self.words) }
    }

    /// The words, mutably. Panics on a file-mapped buffer, which is read-only (those are only
    /// ever shared packed panels).
    pub fn words_mut(&mut self) -> &mut [u32] {
        assert!(self.file.is_none(), "a file-mapped buffer is read-only");
        // SAFETY: as in `words`, and `&mut self` guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast::<u32>(), self.words) }
    }

    /// The words as f32.
    pub fn as_f32(&self) -> &[f32] {
        // SAFETY: same size and alignment; every bit pattern is a valid f32.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<f32>(), self.words) }
    }

    /// The words as f32, mutably. Panics on a file-mapped buffer, as `words_mut` does.
    pub fn as_f32_mut(&mut self) -> &mut [f32] {
        assert!(self.file.is_none(), "a file-mapped buffer is read-only");
        // SAFETY: as in `as_f32`, with exclusivity from `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast::<f32>(), self.words) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.file.is_some() {
            return;
        }
        if self.is_anonymous_map() {
            // SAFETY: mapped in `map_anonymous` with exactly this size.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.layout.size()) };
            return;
        }
        // SAFETY: allocated in `zeroed` with this exact layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} words)", self.words)
    }
}

/// Returns the whole pages inside `words` to the OS and answers the bytes returned: later
/// reads see zeros. For weight data that only lives on as packed panels (see
/// `PackCache::release`).
///
/// # Safety
/// Nothing may read `words` afterwards: the caller registers the data as released, and every
/// reader in the runtime refuses released data.
#[cfg(target_os = "linux")]
pub(crate) unsafe fn release_pages(words: &[u32]) -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let start = (words.as_ptr() as usize).next_multiple_of(page);
    let end = (words.as_ptr() as usize + words.len() * 4) / page * page;
    if words.is_empty() || end <= start {
        return 0;
    }
    // SAFETY: the range is whole pages inside a live allocation; MADV_DONTNEED keeps the
    // mapping valid (reads give zeros), and the caller guarantees nothing reads it again.
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    if rc == 0 { end - start } else { 0 }
}

/// Returns nothing to the OS where `madvise` is not available.
///
/// # Safety
/// None needed: nothing is changed.
#[cfg(not(target_os = "linux"))]
pub(crate) unsafe fn release_pages(_words: &[u32]) -> usize {
    0
}

/// Large buffers come straight from mmap: the kernel hands out zero pages lazily (no memset of
/// memory nobody has touched yet) and page-aligned memory can use transparent huge pages.
/// Failure to map aborts like any failed allocation would.
#[cfg(target_os = "linux")]
fn map_anonymous(bytes: usize) -> Option<NonNull<u8>> {
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::alloc::handle_alloc_error(
            Layout::from_size_align(bytes, ALIGN).expect("valid layout"),
        );
    }
    // SAFETY: advisory only, on memory we own; failure is harmless.
    unsafe { libc::madvise(p, bytes, libc::MADV_HUGEPAGE) };
    NonNull::new(p.cast())
}

#[cfg(not(target_os = "linux"))]
fn map_anonymous(_bytes: usize) -> Option<NonNull<u8>> {
    None
}
