//! Reads back the text form of a kernel (its `Display`, or [`Kernel::key_text`] without the
//! `kernel` header), so a kernel can be written down in a test or filetest, or replayed from a
//! `--dump-graph` of a failing run. Printing a parsed kernel gives back the text it was parsed
//! from, and parsing what a kernel printed gives that kernel.
//!
//! Two things the text leaves out come back as the scheduler makes them: a part of a sibling
//! group takes the group's arguments and symbols (a part always has them, see
//! `Kernel::rebind`), and an attention kernel without a mask gets a fill of 0.0 (the fill is
//! only read under a mask, so the text prints it only there). `key_text` has no name or op
//! lists: those come back empty.
//!
//! The parser checks what the kernel's own consumers would trip over: every argument slot,
//! expression, loop variable and symbol a line names exists, and operands come before their
//! users. It does not check dtypes or that a template's spec matches its body.

use std::collections::HashMap;
use std::sync::Arc;

use cranegrad_graph::{BinaryOp, DType, Dim, ReduceOp, Symbol, UnaryOp};
use thiserror::Error;

use crate::affine::{Affine, Cond};
use crate::kernel::{
    Access, Arg, AttentionSpec, Expr, ExprId, GemmPair, GemmSpec, Kernel, KernelBody, Loop,
    LoopKind, Rescale, RowPlan, Store,
};

/// Why a kernel text could not be read, with the 1-based line at fault.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct KernelParseError {
    /// 1-based line number (one past the last line for what is missing at the end).
    pub line: usize,
    /// What is wrong with the line.
    pub message: String,
}

type LineResult<T> = Result<T, String>;

/// Checks that `k`'s displayed text and its key text both read back (the key text without its
/// name and op lists) and print the same again: the round trip the kernel-text tests ask of
/// every kernel. `Err` says which part differs, with the text.
pub fn check_round_trip(k: &Kernel) -> Result<(), String> {
    let text = k.to_string();
    let parsed = parse_kernel_text(&text).map_err(|e| format!("{e}\n{text}"))?;
    if parsed.to_string() != text {
        return Err(format!("reprinted text differs:\n{text}\n{parsed}"));
    }
    if &parsed != k {
        return Err(format!("parsed kernel differs from\n{text}"));
    }
    let key = k.key_text();
    let keyed = parse_kernel_text(&key).map_err(|e| format!("{e}\n{key}"))?;
    if keyed.key_text() != key {
        return Err(format!("reprinted key text differs:\n{key}"));
    }
    Ok(())
}

/// Parses a kernel printed by its `Display` (or by [`Kernel::key_text`]). Blank lines are
/// skipped and leading and trailing spaces ignored; everything else must be spelled as the
/// printer spells it.
pub fn parse_kernel_text(text: &str) -> Result<Kernel, KernelParseError> {
    let mut p = KernelParser::default();
    let mut last = 0;
    for (i, raw) in text.lines().enumerate() {
        last = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        p.line(line, i + 1).map_err(|message| KernelParseError {
            line: i + 1,
            message,
        })?;
    }
    p.finish().map_err(|(line, message)| KernelParseError {
        line: line.unwrap_or(last + 1),
        message,
    })
}

/// A loop nest being read: the kernel's own, or one part's.
#[derive(Default)]
struct Nest {
    name: String,
    ops: Vec<String>,
    /// The template line and where it was.
    template: Option<(KernelBody, usize)>,
    loops: Vec<Loop>,
    exprs: Vec<Expr>,
    stores: Vec<Store>,
    /// Line of every expression and store, for errors found at the end.
    expr_lines: Vec<usize>,
    store_lines: Vec<usize>,
}

#[derive(Default)]
struct KernelParser {
    header: Option<(String, Vec<String>)>,
    /// Lines read so far (to place the header first).
    lines: usize,
    args: Vec<Arg>,
    symbols: Vec<Symbol>,
    by_name: HashMap<Arc<str>, usize>,
    own: Option<Nest>,
    parts: Vec<Nest>,
}

impl KernelParser {
    fn line(&mut self, line: &str, no: usize) -> LineResult<()> {
        self.lines += 1;
        if let Some(rest) = line.strip_prefix("kernel ") {
            if self.lines != 1 {
                return Err("the `kernel` header must be the first line".into());
            }
            self.header = Some(header(rest)?);
            return Ok(());
        }
        if let Some(rest) = line.strip_prefix("arg") {
            if self.own.is_some() || !self.parts.is_empty() || !self.symbols.is_empty() {
                return Err("arguments come before the symbols, loops and body".into());
            }
            let arg = self.arg(rest)?;
            self.args.push(arg);
            return Ok(());
        }
        if let Some(rest) = line.strip_prefix("sym") {
            if self.own.is_some() || !self.parts.is_empty() {
                return Err("symbols come before the loops and body".into());
            }
            return self.symbol(rest);
        }
        if let Some(rest) = line.strip_prefix("part ") {
            if self.own.is_some() {
                return Err("a sibling group has no loops or body of its own".into());
            }
            let part = self.part(rest)?;
            self.parts.push(part);
            return Ok(());
        }
        let syms = Syms {
            symbols: &self.symbols,
            by_name: &self.by_name,
        };
        let nest = match self.parts.last_mut() {
            Some(part) => part,
            None => self.own.get_or_insert_with(Nest::default),
        };
        nest.line(line, no, &syms)
    }

    /// `N: in f32[len]`.
    fn arg(&self, rest: &str) -> LineResult<Arg> {
        let (slot, ty) = rest
            .split_once(": ")
            .ok_or("expected `argN: in|out dtype[len]`")?;
        expect_slot("arg", slot, self.args.len())?;
        let (access, ty) = ty
            .split_once(' ')
            .ok_or("expected `in` or `out`, then `dtype[len]`")?;
        let access = match access {
            "in" => Access::Read,
            "out" => Access::Write,
            other => return Err(format!("expected `in` or `out`, got `{other}`")),
        };
        let (dtype, len) = ty
            .split_once('[')
            .ok_or_else(|| format!("expected `dtype[len]`, got `{ty}`"))?;
        let len = len
            .strip_suffix(']')
            .ok_or_else(|| format!("expected `]` at the end of `{ty}`"))?;
        Ok(Arg {
            dtype: dtype_of(dtype)?,
            len: number(len, "length")?,
            access,
        })
    }

    /// `N: name[min..=max]`.
    fn symbol(&mut self, rest: &str) -> LineResult<()> {
        let (slot, sym) = rest
            .split_once(": ")
            .ok_or("expected `symN: name[min..=max]`")?;
        expect_slot("sym", slot, self.symbols.len())?;
        let (name, bounds) = sym
            .rsplit_once('[')
            .ok_or_else(|| format!("expected `name[min..=max]`, got `{sym}`"))?;
        let (min, max) = bounds
            .strip_suffix(']')
            .and_then(|b| b.split_once("..="))
            .ok_or_else(|| format!("expected `[min..=max]`, got `[{bounds}`"))?;
        check_symbol_name(name)?;
        if self.by_name.contains_key(name) {
            return Err(format!("symbol `{name}` is declared twice"));
        }
        let (min, max) = (signed(min, "minimum")?, signed(max, "maximum")?);
        let sym = Symbol::new(name, min, max).map_err(|e| e.to_string())?;
        self.by_name.insert(sym.name.clone(), self.symbols.len());
        self.symbols.push(sym);
        Ok(())
    }

    /// `N` or `N name (ops)`.
    fn part(&self, rest: &str) -> LineResult<Nest> {
        let (slot, names) = match rest.split_once(' ') {
            Some((slot, names)) => (slot, Some(names)),
            None => (rest, None),
        };
        if number(slot, "part number")? != self.parts.len() {
            return Err(format!(
                "expected part {}, got part {slot}",
                self.parts.len()
            ));
        }
        let (name, ops) = match names {
            Some(n) => header(n)?,
            None => (String::new(), Vec::new()),
        };
        Ok(Nest {
            name,
            ops,
            ..Nest::default()
        })
    }

    fn finish(self) -> Result<Kernel, (Option<usize>, String)> {
        if self.lines == 0 {
            return Err((None, "the text has no kernel lines".into()));
        }
        let (name, ops) = self.header.unwrap_or_default();
        let syms = Syms {
            symbols: &self.symbols,
            by_name: &self.by_name,
        };
        let body = if self.parts.is_empty() {
            let own = Nest {
                name,
                ops,
                ..self.own.unwrap_or_default()
            };
            return own.into_kernel(&self.args, &syms);
        } else {
            let parts = self
                .parts
                .into_iter()
                .map(|p| p.into_kernel(&self.args, &syms))
                .collect::<Result<Vec<Kernel>, _>>()?;
            KernelBody::Siblings(parts)
        };
        Ok(Kernel {
            name,
            ops,
            args: self.args,
            symbols: self.symbols,
            loops: Vec::new(),
            exprs: Vec::new(),
            stores: Vec::new(),
            body,
        })
    }
}

/// The kernel's symbols, for dimensions (which carry bounds) and index names.
struct Syms<'a> {
    symbols: &'a [Symbol],
    by_name: &'a HashMap<Arc<str>, usize>,
}

impl Syms<'_> {
    /// A dimension as `Dim`'s `Display` prints it: `7`, `pos`, `pos+1` or `pos-2`.
    fn dim(&self, d: &str) -> LineResult<Dim> {
        if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Dim::Const(number(d, "dimension")?));
        }
        let (name, offset) = match d.find(['+', '-']) {
            Some(i) => {
                let (name, off) = d.split_at(i);
                let digits = &off[1..];
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("bad offset `{off}` in `{d}`"));
                }
                (name, signed(off, "offset")?)
            }
            None => (d, 0),
        };
        let sym = self.get(name)?;
        Ok(Dim::Sym {
            sym: sym.clone(),
            offset,
        })
    }

    fn get(&self, name: &str) -> LineResult<&Symbol> {
        self.by_name
            .get(name)
            .map(|&i| &self.symbols[i])
            .ok_or_else(|| format!("`{name}` is neither a number nor a symbol of a `sym` line"))
    }
}

impl Nest {
    fn line(&mut self, line: &str, no: usize, syms: &Syms) -> LineResult<()> {
        if let Some(rest) = line.strip_prefix("gemm: ") {
            return self.set_template(KernelBody::Gemm(gemm(rest)?), no);
        }
        if let Some(rest) = line.strip_prefix("attention: ") {
            return self.set_template(KernelBody::Attention(attention(rest)?), no);
        }
        if let Some(rest) = line.strip_prefix("rows: ") {
            return self.set_template(KernelBody::Loops(rows(rest)?), no);
        }
        if let Some(rest) = line.strip_prefix("loop ") {
            let l = self.loop_line(rest, syms)?;
            self.loops.push(l);
            return Ok(());
        }
        if let Some(rest) = line.strip_prefix("store ") {
            let st = store(rest)?;
            self.stores.push(st);
            self.store_lines.push(no);
            return Ok(());
        }
        if let Some((id, rhs)) = line.split_once(" = ")
            && let Some(id) = id.strip_prefix('e')
        {
            expect_slot("e", id, self.exprs.len())?;
            let e = expr(rhs, syms)?;
            self.exprs.push(e);
            self.expr_lines.push(no);
            return Ok(());
        }
        Err(format!(
            "expected a `kernel`, `argN`, `symN`, `part`, `gemm:`, `attention:`, `loop`, \
             `eN =` or `store` line, got `{line}`"
        ))
    }

    fn set_template(&mut self, body: KernelBody, no: usize) -> LineResult<()> {
        if let Some((_, at)) = &self.template {
            return Err(format!("a second template line (the first is line {at})"));
        }
        self.template = Some((body, no));
        Ok(())
    }

    /// `iN in 0..extent kind`.
    fn loop_line(&self, rest: &str, syms: &Syms) -> LineResult<Loop> {
        let (var, rest) = rest
            .split_once(" in 0..")
            .ok_or("expected `loop iN in 0..extent kind`")?;
        let var = var
            .strip_prefix('i')
            .ok_or_else(|| format!("expected `iN`, got `{var}`"))?;
        expect_slot("i", var, self.loops.len())?;
        let (extent, kind) = rest
            .rsplit_once(' ')
            .ok_or("expected `extent kind` after `0..`")?;
        let kind = match kind {
            "parallel" => LoopKind::Parallel,
            "sequential" => LoopKind::Sequential,
            "reduce" => LoopKind::Reduce,
            other => {
                return Err(format!(
                    "expected `parallel`, `sequential` or `reduce`, got `{other}`"
                ));
            }
        };
        Ok(Loop {
            extent: syms.dim(extent)?,
            kind,
        })
    }

    /// The finished kernel, once every reference is checked.
    fn into_kernel(self, args: &[Arg], syms: &Syms) -> Result<Kernel, (Option<usize>, String)> {
        let check = Check {
            args: args.len(),
            loops: self.loops.len(),
            exprs: self.exprs.len(),
            syms,
        };
        for (i, e) in self.exprs.iter().enumerate() {
            check
                .expr(i, e)
                .map_err(|m| (Some(self.expr_lines[i]), m))?;
        }
        for (st, &no) in self.stores.iter().zip(&self.store_lines) {
            check.store(st).map_err(|m| (Some(no), m))?;
        }
        let body = match self.template {
            Some((body, no)) => {
                check.template(&body).map_err(|m| (Some(no), m))?;
                body
            }
            None => KernelBody::Loops(RowPlan::default()),
        };
        Ok(Kernel {
            name: self.name,
            ops: self.ops,
            args: args.to_vec(),
            symbols: syms.symbols.to_vec(),
            loops: self.loops,
            exprs: self.exprs,
            stores: self.stores,
            body,
        })
    }
}

/// What a body's references must stay below.
struct Check<'a> {
    args: usize,
    loops: usize,
    exprs: usize,
    syms: &'a Syms<'a>,
}

impl Check<'_> {
    fn arg(&self, a: usize) -> LineResult<()> {
        if a < self.args {
            Ok(())
        } else {
            Err(format!(
                "arg{a} is not an argument (there are {})",
                self.args
            ))
        }
    }

    fn var(&self, v: usize) -> LineResult<()> {
        if v < self.loops {
            Ok(())
        } else {
            Err(format!("i{v} is not a loop (there are {})", self.loops))
        }
    }

    /// An expression of the body (`before`: operands must come earlier).
    fn operand(&self, e: ExprId, before: usize) -> LineResult<()> {
        if e < before {
            Ok(())
        } else if before == self.exprs {
            Err(format!(
                "e{e} is not an expression (there are {})",
                self.exprs
            ))
        } else {
            Err(format!("e{e} is not defined before e{before}"))
        }
    }

    fn affine(&self, a: &Affine) -> LineResult<()> {
        for &(v, _) in &a.terms {
            self.var(v)?;
        }
        for (s, _) in &a.syms {
            self.syms.get(s)?;
        }
        Ok(())
    }

    fn conds(&self, conds: &[Cond]) -> LineResult<()> {
        conds.iter().try_for_each(|c| self.affine(&c.expr))
    }

    fn expr(&self, i: usize, e: &Expr) -> LineResult<()> {
        match e {
            Expr::Load {
                arg, index, conds, ..
            } => {
                self.arg(*arg)?;
                self.affine(index)?;
                self.conds(conds)
            }
            Expr::Gather {
                arg, row, index, ..
            } => {
                self.arg(*arg)?;
                self.operand(*row, i)?;
                self.affine(index)
            }
            Expr::Index(a) => self.affine(a),
            Expr::InBounds(c) => self.conds(c),
            Expr::Reduce { x, var, .. } => {
                self.operand(*x, i)?;
                self.var(*var)
            }
            Expr::Exp2NonPositive {
                x,
                scaled: Some((y, _)),
            } => {
                self.operand(*x, i)?;
                self.operand(*y, i)
            }
            Expr::Const { .. }
            | Expr::Unary { .. }
            | Expr::Binary { .. }
            | Expr::Where { .. }
            | Expr::MulAdd { .. }
            | Expr::Exp2NonPositive { .. } => {
                e.operands().iter().try_for_each(|&o| self.operand(o, i))
            }
        }
    }

    fn store(&self, st: &Store) -> LineResult<()> {
        self.arg(st.arg)?;
        self.affine(&st.index)?;
        self.operand(st.value, self.exprs)
    }

    fn template(&self, body: &KernelBody) -> LineResult<()> {
        let e = |x: ExprId| self.operand(x, self.exprs);
        match body {
            KernelBody::Gemm(g) => {
                for x in [g.a, g.b, g.product, g.reduce] {
                    e(x)?;
                }
                g.b_scale.map_or(Ok(()), e)?;
                g.row_reduce.map_or(Ok(()), e)?;
                self.var(g.n_loop)?;
                self.var(g.k_loop)?;
                if let Some(p) = g.pair {
                    e(p.b)?;
                    e(p.reduce)?;
                    p.b_scale.map_or(Ok(()), e)?;
                    self.var(p.k_loop)?;
                }
                Ok(())
            }
            KernelBody::Attention(a) => {
                for x in [a.q, a.k, a.v] {
                    e(x)?;
                }
                a.mask.map_or(Ok(()), e)?;
                self.var(a.key_loop)?;
                self.var(a.dot_loop)
            }
            KernelBody::Loops(plan) => {
                if let Some(c) = plan.column {
                    self.var(c)?;
                }
                if let Some(r) = &plan.rescale {
                    for x in [r.reduce, r.factor, r.scale] {
                        e(x)?;
                    }
                    self.arg(r.arg)?;
                    self.affine(&r.index_in_loop)?;
                }
                plan.nan_blind_max.map_or(Ok(()), e)?;
                if let Some((first, with)) = plan.carry {
                    e(first)?;
                    e(with)?;
                }
                Ok(())
            }
            KernelBody::Siblings(_) => Ok(()),
        }
    }
}

/// `name (op op ..)`: the kernel header's or a part line's tail.
fn header(rest: &str) -> LineResult<(String, Vec<String>)> {
    // Op names have no parentheses, so the last ` (` starts the op list.
    let (name, ops) = rest.rsplit_once(" (").ok_or("expected `name (ops)`")?;
    let ops = ops
        .strip_suffix(')')
        .ok_or("expected the op list to end with `)`")?;
    let ops = ops.split(' ').filter(|o| !o.is_empty()).map(String::from);
    Ok((name.to_string(), ops.collect()))
}

/// Symbol names the text can spell back unambiguously: an identifier that is not a loop
/// variable's `i` + digits.
fn check_symbol_name(name: &str) -> LineResult<()> {
    let mut chars = name.chars();
    let ident = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    let loop_var = loop_var(name).is_some();
    if ident && !loop_var {
        Ok(())
    } else {
        Err(format!(
            "`{name}` cannot be a symbol name in kernel text (letters, digits, `_` and `.`, \
             starting with a letter; not `i` followed by digits)"
        ))
    }
}

/// `v` of `iv`.
fn loop_var(s: &str) -> Option<usize> {
    let d = s.strip_prefix('i')?;
    if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    d.parse().ok()
}

/// Checks that `slot` (the digits after `prefix`) is `want`, the next number in sequence.
fn expect_slot(prefix: &str, slot: &str, want: usize) -> LineResult<()> {
    let n = number(slot, "number")?;
    if n == want {
        Ok(())
    } else {
        Err(format!(
            "expected {prefix}{want} (numbered in order), got {prefix}{slot}"
        ))
    }
}

/// An unsigned decimal number.
fn number(s: &str, what: &str) -> LineResult<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a {what}, got `{s}`"));
    }
    s.parse().map_err(|_| format!("{what} `{s}` is too large"))
}

/// A signed decimal number.
fn signed(s: &str, what: &str) -> LineResult<i64> {
    s.parse()
        .map_err(|_| format!("expected a {what} (an integer), got `{s}`"))
}

fn dtype_of(s: &str) -> LineResult<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "i32" => Ok(DType::I32),
        "bool" => Ok(DType::Bool),
        other => Err(format!("unknown dtype `{other}`")),
    }
}

/// `eN`.
fn expr_ref(s: &str) -> LineResult<ExprId> {
    let n = s
        .strip_prefix('e')
        .ok_or_else(|| format!("expected `eN`, got `{s}`"))?;
    number(n, "expression number")
}

/// `iN`.
fn var_ref(s: &str) -> LineResult<usize> {
    let n = s
        .strip_prefix('i')
        .ok_or_else(|| format!("expected `iN`, got `{s}`"))?;
    number(n, "loop number")
}

/// `argN`.
fn arg_ref(s: &str) -> LineResult<usize> {
    let n = s
        .strip_prefix("arg")
        .ok_or_else(|| format!("expected `argN`, got `{s}`"))?;
    number(n, "argument number")
}

/// A constant as `value_text` prints it (`1.0`, `-inf`, `NaN`, `NaN:0x..`): its f64 bits.
fn value_bits(s: &str) -> LineResult<u64> {
    if let Some(hex) = s.strip_prefix("NaN:0x") {
        let bits = u64::from_str_radix(hex, 16)
            .map_err(|_| format!("expected the bits of a NaN in hex, got `{s}`"))?;
        if !f64::from_bits(bits).is_nan() {
            return Err(format!("`{s}` are not the bits of a NaN"));
        }
        return Ok(bits);
    }
    s.parse::<f64>()
        .map(f64::to_bits)
        .map_err(|_| format!("`{s}` is not a number"))
}

/// An index as `Affine`'s `Display` prints it: terms `c*iN`, `c*sym` (or with coefficient 1
/// bare), then the constant, joined by ` + `, with `+ -c` printed as `- c`.
fn affine(s: &str) -> LineResult<Affine> {
    let mut a = Affine::default();
    let mut rest = s;
    let mut negative = false;
    let mut constant = false;
    loop {
        let next = [" + ", " - "]
            .iter()
            .filter_map(|sep| rest.find(sep).map(|i| (i, *sep)))
            .min();
        let (term, following) = match next {
            Some((i, sep)) => (&rest[..i], Some((sep == " - ", &rest[i + 3..]))),
            None => (rest, None),
        };
        if constant {
            return Err(format!("in `{s}`: the constant must be the last term"));
        }
        let apply = |c: i128| -> LineResult<i64> {
            let c = if negative { -c } else { c };
            i64::try_from(c).map_err(|_| format!("coefficient `{term}` is out of range"))
        };
        if let Some((coeff, atom)) = term.split_once('*') {
            let c: i128 = coeff
                .parse()
                .map_err(|_| format!("expected a coefficient in `{term}`"))?;
            push_term(&mut a, atom, apply(c)?)?;
        } else if let Ok(c) = term.parse::<i128>() {
            a.constant = apply(c)?;
            constant = true;
        } else {
            push_term(&mut a, term, apply(1)?)?;
        }
        match following {
            Some((neg, tail)) => {
                negative = neg;
                rest = tail;
            }
            None => return Ok(a),
        }
    }
}

/// Adds `c * atom` (a loop variable or a symbol) to `a`.
fn push_term(a: &mut Affine, atom: &str, c: i64) -> LineResult<()> {
    if let Some(v) = loop_var(atom) {
        a.terms.push((v, c));
    } else if atom.starts_with('i') && atom[1..].bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("loop variable `{atom}` is out of range"));
    } else {
        check_symbol_name(atom).map_err(|_| format!("expected `iN` or a symbol, got `{atom}`"))?;
        a.syms.push((Arc::from(atom), c));
    }
    Ok(())
}

/// ` if 0 <= a < n && ..` (or nothing).
fn conds(s: &str, syms: &Syms) -> LineResult<Vec<Cond>> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let list = s
        .strip_prefix(" if ")
        .ok_or_else(|| format!("expected ` if` and conditions, got `{s}`"))?;
    list.split(" && ")
        .map(|c| {
            let (expr, len) = c
                .strip_prefix("0 <= ")
                .and_then(|c| c.rsplit_once(" < "))
                .ok_or_else(|| format!("expected `0 <= index < len`, got `{c}`"))?;
            Ok(Cond {
                expr: affine(expr)?,
                len: syms.dim(len)?,
            })
        })
        .collect()
}

/// `op.dtype` into its parts.
fn typed(op: &str) -> LineResult<(&str, DType)> {
    let (name, dtype) = op
        .rsplit_once('.')
        .ok_or_else(|| format!("expected `op.dtype`, got `{op}`"))?;
    Ok((name, dtype_of(dtype)?))
}

/// `eA, eB, ..`: exactly `n` operands.
fn operands(s: &str, n: usize) -> LineResult<Vec<ExprId>> {
    let ops: Vec<&str> = s.split(", ").collect();
    if ops.len() != n {
        return Err(format!("expected {n} operand(s), got `{s}`"));
    }
    ops.into_iter().map(expr_ref).collect()
}

/// The right-hand side of `eN = ..`.
fn expr(rhs: &str, syms: &Syms) -> LineResult<Expr> {
    let (op, rest) = rhs.split_once(' ').unwrap_or((rhs, ""));
    if op == "index" {
        return Ok(Expr::Index(affine(rest)?));
    }
    if op == "inbounds" {
        let rest = &rhs[op.len()..];
        return Ok(Expr::InBounds(conds(rest, syms)?));
    }
    if let Some(red) = op.strip_prefix("reduce.") {
        let (name, dtype) = typed(red)?;
        let op = match name {
            "sum" => ReduceOp::Sum,
            "max" => ReduceOp::Max,
            other => return Err(format!("unknown reduction `{other}`")),
        };
        let (x, var) = rest.split_once(" over ").ok_or("expected `eX over iN`")?;
        return Ok(Expr::Reduce {
            op,
            x: expr_ref(x)?,
            dtype,
            var: var_ref(var)?,
        });
    }
    let (name, dtype) = typed(op)?;
    let e = match name {
        "load" => {
            let (arg, rest) = rest.split_once('[').ok_or("expected `argN[index]`")?;
            let (index, tail) = rest.split_once(']').ok_or("expected `]` after the index")?;
            Expr::Load {
                arg: arg_ref(arg)?,
                index: affine(index)?,
                conds: conds(tail, syms)?,
                dtype,
            }
        }
        "gather" => {
            let (arg, rest) = rest
                .split_once("[row(")
                .ok_or("expected `argN[row(eR, rows) * stride + index]`")?;
            let (row, rest) = rest.split_once(", ").ok_or("expected `, rows`")?;
            let (rows, rest) = rest.split_once(") * ").ok_or("expected `) * stride`")?;
            let (stride, index) = rest.split_once(" + ").ok_or("expected ` + index`")?;
            let (index, tail) = index
                .rsplit_once(']')
                .ok_or("expected `]` after the index")?;
            let packed = match tail.trim() {
                "" => None,
                t => {
                    let name = t
                        .strip_prefix("packed ")
                        .ok_or("expected `packed FORMAT` after the index")?;
                    Some(compact_format(name).ok_or("unknown compact format")?)
                }
            };
            Expr::Gather {
                arg: arg_ref(arg)?,
                row: expr_ref(row)?,
                rows: number(rows, "row count")?,
                row_stride: signed(stride, "row stride")?,
                index: affine(index)?,
                dtype,
                packed,
            }
        }
        "const" => Expr::Const {
            bits: value_bits(rest)?,
            dtype,
        },
        "muladd" => {
            let (first, second) = rest
                .split_once(", ")
                .ok_or("expected `*eP, eA` or `eA, *eP`")?;
            let (product, addend, product_first) =
                match (first.strip_prefix('*'), second.strip_prefix('*')) {
                    (Some(p), None) => (p, second, true),
                    (None, Some(p)) => (p, first, false),
                    _ => return Err("expected one operand marked `*` (the product)".into()),
                };
            Expr::MulAdd {
                product: expr_ref(product)?,
                addend: expr_ref(addend)?,
                product_first,
                dtype,
            }
        }
        "exp2.nonpositive" if dtype == DType::F32 => {
            let (x, scaled) = match rest.split_once(" = ") {
                Some((x, product)) => {
                    let (y, k) = product
                        .split_once(" * ")
                        .ok_or("expected `= eY * k` after the argument")?;
                    let k = f64::from_bits(value_bits(k)?) as f32;
                    (x, Some((expr_ref(y)?, k.to_bits())))
                }
                None => (rest, None),
            };
            Expr::Exp2NonPositive {
                x: expr_ref(x)?,
                scaled,
            }
        }
        "where" => {
            let o = operands(rest, 3)?;
            Expr::Where {
                c: o[0],
                a: o[1],
                b: o[2],
                dtype,
            }
        }
        _ => {
            if let Some(op) = unary_op(name) {
                Expr::Unary {
                    op,
                    x: expr_ref(rest)?,
                    dtype,
                }
            } else if let Some(op) = binary_op(name) {
                let o = operands(rest, 2)?;
                Expr::Binary {
                    op,
                    a: o[0],
                    b: o[1],
                    dtype,
                }
            } else {
                return Err(format!("unknown expression `{name}`"));
            }
        }
    };
    Ok(e)
}

fn unary_op(name: &str) -> Option<UnaryOp> {
    Some(match name {
        "neg" => UnaryOp::Neg,
        "exp2" => UnaryOp::Exp2,
        "log2" => UnaryOp::Log2,
        "sqrt" => UnaryOp::Sqrt,
        "recip" => UnaryOp::Recip,
        "sin" => UnaryOp::Sin,
        "cast" => UnaryOp::Cast,
        _ => return None,
    })
}

fn binary_op(name: &str) -> Option<BinaryOp> {
    Some(match name {
        "add" => BinaryOp::Add,
        "mul" => BinaryOp::Mul,
        "max" => BinaryOp::Max,
        "cmplt" => BinaryOp::CmpLt,
        _ => return None,
    })
}

/// `argN[index] = eV`.
fn store(rest: &str) -> LineResult<Store> {
    let (arg, rest) = rest
        .split_once('[')
        .ok_or("expected `store argN[index] = eV`")?;
    let (index, value) = rest
        .split_once("] = ")
        .ok_or("expected `] = eV` after the index")?;
    Ok(Store {
        arg: arg_ref(arg)?,
        index: affine(index)?,
        value: expr_ref(value)?,
    })
}

/// Words of a template line, read in order.
struct Words<'a>(std::iter::Peekable<std::str::SplitWhitespace<'a>>);

impl<'a> Words<'a> {
    fn new(s: &'a str) -> Self {
        Words(s.split_whitespace().peekable())
    }

    fn next(&mut self, what: &str) -> LineResult<&'a str> {
        self.0
            .next()
            .ok_or_else(|| format!("expected {what} at the end of the line"))
    }

    fn keyword(&mut self, k: &str) -> LineResult<()> {
        match self.0.next() {
            Some(w) if w == k => Ok(()),
            Some(w) => Err(format!("expected `{k}`, got `{w}`")),
            None => Err(format!("expected `{k}` at the end of the line")),
        }
    }

    /// `k eN`.
    fn expr(&mut self, k: &str) -> LineResult<ExprId> {
        self.keyword(k)?;
        expr_ref(self.next("`eN`")?)
    }

    /// `k iN`.
    fn var(&mut self, k: &str) -> LineResult<usize> {
        self.keyword(k)?;
        var_ref(self.next("`iN`")?)
    }

    /// `k N`.
    fn count(&mut self, k: &str) -> LineResult<usize> {
        self.keyword(k)?;
        number(self.next("a number")?, k)
    }

    /// True (and consumed) when the next word is `k`.
    fn flag(&mut self, k: &str) -> bool {
        self.0.next_if(|w| *w == k).is_some()
    }

    fn end(&mut self) -> LineResult<()> {
        match self.0.next() {
            None => Ok(()),
            Some(w) => Err(format!("unexpected `{w}`")),
        }
    }
}

/// The `gemm:` line's spec.
fn gemm(s: &str) -> LineResult<GemmSpec> {
    // The pair's parenthesised clause is read on its own.
    let (main, pair) = match s.split_once(" pair(") {
        Some((before, rest)) => {
            let (inner, after) = rest.split_once(')').ok_or("expected `)` closing `pair(`")?;
            (format!("{before}{after}"), Some(inner))
        }
        None => (s.to_string(), None),
    };
    let mut w = Words::new(&main);
    let mut g = GemmSpec {
        a: w.expr("a")?,
        b: w.expr("b")?,
        product: w.expr("product")?,
        reduce: w.expr("reduce")?,
        n_loop: w.var("n")?,
        k_loop: w.var("k")?,
        rows: w.count("rows")?,
        cols: w.count("cols")?,
        b_transposed: false,
        b_scale: None,
        row_reduce: None,
        pair: None,
        packed: false,
        compact: None,
        int8_dot: false,
    };
    g.b_transposed = w.flag("transposed");
    if w.0.peek() == Some(&"scale") {
        g.b_scale = Some(w.expr("scale")?);
    }
    if w.0.peek() == Some(&"row_reduce") {
        g.row_reduce = Some(w.expr("row_reduce")?);
    }
    g.packed = w.flag("packed");
    if g.packed {
        g.compact = cranegrad_graph::CompactFormat::ALL
            .into_iter()
            .find(|f| w.flag(f.name()));
        g.int8_dot = w.flag("int8dot");
    }
    w.end()?;
    if let Some(inner) = pair {
        let mut w = Words::new(inner);
        let mut p = GemmPair {
            b: w.expr("b")?,
            reduce: w.expr("reduce")?,
            k_loop: w.var("k")?,
            b_transposed: false,
            b_scale: None,
        };
        p.b_transposed = w.flag("transposed");
        if w.0.peek() == Some(&"scale") {
            p.b_scale = Some(w.expr("scale")?);
        }
        w.end().map_err(|e| format!("in `pair(..)`: {e}"))?;
        g.pair = Some(p);
    }
    Ok(g)
}

/// The `rows:` line's plan.
fn rows(s: &str) -> LineResult<RowPlan> {
    // The rescale's parenthesised clause (its store index has spaces) is read on its own.
    let (main, rescale) = match s.split_once(" rescale(") {
        Some((before, rest)) => {
            let (inner, after) = rest
                .split_once("])")
                .ok_or("expected `])` closing `rescale(`")?;
            (format!("{before}{after}"), Some(inner))
        }
        None => (format!(" {s}"), None),
    };
    let mut w = Words::new(&main);
    let mut plan = RowPlan {
        row: w.flag("row"),
        ..RowPlan::default()
    };
    if w.0.peek() == Some(&"column") {
        plan.column = Some(w.var("column")?);
    }
    if let Some(inner) = rescale {
        let (head, index) = inner
            .split_once('[')
            .ok_or("expected `store argN[index]` in `rescale(..)`")?;
        let mut r = Words::new(head);
        let (reduce, factor, scale) = (r.expr("sum")?, r.expr("factor")?, r.expr("scale")?);
        r.keyword("store")?;
        let arg = arg_ref(r.next("`argN`")?)?;
        r.end().map_err(|e| format!("in `rescale(..)`: {e}"))?;
        plan.rescale = Some(Rescale {
            reduce,
            factor,
            arg,
            index_in_loop: affine(index)?,
            scale,
        });
    }
    if w.0.peek() == Some(&"nan_blind_max") {
        plan.nan_blind_max = Some(w.expr("nan_blind_max")?);
    }
    if w.0.peek() == Some(&"carry") {
        let first = w.expr("carry")?;
        plan.carry = Some((first, w.expr("with")?));
    }
    w.end()?;
    Ok(plan)
}

/// The `attention:` line's spec.
fn attention(s: &str) -> LineResult<AttentionSpec> {
    let mut w = Words::new(s);
    let (q, k, v) = (w.expr("q")?, w.expr("k")?, w.expr("v")?);
    w.keyword("mask")?;
    let (mask, fill_bits) = if w.flag("none") {
        (None, 0.0f64.to_bits())
    } else {
        let m = expr_ref(w.next("`eN`")?)?;
        w.keyword("?")?;
        (Some(m), value_bits(w.next("the fill value")?)?)
    };
    w.keyword("scale")?;
    let scale_bits = value_bits(w.next("the scale")?)?;
    w.keyword("exp2")?;
    w.keyword("scale")?;
    let exp_scale_bits = value_bits(w.next("the exp2 scale")?)?;
    let spec = AttentionSpec {
        q,
        k,
        v,
        mask,
        fill_bits,
        scale_bits,
        exp_scale_bits,
        key_loop: w.var("keys")?,
        dot_loop: w.var("dot")?,
    };
    w.end()?;
    Ok(spec)
}

/// The compact format named `name`.
pub(crate) fn compact_format(name: &str) -> Option<cranegrad_graph::CompactFormat> {
    cranegrad_graph::CompactFormat::ALL
        .into_iter()
        .find(|f| f.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syms() -> Vec<Symbol> {
        vec![Symbol::new("pos", 0, 63).unwrap()]
    }

    #[test]
    fn indices_read_back_as_printed() {
        let pos: Arc<str> = Arc::from("pos");
        for a in [
            Affine::default(),
            Affine::constant(-5),
            Affine::constant(i64::MIN),
            Affine {
                terms: vec![(0, 8), (1, 1), (3, -1)],
                syms: vec![(pos.clone(), -4)],
                constant: -7,
            },
            Affine {
                terms: vec![(2, i64::MIN), (4, i64::MAX)],
                syms: vec![(pos.clone(), 1)],
                constant: 0,
            },
            Affine {
                terms: vec![],
                syms: vec![(pos, 2)],
                constant: 3,
            },
        ] {
            assert_eq!(affine(&a.to_string()), Ok(a.clone()), "{a}");
        }
    }

    #[test]
    fn dims_read_back_as_printed() {
        let s = syms();
        let by_name = s
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let syms = Syms {
            symbols: &s,
            by_name: &by_name,
        };
        for d in [
            Dim::Const(0),
            Dim::Const(7),
            Dim::sym(&s[0]),
            Dim::sym(&s[0]).add(1),
            Dim::sym(&s[0]).add(-2),
        ] {
            assert_eq!(syms.dim(&d.to_string()), Ok(d.clone()), "{d}");
        }
        for bad in ["", "-1", "pos+", "pos+x", "len", "99999999999999999999999"] {
            assert!(syms.dim(bad).is_err(), "`{bad}` parsed");
        }
    }

    #[test]
    fn constants_keep_their_bits() {
        for v in [
            0.0,
            -0.0,
            1.5,
            -3.0,
            1e15,
            1e-300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -f64::NAN,
            f64::from_bits(0x7ff0_0000_0000_0001),
            f32::MIN as f64,
        ] {
            let text = crate::kernel::value_text(v.to_bits());
            assert_eq!(value_bits(&text), Ok(v.to_bits()), "{text}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        let text = "kernel k (add)\n  arg0: in f32[4]\n  arg1: out f32[4]\n  loop i0 in 0..4 parallel\n  e0 = load.f32 arg0[i0]\n  e1 = add.f32 e0, e2\n";
        let err = parse_kernel_text(text).unwrap_err();
        assert_eq!(err.line, 6, "{err}");
        assert!(err.message.contains("e2"), "{err}");
        let err = parse_kernel_text("  arg0: in f32[4]\n  arg2: in f32[4]\n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        let err = parse_kernel_text("  arg0: in f32[4]\n  store arg1[0] = e0\n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        let err = parse_kernel_text("  loop i0 in 0..pos parallel\n").unwrap_err();
        assert!(err.message.contains("pos"), "{err}");
    }
}
