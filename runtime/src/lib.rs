//! Buffers and memory planning, executing schedules on a thread pool, timing, the machine
//! probe and the reference interpreter.

pub mod buffer;
pub mod error;
pub mod interp;
pub mod pack;
pub mod plan;
pub mod planner;
pub mod pool;
pub mod probe;
pub mod realize;
pub mod schedule_cache;
pub mod session;
pub mod value;
pub mod weight_cache;

pub use error::RuntimeError;
pub use realize::Realize;
pub use session::{Captured, Feeds, RunReport, Session, SessionOptions, interpret_tensors};
pub use value::Value;
