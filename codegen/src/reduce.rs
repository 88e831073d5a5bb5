//! Reduction loops of the generic kernel body: per reduction, its loop body and the values
//! it reads from outside the loop, one step of it, and the loops themselves (across outputs,
//! or along the reduction with two accumulators and a scalar tail).

use cranelift_codegen::ir::{InstBuilder, Value, condcodes::FloatCC, types};
use cranelift_frontend::{FunctionBuilder, Variable};

use cranegrad_graph::{DType, ReduceOp};
use cranegrad_lower::kernel::Expr;

use crate::emit::{
    ALONG_VECTORS, Emitter, LANES, Phase, RowCursor, Val, emit_jammed_loop, emit_loop, scalar_ty,
    vector_ty, vflags,
};
use crate::scalar_ops::float_max;

/// One reduction in an along loop: its body, the values from outside it, its loop
/// variables (another row's, for a carried reduction) and accumulators.
struct AlongPass {
    e: usize,
    var: usize,
    inner: Vec<usize>,
    snapshot: Vec<Option<Val>>,
    vars: Vec<Option<Value>>,
    accs: [Variable; ALONG_VECTORS as usize],
    tail: Variable,
}

/// A row kernel's first reduction (softmax's max) computed for the next row inside this
/// row's store-and-rescale loop, whose loads of the next row ride along in its FP-bound
/// passes: the next row then needs no pass of its own for it.
pub(crate) struct Carry {
    /// The carried reduction.
    pub(crate) e: usize,
    /// The reduction whose loop computes it.
    pub(crate) with: usize,
    /// Its value for the current row.
    pub(crate) var: Variable,
    /// The next row's loop variables.
    pub(crate) next_vars: Vec<Option<Value>>,
}

impl Emitter<'_> {
    /// Reduction `e`'s loop body (`inner`, the expressions that depend on its variable) and
    /// the values that body (or the accumulate, for `x`) reads from outside the loop, which
    /// the callers compute before it.
    pub(crate) fn loop_split(&self, e: usize) -> (Vec<usize>, Vec<usize>) {
        let Expr::Reduce { x, var, .. } = self.k.exprs[e] else {
            return (vec![], vec![]);
        };
        let inner: Vec<usize> = (0..e)
            .filter(|&i| self.phases[i] == Phase::Inner(var))
            .collect();
        let mut outside: Vec<usize> = inner
            .iter()
            .flat_map(|&i| self.k.exprs[i].operands())
            .chain([x])
            .filter(|&o| self.phases[o] != Phase::Inner(var))
            .collect();
        outside.sort_unstable();
        outside.dedup();
        (inner, outside)
    }

    /// One step of reduction `e` at the current loop variables: its body from `local` (which
    /// holds the values from outside the loop), the store of a store-and-rescale, and the
    /// accumulator's next value from `acc`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn reduce_step(
        &mut self,
        b: &mut FunctionBuilder,
        e: usize,
        inner: &[usize],
        mut local: Vec<Option<Val>>,
        vars: &[Option<Value>],
        (lane, vector): (Option<usize>, bool),
        acc: Value,
    ) -> Value {
        let Expr::Reduce { op, x, dtype, .. } = self.k.exprs[e] else {
            return acc;
        };
        for &k in inner {
            local[k] = Some(self.expr(b, k, &local, vars, lane, vector));
        }
        let mut xv = local[x].expect("reduced value");
        if vector {
            xv = self.widen(b, xv, dtype);
        }
        if let Some(r) = self.k.row_plan().rescale.as_ref().filter(|r| r.reduce == e) {
            let at = (r.arg, &r.index_in_loop);
            if let Some(at) = self.unit_stride_addr(b, at, vars, (lane, vector)) {
                self.store_at(b, at, xv);
            } else {
                let base = self.affine(b, &r.index_in_loop, vars);
                let coeff = lane.map_or(0, |l| r.index_in_loop.coeff(l));
                self.store(b, r.arg, base, coeff, xv);
            }
        }
        self.accumulate(b, e, (op, dtype), acc, xv.v)
    }

    /// Runs every Reduce expression that is not computed yet, in order, each over its own
    /// loop. `lane` is set when four output points are computed at once (one accumulator lane
    /// each); otherwise a reduce loop with unit-stride loads runs four iterations per vector.
    pub(crate) fn reductions(
        &mut self,
        b: &mut FunctionBuilder,
        vals: &mut [Option<Val>],
        vars: &mut [Option<Value>],
        extents: &[Value],
        lane: Option<usize>,
    ) {
        for e in 0..self.k.exprs.len() {
            if matches!(self.k.exprs[e], Expr::Reduce { .. }) && vals[e].is_none() {
                self.reduction(b, e, vals, vars, extents, lane);
            }
        }
    }

    /// Reduction `e` over its own loop, into `vals[e]`; with the next row's carried
    /// reduction (see [`Carry`]) in the same loop when `e` is the one carrying it.
    pub(crate) fn reduction(
        &mut self,
        b: &mut FunctionBuilder,
        e: usize,
        vals: &mut [Option<Val>],
        vars: &mut [Option<Value>],
        extents: &[Value],
        lane: Option<usize>,
    ) {
        let Expr::Reduce { op, dtype, var, .. } = self.k.exprs[e] else {
            return;
        };
        let across = lane.is_some();
        let (inner, outside) = self.loop_split(e);
        for &o in &outside {
            self.ensure(b, o, vals, vars, lane, across);
        }
        if !across && self.along[var] {
            let carried = (self.carry.as_ref())
                .filter(|c| c.with == e)
                .map(|c| (c.e, c.var, c.next_vars.clone()));
            let mut passes = vec![self.along_pass(b, e, inner, vals, vars)];
            let mut added = Vec::new();
            if let Some((c, _, next_vars)) = &carried {
                // What it reads from outside its loop, at the next row (a per-row bias).
                let (inner, more) = self.loop_split(*c);
                let mut next_vals = vec![None; vals.len()];
                for &o in &more {
                    self.ensure(b, o, &mut next_vals, next_vars, lane, across);
                }
                added = self.presplat(b, &next_vals, more.into_iter());
                passes.push(self.along_pass(b, *c, inner, &next_vals, next_vars));
            }
            added.extend(self.presplat(b, vals, outside.iter().copied()));
            let results = self.along_loops(b, &mut passes, extents[var]);
            self.forget_splats(added);
            vals[e] = Some(results[0]);
            if let Some((_, var, _)) = carried {
                b.def_var(var, results[1].v);
            }
            return;
        }
        let init = self.identity(b, op, dtype, across);
        let acc = b.declare_var(if across {
            vector_ty(dtype)
        } else {
            scalar_ty(dtype)
        });
        b.def_var(acc, init);
        let zero = b.ins().iconst(types::I64, 0);
        let snapshot: Vec<Option<Val>> = vals.to_vec();
        emit_loop(b, zero, extents[var], 1, |b, i| {
            vars[var] = Some(i);
            let a = b.use_var(acc);
            let nv = self.reduce_step(b, e, &inner, snapshot.clone(), vars, (lane, across), a);
            b.def_var(acc, nv);
        });
        vars[var] = None;
        vals[e] = Some(Val {
            v: b.use_var(acc),
            vector: across,
        });
    }

    /// Reduction `e` at loop variables `vars`, ready for [`Emitter::along_loops`].
    fn along_pass(
        &self,
        b: &mut FunctionBuilder,
        e: usize,
        inner: Vec<usize>,
        vals: &[Option<Val>],
        vars: &[Option<Value>],
    ) -> AlongPass {
        let Expr::Reduce { op, dtype, var, .. } = self.k.exprs[e] else {
            unreachable!("a reduction")
        };
        let init = self.identity(b, op, dtype, true);
        let accs = std::array::from_fn(|_| {
            let v = b.declare_var(vector_ty(dtype));
            b.def_var(v, init);
            v
        });
        let tail = b.declare_var(scalar_ty(dtype));
        let tinit = self.identity(b, op, dtype, false);
        b.def_var(tail, tinit);
        AlongPass {
            e,
            var,
            inner,
            snapshot: vals.to_vec(),
            vars: vars.to_vec(),
            accs,
            tail,
        }
    }

    /// The loops of along reductions sharing one extent: [`ALONG_VECTORS`] vectors per
    /// iteration, one accumulator each, then one vector, then scalars; returns each one's
    /// value.
    fn along_loops(
        &mut self,
        b: &mut FunctionBuilder,
        passes: &mut [AlongPass],
        extent: Value,
    ) -> Vec<Val> {
        let step = |this: &mut Self,
                    b: &mut FunctionBuilder,
                    p: &mut AlongPass,
                    i: Value,
                    (target, vector): (Variable, bool)| {
            p.vars[p.var] = Some(i);
            let lane = vector.then_some(p.var);
            let a = b.use_var(target);
            let nv = this.reduce_step(
                b,
                p.e,
                &p.inner,
                p.snapshot.clone(),
                &p.vars,
                (lane, vector),
                a,
            );
            b.def_var(target, nv);
        };
        // Its own row pointers and cursor: whatever loop it sits in gets its own back.
        let outer = (self.cursor.take(), self.row_ptrs.take());
        for p in passes.iter() {
            let rescaled = self
                .k
                .row_plan()
                .rescale
                .as_ref()
                .filter(|r| r.reduce == p.e);
            let stored = rescaled.map(|r| (r.arg, r.index_in_loop.clone()));
            let loads = p.inner.iter().filter_map(|&k| match &self.k.exprs[k] {
                Expr::Load {
                    arg, index, conds, ..
                } if conds.is_empty() => Some((*arg, index.clone())),
                _ => None,
            });
            for (arg, index) in loads.chain(stored).collect::<Vec<_>>() {
                self.prepare_row_ptr(b, arg, &index, p.var, &p.vars);
            }
        }
        let zero = b.ins().iconst(types::I64, 0);
        let (rest, jam) = emit_jammed_loop(b, zero, extent, ALONG_VECTORS, |b, i, j| {
            let start = b.ins().iadd_imm_s(i, j * LANES);
            for p in passes.iter_mut() {
                self.cursor = Some(RowCursor {
                    var: p.var,
                    first: i,
                    elems: j * LANES,
                });
                let target = p.accs[j as usize];
                step(self, b, p, start, (target, true));
            }
        });
        self.jams.extend(jam);
        let rest = emit_loop(b, rest, extent, LANES, |b, i| {
            for p in passes.iter_mut() {
                self.cursor = Some(RowCursor {
                    var: p.var,
                    first: i,
                    elems: 0,
                });
                let target = p.accs[0];
                step(self, b, p, i, (target, true));
            }
        });
        emit_loop(b, rest, extent, 1, |b, i| {
            for p in passes.iter_mut() {
                self.cursor = Some(RowCursor {
                    var: p.var,
                    first: i,
                    elems: 0,
                });
                let target = p.tail;
                step(self, b, p, i, (target, false));
            }
        });
        (self.cursor, *self.row_ptrs.borrow_mut()) = outer;
        passes
            .iter()
            .map(|p| {
                let Expr::Reduce { op, dtype, .. } = self.k.exprs[p.e] else {
                    unreachable!("a reduction")
                };
                let accs: Vec<Value> = p.accs.iter().map(|&v| b.use_var(v)).collect();
                let a = (accs.into_iter())
                    .reduce(|x, y| combine(b, op, dtype, x, y))
                    .expect("one accumulator at least");
                let mut t = b.use_var(p.tail);
                for l in 0..LANES as u8 {
                    let x = b.ins().extractlane(a, l);
                    t = combine(b, op, dtype, t, x);
                }
                Val {
                    v: t,
                    vector: false,
                }
            })
            .collect()
    }

    /// One step of reduction `e`: [`combine`], or one plain max where NaNs need not
    /// propagate (see [`Emitter::nan_blind`]); the accumulator never becomes NaN then.
    pub(crate) fn accumulate(
        &self,
        b: &mut FunctionBuilder,
        e: usize,
        (op, dtype): (ReduceOp, DType),
        acc: Value,
        x: Value,
    ) -> Value {
        if self.k.row_plan().nan_blind_max == Some(e) {
            float_max(b, acc, x)
        } else {
            combine(b, op, dtype, acc, x)
        }
    }

    /// The identity of a reduction: 0 for sums, -inf (or i32::MIN) for maxes.
    pub(crate) fn identity(
        &self,
        b: &mut FunctionBuilder,
        op: ReduceOp,
        dtype: DType,
        vector: bool,
    ) -> Value {
        let s = match (op, dtype) {
            (ReduceOp::Sum, DType::F32) => b.ins().f32const(0.0),
            (ReduceOp::Max, DType::F32) => b.ins().f32const(f32::NEG_INFINITY),
            (ReduceOp::Sum, _) => b.ins().iconst(types::I32, 0),
            (ReduceOp::Max, _) => b.ins().iconst(types::I32, i64::from(i32::MIN)),
        };
        if vector {
            b.ins().splat(vector_ty(dtype), s)
        } else {
            s
        }
    }
}

/// `max(acc, x)` that is NaN when either is: one maxps (`acc < x ? x : acc`, which keeps a
/// NaN accumulator) plus an unordered compare that turns a NaN `x` into an all-ones (NaN)
/// result — 3 instructions instead of Cranelift's 9-instruction `fmax` sequence.
fn nan_propagating_max(b: &mut FunctionBuilder, acc: Value, x: Value) -> Value {
    let kept = float_max(b, acc, x);
    let nan = b.ins().fcmp(FloatCC::Unordered, x, x);
    if b.func.dfg.value_type(acc).is_vector() {
        let t = b.ins().bitcast(types::I32X4, vflags(), kept);
        let t = b.ins().bor(t, nan);
        b.ins().bitcast(types::F32X4, vflags(), t)
    } else {
        b.ins().select(nan, x, kept)
    }
}

/// One accumulation step of a reduction: add, or a NaN-propagating max.
pub(crate) fn combine(
    b: &mut FunctionBuilder,
    op: ReduceOp,
    dtype: DType,
    acc: Value,
    x: Value,
) -> Value {
    match (op, dtype) {
        (ReduceOp::Sum, DType::F32) => b.ins().fadd(acc, x),
        (ReduceOp::Max, DType::F32) => nan_propagating_max(b, acc, x),
        (ReduceOp::Sum, _) => b.ins().iadd(acc, x),
        (ReduceOp::Max, _) => b.ins().smax(acc, x),
    }
}
