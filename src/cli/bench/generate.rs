//! Generate phase: `--requests` generation requests of `--gen-len` tokens each, the first of
//! which compiles the prefill and decode plans; the aggregate is over the others.

use std::time::Instant;

use serde::Serialize;

use cranegrad::stats::median;
use cranegrad::workload::sample_tokens;
use cranegrad_models::generate::Generator;
use cranegrad_models::sample::{Sampler, SamplingParams};
use cranegrad_runtime::Session;

use super::super::progress::bar;
use super::load::Loaded;
use super::ms_since;

/// Figures of one generation request.
#[derive(Serialize)]
pub struct RequestReport {
    /// Prefill plus the first sampled token, ms.
    pub ttft_ms: f64,
    /// Median decode step, ms, if there was one.
    pub decode_ms_per_token: Option<f64>,
    /// Tokens per second of the batch at that median.
    pub tokens_per_s: Option<f64>,
    /// Decode steps run.
    pub decode_steps: usize,
    /// Kernels compiled during the request (the first compiles prefill and decode).
    pub kernels_compiled: u64,
}

/// The aggregate over the warm requests, and every request. All `None` with `--gen-len 0`.
#[derive(Serialize)]
pub struct GenerationReport {
    /// Median TTFT of the warm requests, ms.
    pub ttft_ms: Option<f64>,
    /// Median decode step of the warm requests, ms.
    pub decode_ms_per_token: Option<f64>,
    /// `batch * 1000 / decode_ms_per_token`.
    pub tokens_per_s: Option<f64>,
    /// Weight bytes over the median decode step, GB/s.
    pub decode_weight_gbps: Option<f64>,
    /// Every request in order.
    pub requests: Option<Vec<RequestReport>>,
    /// Kernels of one decode step.
    pub kernels_fused_decode: Option<usize>,
    /// Plan key of the decode step (for the memory plot).
    #[serde(skip)]
    pub decode_plan: Option<String>,
}

/// Tokens per second of `batch` sequences at `decode_ms` per step.
pub fn tokens_per_s(batch: usize, decode_ms: f64) -> f64 {
    batch as f64 * 1000.0 / decode_ms
}

/// Runs the requests on `session`, whose caches the cold and warm phases filled.
pub fn generate(
    loaded: &Loaded,
    session: &mut Session,
    requests: usize,
) -> anyhow::Result<GenerationReport> {
    let (model, input) = (&loaded.model, &loaded.input);
    let (b, s, gen_len) = (input.batch_size, input.prompt_len, input.gen_len);
    if gen_len == 0 {
        return Ok(GenerationReport {
            ttft_ms: None,
            decode_ms_per_token: None,
            tokens_per_s: None,
            decode_weight_gbps: None,
            requests: None,
            kernels_fused_decode: None,
            decode_plan: None,
        });
    }
    let ctx = (s + gen_len).min(model.max_positions());
    let prompt: Vec<Vec<i32>> = sample_tokens(b, s, model.vocab())
        .chunks(s)
        .map(<[i32]>::to_vec)
        .collect();
    let pb = bar((requests * gen_len) as u64, "generate");
    let v = model.vocab();
    let mut decode_kernels = None;
    let mut decode_plan = None;
    let mut reports = Vec::with_capacity(requests);
    let mut steps: Vec<Vec<f64>> = Vec::with_capacity(requests);
    for r in 0..requests {
        // Ctrl-C: the aggregate is over the requests finished so far.
        if super::super::interrupt::pending() {
            break;
        }
        let misses = session.cache_stats().misses;
        let mut g = Generator::new(model, session, b, ctx)?;
        let mut sampler = Sampler::new(SamplingParams::default(), r as u64);
        let t0 = Instant::now();
        let mut logits = g.prefill(session, &prompt)?;
        let mut next: Vec<i32> = (0..b)
            .map(|i| sampler.sample(&logits[i * v..(i + 1) * v], &[]))
            .collect();
        let ttft_ms = ms_since(t0);
        pb.inc(1);
        let mut own = Vec::new();
        for _ in 1..gen_len {
            if super::super::interrupt::pending() {
                break;
            }
            let t = Instant::now();
            logits = g.step(session, &next)?;
            own.push(ms_since(t));
            next = (0..b)
                .map(|i| sampler.sample(&logits[i * v..(i + 1) * v], &[]))
                .collect();
            pb.inc(1);
            if decode_kernels.is_none() {
                decode_kernels = Some(session.last_report().kernels);
                decode_plan = g.decode_plan_key().map(str::to_string);
            }
        }
        let decode = (!own.is_empty()).then(|| median(&own));
        reports.push(RequestReport {
            ttft_ms,
            decode_ms_per_token: decode,
            tokens_per_s: decode.map(|d| tokens_per_s(b, d)),
            decode_steps: own.len(),
            kernels_compiled: session.cache_stats().misses - misses,
        });
        steps.push(own);
    }
    pb.finish_and_clear();
    // The aggregate is warm: requests after the first, whose prefill and decode steps compile
    // (with one request there is nothing else to report).
    let warm = if reports.len() > 1 { 1 } else { 0 };
    let ttfts: Vec<f64> = reports[warm..].iter().map(|r| r.ttft_ms).collect();
    let warm_steps: Vec<f64> = steps[warm..].iter().flatten().copied().collect();
    let decode = (!warm_steps.is_empty()).then(|| median(&warm_steps));
    Ok(GenerationReport {
        ttft_ms: (!ttfts.is_empty()).then(|| median(&ttfts)),
        decode_ms_per_token: decode,
        tokens_per_s: decode.map(|d| tokens_per_s(b, d)),
        // A decode step reads every packed GEMM weight once, in its packed format (the
        // bandwidth bound of batch-1 decode; norms and one embedding row are noise).
        decode_weight_gbps: decode.map(|d| session.packed().1 as f64 / d / 1e6),
        requests: Some(reports),
        kernels_fused_decode: decode_kernels,
        decode_plan,
    })
}
