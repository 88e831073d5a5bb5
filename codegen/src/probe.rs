//! The FMA-peak probe kernel: twelve independent 4-lane FMA chains, the same vector width and
//! instruction the generated kernels use, so "percent of peak" compares like with like.

use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, Signature, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{Linkage, Module};

use crate::{CodegenError, KernelCache};

/// `fn(iters, out)`: runs `iters` x 12 x 4-lane FMAs and stores a lane sum to `out` (so the
/// work cannot be optimised away).
pub type FmaProbeFn = unsafe extern "C" fn(iters: i64, out: *mut f32);

/// Independent accumulators: enough to cover FMA latency x throughput on two FMA ports.
pub const FMA_CHAINS: i64 = 12;

impl KernelCache {
    /// Compiles the FMA probe.
    pub fn fma_probe(&mut self) -> Result<FmaProbeFn, CodegenError> {
        let module = self.module_mut();
        let mut sig = Signature::new(module.isa().default_call_conv());
        sig.params.push(AbiParam::new(types::I64));
        sig.params.push(AbiParam::new(types::I64));
        let id = module
            .declare_function("fma_probe", Linkage::Local, &sig)
            .map_err(|e| CodegenError::Cranelift(e.to_string()))?;
        let mut ctx = module.make_context();
        ctx.func.signature = sig;
        let mut fctx = FunctionBuilderContext::new();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let entry = b.create_block();
            let header = b.create_block();
            let body = b.create_block();
            let exit = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let (iters, out) = (b.block_params(entry)[0], b.block_params(entry)[1]);
            let x = b.ins().f32const(1.000_000_1);
            let x = b.ins().splat(types::F32X4, x);
            let y = b.ins().f32const(0.999_999_9);
            let y = b.ins().splat(types::F32X4, y);
            let zero = b.ins().iconst(types::I64, 0);
            let mut init = vec![zero.into()];
            for k in 0..FMA_CHAINS {
                let c = b.ins().f32const(k as f32);
                init.push(b.ins().splat(types::F32X4, c).into());
            }
            b.append_block_param(header, types::I64);
            for _ in 0..FMA_CHAINS {
                b.append_block_param(header, types::F32X4);
                b.append_block_param(exit, types::F32X4);
            }
            b.ins().jump(header, &init);
            b.switch_to_block(header);
            let params = b.block_params(header).to_vec();
            let done = b.ins().icmp(
                cranelift_codegen::ir::condcodes::IntCC::SignedGreaterThanOrEqual,
                params[0],
                iters,
            );
            let accs: Vec<_> = params[1..].iter().map(|&v| v.into()).collect();
            b.ins().brif(done, exit, &accs, body, &[]);
            b.switch_to_block(body);
            let mut next = vec![b.ins().iadd_imm_s(params[0], 1).into()];
            for &a in &params[1..] {
                next.push(b.ins().fma(x, y, a).into());
            }
            b.ins().jump(header, &next);
            b.switch_to_block(exit);
            let accs = b.block_params(exit).to_vec();
            let mut s = accs[0];
            for &a in &accs[1..] {
                s = b.ins().fadd(s, a);
            }
            let lane = b.ins().extractlane(s, 0);
            b.ins()
                .store(MemFlagsData::new().with_notrap(), lane, out, 0);
            b.ins().return_(&[]);
            b.seal_all_blocks();
            b.finalize(module.isa().frontend_config());
        }
        module
            .define_function(id, &mut ctx)
            .map_err(|e| CodegenError::Cranelift(format!("fma probe: {e:?}")))?;
        module
            .finalize_definitions()
            .map_err(|e| CodegenError::Cranelift(e.to_string()))?;
        let ptr = module.get_finalized_function(id);
        // SAFETY: compiled just above with exactly this signature.
        Ok(unsafe { std::mem::transmute::<*const u8, FmaProbeFn>(ptr) })
    }
}
