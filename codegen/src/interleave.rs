//! Interleaves the vector groups of an unrolled loop body instruction by instruction, once
//! the function is built.
//!
//! Row kernels are compiled without Cranelift's optimiser, which emits instructions in the
//! order written, and the emitter writes an unrolled body as one vector's whole chain
//! (softmax: an `exp2` of ~20 dependent operations) after the other's. Zen 4 then holds
//! too few independent operations in its scheduler to keep both FMA pipes busy. Taking one
//! instruction from each group in turn puts the chains side by side. Groups may share values
//! (a constant, an index) and memory; both orders are kept.

use std::collections::HashMap;

use cranelift_codegen::ir::{Block, Function, Inst, InstructionData, Opcode, Value, ValueDef};

/// A block whose instructions after `cuts[0]` up to and including `cuts[n]` form `n`
/// groups, one per vector of an unrolled body (`None` = the block's start); the
/// instructions before and after stay where they are.
pub(crate) struct Jam {
    /// The unrolled loop body.
    pub(crate) block: Block,
    /// The last instruction before each group, then the last of the final group.
    pub(crate) cuts: Vec<Option<Inst>>,
}

/// What a memory instruction touches, for ordering: the kernel argument its address is
/// computed from (a written slot shares its buffer with no other slot:
/// `Schedule::check_distinct_args`), or anything.
#[derive(Clone, Copy, PartialEq)]
enum Touches {
    Nothing,
    Arg(usize),
    Anything,
}

/// Traces `addr` through integer adds back to one of the kernel's buffer pointers: an add
/// of a pointer and an offset that reaches no pointer.
fn root_arg(func: &Function, ptrs: &HashMap<Value, usize>, addr: Value, depth: u32) -> Touches {
    if let Some(&a) = ptrs.get(&addr) {
        return Touches::Arg(a);
    }
    let ValueDef::Result(i, _) = func.dfg.value_def(addr) else {
        return Touches::Anything;
    };
    let InstructionData::Binary {
        opcode: Opcode::Iadd,
        args: [x, y],
    } = func.dfg.insts[i]
    else {
        return Touches::Anything;
    };
    if depth == 0 {
        return Touches::Anything;
    }
    match (
        root_arg(func, ptrs, x, depth - 1),
        root_arg(func, ptrs, y, depth - 1),
    ) {
        (t @ Touches::Arg(_), _) if !reaches_pointer(func, ptrs, y, depth) => t,
        (_, t @ Touches::Arg(_)) if !reaches_pointer(func, ptrs, x, depth) => t,
        _ => Touches::Anything,
    }
}

/// Whether `v` may be computed from a buffer pointer (or from something not traced, past
/// `depth`): only constants and block parameters (loop indices) are known not to be.
fn reaches_pointer(func: &Function, ptrs: &HashMap<Value, usize>, v: Value, depth: u32) -> bool {
    if ptrs.contains_key(&v) {
        return true;
    }
    match func.dfg.value_def(v) {
        ValueDef::Param(..) => false,
        ValueDef::Result(i, _) => match func.dfg.insts[i] {
            InstructionData::UnaryImm { .. } => false,
            _ if depth == 0 => true,
            _ => {
                let args = func.dfg.inst_args(i);
                args.is_empty()
                    || args
                        .iter()
                        .any(|&a| reaches_pointer(func, ptrs, a, depth - 1))
            }
        },
        _ => true,
    }
}

/// The memory `inst` reads or writes, and whether it writes.
fn access(func: &Function, ptrs: &HashMap<Value, usize>, inst: Inst) -> (Touches, bool) {
    let data = &func.dfg.insts[inst];
    match *data {
        InstructionData::Load { arg, .. } => (root_arg(func, ptrs, arg, 8), false),
        InstructionData::Store { args, .. } => (root_arg(func, ptrs, args[1], 8), true),
        _ if data.opcode().can_load() || data.opcode().can_store() => (Touches::Anything, true),
        // A trap (a division by zero, say) stays in order with every access.
        _ if data.opcode().is_call()
            || data.opcode().other_side_effects()
            || data.opcode().can_trap() =>
        {
            (Touches::Anything, true)
        }
        _ => (Touches::Nothing, false),
    }
}

/// Must `b` (later in the block) stay after `a`? Two accesses conflict when either writes
/// and they may touch the same buffer.
fn conflicts(a: (Touches, bool), b: (Touches, bool)) -> bool {
    let overlap = match (a.0, b.0) {
        (Touches::Nothing, _) | (_, Touches::Nothing) => false,
        (Touches::Arg(x), Touches::Arg(y)) => x == y,
        _ => true,
    };
    overlap && (a.1 || b.1)
}

/// Reorders `jam`'s groups round-robin, one instruction from each group in turn, keeping
/// every operand before its use and every conflicting pair of memory accesses in order.
/// `ptrs` maps each buffer pointer value to its argument slot.
pub(crate) fn interleave(func: &mut Function, ptrs: &HashMap<Value, usize>, jam: &Jam) {
    let all: Vec<Inst> = func.layout.block_insts(jam.block).collect();
    let after = |c: Option<Inst>| match c {
        None => Some(0),
        Some(i) => all.iter().position(|&x| x == i).map(|p| p + 1),
    };
    let Some(cuts) = jam
        .cuts
        .iter()
        .map(|&c| after(c))
        .collect::<Option<Vec<usize>>>()
    else {
        return;
    };
    if cuts.len() < 3 || cuts.windows(2).any(|w| w[0] > w[1]) {
        return;
    }
    let (lo, hi) = (cuts[0], cuts[cuts.len() - 1]);
    let span = &all[lo..hi];
    let index: HashMap<Inst, usize> = span.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let accesses: Vec<(Touches, bool)> = span.iter().map(|&i| access(func, ptrs, i)).collect();
    // Per instruction (by position in `span`): the earlier ones it must follow.
    let preds: Vec<Vec<usize>> = span
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let mut p: Vec<usize> = func
                .dfg
                .inst_values(i)
                .filter_map(|v| match func.dfg.value_def(v) {
                    ValueDef::Result(d, _) => index.get(&d).copied(),
                    _ => None,
                })
                .collect();
            p.extend((0..k).filter(|&j| conflicts(accesses[j], accesses[k])));
            p
        })
        .collect();
    let groups: Vec<std::ops::Range<usize>> =
        cuts.windows(2).map(|w| w[0] - lo..w[1] - lo).collect();
    let mut done = vec![false; span.len()];
    let mut heads: Vec<usize> = groups.iter().map(|g| g.start).collect();
    let mut order = Vec::with_capacity(span.len());
    let take = |k: usize, done: &mut Vec<bool>, order: &mut Vec<usize>| {
        done[k] = true;
        order.push(k);
    };
    while order.len() < span.len() {
        let mut progressed = false;
        for (g, range) in groups.iter().enumerate() {
            while heads[g] < range.end && done[heads[g]] {
                heads[g] += 1;
            }
            let k = heads[g];
            if k < range.end && preds[k].iter().all(|&p| done[p]) {
                take(k, &mut done, &mut order);
                progressed = true;
            }
        }
        if !progressed {
            // The earliest instruction not placed has all its predecessors placed.
            let k = (0..span.len()).find(|&k| !done[k]).expect("one is left");
            take(k, &mut done, &mut order);
        }
    }
    let anchor = all.get(hi).copied();
    for &k in &order {
        func.layout.remove_inst(span[k]);
    }
    for &k in &order {
        match anchor {
            Some(a) => func.layout.insert_inst(span[k], a),
            None => func.layout.append_inst(span[k], jam.block),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cranelift_codegen::ir::{
        AbiParam, InstBuilder, MemFlagsData, Signature, UserFuncName, types,
    };
    use cranelift_codegen::isa::CallConv;
    use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

    /// A one-block function of two buffer pointers `a` (slot 0) and `out` (slot 1) whose
    /// groups `body` emits (pushing a cut after each), interleaved; with its block and what
    /// `body` returned (the instructions a test looks for).
    fn interleaved<R>(
        body: impl FnOnce(&mut FunctionBuilder, Value, Value, &mut Vec<Option<Inst>>) -> R,
    ) -> (Function, Block, R) {
        let mut sig = Signature::new(CallConv::SystemV);
        sig.params
            .extend([AbiParam::new(types::I64), AbiParam::new(types::I64)]);
        let mut func = Function::with_name_signature(UserFuncName::default(), sig);
        let mut fctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut func, &mut fctx);
        let block = b.create_block();
        b.append_block_params_for_function_params(block);
        b.switch_to_block(block);
        b.seal_block(block);
        let (a, out) = (b.block_params(block)[0], b.block_params(block)[1]);
        let mut cuts = vec![b.func.layout.last_inst(block)];
        let found = body(&mut b, a, out, &mut cuts);
        b.ins().return_(&[]);
        let isa = crate::isa::host_isa(crate::isa::OptLevel::None).expect("host ISA");
        b.finalize(isa.frontend_config());
        let ptrs = HashMap::from([(a, 0), (out, 1)]);
        interleave(&mut func, &ptrs, &Jam { block, cuts });
        (func, block, found)
    }

    /// Where `i` is in `block`.
    fn position(func: &Function, block: Block, i: Inst) -> usize {
        func.layout.block_insts(block).position(|x| x == i).unwrap()
    }

    /// Two groups `x = load a[k]; y = load out[k]; store out[k] = x + y` at k = 0 and 4:
    /// the second group's load of `a` may rise above the first's store, its load of `out`
    /// may not.
    #[test]
    fn groups_interleave_but_a_load_stays_after_a_store_to_its_buffer() {
        let (func, block, marks) = interleaved(|b, a, out, cuts| {
            let fl = MemFlagsData::trusted();
            let mut marks = Vec::new();
            for k in [0i64, 4] {
                let off = b.ins().iconst(types::I64, 4 * k);
                let pa = b.ins().iadd(a, off);
                let po = b.ins().iadd(out, off);
                let x = b.ins().load(types::F32, fl, pa, 0);
                let y = b.ins().load(types::F32, fl, po, 0);
                let s = b.ins().fadd(x, y);
                let st = b.ins().store(fl, s, po, 0);
                let def = |v: Value| b.func.dfg.value_def(v).unwrap_inst();
                marks.push((def(x), def(y), st));
                cuts.push(b.func.layout.last_inst(b.current_block().unwrap()));
            }
            marks
        });
        let at = |i: Inst| position(&func, block, i);
        let ((x0, y0, st0), (x1, y1, _)) = (marks[0], marks[1]);
        assert!(
            at(x1) < at(st0),
            "the load of another buffer moves up:\n{func}"
        );
        assert!(
            at(x0) < at(x1) && at(x1) < at(y0),
            "one from each group in turn:\n{func}"
        );
        assert!(
            at(y1) > at(st0),
            "the load of the stored buffer stays after the store:\n{func}"
        );
        let last = func.layout.last_inst(block).unwrap();
        assert_eq!(func.dfg.insts[last].opcode(), Opcode::Return);
    }

    /// A load whose offset is computed from another buffer's pointer may touch that buffer:
    /// it stays after a store to it.
    #[test]
    fn an_offset_from_another_pointer_keeps_the_load_in_order() {
        let (func, block, (st, load)) = interleaved(|b, a, out, cuts| {
            let fl = MemFlagsData::trusted();
            let here = |b: &FunctionBuilder| b.func.layout.last_inst(b.current_block().unwrap());
            // A chain long enough that the store would come after the other group's load.
            let mut v = b.ins().f32const(1.0);
            for _ in 0..6 {
                v = b.ins().fadd(v, v);
            }
            let st = b.ins().store(fl, v, out, 0);
            cuts.push(here(b));
            // a + (out - a) is out.
            let off = b.ins().isub(out, a);
            let addr = b.ins().iadd(a, off);
            let x = b.ins().load(types::F32, fl, addr, 0);
            b.ins().store(fl, x, a, 0);
            cuts.push(here(b));
            (st, b.func.dfg.value_def(x).unwrap_inst())
        });
        assert!(
            position(&func, block, load) > position(&func, block, st),
            "the load stays after the store:\n{func}"
        );
    }
}
