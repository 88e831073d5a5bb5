//! Reads back the text form of a graph ([`graph_text`](crate::print::graph_text)), so a graph
//! can be written down as text in a test or replayed from a `--dump-graph` of a failing run.
//! Printing a parsed graph gives the text it was parsed from (up to the renumbering the printer
//! always does).
//!
//! The text leaves out two things, so a parsed graph lacks them: host data (an input that had
//! data comes back as a plain input) and the bounds of symbols (the caller passes the symbols;
//! bounds decide buffer sizes and the structural hash, so they are never guessed).
//!
//! The parser checks what a line can get wrong on its own: syntax, references to earlier lines,
//! each op's operand count, and that axes, permutations, slice starts and pads fit the rank
//! they index. It does not redo the Tensor API's shape inference: a text may state shapes no
//! Tensor call would have produced.

use std::collections::HashMap;

use thiserror::Error;

use crate::dim::{Dim, Symbol};
use crate::dtype::DType;
use crate::graph::{GraphData, Node, NodeId};
use crate::op::{BinaryOp, Op, ReduceOp, UnaryOp};
use crate::shape::Shape;

/// Why a graph text could not be read, with the 1-based line at fault.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number (one past the last line when the `outputs:` line is missing).
    pub line: usize,
    /// What is wrong with the line.
    pub message: String,
}

/// Parses text printed by [`graph_text`](crate::print::graph_text) into a graph and its outputs.
///
/// `symbols` gives the bounds of every symbol the text names (the text carries only names); a
/// symbol not among them is an error. Names must be distinct; the first of a name is used.
pub fn parse_graph_text(
    text: &str,
    symbols: &[Symbol],
) -> Result<(GraphData, Vec<NodeId>), ParseError> {
    let mut by_name: HashMap<&str, &Symbol> = HashMap::new();
    for s in symbols {
        by_name.entry(&*s.name).or_insert(s);
    }
    let mut parser = Parser {
        symbols: by_name,
        graph: GraphData::default(),
        ids: HashMap::new(),
    };
    let mut outputs = None;
    let mut last_line = 0;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        last_line = line_no;
        if line.trim().is_empty() {
            continue;
        }
        let at = |message: String| ParseError {
            line: line_no,
            message,
        };
        if outputs.is_some() {
            return Err(at("nothing may follow the `outputs:` line".into()));
        }
        if let Some(list) = line.strip_prefix("outputs:") {
            outputs = Some(parser.outputs(list).map_err(at)?);
        } else {
            parser.node_line(line).map_err(at)?;
        }
    }
    let outputs = outputs.ok_or(ParseError {
        line: last_line + 1,
        message: "the text ends without an `outputs:` line".into(),
    })?;
    Ok((parser.graph, outputs))
}

/// The state carried from line to line.
struct Parser<'s> {
    symbols: HashMap<&'s str, &'s Symbol>,
    graph: GraphData,
    /// Node of each `%id` defined so far.
    ids: HashMap<usize, NodeId>,
}

type LineResult<T> = Result<T, String>;

impl Parser<'_> {
    /// `%id = op attrs (inputs) : dtype[shape]`, added to the graph.
    fn node_line(&mut self, line: &str) -> LineResult<()> {
        // The type is split off at the last ` : ` because it cannot contain one, while an
        // input's name can.
        let (lhs, ty) = line
            .rsplit_once(" : ")
            .ok_or("expected `%id = op ... : dtype[shape]`")?;
        let (dtype, shape) = self.node_type(ty)?;
        let (id, rhs) = lhs
            .strip_prefix('%')
            .and_then(|l| l.split_once(" = "))
            .ok_or("expected the line to start with `%id = `")?;
        let id = parse_id(id)?;
        if self.ids.contains_key(&id) {
            return Err(format!("%{id} is defined twice"));
        }
        let (name, rest) = rhs.split_once(' ').unwrap_or((rhs, ""));
        let mut c = Cursor(rest);
        let op = self.op(name, &mut c)?;
        let inputs = if c.0.is_empty() {
            Vec::new()
        } else {
            // Attributes, when present, are separated from the operands by one space.
            if c.0.len() < rest.len() {
                c.expect(" ")?;
            }
            self.operands(&mut c)?
        };
        c.expect_end()?;
        let want = arity(&op);
        if inputs.len() != want {
            return Err(format!(
                "{name} takes {want} operand(s), the line gives {}",
                inputs.len()
            ));
        }
        self.check_ranks(&op, &inputs, &shape)?;
        let node = Node {
            op,
            shape,
            dtype,
            data: None,
            scope: None,
        };
        let n = self.graph.add(node, &inputs);
        self.ids.insert(id, n);
        Ok(())
    }

    /// The op named `name` with its attributes read from `c`.
    fn op(&self, name: &str, c: &mut Cursor) -> LineResult<Op> {
        let op = match name {
            "input" => {
                // Names are printed unescaped, so the whole rest of the line is the name.
                let quoted = std::mem::take(&mut c.0);
                let name = quoted
                    .strip_prefix('"')
                    .and_then(|q| q.strip_suffix('"'))
                    .ok_or_else(|| format!("expected a quoted input name, got `{quoted}`"))?;
                Op::Input {
                    name: name.to_string(),
                }
            }
            "const" => {
                let v = c.take_until(' ');
                let value = v
                    .parse::<f64>()
                    .map_err(|_| format!("`{v}` is not a number"))?;
                Op::Const { value }
            }
            "arange" => Op::Arange {
                axis: axis_attr(c)?,
            },
            "neg" => Op::Unary(UnaryOp::Neg),
            "exp2" => Op::Unary(UnaryOp::Exp2),
            "log2" => Op::Unary(UnaryOp::Log2),
            "sqrt" => Op::Unary(UnaryOp::Sqrt),
            "recip" => Op::Unary(UnaryOp::Recip),
            "sin" => Op::Unary(UnaryOp::Sin),
            "cast" => Op::Unary(UnaryOp::Cast),
            "add" => Op::Binary(BinaryOp::Add),
            "mul" => Op::Binary(BinaryOp::Mul),
            "max" => Op::Binary(BinaryOp::Max),
            "cmplt" => Op::Binary(BinaryOp::CmpLt),
            "where" => Op::Where,
            "sum" => Op::Reduce {
                op: ReduceOp::Sum,
                axis: axis_attr(c)?,
            },
            "reduce_max" => Op::Reduce {
                op: ReduceOp::Max,
                axis: axis_attr(c)?,
            },
            "reshape" => Op::Reshape,
            "permute" => {
                let items = c.bracketed()?;
                let perm = split_list(items)
                    .map(|p| p.parse::<usize>().map_err(|_| format!("bad axis `{p}`")))
                    .collect::<LineResult<Vec<usize>>>()?;
                Op::Permute(perm)
            }
            "expand" => Op::Expand,
            "slice" => Op::Slice {
                starts: self.starts_attr(c)?,
            },
            "write_slice" => Op::WriteSlice {
                starts: self.starts_attr(c)?,
            },
            "pad" => Op::Pad(self.pads(c)?),
            "gather" => Op::Gather,
            "matmul" => Op::MatMul,
            other => return Err(format!("unknown op `{other}`")),
        };
        Ok(op)
    }

    /// `starts=[d, ..]`.
    fn starts_attr(&self, c: &mut Cursor) -> LineResult<Vec<Dim>> {
        c.expect("starts=")?;
        let items = c.bracketed()?;
        split_list(items).map(|d| self.dim(d)).collect()
    }

    /// `[(before, after), ..]`.
    fn pads(&self, c: &mut Cursor) -> LineResult<Vec<(Dim, Dim)>> {
        let mut inner = Cursor(c.bracketed()?);
        let mut pads = Vec::new();
        while !inner.0.is_empty() {
            if !pads.is_empty() {
                inner.expect(", ")?;
            }
            inner.expect("(")?;
            let before = inner.take_until(',');
            inner.expect(", ")?;
            let after = inner.take_until(')');
            inner.expect(")")?;
            pads.push((self.dim(before)?, self.dim(after)?));
        }
        Ok(pads)
    }

    /// `(%a, %b)`: nodes defined on earlier lines.
    fn operands(&self, c: &mut Cursor) -> LineResult<Vec<NodeId>> {
        c.expect("(")?;
        let list = c.take_until(')');
        c.expect(")")?;
        if list.is_empty() {
            return Err("an op without operands is printed without `()`".into());
        }
        list.split(", ").map(|r| self.reference(r)).collect()
    }

    /// The `outputs:` list (possibly empty).
    fn outputs(&self, list: &str) -> LineResult<Vec<NodeId>> {
        let list = list.trim();
        if list.is_empty() {
            return Ok(Vec::new());
        }
        list.split(", ").map(|r| self.reference(r)).collect()
    }

    /// `%id` of a node defined on an earlier line.
    fn reference(&self, r: &str) -> LineResult<NodeId> {
        let id = r
            .strip_prefix('%')
            .ok_or_else(|| format!("expected `%id`, got `{r}`"))?;
        let id = parse_id(id)?;
        self.ids
            .get(&id)
            .copied()
            .ok_or_else(|| format!("%{id} is not defined on an earlier line"))
    }

    /// `dtype[shape]`.
    fn node_type(&self, ty: &str) -> LineResult<(DType, Shape)> {
        let open = ty
            .find('[')
            .ok_or_else(|| format!("expected `dtype[shape]`, got `{ty}`"))?;
        let dtype = match &ty[..open] {
            "f32" => DType::F32,
            "i32" => DType::I32,
            "bool" => DType::Bool,
            other => return Err(format!("unknown dtype `{other}`")),
        };
        let mut c = Cursor(&ty[open..]);
        let dims = split_list(c.bracketed()?)
            .map(|d| self.dim(d))
            .collect::<LineResult<Vec<Dim>>>()?;
        c.expect_end()?;
        Ok((dtype, Shape(dims)))
    }

    /// A dimension as [`Dim`]'s `Display` prints it: `7`, `pos`, `pos+1` or `pos-2`.
    fn dim(&self, d: &str) -> LineResult<Dim> {
        if d.bytes().all(|b| b.is_ascii_digit()) && !d.is_empty() {
            return d
                .parse::<usize>()
                .map(Dim::Const)
                .map_err(|_| format!("dimension `{d}` is too large"));
        }
        if let Some(sym) = self.symbols.get(d) {
            return Ok(Dim::sym(sym));
        }
        let unknown = || format!("`{d}` is neither a number nor a symbol the parser was given");
        // The offset is the digits after the last sign; what precedes it must be a symbol.
        let sign = d.rfind(['+', '-']).ok_or_else(unknown)?;
        let (name, offset) = d.split_at(sign);
        let sym = self.symbols.get(name).ok_or_else(unknown)?;
        let digits = &offset[1..];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("bad offset `{offset}` in `{d}`"));
        }
        let offset = offset
            .parse::<i64>()
            .map_err(|_| format!("offset `{offset}` in `{d}` is too large"))?;
        Ok(Dim::Sym {
            sym: (*sym).clone(),
            offset,
        })
    }

    /// Axes and per-axis attributes must fit the rank they index, or every consumer of the
    /// graph would index out of bounds.
    fn check_ranks(&self, op: &Op, inputs: &[NodeId], shape: &Shape) -> LineResult<()> {
        let input_rank = || self.graph.node(inputs[0]).shape.rank();
        match op {
            Op::Arange { axis } if *axis >= shape.rank() => Err(format!(
                "axis {axis} is out of range for the result's rank {}",
                shape.rank()
            )),
            Op::Reduce { axis, .. } if *axis >= input_rank() => Err(format!(
                "axis {axis} is out of range for the operand's rank {}",
                input_rank()
            )),
            Op::Permute(perm) => {
                let mut seen = vec![false; input_rank()];
                let is_perm = perm.len() == seen.len()
                    && perm
                        .iter()
                        .all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true));
                if is_perm {
                    Ok(())
                } else {
                    Err(format!(
                        "{perm:?} is not a permutation of the operand's {} axes",
                        seen.len()
                    ))
                }
            }
            Op::Slice { starts } | Op::WriteSlice { starts } if starts.len() != input_rank() => {
                Err(format!(
                    "{} starts for an operand of rank {}",
                    starts.len(),
                    input_rank()
                ))
            }
            Op::Pad(p) if p.len() != input_rank() => Err(format!(
                "{} pads for an operand of rank {}",
                p.len(),
                input_rank()
            )),
            _ => Ok(()),
        }
    }
}

/// How many operands an op takes.
fn arity(op: &Op) -> usize {
    match op {
        Op::Input { .. } | Op::Const { .. } | Op::Arange { .. } => 0,
        Op::Unary(_)
        | Op::Reduce { .. }
        | Op::Reshape
        | Op::Permute(_)
        | Op::Expand
        | Op::Slice { .. }
        | Op::Pad(_) => 1,
        Op::Binary(_) | Op::Gather | Op::WriteSlice { .. } | Op::MatMul => 2,
        Op::Where => 3,
    }
}

/// The number in `%id`.
fn parse_id(id: &str) -> LineResult<usize> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`%{id}` is not a node id"));
    }
    id.parse()
        .map_err(|_| format!("node id `%{id}` is too large"))
}

/// `axis=N`.
fn axis_attr(c: &mut Cursor) -> LineResult<usize> {
    c.expect("axis=")?;
    let a = c.take_until(' ');
    a.parse().map_err(|_| format!("bad axis `{a}`"))
}

/// The items of a printed list body (`a, b, c`; empty for `[]`).
fn split_list(items: &str) -> impl Iterator<Item = &str> {
    (!items.is_empty())
        .then(|| items.split(", "))
        .into_iter()
        .flatten()
}

/// The unread rest of a line.
struct Cursor<'a>(&'a str);

impl<'a> Cursor<'a> {
    /// Consumes `token`, which must come next.
    fn expect(&mut self, token: &str) -> LineResult<()> {
        match self.0.strip_prefix(token) {
            Some(rest) => {
                self.0 = rest;
                Ok(())
            }
            None if self.0.is_empty() => Err(format!("expected `{token}` at the end")),
            None => Err(format!("expected `{token}` at `{}`", self.0)),
        }
    }

    /// Consumes everything up to (not including) `stop` or the end.
    fn take_until(&mut self, stop: char) -> &'a str {
        let end = self.0.find(stop).unwrap_or(self.0.len());
        let (taken, rest) = self.0.split_at(end);
        self.0 = rest;
        taken
    }

    /// Consumes `[...]` and returns what is inside; lists never nest brackets.
    fn bracketed(&mut self) -> LineResult<&'a str> {
        self.expect("[")?;
        let inside = self.take_until(']');
        self.expect("]")?;
        Ok(inside)
    }

    /// Fails unless the line has been read to its end.
    fn expect_end(&self) -> LineResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("unexpected `{}`", self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser(symbols: &[Symbol]) -> Parser<'_> {
        Parser {
            symbols: symbols.iter().map(|s| (&*s.name, s)).collect(),
            graph: GraphData::default(),
            ids: HashMap::new(),
        }
    }

    #[test]
    fn dims_read_back_as_printed() {
        let pos = Symbol::new("pos", 1, 64).unwrap();
        let p = parser(std::slice::from_ref(&pos));
        for d in [
            Dim::Const(0),
            Dim::Const(17),
            Dim::sym(&pos),
            Dim::sym(&pos).add(3),
            Dim::sym(&pos).add(-2),
        ] {
            assert_eq!(p.dim(&d.to_string()), Ok(d.clone()), "{d}");
        }
    }

    #[test]
    fn a_symbol_name_may_contain_a_sign() {
        // The offset is only what follows the last sign, so `a-b+1` is `a-b` plus one.
        let odd = Symbol::new("a-b", 0, 4).unwrap();
        let p = parser(std::slice::from_ref(&odd));
        assert_eq!(p.dim("a-b+1"), Ok(Dim::sym(&odd).add(1)));
        assert_eq!(p.dim("a-b"), Ok(Dim::sym(&odd)));
    }

    #[test]
    fn bad_dims_are_errors() {
        let pos = Symbol::new("pos", 1, 64).unwrap();
        let p = parser(std::slice::from_ref(&pos));
        for d in [
            "",
            "-1",
            "pos+",
            "pos+x",
            "pos++1",
            "len",
            "len+1",
            "99999999999999999999999",
            "pos+99999999999999999999",
        ] {
            assert!(p.dim(d).is_err(), "`{d}` parsed");
        }
    }
}
