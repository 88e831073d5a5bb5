//! Kernel IR -> Cranelift IR. One function per kernel with the fixed ABI
//! `fn(bufs: *const *mut u8, syms: *const i64, start: i64, end: i64)`.
//!
//! Vectorisation (4 x f32, the widest Cranelift emits on x86-64) picks one of two layouts:
//! - *across outputs*: lanes are four neighbouring points of the innermost output loop (of
//!   the loop just outside it in a column kernel, see `columns.rs`); loads with stride
//!   1 along it become vector loads, stride 0 a splat, anything else a 4-lane gather. Each
//!   lane keeps its own accumulator, so reductions sum in the reference order.
//! - *along the reduction*: lanes are four consecutive reduce iterations (row sums, norms,
//!   softmax statistics), two vectors per iteration into two accumulators, then a
//!   horizontal combine and a scalar tail.
//!
//! Row kernels are compiled unoptimised, so the emitter does by hand what the optimiser
//! would: unrolled bodies are interleaved once built (`interleave.rs`), a row's contiguous
//! accesses are addressed from row pointers computed before each loop (`RowCursor`), and a
//! softmax's max for the next row is computed in this row's exp pass (`reduce::Carry`).
//!
//! Every load and store is in bounds by construction (indices are affine with ranges checked
//! by [`crate::bounds::check_bounds`]); padded loads clamp their index to 0 when invalid.
//!
//! This file holds the layout choice, the loop nest and the expression walk; the reduction
//! loops are in `reduce.rs`, loads and stores in `memory.rs`, the elementwise ops in
//! `scalar_ops.rs`, and the templates in `columns.rs`, `strided_reduce.rs`, `gemm.rs` and
//! `attention.rs`.

use cranelift_codegen::ir::{
    AbiParam, Function, InstBuilder, MemFlagsData, Signature, Type, Value, condcodes::IntCC, types,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

use cranegrad_graph::{BinaryOp, DType, Dim};
use cranegrad_lower::affine::Affine;
use cranegrad_lower::kernel::{Expr, GEMM_MR, Kernel, KernelBody};
pub(crate) use cranegrad_lower::kernel_analysis::Phase;
use cranegrad_lower::kernel_analysis::{along_ok, phases, row_deps};

use crate::math;
use crate::memory::{build_vector, byte_addr, conds_vary, from_lanes};
use crate::scalar_ops::{binary, unary};

/// Lane count of the vector layouts.
pub const LANES: i64 = 4;

/// Which layout the body is emitted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Lanes across the innermost output loop, or the loop just outside it in a column
    /// kernel (scalar when `vector` is false).
    AcrossOutputs {
        /// Emit a 4-lane main loop (plus scalar tail).
        vector: bool,
    },
    /// Lanes along the reduce loop.
    AlongReduction,
}

/// Chooses the layout for a kernel from the strides of its loads and stores.
pub fn choose_layout(k: &Kernel) -> Layout {
    let n_out = k.output_loops().len();
    let red = k.reduce_loop().map(|(v, _)| v);
    let loads: Vec<&Affine> = k
        .exprs
        .iter()
        .filter_map(|e| match e {
            Expr::Load { index, .. } => Some(index),
            _ => None,
        })
        .collect();
    let unit_or_zero = |v: usize| loads.iter().all(|a| matches!(a.coeff(v), 0 | 1));
    let any_unit = |v: usize| loads.iter().any(|a| a.coeff(v) == 1);
    if n_out > 0 {
        let lv = n_out - 1;
        let stores_unit = k.stores.iter().all(|s| s.index.coeff(lv) == 1);
        if stores_unit && unit_or_zero(lv) && (any_unit(lv) || red.is_none()) {
            return Layout::AcrossOutputs { vector: true };
        }
    }
    if let Some(r) = red
        && unit_or_zero(r)
        && any_unit(r)
    {
        return Layout::AlongReduction;
    }
    Layout::AcrossOutputs { vector: n_out > 0 }
}

/// True for kernels compiled without Cranelift's optimiser: row kernels, whose per-row
/// values (1/sum, -max) the optimiser's elaboration otherwise recomputes inside the row loop
/// (measured: softmax 8.9 ms with, 6.9 ms without, on 4096 x 1024), GEMMs, and attention.
pub fn prefers_plain(k: &Kernel) -> bool {
    // Its elaboration also hoists the loads of a GEMM's unrolled k loop to the top and
    // spills: GEMMs run faster compiled as emitted (measured: [128, 2048] x [2048, 2048] 99
    // -> 108 GFLOP/s, norm + SwiGLU [128, 1024] x [1024, 2048] 92 -> 102, and with packed
    // 4-k runs the matrix-vector product [1, 2048] x [2048, 2048] 0.21 -> 0.18 ms). The
    // broadcast kernel of an unpacked B keeps it for one-row blocks (31 vs 27 GFLOP/s).
    match &k.body {
        KernelBody::Siblings(parts) => parts
            .iter()
            .all(|p| p.gemm().is_some_and(|g| g.packed || g.rows >= GEMM_MR)),
        KernelBody::Gemm(g) => g.packed || g.rows >= GEMM_MR,
        // Its unrolled blocks of 4 keys suffer the same: every K and V load of a block issued
        // first and spilled (measured, causal flash attention: medium prompt 128 1.48 -> 1.07
        // ms, 512 30.4 -> 23.0 ms; smollm-135m 128 3.55 -> 1.78 ms, 512 62.6 -> 49.9 ms).
        KernelBody::Attention(_) => true,
        KernelBody::Loops(plan) => plan.row,
    }
}

/// The Cranelift signature of every kernel.
pub fn kernel_signature(call_conv: cranelift_codegen::isa::CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    for _ in 0..4 {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig
}

pub(crate) fn scalar_ty(d: DType) -> Type {
    match d {
        DType::F32 => types::F32,
        DType::I32 | DType::Bool => types::I32,
    }
}

pub(crate) fn vector_ty(d: DType) -> Type {
    match d {
        DType::F32 => types::F32X4,
        DType::I32 | DType::Bool => types::I32X4,
    }
}

/// Little-endian vector memory flags (Cranelift requires an endianness for vector loads).
pub(crate) fn vflags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}

/// Emits the whole kernel into `func`.
pub fn emit_kernel(
    k: &Kernel,
    func: &mut Function,
    fctx: &mut FunctionBuilderContext,
    frontend: cranelift_codegen::isa::TargetFrontendConfig,
) {
    let mut b = FunctionBuilder::new(func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let p = b.block_params(entry).to_vec();
    let (bufs, syms, start, end) = (p[0], p[1], p[2], p[3]);
    // Not `can_move`: the optimiser would re-place these loads inside the hot loop.
    let ro = MemFlagsData::new()
        .with_notrap()
        .with_aligned()
        .with_readonly();
    let ptrs: Vec<Value> = (0..k.args.len())
        .map(|i| b.ins().load(types::I64, ro, bufs, (8 * i) as i32))
        .collect();
    let symv: Vec<Value> = (0..k.symbols.len())
        .map(|i| b.ins().load(types::I64, ro, syms, (8 * i) as i32))
        .collect();
    let mut jams = Vec::new();
    if let KernelBody::Siblings(parts) = &k.body {
        // Each part runs the slice of [start, end) that falls in its units.
        let mut offset = 0i64;
        for (part, units) in parts.iter().zip(k.part_units()) {
            let units = units as i64;
            let zero = b.ins().iconst(types::I64, 0);
            let top = b.ins().iconst(types::I64, units);
            let local = |b: &mut FunctionBuilder, x: Value| {
                let x = b.ins().iadd_imm_s(x, -offset);
                let x = b.ins().smax(x, zero);
                b.ins().smin(x, top)
            };
            let (lo, hi) = (local(&mut b, start), local(&mut b, end));
            let (run, next) = (b.create_block(), b.create_block());
            let c = b.ins().icmp(IntCC::SignedLessThan, lo, hi);
            b.ins().brif(c, run, &[], next, &[]);
            b.switch_to_block(run);
            b.seal_block(run);
            jams.extend(emit_body(part, &mut b, &ptrs, &symv, lo, hi));
            b.ins().jump(next, &[]);
            b.switch_to_block(next);
            b.seal_block(next);
            offset += units;
        }
    } else {
        jams.extend(emit_body(k, &mut b, &ptrs, &symv, start, end));
    }
    b.ins().return_(&[]);
    b.finalize(frontend);
    let slots = ptrs.iter().enumerate().map(|(a, &p)| (p, a)).collect();
    for j in &jams {
        crate::interleave::interleave(func, &slots, j);
    }
}

/// Emits one kernel body (a whole kernel, or a part of a group) over units `[start, end)`.
fn emit_body(
    k: &Kernel,
    b: &mut FunctionBuilder,
    ptrs: &[Value],
    symv: &[Value],
    start: Value,
    end: Value,
) -> Vec<crate::interleave::Jam> {
    let ph = phases(k);
    let along = (0..k.loops.len()).map(|j| along_ok(k, &ph, j)).collect();
    let deps = row_deps(k);
    let column = k.row_plan().column;
    let mut em = Emitter {
        k,
        ptrs: ptrs.to_vec(),
        syms: symv.to_vec(),
        phases: ph,
        layout: choose_layout(k),
        along,
        row_stats: None,
        int8_rows: None,
        affine_memo: Default::default(),
        splats: Default::default(),
        row_deps: deps,
        jams: Vec::new(),
        carry: None,
        row_ptrs: Default::default(),
        cursor: None,
    };
    let extents: Vec<Value> = k.loops.iter().map(|l| em.dim(b, &l.extent)).collect();
    let n_out = k.output_loops().len();
    let mut vars: Vec<Option<Value>> = vec![None; k.loops.len()];
    match &k.body {
        KernelBody::Attention(a) => {
            em.attention(b, a, &mut vars, &extents, start, end);
            return em.jams;
        }
        KernelBody::Gemm(g) => {
            em.gemm(b, g, &mut vars, &extents, start, end);
            return em.jams;
        }
        KernelBody::Siblings(_) => unreachable!("a group's parts are emitted one by one"),
        KernelBody::Loops(_) => {}
    }
    match n_out {
        0 => {
            let body = b.create_block();
            let done = b.create_block();
            let c = b.ins().icmp(IntCC::SignedLessThan, start, end);
            b.ins().brif(c, body, &[], done, &[]);
            b.switch_to_block(body);
            b.seal_block(body);
            em.point(b, &mut vars, &extents, false);
            b.ins().jump(done, &[]);
            b.switch_to_block(done);
            b.seal_block(done);
        }
        1 => em.inner_loops(b, &mut vars, &extents, start, end),
        _ if let Some(lane) = column => em.columns(b, &mut vars, &extents, start, end, lane),
        _ if let Some((first, with)) = k.row_plan().carry => {
            em.carried_rows(b, (first, with), &mut vars, &extents, start, end);
        }
        _ => {
            let outer = n_out - 1;
            emit_loop(b, start, end, 1, |b, f| {
                split_flat(b, f, &extents, outer, &mut vars);
                let z = b.ins().iconst(types::I64, 0);
                em.inner_loops(b, &mut vars, &extents, z, extents[outer]);
            });
        }
    }
    em.jams
}

/// Sets loop variables `0..n` from a flat row-major index over their extents: how the ABI's
/// `[start, end)` range enumerates the outer loops.
pub(crate) fn split_flat(
    b: &mut FunctionBuilder,
    flat: Value,
    extents: &[Value],
    n: usize,
    vars: &mut [Option<Value>],
) {
    let mut rem = flat;
    for d in (0..n).rev() {
        if d == 0 {
            vars[0] = Some(rem);
        } else {
            vars[d] = Some(b.ins().urem(rem, extents[d]));
            rem = b.ins().udiv(rem, extents[d]);
        }
    }
}

/// `for (i = start; i + step <= end; i += step) body(i)`; returns the final `i`.
pub(crate) fn emit_loop(
    b: &mut FunctionBuilder,
    start: Value,
    end: Value,
    step: i64,
    mut body: impl FnMut(&mut FunctionBuilder, Value),
) -> Value {
    emit_while(
        b,
        start,
        |b, i| {
            let next = b.ins().iadd_imm_s(i, step);
            b.ins().icmp(IntCC::SignedLessThanOrEqual, next, end)
        },
        |b, i| {
            body(b, i);
            b.ins().iadd_imm_s(i, step)
        },
    )
}

/// [`emit_loop`] over `n` vectors per iteration, `group(b, i, j)` emitting vector `j` from
/// the iteration's first index `i`; returns the final `i` and, when the body stayed in one
/// block, its groups for [`crate::interleave`].
pub(crate) fn emit_jammed_loop(
    b: &mut FunctionBuilder,
    start: Value,
    end: Value,
    n: i64,
    mut group: impl FnMut(&mut FunctionBuilder, Value, i64),
) -> (Value, Option<crate::interleave::Jam>) {
    let mut jam = None;
    let rest = emit_loop(b, start, end, n * LANES, |b, i| {
        let block = b.current_block().expect("in the loop body");
        let mut cuts = vec![b.func.layout.last_inst(block)];
        for j in 0..n {
            group(b, i, j);
            cuts.push(b.func.layout.last_inst(block));
        }
        if b.current_block() == Some(block) {
            jam = Some(crate::interleave::Jam { block, cuts });
        }
    });
    (rest, jam)
}

/// `for (i = start; cond(i); i = body(i))`, the test at the top; returns the final `i`.
/// `body` may branch inside, but returns the next `i` in the block it ends in.
pub(crate) fn emit_while(
    b: &mut FunctionBuilder,
    start: Value,
    cond: impl FnOnce(&mut FunctionBuilder, Value) -> Value,
    body: impl FnOnce(&mut FunctionBuilder, Value) -> Value,
) -> Value {
    let header = b.create_block();
    let body_blk = b.create_block();
    let exit = b.create_block();
    b.append_block_param(header, types::I64);
    b.append_block_param(exit, types::I64);
    b.ins().jump(header, &[start.into()]);
    b.switch_to_block(header);
    let i = b.block_params(header)[0];
    let ok = cond(b, i);
    b.ins().brif(ok, body_blk, &[], exit, &[i.into()]);
    b.switch_to_block(body_blk);
    b.seal_block(body_blk);
    let next = body(b, i);
    b.ins().jump(header, &[next.into()]);
    b.seal_block(header);
    b.switch_to_block(exit);
    b.seal_block(exit);
    b.block_params(exit)[0]
}

/// Vectors per iteration of an along-reduction loop, each into an accumulator of its own:
/// two, because four interleaved exp2 chains spill registers (a 256x1024 softmax on 1
/// thread: 0.178-0.181 ms, against 0.167-0.172 for the binary before interleaving, run
/// alternately; measured before row pointers and shared constants).
pub(crate) const ALONG_VECTORS: i64 = 2;

/// Vectors per iteration of a row kernel's output loop: its outputs are light (softmax's
/// rescale is a load, a multiply and a store), so four per iteration spend fewer branches on
/// each. Not measured apart from the row pointers and shared constants that came with it.
const ROW_OUTPUT_VECTORS: i64 = 4;

/// A loop whose contiguous accesses are addressed from row pointers: its variable, the
/// current iteration's first index, and the elements from there to the current vector.
#[derive(Clone, Copy)]
pub(crate) struct RowCursor {
    /// The loop.
    pub(crate) var: usize,
    /// The iteration's first index.
    pub(crate) first: Value,
    /// Elements from `first` to the vector being emitted.
    pub(crate) elems: i64,
}

pub(crate) struct Emitter<'k> {
    pub(crate) k: &'k Kernel,
    pub(crate) ptrs: Vec<Value>,
    pub(crate) syms: Vec<Value>,
    pub(crate) phases: Vec<Phase>,
    pub(crate) layout: Layout,
    /// Per loop: a reduce loop that may run 4 iterations per vector.
    pub(crate) along: Vec<bool>,
    /// Per-row values of a GEMM's row reduction, computed before its panels.
    pub(crate) row_stats: Option<cranelift_codegen::ir::StackSlot>,
    /// A GEMM's rows of A quantised to 8 bits (see `gemm_int8`), made once per call.
    pub(crate) int8_rows: Option<crate::gemm_int8::QuantisedRows>,
    /// Index values computed so far, by block (see [`Emitter::affine`]).
    pub(crate) affine_memo: std::cell::RefCell<AffineMemo>,
    /// Vector splats of scalar values computed before the loop being emitted (a row's -max
    /// or 1/sum), so the loop body does not broadcast them again every iteration (see
    /// [`Emitter::presplat`]).
    pub(crate) splats: std::cell::RefCell<std::collections::HashMap<Value, Value>>,
    /// Jammed loop bodies to interleave after the function is built.
    pub(crate) jams: Vec<crate::interleave::Jam>,
    /// The first reduction carried from the row before (see [`crate::reduce::Carry`]).
    pub(crate) carry: Option<crate::reduce::Carry>,
    /// Row pointers of the unit-stride accesses of the loop being emitted (see
    /// [`Emitter::unit_stride_addr`]).
    pub(crate) row_ptrs:
        std::cell::RefCell<std::collections::HashMap<crate::memory::RowKey, Value>>,
    /// Where the loop whose accesses use row pointers is (an along reduction's, or a row
    /// kernel's output loop).
    pub(crate) cursor: Option<RowCursor>,
    /// Per expression: whether it depends on the innermost output loop (a row kernel's
    /// row, or a column kernel's rows).
    pub(crate) row_deps: Vec<bool>,
}

/// Computed index values by (block, index, loop variable values).
pub(crate) type AffineMemo = std::collections::HashMap<
    (
        Option<cranelift_codegen::ir::Block>,
        Affine,
        Vec<Option<Value>>,
    ),
    Value,
>;

/// A computed expression: its value and whether it is a 4-lane vector.
#[derive(Clone, Copy)]
pub(crate) struct Val {
    pub(crate) v: Value,
    pub(crate) vector: bool,
}

impl Emitter<'_> {
    fn sym(&self, name: &str) -> Value {
        let slot = self
            .k
            .symbol_slot(name)
            .expect("kernel lists every symbol it uses");
        self.syms[slot]
    }

    pub(crate) fn dim(&self, b: &mut FunctionBuilder, d: &Dim) -> Value {
        match d {
            Dim::Const(n) => b.ins().iconst(types::I64, *n as i64),
            Dim::Sym { sym, offset } => {
                let s = self.sym(&sym.name);
                let v = b.ins().iadd_imm_s(s, *offset);
                let z = b.ins().iconst(types::I64, 0);
                b.ins().smax(v, z)
            }
        }
    }

    /// The affine value with every loop variable at its current (lane-0) value.
    pub(crate) fn affine(
        &self,
        b: &mut FunctionBuilder,
        a: &Affine,
        vars: &[Option<Value>],
    ) -> Value {
        // One address computation per index per block (a load and a store at the same index,
        // say): the unoptimised row kernels have no value numbering to merge them.
        let key = (
            b.current_block(),
            a.clone(),
            a.terms.iter().map(|&(v, _)| vars[v]).collect::<Vec<_>>(),
        );
        if let Some(&v) = self.affine_memo.borrow().get(&key) {
            return v;
        }
        let v = self.affine_uncached(b, a, vars);
        self.affine_memo.borrow_mut().insert(key, v);
        v
    }

    fn affine_uncached(
        &self,
        b: &mut FunctionBuilder,
        a: &Affine,
        vars: &[Option<Value>],
    ) -> Value {
        // Row kernels are compiled without the optimiser: emit no multiply by 1 or by a power
        // of two and no add of 0 for it to remove.
        let scaled = |b: &mut FunctionBuilder, x: Value, c: i64| match c {
            1 => x,
            c if c > 0 && (c as u64).is_power_of_two() => {
                b.ins().ishl_imm_s(x, i64::from(c.trailing_zeros()))
            }
            c => b.ins().imul_imm_s(x, c),
        };
        let mut acc: Option<Value> = None;
        let terms = a
            .terms
            .iter()
            .map(|&(v, c)| (vars[v].expect("loop variable in scope"), c))
            .chain(a.syms.iter().map(|(s, c)| (self.sym(s), *c)));
        for (x, c) in terms.collect::<Vec<_>>() {
            let t = scaled(b, x, c);
            acc = Some(match acc {
                Some(sum) => b.ins().iadd(sum, t),
                None => t,
            });
        }
        match acc {
            Some(sum) if a.constant == 0 => sum,
            Some(sum) => b.ins().iadd_imm_s(sum, a.constant),
            None => b.ins().iconst(types::I64, a.constant),
        }
    }

    fn lane_var(&self) -> Option<usize> {
        self.k
            .row_plan()
            .column
            .or_else(|| self.k.output_loops().len().checked_sub(1))
    }

    /// Innermost output loop (vectorised or not) with the reductions of each point (across
    /// outputs: row-major over the whole vectors first, see [`crate::strided_reduce`]), or,
    /// for a row kernel, the row's reductions first and then the row.
    fn inner_loops(
        &mut self,
        b: &mut FunctionBuilder,
        vars: &mut [Option<Value>],
        extents: &[Value],
        start: Value,
        end: Value,
    ) {
        let lv = self.k.output_loops().len() - 1;
        let vector =
            matches!(self.layout, Layout::AcrossOutputs { vector: true }) || self.k.row_plan().row;
        let mut row_vals: Vec<Option<Val>> = vec![None; self.k.exprs.len()];
        if self.k.row_plan().row {
            vars[lv] = None;
            if let Some(c) = &self.carry {
                row_vals[c.e] = Some(Val {
                    v: b.use_var(c.var),
                    vector: false,
                });
            }
            self.reductions(b, &mut row_vals, vars, extents, None);
            // Everything else that does not vary along the row (1/sum, -max) once per row.
            for e in 0..self.k.exprs.len() {
                if !self.row_deps[e] && !matches!(self.phases[e], Phase::Inner(_)) {
                    self.ensure(b, e, &mut row_vals, vars, None, false);
                }
            }
        }
        let mut i = start;
        // Reductions across outputs (a column sum) run row-major over the whole vectors.
        if vector && !self.k.row_plan().row && self.k.reduce_loop().is_some() {
            i = self.strided_reduce(b, vars, extents, lv, start, end);
        }
        // A row's outputs address memory from row pointers (see `prepare_row_ptr`).
        let row = self.k.row_plan().row;
        if row {
            self.prepare_output_row_ptrs(b, lv, vars);
        }
        let at = |first, elems| {
            row.then_some(RowCursor {
                var: lv,
                first,
                elems,
            })
        };
        if vector {
            let added = self.presplat(b, &row_vals, 0..self.k.exprs.len());
            if row {
                let (rest, jam) = emit_jammed_loop(b, i, end, ROW_OUTPUT_VECTORS, |b, i, j| {
                    self.cursor = at(i, j * LANES);
                    vars[lv] = Some(b.ins().iadd_imm_s(i, j * LANES));
                    let mut vals = row_vals.clone();
                    self.point_with(b, &mut vals, vars, extents, true);
                });
                self.jams.extend(jam);
                i = rest;
            }
            i = emit_loop(b, i, end, LANES, |b, i| {
                self.cursor = at(i, 0);
                vars[lv] = Some(i);
                let mut vals = row_vals.clone();
                self.point_with(b, &mut vals, vars, extents, true);
            });
            self.forget_splats(added);
        }
        emit_loop(b, i, end, 1, |b, i| {
            self.cursor = at(i, 0);
            vars[lv] = Some(i);
            let mut vals = row_vals.clone();
            self.point_with(b, &mut vals, vars, extents, false);
        });
        self.cursor = None;
        self.row_ptrs.borrow_mut().clear();
    }

    /// The rows `[start, end)` of a row kernel whose first reduction is carried: the first
    /// row's in a pass of its own, every other row's in the row before.
    fn carried_rows(
        &mut self,
        b: &mut FunctionBuilder,
        (first, with): (usize, usize),
        vars: &mut [Option<Value>],
        extents: &[Value],
        start: Value,
        end: Value,
    ) {
        let outer = self.k.output_loops().len() - 1;
        let (run, done) = (b.create_block(), b.create_block());
        let any = b.ins().icmp(IntCC::SignedLessThan, start, end);
        b.ins().brif(any, run, &[], done, &[]);
        b.switch_to_block(run);
        b.seal_block(run);
        split_flat(b, start, extents, outer, vars);
        let mut vals: Vec<Option<Val>> = vec![None; self.k.exprs.len()];
        self.reduction(b, first, &mut vals, vars, extents, None);
        let var = b.declare_var(scalar_ty(self.k.exprs[first].dtype()));
        b.def_var(var, vals[first].expect("reduced").v);
        let last = b.ins().iadd_imm_s(end, -1);
        emit_loop(b, start, end, 1, |b, f| {
            split_flat(b, f, extents, outer, vars);
            let next = b.ins().iadd_imm_s(f, 1);
            let next = b.ins().smin(next, last);
            let mut next_vars = vars.to_vec();
            split_flat(b, next, extents, outer, &mut next_vars);
            self.carry = Some(crate::reduce::Carry {
                e: first,
                with,
                var,
                next_vars,
            });
            let z = b.ins().iconst(types::I64, 0);
            self.inner_loops(b, vars, extents, z, extents[outer]);
        });
        self.carry = None;
        b.ins().jump(done, &[]);
        b.switch_to_block(done);
        b.seal_block(done);
    }

    /// Row pointers, before a row kernel's output loop `lv`, for its contiguous loads and
    /// stores along the row (the store-and-rescale's read-back is its store's).
    fn prepare_output_row_ptrs(&self, b: &mut FunctionBuilder, lv: usize, vars: &[Option<Value>]) {
        let mut at: Vec<(usize, Affine)> = self
            .k
            .exprs
            .iter()
            .filter_map(|x| match x {
                Expr::Load {
                    arg, index, conds, ..
                } if conds.is_empty() => Some((*arg, index.clone())),
                _ => None,
            })
            .collect();
        at.extend(self.k.stores.iter().map(|st| (st.arg, st.index.clone())));
        for (arg, index) in at {
            self.prepare_row_ptr(b, arg, &index, lv, vars);
        }
    }

    /// One output point (or four lanes of them): reductions, everything else, stores.
    pub(crate) fn point(
        &mut self,
        b: &mut FunctionBuilder,
        vars: &mut [Option<Value>],
        extents: &[Value],
        vector: bool,
    ) {
        let mut vals: Vec<Option<Val>> = vec![None; self.k.exprs.len()];
        self.point_with(b, &mut vals, vars, extents, vector);
    }

    pub(crate) fn point_with(
        &mut self,
        b: &mut FunctionBuilder,
        vals: &mut [Option<Val>],
        vars: &mut [Option<Value>],
        extents: &[Value],
        vector: bool,
    ) {
        let lane = if vector { self.lane_var() } else { None };
        self.reductions(b, vals, vars, extents, lane);
        if let Some(r) = &self.k.row_plan().rescale {
            let st = &self.k.stores[0];
            let (addr, off) =
                match self.unit_stride_addr(b, (r.arg, &st.index), vars, (lane, vector)) {
                    Some(at) => at,
                    None => {
                        let base = self.affine(b, &st.index, vars);
                        (byte_addr(b, self.ptrs[r.arg], base), 0)
                    }
                };
            let ty = if vector { types::F32X4 } else { types::F32 };
            vals[r.factor] = Some(Val {
                v: b.ins().load(ty, vflags().with_notrap(), addr, off),
                vector,
            });
        }
        // Only what the stores need: a row kernel compiled unoptimised would otherwise also
        // load the inputs of a value it reads back (softmax's exp, stored and rescaled).
        for st in &self.k.stores {
            self.ensure(b, st.value, vals, vars, lane, vector);
        }
        for st in &self.k.stores {
            let v = vals[st.value].expect("stored value computed");
            let dtype = self.k.exprs[st.value].dtype();
            let v = if vector { self.widen(b, v, dtype) } else { v };
            if let Some(at) = self.unit_stride_addr(b, (st.arg, &st.index), vars, (lane, vector)) {
                self.store_at(b, at, v);
                continue;
            }
            let base = self.affine(b, &st.index, vars);
            let coeff = st.index.coeff(lane.unwrap_or(usize::MAX));
            self.store(b, st.arg, base, coeff, v);
        }
    }

    /// Computes `e` (and, first, any operand not yet computed) outside every reduce loop.
    pub(crate) fn ensure(
        &mut self,
        b: &mut FunctionBuilder,
        e: usize,
        vals: &mut [Option<Val>],
        vars: &[Option<Value>],
        lane: Option<usize>,
        vector: bool,
    ) {
        if vals[e].is_some() {
            return;
        }
        for o in self.k.exprs[e].operands() {
            self.ensure(b, o, vals, vars, lane, vector);
        }
        vals[e] = Some(self.expr(b, e, vals, vars, lane, vector));
    }

    pub(crate) fn widen(&self, b: &mut FunctionBuilder, v: Val, dtype: DType) -> Val {
        if v.vector {
            return v;
        }
        if let Some(&s) = self.splats.borrow().get(&v.v) {
            return Val { v: s, vector: true };
        }
        Val {
            v: b.ins().splat(vector_ty(dtype), v.v),
            vector: true,
        }
    }

    /// Splats the scalar values among `exprs` here, before a vector loop that uses them, for
    /// [`Emitter::widen`] inside it; returns the values to forget (with
    /// [`Emitter::forget_splats`]) once the loop is emitted, where the splats may not
    /// dominate. Unused splats cost nothing: Cranelift does not lower dead pure values.
    pub(crate) fn presplat(
        &self,
        b: &mut FunctionBuilder,
        vals: &[Option<Val>],
        exprs: impl Iterator<Item = usize>,
    ) -> Vec<Value> {
        let mut added = Vec::new();
        for e in exprs {
            let Some(v) = vals[e].filter(|v| !v.vector) else {
                continue;
            };
            if self.splats.borrow().contains_key(&v.v) {
                continue;
            }
            let s = b.ins().splat(vector_ty(self.k.exprs[e].dtype()), v.v);
            self.splats.borrow_mut().insert(v.v, s);
            added.push(v.v);
        }
        added
    }

    /// A [`Expr::MulAdd`] as one FMA: `None` where its values are not all computed, or where
    /// its product was computed before a vector loop (a row value, already splatted), which
    /// contracting would compute again per point.
    fn contracted(
        &self,
        b: &mut FunctionBuilder,
        product: usize,
        other: usize,
        vals: &[Option<Val>],
    ) -> Option<Val> {
        let Expr::Binary { a: p, b: q, .. } = self.k.exprs[product] else {
            return None;
        };
        let (pv, qv, ov) = (vals[p]?, vals[q]?, vals[other]?);
        let vector = pv.vector || qv.vector || ov.vector;
        if vector && vals[product].is_some_and(|m| !m.vector) {
            return None;
        }
        let w = |b: &mut FunctionBuilder, v: Val| {
            if vector {
                self.widen(b, v, DType::F32).v
            } else {
                v.v
            }
        };
        let (pv, qv, ov) = (w(b, pv), w(b, qv), w(b, ov));
        Some(Val {
            v: b.ins().fma(pv, qv, ov),
            vector,
        })
    }

    /// Drops splats made by [`Emitter::presplat`].
    pub(crate) fn forget_splats(&self, added: Vec<Value>) {
        let mut m = self.splats.borrow_mut();
        for v in added {
            m.remove(&v);
        }
    }

    /// Emits expression `e`; `lane` is the loop variable that differs across vector lanes.
    pub(crate) fn expr(
        &mut self,
        b: &mut FunctionBuilder,
        e: usize,
        vals: &[Option<Val>],
        vars: &[Option<Value>],
        lane: Option<usize>,
        vector: bool,
    ) -> Val {
        let expr = &self.k.exprs[e];
        let dtype = expr.dtype();
        let get = |i: usize| vals[i].expect("operand computed earlier");
        match expr {
            Expr::Load {
                arg,
                index,
                conds,
                dtype,
            } => self.load(b, *arg, index, conds, *dtype, vars, lane, vector),
            Expr::Const { bits, dtype } => {
                let x = f64::from_bits(*bits);
                let s = match dtype {
                    DType::F32 => b.ins().f32const(x as f32),
                    DType::I32 => b.ins().iconst(types::I32, i64::from(x as i32)),
                    DType::Bool => b.ins().iconst(types::I32, i64::from(x != 0.0)),
                };
                Val {
                    v: s,
                    vector: false,
                }
            }
            Expr::Index(a) => {
                let base = self.affine(b, a, vars);
                let c = lane.map_or(0, |l| a.coeff(l));
                if vector && c != 0 {
                    let lanes: Vec<Value> = (0..LANES)
                        .map(|l| {
                            let x = b.ins().iadd_imm_s(base, l * c);
                            b.ins().ireduce(types::I32, x)
                        })
                        .collect();
                    Val {
                        v: build_vector(b, types::I32X4, &lanes),
                        vector: true,
                    }
                } else {
                    Val {
                        v: b.ins().ireduce(types::I32, base),
                        vector: false,
                    }
                }
            }
            Expr::InBounds(conds) => {
                let lanes_n = if vector && conds_vary(conds, lane) {
                    LANES
                } else {
                    1
                };
                let lanes: Vec<Value> = (0..lanes_n)
                    .map(|l| {
                        let ok = self.conds_ok(b, conds, vars, lane, l);
                        b.ins().uextend(types::I32, ok)
                    })
                    .collect();
                from_lanes(b, types::I32X4, &lanes)
            }
            // A softmax weight `exp2(y * k)`: the product is left to the exp (one rounding).
            Expr::Exp2NonPositive {
                scaled: Some((y, k)),
                ..
            } => {
                let yv = get(*y);
                Val {
                    v: math::exp2_scaled_nonpositive(b, yv.v, f32::from_bits(*k)),
                    vector: yv.vector,
                }
            }
            Expr::Exp2NonPositive { x, scaled: None } => Val {
                v: math::exp2_nonpositive(b, get(*x).v),
                vector: get(*x).vector,
            },
            Expr::Unary { op, x, dtype: out } => {
                let xv = get(*x);
                let in_dtype = self.k.exprs[*x].dtype();
                unary(b, *op, in_dtype, *out, xv)
            }
            Expr::MulAdd {
                product,
                addend,
                product_first,
                ..
            } => match self.contracted(b, *product, *addend, vals) {
                Some(v) => v,
                None => {
                    let (first, second) = if *product_first {
                        (*product, *addend)
                    } else {
                        (*addend, *product)
                    };
                    let (mut av, mut bv) = (get(first), get(second));
                    if av.vector != bv.vector {
                        av = self.widen(b, av, DType::F32);
                        bv = self.widen(b, bv, DType::F32);
                    }
                    binary(b, BinaryOp::Add, DType::F32, av, bv)
                }
            },
            Expr::Binary { op, a, b: bb, .. } => {
                let (mut av, mut bv) = (get(*a), get(*bb));
                let in_dtype = self.k.exprs[*a].dtype();
                if av.vector != bv.vector {
                    av = self.widen(b, av, in_dtype);
                    bv = self.widen(b, bv, in_dtype);
                }
                binary(b, *op, in_dtype, av, bv)
            }
            Expr::Where { c, a, b: bb, .. } => {
                let (mut cv, mut av, mut bv) = (get(*c), get(*a), get(*bb));
                let any_vec = cv.vector || av.vector || bv.vector;
                if any_vec {
                    cv = self.widen(b, cv, DType::Bool);
                    av = self.widen(b, av, dtype);
                    bv = self.widen(b, bv, dtype);
                    let zero = b.ins().iconst(types::I32, 0);
                    let zv = b.ins().splat(types::I32X4, zero);
                    let mask = b.ins().icmp(IntCC::NotEqual, cv.v, zv);
                    let mask = if dtype == DType::F32 {
                        b.ins().bitcast(types::F32X4, vflags(), mask)
                    } else {
                        mask
                    };
                    Val {
                        v: b.ins().bitselect(mask, av.v, bv.v),
                        vector: true,
                    }
                } else {
                    Val {
                        v: b.ins().select(cv.v, av.v, bv.v),
                        vector: false,
                    }
                }
            }
            Expr::Gather {
                arg,
                row,
                rows,
                row_stride,
                index,
                dtype,
                packed,
            } => {
                let r = get(*row);
                self.gather(
                    b,
                    *arg,
                    r,
                    *rows,
                    *row_stride,
                    index,
                    *dtype,
                    *packed,
                    vars,
                    lane,
                    vector,
                )
            }
            Expr::Reduce { .. } => unreachable!("reductions are produced by the reduce loop"),
        }
    }
}
