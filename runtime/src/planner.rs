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

/// Bytes of intermediate buffers live during each launch of `s`: temporaries from their first
/// write to their last read, outputs from their first write on. The peak is at most what the
/// arena plus the outputs take; the curve is what `bench --memory-plot` draws.
pub fn live_bytes(s: &Schedule) -> Vec<usize> {
    let n = s.launches.len();
    let mut live = vec![0usize; n];
    for (b, buf) in s.buffers.iter().enumerate() {
        let temp = matches!(buf.kind, BufKind::Temp);
        if !temp && !matches!(buf.kind, BufKind::Output) {
            continue;
        }
        let used: Vec<usize> = (0..n)
            .filter(|&k| s.launches[k].args.contains(&b))
            .collect();
        let (Some(&first), Some(&last)) = (used.first(), used.last()) else {
            continue;
        };
        let end = if temp { last } else { n - 1 };
        for l in &mut live[first..=end] {
            *l += buf.len() * 4;
        }
    }
    live
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

#[cfg(test)]
mod tests {
    use super::*;
    use cranegrad_graph::{DType, Graph, Shape};
    use cranegrad_lower::{LowerOptions, lower_tensors};

    #[test]
    fn live_bytes_follow_each_buffer_from_first_write_to_last_read() {
        let g = Graph::new();
        let x = g.input("x", Shape::of(&[64, 64]), DType::F32);
        let y = x.matmul(&x).unwrap();
        let z = y.matmul(&x).unwrap().exp().unwrap();
        let l = lower_tensors(&[&z], LowerOptions::default()).unwrap();
        let live = live_bytes(&l.schedule);
        assert_eq!(live.len(), l.schedule.launches.len());
        let plan = plan_memory(&l.schedule);
        let outputs: usize = l
            .schedule
            .outputs
            .iter()
            .map(|&b| l.schedule.buffers[b].len() * 4)
            .sum();
        let peak = live.iter().copied().max().unwrap();
        // y (a temporary) is live while written and read; the output from its write on.
        assert!(
            peak >= outputs && peak <= plan.arena_bytes + outputs,
            "{live:?}"
        );
        assert!(*live.last().unwrap() >= outputs);
    }
}
