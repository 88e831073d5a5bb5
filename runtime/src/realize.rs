//! `tensor.realize()` and `tensor.to_vec()`: the lazy graph runs only when a value is asked
//! for. The graph crate cannot run anything (data flows graph -> lower -> codegen -> runtime),
//! so these are an extension trait here, over one session per thread that keeps its kernel and
//! plan caches across calls (a second realize of the same structure compiles nothing).

use std::cell::RefCell;

use cranegrad_graph::{Bindings, Tensor};

use crate::{Feeds, RuntimeError, Session, SessionOptions, Value};

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

/// Computes a tensor through the JIT (fused, all cores) with the inputs attached to its graph.
pub trait Realize {
    /// The tensor's value.
    fn realize(&self) -> Result<Value, RuntimeError>;
    /// The tensor's elements in row-major order, as f32.
    fn to_vec(&self) -> Result<Vec<f32>, RuntimeError>;
}

impl Realize for Tensor {
    fn realize(&self) -> Result<Value, RuntimeError> {
        SESSION.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(Session::new(SessionOptions::default())?);
            }
            let session = slot.as_mut().expect("session created above");
            let mut values = session.realize(&[self], &Feeds::new(), &Bindings::new())?;
            Ok(values.remove(0))
        })
    }

    fn to_vec(&self) -> Result<Vec<f32>, RuntimeError> {
        Ok(self.realize()?.to_f32())
    }
}
