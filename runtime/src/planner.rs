//! The memory planner: intermediate buffers whose lifetimes (first write .. last read) do not
//! overlap share memory in one arena. Greedy best-fit by size, largest first, which is what
//! TFLite and tinygrad's memory planners do; the planned peak is reported.

use cranegrad_lower::{BufKind, Schedule};

use crate::buffer::ALIGN;

/// Where each temporary buffer lives in the arena.
#[derive(Clone, Debug, Default)]
pub struct MemoryPlan {
    /// Byte offset in the arena per buffer (`None` for inputs and outputs).
    pub offsets: Vec<Option<usize>>,
    /// Arena size in bytes: the planned peak of intermediate memory.
    pub arena_bytes: usize,
    /// Sum of all temporary buffer sizes, i.e. the peak without reuse.
    pub unplanned_bytes: usize,
}

/// Assigns arena offsets to the temporaries of `s` so that buffers alive at the same time
/// never overlap.
pub fn plan_memory(s: &Schedule) -> MemoryPlan {
    let n = s.buffers.len();
    let mut first = vec![usize::MAX; n];
    let mut last = vec![0usize; n];
    for (k, l) in s.launches.iter().enumerate() {
        for &b in &l.args {
            first[b] = first[b].min(k);
            last[b] = last[b].max(k);
        }
    }
    let mut temps: Vec<(usize, usize)> = (0..n)
        .filter(|&b| matches!(s.buffers[b].kind, BufKind::Temp) && first[b] != usize::MAX)
        .map(|b| (b, (s.buffers[b].len() * 4).next_multiple_of(ALIGN)))
        .collect();
    temps.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut placed: Vec<(usize, usize, usize)> = Vec::new(); // (buffer, offset, bytes)
    let mut offsets = vec![None; n];
    let mut arena = 0;
    for &(b, bytes) in &temps {
        // Intervals of placed buffers whose lifetime overlaps this one, sorted by offset.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&(o, _, _)| first[o] <= last[b] && first[b] <= last[o])
            .map(|&(_, off, sz)| (off, off + sz))
            .collect();
        busy.sort_unstable();
        let mut best: Option<(usize, usize)> = None; // (gap size, offset)
        let mut cursor = 0;
        for &(start, end) in &busy {
            if start >= cursor + bytes {
                let gap = start - cursor;
                if best.is_none_or(|(g, _)| gap < g) {
                    best = Some((gap, cursor));
                }
            }
            cursor = cursor.max(end);
        }
        let off = best.map_or(cursor, |(_, o)| o);
        offsets[b] = Some(off);
        arena = arena.max(off + bytes);
        placed.push((b, off, bytes));
    }
    MemoryPlan {
        offsets,
        arena_bytes: arena,
        unplanned_bytes: temps.iter().map(|t| t.1).sum(),
    }
}
