//! Dimensions that are either constant or symbolic (`pos`, `pos+1`), the foundation that lets
//! one compiled kernel serve every value of a runtime size.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::error::GraphError;

/// A named runtime size with inclusive bounds, like tinygrad's `Variable("pos", 1, 2048)`.
///
/// Buffers are laid out for `max`, so strides stay compile-time constants and only loop
/// bounds depend on the bound value.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Symbol {
    /// The name kernels and bindings refer to.
    pub name: Arc<str>,
    /// Smallest legal value.
    pub min: i64,
    /// Largest legal value; buffers are sized for it.
    pub max: i64,
}

impl Symbol {
    /// A symbol with inclusive bounds `min..=max`.
    pub fn new(name: &str, min: i64, max: i64) -> Result<Symbol, GraphError> {
        if min < 0 || min > max {
            return Err(GraphError::BadSymbol {
                name: name.to_string(),
                min,
                max,
            });
        }
        Ok(Symbol {
            name: Arc::from(name),
            min,
            max,
        })
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}..={}]", self.name, self.min, self.max)
    }
}

/// Values bound to symbols for one run.
pub type Bindings = BTreeMap<Arc<str>, i64>;

/// One dimension of a shape: a constant, or a symbol plus a constant offset (`pos + 1`).
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Dim {
    /// A size known when the graph is built.
    Const(usize),
    /// `sym + offset`, known only when the symbol is bound.
    Sym {
        /// The runtime variable.
        sym: Symbol,
        /// Constant added to the symbol's value.
        offset: i64,
    },
}

impl Dim {
    /// The symbolic dimension `sym + 0`.
    pub fn sym(sym: &Symbol) -> Dim {
        Dim::Sym {
            sym: sym.clone(),
            offset: 0,
        }
    }

    /// The constant value, if the dimension is static.
    pub fn as_const(&self) -> Option<usize> {
        match self {
            Dim::Const(n) => Some(*n),
            Dim::Sym { .. } => None,
        }
    }

    /// The largest value the dimension can take; buffers and strides use it.
    pub fn max_value(&self) -> usize {
        match self {
            Dim::Const(n) => *n,
            Dim::Sym { sym, offset } => (sym.max + offset).max(0) as usize,
        }
    }

    /// The smallest value the dimension can take.
    pub fn min_value(&self) -> usize {
        match self {
            Dim::Const(n) => *n,
            Dim::Sym { sym, offset } => (sym.min + offset).max(0) as usize,
        }
    }

    /// The symbol this dimension depends on, if any.
    pub fn symbol(&self) -> Option<&Symbol> {
        match self {
            Dim::Const(_) => None,
            Dim::Sym { sym, .. } => Some(sym),
        }
    }

    /// The concrete value under `bindings`; an unbound or out-of-range symbol is an error.
    pub fn eval(&self, bindings: &Bindings) -> Result<usize, GraphError> {
        match self {
            Dim::Const(n) => Ok(*n),
            Dim::Sym { sym, offset } => {
                let v = *bindings
                    .get(&sym.name)
                    .ok_or_else(|| GraphError::UnboundSymbol(sym.name.to_string()))?;
                if v < sym.min || v > sym.max {
                    return Err(GraphError::SymbolOutOfRange {
                        name: sym.name.to_string(),
                        value: v,
                        min: sym.min,
                        max: sym.max,
                    });
                }
                Ok((v + offset).max(0) as usize)
            }
        }
    }

    /// `self + k`, staying symbolic when `self` is.
    pub fn add(&self, k: i64) -> Dim {
        match self {
            Dim::Const(n) => Dim::Const((*n as i64 + k).max(0) as usize),
            Dim::Sym { sym, offset } => Dim::Sym {
                sym: sym.clone(),
                offset: offset + k,
            },
        }
    }

    /// `self + other` when at most one side is symbolic (`pos + 1`), else `None`.
    pub fn plus(&self, other: &Dim) -> Option<Dim> {
        match (self, other) {
            (Dim::Const(a), Dim::Const(b)) => Some(Dim::Const(a + b)),
            (Dim::Sym { .. }, Dim::Const(b)) => Some(self.add(*b as i64)),
            (Dim::Const(a), Dim::Sym { .. }) => Some(other.add(*a as i64)),
            _ => None,
        }
    }

    /// True when the dimension is the constant 1 (a broadcastable axis).
    pub fn is_one(&self) -> bool {
        matches!(self, Dim::Const(1))
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::Const(n)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Const(n) => write!(f, "{n}"),
            Dim::Sym { sym, offset } => {
                write!(f, "{}", sym.name)?;
                match offset.cmp(&0) {
                    std::cmp::Ordering::Greater => write!(f, "+{offset}"),
                    std::cmp::Ordering::Less => write!(f, "{offset}"),
                    std::cmp::Ordering::Equal => Ok(()),
                }
            }
        }
    }
}
