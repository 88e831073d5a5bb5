//! The kernel IR: a loop nest (parallel output loops, an optional innermost reduction) around a
//! small SSA DAG of scalar ops whose loads and stores use affine indices. It has a canonical
//! text form; that text (minus the kernel's name) is also what the kernel cache hashes.

use std::fmt::{self, Write};

use cranegrad_graph::{
    BinaryOp, CompactFormat, DType, Dim, Q8_BLOCK, ReduceOp, Symbol, UnaryOp, op::format_value,
};

use crate::affine::{Affine, Cond};

/// Index of an expression in `Kernel::exprs`.
pub type ExprId = usize;

/// What a loop does with its iterations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum LoopKind {
    /// Independent iterations split across threads (the ABI's `[start, end)` range).
    Parallel,
    /// Independent iterations that each thread runs whole: output loops inside the split
    /// range (the columns of a row kernel's row, vectorised 4 at a time).
    Sequential,
    /// Accumulates the kernel's `Reduce` expressions; always innermost.
    Reduce,
}

/// One loop of the nest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Loop {
    /// Trip count (symbolic extents are read from the symbol array at run time).
    pub extent: Dim,
    /// Parallel or reduction.
    pub kind: LoopKind,
}

/// How the kernel reads or writes an argument buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Access {
    /// Only loaded.
    Read,
    /// Only stored.
    Write,
}

/// One buffer argument of the kernel ABI (`bufs[slot]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Arg {
    /// Element type.
    pub dtype: DType,
    /// Elements allocated (at every symbol's maximum); loads and stores stay below it.
    pub len: usize,
    /// Read or write.
    pub access: Access,
}

/// A scalar operation of the kernel body.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Expr {
    /// `bufs[arg][index]`; if `conds` fail the value is 0 and memory is not touched.
    Load {
        /// Argument slot.
        arg: usize,
        /// Element offset.
        index: Affine,
        /// Validity conditions (padding).
        conds: Vec<Cond>,
        /// Element type.
        dtype: DType,
    },
    /// `bufs[arg][clamp(row, 0, rows-1) * row_stride + index]`: a row lookup by a computed id
    /// (ids are validated before launch; the clamp keeps memory safe regardless).
    Gather {
        /// Argument slot of the table.
        arg: usize,
        /// The i32 row id.
        row: ExprId,
        /// Rows in the table.
        rows: usize,
        /// Elements per row.
        row_stride: i64,
        /// Offset within the row.
        index: Affine,
        /// Element type.
        dtype: DType,
        /// The table is read from the packed panels of this compact format (the runtime swaps
        /// the slot as for a GEMM's transposed B, `rows` columns of `row_stride` k): a weight
        /// both gathered and multiplied, or only gathered, keeps no f32 copy.
        packed: Option<CompactFormat>,
    },
    /// A constant (f64 bits, so the expression is hashable).
    Const {
        /// `f64::to_bits` of the value.
        bits: u64,
        /// Element type.
        dtype: DType,
    },
    /// The value of an index expression, as i32.
    Index(Affine),
    /// True when every condition holds.
    InBounds(Vec<Cond>),
    /// Elementwise unary op; `dtype` is the result type (the target of a cast).
    Unary {
        /// The op.
        op: UnaryOp,
        /// Operand.
        x: ExprId,
        /// Result dtype.
        dtype: DType,
    },
    /// Elementwise binary op.
    Binary {
        /// The op.
        op: BinaryOp,
        /// Left operand.
        a: ExprId,
        /// Right operand.
        b: ExprId,
        /// Result dtype.
        dtype: DType,
    },
    /// `c ? a : b`.
    Where {
        /// Bool condition.
        c: ExprId,
        /// Value when true.
        a: ExprId,
        /// Value when false.
        b: ExprId,
        /// Result dtype.
        dtype: DType,
    },
    /// `product + addend` with the product not rounded first: an add contracted into one FMA
    /// (`contract_fma`), `product` a single-use multiply that stays in the body (codegen
    /// evaluates it where the contraction does not pay: computed once outside a vector loop).
    MulAdd {
        /// The multiply.
        product: ExprId,
        /// The other operand of the add.
        addend: ExprId,
        /// The add read the product as its first operand (an add emitted without the
        /// contraction reads its operands in the original order).
        product_first: bool,
        /// Result dtype.
        dtype: DType,
    },
    /// `exp2(x)` of an `x` that is never positive (a softmax weight, `bound_exp2`): the upper
    /// range needs no handling. With `scaled`, `x` is `y * k` (through positive constant
    /// factors) for `(y, f32 bits of k)`, and the product is left to the exp2 (rounded once).
    Exp2NonPositive {
        /// The argument.
        x: ExprId,
        /// `(y, k)` with `x = y * k`, `y` an ancestor of `x`.
        scaled: Option<(ExprId, u32)>,
    },
    /// The reduction of `x` over reduce loop `var` (sequential, one accumulator per output).
    Reduce {
        /// Sum or max.
        op: ReduceOp,
        /// The value accumulated each iteration.
        x: ExprId,
        /// Result dtype.
        dtype: DType,
        /// The reduce loop it runs over.
        var: usize,
    },
}

impl Expr {
    /// The dtype the expression produces.
    pub fn dtype(&self) -> DType {
        match self {
            Expr::Load { dtype, .. }
            | Expr::Gather { dtype, .. }
            | Expr::Const { dtype, .. }
            | Expr::Unary { dtype, .. }
            | Expr::Binary { dtype, .. }
            | Expr::Where { dtype, .. }
            | Expr::MulAdd { dtype, .. }
            | Expr::Reduce { dtype, .. } => *dtype,
            Expr::Exp2NonPositive { .. } => DType::F32,
            Expr::Index(_) => DType::I32,
            Expr::InBounds(_) => DType::Bool,
        }
    }

    /// Expressions this one reads.
    pub fn operands(&self) -> Vec<ExprId> {
        match self {
            Expr::Unary { x, .. } | Expr::Reduce { x, .. } | Expr::Exp2NonPositive { x, .. } => {
                vec![*x]
            }
            Expr::MulAdd {
                product,
                addend,
                product_first,
                ..
            } => {
                if *product_first {
                    vec![*product, *addend]
                } else {
                    vec![*addend, *product]
                }
            }
            Expr::Gather { row, .. } => vec![*row],
            Expr::Binary { a, b, .. } => vec![*a, *b],
            Expr::Where { c, a, b, .. } => vec![*c, *a, *b],
            _ => vec![],
        }
    }

    /// True when the expression's own addressing (a load's or gather's index, an index
    /// value, bounds conditions) depends on loop variable `v`; operands are not followed.
    pub fn indexes_with(&self, v: usize) -> bool {
        let conds = |c: &[Cond]| c.iter().any(|c| c.expr.coeff(v) != 0);
        match self {
            Expr::Load {
                index, conds: c, ..
            } => index.coeff(v) != 0 || conds(c),
            Expr::Gather { index, .. } | Expr::Index(index) => index.coeff(v) != 0,
            Expr::InBounds(c) => conds(c),
            _ => false,
        }
    }

    /// The f64 value of a constant.
    pub fn const_value(&self) -> Option<f64> {
        match self {
            Expr::Const { bits, .. } => Some(f64::from_bits(*bits)),
            _ => None,
        }
    }
}

/// `bufs[arg][index] = value`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Store {
    /// Argument slot.
    pub arg: usize,
    /// Element offset (independent of the reduce loop).
    pub index: Affine,
    /// The stored expression.
    pub value: ExprId,
}

/// A compiled unit: `extern "C" fn(bufs, syms, start, end)` computes iterations
/// `[start, end)` of its parallel range (see [`Kernel::parallel_dims`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Kernel {
    /// Display name (not part of the cache key).
    pub name: String,
    /// The graph ops fused into this kernel, for `--dump-graph` (not part of the cache key).
    pub ops: Vec<String>,
    /// Buffer arguments by ABI slot.
    pub args: Vec<Arg>,
    /// Symbols by ABI slot of `syms`.
    pub symbols: Vec<Symbol>,
    /// Loop nest, outermost first; a reduce loop, if any, is last.
    pub loops: Vec<Loop>,
    /// SSA body, operands before users.
    pub exprs: Vec<Expr>,
    /// Results written back.
    pub stores: Vec<Store>,
    /// What the kernel is: which template codegen emits it with, and that template's spec.
    pub body: KernelBody,
}

/// What a kernel computes, decided once in lower and dispatched once in codegen. Every variant
/// but `Siblings` reads its loops, expressions and stores; a template's spec names the
/// expressions and loops it gives a role.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum KernelBody {
    /// A loop nest emitted by the generic emitter (elementwise, reductions, row kernels),
    /// with how its rows run.
    Loops(RowPlan),
    /// A register-blocked GEMM (see `select_gemm`).
    Gemm(GemmSpec),
    /// A flash-attention kernel (see `fuse_attention`).
    Attention(AttentionSpec),
    /// A horizontal fusion (see `fuse_sibling_gemms`): independent GEMMs reading the same A,
    /// one function over one parallel range holding their work units back to back. Each
    /// part's argument and symbol slots are this kernel's; a group has no loops or body of
    /// its own.
    Siblings(Vec<Kernel>),
}

/// How a loop nest's rows run, decided by the kernel passes (all off for a plain nest).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RowPlan {
    /// A row kernel: its reductions do not read the innermost output loop, so they run once
    /// per row, before the row's outputs (softmax, norms; `plan_rows`).
    pub row: bool,
    /// A row kernel whose rows run along a strided axis: vectors span four neighbouring
    /// columns of this loop (the one just outside the rows; `plan_rows`).
    pub column: Option<usize>,
    /// The sum's loop also stores the summed value, and the output rescales it
    /// (`store_and_rescale`).
    pub rescale: Option<Rescale>,
    /// A max reduction whose NaN propagation no output needs: one plain `maxps` per vector
    /// (`nan_blind_max`).
    pub nan_blind_max: Option<ExprId>,
    /// `(first, with)`: the first reduction of the next row is computed in this row's loop of
    /// reduction `with` (`carry_first_reduction`).
    pub carry: Option<(ExprId, ExprId)>,
}

/// Store-and-rescale of a row kernel: when a row's output is `E * s` with `s` constant along
/// the row and `E` exactly the value a row sum accumulates (softmax: `exp(x - max) * 1/sum`),
/// the sum's loop also stores `E` into the output, and the output pass computes
/// `load(out) * s` instead of evaluating `E` (an `exp`) a second time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Rescale {
    /// The Reduce (sum) whose loop also stores.
    pub reduce: ExprId,
    /// The row factor `E` in the stored product.
    pub factor: ExprId,
    /// The output argument slot.
    pub arg: usize,
    /// Output index in terms of the reduce variable (for the stores in the sum's loop).
    pub index_in_loop: Affine,
    /// The row factor `s` the output multiplies `E` by.
    pub scale: ExprId,
}

/// True when codegen's scaled non-positive exp2 takes factor `k`: positive, finite, and large
/// enough (at least 127 / f32::MAX) that its clamp `-127 / k` is finite, so `-inf` is clamped.
pub fn scaled_exp2_takes(k: f32) -> bool {
    k > 0.0 && k.is_finite() && ((-127.0 / f64::from(k)) as f32).is_finite()
}

/// A flash-attention kernel. Its loops are the output's (query rows, then the value column
/// `d`, sequential), a key loop `j` and a dot-product loop `c`, both marked reduce; per query
/// row the template runs over the keys once with an online softmax:
/// `s = scale * sum_c q[c] k[j, c]`, `s = mask ? fill : s`, running max `m` and sum `l` of
/// `exp2(exp_scale * (s - m))`, and `out[d] = sum_j p_j v[j, d] / l`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct AttentionSpec {
    /// The query load (indexed by the row loops and `c`).
    pub q: ExprId,
    /// The key load (indexed by `j` and `c`).
    pub k: ExprId,
    /// The value load (indexed by `j` and `d`).
    pub v: ExprId,
    /// A bool expression of the rows and `j`: the key is hidden.
    pub mask: Option<ExprId>,
    /// `f64::to_bits` of the score a hidden key gets.
    pub fill_bits: u64,
    /// `f64::to_bits` of the factor on the raw scores.
    pub scale_bits: u64,
    /// `f64::to_bits` of the factor inside the exp2.
    pub exp_scale_bits: u64,
    /// The key loop.
    pub key_loop: usize,
    /// The dot-product loop.
    pub dot_loop: usize,
}

/// A kernel whose reduction is `sum(A[.., m, k] * B[k, n])` with B independent of the output
/// rows: codegen gives it a register-blocked GEMM instead of the generic loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct GemmSpec {
    /// Index of the column loop (innermost output loop).
    pub n_loop: usize,
    /// Index of the reduce loop.
    pub k_loop: usize,
    /// The A load.
    pub a: ExprId,
    /// The B load.
    pub b: ExprId,
    /// The product accumulated.
    pub product: ExprId,
    /// The Reduce expression.
    pub reduce: ExprId,
    /// Rows: product of all output loops but the column loop.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// B is read as `[N, K]` (a transposed `nn.Linear` weight): only usable once packed.
    pub b_transposed: bool,
    /// A vector over K that scales B's rows (a folded norm gain): the B operand is
    /// `B[k, n] * s[k]`, which the runtime folds into the packed panels.
    pub b_scale: Option<ExprId>,
    /// A reduction over the rows of A only (a norm's sum of squares), computed once per row
    /// before the panels and read by the epilogue.
    pub row_reduce: Option<ExprId>,
    /// A second contraction of the same A (SwiGLU's gate and up): both weights are packed
    /// into one panel, 4 columns of each, and the epilogue sees both accumulators.
    pub pair: Option<GemmPair>,
    /// B (and a pair's B) is a weight read from a packed copy: 8-column panels, each
    /// contiguous and zero-padded, holding per group of 4 k values each column's 4-value run
    /// (the slot's length is `panels * panel_words(K)`, see [`panel_offset`]), made once by
    /// the runtime.
    pub packed: bool,
    /// The packed panels hold this compact format (the weight is exact in it, see
    /// `HostData::into_compact`, and [`panel_bytes`]), widened in registers (the slot's
    /// length still counts f32 elements). Only for B (and a pair's B) without a folded row
    /// scale; a Q8 format only for a transposed B whose rows its blocks divide.
    #[serde(default)]
    pub compact: Option<CompactFormat>,
    /// Q8 panels multiplied in integers: A quantised per block of 32 to 8 bits once per call
    /// (see `select_integer_dot`).
    #[serde(default)]
    pub int8_dot: bool,
}

/// Most bytes of A's quantised copy in a GEMM taking integer dot products: it lives on the
/// stack of each thread's call (worker threads have 2 MiB; frames are probed), so more rows
/// are quantised and multiplied a chunk at a time (see [`int8_chunk_rows`]).
pub const INT8_DOT_MAX_STACK: usize = 512 << 10;

/// Rows of A quantised at a time in an integer GEMM of `rows` rows: all of them when they
/// fit [`INT8_DOT_MAX_STACK`], else as many whole row blocks as fit (at least one).
pub const fn int8_chunk_rows(rows: usize, k: usize, format: CompactFormat) -> usize {
    let fit = INT8_DOT_MAX_STACK / int8_row_stride(k, format) / GEMM_MR * GEMM_MR;
    let fit = if fit < GEMM_MR { GEMM_MR } else { fit };
    if rows < fit { rows } else { fit }
}

/// Bytes per row of A's quantised copy for a reduction of length `k` (whole Q8 blocks)
/// against weights in `format`, rounded up to 16: what that format's kernel reads (see
/// [`int8_scales_at`]).
pub const fn int8_row_stride(k: usize, format: CompactFormat) -> usize {
    let per_block = if format.has_offset() { 8 } else { 4 };
    (int8_scales_at(k, format) + k / Q8_BLOCK * per_block).next_multiple_of(16)
}

/// Where a quantised row's f32 block scales start: after the magnitudes and the sign masks
/// (`k` bytes each) against signed weights, after the signed values against unsigned ones
/// (offset formats, which also keep each block's sum after the scales).
pub const fn int8_scales_at(k: usize, format: CompactFormat) -> usize {
    if format.has_offset() { k } else { 2 * k }
}

/// The second contraction of a paired GEMM: same A, its own B, summed in its own loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct GemmPair {
    /// The B load.
    pub b: ExprId,
    /// The Reduce expression.
    pub reduce: ExprId,
    /// Its reduce loop.
    pub k_loop: usize,
    /// B is read as `[N, K]`.
    pub b_transposed: bool,
    /// The vector over K scaling B's rows, if any.
    pub b_scale: Option<ExprId>,
}

pub const GEMM_MAX_STAT_ROWS: usize = 16384;

/// Rows per GEMM register block.
pub const GEMM_MR: usize = 4;
/// Columns per GEMM register block (two 4-lane vectors).
pub const GEMM_NR: usize = 8;
/// Consecutive k values a packed panel stores per column: one 4-lane vector, so the
/// micro-kernel multiplies 4-k runs of an A row by 4-k runs of a column (no broadcasts).
pub const GEMM_KG: usize = 4;

/// Words of one packed panel of `GEMM_NR` columns for a reduction of length `k`: k padded
/// with zeros to whole groups of `GEMM_KG`.
pub fn panel_words(k: usize) -> usize {
    k.div_ceil(GEMM_KG) * GEMM_KG * GEMM_NR
}

/// Bytes of one block of a Q8 panel (see [`panel_bytes`]): its values
/// ([`block_values_bytes`]), then the 8 columns' f32 scales, and for the offset formats
/// their f32 offsets, for [`CompactFormat::Q8Split`] their second halves' scales.
pub const fn q8_block_bytes(format: CompactFormat) -> usize {
    let per_column = match format {
        CompactFormat::Q8Offset | CompactFormat::Q8Split | CompactFormat::Q4 => 8,
        _ => 4,
    };
    block_values_bytes(format) + per_column * GEMM_NR
}

/// Bytes of one panel block's values: 32 k values of 8 columns at a byte each, in the f32
/// panel's order; for [`CompactFormat::Q4`] at a nibble each, per group of `GEMM_KG` k 16
/// bytes whose low nibbles are columns 0..4's runs and high nibbles columns 4..8's (the two
/// halves the micro-kernels take as vectors).
pub const fn block_values_bytes(format: CompactFormat) -> usize {
    match format {
        CompactFormat::Q4 => Q8_BLOCK * GEMM_NR / 2,
        _ => Q8_BLOCK * GEMM_NR,
    }
}

/// Bytes of one packed panel of a reduction of length `k` in `format`: the f32 layout at 4
/// bytes per value, or at 2 in a 16-bit format; in a Q8 format (`k` a multiple of its block),
/// per block of 32 k a [`q8_block_bytes`] block.
pub fn panel_bytes(k: usize, format: Option<CompactFormat>) -> usize {
    match format {
        None => panel_words(k) * 4,
        Some(f) if f.is_block() => k / Q8_BLOCK * q8_block_bytes(f),
        Some(_) => panel_words(k) * 2,
    }
}

/// Position of (`kk`, `col`) within a packed panel: groups of `GEMM_KG` k values, each
/// group column after column.
pub fn panel_offset(kk: usize, col: usize) -> usize {
    (kk / GEMM_KG) * GEMM_KG * GEMM_NR + col * GEMM_KG + kk % GEMM_KG
}

impl Kernel {
    /// Output columns per packed panel: 8, or 4 of each weight in a paired GEMM.
    pub fn panel_cols(g: &GemmSpec) -> usize {
        if g.pair.is_some() {
            GEMM_NR / 2
        } else {
            GEMM_NR
        }
    }

    /// The argument slot of an expression that is a load.
    pub fn load_arg(&self, e: ExprId) -> Option<usize> {
        match &self.exprs[e] {
            Expr::Load { arg, .. } => Some(*arg),
            _ => None,
        }
    }

    /// The argument slot of the GEMM's B operand.
    pub fn b_arg(&self, g: &GemmSpec) -> Option<usize> {
        match &self.exprs[g.b] {
            Expr::Load { arg, .. } => Some(*arg),
            _ => None,
        }
    }

    /// The GEMM spec of a GEMM kernel.
    pub fn gemm(&self) -> Option<GemmSpec> {
        match &self.body {
            KernelBody::Gemm(g) => Some(*g),
            _ => None,
        }
    }

    /// How a loop nest's rows run (the default, all off, for a template kernel).
    pub fn row_plan(&self) -> &RowPlan {
        static PLAIN: RowPlan = RowPlan {
            row: false,
            column: None,
            rescale: None,
            nan_blind_max: None,
            carry: None,
        };
        match &self.body {
            KernelBody::Loops(plan) => plan,
            _ => &PLAIN,
        }
    }

    /// The spec of a flash-attention kernel.
    pub fn attention(&self) -> Option<&AttentionSpec> {
        match &self.body {
            KernelBody::Attention(a) => Some(a),
            _ => None,
        }
    }

    /// The parts of a sibling group (empty for every other kernel).
    pub fn parts(&self) -> &[Kernel] {
        match &self.body {
            KernelBody::Siblings(parts) => parts,
            _ => &[],
        }
    }

    /// The argument slot of a scaled B's scale vector.
    pub fn b_scale_arg(&self, g: &GemmSpec) -> Option<usize> {
        match &self.exprs[g.b_scale?] {
            Expr::Load { arg, .. } => Some(*arg),
            _ => None,
        }
    }

    /// Per expression: whether its value depends on loop variable `v`.
    pub fn depends_on(&self, v: usize) -> Vec<bool> {
        let mut dep = vec![false; self.exprs.len()];
        for (i, e) in self.exprs.iter().enumerate() {
            dep[i] = e.indexes_with(v) || e.operands().iter().any(|&o| dep[o]);
        }
        dep
    }

    /// Calls `f` on every index of the kernel: loads, gathers, index values, bounds, stores.
    pub fn for_each_affine(&mut self, mut f: impl FnMut(&mut Affine)) {
        let conds = |cs: &mut Vec<Cond>, f: &mut dyn FnMut(&mut Affine)| {
            for c in cs.iter_mut() {
                f(&mut c.expr);
            }
        };
        for e in &mut self.exprs {
            match e {
                Expr::Load {
                    index, conds: c, ..
                } => {
                    f(index);
                    conds(c, &mut f);
                }
                Expr::Index(a) | Expr::Gather { index: a, .. } => f(a),
                Expr::InBounds(c) => conds(c, &mut f),
                _ => {}
            }
        }
        for s in &mut self.stores {
            f(&mut s.index);
        }
    }

    /// The output (non-reduce) loops, parallel and sequential.
    pub fn output_loops(&self) -> &[Loop] {
        let n = self
            .loops
            .iter()
            .take_while(|l| l.kind != LoopKind::Reduce)
            .count();
        &self.loops[..n]
    }

    /// The reduce loop, if any.
    pub fn reduce_loop(&self) -> Option<(usize, &Loop)> {
        self.loops
            .iter()
            .enumerate()
            .find(|(_, l)| l.kind == LoopKind::Reduce)
    }

    /// Renumbers argument slots (`map[old] = new`) for a kernel that becomes a part of a
    /// group with these arguments and symbols.
    pub fn rebind(&mut self, map: &[usize], args: &[Arg], symbols: &[Symbol]) {
        for e in &mut self.exprs {
            if let Expr::Load { arg, .. } | Expr::Gather { arg, .. } = e {
                *arg = map[*arg];
            }
        }
        for st in &mut self.stores {
            st.arg = map[st.arg];
        }
        self.args = args.to_vec();
        self.symbols = symbols.to_vec();
    }

    /// Argument slots the runtime swaps for packed panels: each packed GEMM body's B, and
    /// every packed gather's table.
    pub fn packed_slots(&self) -> std::collections::BTreeSet<usize> {
        let gemms = self
            .bodies()
            .iter()
            .filter_map(|p| p.gemm().filter(|g| g.packed).and_then(|g| p.b_arg(&g)));
        gemms
            .chain(self.packed_gathers().into_iter().map(|g| g.0))
            .collect()
    }

    /// Every table read from packed panels by a gather, once: (slot, columns, k per column,
    /// format).
    pub fn packed_gathers(&self) -> Vec<(usize, usize, usize, CompactFormat)> {
        let mut tables = Vec::new();
        for e in self.bodies().iter().flat_map(|p| &p.exprs) {
            if let Expr::Gather {
                arg,
                rows,
                row_stride,
                packed: Some(format),
                ..
            } = e
            {
                let table = (*arg, *rows, *row_stride as usize, *format);
                if !tables.contains(&table) {
                    tables.push(table);
                }
            }
        }
        tables
    }

    /// Argument slots some body reads unpacked: every loaded or gathered slot but a packed
    /// GEMM body's weight loads (its B, and a paired GEMM's second B, come from the panels)
    /// and packed gathers.
    pub fn raw_read_slots(&self) -> std::collections::BTreeSet<usize> {
        let mut raw = std::collections::BTreeSet::new();
        for p in self.bodies() {
            let from_panels: Vec<ExprId> = match p.gemm().filter(|g| g.packed) {
                Some(g) => std::iter::once(g.b).chain(g.pair.map(|q| q.b)).collect(),
                None => Vec::new(),
            };
            for (i, e) in p.exprs.iter().enumerate() {
                let unpacked = matches!(e, Expr::Load { .. } | Expr::Gather { packed: None, .. });
                if let Expr::Load { arg, .. } | Expr::Gather { arg, .. } = e
                    && unpacked
                    && !from_panels.contains(&i)
                {
                    raw.insert(*arg);
                }
            }
        }
        raw
    }

    /// The kernels whose bodies this one runs: its parts for a group, else itself.
    pub fn bodies(&self) -> &[Kernel] {
        match &self.body {
            KernelBody::Siblings(parts) => parts,
            _ => std::slice::from_ref(self),
        }
    }

    /// Work units of each part of a group, in range order (every part is a static GEMM).
    pub fn part_units(&self) -> Vec<usize> {
        self.parts()
            .iter()
            .map(|p| p.parallel_dims().iter().map(Dim::max_value).product())
            .collect()
    }

    /// The range the ABI's `[start, end)` spans: the product of all output loops but the
    /// innermost, or the innermost itself for a one-loop kernel (1 for a scalar kernel); a
    /// group's parts' units back to back.
    pub fn parallel_dims(&self) -> Vec<Dim> {
        if !self.parts().is_empty() {
            return vec![Dim::Const(self.part_units().iter().sum())];
        }
        if let Some(g) = self.gemm() {
            // Units of (column panel, row block), panel-major: each thread streams its own
            // panels of B once.
            return vec![Dim::Const(
                g.rows.div_ceil(GEMM_MR) * g.cols.div_ceil(Kernel::panel_cols(&g)),
            )];
        }
        let outs = self.output_loops();
        match outs.len() {
            0 => vec![Dim::Const(1)],
            1 => vec![outs[0].extent.clone()],
            n => outs[..n - 1].iter().map(|l| l.extent.clone()).collect(),
        }
    }

    /// True when the parallel range covers the innermost loop's elements (one-loop kernels).
    pub fn parallel_over_inner(&self) -> bool {
        self.gemm().is_none() && self.output_loops().len() == 1
    }

    /// Position of a symbol in the ABI's symbol array.
    pub fn symbol_slot(&self, name: &str) -> Option<usize> {
        self.symbols.iter().position(|s| &*s.name == name)
    }

    /// The canonical text without the name and op list: the cache key's input.
    pub fn key_text(&self) -> String {
        let mut s = String::new();
        self.write_body(&mut s, false);
        s
    }

    /// Arguments, symbols and the nest (or each part's). `names` adds each part's name and
    /// ops to its `part` line, which only the displayed form carries: in the cache key they
    /// would make every layer's identical group a different kernel.
    fn write_body(&self, s: &mut String, names: bool) {
        for (i, a) in self.args.iter().enumerate() {
            let acc = match a.access {
                Access::Read => "in",
                Access::Write => "out",
            };
            let _ = writeln!(s, "  arg{i}: {} {}[{}]", acc, a.dtype, a.len);
        }
        for (i, sym) in self.symbols.iter().enumerate() {
            let _ = writeln!(s, "  sym{i}: {sym}");
        }
        for (p, part) in self.parts().iter().enumerate() {
            if names {
                let _ = writeln!(s, "  part {p} {} ({})", part.name, part.ops.join(" "));
            } else {
                let _ = writeln!(s, "  part {p}");
            }
            let mut body = String::new();
            part.write_nest(&mut body);
            for line in body.lines() {
                let _ = writeln!(s, "  {line}");
            }
        }
        if self.parts().is_empty() {
            self.write_nest(s);
        }
    }

    /// The template line (none for a plain loop nest).
    fn write_template(&self, s: &mut String) {
        match &self.body {
            KernelBody::Siblings(_) => {}
            KernelBody::Loops(plan) => {
                let mut line = String::new();
                if plan.row {
                    line.push_str(" row");
                }
                if let Some(c) = plan.column {
                    let _ = write!(line, " column i{c}");
                }
                if let Some(r) = &plan.rescale {
                    let _ = write!(
                        line,
                        " rescale(sum e{} factor e{} scale e{} store arg{}[{}])",
                        r.reduce, r.factor, r.scale, r.arg, r.index_in_loop
                    );
                }
                if let Some(m) = plan.nan_blind_max {
                    let _ = write!(line, " nan_blind_max e{m}");
                }
                if let Some((first, with)) = plan.carry {
                    let _ = write!(line, " carry e{first} with e{with}");
                }
                if !line.is_empty() {
                    let _ = writeln!(s, "  rows:{line}");
                }
            }
            KernelBody::Gemm(g) => {
                let _ = write!(
                    s,
                    "  gemm: a e{} b e{} product e{} reduce e{} n i{} k i{} rows {} cols {}",
                    g.a, g.b, g.product, g.reduce, g.n_loop, g.k_loop, g.rows, g.cols
                );
                if g.b_transposed {
                    s.push_str(" transposed");
                }
                if let Some(e) = g.b_scale {
                    let _ = write!(s, " scale e{e}");
                }
                if let Some(e) = g.row_reduce {
                    let _ = write!(s, " row_reduce e{e}");
                }
                if let Some(p) = g.pair {
                    let _ = write!(s, " pair(b e{} reduce e{} k i{}", p.b, p.reduce, p.k_loop);
                    if p.b_transposed {
                        s.push_str(" transposed");
                    }
                    if let Some(e) = p.b_scale {
                        let _ = write!(s, " scale e{e}");
                    }
                    s.push(')');
                }
                if g.packed {
                    s.push_str(" packed");
                }
                if let Some(h) = g.compact {
                    let _ = write!(s, " {}", h.name());
                }
                if g.int8_dot {
                    s.push_str(" int8dot");
                }
                s.push('\n');
            }
            KernelBody::Attention(a) => {
                let f = value_text;
                let mask = a
                    .mask
                    .map_or("none".to_string(), |m| format!("e{m} ? {}", f(a.fill_bits)));
                let _ = writeln!(
                    s,
                    "  attention: q e{} k e{} v e{} mask {mask} scale {} exp2 scale {} keys i{} dot i{}",
                    a.q,
                    a.k,
                    a.v,
                    f(a.scale_bits),
                    f(a.exp_scale_bits),
                    a.key_loop,
                    a.dot_loop
                );
            }
        }
    }

    /// The loop nest, body and stores (a part of a group shares the group's slots).
    fn write_nest(&self, s: &mut String) {
        self.write_template(s);
        for (i, l) in self.loops.iter().enumerate() {
            let kind = match l.kind {
                LoopKind::Parallel => "parallel",
                LoopKind::Sequential => "sequential",
                LoopKind::Reduce => "reduce",
            };
            let _ = writeln!(s, "  loop i{i} in 0..{} {kind}", l.extent);
        }
        for (i, e) in self.exprs.iter().enumerate() {
            let _ = writeln!(s, "  e{i} = {}", ExprText(e));
        }
        for st in &self.stores {
            let _ = writeln!(s, "  store arg{}[{}] = e{}", st.arg, st.index, st.value);
        }
    }
}

/// A constant's printed value: [`format_value`], except that a NaN other than the canonical
/// `f64::NAN` shows its bits (`NaN:0xfff8000000000000`): `NaN` alone reads back as
/// `f64::NAN`, and the kernel (whose constants are bits) would not be the one printed.
pub fn value_text(bits: u64) -> String {
    let v = f64::from_bits(bits);
    if v.is_nan() && bits != f64::NAN.to_bits() {
        format!("NaN:{bits:#018x}")
    } else {
        format_value(v)
    }
}

struct ExprText<'a>(&'a Expr);

impl fmt::Display for ExprText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let conds = |c: &[Cond]| -> String {
            if c.is_empty() {
                String::new()
            } else {
                let v: Vec<String> = c.iter().map(|c| c.to_string()).collect();
                format!(" if {}", v.join(" && "))
            }
        };
        match self.0 {
            Expr::Load {
                arg,
                index,
                conds: c,
                dtype,
            } => write!(f, "load.{dtype} arg{arg}[{index}]{}", conds(c)),
            Expr::Gather {
                arg,
                row,
                rows,
                row_stride,
                index,
                dtype,
                packed,
            } => {
                write!(
                    f,
                    "gather.{dtype} arg{arg}[row(e{row}, {rows}) * {row_stride} + {index}]"
                )?;
                match packed {
                    Some(format) => write!(f, " packed {}", format.name()),
                    None => Ok(()),
                }
            }
            Expr::Const { bits, dtype } => write!(f, "const.{dtype} {}", value_text(*bits)),
            Expr::Index(a) => write!(f, "index {a}"),
            Expr::InBounds(c) => write!(f, "inbounds{}", conds(c)),
            Expr::Unary { op, x, dtype } => {
                let name = cranegrad_graph::Op::Unary(*op).name();
                write!(f, "{name}.{dtype} e{x}")
            }
            Expr::Binary { op, a, b, dtype } => {
                let name = cranegrad_graph::Op::Binary(*op).name();
                write!(f, "{name}.{dtype} e{a}, e{b}")
            }
            Expr::Where { c, a, b, dtype } => write!(f, "where.{dtype} e{c}, e{a}, e{b}"),
            // The product is marked `*`, in the add's operand order.
            Expr::MulAdd {
                product,
                addend,
                product_first: true,
                dtype,
            } => write!(f, "muladd.{dtype} *e{product}, e{addend}"),
            Expr::MulAdd {
                product,
                addend,
                product_first: false,
                dtype,
            } => write!(f, "muladd.{dtype} e{addend}, *e{product}"),
            Expr::Exp2NonPositive { x, scaled } => {
                write!(f, "exp2.nonpositive.f32 e{x}")?;
                match scaled {
                    Some((y, k)) => {
                        write!(f, " = e{y} * {}", format_value(f32::from_bits(*k).into()))
                    }
                    None => Ok(()),
                }
            }
            Expr::Reduce { op, x, dtype, var } => {
                let name = match op {
                    ReduceOp::Sum => "sum",
                    ReduceOp::Max => "max",
                };
                write!(f, "reduce.{name}.{dtype} e{x} over i{var}")
            }
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        let _ = writeln!(s, "kernel {} ({})", self.name, self.ops.join(" "));
        self.write_body(&mut s, true);
        f.write_str(&s)
    }
}
