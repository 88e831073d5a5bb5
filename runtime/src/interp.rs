//! The reference interpreter: executes the primitive graph one op at a time with plain loops
//! over dense values, accumulating reductions and matmuls in f64. It is slow on purpose and
//! shares no code with lowering or codegen, which makes it the oracle for every kernel. The
//! scalar meaning of each op comes from `cranegrad_graph::eval`, which constant folding calls
//! too, so a folded graph computes what the interpreter does.

use std::collections::HashMap;

use cranegrad_graph::{
    Bindings, DType, GraphData, HostData, NodeId, Op, eval_arange, eval_binary, eval_reduce,
    eval_unary, eval_where, round_to,
};

use crate::error::RuntimeError;
use crate::value::Value;

/// A dense value at its bound shape; elements are f64 holding exactly what the dtype holds.
#[derive(Clone, Debug)]
struct Dense {
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Calls `f(flat_index, multi_index)` for every element of `shape` in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(usize, &[usize])) {
    let n: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    for flat in 0..n {
        f(flat, &idx);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Evaluates `outputs` of `g` with inputs from attached data or `feeds`, symbols from
/// `bindings`.
pub fn interpret(
    g: &GraphData,
    outputs: &[NodeId],
    feeds: &HashMap<String, HostData>,
    bindings: &Bindings,
) -> Result<Vec<Value>, RuntimeError> {
    let mut vals: HashMap<NodeId, Dense> = HashMap::new();
    for n in g.topo_from(outputs) {
        let node = g.node(n);
        let shape = node.shape.eval(bindings)?;
        let ins: Vec<&Dense> = g.inputs(n).iter().map(|i| &vals[i]).collect();
        let in_dtype = g.inputs(n).first().map(|&i| g.node(i).dtype);
        let numel: usize = shape.iter().product();
        let data: Vec<f64> = match &node.op {
            Op::Input { name } => {
                let d = node
                    .data
                    .as_ref()
                    .or_else(|| feeds.get(name))
                    .ok_or_else(|| RuntimeError::MissingInput(name.clone()))?;
                if crate::pack::is_released(d) {
                    return Err(RuntimeError::Released(name.clone()));
                }
                if d.len() != numel {
                    return Err(RuntimeError::InputLength {
                        name: name.clone(),
                        expected: numel,
                        got: d.len(),
                    });
                }
                match d.as_f32() {
                    Some(v) => v.iter().map(|&x| x as f64).collect(),
                    None => d
                        .as_i32()
                        .unwrap_or(&[])
                        .iter()
                        .map(|&x| x as f64)
                        .collect(),
                }
            }
            Op::Const { value } => vec![round_to(node.dtype, *value); numel],
            Op::Arange { axis } => {
                let mut out = vec![0.0; numel];
                for_each_index(&shape, |f, idx| {
                    out[f] = eval_arange(node.dtype, idx[*axis])
                });
                out
            }
            Op::Unary(op) => ins[0]
                .data
                .iter()
                .map(|&x| eval_unary(*op, node.dtype, x))
                .collect(),
            Op::Binary(op) => {
                let operands = in_dtype.unwrap_or(node.dtype);
                ins[0]
                    .data
                    .iter()
                    .zip(&ins[1].data)
                    .map(|(&a, &b)| eval_binary(*op, operands, a, b))
                    .collect()
            }
            Op::Where => ins[0]
                .data
                .iter()
                .zip(ins[1].data.iter().zip(&ins[2].data))
                .map(|(&c, (&a, &b))| eval_where(c, a, b))
                .collect(),
            Op::Reduce { op, axis } => {
                let src = ins[0];
                let ss = strides(&src.shape);
                let len = src.shape[*axis];
                let mut out = vec![0.0; numel];
                for_each_index(&shape, |f, idx| {
                    let base: usize = idx.iter().zip(&ss).map(|(i, s)| i * s).sum();
                    let items = (0..len).map(|j| src.data[base + j * ss[*axis]]);
                    out[f] = eval_reduce(*op, node.dtype, items);
                });
                out
            }
            Op::Reshape => ins[0].data.clone(),
            Op::Permute(perm) => {
                let ss = strides(&ins[0].shape);
                let mut out = vec![0.0; numel];
                for_each_index(&shape, |f, idx| {
                    let src: usize = idx.iter().zip(perm).map(|(i, &p)| i * ss[p]).sum();
                    out[f] = ins[0].data[src];
                });
                out
            }
            Op::Expand => {
                let src = ins[0];
                let ss = strides(&src.shape);
                let mut out = vec![0.0; numel];
                for_each_index(&shape, |f, idx| {
                    let s: usize = idx
                        .iter()
                        .zip(&src.shape)
                        .zip(&ss)
                        .map(|((&i, &d), &st)| if d == 1 { 0 } else { i * st })
                        .sum();
                    out[f] = src.data[s];
                });
                out
            }
            Op::Slice { starts } => {
                let starts: Vec<usize> = starts
                    .iter()
                    .map(|d| d.eval(bindings))
                    .collect::<Result<_, _>>()?;
                let src = ins[0];
                for (d, (&st, &len)) in starts.iter().zip(&shape).enumerate() {
                    if st + len > src.shape[d] {
                        return Err(RuntimeError::Bounds(format!(
                            "slice of axis {d}: {st}+{len} exceeds {}",
                            src.shape[d]
                        )));
                    }
                }
                let ss = strides(&src.shape);
                let mut out = vec![0.0; numel];
                for_each_index(&shape, |f, idx| {
                    let s: usize = idx
                        .iter()
                        .zip(&starts)
                        .zip(&ss)
                        .map(|((i, st), s)| (i + st) * s)
                        .sum();
                    out[f] = src.data[s];
                });
                out
            }
            Op::Pad(pads) => {
                let pads: Vec<(usize, usize)> = pads
                    .iter()
                    .map(|(a, b)| Ok((a.eval(bindings)?, b.eval(bindings)?)))
                    .collect::<Result<_, cranegrad_graph::GraphError>>()?;
                let src = ins[0];
                let ss = strides(&src.shape);
                let mut out = vec![0.0; numel];
                for_each_index(&shape, |f, idx| {
                    let mut s = 0;
                    for d in 0..idx.len() {
                        let i = idx[d] as i64 - pads[d].0 as i64;
                        if i < 0 || i >= src.shape[d] as i64 {
                            return;
                        }
                        s += i as usize * ss[d];
                    }
                    out[f] = src.data[s];
                });
                out
            }
            Op::WriteSlice { starts } => {
                let (target, value) = (ins[0], ins[1]);
                let starts: Vec<usize> = starts
                    .iter()
                    .map(|d| d.eval(bindings))
                    .collect::<Result<_, _>>()?;
                let ts = strides(&target.shape);
                let mut out = target.data.clone();
                let mut bad = None;
                for_each_index(&value.shape, |f, idx| {
                    let mut o = 0;
                    for d in 0..idx.len() {
                        let i = idx[d] + starts[d];
                        if i >= target.shape[d] {
                            bad = Some(d);
                            return;
                        }
                        o += i * ts[d];
                    }
                    out[o] = value.data[f];
                });
                if let Some(d) = bad {
                    return Err(RuntimeError::Bounds(format!(
                        "write_slice: axis {d} window leaves the target"
                    )));
                }
                out
            }
            Op::Gather => {
                let (table, idx) = (ins[0], ins[1]);
                let rows = table.shape[0];
                let row_len: usize = table.shape[1..].iter().product();
                let mut out = Vec::with_capacity(numel);
                for &id in &idx.data {
                    if id < 0.0 || id as usize >= rows {
                        return Err(RuntimeError::Bounds(format!(
                            "gather: id {id} is outside the table's {rows} rows"
                        )));
                    }
                    let r = id as usize * row_len;
                    out.extend_from_slice(&table.data[r..r + row_len]);
                }
                out
            }
            Op::MatMul => {
                let (a, b) = (ins[0], ins[1]);
                let r = shape.len();
                let (m, nn, k) = (shape[r - 2], shape[r - 1], a.shape[r - 1]);
                let batch: usize = shape[..r - 2].iter().product();
                let mut out = vec![0.0; numel];
                for bi in 0..batch {
                    let (ao, bo) = (bi * m * k, bi * k * nn);
                    for i in 0..m {
                        for j in 0..nn {
                            let mut acc = 0.0f64;
                            for p in 0..k {
                                acc += a.data[ao + i * k + p] * b.data[bo + p * nn + j];
                            }
                            out[bi * m * nn + i * nn + j] = round_to(DType::F32, acc);
                        }
                    }
                }
                out
            }
        };
        vals.insert(n, Dense { shape, data });
    }
    Ok(outputs
        .iter()
        .map(|o| {
            let d = &vals[o];
            Value::from_f64(d.shape.clone(), g.node(*o).dtype, &d.data)
        })
        .collect())
}
