//! GPT-2 on the Tensor API: LayerNorm, learned positions, Conv1D (`[in, out]`) projections,
//! `gelu_new` (tanh GELU) and the LM head (tied to `wte` unless the config unties it).

use cranegrad_graph::{Dim, Graph, GraphError, Tensor};

use crate::attention::{attend, split_heads};
use crate::llama::Context;
use crate::loader::Gpt2Config;
use crate::weights::Weights;

/// `x @ W + b` with a Conv1D weight.
fn conv1d(w: &Weights, g: &Graph, x: &Tensor, name: &str) -> Result<Tensor, GraphError> {
    x.matmul(&w.tensor(g, &format!("{name}.weight"))?)?
        .add(&w.tensor(g, &format!("{name}.bias"))?)
}

/// Logits plus each layer's new keys and values `[B, S, H, D]` (see `llama::forward_kv`).
pub fn forward_kv(
    cfg: &Gpt2Config,
    w: &Weights,
    g: &Graph,
    tokens: &Tensor,
    ctx: &Context,
) -> Result<(Tensor, Vec<(Tensor, Tensor)>), GraphError> {
    let s = tokens.dims()[1].clone();
    let (nh, hd, e) = (cfg.n_head, cfg.head_dim(), cfg.n_embd);
    let eps = cfg.layer_norm_epsilon;
    let start = match ctx {
        Context::Prefill { .. } => Dim::Const(0),
        Context::Decode { pos, .. } => (*pos).clone(),
    };
    let embed_scope = g.scope("embed");
    let pos_emb = match ctx.padding() {
        Some(p) => w.tensor(g, "wpe.weight")?.gather_rows(p.positions)?,
        None => w.tensor(g, "wpe.weight")?.narrow(0, start, s.clone())?,
    };
    let mut h = w
        .tensor(g, "wte.weight")?
        .gather_rows(tokens)?
        .add(&pos_emb)?;
    drop(embed_scope);
    let ln = |x: &Tensor, name: &str| -> Result<Tensor, GraphError> {
        x.layer_norm(
            &w.tensor(g, &format!("{name}.weight"))?,
            &w.tensor(g, &format!("{name}.bias"))?,
            eps,
        )
    };
    let mut new_kv = Vec::with_capacity(cfg.n_layer);
    for l in 0..cfg.n_layer {
        let _layer = g.scope(&format!("layer.{l}"));
        let attn = g.scope("attn");
        let p = |n: &str| format!("h.{l}.{n}");
        let x = ln(&h, &p("ln_1"))?;
        let qkv = conv1d(w, g, &x, &p("attn.c_attn"))?;
        let q = split_heads(&qkv.narrow(-1, 0, e)?, nh, hd)?;
        let k = split_heads(&qkv.narrow(-1, e, e)?, nh, hd)?;
        let v = split_heads(&qkv.narrow(-1, 2 * e, e)?, nh, hd)?;
        let (a, kv) = attend(ctx, l, &q, k, v)?;
        new_kv.push(kv);
        h = h.add(&conv1d(w, g, &a, &p("attn.c_proj"))?)?;
        drop(attn);
        let _mlp = g.scope("mlp");
        let x = ln(&h, &p("ln_2"))?;
        let m = conv1d(w, g, &x, &p("mlp.c_fc"))?.gelu_tanh()?;
        h = h.add(&conv1d(w, g, &m, &p("mlp.c_proj"))?)?;
    }
    let _head = g.scope("head");
    let h = ln(&h, "ln_f")?;
    // Tied: HF reuses the embedding (and ignores any stored head); both are `[vocab, n_embd]`,
    // read transposed without a copy.
    let head = if cfg.tie_word_embeddings {
        "wte.weight"
    } else {
        "lm_head.weight"
    };
    Ok((h.matmul(&w.linear(g, head)?)?, new_kv))
}

/// Logits `[B, S, vocab]` of a full-sequence forward over i32 `tokens` `[B, S]`.
pub fn forward(
    cfg: &Gpt2Config,
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
