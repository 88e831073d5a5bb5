//! Schedule passes (schedule -> schedule), one per file; their order is `SCHEDULE_PASSES` in
//! `lib.rs`.

pub mod fuse_sibling_gemms;
pub mod name_kernels;
