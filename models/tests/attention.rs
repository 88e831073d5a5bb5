//! Flash attention: causal, padded and full (decode-style, symbolic length) attention as the
//! models compose it runs as one kernel, and agrees with the reference interpreter and with the
//! three-kernel unfused-attention path on odd sizes, GQA and large-magnitude scores.

use cranegrad_graph::{Bindings, Dim, Graph, Shape, Symbol, Tensor};
use cranegrad_lower::{LowerOptions, lower_tensors};
use cranegrad_models::attention::{causal_attention, causal_attention_padded, full_attention};
use cranegrad_runtime::{Feeds, Session, SessionOptions, interpret_tensors};

fn input(g: &Graph, name: &str, dims: &[usize], seed: u64, scale: f32) -> Tensor {
    let n = dims.iter().product();
    g.input_with_data(
        name,
        Shape::of(dims),
        cranegrad_graph::lcg_values(n, seed, scale),
    )
    .unwrap()
}

/// Kernels of `t`'s schedule and how many of them are attention kernels.
fn kernels(t: &Tensor, attention: bool) -> (usize, usize) {
    let opts = LowerOptions {
        attention,
        ..Default::default()
    };
    let l = lower_tensors(&[t], opts).unwrap();
    let ls = &l.schedule.launches;
    (
        ls.len(),
        ls.iter().filter(|l| l.kernel.attention().is_some()).count(),
    )
}

/// Fused attention, unfused attention and the interpreter agree.
fn check(t: &Tensor, feeds: &Feeds, bindings: &Bindings) {
    let reference = interpret_tensors(&[t], feeds, bindings).unwrap()[0].to_f32();
    for attention in [true, false] {
        let mut s = Session::new(SessionOptions {
            fuse: true,
            threads: 2,
        })
        .unwrap();
        s.set_attention_fusion(attention);
        let got = s.realize(&[t], feeds, bindings).unwrap()[0].to_f32();
        let worst = got
            .iter()
            .zip(&reference)
            .map(|(a, b)| {
                if a.is_finite() != b.is_finite() {
                    f32::INFINITY
                } else {
                    (a - b).abs() / (1e-5 + 1e-4 * b.abs())
                }
            })
            .fold(0f32, f32::max);
        assert!(worst <= 1.0, "attention={attention}: {worst} x tolerance");
    }
}

#[test]
fn causal_attention_is_one_kernel_on_odd_sizes() {
    for &(s, h, kv, d) in &[
        (1usize, 2usize, 1usize, 4usize),
        (3, 6, 2, 7),
        (17, 4, 4, 16),
        (33, 8, 2, 32),
    ] {
        let g = Graph::new();
        let q = input(&g, "q", &[2, s, h, d], 1, 2.0);
        let k = input(&g, "k", &[2, s, kv, d], 2, 2.0);
        let v = input(&g, "v", &[2, s, kv, d], 3, 1.0);
        let out = causal_attention(&q, &k, &v).unwrap();
        // One attention kernel, and at most a copy when the output reshape merges axes
        // that the attention stores permuted (in a model the next matmul reads them as a view).
        let (total, att) = kernels(&out, true);
        assert!(
            att == 1 && total <= 2,
            "S {s}, heads {h}/{kv}, D {d}: {total}, {att}"
        );
        assert_eq!(kernels(&out, false).1, 0);
        assert!(kernels(&out, false).0 >= 3);
        check(&out, &Feeds::new(), &Bindings::new());
    }
}

#[test]
fn scores_near_eighty_and_padding_masks() {
    // Scores of +-80 and more overflow a naive exp; left padding hides the first keys.
    let g = Graph::new();
    let (b, s, h, d) = (3, 9, 4, 8);
    let q = input(&g, "q", &[b, s, h, d], 4, 12.0);
    let k = input(&g, "k", &[b, s, 2, d], 5, 12.0);
    let v = input(&g, "v", &[b, s, 2, d], 6, 3.0);
    let pad = g
        .input_with_data(
            "pad",
            Shape::of(&[b]),
            cranegrad_graph::HostData::from(vec![0, 2, 5]),
        )
        .unwrap();
    let out = causal_attention_padded(&q, &k, &v, Some(&pad)).unwrap();
    assert_eq!(kernels(&out, true).1, 1);
    check(&out, &Feeds::new(), &Bindings::new());
}

#[test]
fn full_attention_over_a_symbolic_cache_length() {
    // A decode step: one query over the first `n` rows of a 40-row cache, n bound at run time.
    let g = Graph::new();
    let n = Symbol::new("n", 1, 40).unwrap();
    let q = input(&g, "q", &[1, 1, 6, 12], 7, 2.0);
    let kc = input(&g, "kc", &[1, 40, 2, 12], 8, 2.0);
    let vc = input(&g, "vc", &[1, 40, 2, 12], 9, 1.0);
    let len = Dim::sym(&n);
    let k = kc.narrow(1, 0, len.clone()).unwrap();
    let v = vc.narrow(1, 0, len).unwrap();
    let out = full_attention(&q, &k, &v, None).unwrap();
    // The attention kernel, plus a copy: the `[B, S, H * D]` output merges permuted axes.
    assert_eq!(kernels(&out, true), (2, 1));
    for value in [1, 13, 40] {
        let mut bindings = Bindings::new();
        bindings.insert("n".into(), value as i64);
        check(&out, &Feeds::new(), &bindings);
    }
}

/// Whether the attention kernel of `t` reads K with consecutive keys adjacent (K stored
/// transposed, as a model's prefill writes the keys after RoPE).
fn keys_contiguous(t: &Tensor) -> bool {
    let l = lower_tensors(&[t], LowerOptions::default()).unwrap();
    let k = &l
        .schedule
        .launches
        .iter()
        .find(|l| l.kernel.attention().is_some())
        .expect("an attention kernel")
        .kernel;
    let a = k.attention().unwrap();
    match &k.exprs[a.k] {
        cranegrad_lower::kernel::Expr::Load { index, .. } => index.coeff(a.key_loop) == 1,
        _ => false,
    }
}

#[test]
fn keys_computed_in_the_graph_take_the_key_vector_path() {
    // Keys scaled in the graph (as RoPE rotates them) are written transposed for the kernel,
    // which then scores 4 keys per vector: odd lengths, GQA groups of 3, head_dim 64 and 80.
    for &(s, h, kv, d) in &[
        (37usize, 9usize, 3usize, 64usize),
        (21, 6, 3, 80),
        (130, 8, 2, 32),
        (5, 2, 1, 8),
    ] {
        let g = Graph::new();
        let q = input(&g, "q", &[2, s, h, d], 7, 2.0);
        let k = input(&g, "k", &[2, s, kv, d], 8, 2.0);
        let v = input(&g, "v", &[2, s, kv, d], 9, 1.0);
        let kscale = input(&g, "ks", &[s, 1, d], 10, 1.0);
        let qscale = input(&g, "qs", &[s, 1, d], 11, 1.0);
        let out = causal_attention(&q.mul(&qscale).unwrap(), &k.mul(&kscale).unwrap(), &v).unwrap();
        assert!(keys_contiguous(&out), "S {s}, heads {h}/{kv}, D {d}");
        check(&out, &Feeds::new(), &Bindings::new());
    }
}
