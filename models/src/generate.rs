//! Text generation with a KV cache: the prompt runs as one prefill forward, then one decode
//! step per token. The decode step is one graph with a symbolic position `pos`, built and
//! compiled once; every later token only binds `pos` and the inputs, so nothing recompiles.

use cranegrad_graph::{Bindings, DType, Dim, Graph, GraphError, HostData, Shape, Symbol, Tensor};
use cranegrad_runtime::{Feeds, Session};

use crate::llama::{Context, Padding};
use crate::loader::ModelConfig;
use crate::run::check_tokens;
use crate::{Model, ModelError, gpt2, llama};

/// The decode-step graph, built once per generator.
struct DecodeStep {
    _graph: Graph,
    logits: Tensor,
    writes: Vec<(Tensor, Tensor)>,
    pos: Symbol,
    captured: Option<cranegrad_runtime::Captured>,
}

/// A batch of sequences being generated. The KV caches are session states (`cache.L.k`,
/// `cache.L.v`, `[batch, ctx, kv_heads, head_dim]`) that the step's kernels append to in
/// place, so one session runs one generator at a time.
pub struct Generator<'m> {
    model: &'m Model,
    batch: usize,
    ctx: usize,
    kv_heads: usize,
    head_dim: usize,
    layers: usize,
    /// Tokens already in the cache (the next position).
    pos: usize,
    decode: Option<DecodeStep>,
    /// Left padding per row when the prompts had unequal lengths (empty otherwise).
    pad: Vec<i32>,
}

fn kv_shape(model: &Model) -> (usize, usize, usize) {
    match &model.config {
        ModelConfig::Llama(c) => (c.layers, c.kv_heads, c.head_dim),
        ModelConfig::Gpt2(c) => (c.n_layer, c.n_head, c.head_dim()),
    }
}

fn forward_kv(
    model: &Model,
    g: &Graph,
    tokens: &Tensor,
    ctx: &Context,
) -> Result<(Tensor, Vec<(Tensor, Tensor)>), GraphError> {
    match &model.config {
        ModelConfig::Llama(c) => llama::forward_kv(c, &model.weights, g, tokens, ctx),
        ModelConfig::Gpt2(c) => gpt2::forward_kv(c, &model.weights, g, tokens, ctx),
    }
}

impl<'m> Generator<'m> {
    /// The plan key of the captured decode step, once a step has run.
    pub fn decode_plan_key(&self) -> Option<&str> {
        let c = self.decode.as_ref()?.captured.as_ref()?;
        Some(cranegrad_runtime::Session::captured_key(c))
    }

    /// A generator for `batch` rows with a cache of `ctx` positions (at most the model's);
    /// creates the cache states in `session`.
    pub fn new(
        model: &'m Model,
        session: &mut Session,
        batch: usize,
        ctx: usize,
    ) -> Result<Self, ModelError> {
        if ctx == 0 || ctx > model.max_positions() {
            return Err(ModelError::Input(format!(
                "--ctx {ctx} is outside 1..={}",
                model.max_positions()
            )));
        }
        let (layers, kv_heads, head_dim) = kv_shape(model);
        for l in 0..layers {
            for kv in ["k", "v"] {
                session.set_state(
                    &format!("cache.{l}.{kv}"),
                    batch * ctx * kv_heads * head_dim,
                );
            }
        }
        Ok(Generator {
            model,
            batch,
            ctx,
            kv_heads,
            head_dim,
            layers,
            pos: 0,
            decode: None,
            pad: Vec::new(),
        })
    }

    /// Tokens in the cache so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Forgets the cached positions from `to` on, so the next tokens are written from there
    /// (a chat turn whose rendering differs from what the cache holds after `to` tokens).
    /// Decoding attends to positions below the current one only, so what lies beyond needs
    /// no clearing.
    pub fn rewind(&mut self, to: usize) -> Result<(), ModelError> {
        if to > self.pos || self.pad.iter().any(|&p| p != 0) {
            return Err(ModelError::Input(format!(
                "cannot rewind the cache from position {} to {to}",
                self.pos
            )));
        }
        self.pos = to;
        Ok(())
    }

    fn cache_inputs(&self, g: &Graph) -> Vec<(Tensor, Tensor)> {
        let shape = Shape::of(&[self.batch, self.ctx, self.kv_heads, self.head_dim]);
        (0..self.layers)
            .map(|l| {
                (
                    g.input(&format!("cache.{l}.k"), shape.clone(), DType::F32),
                    g.input(&format!("cache.{l}.v"), shape.clone(), DType::F32),
                )
            })
            .collect()
    }

    fn run(
        &mut self,
        session: &mut Session,
        logits: &Tensor,
        writes: &[(Tensor, Tensor)],
        feeds: &Feeds,
        bindings: &Bindings,
        s: usize,
    ) -> Result<Vec<f32>, ModelError> {
        let mut outs: Vec<&Tensor> = vec![logits];
        for (k, v) in writes {
            outs.push(k);
            outs.push(v);
        }
        if session.frees_raw_weights() {
            // Packing first lets the session free each raw weight as soon as it is packed.
            session.prepack(&outs, feeds)?;
        }
        let vals = session.realize(&outs, feeds, bindings)?;
        self.pos += s;
        // Only each row's last position is needed for sampling.
        let vocab = self.model.vocab();
        let per = logits.dims()[1].max_value();
        let all = vals[0]
            .as_f32()
            .ok_or_else(|| ModelError::Input("logits are not f32".into()))?;
        Ok((0..self.batch)
            .flat_map(|b| all[(b * per + per - 1) * vocab..(b * per + per) * vocab].to_vec())
            .collect())
    }

    /// Runs the prompt (one forward over the whole batch, its keys and values written into
    /// the caches) and returns the last position's logits `[B, vocab]`.
    /// Prompts of unequal length are left-padded: the padding is masked out of attention
    /// and every row's positions count from its own first token.
    pub fn prefill(
        &mut self,
        session: &mut Session,
        prompt: &[Vec<i32>],
    ) -> Result<Vec<f32>, ModelError> {
        let s = prompt.iter().map(Vec::len).max().unwrap_or(0);
        let pad: Vec<i32> = prompt.iter().map(|r| (s - r.len()) as i32).collect();
        let padded_rows: Vec<Vec<i32>> = prompt
            .iter()
            .map(|r| {
                let mut v = vec![0; s - r.len()];
                v.extend(r);
                v
            })
            .collect();
        if prompt.iter().any(Vec::is_empty) {
            return Err(ModelError::Input(
                "every prompt needs at least one token".into(),
            ));
        }
        let prompt = &padded_rows[..];
        let (b, s) = check_tokens(self.model, prompt)?;
        if pad.iter().any(|&p| p > 0) {
            self.pad = pad;
        }
        if b != self.batch || self.pos != 0 {
            return Err(ModelError::Input(format!(
                "prefill expects {} rows on an empty cache",
                self.batch
            )));
        }
        if s > self.ctx {
            return Err(ModelError::Input(format!(
                "prompt of {s} tokens exceeds --ctx {}",
                self.ctx
            )));
        }
        let g = Graph::new();
        let tokens = g.input("tokens", Shape::of(&[b, s]), DType::I32);
        let positions = g.input("positions", Shape::of(&[b, s]), DType::I32);
        let pad_t = g.input("pad", Shape::of(&[b]), DType::I32);
        let padding = (!self.pad.is_empty()).then_some(Padding {
            positions: &positions,
            pad: &pad_t,
        });
        let (logits, new_kv) = forward_kv(
            self.model,
            &g,
            &tokens,
            &Context::Prefill {
                padding,
                weights: None,
            },
        )?;
        // Sampling needs each row's last position only; the compiler's slice sinking then runs
        // the final norm and the vocabulary projection over that one row.
        let logits = logits.narrow(1, s - 1, 1)?;
        let zero = [Dim::Const(0), Dim::Const(0), Dim::Const(0), Dim::Const(0)];
        let writes = self
            .cache_inputs(&g)
            .into_iter()
            .zip(&new_kv)
            .map(|((ck, cv), (k, v))| Ok((ck.write_slice(k, &zero)?, cv.write_slice(v, &zero)?)))
            .collect::<Result<Vec<_>, GraphError>>()?;
        let mut feeds = Feeds::new();
        feeds.insert("tokens".into(), HostData::from(prompt.concat()));
        self.feed_padding(&mut feeds, s, 0);
        self.run(session, &logits, &writes, &feeds, &Bindings::new(), s)
    }

    /// Feeds `positions` (`[B, s]` from cache position `from`) and `pad` for padded batches.
    fn feed_padding(&self, feeds: &mut Feeds, s: usize, from: usize) {
        if self.pad.is_empty() {
            return;
        }
        let positions: Vec<i32> = self
            .pad
            .iter()
            .flat_map(|&p| (0..s).map(move |i| ((from + i) as i32 - p).max(0)))
            .collect();
        feeds.insert("positions".into(), HostData::from(positions));
        feeds.insert("pad".into(), HostData::from(self.pad.clone()));
    }

    fn build_decode(&self) -> Result<DecodeStep, ModelError> {
        let pos = Symbol::new("pos", 0, self.ctx as i64 - 1)?;
        let g = Graph::new();
        let tokens = g.input("tokens", Shape::of(&[self.batch, 1]), DType::I32);
        let caches = self.cache_inputs(&g);
        let pos_dim = Dim::sym(&pos);
        let positions = g.input("positions", Shape::of(&[self.batch, 1]), DType::I32);
        let pad_t = g.input("pad", Shape::of(&[self.batch]), DType::I32);
        let padding = (!self.pad.is_empty()).then_some(Padding {
            positions: &positions,
            pad: &pad_t,
        });
        let (logits, writes) = forward_kv(
            self.model,
            &g,
            &tokens,
            &Context::Decode {
                pos: &pos_dim,
                caches: &caches,
                padding,
            },
        )?;
        Ok(DecodeStep {
            _graph: g,
            logits,
            writes,
            pos,
            captured: None,
        })
    }

    /// One decode step: appends `tokens` (one per row) and returns the logits `[B, vocab]`
    /// for the next position.
    pub fn step(&mut self, session: &mut Session, tokens: &[i32]) -> Result<Vec<f32>, ModelError> {
        check_tokens(self.model, &[tokens.to_vec()])?;
        if tokens.len() != self.batch {
            return Err(ModelError::Input(format!(
                "decode step needs {} tokens, got {}",
                self.batch,
                tokens.len()
            )));
        }
        if self.pos >= self.ctx {
            return Err(ModelError::Input(format!(
                "the KV cache of {} positions is full",
                self.ctx
            )));
        }
        if self.decode.is_none() {
            self.decode = Some(self.build_decode()?);
        }
        let mut step = self.decode.take().expect("built above");
        let mut feeds = Feeds::new();
        feeds.insert("tokens".into(), HostData::from(tokens.to_vec()));
        self.feed_padding(&mut feeds, 1, self.pos);
        let bindings = Bindings::from([(step.pos.name.clone(), self.pos as i64)]);
        // Captured once; every later token replays the plan (no graph walk, no hashing).
        let r = (|| {
            if step.captured.is_none() {
                let mut outs: Vec<&Tensor> = vec![&step.logits];
                for (k, v) in &step.writes {
                    outs.push(k);
                    outs.push(v);
                }
                step.captured = Some(session.capture(&outs)?);
            }
            let c = step.captured.as_ref().expect("captured above");
            let vals = session.replay(c, &feeds, &bindings)?;
            self.pos += 1;
            let all = vals[0]
                .as_f32()
                .ok_or_else(|| ModelError::Input("logits are not f32".into()))?;
            Ok(all.to_vec())
        })();
        self.decode = Some(step);
        r
    }
}

/// Greedy generation with the KV cache: prompt + `new` tokens per row.
pub fn greedy(
    session: &mut Session,
    model: &Model,
    prompt: &[Vec<i32>],
    new: usize,
    ctx: usize,
) -> Result<Vec<Vec<i32>>, ModelError> {
    let mut seqs = prompt.to_vec();
    let mut g = Generator::new(model, session, prompt.len(), ctx)?;
    let v = model.vocab();
    let mut logits = g.prefill(session, prompt)?;
    for i in 0..new {
        let next: Vec<i32> = (0..prompt.len())
            .map(|b| crate::run::argmax(&logits[b * v..(b + 1) * v]) as i32)
            .collect();
        for (s, &t) in seqs.iter_mut().zip(&next) {
            s.push(t);
        }
        if i + 1 < new {
            logits = g.step(session, &next)?;
        }
    }
    Ok(seqs)
}
