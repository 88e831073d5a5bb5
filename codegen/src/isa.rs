//! Host target ISA construction, its cache fingerprint, and the JIT module built on it.

use std::sync::atomic::{AtomicBool, Ordering};

use cranelift_codegen::CodegenError;
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable, SetError};
use cranelift_jit::{JITBuilder, JITModule};

/// Pinned in the workspace manifest; part of the fingerprint because codegen changes between releases.
pub const CRANELIFT_VERSION: &str = "0.135.8";

/// Optimisation level handed to Cranelift; per kernel kind, as hand-scheduled kernels can prefer `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OptLevel {
    /// Keeps the emitted instruction order (fastest measured for the GEMM micro-kernel).
    None,
    /// E-graph optimisation incl. loop-invariant hoisting (better for most elementwise kernels).
    Speed,
}

impl OptLevel {
    /// The value Cranelift's `opt_level` setting expects.
    pub fn as_setting(self) -> &'static str {
        match self {
            OptLevel::None => "none",
            OptLevel::Speed => "speed",
        }
    }
}

/// Why the host ISA could not be built.
#[derive(Debug, thiserror::Error)]
pub enum IsaError {
    /// cranelift-native does not support (or could not probe) the machine we run on.
    #[error("host CPU is not supported by Cranelift: {0}")]
    UnsupportedHost(&'static str),
    /// A shared setting was rejected; a bug here, as names and values are fixed.
    #[error("cannot set Cranelift setting `{name}` = `{value}`: {source}")]
    Setting {
        /// Setting name.
        name: &'static str,
        /// Rejected value.
        value: &'static str,
        /// Cranelift's reason.
        source: SetError,
    },
    /// The ISA backend rejected the combination of flags.
    #[error("cannot build the host ISA: {0}")]
    Finish(#[source] CodegenError),
}

/// Set by [`force_verifier`]; a process-wide switch because every `KernelCache` builds its own ISA.
static VERIFIER_FORCED: AtomicBool = AtomicBool::new(false);

/// Turns the IR verifier on for every ISA built from now on in this process, whatever the build
/// profile; test helpers call it so `cargo test --release` verifies every compiled function.
pub fn force_verifier() {
    VERIFIER_FORCED.store(true, Ordering::Relaxed);
}

/// The IR verifier costs 40-50% of compile time, so it runs only in debug builds or when asked for.
pub fn verifier_enabled() -> bool {
    cfg!(debug_assertions)
        || VERIFIER_FORCED.load(Ordering::Relaxed)
        || std::env::var_os("CRANEGRAD_VERIFY").is_some_and(|v| v == "1")
}

/// Host ISA with every detected CPU feature on, since without e.g. `has_fma` an `fma` becomes a libcall per lane.
pub fn host_isa(opt_level: OptLevel) -> Result<OwnedTargetIsa, IsaError> {
    let mut flags = settings::builder();
    let verifier = if verifier_enabled() { "true" } else { "false" };
    // The JIT places code at arbitrary addresses: no PIC needed, and libcalls may be out of
    // the short relocation range, so they must not be treated as colocated.
    // Frames past a page (a GEMM's row statistics, a column reduction's accumulators) are
    // probed page by page, so a deep stack meets its guard page instead of skipping it.
    let settings: [(&'static str, &'static str); 6] = [
        ("opt_level", opt_level.as_setting()),
        ("enable_verifier", verifier),
        ("is_pic", "false"),
        ("use_colocated_libcalls", "false"),
        ("enable_probestack", "true"),
        ("probestack_strategy", "inline"),
    ];
    for (name, value) in settings {
        flags.set(name, value).map_err(|source| IsaError::Setting {
            name,
            value,
            source,
        })?;
    }
    let isa_builder = cranelift_native::builder().map_err(IsaError::UnsupportedHost)?;
    isa_builder
        .finish(settings::Flags::new(flags))
        .map_err(IsaError::Finish)
}

/// Kernel-cache key component: machine code is only reusable under the same triple, flags and Cranelift.
pub fn isa_fingerprint(isa: &dyn TargetIsa) -> String {
    let isa_flags: Vec<String> = isa.isa_flags().iter().map(|v| v.to_string()).collect();
    let shared_flags: Vec<String> = isa.flags().iter().map(|v| v.to_string()).collect();
    format!(
        "cranelift={CRANELIFT_VERSION};triple={};isa={};isa_flags=[{}];shared_flags=[{}]",
        isa.triple(),
        isa.name(),
        isa_flags.join(","),
        shared_flags.join(",")
    )
}

/// JIT module on the given ISA, resolving libcalls by their default C names.
pub fn new_jit_module(isa: OwnedTargetIsa) -> JITModule {
    JITModule::new(JITBuilder::with_isa(
        isa,
        cranelift_module::default_libcall_names(),
    ))
}
