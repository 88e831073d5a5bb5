//! Everything beyond the primitives, composed from them: the compiler, not the model author,
//! is what fuses these back into few kernels.

use std::f64::consts::{LN_2, LOG2_E, PI};

use crate::dim::Dim;
use crate::dtype::DType;
use crate::error::GraphError;
use crate::shape::Shape;
use crate::tensor::{Result, Tensor};

impl Tensor {
    /// `a - b`.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        self.add(&other.neg()?)
    }

    /// `a / b` as `a * (1/b)`.
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        self.mul(&other.recip()?)
    }

    /// `x + c`.
    pub fn add_scalar(&self, c: f64) -> Result<Tensor> {
        self.add(&self.scalar(c))
    }

    /// `x * c`.
    pub fn mul_scalar(&self, c: f64) -> Result<Tensor> {
        self.mul(&self.scalar(c))
    }

    /// `x * x`.
    pub fn square(&self) -> Result<Tensor> {
        self.mul(self)
    }

    /// `e^x` as `2^(x * log2 e)`.
    pub fn exp(&self) -> Result<Tensor> {
        self.mul_scalar(LOG2_E)?.exp2()
    }

    /// Natural logarithm as `log2(x) * ln 2`.
    pub fn log(&self) -> Result<Tensor> {
        self.log2()?.mul_scalar(LN_2)
    }

    /// `cos(x) = sin(x + pi/2)`.
    pub fn cos(&self) -> Result<Tensor> {
        self.add_scalar(PI / 2.0)?.sin()
    }

    /// `1/sqrt(x)`.
    pub fn rsqrt(&self) -> Result<Tensor> {
        self.sqrt()?.recip()
    }

    /// `max(x, 0)`.
    pub fn relu(&self) -> Result<Tensor> {
        self.maximum(&self.scalar(0.0))
    }

    /// Elementwise minimum as `-max(-a, -b)`.
    pub fn minimum(&self, other: &Tensor) -> Result<Tensor> {
        self.neg()?.maximum(&other.neg()?)?.neg()
    }

    /// `1 / (1 + e^-x)`.
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.neg()?.exp()?.add_scalar(1.0)?.recip()
    }

    /// `x * sigmoid(x)` (SiLU / swish).
    pub fn silu(&self) -> Result<Tensor> {
        self.mul(&self.sigmoid()?)
    }

    /// `tanh(x) = 2 sigmoid(2x) - 1`.
    pub fn tanh(&self) -> Result<Tensor> {
        self.mul_scalar(2.0)?
            .sigmoid()?
            .mul_scalar(2.0)?
            .add_scalar(-1.0)
    }

    /// GELU, tanh form (`gelu_new` / `gelu_pytorch_tanh`).
    pub fn gelu_tanh(&self) -> Result<Tensor> {
        let inner = self
            .mul(&self.square()?.mul_scalar(0.044715)?.add_scalar(1.0)?)?
            .mul_scalar((2.0 / PI).sqrt())?;
        self.mul_scalar(0.5)?.mul(&inner.tanh()?.add_scalar(1.0)?)
    }

    /// `a > b` as bool.
    pub fn cmpgt(&self, other: &Tensor) -> Result<Tensor> {
        other.cmplt(self)
    }

    /// Number of elements along `axis` as a constant; symbolic axes are refused because the
    /// count would need a runtime value.
    fn axis_len(&self, op: &str, axis: usize) -> Result<f64> {
        match self.dims()[axis] {
            Dim::Const(n) => Ok(n as f64),
            Dim::Sym { .. } => Err(GraphError::Shape {
                op: op.into(),
                got: self.shape().clone(),
                expected: format!("a static axis {axis}"),
            }),
        }
    }

    /// Mean over `axis`.
    pub fn mean(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        let a = self.axis("mean", axis)?;
        let n = self.axis_len("mean", a)?;
        self.sum(axis, keepdim)?.mul_scalar(1.0 / n)
    }

    /// Population variance over `axis`.
    pub fn var(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        let centered = self.sub(&self.mean(axis, true)?)?;
        centered.square()?.mean(axis, keepdim)
    }

    /// Softmax over `axis`, max-subtracted so large logits do not overflow.
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        let e = self.sub(&self.max(axis, true)?)?.exp()?;
        e.div(&e.sum(axis, true)?)
    }

    /// RMSNorm over the last axis: `x / sqrt(mean(x^2) + eps) * g`.
    pub fn rms_norm(&self, g: &Tensor, eps: f64) -> Result<Tensor> {
        let ms = self.square()?.mean(-1, true)?;
        self.mul(&ms.add_scalar(eps)?.rsqrt()?)?.mul(g)
    }

    /// LayerNorm over the last axis: `(x - mean) / sqrt(var + eps) * g + b`.
    pub fn layer_norm(&self, g: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
        let centered = self.sub(&self.mean(-1, true)?)?;
        let var = centered.square()?.mean(-1, true)?;
        centered.mul(&var.add_scalar(eps)?.rsqrt()?)?.mul(g)?.add(b)
    }

    /// Joins tensors along `axis` as a sum of zero-padded views, which fusion turns into one
    /// copy kernel.
    pub fn concat(parts: &[Tensor], axis: isize) -> Result<Tensor> {
        let first = parts.first().ok_or_else(|| GraphError::Shape {
            op: "concat".into(),
            got: Shape(vec![]),
            expected: "at least one tensor".into(),
        })?;
        let axis = first.axis("concat", axis)?;
        let lens: Vec<usize> = parts
            .iter()
            .map(|p| {
                let ok = p.rank() == first.rank()
                    && p.dims()
                        .iter()
                        .zip(first.dims())
                        .enumerate()
                        .all(|(i, (a, b))| i == axis || a == b);
                match (ok, p.dims().get(axis).and_then(Dim::as_const)) {
                    (true, Some(n)) => Ok(n),
                    _ => Err(GraphError::Shape {
                        op: "concat".into(),
                        got: p.shape().clone(),
                        expected: format!("{} outside a static axis {axis}", first.shape()),
                    }),
                }
            })
            .collect::<Result<_>>()?;
        let total: usize = lens.iter().sum();
        let mut acc: Option<Tensor> = None;
        let mut before = 0;
        for (p, &n) in parts.iter().zip(&lens) {
            let mut pads = vec![(0, 0); first.rank()];
            pads[axis] = (before, total - before - n);
            let padded = p.pad(&pads)?;
            acc = Some(match acc {
                None => padded,
                Some(a) => a.add(&padded)?,
            });
            before += n;
        }
        Ok(acc.expect("at least one part"))
    }

    /// `[a, b]` along `axis` where the lengths may be symbolic (a KV cache's first `pos`
    /// rows followed by the new row): two zero-padded views summed.
    pub fn concat2(a: &Tensor, b: &Tensor, axis: isize) -> Result<Tensor> {
        let ax = a.axis("concat", axis)?;
        let ok = a.rank() == b.rank()
            && a.dims()
                .iter()
                .zip(b.dims())
                .enumerate()
                .all(|(i, (x, y))| i == ax || x == y);
        if !ok {
            return Err(GraphError::Shape {
                op: "concat".into(),
                got: b.shape().clone(),
                expected: format!("{} outside axis {ax}", a.shape()),
            });
        }
        let zero = Dim::Const(0);
        let mut pa = vec![(zero.clone(), zero.clone()); a.rank()];
        let mut pb = pa.clone();
        pa[ax].1 = b.dims()[ax].clone();
        pb[ax].0 = a.dims()[ax].clone();
        a.pad_dims(&pa)?.add(&b.pad_dims(&pb)?)
    }

    /// Index of the maximum over the last axis, as f32 (first index on ties).
    pub fn argmax_last(&self) -> Result<Tensor> {
        let n = self.dims()[self.rank() - 1].clone();
        let mx = self.max(-1, true)?;
        let idx = self
            .graph()
            .arange(self.shape().clone(), self.rank() - 1, DType::F32)?;
        let big = self.scalar(n.max_value() as f64);
        // Non-maximal positions get index n so the min picks the first maximal one.
        let not_max = self.cmplt(&mx)?;
        let cand = not_max.where_(&big.broadcast_to(self.shape())?, &idx)?;
        cand.neg()?.max(-1, false)?.neg()
    }
}
