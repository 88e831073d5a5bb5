//! The LLaMA family on the Tensor API: RMSNorm, rotary embeddings (rotate_half layout), GQA
//! attention and the SwiGLU MLP, written only with composite ops; fusion does the rest.

use cranegrad_graph::{Dim, Graph, GraphError, Shape, Tensor};

use crate::attention::{attend, split_heads};
use crate::loader::LlamaConfig;
use crate::weights::Weights;

/// `cos`/`sin` tables `[max_positions, head_dim]` exactly as HF builds them: f32 inverse
/// frequencies times the f32 position, `cat(freqs, freqs)`, then cos/sin.
pub fn rope_tables(cfg: &LlamaConfig) -> (Vec<f32>, Vec<f32>) {
    let inv: Vec<f32> = crate::loader::rope_inv_freq(cfg)
        .into_iter()
        .map(|f| f as f32)
        .collect();
    let d = cfg.head_dim;
    let n = cfg.max_positions;
    let (mut cos, mut sin) = (vec![0f32; n * d], vec![0f32; n * d]);
    for p in 0..n {
        for (i, &f) in inv.iter().enumerate() {
            let a = (p as f32 * f) as f64;
            for j in [i, i + d / 2] {
                cos[p * d + j] = a.cos() as f32;
                sin[p * d + j] = a.sin() as f32;
            }
        }
    }
    (cos, sin)
}

/// `x * cos + rotate_half(x) * sin` for `x` `[B, S, N, D]`, tables `[S, D]` (shared by
/// the batch) or `[B, S, D]` (per-row positions).
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor, GraphError> {
    let d = x.dims()[3].max_value();
    let (x1, x2) = (x.narrow(-1, 0, d / 2)?, x.narrow(-1, d / 2, d / 2)?);
    let rotated = Tensor::concat(&[x2.neg()?, x1], -1)?;
    let lead: Vec<Dim> = if cos.rank() == 3 {
        cos.dims()[..2].to_vec()
    } else {
        vec![Dim::Const(1), cos.dims()[0].clone()]
    };
    let table = |t: &Tensor| {
        let mut dims = lead.clone();
        dims.extend([Dim::Const(1), Dim::Const(d)]);
        t.reshape(Shape(dims))
    };
    x.mul(&table(cos)?)?.add(&rotated.mul(&table(sin)?)?)
}

/// Where a forward's keys and values come from.
pub enum Context<'a> {
    /// A full sequence starting at position 0: keys are the sequence's own.
    Prefill {
        /// Left padding of unequal prompts, if any.
        padding: Option<Padding<'a>>,
        /// When given, each layer's attention weights `[B, heads, S, S]` are recorded here
        /// (see `attention::causal_attention_weights`).
        weights: Option<&'a std::cell::RefCell<Vec<Tensor>>>,
    },
    /// One new token per row at position `pos` (a symbol): keys are the cache's first `pos`
    /// rows followed by the new one. `caches[l]` = (K, V) inputs `[B, ctx, KV, D]`.
    Decode {
        /// The position symbol.
        pos: &'a Dim,
        /// Per-layer cache inputs.
        caches: &'a [(Tensor, Tensor)],
        /// Left padding of the batch, if any.
        padding: Option<Padding<'a>>,
    },
}

/// Left padding of a batch of unequal prompts: per-token positions `[B, S]` (i32, position
/// within the row's own text) and per-row pad lengths `[B]` (i32; keys before it are hidden).
#[derive(Clone, Copy)]
pub struct Padding<'a> {
    /// Position of each token within its row's real text.
    pub positions: &'a Tensor,
    /// Number of padding tokens at the start of each row.
    pub pad: &'a Tensor,
}

impl Context<'_> {
    /// The batch's padding, if any.
    pub fn padding(&self) -> Option<Padding<'_>> {
        match self {
            Context::Prefill { padding, .. } | Context::Decode { padding, .. } => *padding,
        }
    }

    /// True for the full-sequence forward.
    pub fn is_prefill(&self) -> bool {
        matches!(self, Context::Prefill { .. })
    }
}

/// Logits plus, per layer, the new keys (after RoPE) and values `[B, S, KV, D]` (prefill,
/// for the caller to write into its cache) or the in-place cache writes (decode; realize them
/// as outputs so they run).
pub fn forward_kv(
    cfg: &LlamaConfig,
    w: &Weights,
    g: &Graph,
    tokens: &Tensor,
    ctx: &Context,
) -> Result<(Tensor, Vec<(Tensor, Tensor)>), GraphError> {
    let s = tokens.dims()[1].clone();
    let eps = cfg.rms_norm_eps;
    let (nh, kv, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
    let start = match ctx {
        Context::Prefill { .. } => Dim::Const(0),
        Context::Decode { pos, .. } => (*pos).clone(),
    };
    let embed_scope = g.scope("embed");
    // Padded rows look their positions up per token; otherwise one shared window.
    let (cos, sin) = match ctx.padding() {
        Some(p) => (
            w.tensor(g, "rope.cos")?.gather_rows(p.positions)?,
            w.tensor(g, "rope.sin")?.gather_rows(p.positions)?,
        ),
        None => (
            w.tensor(g, "rope.cos")?
                .narrow(0, start.clone(), s.clone())?,
            w.tensor(g, "rope.sin")?
                .narrow(0, start.clone(), s.clone())?,
        ),
    };
    let mut h = w
        .tensor(g, "model.embed_tokens.weight")?
        .gather_rows(tokens)?;
    drop(embed_scope);
    let mut new_kv = Vec::with_capacity(cfg.layers);
    for l in 0..cfg.layers {
        let _layer = g.scope(&format!("layer.{l}"));
        let attn = g.scope("attn");
        let p = |n: &str| format!("model.layers.{l}.{n}");
        let x = h.rms_norm(&w.tensor(g, &p("input_layernorm.weight"))?, eps)?;
        let q = split_heads(
            &x.matmul(&w.linear(g, &p("self_attn.q_proj.weight"))?)?,
            nh,
            hd,
        )?;
        let k = split_heads(
            &x.matmul(&w.linear(g, &p("self_attn.k_proj.weight"))?)?,
            kv,
            hd,
        )?;
        let v = split_heads(
            &x.matmul(&w.linear(g, &p("self_attn.v_proj.weight"))?)?,
            kv,
            hd,
        )?;
        let (q, k) = (apply_rope(&q, &cos, &sin)?, apply_rope(&k, &cos, &sin)?);
        let (a, kv) = attend(ctx, l, &q, k, v)?;
        new_kv.push(kv);
        h = h.add(&a.matmul(&w.linear(g, &p("self_attn.o_proj.weight"))?)?)?;
        drop(attn);
        let _mlp = g.scope("mlp");
        let x = h.rms_norm(&w.tensor(g, &p("post_attention_layernorm.weight"))?, eps)?;
        let gate = x.matmul(&w.linear(g, &p("mlp.gate_proj.weight"))?)?;
        let up = x.matmul(&w.linear(g, &p("mlp.up_proj.weight"))?)?;
        let m = gate.silu()?.mul(&up)?;
        h = h.add(&m.matmul(&w.linear(g, &p("mlp.down_proj.weight"))?)?)?;
    }
    let _head = g.scope("head");
    let h = h.rms_norm(&w.tensor(g, "model.norm.weight")?, eps)?;
    let head = if cfg.tie_word_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    Ok((h.matmul(&w.linear(g, head)?)?, new_kv))
}

/// Logits `[B, S, vocab]` of a full-sequence forward over i32 `tokens` `[B, S]`.
pub fn forward(
    cfg: &LlamaConfig,
    w: &Weights,
    g: &Graph,
    tokens: &Tensor,
) -> Result<Tensor, GraphError> {
    let ctx = Context::Prefill {
        padding: None,
        weights: None,
    };
    Ok(forward_kv(cfg, w, g, tokens, &ctx)?.0)
}

/// One decode step on its own graph: `tokens` `[batch, 1]` at symbolic position `pos` over
/// caches `cache.{l}.k`/`.v` of `ctx` positions; returns the graph and the outputs a step
/// realizes (logits, then each layer's key and value cache writes).
pub fn decode_step_graph(
    cfg: &LlamaConfig,
    w: &Weights,
    batch: usize,
    ctx: usize,
) -> Result<(Graph, Vec<Tensor>), GraphError> {
    use cranegrad_graph::{DType, Symbol};
    let g = Graph::new();
    let pos = Symbol::new("pos", 0, ctx as i64 - 1)?;
    let tokens = g.input("tokens", Shape::of(&[batch, 1]), DType::I32);
    let shape = Shape::of(&[batch, ctx, cfg.kv_heads, cfg.head_dim]);
    let caches: Vec<_> = (0..cfg.layers)
        .map(|l| {
            (
                g.input(&format!("cache.{l}.k"), shape.clone(), DType::F32),
                g.input(&format!("cache.{l}.v"), shape.clone(), DType::F32),
            )
        })
        .collect();
    let p = Dim::sym(&pos);
    let step = Context::Decode {
        pos: &p,
        caches: &caches,
        padding: None,
    };
    let (logits, writes) = forward_kv(cfg, w, &g, &tokens, &step)?;
    let mut outs = vec![logits];
    for (k, v) in writes {
        outs.push(k);
        outs.push(v);
    }
    Ok((g, outs))
}
