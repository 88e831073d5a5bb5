//! Column kernels: a row kernel whose rows run along a strided axis (a softmax or norm over
//! axis 0, after `reduced_axis_innermost` made that axis the innermost output loop). Lanes
//! are four neighbouring columns, the parallel loop just outside the rows: every access of
//! a row's element is then a contiguous 4-wide load or store, where lanes along the rows
//! would gather and scatter at the row stride. Each unit (64 columns as 16 vectors side by
//! side, 4 columns, or 1) runs its reductions down the rows with one accumulator lane per
//! column, then writes its rows.

use cranelift_codegen::ir::{InstBuilder, Value, condcodes::IntCC, types};
use cranelift_frontend::FunctionBuilder;

use cranegrad_lower::kernel::Expr;

use crate::emit::{
    Emitter, LANES, Phase, Val, emit_loop, emit_while, scalar_ty, split_flat, vector_ty,
};

/// Column groups (of four) a wide unit runs side by side: 64 columns, four whole cache lines
/// of each row per pass over the rows, and 16 independent accumulator chains. Measured on
/// softmax over axis 0 of 1024 x 4096: 4.7 ms with 4 groups, 3.0 with 8, 2.4 with 16 (a
/// row's lines are 16 KB apart, so each pass reads them from L3; wider units amortise that).
const GROUPS: i64 = 16;

impl Emitter<'_> {
    /// Units `[start, end)` of the parallel range, 64 or 4 at a time where those are
    /// neighbouring columns of one row block (the lane loop does not wrap), one at a time
    /// elsewhere.
    pub(crate) fn columns(
        &mut self,
        b: &mut FunctionBuilder,
        vars: &mut [Option<Value>],
        extents: &[Value],
        start: Value,
        end: Value,
        lane: usize,
    ) {
        let rows = lane + 1;
        let more = |b: &mut FunctionBuilder, f: Value| b.ins().icmp(IntCC::SignedLessThan, f, end);
        emit_while(b, start, more, |b, f| {
            split_flat(b, f, extents, rows, vars);
            let col = vars[lane].expect("lane loop set");
            let units_left = b.ins().isub(end, f);
            let cols_left = b.ins().isub(extents[lane], col);
            let left = b.ins().smin(units_left, cols_left);
            // Each kind of unit joins here with the next unit index.
            let join = b.create_block();
            b.append_block_param(join, types::I64);
            // (groups, vector) per unit width, widest first; the last one always runs.
            let kinds = [(GROUPS, true), (1, true), (1, false)];
            for (n, &(groups, vector)) in kinds.iter().enumerate() {
                let width = if vector { groups * LANES } else { 1 };
                let last = n + 1 == kinds.len();
                let next = (!last).then(|| {
                    let (run, next) = (b.create_block(), b.create_block());
                    let fits = b
                        .ins()
                        .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, left, width);
                    b.ins().brif(fits, run, &[], next, &[]);
                    b.switch_to_block(run);
                    b.seal_block(run);
                    next
                });
                self.column_unit(b, vars, extents, lane, groups as usize, vector);
                let after = b.ins().iadd_imm_s(f, width);
                b.ins().jump(join, &[after.into()]);
                if let Some(next) = next {
                    b.switch_to_block(next);
                    b.seal_block(next);
                }
            }
            b.switch_to_block(join);
            b.seal_block(join);
            b.block_params(join)[0]
        });
    }

    /// One unit of `groups` column groups (of four columns when `vector`, else one column):
    /// each reduction down the rows for every group in one loop, the values that do not vary
    /// along the rows, then the rows.
    fn column_unit(
        &mut self,
        b: &mut FunctionBuilder,
        vars: &mut [Option<Value>],
        extents: &[Value],
        lane: usize,
        groups: usize,
        vector: bool,
    ) {
        let rows = lane + 1;
        let lanes = vector.then_some(lane);
        let first = vars[lane].expect("lane loop set");
        let cols: Vec<Value> = (0..groups as i64)
            .map(|u| {
                if u == 0 {
                    first
                } else {
                    b.ins().iadd_imm_s(first, u * LANES)
                }
            })
            .collect();
        vars[rows] = None;
        let n = self.k.exprs.len();
        let mut vals: Vec<Vec<Option<Val>>> = vec![vec![None; n]; groups];
        for e in 0..n {
            let Expr::Reduce { op, dtype, var, .. } = self.k.exprs[e] else {
                continue;
            };
            let (inner, outside) = self.loop_split(e);
            let mut accs = Vec::with_capacity(groups);
            for (u, &c) in cols.iter().enumerate() {
                vars[lane] = Some(c);
                for &o in &outside {
                    self.ensure(b, o, &mut vals[u], vars, lanes, vector);
                }
                let acc = b.declare_var(if vector {
                    vector_ty(dtype)
                } else {
                    scalar_ty(dtype)
                });
                let init = self.identity(b, op, dtype, vector);
                b.def_var(acc, init);
                accs.push(acc);
            }
            let zero = b.ins().iconst(types::I64, 0);
            emit_loop(b, zero, extents[var], 1, |b, i| {
                vars[var] = Some(i);
                for (u, &c) in cols.iter().enumerate() {
                    vars[lane] = Some(c);
                    let a = b.use_var(accs[u]);
                    let nv =
                        self.reduce_step(b, e, &inner, vals[u].clone(), vars, (lanes, vector), a);
                    b.def_var(accs[u], nv);
                }
            });
            vars[var] = None;
            for (u, &acc) in accs.iter().enumerate() {
                vals[u][e] = Some(Val {
                    v: b.use_var(acc),
                    vector,
                });
            }
        }
        // `row_deps` is over the innermost output loop: the rows.
        for (u, &c) in cols.iter().enumerate() {
            vars[lane] = Some(c);
            for (e, &varies) in self.row_deps.clone().iter().enumerate() {
                if !varies && !matches!(self.phases[e], Phase::Inner(_)) {
                    self.ensure(b, e, &mut vals[u], vars, lanes, vector);
                }
            }
        }
        let zero = b.ins().iconst(types::I64, 0);
        emit_loop(b, zero, extents[rows], 1, |b, i| {
            vars[rows] = Some(i);
            for (u, &c) in cols.iter().enumerate() {
                vars[lane] = Some(c);
                let mut local = vals[u].clone();
                self.point_with(b, &mut local, vars, extents, vector);
            }
        });
        vars[rows] = None;
        vars[lane] = Some(first);
    }
}
