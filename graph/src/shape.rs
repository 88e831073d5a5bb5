//! Shapes, NumPy broadcasting and the contiguous layout every buffer uses.

use std::fmt;

use crate::dim::{Bindings, Dim};
use crate::error::GraphError;

/// An ordered list of dimensions (outermost first).
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Default,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// A fully static shape.
    pub fn of(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Const(d)).collect())
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The dimensions.
    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// Every dimension at its symbol's maximum.
    pub fn max_dims(&self) -> Vec<usize> {
        self.0.iter().map(Dim::max_value).collect()
    }

    /// Element count at every symbol's maximum: the size buffers are allocated with.
    pub fn max_numel(&self) -> usize {
        self.0.iter().map(Dim::max_value).product()
    }

    /// Element count when every dimension is static.
    pub fn static_numel(&self) -> Option<usize> {
        self.0.iter().map(Dim::as_const).product()
    }

    /// Concrete dimensions under `bindings`.
    pub fn eval(&self, bindings: &Bindings) -> Result<Vec<usize>, GraphError> {
        self.0.iter().map(|d| d.eval(bindings)).collect()
    }

    /// Row-major strides computed from each dimension's maximum, so they are constants even
    /// for symbolic shapes.
    pub fn layout_strides(&self) -> Vec<i64> {
        let mut strides = vec![0i64; self.rank()];
        let mut acc = 1i64;
        for i in (0..self.rank()).rev() {
            strides[i] = acc;
            acc *= self.0[i].max_value() as i64;
        }
        strides
    }

    /// True when no dimension is symbolic.
    pub fn is_static(&self) -> bool {
        self.0.iter().all(|d| d.as_const().is_some())
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Shape {
        Shape::of(d)
    }
}

impl From<Vec<Dim>> for Shape {
    fn from(d: Vec<Dim>) -> Shape {
        Shape(d)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The NumPy broadcast of two shapes: right-aligned, equal dims or one of them 1.
pub fn broadcast_shapes(op: &str, a: &Shape, b: &Shape) -> Result<Shape, GraphError> {
    let rank = a.rank().max(b.rank());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = (i + a.rank()).checked_sub(rank).map(|j| &a.0[j]);
        let db = (i + b.rank()).checked_sub(rank).map(|j| &b.0[j]);
        let d = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) if x == y => x.clone(),
            (Some(x), Some(y)) if x.is_one() => y.clone(),
            (Some(x), Some(y)) if y.is_one() => x.clone(),
            _ => {
                return Err(GraphError::Broadcast {
                    op: op.to_string(),
                    lhs: a.clone(),
                    rhs: b.clone(),
                });
            }
        };
        out.push(d);
    }
    Ok(Shape(out))
}
