//! Reductions across outputs over a strided axis (a column sum `x.sum(0)`): the lanes are
//! neighbouring outputs and each reduce step reads one row of them. Taken four outputs at a
//! time, every step touches a new cache line and, past 4 KB rows, a new page, and the
//! hardware prefetcher sees no stream: measured on `[4096, 1024].sum(0)`, that ran 12-19x
//! slower than the same bytes summed along rows, and so did chunks of 256 outputs. So the
//! thread's whole range of outputs (up to 4096 of them) runs row-major: per reduce step, one
//! contiguous run of the row into vector accumulators kept in a stack slot, which reads the
//! matrix front to back; then the range's epilogues. Each output still accumulates its own
//! values in reduce order: results are unchanged.

use cranelift_codegen::ir::{
    InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value, condcodes::IntCC, types,
};
use cranelift_frontend::FunctionBuilder;

use cranegrad_lower::kernel::Expr;

use crate::emit::{Emitter, LANES, Val, emit_loop, emit_while, vector_ty};

/// Most vectors of outputs per chunk (16 KB of accumulators per reduction).
const CHUNK_VECTORS: i64 = 1024;

fn slot_flags() -> MemFlagsData {
    crate::emit::vflags().with_notrap()
}

impl Emitter<'_> {
    /// Outputs `[start, end)` of innermost output loop `lane` in chunks of whole vectors;
    /// returns where the chunks end (less than 4 outputs before `end`).
    pub(crate) fn strided_reduce(
        &mut self,
        b: &mut FunctionBuilder,
        vars: &mut [Option<Value>],
        extents: &[Value],
        lane: usize,
        start: Value,
        end: Value,
    ) -> Value {
        let whole = |b: &mut FunctionBuilder, i: Value| {
            let left = b.ins().isub(end, i);
            b.ins().sshr_imm_s(left, 2)
        };
        emit_while(
            b,
            start,
            |b, i| {
                let w = whole(b, i);
                b.ins().icmp_imm_s(IntCC::SignedGreaterThan, w, 0)
            },
            |b, i| {
                let w = whole(b, i);
                let cap = b.ins().iconst(types::I64, CHUNK_VECTORS);
                let count = b.ins().smin(w, cap);
                vars[lane] = Some(i);
                self.strided_reduce_chunk(b, vars, extents, lane, count);
                let width = b.ins().ishl_imm_s(count, 2);
                b.ins().iadd(i, width)
            },
        )
    }

    /// The `vectors` vectors of outputs from `vars[lane]` of innermost output loop `lane`:
    /// per reduction, the values its loop reads from outside it (earlier reductions, what is
    /// computed from them, per-output loads) once per vector into slots, then the reduction
    /// row-major into its own slot; last, every output's epilogue and stores.
    fn strided_reduce_chunk(
        &mut self,
        b: &mut FunctionBuilder,
        vars: &mut [Option<Value>],
        extents: &[Value],
        lane: usize,
        vectors: Value,
    ) {
        let c0 = vars[lane].expect("lane loop set");
        let n = self.k.exprs.len();
        // Static lane extents need smaller slots than the cap.
        let slot_vectors = self.k.loops[lane]
            .extent
            .as_const()
            .map_or(CHUNK_VECTORS, |e| {
                (e as i64 / LANES).clamp(1, CHUNK_VECTORS)
            });
        // A new slot's address, taken once, before the loops that use it.
        let new_slot = |b: &mut FunctionBuilder| {
            let slot = b.create_sized_stack_slot(StackSlotData::new(
                StackSlotKind::ExplicitSlot,
                (slot_vectors * 16) as u32,
                4,
            ));
            b.ins().stack_addr(types::I64, slot, 0)
        };
        // Vector `v`'s place in the slot at `base`, and its first output's index.
        let at = |b: &mut FunctionBuilder, v: Value, base: Value| {
            let off = b.ins().ishl_imm_s(v, 4);
            b.ins().iadd(base, off)
        };
        let column = |b: &mut FunctionBuilder, v: Value| {
            let off = b.ins().imul_imm_s(v, LANES);
            b.ins().iadd(c0, off)
        };
        // Every value kept in a slot (reductions and the values their loops read), loaded for
        // vector `v`.
        let mut slots: Vec<(usize, Value)> = Vec::new();
        let load = |this: &Self,
                    b: &mut FunctionBuilder,
                    v: Value,
                    slots: &[(usize, Value)],
                    only: Option<&[usize]>| {
            let mut vals: Vec<Option<Val>> = vec![None; n];
            for &(e, slot) in slots {
                if only.is_some_and(|o| !o.contains(&e)) {
                    continue;
                }
                let p = at(b, v, slot);
                let ty = vector_ty(this.k.exprs[e].dtype());
                vals[e] = Some(Val {
                    v: b.ins().load(ty, slot_flags(), p, 0),
                    vector: true,
                });
            }
            vals
        };
        let zero = b.ins().iconst(types::I64, 0);
        for e in 0..n {
            let Expr::Reduce { op, dtype, var, .. } = self.k.exprs[e] else {
                continue;
            };
            let (inner, all_outside) = self.loop_split(e);
            // Constants are splatted in place; the rest is kept in slots.
            let (consts, outside): (Vec<usize>, Vec<usize>) = all_outside
                .into_iter()
                .partition(|&o| matches!(self.k.exprs[o], Expr::Const { .. }));
            let fresh: Vec<usize> = outside
                .iter()
                .copied()
                .filter(|&o| slots.iter().all(|&(s, _)| s != o))
                .collect();
            if !fresh.is_empty() {
                let kept: Vec<(usize, Value)> = fresh.iter().map(|&o| (o, new_slot(b))).collect();
                emit_loop(b, zero, vectors, 1, |b, v| {
                    vars[lane] = Some(column(b, v));
                    let mut local = load(self, b, v, &slots, None);
                    for &(o, slot) in &kept {
                        self.ensure(b, o, &mut local, vars, Some(lane), true);
                        let val = local[o].expect("computed");
                        let val = self.widen(b, val, self.k.exprs[o].dtype());
                        let p = at(b, v, slot);
                        b.ins().store(slot_flags(), val.v, p, 0);
                    }
                });
                slots.extend(kept);
            }
            let acc_slot = new_slot(b);
            let init = self.identity(b, op, dtype, true);
            // Constants once, splatted before the loops.
            let mut fixed: Vec<Option<Val>> = vec![None; n];
            for &c in &consts {
                self.ensure(b, c, &mut fixed, vars, Some(lane), true);
            }
            let splats = self.presplat(b, &fixed, consts.iter().copied());
            emit_loop(b, zero, vectors, 1, |b, v| {
                let p = at(b, v, acc_slot);
                b.ins().store(slot_flags(), init, p, 0);
            });
            emit_loop(b, zero, extents[var], 1, |b, r| {
                vars[var] = Some(r);
                emit_loop(b, zero, vectors, 1, |b, v| {
                    vars[lane] = Some(column(b, v));
                    let mut local = load(self, b, v, &slots, Some(&outside));
                    for &c in &consts {
                        local[c] = fixed[c];
                    }
                    let p = at(b, v, acc_slot);
                    let acc = b.ins().load(vector_ty(dtype), slot_flags(), p, 0);
                    let nv = self.reduce_step(b, e, &inner, local, vars, (Some(lane), true), acc);
                    b.ins().store(slot_flags(), nv, p, 0);
                });
            });
            self.forget_splats(splats);
            vars[var] = None;
            slots.push((e, acc_slot));
        }
        emit_loop(b, zero, vectors, 1, |b, v| {
            vars[lane] = Some(column(b, v));
            let mut local = load(self, b, v, &slots, None);
            self.point_with(b, &mut local, vars, extents, true);
        });
        vars[lane] = Some(c0);
    }
}
