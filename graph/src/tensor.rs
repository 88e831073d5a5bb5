//! The lazy `Tensor`: every method records a node (after checking shapes and dtypes) and
//! returns at once; nothing is computed until a runtime realizes the graph.

use crate::data::HostData;
use crate::dim::Dim;
use crate::dtype::DType;
use crate::error::GraphError;
use crate::graph::{Graph, Node, NodeId};
use crate::op::{BinaryOp, Op, ReduceOp, UnaryOp, binary_result_dtype};
use crate::shape::{Shape, broadcast_shapes};

/// A handle to one node of a lazy graph, with its shape and dtype at hand.
#[derive(Clone, Debug)]
pub struct Tensor {
    graph: Graph,
    id: NodeId,
    shape: Shape,
    dtype: DType,
}

/// Shorthand for results of recording an op.
pub type Result<T> = std::result::Result<T, GraphError>;

impl Graph {
    fn record(&self, op: Op, shape: Shape, dtype: DType, inputs: &[NodeId]) -> Tensor {
        let mut d = self.0.borrow_mut();
        let node = Node {
            op,
            shape: shape.clone(),
            dtype,
            data: None,
            scope: d.recording_scope().cloned(),
        };
        let id = d.add(node, inputs);
        drop(d);
        Tensor {
            graph: self.clone(),
            id,
            shape,
            dtype,
        }
    }

    /// A named input whose data is supplied when the graph is realized.
    pub fn input(&self, name: &str, shape: impl Into<Shape>, dtype: DType) -> Tensor {
        self.record(
            Op::Input {
                name: name.to_string(),
            },
            shape.into(),
            dtype,
            &[],
        )
    }

    /// A named input carrying its data (weights, a prompt); the length must match a static
    /// shape exactly.
    pub fn input_with_data(
        &self,
        name: &str,
        shape: impl Into<Shape>,
        data: impl Into<HostData>,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let data = data.into();
        if shape.static_numel().is_some_and(|n| n != data.len()) {
            return Err(GraphError::DataLength {
                name: name.to_string(),
                len: data.len(),
                shape,
            });
        }
        let t = self.input(name, shape, data.dtype());
        self.0.borrow_mut().g[t.id].data = Some(data);
        Ok(t)
    }

    /// A tensor whose every element is `value`.
    pub fn constant(&self, value: f64, shape: impl Into<Shape>, dtype: DType) -> Tensor {
        self.record(Op::Const { value }, shape.into(), dtype, &[])
    }

    /// A tensor whose elements equal their index along `axis`.
    pub fn arange(&self, shape: impl Into<Shape>, axis: usize, dtype: DType) -> Result<Tensor> {
        let shape = shape.into();
        if axis >= shape.rank() {
            return Err(GraphError::Axis {
                op: "arange".into(),
                axis: axis as isize,
                shape,
            });
        }
        Ok(self.record(Op::Arange { axis }, shape, dtype, &[]))
    }
}

impl Tensor {
    /// The graph this tensor records into.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The node this tensor stands for.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The dimensions.
    pub fn dims(&self) -> &[Dim] {
        self.shape.dims()
    }

    /// The dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.shape.rank()
    }

    fn same_graph(&self, op: &str, other: &Tensor) -> Result<()> {
        if self.graph.same(&other.graph) {
            Ok(())
        } else {
            Err(GraphError::DifferentGraphs { op: op.into() })
        }
    }

    /// Resolves a possibly negative axis.
    pub fn axis(&self, op: &str, axis: isize) -> Result<usize> {
        let r = self.rank() as isize;
        let a = if axis < 0 { axis + r } else { axis };
        if a < 0 || a >= r {
            return Err(GraphError::Axis {
                op: op.into(),
                axis,
                shape: self.shape.clone(),
            });
        }
        Ok(a as usize)
    }

    fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        if !self.dtype.is_float() {
            return Err(GraphError::UnsupportedDType {
                op: Op::Unary(op).name().into(),
                dtype: self.dtype,
            });
        }
        Ok(self
            .graph
            .record(Op::Unary(op), self.shape.clone(), self.dtype, &[self.id]))
    }

    /// `-x` (any numeric dtype).
    pub fn neg(&self) -> Result<Tensor> {
        if self.dtype == DType::Bool {
            return Err(GraphError::UnsupportedDType {
                op: "neg".into(),
                dtype: self.dtype,
            });
        }
        Ok(self.graph.record(
            Op::Unary(UnaryOp::Neg),
            self.shape.clone(),
            self.dtype,
            &[self.id],
        ))
    }

    /// `2^x`.
    pub fn exp2(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Exp2)
    }

    /// `log2(x)`.
    pub fn log2(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Log2)
    }

    /// `sqrt(x)`.
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sqrt)
    }

    /// `1/x`.
    pub fn recip(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Recip)
    }

    /// `sin(x)`.
    pub fn sin(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sin)
    }

    /// Converts to `dtype` (f32 -> i32 truncates toward zero; bool -> number gives 0/1).
    pub fn cast(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype {
            return Ok(self.clone());
        }
        Ok(self.graph.record(
            Op::Unary(UnaryOp::Cast),
            self.shape.clone(),
            dtype,
            &[self.id],
        ))
    }

    /// Broadcasts to `shape` under NumPy rules with free views (reshape + expand).
    pub fn broadcast_to(&self, shape: &Shape) -> Result<Tensor> {
        if &self.shape == shape {
            return Ok(self.clone());
        }
        let target = broadcast_shapes("broadcast_to", &self.shape, shape)?;
        if &target != shape {
            return Err(GraphError::Broadcast {
                op: "broadcast_to".into(),
                lhs: self.shape.clone(),
                rhs: shape.clone(),
            });
        }
        if let Some(v) = self.const_value() {
            return Ok(self.graph.constant(v, shape.clone(), self.dtype));
        }
        let mut t = self.clone();
        if t.rank() < shape.rank() {
            let mut dims = vec![Dim::Const(1); shape.rank() - t.rank()];
            dims.extend(t.shape.0.iter().cloned());
            t = t.reshape(Shape(dims))?;
        }
        t.expand(shape)
    }

    /// The value of a constant node, which broadcasting can re-create at any shape for free.
    pub fn const_value(&self) -> Option<f64> {
        self.graph.with(|g| match g.node(self.id).op {
            Op::Const { value } => Some(value),
            _ => None,
        })
    }

    fn binary(&self, op: BinaryOp, other: &Tensor) -> Result<Tensor> {
        let name = Op::Binary(op).name();
        self.same_graph(name, other)?;
        if self.dtype != other.dtype {
            return Err(GraphError::DType {
                op: name.into(),
                lhs: self.dtype,
                rhs: other.dtype,
            });
        }
        if self.dtype == DType::Bool && op != BinaryOp::Max && op != BinaryOp::Mul {
            return Err(GraphError::UnsupportedDType {
                op: name.into(),
                dtype: self.dtype,
            });
        }
        let shape = broadcast_shapes(name, &self.shape, &other.shape)?;
        let a = self.broadcast_to(&shape)?;
        let b = other.broadcast_to(&shape)?;
        Ok(self.graph.record(
            Op::Binary(op),
            shape,
            binary_result_dtype(op, self.dtype),
            &[a.id, b.id],
        ))
    }

    /// `a + b` with broadcasting.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Add, other)
    }

    /// `a * b` with broadcasting (logical and for bool).
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Mul, other)
    }

    /// Elementwise maximum with broadcasting (logical or for bool).
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Max, other)
    }

    /// `a < b` with broadcasting, as bool.
    pub fn cmplt(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::CmpLt, other)
    }

    /// `self ? a : b` with broadcasting of all three; `self` must be bool.
    pub fn where_(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.same_graph("where", a)?;
        self.same_graph("where", b)?;
        if self.dtype != DType::Bool {
            return Err(GraphError::UnsupportedDType {
                op: "where (condition)".into(),
                dtype: self.dtype,
            });
        }
        if a.dtype != b.dtype {
            return Err(GraphError::DType {
                op: "where".into(),
                lhs: a.dtype,
                rhs: b.dtype,
            });
        }
        let s = broadcast_shapes("where", &self.shape, &a.shape)?;
        let s = broadcast_shapes("where", &s, &b.shape)?;
        let c = self.broadcast_to(&s)?;
        let a = a.broadcast_to(&s)?;
        let b = b.broadcast_to(&s)?;
        Ok(self
            .graph
            .record(Op::Where, s, a.dtype, &[c.id, a.id, b.id]))
    }

    fn reduce(&self, op: ReduceOp, axis: isize, keepdim: bool) -> Result<Tensor> {
        let name = Op::Reduce { op, axis: 0 }.name();
        let axis = self.axis(name, axis)?;
        if self.dtype == DType::Bool {
            return Err(GraphError::UnsupportedDType {
                op: name.into(),
                dtype: self.dtype,
            });
        }
        let mut dims = self.shape.0.clone();
        dims[axis] = Dim::Const(1);
        let out = self.graph.record(
            Op::Reduce { op, axis },
            Shape(dims.clone()),
            self.dtype,
            &[self.id],
        );
        if keepdim {
            Ok(out)
        } else {
            dims.remove(axis);
            out.reshape(Shape(dims))
        }
    }

    /// Sum over `axis` (negative counts from the end).
    pub fn sum(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Sum, axis, keepdim)
    }

    /// Maximum over `axis` (negative counts from the end).
    pub fn max(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Max, axis, keepdim)
    }

    /// Same elements in a new shape. Symbolic dimensions must stay whole and in order; the
    /// product of the constant dimensions must not change.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape == self.shape {
            return Ok(self.clone());
        }
        let syms = |s: &Shape| -> Vec<Dim> {
            s.0.iter()
                .filter(|d| d.as_const().is_none())
                .cloned()
                .collect()
        };
        let cprod = |s: &Shape| -> usize { s.0.iter().filter_map(Dim::as_const).product() };
        if syms(&shape) != syms(&self.shape) || cprod(&shape) != cprod(&self.shape) {
            return Err(GraphError::Shape {
                op: "reshape".into(),
                got: self.shape.clone(),
                expected: format!("a shape with the same elements as {shape}"),
            });
        }
        if let Some(v) = self.const_value() {
            return Ok(self.graph.constant(v, shape, self.dtype));
        }
        Ok(self
            .graph
            .record(Op::Reshape, shape, self.dtype, &[self.id]))
    }

    /// Reorders axes: output axis i is input axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let mut seen = vec![false; self.rank()];
        let valid = perm.len() == self.rank()
            && perm
                .iter()
                .all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true));
        if !valid {
            return Err(GraphError::Shape {
                op: "permute".into(),
                got: self.shape.clone(),
                expected: format!("a permutation of its axes, not {perm:?}"),
            });
        }
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(self.clone());
        }
        let shape = Shape(perm.iter().map(|&p| self.shape.0[p].clone()).collect());
        Ok(self
            .graph
            .record(Op::Permute(perm.to_vec()), shape, self.dtype, &[self.id]))
    }

    /// Swaps two axes.
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let a = self.axis("transpose", a)?;
        let b = self.axis("transpose", b)?;
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Broadcasts size-1 axes to `shape` (same rank) without copying.
    pub fn expand(&self, shape: &Shape) -> Result<Tensor> {
        let ok = shape.rank() == self.rank()
            && self
                .shape
                .0
                .iter()
                .zip(&shape.0)
                .all(|(s, t)| s == t || s.is_one());
        if !ok {
            return Err(GraphError::Shape {
                op: "expand".into(),
                got: self.shape.clone(),
                expected: format!("size-1 axes broadcastable to {shape}"),
            });
        }
        if shape == &self.shape {
            return Ok(self.clone());
        }
        Ok(self
            .graph
            .record(Op::Expand, shape.clone(), self.dtype, &[self.id]))
    }

    /// The window `[start, start + len)` of `axis`; bounds are checked at every symbol's
    /// maximum so no binding can read outside the buffer.
    pub fn narrow(
        &self,
        axis: isize,
        start: impl Into<Dim>,
        len: impl Into<Dim>,
    ) -> Result<Tensor> {
        let axis = self.axis("narrow", axis)?;
        let (start, len) = (start.into(), len.into());
        let src = &self.shape.0[axis];
        let fits = match (src, &start, &len) {
            (Dim::Const(n), _, _) => start.max_value() + len.max_value() <= *n,
            // A symbolic source axis only admits windows that provably stay inside it.
            (_, Dim::Const(0), l) => l == src || l.max_value() <= src.min_value(),
            _ => false,
        };
        if !fits {
            return Err(GraphError::Shape {
                op: "narrow".into(),
                got: self.shape.clone(),
                expected: format!("axis {axis} to hold the window {start}..{start}+{len}"),
            });
        }
        if start == Dim::Const(0) && &len == src {
            return Ok(self.clone());
        }
        let mut starts = vec![Dim::Const(0); self.rank()];
        starts[axis] = start;
        let mut dims = self.shape.0.clone();
        dims[axis] = len;
        Ok(self
            .graph
            .record(Op::Slice { starts }, Shape(dims), self.dtype, &[self.id]))
    }

    /// Zero padding `(before, after)` on every axis.
    pub fn pad(&self, pads: &[(usize, usize)]) -> Result<Tensor> {
        let pads: Vec<(Dim, Dim)> = pads
            .iter()
            .map(|&(a, b)| (Dim::Const(a), Dim::Const(b)))
            .collect();
        self.pad_dims(&pads)
    }

    /// Zero padding with possibly symbolic amounts; each padded axis may hold at most one
    /// symbol (`pos + 1` is fine, `pos + pos` is not).
    pub fn pad_dims(&self, pads: &[(Dim, Dim)]) -> Result<Tensor> {
        if pads.len() != self.rank() {
            return Err(GraphError::Shape {
                op: "pad".into(),
                got: self.shape.clone(),
                expected: format!("one (before, after) pair per axis, got {}", pads.len()),
            });
        }
        let zero = Dim::Const(0);
        if pads.iter().all(|(a, b)| *a == zero && *b == zero) {
            return Ok(self.clone());
        }
        let dims = self
            .shape
            .0
            .iter()
            .zip(pads)
            .map(|(d, (a, b))| {
                d.plus(a)
                    .and_then(|x| x.plus(b))
                    .ok_or_else(|| GraphError::Shape {
                        op: "pad".into(),
                        got: self.shape.clone(),
                        expected: format!("at most one symbol per axis, padding by ({a}, {b})"),
                    })
            })
            .collect::<Result<Vec<Dim>>>()?;
        Ok(self
            .graph
            .record(Op::Pad(pads.to_vec()), Shape(dims), self.dtype, &[self.id]))
    }

    /// Batched matrix product `[.., M, K] @ [.., K, N]` with NumPy broadcasting of the batch
    /// axes.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        self.same_graph("matmul", other)?;
        if self.dtype != other.dtype {
            return Err(GraphError::DType {
                op: "matmul".into(),
                lhs: self.dtype,
                rhs: other.dtype,
            });
        }
        if self.dtype != DType::F32 {
            return Err(GraphError::UnsupportedDType {
                op: "matmul".into(),
                dtype: self.dtype,
            });
        }
        if self.rank() < 2
            || other.rank() < 2
            || self.dims()[self.rank() - 1] != other.dims()[other.rank() - 2]
        {
            return Err(GraphError::Shape {
                op: "matmul".into(),
                got: self.shape.clone(),
                expected: format!("[.., M, K] against [.., K, N] = {}", other.shape),
            });
        }
        let batch_a = Shape(self.dims()[..self.rank() - 2].to_vec());
        let batch_b = Shape(other.dims()[..other.rank() - 2].to_vec());
        let batch =
            broadcast_shapes("matmul", &batch_a, &batch_b).map_err(|_| GraphError::Broadcast {
                op: "matmul (batch axes)".into(),
                lhs: self.shape.clone(),
                rhs: other.shape.clone(),
            })?;
        let with_batch = |t: &Tensor| -> Result<Tensor> {
            let mut dims = batch.0.clone();
            dims.extend(t.dims()[t.rank() - 2..].iter().cloned());
            t.broadcast_to(&Shape(dims))
        };
        let a = with_batch(self)?;
        let b = with_batch(other)?;
        let mut dims = batch.0.clone();
        dims.push(self.dims()[self.rank() - 2].clone());
        dims.push(other.dims()[other.rank() - 1].clone());
        Ok(self
            .graph
            .record(Op::MatMul, Shape(dims), DType::F32, &[a.id, b.id]))
    }

    /// Rows of this table (`[rows, rest..]`) picked by i32 `indices`: the embedding lookup.
    /// Ids are checked against `rows` before any kernel runs.
    pub fn gather_rows(&self, indices: &Tensor) -> Result<Tensor> {
        self.same_graph("gather", indices)?;
        if indices.dtype != DType::I32 {
            return Err(GraphError::UnsupportedDType {
                op: "gather (indices)".into(),
                dtype: indices.dtype,
            });
        }
        if self.rank() == 0 || self.dims()[0].as_const().is_none() {
            return Err(GraphError::Shape {
                op: "gather".into(),
                got: self.shape.clone(),
                expected: "a table with a static first axis".into(),
            });
        }
        let mut dims = indices.dims().to_vec();
        dims.extend(self.dims()[1..].iter().cloned());
        Ok(self
            .graph
            .record(Op::Gather, Shape(dims), self.dtype, &[self.id, indices.id]))
    }

    /// This input with the window at `starts` overwritten by `value`, in place (see
    /// [`Op::WriteSlice`]); the window must fit for every symbol value.
    pub fn write_slice(&self, value: &Tensor, starts: &[Dim]) -> Result<Tensor> {
        self.same_graph("write_slice", value)?;
        let is_input = self
            .graph
            .with(|g| matches!(g.node(self.id).op, Op::Input { .. }));
        let fits = starts.len() == self.rank()
            && value.rank() == self.rank()
            && self
                .dims()
                .iter()
                .zip(value.dims())
                .zip(starts)
                .all(|((t, v), s)| {
                    t.as_const()
                        .is_some_and(|t| s.max_value() + v.max_value() <= t)
                });
        if !is_input || !fits || value.dtype != self.dtype {
            return Err(GraphError::Shape {
                op: "write_slice".into(),
                got: value.shape.clone(),
                expected: format!(
                    "a {} value fitting an input of shape {} at {:?}",
                    self.dtype,
                    self.shape,
                    starts.iter().map(|d| d.to_string()).collect::<Vec<_>>()
                ),
            });
        }
        Ok(self.graph.record(
            Op::WriteSlice {
                starts: starts.to_vec(),
            },
            self.shape.clone(),
            self.dtype,
            &[self.id, value.id],
        ))
    }

    /// A constant scalar of this tensor's dtype, broadcast on use.
    pub fn scalar(&self, value: f64) -> Tensor {
        self.graph.constant(value, Shape(vec![]), self.dtype)
    }
}
