//! Filetests, Cranelift-style: a small text file names one step (a graph pass, a kernel pass
//! or the whole pipeline), holds its input as text and states, as `check` lines, what the
//! step's printed output must contain. A pass's effect is then reviewed as a text diff, and a
//! new case is a new file rather than Rust code. `lower/filetests/README.md` describes the
//! format; `lower/tests/filetests.rs` runs every file.

use std::panic::{AssertUnwindSafe, catch_unwind};

use cranegrad_graph::{GraphData, HostData, NodeId, Op, Symbol, graph_text, lcg_values};

use crate::fusion::Fusion;
use crate::kernel_parse::parse_kernel_text;
use crate::kernel_passes::{
    bound_exp2, carry_first_reduction, contract_fma, mark_sequential_loops, nan_blind_max,
    plan_rows, reduced_axis_innermost, select_gemm, select_integer_dot, select_packed_gather,
    simplify_loops, store_and_rescale,
};
use crate::{FUSION_STEPS, GRAPH_PASSES, LowerOptions, SCHEDULE_PASSES, lower};

/// Runs `step` (its name, then `key=value` arguments) on `input` and returns the printed
/// result: `; changed: N` (the pass's count) and the graph text for a graph pass, the kernel
/// text for a kernel pass, the schedule's text for `lower`. Lines of `input` starting with
/// `;` are comments, except the `; symbol:` and `; data:` headers (see the README).
pub fn run_step(step: &str, input: &str) -> Result<String, String> {
    let mut words = step.split_whitespace();
    let name = words.next().ok_or("the step is empty")?;
    let args: Vec<(&str, &str)> = words
        .map(|w| {
            w.split_once('=')
                .ok_or_else(|| format!("step argument `{w}` is not `key=value`"))
        })
        .collect::<Result<_, _>>()?;
    let headers = Headers::read(input)?;
    let arg = |key: &str| args.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let known = |keys: &[&str]| -> Result<(), String> {
        match args.iter().find(|(k, _)| !keys.contains(k)) {
            Some((k, _)) => Err(format!("step `{name}` takes no argument `{k}`")),
            None => Ok(()),
        }
    };
    let graph_pass = GRAPH_PASSES.iter().find(|p| p.name == name).map(|p| p.run);
    if let Some(pass) = graph_pass {
        known(&[])?;
        let (mut g, mut outs) = headers.graph()?;
        let changed = guarded(|| pass(&mut g, &mut outs))?;
        // The count shows a pass that did nothing visible (dead nodes are never printed).
        return Ok(format!("; changed: {changed}\n{}", graph_text(&g, &outs)));
    }
    // A fusion step runs after the steps before it (each reads their decisions) and prints
    // the partition.
    if let Some(i) = FUSION_STEPS.iter().position(|p| p.name == name) {
        known(&[])?;
        let (g, outs) = headers.graph()?;
        let order = g.topo_from(&outs);
        let mut f = Fusion::default();
        let opts = LowerOptions::default();
        for step in FUSION_STEPS[..=i]
            .iter()
            .filter(|s| s.when.holds(opts) || s.name == name)
        {
            guarded(|| (step.run)(&g, &order, &outs, &mut f))?;
        }
        f.check(&g, &outs)
            .map_err(|e| format!("the partition after {name}: {e}"))?;
        return Ok(f.text(&g, &outs));
    }
    // A schedule pass's effect shows in the whole pipeline's schedule.
    let schedule_pass = SCHEDULE_PASSES.iter().any(|p| p.name == name);
    if name == "lower" || schedule_pass {
        known(&["fuse", "attention", "integer_dot"])?;
        let on = |key: &str| match arg(key) {
            None | Some("on") => Ok(true),
            Some("off") => Ok(false),
            Some(v) => Err(format!("`{key}={v}`: expected `on` or `off`")),
        };
        let opts = LowerOptions {
            fuse: on("fuse")?,
            attention: on("attention")?,
            integer_dot: on("integer_dot")?,
        };
        let (g, outs) = headers.graph()?;
        let lowered = guarded(|| lower(&g, &outs, opts))?.map_err(|e| e.to_string())?;
        return Ok(lowered.schedule.text());
    }
    let kernel = || parse_kernel_text(&headers.body).map_err(|e| e.to_string());
    let out = match name {
        "simplify_loops" => {
            known(&[])?;
            let k = kernel()?;
            guarded(|| simplify_loops::simplify_loops(k))?
        }
        "mark_sequential_loops"
        | "plan_rows"
        | "store_and_rescale"
        | "nan_blind_max"
        | "carry_first_reduction"
        | "bound_exp2"
        | "select_integer_dot"
        | "contract_fma" => {
            known(&[])?;
            let pass: fn(&mut crate::Kernel) -> bool = match name {
                "mark_sequential_loops" => mark_sequential_loops::mark_sequential_loops,
                "plan_rows" => plan_rows::plan_rows,
                "store_and_rescale" => store_and_rescale::store_and_rescale,
                "nan_blind_max" => nan_blind_max::nan_blind_max,
                "carry_first_reduction" => carry_first_reduction::carry_first_reduction,
                "bound_exp2" => bound_exp2::bound_exp2,
                "select_integer_dot" => select_integer_dot::select_integer_dot,
                _ => contract_fma::contract_fma,
            };
            let mut k = kernel()?;
            guarded(|| {
                pass(&mut k);
                k
            })?
        }
        "reduced_axis_innermost" => {
            known(&["axis"])?;
            let axis =
                number_arg(arg("axis"), "axis")?.ok_or("reduced_axis_innermost needs `axis=N`")?;
            let mut k = kernel()?;
            guarded(|| {
                reduced_axis_innermost::reduced_axis_innermost(&mut k, axis);
                k
            })?
        }
        "select_gemm" => {
            known(&["weights"])?;
            let weights = match arg("weights") {
                None | Some("") => Vec::new(),
                Some(list) => list
                    .split(',')
                    .map(|s| {
                        s.parse::<usize>()
                            .map_err(|_| format!("`weights={list}`: `{s}` is not a slot"))
                    })
                    .collect::<Result<Vec<usize>, String>>()?,
            };
            let mut k = kernel()?;
            guarded(|| {
                select_gemm::select_gemm(&mut k, |slot| weights.contains(&slot), |_| None);
                k
            })?
        }
        "select_packed_gather" => {
            known(&["compact"])?;
            let compact = match arg("compact") {
                None | Some("") => Vec::new(),
                Some(list) => list
                    .split(',')
                    .map(|s| {
                        let bad = || format!("`compact={list}`: `{s}` is not `SLOT:FORMAT`");
                        let (slot, name) = s.split_once(':').ok_or_else(bad)?;
                        let slot = slot.parse::<usize>().map_err(|_| bad())?;
                        let format = crate::kernel_parse::compact_format(name).ok_or_else(bad)?;
                        Ok((slot, format))
                    })
                    .collect::<Result<Vec<_>, String>>()?,
            };
            let mut k = kernel()?;
            guarded(|| {
                select_packed_gather::select_packed_gather(&mut k, |slot| {
                    compact.iter().find(|c| c.0 == slot).map(|c| c.1)
                });
                k
            })?
        }
        other => return Err(format!("unknown step `{other}`")),
    };
    Ok(out.to_string())
}

/// `Ok(f())`, or the panic's message as an error: a pass given hand-written input must fail
/// the one test, not the harness.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("the step panicked: {msg}")
    })
}

fn number_arg(v: Option<&str>, key: &str) -> Result<Option<usize>, String> {
    v.map(|v| {
        v.parse()
            .map_err(|_| format!("`{key}={v}` is not a number"))
    })
    .transpose()
}

/// An input with its comment lines blanked (so parse errors keep the file's line numbers)
/// and the headers they held.
struct Headers {
    body: String,
    symbols: Vec<Symbol>,
    /// Inputs given host data (weights), which some passes require.
    data: Vec<String>,
}

impl Headers {
    fn read(input: &str) -> Result<Headers, String> {
        let mut h = Headers {
            body: String::new(),
            symbols: Vec::new(),
            data: Vec::new(),
        };
        for (i, line) in input.lines().enumerate() {
            let t = line.trim();
            if !t.starts_with(';') {
                h.body.push_str(line);
                h.body.push('\n');
                continue;
            }
            h.body.push('\n');
            let at = |m: String| format!("line {}: {m}", i + 1);
            if let Some(s) = t.strip_prefix("; symbol:") {
                h.symbols.push(symbol(s.trim()).map_err(at)?);
            } else if let Some(names) = t.strip_prefix("; data:") {
                h.data.extend(
                    names
                        .split([',', ' '])
                        .filter(|n| !n.is_empty())
                        .map(String::from),
                );
            }
        }
        Ok(h)
    }

    /// The graph of the body, its `; data:` inputs given deterministic values.
    fn graph(&self) -> Result<(GraphData, Vec<NodeId>), String> {
        let (mut g, outs) = cranegrad_graph::parse_graph_text(&self.body, &self.symbols)
            .map_err(|e| e.to_string())?;
        for name in &self.data {
            let node = g
                .topo_from(&outs)
                .into_iter()
                .find(|&n| matches!(&g.node(n).op, Op::Input { name: m } if m == name))
                .ok_or_else(|| format!("`; data: {name}`: the graph reads no input `{name}`"))?;
            let n = g.node(node);
            let len = n
                .shape
                .static_numel()
                .ok_or_else(|| format!("`; data: {name}`: a weight has a static shape"))?;
            let data: HostData = match n.dtype {
                cranegrad_graph::DType::F32 => lcg_values(len, 1, 1.0).into(),
                _ => vec![0i32; len].into(),
            };
            g.g[node].data = Some(data);
        }
        Ok((g, outs))
    }
}

/// `name[min..=max]`, as a kernel's `sym` line spells a symbol.
fn symbol(s: &str) -> Result<Symbol, String> {
    let bad = || format!("expected `; symbol: name[min..=max]`, got `{s}`");
    let (name, bounds) = s.split_once('[').ok_or_else(bad)?;
    let (min, max) = bounds
        .strip_suffix(']')
        .and_then(|b| b.split_once("..="))
        .ok_or_else(bad)?;
    let min = min.parse().map_err(|_| bad())?;
    let max = max.parse().map_err(|_| bad())?;
    Symbol::new(name, min, max).map_err(|e| e.to_string())
}

/// What a line of output must (not) hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Directive {
    /// `; check: S`: S appears after the previous match.
    Check(String),
    /// `; nextln: S`: S appears on the line right after the previous match's.
    NextLn(String),
    /// `; not: S`: S does not appear between the previous match and the next one (or the end).
    Not(String),
}

impl std::fmt::Display for Directive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Directive::Check(s) => write!(f, "; check: {s}"),
            Directive::NextLn(s) => write!(f, "; nextln: {s}"),
            Directive::Not(s) => write!(f, "; not: {s}"),
        }
    }
}

/// A parsed filetest: its step, its directives (with their 1-based lines) and the whole text
/// as the step's input.
#[derive(Clone, Debug)]
pub struct FileTest {
    /// The `; step:` line's value.
    pub step: String,
    /// Its 1-based line.
    pub step_line: usize,
    /// Directives in file order, with their lines.
    pub directives: Vec<(usize, Directive)>,
}

/// Why a filetest failed: the directive (or step) at fault and the output it was checked
/// against, for the harness to print.
#[derive(Clone, Debug)]
pub struct Failure {
    /// 1-based line of the failing directive (0 when the file as a whole is wrong).
    pub line: usize,
    /// The directive as written, or the step.
    pub directive: String,
    /// What went wrong.
    pub message: String,
    /// The step's full output, when it ran.
    pub output: Option<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: `{}`: {}",
            self.line, self.directive, self.message
        )?;
        if let Some(out) = &self.output {
            write!(f, "\n--- output ---\n{out}--- end of output ---")?;
        }
        Ok(())
    }
}

/// Reads the `; step:` and check directives of a filetest.
pub fn parse_filetest(text: &str) -> Result<FileTest, Failure> {
    let fail = |line: usize, directive: &str, message: &str| Failure {
        line,
        directive: directive.to_string(),
        message: message.to_string(),
        output: None,
    };
    let mut step = None;
    let mut directives = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        let Some(rest) = t.strip_prefix(';') else {
            continue;
        };
        let Some((key, value)) = rest.trim_start().split_once(':') else {
            continue;
        };
        let value = value.trim();
        let d = match key {
            "step" => {
                if step.is_some() {
                    return Err(fail(i + 1, t, "a second `; step:` line"));
                }
                step = Some((value.to_string(), i + 1));
                continue;
            }
            "check" => Directive::Check(value.to_string()),
            "nextln" => Directive::NextLn(value.to_string()),
            "not" => Directive::Not(value.to_string()),
            _ => continue,
        };
        if value.is_empty() {
            return Err(fail(i + 1, t, "the directive has no text to match"));
        }
        directives.push((i + 1, d));
    }
    let step = step.ok_or_else(|| fail(0, "; step:", "the file has no `; step:` line"))?;
    if !directives
        .iter()
        .any(|(_, d)| matches!(d, Directive::Check(_) | Directive::NextLn(_)))
    {
        return Err(fail(0, "; check:", "the file has no `; check:` line"));
    }
    let (step, step_line) = step;
    Ok(FileTest {
        step,
        step_line,
        directives,
    })
}

/// Matches `directives` against `output` in order (see [`Directive`]).
pub fn check_output(directives: &[(usize, Directive)], output: &str) -> Result<(), Failure> {
    let fail = |line: usize, d: &Directive, message: String| Failure {
        line,
        directive: d.to_string(),
        message,
        output: Some(output.to_string()),
    };
    // End of the previous match, if any.
    let mut pos: Option<usize> = None;
    let mut nots: Vec<(usize, &Directive, &str)> = Vec::new();
    let check_nots = |nots: &mut Vec<(usize, &Directive, &str)>, region: &str| {
        let found = nots.iter().find(|(_, _, s)| region.contains(s)).copied();
        nots.clear();
        match found {
            Some((line, d, _)) => Err(fail(
                line,
                d,
                "found where it must not be (between the matches around it)".into(),
            )),
            None => Ok(()),
        }
    };
    for (line, d) in directives {
        let from = pos.unwrap_or(0);
        let (start, len) = match d {
            Directive::Not(s) => {
                nots.push((*line, d, s));
                continue;
            }
            Directive::Check(s) => match output[from..].find(s.as_str()) {
                Some(i) => (from + i, s.len()),
                None => {
                    return Err(fail(*line, d, "not found after the previous match".into()));
                }
            },
            Directive::NextLn(s) => {
                let Some(prev) = pos else {
                    return Err(fail(*line, d, "`nextln` needs a match before it".into()));
                };
                let next_start = match output[prev..].find('\n') {
                    Some(i) => prev + i + 1,
                    None => output.len(),
                };
                let next_end = output[next_start..]
                    .find('\n')
                    .map_or(output.len(), |i| next_start + i);
                match output[next_start..next_end].find(s.as_str()) {
                    Some(i) => (next_start + i, s.len()),
                    None => {
                        return Err(fail(
                            *line,
                            d,
                            format!(
                                "not on the line after the previous match (that line is `{}`)",
                                &output[next_start..next_end]
                            ),
                        ));
                    }
                }
            }
        };
        check_nots(&mut nots, &output[from..start])?;
        pos = Some(start + len);
    }
    check_nots(&mut nots, &output[pos.unwrap_or(0)..])
}

/// Runs one filetest: its step on its text, then its directives on the output, which it
/// returns.
pub fn run_filetest(text: &str) -> Result<String, Failure> {
    let test = parse_filetest(text)?;
    let output = run_step(&test.step, text).map_err(|message| Failure {
        line: test.step_line,
        directive: format!("; step: {}", test.step),
        message,
        output: None,
    })?;
    check_output(&test.directives, &output)?;
    Ok(output)
}
