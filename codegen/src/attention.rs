//! The flash-attention template (the kernel IR's `AttentionSpec`, matched by lower's
//! `fuse_attention`): each query row makes one pass over the keys with an online softmax,
//! keeping the running max, the running sum and the `[Dv]` output accumulator (in registers,
//! rescaled when the max grows), so no score matrix is written and K and V are read once per
//! row. Keys go 4 at a time (one vector exp for their weights, one rescale per block); dot
//! products and the accumulator run 4 lanes wide along the head dimension.

use cranelift_codegen::ir::{
    Endianness, InstBuilder, MemFlagsData, StackSlot, StackSlotData, StackSlotKind, Value,
    condcodes::{FloatCC, IntCC},
    types,
};
use cranelift_frontend::{FunctionBuilder, Variable};

use cranegrad_lower::kernel::{AttentionSpec, Expr};

use crate::emit::{Emitter, LANES, Val, emit_loop, split_flat};
use crate::gemm::shuffle_bytes;
use crate::math;
use crate::memory::{build_vector, byte_addr};

impl Emitter<'_> {
    /// Emits the query rows `[start, end)` of an attention kernel.
    pub(crate) fn attention(
        &mut self,
        b: &mut FunctionBuilder,
        a: &AttentionSpec,
        vars: &mut [Option<Value>],
        extents: &[Value],
        start: Value,
        end: Value,
    ) {
        let dl = self.k.output_loops().len() - 1;
        let cone = a.mask.map(|m| self.cone(m)).unwrap_or_default();
        let q_cone = self.cone(a.q);
        emit_loop(b, start, end, 1, |b, f| {
            split_flat(b, f, extents, dl, vars);
            self.attention_row(b, a, vars, extents, &cone, &q_cone);
        });
    }

    /// The expressions `e` is computed from, itself included, operands first (the IR lists
    /// them in that order).
    fn cone(&self, e: usize) -> Vec<usize> {
        let mut mark = vec![false; self.k.exprs.len()];
        mark[e] = true;
        for i in (0..=e).rev() {
            if mark[i] {
                for o in self.k.exprs[i].operands() {
                    mark[o] = true;
                }
            }
        }
        (0..mark.len()).filter(|&i| mark[i]).collect()
    }

    /// The queries of the current row, once: one value per 4 columns of the dot product (and
    /// per tail column), each computed from its expressions (RoPE of a projection, say).
    fn query_row(
        &mut self,
        b: &mut FunctionBuilder,
        a: &AttentionSpec,
        vars: &mut [Option<Value>],
        q_cone: &[usize],
    ) -> Vec<Variable> {
        let lanes = LANES as usize;
        let dq = self.k.loops[a.dot_loop].extent.as_const().unwrap_or(0);
        let mut out = Vec::new();
        for c in (0..dq).step_by(lanes) {
            let vector = c + lanes <= dq;
            for t in if vector { c..c + 1 } else { c..dq } {
                vars[a.dot_loop] = Some(b.ins().iconst(types::I64, t as i64));
                let lane = vector.then_some(a.dot_loop);
                let mut vals: Vec<Option<Val>> = vec![None; self.k.exprs.len()];
                for &e in q_cone {
                    vals[e] = Some(self.expr(b, e, &vals, vars, lane, vector));
                }
                let q = vals[a.q].expect("queries computed");
                let q = if vector {
                    self.widen(b, q, cranegrad_graph::DType::F32).v
                } else {
                    q.v
                };
                let var = b.declare_var(if vector { types::F32X4 } else { types::F32 });
                b.def_var(var, q);
                out.push(var);
            }
        }
        vars[a.dot_loop] = None;
        out
    }

    /// `acc = acc * corr + sum_i ps[i] * V[j + i]`, per chunk of output columns.
    #[allow(clippy::too_many_arguments)]
    fn accumulate_values(
        &mut self,
        b: &mut FunctionBuilder,
        a: &AttentionSpec,
        vars: &mut [Option<Value>],
        j: Value,
        ps: &[Value],
        corr: Value,
        acc: &[Variable],
        chunks: &[(usize, bool)],
    ) {
        let dl = self.k.output_loops().len() - 1;
        let n = ps.len();
        let corr_v = b.ins().splat(types::F32X4, corr);
        let ps_v: Vec<Value> = ps.iter().map(|&p| b.ins().splat(types::F32X4, p)).collect();
        // A plain f32 load of V is addressed once per block; every (column, key) is then a
        // constant offset from it (the generic path recomputes the index per load).
        let v_direct = match &self.k.exprs[a.v] {
            Expr::Load {
                arg,
                index,
                conds,
                dtype: cranegrad_graph::DType::F32,
            } if conds.is_empty() => {
                vars[a.key_loop] = Some(j);
                vars[dl] = Some(b.ins().iconst(types::I64, 0));
                let base = self.affine(b, index, vars);
                let addr = byte_addr(b, self.ptrs[*arg], base);
                Some((addr, index.coeff(dl) * 4, index.coeff(a.key_loop) * 4))
            }
            _ => None,
        };
        let flags = MemFlagsData::new()
            .with_notrap()
            .with_readonly()
            .with_endianness(Endianness::Little);
        for (ci, &(d, vector)) in chunks.iter().enumerate() {
            vars[dl] = Some(b.ins().iconst(types::I64, d as i64));
            let mut x = b.use_var(acc[ci]);
            x = b.ins().fmul(x, if vector { corr_v } else { corr });
            for i in 0..n {
                let vv = match v_direct {
                    // Contiguous along the columns: one vector load per 4 columns.
                    Some((addr, col, key)) if !vector || col == 4 => {
                        let off = (d as i64 * col + i as i64 * key) as i32;
                        let ty = if vector { types::F32X4 } else { types::F32 };
                        b.ins().load(ty, flags, addr, off)
                    }
                    _ => {
                        vars[a.key_loop] = Some(b.ins().iadd_imm_s(j, i as i64));
                        self.load_at(b, a.v, vars, dl, vector)
                    }
                };
                x = b.ins().fma(if vector { ps_v[i] } else { ps[i] }, vv, x);
            }
            b.def_var(acc[ci], x);
        }
        vars[dl] = None;
        vars[a.key_loop] = None;
    }

    /// Whether consecutive keys of one head-dimension column lie next to each other (K stored
    /// transposed, `[D, S]`, as the prefill writes it): then 4 keys' scores are one vector of
    /// contiguous loads per column, with no gather and no horizontal sum.
    fn keys_contiguous(&self, a: &AttentionSpec) -> bool {
        matches!(
            &self.k.exprs[a.k],
            Expr::Load { index, conds, dtype, .. }
                if index.coeff(a.key_loop) == 1 && conds.is_empty() && *dtype == cranegrad_graph::DType::F32
        )
    }

    /// The query row in a stack slot, one f32 per head-dimension column, so each column
    /// is one broadcast load where the key-vector scores need it (32 or 64 splats kept in
    /// variables would be spilled, and their reloads scheduled badly).
    fn query_slot(
        &self,
        b: &mut FunctionBuilder,
        a: &AttentionSpec,
        qs: &[Variable],
    ) -> (StackSlot, usize) {
        let lanes = LANES as usize;
        let dq = self.k.loops[a.dot_loop].extent.as_const().unwrap_or(0);
        let slot = b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (dq.max(1) * 4) as u32,
            4,
        ));
        let mut qi = 0;
        for c in (0..dq).step_by(lanes) {
            if c + lanes <= dq {
                let qv = b.use_var(qs[qi]);
                b.ins().stack_store(types::I64, qv, slot, (c * 4) as i32);
                qi += 1;
            } else {
                for t in c..dq {
                    let q = b.use_var(qs[qi]);
                    b.ins().stack_store(types::I64, q, slot, (t * 4) as i32);
                    qi += 1;
                }
            }
        }
        (slot, dq)
    }

    /// The raw scores `scale * q . k` of keys `j..j+4` as one vector, keys along the lanes:
    /// per head-dimension column one contiguous load of 4 keys and one FMA against the
    /// broadcast query column, in 4 independent chains (one chain would wait on each FMA's
    /// latency).
    fn key_scores_vector(
        &mut self,
        b: &mut FunctionBuilder,
        a: &AttentionSpec,
        vars: &mut [Option<Value>],
        j: Value,
        (q_slot, dq): (StackSlot, usize),
    ) -> Value {
        let Expr::Load { arg, index, .. } = &self.k.exprs[a.k] else {
            unreachable!("keys_contiguous checked the load")
        };
        let (arg, index) = (*arg, index.clone());
        vars[a.key_loop] = Some(j);
        vars[a.dot_loop] = Some(b.ins().iconst(types::I64, 0));
        let base = self.affine(b, &index, vars);
        vars[a.dot_loop] = None;
        let addr = byte_addr(b, self.ptrs[arg], base);
        let step = index.coeff(a.dot_loop) * 4;
        let flags = MemFlagsData::new()
            .with_notrap()
            .with_readonly()
            .with_endianness(Endianness::Little);
        let zero = b.ins().f32const(0.0);
        let zv = b.ins().splat(types::F32X4, zero);
        let mut chains = [zv; 4];
        for c in 0..dq {
            let kv = b
                .ins()
                .load(types::F32X4, flags, addr, (c as i64 * step) as i32);
            let q = b
                .ins()
                .stack_load(types::I64, types::F32, q_slot, (c * 4) as i32);
            let qv = b.ins().splat(types::F32X4, q);
            chains[c % 4] = b.ins().fma(qv, kv, chains[c % 4]);
        }
        let s01 = b.ins().fadd(chains[0], chains[1]);
        let s23 = b.ins().fadd(chains[2], chains[3]);
        let sv = b.ins().fadd(s01, s23);
        let sc = b.ins().f32const(f64::from_bits(a.scale_bits) as f32);
        let scv = b.ins().splat(types::F32X4, sc);
        b.ins().fmul(sv, scv)
    }

    /// The mask's address at key `j` when it is a plain bool load with consecutive keys
    /// adjacent (one 4-byte bool per key): 4 keys' flags are then one vector load.
    fn mask_vector_addr(
        &self,
        b: &mut FunctionBuilder,
        a: &AttentionSpec,
        vars: &mut [Option<Value>],
        j: Value,
    ) -> Option<Value> {
        let Expr::Load {
            arg,
            index,
            conds,
            dtype,
        } = &self.k.exprs[a.mask?]
        else {
            return None;
        };
        if !conds.is_empty()
            || *dtype != cranegrad_graph::DType::Bool
            || index.coeff(a.key_loop) != 1
        {
            return None;
        }
        vars[a.key_loop] = Some(j);
        let base = self.affine(b, index, vars);
        Some(byte_addr(b, self.ptrs[*arg], base))
    }

    /// Whether the mask hides key `j` (the current `vars`), as a bool; `None` without a mask.
    fn hidden(
        &mut self,
        b: &mut FunctionBuilder,
        a: &AttentionSpec,
        vars: &mut [Option<Value>],
        cone: &[usize],
    ) -> Option<Value> {
        let mask = a.mask?;
        let mut vals: Vec<Option<Val>> = vec![None; self.k.exprs.len()];
        for &e in cone {
            vals[e] = Some(self.expr(b, e, &vals, vars, None, false));
        }
        let hidden = vals[mask].expect("mask computed").v;
        Some(b.ins().icmp_imm_s(IntCC::NotEqual, hidden, 0))
    }

    /// The fill score where `hidden`, else `s`.
    fn masked(
        &self,
        b: &mut FunctionBuilder,
        a: &AttentionSpec,
        hidden: Option<Value>,
        s: Value,
    ) -> Value {
        match hidden {
            Some(h) => {
                let fill = b.ins().f32const(f64::from_bits(a.fill_bits) as f32);
                b.ins().select(h, fill, s)
            }
            None => s,
        }
    }

    /// A load expression at the current loop values, 4 lanes along `lane` when `vector`.
    fn load_at(
        &mut self,
        b: &mut FunctionBuilder,
        e: usize,
        vars: &[Option<Value>],
        lane: usize,
        vector: bool,
    ) -> Value {
        let none = vec![None; self.k.exprs.len()];
        let v = self.expr(b, e, &none, vars, Some(lane).filter(|_| vector), vector);
        if vector {
            self.widen(b, v, cranegrad_graph::DType::F32).v
        } else {
            v.v
        }
    }

    /// `scale * q . k_j`, or the fill score when the mask hides key `j` (scalar).
    fn key_score(
        &mut self,
        b: &mut FunctionBuilder,
        a: &AttentionSpec,
        vars: &mut [Option<Value>],
        cone: &[usize],
        qs: &[Variable],
    ) -> Value {
        let lanes = LANES as usize;
        let dq = self.k.loops[a.dot_loop].extent.as_const().unwrap_or(0);
        let zero = b.ins().f32const(0.0);
        let mut sv = b.ins().splat(types::F32X4, zero);
        let mut s = zero;
        let mut qi = 0;
        for c in (0..dq).step_by(lanes) {
            let vector = c + lanes <= dq;
            for t in if vector { c..c + 1 } else { c..dq } {
                vars[a.dot_loop] = Some(b.ins().iconst(types::I64, t as i64));
                let qv = b.use_var(qs[qi]);
                qi += 1;
                let kv = self.load_at(b, a.k, vars, a.dot_loop, vector);
                if vector {
                    sv = b.ins().fma(qv, kv, sv);
                } else {
                    s = b.ins().fma(qv, kv, s);
                }
            }
        }
        vars[a.dot_loop] = None;
        for lane in 0..lanes as u8 {
            let x = b.ins().extractlane(sv, lane);
            s = b.ins().fadd(s, x);
        }
        let sc = b.ins().f32const(f64::from_bits(a.scale_bits) as f32);
        let s = b.ins().fmul(s, sc);
        let h = self.hidden(b, a, vars, cone);
        self.masked(b, a, h, s)
    }

    /// One query row: the pass over the keys (4 at a time, then one by one), then the
    /// normalised output.
    fn attention_row(
        &mut self,
        b: &mut FunctionBuilder,
        a: &AttentionSpec,
        vars: &mut [Option<Value>],
        extents: &[Value],
        cone: &[usize],
        q_cone: &[usize],
    ) {
        let qs = self.query_row(b, a, vars, q_cone);
        let q_splats = if self.keys_contiguous(a) {
            Some(self.query_slot(b, a, &qs))
        } else {
            None
        };
        let dl = self.k.output_loops().len() - 1;
        let dv = self.k.loops[dl].extent.as_const().unwrap_or(0);
        let lanes = LANES as usize;
        let es = f64::from_bits(a.exp_scale_bits) as f32;
        // The output accumulator: one variable per 4 columns (and per tail column).
        let chunks: Vec<(usize, bool)> = (0..dv)
            .step_by(lanes)
            .flat_map(|d| {
                if d + lanes <= dv {
                    vec![(d, true)]
                } else {
                    (d..dv).map(|t| (t, false)).collect()
                }
            })
            .collect();
        let zero = b.ins().f32const(0.0);
        let zero_v = b.ins().splat(types::F32X4, zero);
        let acc: Vec<Variable> = chunks
            .iter()
            .map(|&(_, vector)| {
                let v = b.declare_var(if vector { types::F32X4 } else { types::F32 });
                b.def_var(v, if vector { zero_v } else { zero });
                v
            })
            .collect();
        let m = b.declare_var(types::F32);
        let ninf = b.ins().f32const(f32::NEG_INFINITY);
        b.def_var(m, ninf);
        let l = b.declare_var(types::F32);
        b.def_var(l, zero);
        // exp2(es * (x - max)); 1 when the max is still -inf (every key so far hidden by -inf:
        // a later finite key rescales that to 0), where x - max would be NaN. A +inf score
        // gives NaN, as in the reference.
        let weight = |b: &mut FunctionBuilder, x: Value, max: Value| {
            let ty = b.func.dfg.value_type(x);
            let splat = |b: &mut FunctionBuilder, v: f32| {
                let s = b.ins().f32const(v);
                if ty == types::F32X4 {
                    b.ins().splat(ty, s)
                } else {
                    s
                }
            };
            let z = splat(b, 0.0);
            let d = b.ins().fsub(x, max);
            let ninf = splat(b, f32::NEG_INFINITY);
            let unset = b.ins().fcmp(FloatCC::Equal, max, ninf);
            let d = math::select_float(b, unset, z, d);
            // With a positive factor the argument is never positive (x <= max); the exp then
            // takes the product itself, rounding it once.
            if math::scaled_exp2_takes(es) {
                math::exp2_scaled_nonpositive(b, d, es)
            } else {
                let esv = splat(b, es);
                let d = b.ins().fmul(d, esv);
                math::exp2(b, d)
            }
        };
        // Keys j..j+n: scores, the new max, then the rescaled sum and accumulator.
        let block = |this: &mut Self,
                     b: &mut FunctionBuilder,
                     vars: &mut [Option<Value>],
                     j: Value,
                     n: usize| {
            // Keys contiguous and the mask (if any) a plain bool vector: the whole block
            // stays in vectors, from the scores to the weights.
            let mask_addr = match (&q_splats, a.mask) {
                (Some(_), Some(_)) if n == lanes => this.mask_vector_addr(b, a, vars, j),
                _ => None,
            };
            if let (Some(qslot), true, true) = (
                q_splats,
                n == lanes,
                a.mask.is_none() || mask_addr.is_some(),
            ) {
                let flags = MemFlagsData::new()
                    .with_notrap()
                    .with_readonly()
                    .with_endianness(Endianness::Little);
                let fill = b.ins().f32const(f64::from_bits(a.fill_bits) as f32);
                let hidden = mask_addr.map(|addr| {
                    let mv = b.ins().load(types::I32X4, flags, addr, 0);
                    let zero = b.ins().iconst(types::I32, 0);
                    let zv = b.ins().splat(types::I32X4, zero);
                    b.ins().icmp(IntCC::NotEqual, mv, zv)
                });
                let mut done = None;
                if let Some(h) = hidden {
                    // Keys all hidden after a visible one (the causal mask's upper triangle)
                    // change nothing: each would get weight exp(fill - max) = 0 and leave the
                    // max, the sum and the output as they are. Skipping them is exact; before
                    // any visible key they are computed, as their weights still matter then.
                    let all = b.ins().vall_true(h);
                    let m_now = b.use_var(m);
                    let seen = b.ins().fcmp(FloatCC::GreaterThan, m_now, fill);
                    let skip = b.ins().band(all, seen);
                    let body = b.create_block();
                    let after = b.create_block();
                    b.ins().brif(skip, after, &[], body, &[]);
                    b.switch_to_block(body);
                    b.seal_block(body);
                    done = Some(after);
                }
                let mut sv = this.key_scores_vector(b, a, vars, j, qslot);
                if let Some(h) = hidden {
                    let le = MemFlagsData::new().with_endianness(Endianness::Little);
                    let hf = b.ins().bitcast(types::F32X4, le, h);
                    let fill_v = b.ins().splat(types::F32X4, fill);
                    sv = b.ins().bitselect(hf, fill_v, sv);
                }
                let m_old = b.use_var(m);
                let block_max = hmax4(b, sv);
                let m_new = b.ins().fmax(m_old, block_max);
                let corr = weight(b, m_old, m_new);
                let mv = b.ins().splat(types::F32X4, m_new);
                let pv = weight(b, sv, mv);
                let sum = hadd4(b, pv);
                let lv = b.use_var(l);
                let lv = b.ins().fma(lv, corr, sum);
                b.def_var(l, lv);
                b.def_var(m, m_new);
                let ps: Vec<Value> = (0..n).map(|i| b.ins().extractlane(pv, i as u8)).collect();
                this.accumulate_values(b, a, vars, j, &ps, corr, &acc, &chunks);
                if let Some(after) = done {
                    b.ins().jump(after, &[]);
                    b.switch_to_block(after);
                    b.seal_block(after);
                }
                return;
            }
            let scores: Vec<Value> = match &q_splats {
                Some(splats) if n == lanes => {
                    let sv = this.key_scores_vector(b, a, vars, j, *splats);
                    (0..n)
                        .map(|i| {
                            let s = b.ins().extractlane(sv, i as u8);
                            vars[a.key_loop] = Some(b.ins().iadd_imm_s(j, i as i64));
                            let h = this.hidden(b, a, vars, cone);
                            this.masked(b, a, h, s)
                        })
                        .collect()
                }
                _ => (0..n)
                    .map(|i| {
                        vars[a.key_loop] = Some(b.ins().iadd_imm_s(j, i as i64));
                        this.key_score(b, a, vars, cone, &qs)
                    })
                    .collect(),
            };
            let m_old = b.use_var(m);
            let mut m_new = m_old;
            for &s in &scores {
                m_new = b.ins().fmax(m_new, s);
            }
            let corr = weight(b, m_old, m_new);
            let ps: Vec<Value> = if n == lanes {
                let sv = build_vector(b, types::F32X4, &scores);
                let mv = b.ins().splat(types::F32X4, m_new);
                let pv = weight(b, sv, mv);
                (0..n).map(|i| b.ins().extractlane(pv, i as u8)).collect()
            } else {
                scores.iter().map(|&s| weight(b, s, m_new)).collect()
            };
            let mut sum = ps[0];
            for &p in &ps[1..] {
                sum = b.ins().fadd(sum, p);
            }
            let lv = b.use_var(l);
            let lv = b.ins().fma(lv, corr, sum);
            b.def_var(l, lv);
            b.def_var(m, m_new);
            this.accumulate_values(b, a, vars, j, &ps, corr, &acc, &chunks);
        };
        let z = b.ins().iconst(types::I64, 0);
        let rest = emit_loop(b, z, extents[a.key_loop], LANES, |b, j| {
            block(self, b, vars, j, lanes)
        });
        emit_loop(b, rest, extents[a.key_loop], 1, |b, j| {
            block(self, b, vars, j, 1)
        });
        // out = acc / l, stored where the kernel's store says.
        // No keys (a zero-length symbolic range) leave l = 0 and the row 0, as in the reference.
        let one = b.ins().f32const(1.0);
        let lv = b.use_var(l);
        let inv = b.ins().fdiv(one, lv);
        let empty = b.ins().fcmp(FloatCC::Equal, lv, zero);
        let inv = b.ins().select(empty, zero, inv);
        let inv_v = b.ins().splat(types::F32X4, inv);
        let st = self.k.stores[0].clone();
        for (ci, &(d, vector)) in chunks.iter().enumerate() {
            vars[dl] = Some(b.ins().iconst(types::I64, d as i64));
            let x = b.use_var(acc[ci]);
            let o = b.ins().fmul(x, if vector { inv_v } else { inv });
            let base = self.affine(b, &st.index, vars);
            let coeff = if vector { st.index.coeff(dl) } else { 0 };
            self.store(b, st.arg, base, coeff, Val { v: o, vector });
        }
        vars[dl] = None;
    }
}

/// Lanes `[2, 3, 0, 1]` and `[1, 0, 3, 2]` of a vector (byte masks for `shuffle_bytes`).
const SWAP64: u128 = 0x0706_0504_0302_0100_0f0e_0d0c_0b0a_0908;
const SWAP32: u128 = 0x0b0a_0908_0f0e_0d0c_0302_0100_0706_0504;

/// The largest lane of `v` (NaN if any lane is, as a chain of `fmax` gives).
fn hmax4(b: &mut FunctionBuilder, v: Value) -> Value {
    let t = shuffle_bytes(b, v, v, SWAP64);
    let t = b.ins().fmax(v, t);
    let u = shuffle_bytes(b, t, t, SWAP32);
    let u = b.ins().fmax(t, u);
    b.ins().extractlane(u, 0)
}

/// The sum of the lanes of `v`.
fn hadd4(b: &mut FunctionBuilder, v: Value) -> Value {
    let t = shuffle_bytes(b, v, v, SWAP64);
    let t = b.ins().fadd(v, t);
    let u = shuffle_bytes(b, t, t, SWAP32);
    let u = b.ins().fadd(t, u);
    b.ins().extractlane(u, 0)
}
