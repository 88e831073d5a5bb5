//! Attention maps come from the fused attention kernel (run with an identity as its values)
//! and equal the softmax of the scaled, causally masked scores, computed here in f64 from the
//! same queries and keys; a model's maps are rows of probabilities over the visible keys.

use cranegrad_graph::{Bindings, Graph, Shape, Tensor, lcg_values};
use cranegrad_lower::{LowerOptions, lower_tensors};
use cranegrad_models::Model;
use cranegrad_models::attention::causal_attention_weights;
use cranegrad_models::attention_maps::attention_maps;
use cranegrad_runtime::{Feeds, Session, SessionOptions};

fn session() -> Session {
    Session::new(SessionOptions {
        fuse: true,
        threads: 2,
    })
    .unwrap()
}

#[test]
fn weights_are_the_masked_softmax_and_come_from_one_attention_kernel() {
    // 6 queries and keys, 3 query heads sharing 1 key head (GQA), head_dim 5 (odd).
    let (s, h, kv, d) = (6usize, 3usize, 1usize, 5usize);
    let qv = lcg_values(s * h * d, 11, 2.0);
    let kvals = lcg_values(s * kv * d, 12, 2.0);
    let g = Graph::new();
    let q = g
        .input_with_data("q", Shape::of(&[1, s, h, d]), qv.clone())
        .unwrap();
    let k = g
        .input_with_data("k", Shape::of(&[1, s, kv, d]), kvals.clone())
        .unwrap();
    let w: Tensor = causal_attention_weights(&q, &k, None).unwrap();
    let l = lower_tensors(&[&w], LowerOptions::default()).unwrap();
    let attention_kernels = l
        .schedule
        .launches
        .iter()
        .filter(|l| l.kernel.attention().is_some())
        .count();
    assert_eq!(
        attention_kernels, 1,
        "the weights are the fused kernel's output"
    );
    let got = session()
        .realize(&[&w], &Feeds::new(), &Bindings::new())
        .unwrap()[0]
        .to_f32();
    assert_eq!(got.len(), h * s * s);
    let scale = 1.0 / (d as f64).sqrt();
    for head in 0..h {
        for i in 0..s {
            let scores: Vec<f64> = (0..=i)
                .map(|j| {
                    (0..d)
                        .map(|c| {
                            f64::from(qv[(i * h + head) * d + c]) * f64::from(kvals[j * d + c])
                        })
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = scores.iter().map(|x| (x - m).exp()).sum();
            for j in 0..s {
                let want = scores.get(j).map_or(0.0, |x| (x - m).exp() / z);
                let at = (head * s + i) * s + j;
                assert!(
                    (f64::from(got[at]) - want).abs() <= 2e-6,
                    "head {head} query {i} key {j}: {} vs {want}",
                    got[at]
                );
            }
        }
    }
}

#[test]
fn a_models_maps_are_probability_rows_over_the_visible_keys() {
    let model = Model::load("small", 0).unwrap();
    let tokens: Vec<i32> = (0..9).map(|i| (i * 7 + 3) % 128).collect();
    let maps = attention_maps(&model, &mut session(), &tokens).unwrap();
    assert_eq!(maps.len(), 2, "one map per layer");
    for m in &maps {
        assert_eq!((m.len, m.weights.len()), (9, m.heads * 81));
        for h in 0..m.heads {
            for q in 0..9 {
                let row: f32 = (0..=q).map(|k| m.at(h, q, k)).sum();
                assert!((row - 1.0).abs() < 1e-5, "row sum {row}");
                assert!(
                    (q + 1..9).all(|k| m.at(h, q, k) == 0.0),
                    "future keys hidden"
                );
                assert!((0..=q).all(|k| m.at(h, q, k) >= 0.0));
            }
        }
    }
    // Not uniform: the model's scores differ by position.
    assert!(
        maps[0]
            .weights
            .iter()
            .any(|&w| (w - maps[0].at(0, 8, 0)).abs() > 1e-3)
    );
}
