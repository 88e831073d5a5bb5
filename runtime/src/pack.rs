//! Weight packing for the GEMM micro-kernel: a row-major `[K, N]` matrix becomes 8-column
//! panels, each `[K, 8]` contiguous and zero-padded, so the kernel streams B sequentially.
//! Packed copies are cached by the source data, which the cache keeps alive (so its address
//! cannot be reused by other data while the entry exists).

use std::collections::HashMap;
use std::sync::Arc;

use cranegrad_graph::HostData;
use cranegrad_lower::kernel::GEMM_NR;

use crate::buffer::AlignedBuf;

/// Cache key: source address, K, N, transposed, address of the row scale (0 for none).
type PackKey = (usize, usize, usize, bool, usize);

/// Packed copies by source and layout.
#[derive(Default)]
pub struct PackCache {
    map: HashMap<PackKey, (HostData, Option<HostData>, Arc<AlignedBuf>)>,
    /// Bytes held by packed copies.
    pub bytes: usize,
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
                    // Column c of panel p is source row p*8 + c: read it once, in order.
                    for q in 0..np {
                        let p = p0 + q;
                        let cols = (n - p * GEMM_NR).min(GEMM_NR);
                        let panel = &mut chunk[q * k * GEMM_NR..(q + 1) * k * GEMM_NR];
                        for c in 0..cols {
                            let row = &src[(p * GEMM_NR + c) * k..(p * GEMM_NR + c + 1) * k];
                            for (kk, &w) in row.iter().enumerate() {
                                panel[kk * GEMM_NR + c] = at(w, kk);
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
    /// The packed copy of `data` viewed as `[k, n]` (or `[n, k]` when `transposed`), its
    /// rows scaled by `scale` (at least `k` values) if given, packing it on first use.
    pub fn get(
        &mut self,
        data: &HostData,
        k: usize,
        n: usize,
        transposed: bool,
        scale: Option<&HostData>,
    ) -> Arc<AlignedBuf> {
        let scale_addr = scale.map_or(0, |s| s.as_words().as_ptr() as usize);
        let key = (
            data.as_words().as_ptr() as usize,
            k,
            n,
            transposed,
            scale_addr,
        );
        if let Some((_, _, buf)) = self.map.get(&key) {
            return buf.clone();
        }
        let words = scale.map(|s| s.as_words());
        let buf = Arc::new(pack_panels(data.as_words(), k, n, transposed, words));
        self.bytes += buf.len() * 4;
        self.map
            .insert(key, (data.clone(), scale.cloned(), buf.clone()));
        buf
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
}
