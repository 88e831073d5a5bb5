//! Affine index arithmetic over loop variables and symbols: how a kernel addresses memory.
//! Keeping every index affine is what lets codegen vectorise loads by their stride alone.

use std::fmt;
use std::sync::Arc;

use cranegrad_graph::Dim;

/// `constant + sum(coeff * loop_var) + sum(coeff * symbol)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Affine {
    /// `(loop variable, coefficient)`, sorted by variable, no zero coefficients.
    pub terms: Vec<(usize, i64)>,
    /// `(symbol name, coefficient)`, sorted by name, no zero coefficients.
    pub syms: Vec<(Arc<str>, i64)>,
    /// The constant part.
    pub constant: i64,
}

impl Affine {
    /// The constant `c`.
    pub fn constant(c: i64) -> Affine {
        Affine {
            constant: c,
            ..Affine::default()
        }
    }

    /// The loop variable `v`.
    pub fn var(v: usize) -> Affine {
        Affine {
            terms: vec![(v, 1)],
            ..Affine::default()
        }
    }

    /// A dimension's value as an expression (`pos + 1` stays symbolic).
    pub fn dim(d: &Dim) -> Affine {
        match d {
            Dim::Const(n) => Affine::constant(*n as i64),
            Dim::Sym { sym, offset } => Affine {
                terms: vec![],
                syms: vec![(sym.name.clone(), 1)],
                constant: *offset,
            },
        }
    }

    /// `self + other`.
    pub fn add(&self, other: &Affine) -> Affine {
        let mut terms = self.terms.clone();
        for &(v, c) in &other.terms {
            match terms.iter_mut().find(|t| t.0 == v) {
                Some(t) => t.1 += c,
                None => terms.push((v, c)),
            }
        }
        terms.retain(|t| t.1 != 0);
        terms.sort_unstable();
        let mut syms = self.syms.clone();
        for (s, c) in &other.syms {
            match syms.iter_mut().find(|t| &t.0 == s) {
                Some(t) => t.1 += c,
                None => syms.push((s.clone(), *c)),
            }
        }
        syms.retain(|t| t.1 != 0);
        syms.sort();
        Affine {
            terms,
            syms,
            constant: self.constant + other.constant,
        }
    }

    /// `self * k`.
    pub fn scale(&self, k: i64) -> Affine {
        if k == 0 {
            return Affine::default();
        }
        Affine {
            terms: self.terms.iter().map(|&(v, c)| (v, c * k)).collect(),
            syms: self.syms.iter().map(|(s, c)| (s.clone(), c * k)).collect(),
            constant: self.constant * k,
        }
    }

    /// The coefficient of loop variable `v` (0 when absent).
    pub fn coeff(&self, v: usize) -> i64 {
        self.terms.iter().find(|t| t.0 == v).map_or(0, |t| t.1)
    }

    /// The value with `v = 0` substituted (the variable removed).
    pub fn without(&self, v: usize) -> Affine {
        let mut a = self.clone();
        a.terms.retain(|t| t.0 != v);
        a
    }

    /// Renames loop variables through `f` (a removed variable maps to `None` and must have a
    /// zero coefficient, which the caller guarantees by substituting it first).
    pub fn rename(&self, f: impl Fn(usize) -> Option<usize>) -> Affine {
        let mut a = self.clone();
        a.terms = self
            .terms
            .iter()
            .filter_map(|&(v, c)| f(v).map(|w| (w, c)))
            .collect();
        a.terms.sort_unstable();
        a
    }

    /// True when the expression is a plain constant.
    pub fn is_constant(&self) -> bool {
        self.terms.is_empty() && self.syms.is_empty()
    }
}

impl fmt::Display for Affine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        for &(v, c) in &self.terms {
            parts.push(if c == 1 {
                format!("i{v}")
            } else {
                format!("{c}*i{v}")
            });
        }
        for (s, c) in &self.syms {
            parts.push(if *c == 1 {
                s.to_string()
            } else {
                format!("{c}*{s}")
            });
        }
        if self.constant != 0 || parts.is_empty() {
            parts.push(self.constant.to_string());
        }
        f.write_str(&parts.join(" + ").replace("+ -", "- "))
    }
}

/// The condition `0 <= expr < len`: a pad's valid window, also used to keep loads in bounds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Cond {
    /// Position relative to the window start.
    pub expr: Affine,
    /// Window length.
    pub len: Dim,
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0 <= {} < {}", self.expr, self.len)
    }
}

/// How a kernel's loop variables index one tensor: one affine expression per tensor axis,
/// plus the conditions under which the element exists (zero padding).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct IndexMap {
    /// Index along each tensor axis.
    pub dims: Vec<Affine>,
    /// All must hold for the element to be real; otherwise it is a padding zero.
    pub conds: Vec<Cond>,
}

impl IndexMap {
    /// Memory offset of the element in a buffer with the given strides.
    pub fn offset(&self, strides: &[i64]) -> Affine {
        self.dims
            .iter()
            .zip(strides)
            .fold(Affine::default(), |acc, (d, &s)| acc.add(&d.scale(s)))
    }
}
