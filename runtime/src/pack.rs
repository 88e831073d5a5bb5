//! Weight packing for the GEMM micro-kernel: a row-major `[K, N]` matrix becomes 8-column
//! panels, each `[K, 8]` contiguous and zero-padded, so the kernel streams B sequentially.
//! Packed copies are cached by the source data, which the cache keeps alive (so its address
//! cannot be reused by other data while the entry exists).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use cranegrad_graph::HostData;
use cranegrad_lower::kernel::GEMM_NR;

use crate::buffer::AlignedBuf;

/// Cache key: per source (address, transposed, address of its row scale or 0), then K, N.
type PackKey = (Vec<(usize, bool, usize)>, usize, usize);

/// Every weight whose raw pages were returned to the OS, by address, process-wide: any
/// session or the interpreter that would read one raw refuses instead of reading zeros. The
/// entry keeps the (now empty) allocation alive, so its address is never reused.
static RELEASED: Mutex<BTreeMap<usize, HostData>> = Mutex::new(BTreeMap::new());

/// True when `data`'s raw pages were returned to the OS (see [`PackCache::release`]).
pub fn is_released(data: &HostData) -> bool {
    let reg = RELEASED.lock().unwrap_or_else(|e| e.into_inner());
    !reg.is_empty() && reg.contains_key(&addr(data))
}

/// The address a weight is known by.
fn addr(d: &HostData) -> usize {
    d.addr()
}

/// Packed copies by source and layout.
#[derive(Default)]
pub struct PackCache {
    /// Each entry keeps its sources alive, so their addresses stay unique keys.
    map: HashMap<PackKey, (Vec<HostData>, Arc<AlignedBuf>)>,
    /// Bytes held by packed copies.
    pub bytes: usize,
    /// Bytes of raw weight data this cache returned to the OS (see [`Self::release`]).
    pub released_bytes: usize,
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

/// One column of a panel: its position, its source row of `[n, k]` and that weight's scale.
type PanelColumn<'s> = (usize, &'s [u32], Option<&'s [f32]>);

/// Packs two weights of one shape for a paired GEMM: panel `p` holds columns `4p..4p+4` of
/// `a` in its first four columns and the same columns of `b` in the last four, so one
/// micro-kernel accumulates both products of the same A rows.
pub fn pack_pair_panels(a: PackInput<'_>, b: PackInput<'_>, k: usize, n: usize) -> AlignedBuf {
    const HALF: usize = GEMM_NR / 2;
    let panels = n.div_ceil(HALF);
    let mut out = AlignedBuf::zeroed(panels * k * GEMM_NR);
    if k == 0 || panels == 0 {
        return out;
    }
    // (words, transposed, row scale) per weight.
    type Source<'s> = (&'s [u32], bool, Option<Vec<f32>>);
    let sources: Vec<Source<'_>> = [a, b]
        .iter()
        .map(|s| {
            let scale = s.scale.map(|v| {
                v.as_words()[..k]
                    .iter()
                    .map(|&w| f32::from_bits(w))
                    .collect()
            });
            (s.data.as_words(), s.transposed, scale)
        })
        .collect();
    let sources = &sources;
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let per = panels.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|sc| {
        for (t, chunk) in out.words_mut().chunks_mut(per * k * GEMM_NR).enumerate() {
            sc.spawn(move || {
                for q in 0..chunk.len() / (k * GEMM_NR) {
                    let p = t * per + q;
                    let cols = (n - p * HALF).min(HALF);
                    if sources.iter().all(|s| s.1) {
                        // Both `[n, k]`: the panel is written in order, its source rows
                        // (4 of each weight) read as sequential streams.
                        let panel = &mut chunk[q * k * GEMM_NR..(q + 1) * k * GEMM_NR];
                        let rows: Vec<PanelColumn<'_>> = sources
                            .iter()
                            .enumerate()
                            .flat_map(|(h, (src, _, scale))| {
                                (0..cols).map(move |c| {
                                    let j = p * HALF + c;
                                    (h * HALF + c, &src[j * k..(j + 1) * k], scale.as_deref())
                                })
                            })
                            .collect();
                        for (kk, out) in panel.chunks_exact_mut(GEMM_NR).enumerate() {
                            for &(col, row, scale) in &rows {
                                out[col] = match scale {
                                    Some(s) => (f32::from_bits(row[kk]) * s[kk]).to_bits(),
                                    None => row[kk],
                                };
                            }
                        }
                        continue;
                    }
                    for (h, (src, transposed, scale)) in sources.iter().enumerate() {
                        for c in 0..cols {
                            let j = p * HALF + c;
                            for kk in 0..k {
                                let w = if *transposed {
                                    src[j * k + kk]
                                } else {
                                    src[kk * n + j]
                                };
                                let w = match scale {
                                    Some(s) => (f32::from_bits(w) * s[kk]).to_bits(),
                                    None => w,
                                };
                                chunk[(q * k + kk) * GEMM_NR + h * HALF + c] = w;
                            }
                        }
                    }
                }
            });
        }
    });
    out
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
    let panels = n.div_ceil(GEMM_NR);
    let mut out = AlignedBuf::zeroed(panels * k * GEMM_NR);
    if k == 0 || panels == 0 {
        return out;
    }
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let per = panels.div_ceil(threads.max(1)).max(1);
    let scale: Option<Vec<f32>> =
        scale.map(|s| s[..k].iter().map(|&w| f32::from_bits(w)).collect());
    let scale = scale.as_deref();
    let at = move |w: u32, kk: usize| match scale {
        Some(s) => (f32::from_bits(w) * s[kk]).to_bits(),
        None => w,
    };
    std::thread::scope(|s| {
        for (t, chunk) in out.words_mut().chunks_mut(per * k * GEMM_NR).enumerate() {
            s.spawn(move || {
                let p0 = t * per;
                let np = chunk.len() / (k * GEMM_NR);
                if transposed {
                    // Column c of panel p is source row p*8 + c: the panel is written in
                    // order, its 8 source rows read as 8 sequential streams.
                    for q in 0..np {
                        let p = p0 + q;
                        let cols = (n - p * GEMM_NR).min(GEMM_NR);
                        let panel = &mut chunk[q * k * GEMM_NR..(q + 1) * k * GEMM_NR];
                        let rows: Vec<&[u32]> = (0..cols)
                            .map(|c| &src[(p * GEMM_NR + c) * k..(p * GEMM_NR + c + 1) * k])
                            .collect();
                        for (kk, out) in panel.chunks_exact_mut(GEMM_NR).enumerate() {
                            for (c, row) in rows.iter().enumerate() {
                                out[c] = at(row[kk], kk);
                            }
                        }
                    }
                } else {
                    // Rows of `src` in order, one 32-byte run into each panel per row.
                    for kk in 0..k {
                        for q in 0..np {
                            let p = p0 + q;
                            let cols = (n - p * GEMM_NR).min(GEMM_NR);
                            let s = kk * n + p * GEMM_NR;
                            let d = (q * k + kk) * GEMM_NR;
                            if scale.is_some() {
                                for c in 0..cols {
                                    chunk[d + c] = at(src[s + c], kk);
                                }
                            } else if cols == GEMM_NR {
                                let from: &[u32; GEMM_NR] =
                                    src[s..s + GEMM_NR].try_into().expect("8 words");
                                chunk[d..d + GEMM_NR].copy_from_slice(from);
                            } else {
                                chunk[d..d + cols].copy_from_slice(&src[s..s + cols]);
                            }
                        }
                    }
                }
            });
        }
    });
    out
}

impl PackCache {
    /// The packed panels of one weight (8 columns each) or of a pair (4 + 4, see
    /// [`pack_pair_panels`]), viewed as `[k, n]`, packing them on first use.
    /// `None` when the panels are not cached and a source's raw data was released.
    pub fn get(
        &mut self,
        sources: &[PackInput<'_>],
        k: usize,
        n: usize,
    ) -> Option<Arc<AlignedBuf>> {
        let ids = sources
            .iter()
            .map(|s| (addr(s.data), s.transposed, s.scale.map_or(0, addr)))
            .collect();
        let key = (ids, k, n);
        if let Some((_, buf)) = self.map.get(&key) {
            return Some(buf.clone());
        }
        if sources.iter().any(|s| is_released(s.data)) {
            return None;
        }
        let buf = Arc::new(match sources {
            [a, b] => pack_pair_panels(*a, *b, k, n),
            _ => {
                let s = sources[0];
                let scale = s.scale.map(|v| v.as_words());
                pack_panels(s.data.as_words(), k, n, s.transposed, scale)
            }
        });
        self.bytes += buf.len() * 4;
        let keep = sources
            .iter()
            .flat_map(|s| std::iter::once(s.data.clone()).chain(s.scale.cloned()))
            .collect();
        self.map.insert(key, (keep, buf.clone()));
        Some(buf)
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

    #[test]
    fn panels_hold_columns_in_order_with_zero_padding() {
        let (k, n) = (3, 10);
        let src: Vec<u32> = (0..(k * n) as u32).collect();
        let p = pack_panels(&src, k, n, false, None);
        let w = p.words();
        // Panel 0, k = 1: columns 0..8 of row 1.
        assert_eq!(&w[8..16], &[10, 11, 12, 13, 14, 15, 16, 17]);
        // Panel 1, k = 2: columns 8, 9 of row 2, then zeros.
        let d = (k + 2) * 8;
        assert_eq!(&w[d..d + 8], &[28, 29, 0, 0, 0, 0, 0, 0]);
        // The same matrix stored transposed ([n, k]) packs to the same panels.
        let t: Vec<u32> = (0..n)
            .flat_map(|j| (0..k).map(move |i| (i * n + j) as u32))
            .collect();
        assert_eq!(pack_panels(&t, k, n, true, None).words(), w);
    }

    #[test]
    fn a_row_scale_multiplies_each_k_row() {
        let (k, n) = (3, 9);
        let src: Vec<u32> = (0..k * n).map(|i| (i as f32).to_bits()).collect();
        let scale: Vec<u32> = [2.0f32, -1.0, 0.5].iter().map(|v| v.to_bits()).collect();
        let p = pack_panels(&src, k, n, false, Some(&scale));
        let w: Vec<f32> = p.words().iter().map(|&b| f32::from_bits(b)).collect();
        // Panel 0, k = 1: row 1 (9..17) times -1.
        assert_eq!(
            &w[8..16],
            &[-9.0, -10.0, -11.0, -12.0, -13.0, -14.0, -15.0, -16.0]
        );
        // Panel 1, k = 2: column 8 of row 2 (26) times 0.5, then zero padding.
        assert_eq!(&w[(k + 2) * 8..(k + 2) * 8 + 2], &[13.0, 0.0]);
        let t: Vec<u32> = (0..n)
            .flat_map(|j| (0..k).map(move |i| ((i * n + j) as f32).to_bits()))
            .collect();
        assert_eq!(pack_panels(&t, k, n, true, Some(&scale)).words(), p.words());
    }

    #[test]
    fn pair_panels_interleave_four_columns_of_each_weight() {
        let (k, n) = (2, 6);
        let a = HostData::F32(Arc::new((0..k * n).map(|i| i as f32).collect()));
        let b = HostData::F32(Arc::new((0..k * n).map(|i| 100.0 + i as f32).collect()));
        let input = |d| PackInput {
            data: d,
            transposed: false,
            scale: None,
        };
        let p = pack_pair_panels(input(&a), input(&b), k, n);
        let w: Vec<f32> = p.words().iter().map(|&x| f32::from_bits(x)).collect();
        // Panel 0, k = 1: columns 0..4 of row 1 of a, then of b.
        assert_eq!(&w[8..16], &[6.0, 7.0, 8.0, 9.0, 106.0, 107.0, 108.0, 109.0]);
        // Panel 1, k = 0: columns 4, 5 of a, zeros, then of b.
        assert_eq!(&w[16..24], &[4.0, 5.0, 0.0, 0.0, 104.0, 105.0, 0.0, 0.0]);
    }
}
