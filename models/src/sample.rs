//! Sampling the next token: greedy, temperature, top-k, top-p (nucleus) and repetition
//! penalty, from a seeded ChaCha8 stream so the same seed gives the same text.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// Sampling settings.
#[derive(Clone, Debug)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1.0 = all).
    pub top_p: f32,
    /// Divide positive logits (multiply negative ones) of already-seen tokens by this.
    pub repetition_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
        }
    }
}

/// A seeded sampler.
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

/// Applies the repetition penalty of HF's `RepetitionPenaltyLogitsProcessor`.
pub fn apply_repetition_penalty(logits: &mut [f32], seen: &[i32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut done = std::collections::BTreeSet::new();
    for &t in seen {
        if t >= 0 && (t as usize) < logits.len() && done.insert(t) {
            let l = &mut logits[t as usize];
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

/// The probabilities that survive temperature, top-k and top-p, as `(token, prob)` sorted by
/// probability (descending, ties by token id), renormalised.
pub fn candidates(logits: &[f32], p: &SamplingParams) -> Vec<(usize, f32)> {
    let t = p.temperature.max(1e-6);
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if p.top_k > 0 {
        idx.truncate(p.top_k);
    }
    let m = logits[idx[0]];
    let w: Vec<f64> = idx
        .iter()
        .map(|&i| (((logits[i] - m) / t) as f64).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let mut out = Vec::with_capacity(idx.len());
    let mut cum = 0.0;
    for (&i, &wi) in idx.iter().zip(&w) {
        let pr = wi / total;
        out.push((i, pr));
        cum += pr;
        // A hair of slack so a set that reaches p exactly (up to rounding) counts.
        if cum >= p.top_p as f64 - 1e-6 {
            break;
        }
    }
    let s: f64 = out.iter().map(|x| x.1).sum();
    out.into_iter()
        .map(|(i, pr)| (i, (pr / s) as f32))
        .collect()
}

impl Sampler {
    /// A sampler seeded with `seed`.
    pub fn new(params: SamplingParams, seed: u64) -> Sampler {
        Sampler {
            params,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The next token from `logits` given the tokens `seen` so far in this row.
    pub fn sample(&mut self, logits: &[f32], seen: &[i32]) -> i32 {
        let mut l = logits.to_vec();
        apply_repetition_penalty(&mut l, seen, self.params.repetition_penalty);
        if self.params.temperature <= 0.0 {
            return crate::run::argmax(&l) as i32;
        }
        let c = candidates(&l, &self.params);
        let u = (self.rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
        let mut cum = 0.0;
        for &(i, p) in &c {
            cum += p;
            if u < cum {
                return i as i32;
            }
        }
        c.last().map_or(0, |x| x.0 as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // Softmax of [ln 5, ln 3, ln 2] = [0.5, 0.3, 0.2].
        let l = [5f32.ln(), 3f32.ln(), 2f32.ln()];
        let p = |top_p| SamplingParams {
            temperature: 1.0,
            top_p,
            ..Default::default()
        };
        assert_eq!(candidates(&l, &p(0.5)).len(), 1);
        assert_eq!(candidates(&l, &p(0.51)).len(), 2);
        assert_eq!(candidates(&l, &p(0.8)).len(), 2);
        assert_eq!(candidates(&l, &p(0.81)).len(), 3);
        let c = candidates(&l, &p(0.8));
        assert!((c[0].1 - 0.625).abs() < 1e-6 && (c[1].1 - 0.375).abs() < 1e-6);
    }

    #[test]
    fn top_k_and_temperature() {
        let l = [1.0f32, 3.0, 2.0, 0.0];
        let c = candidates(
            &l,
            &SamplingParams {
                temperature: 1.0,
                top_k: 2,
                ..Default::default()
            },
        );
        assert_eq!(c.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2]);
        // Temperature -> 0 concentrates on the argmax.
        let c = candidates(
            &l,
            &SamplingParams {
                temperature: 1e-4,
                ..Default::default()
            },
        );
        assert!(c[0].0 == 1 && c[0].1 > 0.999_999);
        let mut s = Sampler::new(
            SamplingParams {
                temperature: 1e-4,
                ..Default::default()
            },
            7,
        );
        assert!((0..50).all(|_| s.sample(&l, &[]) == 1));
    }

    #[test]
    fn sampling_follows_the_distribution_and_the_seed() {
        let l = [5f32.ln(), 3f32.ln(), 2f32.ln()];
        let params = SamplingParams {
            temperature: 1.0,
            ..Default::default()
        };
        let mut s = Sampler::new(params.clone(), 42);
        let mut counts = [0usize; 3];
        for _ in 0..20000 {
            counts[s.sample(&l, &[]) as usize] += 1;
        }
        for (c, want) in counts.iter().zip([0.5, 0.3, 0.2]) {
            assert!((*c as f64 / 20000.0 - want).abs() < 0.015, "{counts:?}");
        }
        let draw = |seed| {
            let mut s = Sampler::new(params.clone(), seed);
            (0..32).map(|_| s.sample(&l, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn repetition_penalty_matches_hf() {
        let mut l = vec![2.0f32, -2.0, 1.0];
        apply_repetition_penalty(&mut l, &[0, 1, 0], 2.0);
        assert_eq!(l, vec![1.0, -4.0, 1.0]);
    }
}
