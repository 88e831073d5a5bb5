//! The GEMM path: a kernel whose reduction is `sum(A[m, k] * B[k, n])` (plus any epilogue)
//! runs as register-blocked micro-kernels over blocks of 4 rows x 8 columns. One work unit
//! is one (8-column panel, 4-row block); units are ordered panel-major so each thread
//! streams its own panels of B once.
//!
//! With packed B (weights), the k loop multiplies 4-k runs of A rows by the 4-k runs the
//! panel stores per column, lane-wise into eight accumulators, and sums lanes once at the
//! end: no broadcast in the loop. With unpacked B (`[K, N]`, N contiguous), each k step
//! broadcasts one A value per row against two column vectors of B.

use cranelift_codegen::ir::{
    InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type, Value, condcodes::IntCC, types,
};
use cranelift_frontend::{FunctionBuilder, Variable};

use cranegrad_graph::CompactFormat;
use cranegrad_lower::kernel::{
    Expr, GEMM_KG, GEMM_MR, GEMM_NR, GemmSpec, Kernel, int8_chunk_rows, panel_bytes,
};

use crate::emit::{Emitter, Val, emit_loop, emit_while, split_flat};
use crate::memory::{build_vector, byte_addr};

/// Vector loads of B: notrap, readonly (B is a weight or an input, never written here).
pub(crate) fn b_flags() -> MemFlagsData {
    crate::emit::vflags().with_notrap().with_readonly()
}

impl Emitter<'_> {
    /// Sets the row loop variables from a flat row index.
    pub(crate) fn row_vars(
        &self,
        b: &mut FunctionBuilder,
        g: &GemmSpec,
        vars: &mut [Option<Value>],
        extents: &[Value],
        row: Value,
    ) {
        split_flat(b, row, extents, g.n_loop, vars);
    }

    /// Emits the unit loop over `[start, end)`.
    pub(crate) fn gemm(
        &mut self,
        b: &mut FunctionBuilder,
        g: &GemmSpec,
        vars: &mut [Option<Value>],
        extents: &[Value],
        start: Value,
        end: Value,
    ) {
        if let Some(rr) = g.row_reduce {
            self.row_statistics(b, g, rr, vars, extents);
        }
        if !g.int8_dot {
            self.int8_rows = None;
            return self.gemm_units(b, g, vars, extents, (start, end), None);
        }
        // Integer dot products: A's rows quantised a chunk at a time (all of them at once when
        // they fit the stack), each chunk's units run while it is held.
        let k = g_k(self, g);
        let slot = self.quantised_rows_slot(b, g, k);
        let format = g.compact.expect("select_integer_dot checked the format");
        let chunk = int8_chunk_rows(g.rows, k as usize, format) as i64;
        let zero = b.ins().iconst(types::I64, 0);
        let rows = b.ins().iconst(types::I64, g.rows as i64);
        // Every chunk, the last a partial one (`emit_loop` runs whole steps only).
        let more = |b: &mut FunctionBuilder, first: Value| {
            b.ins().icmp(IntCC::SignedLessThan, first, rows)
        };
        emit_while(b, zero, more, |b, first| {
            let next = b.ins().iadd_imm_s(first, chunk);
            let last = b.ins().smin(next, rows);
            self.int8_rows = Some(self.quantise_rows(b, g, vars, extents, slot, (first, last)));
            let blocks = if chunk >= g.rows as i64 {
                None
            } else {
                let lo = b.ins().ushr_imm_u(first, GEMM_MR.ilog2() as i64);
                let hi = b.ins().iadd_imm_s(lo, chunk / GEMM_MR as i64);
                Some((lo, hi))
            };
            self.gemm_units(b, g, vars, extents, (start, end), blocks);
            next
        });
    }

    /// The units `[start, end)`; with `blocks`, only those whose row block is in
    /// `[lo, hi)` (the quantised chunk held).
    fn gemm_units(
        &mut self,
        b: &mut FunctionBuilder,
        g: &GemmSpec,
        vars: &mut [Option<Value>],
        extents: &[Value],
        (start, end): (Value, Value),
        blocks: Option<(Value, Value)>,
    ) {
        let row_blocks = g.rows.div_ceil(GEMM_MR) as i64;
        // The unit's (panel, row block), advanced per unit: no division per unit (a real
        // `div` in the unoptimised code most GEMMs compile to).
        let rb_n = b.ins().iconst(types::I64, row_blocks);
        let (p_var, rb_var) = (b.declare_var(types::I64), b.declare_var(types::I64));
        let p_start = b.ins().udiv(start, rb_n);
        let rb_start = b.ins().urem(start, rb_n);
        b.def_var(p_var, p_start);
        b.def_var(rb_var, rb_start);
        emit_loop(b, start, end, 1, |b, _| {
            let p = b.use_var(p_var);
            let rb = b.use_var(rb_var);
            match blocks {
                None => self.gemm_unit(b, g, vars, extents, p, rb),
                Some((lo, hi)) => {
                    let from = b.ins().icmp(IntCC::SignedGreaterThanOrEqual, rb, lo);
                    let below = b.ins().icmp(IntCC::SignedLessThan, rb, hi);
                    let held = b.ins().band(from, below);
                    let (run, after) = (b.create_block(), b.create_block());
                    b.ins().brif(held, run, &[], after, &[]);
                    b.switch_to_block(run);
                    b.seal_block(run);
                    self.gemm_unit(b, g, vars, extents, p, rb);
                    b.ins().jump(after, &[]);
                    b.switch_to_block(after);
                    b.seal_block(after);
                }
            }
            let rb1 = b.ins().iadd_imm_s(rb, 1);
            let wrap = b.ins().icmp_imm_s(IntCC::Equal, rb1, row_blocks);
            let wrap = b.ins().uextend(types::I64, wrap);
            let p1 = b.ins().iadd(p, wrap);
            let zero = b.ins().iconst(types::I64, 0);
            let rb1 = b.ins().select(wrap, zero, rb1);
            b.def_var(p_var, p1);
            b.def_var(rb_var, rb1);
        });
    }

    /// One work unit: the 8-column panel `p` (4 + 4 paired) over row block `rb`.
    #[allow(clippy::too_many_arguments)]
    fn gemm_unit(
        &mut self,
        b: &mut FunctionBuilder,
        g: &GemmSpec,
        vars: &mut [Option<Value>],
        extents: &[Value],
        p: Value,
        rb: Value,
    ) {
        let pc = Kernel::panel_cols(g);
        let full_panels = (g.cols / pc) as i64;
        let full_blocks = (g.rows / GEMM_MR) as i64;
        {
            let n0 = b.ins().imul_imm_s(p, pc as i64);
            let r0 = b.ins().imul_imm_s(rb, GEMM_MR as i64);
            let panel_full = b.ins().icmp_imm_s(IntCC::SignedLessThan, p, full_panels);
            let (full, partial, done) = (b.create_block(), b.create_block(), b.create_block());
            b.ins().brif(panel_full, full, &[], partial, &[]);
            // Full 8-column panel.
            b.switch_to_block(full);
            b.seal_block(full);
            let block_full = b.ins().icmp_imm_s(IntCC::SignedLessThan, rb, full_blocks);
            let (four, ones, after) = (b.create_block(), b.create_block(), b.create_block());
            b.ins().brif(block_full, four, &[], ones, &[]);
            b.switch_to_block(four);
            b.seal_block(four);
            let rows: Vec<Value> = (0..GEMM_MR as i64)
                .map(|i| b.ins().iadd_imm_s(r0, i))
                .collect();
            self.micro_kernel(b, g, vars, extents, &rows, n0);
            b.ins().jump(after, &[]);
            b.switch_to_block(ones);
            b.seal_block(ones);
            let rows_end = b.ins().iconst(types::I64, g.rows as i64);
            emit_loop(b, r0, rows_end, 1, |b, r| {
                self.micro_kernel(b, g, vars, extents, &[r], n0);
            });
            b.ins().jump(after, &[]);
            b.switch_to_block(after);
            b.seal_block(after);
            b.ins().jump(done, &[]);
            // Last, partial panel: packed B is zero-padded, so the micro-kernel runs and only
            // the real columns are stored; otherwise the generic scalar path, column by column.
            b.switch_to_block(partial);
            b.seal_block(partial);
            if g.packed {
                let valid = g.cols % pc;
                let rows_end = b.ins().iconst(types::I64, g.rows as i64);
                let r_end = b.ins().iadd_imm_s(r0, GEMM_MR as i64);
                let r_end = b.ins().smin(r_end, rows_end);
                emit_loop(b, r0, r_end, 1, |b, r| {
                    self.micro_kernel_cols(b, g, vars, extents, &[r], n0, valid);
                });
                b.ins().jump(done, &[]);
                b.switch_to_block(done);
                b.seal_block(done);
                return;
            }
            let r_end = b.ins().iadd_imm_s(r0, GEMM_MR as i64);
            let rows_n = b.ins().iconst(types::I64, g.rows as i64);
            let r_end = b.ins().smin(r_end, rows_n);
            let cols_n = b.ins().iconst(types::I64, g.cols as i64);
            emit_loop(b, r0, r_end, 1, |b, r| {
                self.row_vars(b, g, vars, extents, r);
                emit_loop(b, n0, cols_n, 1, |b, n| {
                    vars[g.n_loop] = Some(n);
                    self.point(b, vars, extents, false);
                });
            });
            b.ins().jump(done, &[]);
            b.switch_to_block(done);
            b.seal_block(done);
        }
    }

    /// Computes the row reduction for every row into a stack array: once per call, so its
    /// cost (M x K) is spread over all the call's panels (M x K x N).
    fn row_statistics(
        &mut self,
        b: &mut FunctionBuilder,
        g: &GemmSpec,
        rr: usize,
        vars: &mut [Option<Value>],
        extents: &[Value],
    ) {
        let slot = b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (g.rows * 4) as u32,
            4,
        ));
        self.row_stats = Some(slot);
        let zero = b.ins().iconst(types::I64, 0);
        let rows_n = b.ins().iconst(types::I64, g.rows as i64);
        emit_loop(b, zero, rows_n, 1, |b, r| {
            self.row_vars(b, g, vars, extents, r);
            vars[g.n_loop] = None;
            // Only the row reduction runs here: the contraction is marked done.
            let mut vals: Vec<Option<Val>> = vec![None; self.k.exprs.len()];
            let placeholder = b.ins().f32const(0.0);
            for (e, ex) in self.k.exprs.iter().enumerate() {
                if e != rr && matches!(ex, Expr::Reduce { .. }) {
                    vals[e] = Some(Val {
                        v: placeholder,
                        vector: false,
                    });
                }
            }
            self.reductions(b, &mut vals, vars, extents, None);
            let v = vals[rr].expect("row reduction computed");
            let off = b.ins().imul_imm_s(r, 4);
            let base = b.ins().stack_addr(types::I64, slot, 0);
            let addr = b.ins().iadd(base, off);
            b.ins().store(MemFlagsData::trusted(), v.v, addr, 0);
        });
        for v in vars.iter_mut() {
            *v = None;
        }
    }

    /// The row reduction's value for flat row `row`, if the kernel has one.
    fn row_stat(&self, b: &mut FunctionBuilder, g: &GemmSpec, row: Value) -> Option<(usize, Val)> {
        let (rr, slot) = (g.row_reduce?, self.row_stats?);
        let off = b.ins().imul_imm_s(row, 4);
        let base = b.ins().stack_addr(types::I64, slot, 0);
        let addr = b.ins().iadd(base, off);
        let v = b.ins().load(types::F32, MemFlagsData::trusted(), addr, 0);
        Some((rr, Val { v, vector: false }))
    }

    /// `rows.len()` rows x 8 columns starting at column `n0`, then the epilogue and stores.
    fn micro_kernel(
        &mut self,
        b: &mut FunctionBuilder,
        g: &GemmSpec,
        vars: &mut [Option<Value>],
        extents: &[Value],
        rows: &[Value],
        n0: Value,
    ) {
        self.micro_kernel_cols(b, g, vars, extents, rows, n0, Kernel::panel_cols(g));
    }

    /// The micro-kernel storing only the first `valid` of its 8 columns (the last panel of a
    /// packed B).
    #[allow(clippy::too_many_arguments)]
    fn micro_kernel_cols(
        &mut self,
        b: &mut FunctionBuilder,
        g: &GemmSpec,
        vars: &mut [Option<Value>],
        extents: &[Value],
        rows: &[Value],
        n0: Value,
        valid: usize,
    ) {
        let (ai, bi) = match (&self.k.exprs[g.a], &self.k.exprs[g.b]) {
            (
                Expr::Load {
                    arg: aa, index: ia, ..
                },
                Expr::Load {
                    arg: ba, index: ib, ..
                },
            ) => ((*aa, ia.clone()), (*ba, ib.clone())),
            _ => unreachable!("gemm() matched two loads"),
        };
        let zero = b.ins().iconst(types::I64, 0);
        let k_total = g_k(self, g);
        // Bytes per k step of A, and of B when it is read unpacked.
        let ak = ai.1.coeff(g.k_loop) * 4;
        let bk = bi.1.coeff(g.k_loop) * 4;
        // Per-row A pointers at k = 0, and the B pointer of the panel.
        vars[g.k_loop] = Some(zero);
        vars[g.n_loop] = Some(n0);
        let mut a_ptrs = Vec::with_capacity(rows.len());
        for &r in rows {
            self.row_vars(b, g, vars, extents, r);
            let base = self.affine(b, &ai.1, vars);
            let p = byte_addr(b, self.ptrs[ai.0], base);
            let var = b.declare_var(types::I64);
            b.def_var(var, p);
            a_ptrs.push(var);
        }
        let b_base = if g.packed {
            // Panel n0/pc starts at byte (n0/pc) * panel_bytes; in words, a quarter of that.
            let per_col = panel_bytes(k_total as usize, g.compact) / 4 / Kernel::panel_cols(g);
            b.ins().imul_imm_s(n0, per_col as i64)
        } else {
            self.affine(b, &bi.1, vars)
        };
        let b_start = byte_addr(b, self.ptrs[bi.0], b_base);
        // Rows of one flat row loop are equally strided: one A pointer, per-row displacements.
        let uniform = rows.len() > 1 && g.n_loop == 1;
        let row_bytes = ai.1.coeff(0) * 4;
        let fits = |x: i64| i32::try_from(x).is_ok();
        let uniform = uniform && fits(row_bytes * rows.len() as i64 + 8 * ak.abs());
        let a_rows: Vec<(Variable, i64)> = (0..rows.len())
            .map(|i| {
                if uniform {
                    (a_ptrs[0], i as i64 * row_bytes)
                } else {
                    (a_ptrs[i], 0)
                }
            })
            .collect();
        let live_a: Vec<Variable> = if uniform {
            vec![a_ptrs[0]]
        } else {
            a_ptrs.clone()
        };
        let accs = if let (Some(qa), Some(format)) = (self.int8_rows, g.compact) {
            crate::gemm_int8::int8_accumulate(b, qa, rows, b_start, format)
        } else if g.packed {
            let panel = Panel {
                start: b_start,
                compact: g.compact,
            };
            grouped_accumulate(b, &a_rows, &live_a, ak, panel, k_total)
        } else {
            strided_accumulate(b, &a_rows, &live_a, ak, bk, b_start, k_total)
        };
        vars[g.k_loop] = None;
        // The rows are consecutive: rebuilt from the first, so the others are not live
        // across the k loops (holding them made the allocator spill the loops' pointers).
        let rows: Vec<Value> = (0..rows.len() as i64)
            .map(|i| b.ins().iadd_imm_s(rows[0], i))
            .collect();
        self.epilogues(b, g, vars, extents, &rows, n0, valid, accs);
    }

    /// The epilogue of a finished block: all 8 columns as vectors of 4, or the first `valid`
    /// of them one lane at a time (the last panel of a packed B).
    #[allow(clippy::too_many_arguments)]
    fn epilogues(
        &mut self,
        b: &mut FunctionBuilder,
        g: &GemmSpec,
        vars: &mut [Option<Value>],
        extents: &[Value],
        rows: &[Value],
        n0: Value,
        valid: usize,
        accs: Accumulators,
    ) {
        // Per output point: its column offset, the accumulator vectors of the main and the
        // paired product (the lanes of both halves of a paired panel are the same 4 columns
        // of each weight), and the lane, for a scalar point.
        let points: Vec<(usize, usize, usize, Option<u8>)> = if valid < Kernel::panel_cols(g) {
            (0..valid)
                .map(|c| {
                    let (j, other) = if g.pair.is_some() {
                        (0, 1)
                    } else {
                        (c / 4, c / 4)
                    };
                    (c, j, other, Some((c % 4) as u8))
                })
                .collect()
        } else if g.pair.is_some() {
            vec![(0, 0, 1, None)]
        } else {
            vec![(0, 0, 0, None), (4, 1, 1, None)]
        };
        for (i, &r) in rows.iter().enumerate() {
            self.row_vars(b, g, vars, extents, r);
            let stat = self.row_stat(b, g, r);
            for &(offset, j, other, lane) in &points {
                vars[g.n_loop] = Some(if offset == 0 {
                    n0
                } else {
                    b.ins().iadd_imm_s(n0, offset as i64)
                });
                let point = |b: &mut FunctionBuilder, j: usize| {
                    let v = accs.get(b, i, j);
                    match lane {
                        Some(l) => Val {
                            v: b.ins().extractlane(v, l),
                            vector: false,
                        },
                        None => Val { v, vector: true },
                    }
                };
                let main = point(b, j);
                let paired = if other == j { main } else { point(b, other) };
                self.epilogue_point(b, g, vars, [main, paired], stat);
            }
        }
    }

    /// Everything outside the k loop at one output point (4 columns when the accumulators
    /// are vectors), from the accumulated products (main, pair) and the row statistic, then
    /// the stores.
    fn epilogue_point(
        &mut self,
        b: &mut FunctionBuilder,
        g: &GemmSpec,
        vars: &[Option<Value>],
        accs: [Val; 2],
        stat: Option<(usize, Val)>,
    ) {
        let vector = accs[0].vector;
        let lane = vector.then_some(g.n_loop);
        let mut vals: Vec<Option<Val>> = vec![None; self.k.exprs.len()];
        vals[g.reduce] = Some(accs[0]);
        if let Some(pair) = g.pair {
            vals[pair.reduce] = Some(accs[1]);
        }
        if let Some((rr, x)) = stat {
            vals[rr] = Some(x);
        }
        // Only what the stores need (most GEMMs are compiled unoptimised).
        for st in &self.k.stores {
            self.ensure(b, st.value, &mut vals, vars, lane, vector);
        }
        for st in &self.k.stores {
            let x = vals[st.value].expect("stored value computed");
            let x = if vector {
                self.widen(b, x, self.k.exprs[st.value].dtype())
            } else {
                x
            };
            let base = self.affine(b, &st.index, vars);
            self.store(b, st.arg, base, 1, x);
        }
    }
}

/// A load at `p + off`: the displacement folded when it fits 32 bits, else added first (a
/// stride along k can exceed 2^31 bytes over a few steps).
pub(crate) fn load_at(
    b: &mut FunctionBuilder,
    ty: Type,
    flags: MemFlagsData,
    p: Value,
    off: i64,
) -> Value {
    match i32::try_from(off) {
        Ok(d) => b.ins().load(ty, flags, p, d),
        Err(_) => {
            let a = b.ins().iadd_imm_s(p, off);
            b.ins().load(ty, flags, a, 0)
        }
    }
}

/// Loads of A: notrap, readonly (A is never written by its own kernel).
pub(crate) fn a_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap().with_readonly()
}

/// A stack slot for a block's finished accumulators: `[row][vector]` of 16 bytes. They leave
/// registers before the epilogue, so an epilogue that needs many registers (SiLU's exp)
/// cannot make the register allocator keep them on the stack inside the k loop: it did, and
/// the SwiGLU gate GEMM of `medium` ran at 59 GFLOP/s against 99 for the up projection.
pub(crate) fn accumulator_slot(b: &mut FunctionBuilder, rows: usize) -> Accumulators {
    Accumulators(b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        (rows * 2 * 16) as u32,
        4,
    )))
}

/// Zeroed F32X4 variables.
pub(crate) fn zeroed_vectors(b: &mut FunctionBuilder, n: usize) -> Vec<Variable> {
    let fz = b.ins().f32const(0.0);
    let vz = b.ins().splat(types::F32X4, fz);
    (0..n)
        .map(|_| {
            let v = b.declare_var(types::F32X4);
            b.def_var(v, vz);
            v
        })
        .collect()
}

/// Advances the A pointers by `bytes`.
pub(crate) fn advance_a(b: &mut FunctionBuilder, live_a: &[Variable], bytes: i64) {
    for &ap in live_a {
        let p = b.use_var(ap);
        let np = b.ins().iadd_imm_s(p, bytes);
        b.def_var(ap, np);
    }
}

/// Row-major (unpacked) B, `[K, N]` with N contiguous: per k step, A broadcast and two
/// column vectors of B. One-row blocks keep two accumulator sets, so two FMA chains per
/// column vector are in flight; four rows have eight chains already.
fn strided_accumulate(
    b: &mut FunctionBuilder,
    a_rows: &[(Variable, i64)],
    live_a: &[Variable],
    ak: i64,
    bk: i64,
    b_start: Value,
    k_total: i64,
) -> Accumulators {
    let rows = a_rows.len();
    let sets = if rows == 1 { 2 } else { 1 };
    let accs: Vec<Vec<Variable>> = (0..sets).map(|_| zeroed_vectors(b, rows * 2)).collect();
    let b_ptr = b.declare_var(types::I64);
    b.def_var(b_ptr, b_start);
    // One k step at displacement `koff` steps from the pointers.
    let step = |b: &mut FunctionBuilder, set: usize, koff: i64| {
        let bp = b.use_var(b_ptr);
        let b0 = load_at(b, types::F32X4, b_flags(), bp, koff * bk);
        let b1 = load_at(b, types::F32X4, b_flags(), bp, koff * bk + 16);
        for (i, &(ap, disp)) in a_rows.iter().enumerate() {
            let p = b.use_var(ap);
            let a = load_at(b, types::F32, a_flags(), p, disp + koff * ak);
            let av = b.ins().splat(types::F32X4, a);
            for (j, bv) in [b0, b1].into_iter().enumerate() {
                let acc = b.use_var(accs[set][i * 2 + j]);
                let nv = b.ins().fma(av, bv, acc);
                b.def_var(accs[set][i * 2 + j], nv);
            }
        }
    };
    let advance = |b: &mut FunctionBuilder, steps: i64| {
        advance_a(b, live_a, steps * ak);
        let bp = b.use_var(b_ptr);
        let nb = b.ins().iadd_imm_s(bp, steps * bk);
        b.def_var(b_ptr, nb);
    };
    let zero = b.ins().iconst(types::I64, 0);
    let kend = b.ins().iconst(types::I64, k_total);
    // k unrolled by two: half the loop overhead per FMA; one-row blocks alternate sets.
    let second = if sets == 2 { 1 } else { 0 };
    let rest = emit_loop(b, zero, kend, 2, |b, _| {
        step(b, 0, 0);
        step(b, second, 1);
        advance(b, 2);
    });
    emit_loop(b, rest, kend, 1, |b, _| {
        step(b, 0, 0);
        advance(b, 1);
    });
    let slot = accumulator_slot(b, rows);
    for (i, &acc) in accs[0].iter().enumerate() {
        let mut v = b.use_var(acc);
        if sets == 2 {
            let other = b.use_var(accs[1][i]);
            v = b.ins().fadd(v, other);
        }
        slot.put(b, i / 2, i % 2, v);
    }
    slot
}

/// Packed B (see `panel_offset`): per group of 4 k, a 4-k run of each A row times the 4-k
/// run of each column, lane-wise, summed across lanes after the k loop. No broadcast and
/// no shuffle in the loop. Cranelift's FMA overwrites a multiplicand, so the order of its
/// operands decides the register copies: at 2 rows x 4 columns, 3 per 8 FMAs.
/// One-row blocks take all 8 columns in one pass (8 chains); four-row blocks take four
/// passes of 2 rows x 4 columns.
fn grouped_accumulate(
    b: &mut FunctionBuilder,
    a_rows: &[(Variable, i64)],
    live_a: &[Variable],
    ak: i64,
    panel: Panel,
    k_total: i64,
) -> Accumulators {
    if let Some(format) = panel.compact.filter(|f| f.is_block()) {
        let start = panel.start;
        return crate::gemm_q8::q8_accumulate(b, a_rows, live_a, ak, start, k_total, format);
    }
    let slot = accumulator_slot(b, a_rows.len());
    let a_start: Vec<Value> = live_a.iter().map(|&v| b.use_var(v)).collect();
    let passes: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> = if a_rows.len() == 1 {
        vec![(0..1, 0..GEMM_NR)]
    } else {
        (0..a_rows.len().div_ceil(2))
            .flat_map(|rp| {
                let r = 2 * rp..(2 * rp + 2).min(a_rows.len());
                [(r.clone(), 0..4), (r, 4..GEMM_NR)]
            })
            .collect()
    };
    for (rows, cols) in passes {
        // Only the pass's own pointers restart and advance (one, or one per row).
        let mut live: Vec<Variable> = Vec::new();
        for &(v, _) in &a_rows[rows.clone()] {
            if !live.contains(&v) {
                live.push(v);
            }
        }
        for (&v, &p) in live_a.iter().zip(&a_start) {
            if live.contains(&v) {
                b.def_var(v, p);
            }
        }
        grouped_pass(
            b,
            &a_rows[rows.clone()],
            &live,
            ak,
            panel,
            k_total,
            rows.start,
            cols,
            slot,
        );
    }
    slot
}

/// One pass of [`grouped_accumulate`]: A rows `a_rows` (the block's rows from `row0`) by
/// the panel's columns `cols`, into `slot`.
#[allow(clippy::too_many_arguments)]
fn grouped_pass(
    b: &mut FunctionBuilder,
    a_rows: &[(Variable, i64)],
    live_a: &[Variable],
    ak: i64,
    panel: Panel,
    k_total: i64,
    row0: usize,
    cols: std::ops::Range<usize>,
    slot: Accumulators,
) {
    let b_start = panel.start;
    let elem = if panel.compact.is_some() { 2 } else { 4 };
    let kg = GEMM_KG as i64;
    let group_bytes = (GEMM_KG * GEMM_NR * elem) as i64;
    let nc = cols.len();
    let accs = zeroed_vectors(b, a_rows.len() * nc);
    let one_row = a_rows.len() == 1;
    // f16's exponent rebias (2^112), made once, outside the k loops.
    let f16_rebias = (panel.compact == Some(CompactFormat::F16)).then(|| {
        let c = b.ins().f32const(f32::from_bits(0x7780_0000));
        b.ins().splat(types::F32X4, c)
    });
    let step = |b: &mut FunctionBuilder, bp: Value, g: i64, lanes: usize| {
        let first = one_row.then(|| a_run(b, a_rows, 0, g * kg * ak, ak, lanes));
        // Four B runs loaded before their FMAs: only the last can fold into its FMA as a
        // memory operand, and an FMA folding one overwrites (a copy of) the A run.
        for c0 in (0..nc).step_by(4) {
            let run_at = |c: usize| g * group_bytes + ((cols.start + c) * GEMM_KG * elem) as i64;
            let bv: Vec<Value> = if let Some(format) = panel.compact {
                // Two columns' runs per 16-byte load; each 16-bit value moved to the top of
                // its lane by interleaving zero words below it (punpck{l,h}wd): a bf16 is
                // then its f32, an f16 is converted by `f16_to_f32`.
                const LO: u128 = 0x1716_0706_1514_0504_1312_0302_1110_0100;
                const HI: u128 = 0x1f1e_0f0e_1d1c_0d0c_1b1a_0b0a_1918_0908;
                let zero = b.ins().f32const(0.0);
                let zero = b.ins().splat(types::F32X4, zero);
                (c0..c0 + 4)
                    .step_by(2)
                    .flat_map(|c| {
                        let v = b.ins().load(types::F32X4, b_flags(), bp, run_at(c) as i32);
                        [LO, HI].map(|mask| {
                            let top = shuffle_bytes(b, zero, v, mask);
                            match format {
                                CompactFormat::Bf16 => top,
                                CompactFormat::F16 => {
                                    f16_to_f32(b, top, f16_rebias.expect("made for f16 panels"))
                                }
                                _ => unreachable!("block panels take q8_accumulate"),
                            }
                        })
                    })
                    .collect()
            } else {
                (c0..c0 + 4)
                    .map(|c| b.ins().load(types::F32X4, b_flags(), bp, run_at(c) as i32))
                    .collect()
            };
            for r in 0..a_rows.len() {
                let av = first.unwrap_or_else(|| a_run(b, a_rows, r, g * kg * ak, ak, lanes));
                for (i, &bc) in bv.iter().enumerate() {
                    let c = c0 + i;
                    let acc = b.use_var(accs[r * nc + c]);
                    // Row 0 of two overwrites (a copy of) its A run, the last row each B
                    // run at its last use: no other copies.
                    let nv = if r == 0 && !one_row {
                        b.ins().fma(av, bc, acc)
                    } else {
                        b.ins().fma(bc, av, acc)
                    };
                    b.def_var(accs[r * nc + c], nv);
                }
            }
        }
    };
    let groups = k_total / kg;
    let bend = b.ins().iadd_imm_s(b_start, groups * group_bytes);
    // Two groups per iteration; the B pointer is the loop variable.
    let rest = emit_loop(b, b_start, bend, 2 * group_bytes, |b, bp| {
        step(b, bp, 0, GEMM_KG);
        step(b, bp, 1, GEMM_KG);
        advance_a(b, live_a, 2 * kg * ak);
    });
    let rest = emit_loop(b, rest, bend, group_bytes, |b, bp| {
        step(b, bp, 0, GEMM_KG);
        advance_a(b, live_a, kg * ak);
    });
    let tail = (k_total % kg) as usize;
    if tail > 0 {
        step(b, rest, 0, tail);
    }
    for r in 0..a_rows.len() {
        for (q, c0) in (0..nc).step_by(4).enumerate() {
            let v: Vec<Value> = (c0..c0 + 4).map(|c| b.use_var(accs[r * nc + c])).collect();
            let sum = hsum4(b, [v[0], v[1], v[2], v[3]]);
            slot.put(b, row0 + r, cols.start / 4 + q, sum);
        }
    }
}

/// The `lanes`-long k run of A row `r` at `offset` bytes past its pointer: one vector load
/// when A is contiguous along k (`ak` = 4 bytes), else scalar loads (zeros past `lanes`: a
/// reduction's last group, where A's memory ends).
pub(crate) fn a_run(
    b: &mut FunctionBuilder,
    a_rows: &[(Variable, i64)],
    r: usize,
    offset: i64,
    ak: i64,
    lanes: usize,
) -> Value {
    let (ap, disp) = a_rows[r];
    let p = b.use_var(ap);
    let disp = disp + offset;
    if ak == 4 && lanes == GEMM_KG {
        return load_at(b, types::F32X4, a_flags(), p, disp);
    }
    let mut xs: Vec<Value> = (0..lanes)
        .map(|l| load_at(b, types::F32, a_flags(), p, disp + l as i64 * ak))
        .collect();
    if lanes < GEMM_KG {
        let fz = b.ins().f32const(0.0);
        xs.resize(GEMM_KG, fz);
    }
    build_vector(b, types::F32X4, &xs)
}

/// Where a micro-kernel's packed B panel starts and how its values are stored.
#[derive(Clone, Copy)]
struct Panel {
    /// Address of the panel's first group.
    start: Value,
    /// Values are of this compact format, not f32.
    compact: Option<CompactFormat>,
}

/// Four f16 values, each in the top 16 bits of its lane, as f32. x64 Cranelift has no f16
/// conversion, so integer steps: the magnitude bits shifted into an f32's exponent and
/// mantissa (`(h & 0x7fff) << 13`, as `(x << 1) >> 4`) then multiplied by `rebias` (2^112,
/// made once per pass) rebias the exponent, which is exact for normal and subnormal f16 alike
/// (and zero); the sign bit (`x ^ ((x << 1) >> 1)`) is put back by an or. No constant is
/// made here: this runs for every B vector of the inner loop. Infinities and NaNs would come
/// out finite: weights marked exact never hold them.
fn f16_to_f32(b: &mut FunctionBuilder, top: Value, rebias: Value) -> Value {
    let le = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
    let x = b.ins().bitcast(types::I32X4, le, top);
    let no_sign_bit = b.ins().ishl_imm_u(x, 1);
    let mag = b.ins().ushr_imm_u(no_sign_bit, 4);
    let unsigned = b.ins().ushr_imm_u(no_sign_bit, 1);
    let sign = b.ins().bxor(x, unsigned);
    let f = b.ins().bitcast(types::F32X4, le, mag);
    let f = b.ins().fmul(f, rebias);
    let fi = b.ins().bitcast(types::I32X4, le, f);
    let out = b.ins().bor(fi, sign);
    b.ins().bitcast(types::F32X4, le, out)
}

/// A micro-kernel's finished accumulators, in a stack slot: `[row][vector]` of 16 bytes.
#[derive(Clone, Copy)]
pub(crate) struct Accumulators(cranelift_codegen::ir::StackSlot);

impl Accumulators {
    /// Stores accumulator vector `j` of row `i`.
    pub(crate) fn put(self, b: &mut FunctionBuilder, i: usize, j: usize, v: Value) {
        b.ins()
            .stack_store(types::I64, v, self.0, ((i * 2 + j) * 16) as i32);
    }

    /// Accumulator vector `j` of row `i`.
    fn get(self, b: &mut FunctionBuilder, i: usize, j: usize) -> Value {
        b.ins()
            .stack_load(types::I64, types::F32X4, self.0, ((i * 2 + j) * 16) as i32)
    }
}

fn g_k(em: &Emitter<'_>, g: &GemmSpec) -> i64 {
    em.k.loops[g.k_loop].extent.as_const().unwrap_or(0) as i64
}

/// A two-input lane shuffle with a constant byte mask (bytes 16.. are `y`'s).
pub(crate) fn shuffle_bytes(b: &mut FunctionBuilder, x: Value, y: Value, mask: u128) -> Value {
    use cranelift_codegen::ir::{ConstantData, Immediate};
    let le = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
    let xi = b.ins().bitcast(types::I8X16, le, x);
    let yi = b.ins().bitcast(types::I8X16, le, y);
    let imm: Immediate = b
        .func
        .dfg
        .immediates
        .push(ConstantData::from(mask.to_le_bytes().as_slice()));
    let r = b.ins().shuffle(xi, yi, imm);
    b.ins().bitcast(types::F32X4, le, r)
}

/// `[sum(v0), sum(v1), sum(v2), sum(v3)]`: a 4 x 4 transpose by interleaves (masks that
/// lower to `punpck{l,h}{dq,qdq}`), then adds.
pub(crate) fn hsum4(b: &mut FunctionBuilder, v: [Value; 4]) -> Value {
    const LO32: u128 = 0x1716_1514_0706_0504_1312_1110_0302_0100;
    const HI32: u128 = 0x1f1e_1d1c_0f0e_0d0c_1b1a_1918_0b0a_0908;
    const LO64: u128 = 0x1716_1514_1312_1110_0706_0504_0302_0100;
    const HI64: u128 = 0x1f1e_1d1c_1b1a_1918_0f0e_0d0c_0b0a_0908;
    let pair = |b: &mut FunctionBuilder, x: Value, y: Value| {
        let lo = shuffle_bytes(b, x, y, LO32);
        let hi = shuffle_bytes(b, x, y, HI32);
        b.ins().fadd(lo, hi)
    };
    let u0 = pair(b, v[0], v[1]);
    let u1 = pair(b, v[2], v[3]);
    let lo = shuffle_bytes(b, u0, u1, LO64);
    let hi = shuffle_bytes(b, u0, u1, HI64);
    b.ins().fadd(lo, hi)
}
