//! Loads, gathers and stores of the generic kernel body, scalar or 4 lanes wide. Every
//! address is an affine index the bounds proof (`crate::bounds`) covers; a padded lane reads
//! index 0 and is replaced by 0.

use cranelift_codegen::ir::{
    Endianness, InstBuilder, MemFlagsData, Type, Value, condcodes::IntCC, types,
};
use cranelift_frontend::FunctionBuilder;

use cranegrad_graph::{CompactFormat, DType};
use cranegrad_lower::affine::{Affine, Cond};

use crate::gather_packed::packed_element;

use crate::emit::{Emitter, LANES, RowCursor, Val, scalar_ty, vector_ty, vflags};

impl Emitter<'_> {
    /// Computes, before loop `var`, the address of element `var = 0` of the unit-stride access
    /// `arg[index]` at loop variables `vars`: inside the loop each vector's address is then
    /// that pointer plus the loop index, one addressing mode instead of the row's index
    /// computed again per vector (the row kernels are compiled unoptimised).
    pub(crate) fn prepare_row_ptr(
        &self,
        b: &mut FunctionBuilder,
        arg: usize,
        index: &Affine,
        var: usize,
        vars: &[Option<Value>],
    ) {
        if index.coeff(var) != 1 {
            return;
        }
        let key = row_key(arg, index, var, vars);
        if self.row_ptrs.borrow().contains_key(&key) {
            return;
        }
        let mut rest = index.clone();
        rest.terms.retain(|&(v, _)| v != var);
        let base = self.affine(b, &rest, vars);
        let ptr = byte_addr(b, self.ptrs[arg], base);
        self.row_ptrs.borrow_mut().insert(key, ptr);
    }

    /// The address of `arg[index]` in the loop the [`RowCursor`] is on, as a row pointer (see
    /// [`Emitter::prepare_row_ptr`]) plus the iteration's first index, and the byte offset of
    /// the current vector, when the access has one; a vector access only when its lanes run
    /// along the cursor's loop.
    pub(crate) fn unit_stride_addr(
        &self,
        b: &mut FunctionBuilder,
        (arg, index): (usize, &Affine),
        vars: &[Option<Value>],
        (lane, vector): (Option<usize>, bool),
    ) -> Option<(Value, i32)> {
        let RowCursor { var, first, elems } = self.cursor?;
        if index.coeff(var) != 1 || (vector && lane != Some(var)) {
            return None;
        }
        let ptr = *self
            .row_ptrs
            .borrow()
            .get(&row_key(arg, index, var, vars))?;
        Some((byte_addr(b, ptr, first), i32::try_from(elems * 4).ok()?))
    }

    /// Stores `v` at byte `off` past `addr` (little-endian lanes for a vector).
    pub(crate) fn store_at(&self, b: &mut FunctionBuilder, (addr, off): (Value, i32), v: Val) {
        let fl = if v.vector {
            vflags()
        } else {
            MemFlagsData::new()
        };
        b.ins().store(fl.with_notrap(), v.v, addr, off);
    }

    /// Stores `v` at element `base` of argument `arg`: one vector store when the lanes are
    /// contiguous (`coeff` 1), else one scalar store per lane at stride `coeff`.
    pub(crate) fn store(
        &self,
        b: &mut FunctionBuilder,
        arg: usize,
        base: Value,
        coeff: i64,
        v: Val,
    ) {
        let ptr = self.ptrs[arg];
        if !v.vector || coeff == 1 {
            let addr = byte_addr(b, ptr, base);
            self.store_at(b, (addr, 0), v);
        } else {
            let fl = MemFlagsData::new().with_notrap();
            for l in 0..LANES {
                let x = b.ins().extractlane(v.v, l as u8);
                let idx = b.ins().iadd_imm_s(base, l * coeff);
                let addr = byte_addr(b, ptr, idx);
                b.ins().store(fl, x, addr, 0);
            }
        }
    }

    /// True when every padding condition holds for lane `l` (the lane loop stepped `l` times).
    pub(crate) fn conds_ok(
        &self,
        b: &mut FunctionBuilder,
        conds: &[Cond],
        vars: &[Option<Value>],
        lane: Option<usize>,
        l: i64,
    ) -> Value {
        let mut ok = b.ins().iconst(types::I8, 1);
        for c in conds {
            let base = self.affine(b, &c.expr, vars);
            let step = lane.map_or(0, |v| c.expr.coeff(v));
            let x = b.ins().iadd_imm_s(base, l * step);
            let len = self.dim(b, &c.len);
            let inb = b.ins().icmp(IntCC::UnsignedLessThan, x, len);
            ok = b.ins().band(ok, inb);
        }
        ok
    }

    /// A row lookup: the row id is clamped into the table, then the row is read like a load.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gather(
        &self,
        b: &mut FunctionBuilder,
        arg: usize,
        row: Val,
        rows: usize,
        row_stride: i64,
        index: &Affine,
        dtype: DType,
        packed: Option<CompactFormat>,
        vars: &[Option<Value>],
        lane: Option<usize>,
        vector: bool,
    ) -> Val {
        let ptr = self.ptrs[arg];
        let ro = MemFlagsData::new().with_notrap().with_readonly();
        let base = self.affine(b, index, vars);
        let c = lane.map_or(0, |l| index.coeff(l));
        let clamp = |b: &mut FunctionBuilder, r32: Value| -> Value {
            let r = b.ins().sextend(types::I64, r32);
            let zero = b.ins().iconst(types::I64, 0);
            let top = b.ins().iconst(types::I64, rows.max(1) as i64 - 1);
            let r = b.ins().smax(r, zero);
            b.ins().smin(r, top)
        };
        let row_offset = |b: &mut FunctionBuilder, r32: Value| -> Value {
            let r = clamp(b, r32);
            b.ins().imul_imm_s(r, row_stride)
        };
        let row_at = |b: &mut FunctionBuilder, l: u8| {
            if row.vector {
                b.ins().extractlane(row.v, l)
            } else {
                row.v
            }
        };
        if let Some(format) = packed {
            let lanes: Vec<Value> = (0..if vector { LANES } else { 1 })
                .map(|l| {
                    let r = row_at(b, l as u8);
                    let n = clamp(b, r);
                    let k = b.ins().iadd_imm_s(base, l * c);
                    packed_element(b, ptr, (n, k), row_stride, format)
                })
                .collect();
            return from_lanes(b, vector_ty(dtype), &lanes);
        }
        let sty = scalar_ty(dtype);
        if !row.vector {
            let off = row_offset(b, row.v);
            let at = b.ins().iadd(base, off);
            if vector && c == 1 {
                let addr = byte_addr(b, ptr, at);
                let fl = ro.with_endianness(Endianness::Little);
                return Val {
                    v: b.ins().load(vector_ty(dtype), fl, addr, 0),
                    vector: true,
                };
            }
            if !vector || c == 0 {
                let addr = byte_addr(b, ptr, at);
                return Val {
                    v: b.ins().load(sty, ro, addr, 0),
                    vector: false,
                };
            }
        }
        let lanes: Vec<Value> = (0..LANES)
            .map(|l| {
                let r32 = row_at(b, l as u8);
                let off = row_offset(b, r32);
                let idx = b.ins().iadd_imm_s(base, l * c);
                let at = b.ins().iadd(idx, off);
                let addr = byte_addr(b, ptr, at);
                b.ins().load(sty, ro, addr, 0)
            })
            .collect();
        Val {
            v: build_vector(b, vector_ty(dtype), &lanes),
            vector: true,
        }
    }

    /// A load of `arg` at `index`: one vector load at stride 1 along the lanes, a scalar one
    /// (splat later if needed) at stride 0, else a gather of the lanes; padded lanes read
    /// index 0 and become 0.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn load(
        &self,
        b: &mut FunctionBuilder,
        arg: usize,
        index: &Affine,
        conds: &[Cond],
        dtype: DType,
        vars: &[Option<Value>],
        lane: Option<usize>,
        vector: bool,
    ) -> Val {
        let ptr = self.ptrs[arg];
        let ro = MemFlagsData::new()
            .with_notrap()
            .with_readonly()
            .with_can_move();
        let sty = scalar_ty(dtype);
        if conds.is_empty()
            && let Some((addr, off)) = self.unit_stride_addr(b, (arg, index), vars, (lane, vector))
        {
            let (ty, fl) = if vector {
                (vector_ty(dtype), ro.with_endianness(Endianness::Little))
            } else {
                (sty, ro)
            };
            return Val {
                v: b.ins().load(ty, fl, addr, off),
                vector,
            };
        }
        let base = self.affine(b, index, vars);
        let c = lane.map_or(0, |l| index.coeff(l));
        let varies = c != 0 || conds_vary(conds, lane);
        if conds.is_empty() {
            if !vector || c == 0 {
                let addr = byte_addr(b, ptr, base);
                return Val {
                    v: b.ins().load(sty, ro, addr, 0),
                    vector: false,
                };
            }
            if c == 1 {
                let addr = byte_addr(b, ptr, base);
                let fl = ro.with_endianness(Endianness::Little);
                return Val {
                    v: b.ins().load(vector_ty(dtype), fl, addr, 0),
                    vector: true,
                };
            }
        }
        let n = if vector && varies { LANES } else { 1 };
        let lanes: Vec<Value> = (0..n)
            .map(|l| {
                let idx = b.ins().iadd_imm_s(base, l * c);
                if conds.is_empty() {
                    let addr = byte_addr(b, ptr, idx);
                    return b.ins().load(sty, ro, addr, 0);
                }
                let ok = self.conds_ok(b, conds, vars, lane, l);
                let zero = b.ins().iconst(types::I64, 0);
                let safe = b.ins().select(ok, idx, zero);
                let addr = byte_addr(b, ptr, safe);
                let v = b.ins().load(
                    sty,
                    MemFlagsData::new().with_notrap().with_readonly(),
                    addr,
                    0,
                );
                let z = match dtype {
                    DType::F32 => b.ins().f32const(0.0),
                    _ => b.ins().iconst(types::I32, 0),
                };
                b.ins().select(ok, v, z)
            })
            .collect();
        from_lanes(b, vector_ty(dtype), &lanes)
    }
}

/// True when a padding condition differs between the lanes.
pub(crate) fn conds_vary(conds: &[Cond], lane: Option<usize>) -> bool {
    lane.is_some_and(|l| conds.iter().any(|c| c.expr.coeff(l) != 0))
}

/// The address of f32/i32 element `index` of the buffer at `ptr`.
pub(crate) fn byte_addr(b: &mut FunctionBuilder, ptr: Value, index: Value) -> Value {
    let off = b.ins().ishl_imm_s(index, 2);
    b.ins().iadd(ptr, off)
}

/// A vector from its lanes.
pub(crate) fn build_vector(b: &mut FunctionBuilder, ty: Type, lanes: &[Value]) -> Value {
    let mut v = b.ins().splat(ty, lanes[0]);
    for (l, &x) in lanes.iter().enumerate().skip(1) {
        v = b.ins().insertlane(v, x, l as u8);
    }
    v
}

/// One lane as a scalar value, more as a vector of type `ty`.
pub(crate) fn from_lanes(b: &mut FunctionBuilder, ty: Type, lanes: &[Value]) -> Val {
    match lanes {
        [one] => Val {
            v: *one,
            vector: false,
        },
        _ => Val {
            v: build_vector(b, ty, lanes),
            vector: true,
        },
    }
}

/// A row pointer's key: `arg`, the loop `var` it serves, `index`, and the values of the
/// index's other loop variables.
pub(crate) type RowKey = (usize, usize, Affine, Vec<Option<Value>>);

fn row_key(arg: usize, index: &Affine, var: usize, vars: &[Option<Value>]) -> RowKey {
    let others = index
        .terms
        .iter()
        .filter(|&&(v, _)| v != var)
        .map(|&(v, _)| vars[v])
        .collect();
    (arg, var, index.clone(), others)
}
