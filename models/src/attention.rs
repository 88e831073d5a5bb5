//! Causal (grouped-query) attention composed from primitives: two batched matmuls around a
//! scaled, masked softmax. Shared K/V heads are broadcast views, never copies.

use cranegrad_graph::{DType, Dim, GraphError, Shape, Tensor};

use crate::llama::Context;

/// `[B, S, n * d]` -> `[B, S, n, d]`: a projection split into heads (a free view).
pub fn split_heads(x: &Tensor, n: usize, d: usize) -> Result<Tensor, GraphError> {
    let (b, s) = (x.dims()[0].clone(), x.dims()[1].clone());
    x.reshape(Shape(vec![b, s, Dim::Const(n), Dim::Const(d)]))
}

/// One layer's attention under `ctx`: causal over the sequence itself (prefill; returns the
/// new keys and values for the caller's cache) or, in a decode step, over the KV cache after
/// this token's key and value are appended in place (returns the cache writes, outputs that
/// must be realized so they run).
pub fn attend(
    ctx: &Context,
    layer: usize,
    q: &Tensor,
    k: Tensor,
    v: Tensor,
) -> Result<(Tensor, (Tensor, Tensor)), GraphError> {
    let pad = ctx.padding().map(|p| p.pad);
    match ctx {
        Context::Prefill { weights, .. } => {
            if let Some(w) = weights {
                w.borrow_mut().push(causal_attention_weights(q, &k, pad)?);
            }
            Ok((causal_attention_padded(q, &k, &v, pad)?, (k, v)))
        }
        Context::Decode { pos, caches, .. } => {
            let (ck, cv) = &caches[layer];
            let at = [Dim::Const(0), (*pos).clone(), Dim::Const(0), Dim::Const(0)];
            let ck = ck.write_slice(&k, &at)?;
            let cv = cv.write_slice(&v, &at)?;
            let n = pos.add(1);
            let a = full_attention(q, &ck.narrow(1, 0, n.clone())?, &cv.narrow(1, 0, n)?, pad)?;
            Ok((a, (ck, cv)))
        }
    }
}

/// `q` `[B, S, H, D]`, `k`/`v` `[B, T, KV, D]` (T keys, the last S of which are the queries'
/// own positions) -> `[B, S, H * D]`. Query i attends to keys `j <= i + (T - S)`.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor, GraphError> {
    attention(q, k, v, true, None)
}

/// Causal attention where row b's first `pad[b]` keys are left padding and never attended.
pub fn causal_attention_padded(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    pad: Option<&Tensor>,
) -> Result<Tensor, GraphError> {
    attention(q, k, v, true, pad)
}

/// Attention of `q` over every key (a decode step's single query sees the whole cache); `T`
/// may be symbolic.
pub fn full_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    pad: Option<&Tensor>,
) -> Result<Tensor, GraphError> {
    attention(q, k, v, false, pad)
}

/// Keys hidden by left padding: `[B, 1, 1, 1, T]` bool, key j hidden when `j < pad[b]`.
/// Causal attention's weights `[B, heads, S, T]`, computed by the same attention as the
/// forward with an identity as the values: `softmax(scores) @ I` is the softmax itself, so the
/// fused attention kernel (its template, mask and online softmax) produces them, not a second
/// implementation.
pub fn causal_attention_weights(
    q: &Tensor,
    k: &Tensor,
    pad: Option<&Tensor>,
) -> Result<Tensor, GraphError> {
    let (b, s, h, _) = dims4(q)?;
    let (_, t, kv, _) = dims4(k)?;
    let tn = t.as_const().ok_or_else(|| GraphError::Shape {
        op: "causal_attention_weights".into(),
        got: k.shape().clone(),
        expected: "a static key count".into(),
    })?;
    let eye: Vec<f32> = (0..tn * tn)
        .map(|i| if i / tn == i % tn { 1.0 } else { 0.0 })
        .collect();
    let eye = q
        .graph()
        .input_with_data(
            &format!("attention.identity.{tn}"),
            Shape::of(&[1, tn, 1, tn]),
            eye,
        )?
        .expand(&Shape(vec![
            b.clone(),
            t.clone(),
            Dim::Const(kv),
            t.clone(),
        ]))?;
    attention(q, k, &eye, true, pad)?
        .reshape(Shape(vec![b, s, Dim::Const(h), t]))?
        .permute(&[0, 2, 1, 3])
}

fn padding_mask(pad: &Tensor, b: &Dim, t: &Dim) -> Result<Tensor, GraphError> {
    let g = pad.graph();
    let kj = g.arange(Shape(vec![Dim::Const(1), t.clone()]), 1, DType::I32)?;
    let p = pad.reshape(Shape(vec![b.clone(), Dim::Const(1)]))?;
    kj.cmplt(&p)?.reshape(Shape(vec![
        b.clone(),
        Dim::Const(1),
        Dim::Const(1),
        Dim::Const(1),
        t.clone(),
    ]))
}

fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal: bool,
    pad: Option<&Tensor>,
) -> Result<Tensor, GraphError> {
    let (b, s, h, d) = dims4(q)?;
    let (_, t, kv, _) = dims4(k)?;
    let groups = h / kv;
    // Queries grouped by the KV head they share: [B, KV, G, S, D].
    let q = q
        .reshape(Shape(vec![
            b.clone(),
            s.clone(),
            Dim::Const(kv),
            Dim::Const(groups),
            Dim::Const(d),
        ]))?
        .permute(&[0, 2, 3, 1, 4])?;
    // Keys and values as [B, KV, 1, T, D]; the size-1 group axis broadcasts in the matmul.
    let as_heads = |x: &Tensor| -> Result<Tensor, GraphError> {
        x.permute(&[0, 2, 1, 3])?.reshape(Shape(vec![
            b.clone(),
            Dim::Const(kv),
            Dim::Const(1),
            t.clone(),
            Dim::Const(d),
        ]))
    };
    let k = as_heads(k)?;
    // Values keep their own width (an identity's is the key count, see
    // `causal_attention_weights`).
    let dv = v.dims()[3].as_const().ok_or_else(|| GraphError::Shape {
        op: "attention".into(),
        got: v.shape().clone(),
        expected: "values of static width".into(),
    })?;
    let v = v.permute(&[0, 2, 1, 3])?.reshape(Shape(vec![
        b.clone(),
        Dim::Const(kv),
        Dim::Const(1),
        t.clone(),
        Dim::Const(dv),
    ]))?;
    let scores = q
        .matmul(&k.transpose(-1, -2)?)?
        .mul_scalar(1.0 / (d as f64).sqrt())?;
    let pad_hidden = pad.map(|p| padding_mask(p, &b, &t)).transpose()?;
    if !causal {
        let scores = match &pad_hidden {
            Some(h) => h.where_(&scores.scalar(f32::MIN as f64), &scores)?,
            None => scores,
        };
        let p = scores.softmax(-1)?;
        let out = p.matmul(&v)?;
        return out
            .permute(&[0, 3, 1, 2, 4])?
            .reshape(Shape(vec![b, s, Dim::Const(h * dv)]));
    }
    // Causal mask from two index ramps: key j is hidden from query i when j > i + (T - S).
    let g = q.graph();
    let qi = g.arange(Shape(vec![s.clone(), Dim::Const(1)]), 0, DType::I32)?;
    let kj = g.arange(Shape(vec![Dim::Const(1), t.clone()]), 1, DType::I32)?;
    let offset = match (&t, &s) {
        (Dim::Const(a), Dim::Const(c)) => (*a as f64) - (*c as f64),
        _ => {
            return Err(GraphError::Shape {
                op: "causal_attention".into(),
                got: k.shape().clone(),
                expected: "static query and key lengths (symbolic decode uses decode_attention)"
                    .into(),
            });
        }
    };
    let mut hidden = qi.add(&qi.scalar(offset))?.cmplt(&kj)?;
    if let Some(h) = &pad_hidden {
        hidden = hidden.maximum(h)?;
    }
    let masked = hidden.where_(&scores.scalar(f32::MIN as f64), &scores)?;
    let p = masked.softmax(-1)?;
    let out = p.matmul(&v)?; // [B, KV, G, S, D]
    out.permute(&[0, 3, 1, 2, 4])?
        .reshape(Shape(vec![b, s, Dim::Const(h * dv)]))
}

fn dims4(x: &Tensor) -> Result<(Dim, Dim, usize, usize), GraphError> {
    let bad = || GraphError::Shape {
        op: "attention".into(),
        got: x.shape().clone(),
        expected: "[batch, seq, heads, head_dim] with static heads".into(),
    };
    if x.rank() != 4 {
        return Err(bad());
    }
    let d = x.dims();
    Ok((
        d[0].clone(),
        d[1].clone(),
        d[2].as_const().ok_or_else(bad)?,
        d[3].as_const().ok_or_else(bad)?,
    ))
}
