//! The kernel cache: compiled functions keyed by a stable hash of the kernel IR's canonical
//! text, the Cranelift version and the ISA flags, so an identical kernel compiles once per
//! process (and the key can later name an on-disk entry).

use std::collections::HashMap;
use std::time::Instant;

use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::JITModule;
use cranelift_module::{Linkage, Module};
use sha2::{Digest, Sha256};

use cranegrad_lower::Kernel;

use crate::emit::{emit_kernel, kernel_signature};
use crate::isa::{OptLevel, host_isa, isa_fingerprint, new_jit_module};
use crate::{CodegenError, bounds};

/// The ABI every kernel is compiled to: compute iterations `[start, end)` of the parallel
/// range, reading buffer pointers from `bufs` and symbol values from `syms`.
pub type KernelFn =
    unsafe extern "C" fn(bufs: *const *mut u8, syms: *const i64, start: i64, end: i64);

/// A compiled kernel.
#[derive(Clone, Copy, Debug)]
pub struct CompiledKernel {
    /// Entry point.
    pub func: KernelFn,
    /// Time spent compiling it (0 on a cache hit).
    pub compile_micros: f64,
    /// True when it came from the cache.
    pub hit: bool,
}

/// Cache counters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CacheStats {
    /// Kernels served from the cache.
    pub hits: u64,
    /// Kernels compiled.
    pub misses: u64,
    /// Total compile time of the misses, microseconds.
    pub compile_micros: f64,
    /// Misses served from the disk cache instead of compiled.
    pub disk_hits: u64,
}

/// The cache key of `k` under an ISA fingerprint: 128 bits of SHA-256 over the kernel's
/// canonical text and the fingerprint, in hex. A pure function of its inputs, so the same kernel
/// on the same host gets the same key in every process (what an on-disk cache needs).
pub fn kernel_key(k: &Kernel, isa_fingerprint: &str) -> String {
    let mut h = Sha256::new();
    h.update(k.key_text().as_bytes());
    h.update(b"\n");
    h.update(isa_fingerprint.as_bytes());
    cranegrad_graph::print::hex(&h.finalize()[..16])
}

/// JIT module + map from key to compiled function. Function pointers stay valid for the life
/// of the cache.
pub struct KernelCache {
    /// Kernels compiled with Cranelift's optimiser (LICM, GVN): elementwise and attention
    /// kernels, and GEMV of an unpacked B.
    module: JITModule,
    fingerprint: String,
    /// Kernels compiled as emitted (`opt_level = none`): row kernels, whose per-row values the
    /// optimiser would otherwise re-place inside the row loop, and GEMMs (see
    /// `emit::prefers_plain`).
    plain: JITModule,
    plain_fingerprint: String,
    map: HashMap<String, KernelFn>,
    stats: CacheStats,
    /// Compiled kernels on disk, shared by processes (the process's setting when created).
    disk: Option<crate::disk_cache::DiskCache>,
    ctx: Context,
    fctx: FunctionBuilderContext,
}

impl KernelCache {
    /// A cache compiling for the host CPU.
    pub fn new() -> Result<KernelCache, CodegenError> {
        let isa = host_isa(OptLevel::Speed).map_err(|e| CodegenError::Isa(e.to_string()))?;
        let fingerprint = isa_fingerprint(&*isa);
        let module = new_jit_module(isa);
        let isa = host_isa(OptLevel::None).map_err(|e| CodegenError::Isa(e.to_string()))?;
        let plain_fingerprint = isa_fingerprint(&*isa);
        let plain = new_jit_module(isa);
        let ctx = module.make_context();
        Ok(KernelCache {
            module,
            fingerprint,
            plain,
            plain_fingerprint,
            map: HashMap::new(),
            stats: CacheStats::default(),
            disk: crate::disk_cache::global(),
            ctx,
            fctx: FunctionBuilderContext::new(),
        })
    }

    /// The stable cache key of a kernel.
    pub fn key(&self, k: &Kernel) -> String {
        kernel_key(k, self.fingerprint_for(k))
    }

    /// The ISA fingerprint a kernel is keyed (and compiled) under.
    pub fn fingerprint_for(&self, k: &Kernel) -> &str {
        if crate::emit::prefers_plain(k) {
            &self.plain_fingerprint
        } else {
            &self.fingerprint
        }
    }

    /// The JIT module, for helper functions compiled outside the kernel IR (the probe).
    pub(crate) fn module_mut(&mut self) -> &mut JITModule {
        &mut self.module
    }

    /// Counters so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Number of distinct compiled kernels.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing has been compiled.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The kernel's function, compiling it on a miss.
    pub fn get_or_compile(&mut self, k: &Kernel) -> Result<CompiledKernel, CodegenError> {
        let key = self.key(k);
        if let Some(&func) = self.map.get(&key) {
            self.stats.hits += 1;
            return Ok(CompiledKernel {
                func,
                compile_micros: 0.0,
                hit: true,
            });
        }
        bounds::check_bounds(k)?;
        let t = Instant::now();
        let func = self.compile(k, &key)?;
        let us = t.elapsed().as_secs_f64() * 1e6;
        self.stats.misses += 1;
        self.stats.compile_micros += us;
        self.map.insert(key, func);
        Ok(CompiledKernel {
            func,
            compile_micros: us,
            hit: false,
        })
    }

    /// The Cranelift IR text of a kernel (for `--dump-graph=clif` and debugging).
    pub fn clif_text(&mut self, k: &Kernel) -> String {
        self.ctx.func.signature = kernel_signature(self.module.isa().default_call_conv());
        emit_kernel(
            k,
            &mut self.ctx.func,
            &mut self.fctx,
            self.module.isa().frontend_config(),
        );
        let s = self.ctx.func.display().to_string();
        self.module.clear_context(&mut self.ctx);
        s
    }

    /// The machine code of a kernel as text (what `--dump-graph=asm` prints).
    /// It is compiled as the kernel really is (see `emit::prefers_plain`).
    pub fn disassemble(&mut self, k: &Kernel) -> Result<String, CodegenError> {
        let module = if crate::emit::prefers_plain(k) {
            &self.plain
        } else {
            &self.module
        };
        let mut ctx = Context::new();
        ctx.func.signature = kernel_signature(module.isa().default_call_conv());
        emit_kernel(
            k,
            &mut ctx.func,
            &mut self.fctx,
            module.isa().frontend_config(),
        );
        ctx.set_disasm(true);
        let mut ctrl = cranelift_codegen::control::ControlPlane::default();
        let code = ctx
            .compile(module.isa(), &mut ctrl)
            .map_err(|e| CodegenError::Cranelift(format!("{}: {:?}", k.name, e.inner)))?;
        Ok(code.vcode.clone().unwrap_or_default())
    }

    fn compile(&mut self, k: &Kernel, key: &str) -> Result<KernelFn, CodegenError> {
        let module = if crate::emit::prefers_plain(k) {
            &mut self.plain
        } else {
            &mut self.module
        };
        let sig = kernel_signature(module.isa().default_call_conv());
        let id = module
            .declare_function(&format!("{}_{key}", k.name), Linkage::Local, &sig)
            .map_err(|e| CodegenError::Cranelift(format!("{}: {e}", k.name)))?;
        // A checked entry from an earlier process: its bytes, mapped without compiling.
        if let Some(entry) = self.disk.as_ref().and_then(|d| d.load(key)) {
            let fail = |e: cranelift_module::ModuleError| {
                CodegenError::Cranelift(format!("{}: {e}", k.name))
            };
            module
                .define_function_bytes(id, entry.align, &entry.code, &[])
                .map_err(fail)?;
            module.finalize_definitions().map_err(fail)?;
            self.stats.disk_hits += 1;
            let ptr = module.get_finalized_function(id);
            // SAFETY: the entry holds the code this cache compiled for this key (kernel
            // text, Cranelift version, ISA flags) with `kernel_signature`, checksum verified.
            return Ok(unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) });
        }
        self.ctx.func.signature = sig;
        emit_kernel(
            k,
            &mut self.ctx.func,
            &mut self.fctx,
            module.isa().frontend_config(),
        );
        let res = module.define_function(id, &mut self.ctx);
        if let Err(e) = res {
            let detail = match &e {
                cranelift_module::ModuleError::Compilation(ce) => {
                    format!("{ce:?}\n{}", self.ctx.func.display())
                }
                other => other.to_string(),
            };
            module.clear_context(&mut self.ctx);
            return Err(CodegenError::Cranelift(format!("{}: {detail}", k.name)));
        }
        // Self-contained code (no relocations: no libcalls) can be stored as bytes.
        if let (Some(disk), Some(code)) = (&self.disk, self.ctx.compiled_code())
            && code.buffer.relocs().is_empty()
        {
            disk.store(key, code.code_buffer(), u64::from(code.buffer.alignment));
        }
        module.clear_context(&mut self.ctx);
        module
            .finalize_definitions()
            .map_err(|e| CodegenError::Cranelift(format!("{}: {e}", k.name)))?;
        let ptr = module.get_finalized_function(id);
        // SAFETY: the function was just compiled with `kernel_signature`, which is this ABI.
        Ok(unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) })
    }
}
