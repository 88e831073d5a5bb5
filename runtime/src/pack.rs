//! Weight packing for the GEMM micro-kernel: a `[K, N]` matrix becomes 8-column panels,
//! each contiguous and zero-padded, holding per group of 4 k values each column's 4-value
//! run (see `panel_offset`), so the kernel streams B sequentially and multiplies 4-k runs
//! of A rows by 4-k runs of columns.
//! Packed copies are cached by the source data, which the cache keeps alive (so its address
//! cannot be reused by other data while the entry exists).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use cranegrad_graph::{CompactFormat, HostData, Q8_BLOCK, q4_block, q8_block, q8_offset_block};
use cranegrad_lower::kernel::{
    GEMM_KG, GEMM_NR, block_values_bytes, panel_bytes, panel_offset, panel_words, q8_block_bytes,
};

use crate::buffer::AlignedBuf;

/// Cache key: per source (address, transposed, address of its row scale or 0), then K, N,
/// and the 16-bit format the panels hold, if any.
type PackKey = (
    Vec<(usize, bool, usize)>,
    usize,
    usize,
    Option<CompactFormat>,
);

/// Every weight whose raw pages were returned to the OS, by address, process-wide: any
/// session or the interpreter that would read one raw refuses instead of reading zeros. The
/// entry keeps the (now empty) allocation alive, so its address is never reused.
static RELEASED: Mutex<BTreeMap<usize, HostData>> = Mutex::new(BTreeMap::new());

/// True when `data`'s raw pages were returned to the OS (see `PackCache::release`).
pub fn is_released(data: &HostData) -> bool {
    let reg = RELEASED.lock().unwrap_or_else(|e| e.into_inner());
    !reg.is_empty() && reg.contains_key(&data.addr())
}

/// Packed copies by source and layout.
#[derive(Default)]
pub struct PackCache {
    /// Each entry keeps its sources alive, so their addresses stay unique keys.
    map: HashMap<PackKey, (Vec<HostData>, Arc<AlignedBuf>)>,
    /// Bytes held by packed copies.
    pub bytes: usize,
    /// The same bytes by panel format (`f32`, or a compact format's name).
    pub bytes_by_format: BTreeMap<&'static str, usize>,
    /// Bytes of raw weight data this cache returned to the OS (see `release`).
    pub released_bytes: usize,
    /// Packed matrices mapped from the weights cache instead of packed.
    pub disk_hits: usize,
}

/// One weight to pack: `[k, n]` row-major, or `[n, k]` when `transposed`, its rows scaled by
/// `scale` (a folded norm gain) when given.
#[derive(Clone, Copy)]
pub struct PackInput<'a> {
    /// The weight.
    pub data: &'a HostData,
    /// Stored `[n, k]`.
    pub transposed: bool,
    /// At least `k` f32 values scaling row `kk` of the `[k, n]` view.
    pub scale: Option<&'a HostData>,
}

/// One packed column's source: the weight's words (stored `[n, k]` when `transposed`, else
/// `[k, n]`), its source column, and the weight's row scale.
#[derive(Clone, Copy)]
struct ColumnSource<'s> {
    words: &'s [u32],
    transposed: bool,
    n: usize,
    col: usize,
    scale: Option<&'s [f32]>,
}

impl ColumnSource<'_> {
    /// Value `kk` of the column, scaled.
    fn at(&self, k: usize, kk: usize) -> u32 {
        let w = if self.transposed {
            self.words[self.col * k + kk]
        } else {
            self.words[kk * self.n + self.col]
        };
        match self.scale {
            Some(s) => (f32::from_bits(w) * s[kk]).to_bits(),
            None => w,
        }
    }
}

/// Writes one panel in order: per group of `GEMM_KG` k values, each present column's run
/// (`cols[i]` = (panel position, source)). An `[n, k]` source is read as sequential
/// streams, one per column. Absent columns and k beyond `k` stay zero.
fn fill_panel(panel: &mut [u32], k: usize, cols: &[(usize, ColumnSource<'_>)]) {
    for k0 in (0..k).step_by(GEMM_KG) {
        let run = (k - k0).min(GEMM_KG);
        for &(pos, src) in cols {
            let at = panel_offset(k0, pos);
            let out = &mut panel[at..at + run];
            if src.transposed && src.scale.is_none() {
                let from = src.col * k + k0;
                out.copy_from_slice(&src.words[from..from + run]);
            } else {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = src.at(k, k0 + j);
                }
            }
        }
    }
}

/// Fills `out` (whole panels of `k`, zeroed) in parallel, panel `p`'s columns given by
/// `columns(p)`.
fn pack_parallel<'s>(
    out: &mut [u32],
    k: usize,
    columns: impl Fn(usize) -> Vec<(usize, ColumnSource<'s>)> + Sync,
) {
    let words = panel_words(k);
    if k == 0 || out.len() < words {
        return;
    }
    in_parallel(out, words, |first, chunk| {
        for (q, panel) in chunk.chunks_exact_mut(words).enumerate() {
            fill_panel(panel, k, &columns(first + q));
        }
        true
    });
}

/// Splits `out` (whole units of `unit` words) into one run of units per core and calls
/// `fill(first unit, run)` on each in parallel; true when every call is.
fn in_parallel(
    out: &mut [u32],
    unit: usize,
    fill: impl Fn(usize, &mut [u32]) -> bool + Sync,
) -> bool {
    let units = out.len() / unit.max(1);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let per = units.div_ceil(threads.max(1)).max(1);
    let fill = &fill;
    std::thread::scope(|sc| {
        let runs: Vec<_> = out
            .chunks_mut(per * unit)
            .enumerate()
            .map(|(t, run)| sc.spawn(move || fill(t * per, run)))
            .collect();
        runs.into_iter().all(|r| r.join().unwrap_or(false))
    })
}

/// A weight's row scale as f32 values.
fn scale_values(scale: Option<&[u32]>, k: usize) -> Option<Vec<f32>> {
    scale.map(|s| s[..k].iter().map(|&w| f32::from_bits(w)).collect())
}

/// f32 panels as 16-bit panels of `format` in the same element order, two values per word
/// (element `2i` in the low half of word `i`); `None` when a value is not exact in `format`
/// (the data was marked by `HostData::into_compact`, so only a bug gets here).
pub fn narrow(panels: &AlignedBuf, format: CompactFormat) -> Option<AlignedBuf> {
    let w = panels.words();
    let mut out = AlignedBuf::zeroed(w.len().div_ceil(2));
    for (o, pair) in out.words_mut().iter_mut().zip(w.chunks(2)) {
        let lo = format.exact_bits(f32::from_bits(pair[0]))?;
        let hi = match pair.get(1) {
            Some(&v) => format.exact_bits(f32::from_bits(v))?,
            None => 0,
        };
        *o = u32::from(lo) | (u32::from(hi) << 16);
    }
    Some(out)
}

/// f32 panels of a reduction of length `k` (a multiple of the block) as panels of the Q8
/// format `format` (see `panel_bytes`): per block of 32 k, the values as bytes (or nibbles,
/// see `block_values_bytes`) in the same order, then each column's scale (and offset); `None` when a column's block is not of the
/// format (the data was marked by `HostData::into_compact`, so only a bug gets here).
pub fn to_q8(panels: &AlignedBuf, k: usize, format: CompactFormat) -> Option<AlignedBuf> {
    let block_words = Q8_BLOCK * GEMM_NR;
    let out_words = q8_block_bytes(format) / 4;
    let w = panels.words();
    debug_assert!(k.is_multiple_of(Q8_BLOCK) && w.len().is_multiple_of(panel_words(k)));
    let mut out = AlignedBuf::zeroed(w.len() / block_words * out_words);
    // Blocks are independent: a share of them per core (a Llama-3.2-1B's take seconds alone).
    let ok = in_parallel(out.words_mut(), out_words, |first, run| {
        let src = &w[first * block_words..][..run.len() / out_words * block_words];
        q8_blocks_into(src, run, format)
    });
    ok.then_some(out)
}

/// Converts whole f32 panel blocks `src` into blocks of `format` in `dst`; false when one is
/// not of the format.
fn q8_blocks_into(src: &[u32], dst: &mut [u32], format: CompactFormat) -> bool {
    let at = |i: usize, c: usize| (i / GEMM_KG) * GEMM_KG * GEMM_NR + c * GEMM_KG + i % GEMM_KG;
    let block_words = Q8_BLOCK * GEMM_NR;
    let mut bytes = vec![0u8; q8_block_bytes(format)];
    for (src, dst) in src
        .chunks_exact(block_words)
        .zip(dst.chunks_exact_mut(bytes.len() / 4))
    {
        let (values, params) = bytes.split_at_mut(block_values_bytes(format));
        values.fill(0);
        for c in 0..GEMM_NR {
            let column: [f32; Q8_BLOCK] = std::array::from_fn(|i| f32::from_bits(src[at(i, c)]));
            // The scale, then (Q8Offset) the offset or (Q8Split) the second half's scale.
            let (scale, second, q) = match format {
                CompactFormat::Q8Offset => match q8_offset_block(&column) {
                    Some(b) => b,
                    None => return false,
                },
                CompactFormat::Q4 => match q4_block(&column) {
                    Some(b) => b,
                    None => return false,
                },
                CompactFormat::Q8Split => {
                    let half = Q8_BLOCK / 2;
                    let (Some((s0, q0)), Some((s1, q1))) =
                        (q8_block(&column[..half]), q8_block(&column[half..]))
                    else {
                        return false;
                    };
                    let q = std::array::from_fn(|i| {
                        (if i < half { q0[i] } else { q1[i - half] }) as u8
                    });
                    (s0, s1, q)
                }
                _ => match q8_block(&column) {
                    Some((s, q)) => (s, 0.0, q.map(|v| v as u8)),
                    None => return false,
                },
            };
            for (i, &qi) in q.iter().enumerate() {
                let p = at(i, c);
                if format == CompactFormat::Q4 {
                    // Within a group of 32 bytes' worth, byte j % 16, nibble j / 16.
                    let (group, j) = (p / 32, p % 32);
                    values[group * 16 + j % 16] |= qi << (4 * (j / 16));
                } else {
                    values[p] = qi;
                }
            }
            params[4 * c..4 * c + 4].copy_from_slice(&scale.to_le_bytes());
            if format != CompactFormat::Q8 {
                let o = 4 * (GEMM_NR + c);
                params[o..o + 4].copy_from_slice(&second.to_le_bytes());
            }
        }
        for (o, b) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
    true
}

/// Words of the panels of `sources` (one weight, or a pair) viewed as `[k, n]`.
fn packed_words(sources: usize, k: usize, n: usize) -> usize {
    let cols = if sources == 2 { GEMM_NR / 2 } else { GEMM_NR };
    n.div_ceil(cols) * panel_words(k)
}

/// Packs two weights of one shape for a paired GEMM: panel `p` holds columns `4p..4p+4` of
/// `a` in its first four columns and the same columns of `b` in the last four, so one
/// micro-kernel accumulates both products of the same A rows.
pub fn pack_pair_panels(a: PackInput<'_>, b: PackInput<'_>, k: usize, n: usize) -> AlignedBuf {
    let mut out = AlignedBuf::zeroed(packed_words(2, k, n));
    pack_pair_into(out.words_mut(), a, b, k, n);
    out
}

/// [`pack_pair_panels`] into `out` (zeroed, [`packed_words`] long).
fn pack_pair_into(out: &mut [u32], a: PackInput<'_>, b: PackInput<'_>, k: usize, n: usize) {
    const HALF: usize = GEMM_NR / 2;
    let scales: Vec<Option<Vec<f32>>> = [a, b]
        .iter()
        .map(|s| scale_values(s.scale.map(|v| v.as_words()), k))
        .collect();
    let sources = [a, b];
    pack_parallel(out, k, |p| {
        let cols = (n - p * HALF).min(HALF);
        (0..2)
            .flat_map(|h| {
                let (s, scale) = (&sources[h], scales[h].as_deref());
                (0..cols).map(move |c| {
                    let src = ColumnSource {
                        words: s.data.as_words(),
                        transposed: s.transposed,
                        n,
                        col: p * HALF + c,
                        scale,
                    };
                    (h * HALF + c, src)
                })
            })
            .collect()
    })
}

/// Packs `src` into panels: `src` is `[k, n]` row-major, or `[n, k]` (an `nn.Linear`
/// weight, read as its transpose) when `transposed`. With `scale` (f32 bits, `k` of them),
/// row `kk` of the `[k, n]` matrix is multiplied by `scale[kk]`: a norm gain folded in.
pub fn pack_panels(
    src: &[u32],
    k: usize,
    n: usize,
    transposed: bool,
    scale: Option<&[u32]>,
) -> AlignedBuf {
    let mut out = AlignedBuf::zeroed(packed_words(1, k, n));
    pack_into(out.words_mut(), src, k, n, transposed, scale);
    out
}

/// [`pack_panels`] into `out` (zeroed, [`packed_words`] long).
fn pack_into(
    out: &mut [u32],
    src: &[u32],
    k: usize,
    n: usize,
    transposed: bool,
    scale: Option<&[u32]>,
) {
    let scale = scale_values(scale, k);
    let scale = scale.as_deref();
    pack_parallel(out, k, |p| {
        let cols = (n - p * GEMM_NR).min(GEMM_NR);
        (0..cols)
            .map(|c| {
                let src = ColumnSource {
                    words: src,
                    transposed,
                    n,
                    col: p * GEMM_NR + c,
                    scale,
                };
                (c, src)
            })
            .collect()
    })
}

/// The in-process identity of `sources`: addresses, which the cache keeps alive.
fn pack_ids(sources: &[PackInput<'_>]) -> Vec<(usize, bool, usize)> {
    sources
        .iter()
        .map(|s| {
            (
                s.data.addr(),
                s.transposed,
                s.scale.map_or(0, HostData::addr),
            )
        })
        .collect()
}

/// Version of the panel layout in cache entries (bump when `panel_offset` changes).
const PANEL_FORMAT: u32 = 1;

/// The weights-cache key of the panels of `sources`, when every source (and scale) has an
/// origin that names its values across processes.
fn disk_key(
    sources: &[PackInput<'_>],
    k: usize,
    n: usize,
    format: Option<CompactFormat>,
) -> Option<String> {
    let format = format.map_or("f32", CompactFormat::name);
    let mut key = format!("panels v{PANEL_FORMAT} nr{GEMM_NR} kg{GEMM_KG} k{k} n{n} {format}");
    for s in sources {
        let scale = match s.scale {
            Some(d) => d.origin()?,
            None => "none",
        };
        key += &format!(
            " [{} transposed={} scale={scale}]",
            s.data.origin()?,
            s.transposed
        );
    }
    Some(key)
}

impl PackCache {
    /// The packed panels of one weight (8 columns each) or of a pair (4 + 4, see
    /// [`pack_pair_panels`]), viewed as `[k, n]`, packing them on first use; with `format`, in
    /// that compact format (for a weight exact in it, see [`narrow`] and [`to_q8`]).
    /// `None` when the panels are not cached and a source's raw data was released.
    pub fn get(
        &mut self,
        sources: &[PackInput<'_>],
        k: usize,
        n: usize,
        format: Option<CompactFormat>,
    ) -> Option<Arc<AlignedBuf>> {
        let key = (pack_ids(sources), k, n, format);
        if let Some((_, buf)) = self.map.get(&key) {
            return Some(buf.clone());
        }
        if sources.iter().any(|s| is_released(s.data)) {
            return None;
        }
        let f32_words = packed_words(sources.len(), k, n);
        let words = f32_words / panel_words(k) * panel_bytes(k, format) / 4;
        let key = disk_key(sources, k, n, format).zip(crate::weight_cache::global());
        if let Some((key, cache)) = &key
            && let Some(e) = cache.load(key)
            && let Some(buf) = AlignedBuf::mapped(e, crate::weight_cache::HEADER_BYTES, words)
        {
            self.disk_hits += 1;
            return Some(self.keep(sources, (k, n, format), buf));
        }
        let mut buf = AlignedBuf::zeroed(f32_words);
        match sources {
            [a, b] => pack_pair_into(buf.words_mut(), *a, *b, k, n),
            _ => {
                let s = sources[0];
                let scale = s.scale.map(|v| v.as_words());
                pack_into(
                    buf.words_mut(),
                    s.data.as_words(),
                    k,
                    n,
                    s.transposed,
                    scale,
                )
            }
        }
        match format {
            Some(f) if f.is_block() => buf = to_q8(&buf, k, f)?,
            Some(half) => buf = narrow(&buf, half)?,
            None => {}
        }
        // The next process maps these panels instead of packing.
        if let Some((key, cache)) = key {
            cache.store(&key, words * 4, |w| w.words(buf.words()));
        }
        Some(self.keep(sources, (k, n, format), buf))
    }

    /// Caches `buf` as the panels of `sources` (of K, N and format `shape`), keeping the
    /// sources alive.
    fn keep(
        &mut self,
        sources: &[PackInput<'_>],
        (k, n, format): (usize, usize, Option<CompactFormat>),
        buf: AlignedBuf,
    ) -> Arc<AlignedBuf> {
        let key = (pack_ids(sources), k, n, format);
        let buf = Arc::new(buf);
        self.bytes += buf.len() * 4;
        *self
            .bytes_by_format
            .entry(format.map_or("f32", CompactFormat::name))
            .or_default() += buf.len() * 4;
        let keep = sources
            .iter()
            .flat_map(|s| std::iter::once(s.data.clone()).chain(s.scale.cloned()))
            .collect();
        self.map.insert(key, (keep, buf.clone()));
        buf
    }

    /// Returns the raw pages of a weight that is cached packed to the OS: for a weight that
    /// nothing reads unpacked, which halves the resident memory of a model's weights. A later
    /// miss that needs it answers `None`, and a plan or the interpreter that reads it raw
    /// refuses to run. Data under a page is left alone (and not registered).
    pub(crate) fn release(&mut self, data: &HostData) {
        let mut reg = RELEASED.lock().unwrap_or_else(|e| e.into_inner());
        if data.is_empty() || reg.contains_key(&data.addr()) {
            return;
        }
        // Registered first, so no reader in the runtime can bind it from here on.
        reg.insert(data.addr(), data.clone());
        // SAFETY: registered above: every runtime reader of raw data refuses it now.
        let freed = unsafe { crate::buffer::release_pages(data.as_words()) };
        if freed == 0 {
            reg.remove(&data.addr());
        }
        self.released_bytes += freed;
    }

    /// Number of packed matrices.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is packed.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cranegrad_lower::kernel::panel_offset;

    /// The packed word at (panel, kk, column).
    fn at(p: &AlignedBuf, k: usize, panel: usize, kk: usize, col: usize) -> u32 {
        p.words()[panel * panel_words(k) + panel_offset(kk, col)]
    }

    #[test]
    fn panels_hold_four_k_runs_per_column_with_zero_padding() {
        let (k, n) = (6, 10);
        let src: Vec<u32> = (0..(k * n) as u32).collect();
        let p = pack_panels(&src, k, n, false, None);
        assert_eq!(p.words().len(), 2 * 8 * 8);
        // Panel 0, group 0: column 0's k = 0..4, then column 1's.
        assert_eq!(&p.words()[..8], &[0, 10, 20, 30, 1, 11, 21, 31]);
        for kk in 0..k {
            for j in 0..n {
                assert_eq!(at(&p, k, j / 8, kk, j % 8), (kk * n + j) as u32);
            }
        }
        // k padded to 8, columns padded to 16: zeros.
        assert_eq!(at(&p, k, 0, 7, 3), 0);
        assert_eq!(at(&p, k, 1, 2, 5), 0);
        // The same matrix stored transposed ([n, k]) packs to the same panels.
        let t: Vec<u32> = (0..n)
            .flat_map(|j| (0..k).map(move |i| (i * n + j) as u32))
            .collect();
        assert_eq!(pack_panels(&t, k, n, true, None).words(), p.words());
    }

    #[test]
    fn a_row_scale_multiplies_each_k_row() {
        let (k, n) = (3, 9);
        let src: Vec<u32> = (0..k * n).map(|i| (i as f32).to_bits()).collect();
        let scale: Vec<u32> = [2.0f32, -1.0, 0.5].iter().map(|v| v.to_bits()).collect();
        let p = pack_panels(&src, k, n, false, Some(&scale));
        let f = |panel, kk, col| f32::from_bits(at(&p, k, panel, kk, col));
        // Row 1 (9..18) times -1; column 8 of row 2 (26) times 0.5.
        assert_eq!(f(0, 1, 0), -9.0);
        assert_eq!(f(0, 1, 7), -16.0);
        assert_eq!(f(1, 2, 0), 13.0);
        assert_eq!(f(1, 2, 1), 0.0);
        let t: Vec<u32> = (0..n)
            .flat_map(|j| (0..k).map(move |i| ((i * n + j) as f32).to_bits()))
            .collect();
        assert_eq!(pack_panels(&t, k, n, true, Some(&scale)).words(), p.words());
    }

    #[test]
    fn pair_panels_interleave_four_columns_of_each_weight() {
        let (k, n) = (2, 6);
        let a = HostData::from((0..k * n).map(|i| i as f32).collect::<Vec<f32>>());
        let b = HostData::from((0..k * n).map(|i| 100.0 + i as f32).collect::<Vec<f32>>());
        let input = |d| PackInput {
            data: d,
            transposed: false,
            scale: None,
        };
        let p = pack_pair_panels(input(&a), input(&b), k, n);
        let f = |panel, kk, col| f32::from_bits(at(&p, k, panel, kk, col));
        // Panel 0, k = 1: columns 0..4 of row 1 of a, then of b.
        let row: Vec<f32> = (0..8).map(|c| f(0, 1, c)).collect();
        assert_eq!(row, [6.0, 7.0, 8.0, 9.0, 106.0, 107.0, 108.0, 109.0]);
        // Panel 1, k = 0: columns 4, 5 of a, zeros, then of b.
        let row: Vec<f32> = (0..8).map(|c| f(1, 0, c)).collect();
        assert_eq!(row, [4.0, 5.0, 0.0, 0.0, 104.0, 105.0, 0.0, 0.0]);
    }
}
