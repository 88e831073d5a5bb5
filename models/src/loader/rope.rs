//! RoPE inverse frequencies, computed the way transformers' `modeling_rope_utils` does.
//!
//! HF evaluates these in float32 torch arithmetic, so every step here is rounded to f32 in the
//! same order (`x / y` with a Python scalar on the left is torch's `reciprocal(y) * x`). The
//! result is widened to f64 losslessly: a caller that casts back to f32 gets HF's values, and
//! one that stays in f64 gets them without further rounding.

use super::config::{LlamaConfig, RopeScaling};

/// The `head_dim / 2` inverse frequencies HF's rotary embedding uses for this config.
pub fn rope_inv_freq(cfg: &LlamaConfig) -> Vec<f64> {
    let base = default_inv_freq(cfg.rope_theta, cfg.head_dim);
    let scaled: Vec<f32> = match &cfg.rope_scaling {
        RopeScaling::None => base,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => llama3(
            &base,
            *factor,
            *low_freq_factor,
            *high_freq_factor,
            *original_max_position_embeddings as f64,
        ),
        // llama.cpp divides theta by the factor (`theta / freq_factors[i]`).
        RopeScaling::FreqFactors(factors) => base
            .iter()
            .zip(factors.iter().chain(std::iter::repeat(&1.0)))
            .map(|(&f, &d)| f / d as f32)
            .collect(),
    };
    scaled.into_iter().map(f64::from).collect()
}

/// `1.0 / (base ** (arange(0, dim, 2).float() / dim))` in f32.
fn default_inv_freq(theta: f64, dim: usize) -> Vec<f32> {
    let base = theta as f32;
    let dim_f = dim as f32;
    (0..dim)
        .step_by(2)
        .map(|i| {
            let exponent = i as f32 / dim_f;
            1.0f32 / base.powf(exponent)
        })
        .collect()
}

/// `_compute_llama3_parameters`: keep high frequencies, divide low ones by `factor`, blend
/// smoothly in between.
fn llama3(inv_freq: &[f32], factor: f64, low: f64, high: f64, old_ctx: f64) -> Vec<f32> {
    let factor_f = factor as f32;
    let low_freq_wavelen = (old_ctx / low) as f32;
    let high_freq_wavelen = (old_ctx / high) as f32;
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    let old_ctx_f = old_ctx as f32;
    let low_f = low as f32;
    let span = (high - low) as f32;
    inv_freq
        .iter()
        .map(|&f| {
            let wavelen = (1.0f32 / f) * two_pi;
            let inv = if wavelen > low_freq_wavelen {
                f / factor_f
            } else {
                f
            };
            let is_medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
            if is_medium {
                let smooth = ((1.0f32 / wavelen) * old_ctx_f - low_f) / span;
                (1.0 - smooth) * inv / factor_f + smooth * inv
            } else {
                inv
            }
        })
        .collect()
}
