//! The kernel text reads back: for every kernel the scheduler makes from graphs that hit each
//! fusion pattern (and every kernel body and expression kind), parsing its printed text gives
//! the same kernel, which prints the same text; and no text, however mangled, makes the
//! parser panic.

use cranegrad_graph::{DType, Dim, Graph, Shape, Symbol, Tensor, lcg_values};
use cranegrad_lower::kernel::{Expr, GemmPair, Kernel, KernelBody};
use cranegrad_lower::kernel_parse::{check_round_trip, parse_kernel_text};
use cranegrad_lower::{LowerOptions, lower_tensors};
use proptest::prelude::*;

/// Asserts that `k`'s text and key text read back and print the same again.
fn round_trip(k: &Kernel) {
    check_round_trip(k).unwrap_or_else(|e| panic!("{e}"));
}

/// Every kernel of `outs` lowered with `opts`, round-tripped; returns the kernels.
fn kernels_with(outs: &[&Tensor], opts: LowerOptions) -> Vec<Kernel> {
    let l = lower_tensors(outs, opts).unwrap();
    let ks: Vec<Kernel> = l
        .schedule
        .launches
        .iter()
        .map(|l| l.kernel.clone())
        .collect();
    for k in &ks {
        round_trip(k);
    }
    ks
}

/// Every kernel of `outs`, fused (the default), unfused and with attention unfused.
fn kernels(outs: &[&Tensor]) -> Vec<Kernel> {
    for opts in [
        LowerOptions {
            fuse: false,
            ..Default::default()
        },
        LowerOptions {
            attention: false,
            ..Default::default()
        },
    ] {
        kernels_with(outs, opts);
    }
    kernels_with(outs, LowerOptions::default())
}

fn weight(g: &Graph, name: &str, dims: &[usize], seed: u64) -> Tensor {
    let n = dims.iter().product();
    g.input_with_data(name, Shape::of(dims), lcg_values(n, seed, 1.0))
        .unwrap()
}

fn has_expr(ks: &[Kernel], f: impl Fn(&Expr) -> bool) -> bool {
    ks.iter()
        .flat_map(|k| k.bodies().iter().flat_map(|b| b.exprs.iter()))
        .any(f)
}

#[test]
fn elementwise_chain_of_every_op() {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[4, 8]), DType::F32);
    let b = g.input("b", Shape::of(&[8]), DType::F32);
    let y = x
        .mul(&b)
        .unwrap()
        .add_scalar(1.5)
        .unwrap()
        .relu()
        .unwrap()
        .exp()
        .unwrap()
        .log()
        .unwrap()
        .sqrt()
        .unwrap()
        .recip()
        .unwrap()
        .sin()
        .unwrap()
        .neg()
        .unwrap();
    let lt = y.cmplt(&x).unwrap();
    let w = lt.where_(&y, &x).unwrap();
    let i = w.cast(DType::I32).unwrap().cast(DType::F32).unwrap();
    let ks = kernels(&[&i]);
    assert_eq!(ks.len(), 1);
    assert!(has_expr(&ks, |e| matches!(e, Expr::Where { .. })));
    assert!(has_expr(&ks, |e| matches!(e, Expr::Unary { .. })));
}

#[test]
fn constants_of_every_kind() {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[3, 5]), DType::F32);
    let mut y = x.clone();
    for v in [
        f64::NAN,
        -f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        1e-300,
        1e20,
        f32::MIN as f64,
        0.1,
    ] {
        y = y.maximum(&x.scalar(v)).unwrap().add(&x.scalar(v)).unwrap();
    }
    let ks = kernels(&[&y]);
    assert!(has_expr(
        &ks,
        |e| matches!(e, Expr::Const { bits, .. } if f64::from_bits(*bits).is_nan())
    ));
    assert!(has_expr(
        &ks,
        |e| matches!(e, Expr::Const { bits, .. } if *bits == (-0.0f64).to_bits())
    ));
    // The graph canonicalises a NaN constant; a kernel may still hold any NaN's bits.
    let mut k = ks[0].clone();
    for e in &mut k.exprs {
        if let Expr::Const { bits, .. } = e
            && f64::from_bits(*bits).is_nan()
        {
            *bits = (-f64::NAN).to_bits();
        }
    }
    assert!(k.to_string().contains("NaN:0xfff8000000000000"), "{k}");
    round_trip(&k);
}

#[test]
fn row_kernels_softmax_norms() {
    let g = Graph::new();
    let x = weight(&g, "x", &[5, 16], 1);
    let gain = weight(&g, "g", &[16], 2);
    let bias = weight(&g, "b", &[16], 3);
    let s = x.mul_scalar(0.5).unwrap().softmax(-1).unwrap();
    let col = x.softmax(0).unwrap();
    let rms = x.rms_norm(&gain, 1e-5).unwrap();
    let ln = x.layer_norm(&gain, &bias, 1e-5).unwrap();
    let red = x.mul(&x).unwrap().sum(0, false).unwrap().sqrt().unwrap();
    for t in [&s, &col, &rms, &ln, &red] {
        assert_eq!(kernels(&[t]).len(), 1);
    }
    kernels(&[&s, &col, &rms, &ln, &red]);
}

#[test]
fn matmuls_and_gemms() {
    let g = Graph::new();
    let x = weight(&g, "x", &[5, 33], 1);
    let w = weight(&g, "w", &[33, 17], 2);
    let b = weight(&g, "b", &[17], 3);
    let a = g.input("a", Shape::of(&[33, 17]), DType::F32);
    let y = x.matmul(&w).unwrap().add(&b).unwrap().gelu_tanh().unwrap();
    let ks = kernels(&[&y]);
    assert!(ks[0].gemm().is_some_and(|g| g.packed), "{}", ks[0]);
    // B without data: a plain (unpacked) GEMM or loops.
    kernels(&[&x.matmul(&a).unwrap()]);
    // A batched matmul of two activations, stored permuted.
    let p = g.input("p", Shape::of(&[2, 3, 4]), DType::F32);
    let q = g.input("q", Shape::of(&[2, 4, 5]), DType::F32);
    kernels(&[&p.matmul(&q).unwrap().permute(&[1, 0, 2]).unwrap()]);
    // One row: a GEMV.
    let r = weight(&g, "r", &[1, 33], 4);
    kernels(&[&r.matmul(&w).unwrap()]);
}

/// `rms_norm(x) @ Wᵀ` per weight in `ws` (`nn.Linear` weights `[n, k]`).
fn norm_projections(g: &Graph, rows: usize, k: usize, ns: &[usize]) -> Vec<Tensor> {
    let x = weight(g, "x", &[rows, k], 1);
    let gain = weight(g, "g", &[k], 2);
    let xn = x.rms_norm(&gain, 1e-6).unwrap();
    ns.iter()
        .enumerate()
        .map(|(i, &n)| {
            let w = weight(g, &format!("w{i}"), &[n, k], 10 + i as u64);
            xn.matmul(&w.transpose(0, 1).unwrap()).unwrap()
        })
        .collect()
}

#[test]
fn rmsnorm_folded_into_a_gemm() {
    let g = Graph::new();
    let y = norm_projections(&g, 9, 40, &[24]);
    let ks = kernels(&[&y[0]]);
    assert_eq!(ks.len(), 1);
    let gm = ks[0].gemm().expect("a GEMM");
    assert!(gm.row_reduce.is_some() && gm.b_scale.is_some() && gm.b_transposed && gm.packed);
}

#[test]
fn swiglu_is_a_paired_gemm() {
    let g = Graph::new();
    let y = norm_projections(&g, 3, 64, &[100, 100]);
    let sw = y[0].silu().unwrap().mul(&y[1]).unwrap();
    let ks = kernels(&[&sw]);
    assert_eq!(ks.len(), 1);
    let pair = ks[0].gemm().and_then(|g| g.pair).expect("a paired GEMM");
    assert!(pair.b_transposed && pair.b_scale.is_some());
}

#[test]
fn qkv_projections_are_a_sibling_group() {
    let g = Graph::new();
    let y = norm_projections(&g, 10, 32, &[16, 8, 8]);
    let ks = kernels(&y.iter().collect::<Vec<_>>());
    assert_eq!(ks.len(), 1);
    assert_eq!(ks[0].parts().len(), 3);
    assert!(ks[0].to_string().contains("part 2 k0_"), "{}", ks[0]);
}

#[test]
fn every_optional_gemm_field_and_attention_fill() {
    // The scheduler never sets every field at once; the text does not care.
    let g = Graph::new();
    let y = norm_projections(&g, 3, 64, &[100, 100]);
    let sw = y[0].silu().unwrap().mul(&y[1]).unwrap();
    let mut k = kernels(&[&sw]).remove(0);
    let base = k.gemm().expect("a GEMM");
    let pair = base.pair.expect("paired");
    for (transposed, scale) in [(false, None), (true, pair.b_scale), (false, pair.b_scale)] {
        let mut gm = base;
        gm.b_transposed = transposed;
        gm.b_scale = scale;
        gm.row_reduce = scale;
        gm.packed = !transposed;
        gm.pair = Some(GemmPair {
            b_transposed: !transposed,
            b_scale: scale,
            ..pair
        });
        k.body = KernelBody::Gemm(gm);
        round_trip(&k);
        gm.pair = None;
        k.body = KernelBody::Gemm(gm);
        round_trip(&k);
    }
    // An attention kernel's fill under a mask may be any value, a NaN's sign included.
    let g = Graph::new();
    let q = g.input("q", Shape::of(&[1, 4, 2, 4]), DType::F32);
    let mut att = kernels(&[&causal_attention(&q, &q, &q, 2)])
        .into_iter()
        .find(|k| k.attention().is_some())
        .expect("an attention kernel");
    let KernelBody::Attention(a) = &mut att.body else {
        unreachable!()
    };
    a.fill_bits = (-f64::NAN).to_bits();
    a.scale_bits = (-0.0f64).to_bits();
    round_trip(&att);
}

/// Causal attention composed from primitives as the models compose it (GQA: `h` query heads
/// over `kv` shared key/value heads), optionally masking left padding.
fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, kv: usize) -> Tensor {
    let (b, s, h, d) = dims4(q);
    let t = k.dims()[1].clone();
    let groups = h / kv;
    let q = q
        .reshape(Shape(vec![
            b.clone(),
            s.clone(),
            Dim::Const(kv),
            Dim::Const(groups),
            Dim::Const(d),
        ]))
        .unwrap()
        .permute(&[0, 2, 3, 1, 4])
        .unwrap();
    let as_heads = |x: &Tensor| {
        x.permute(&[0, 2, 1, 3])
            .unwrap()
            .reshape(Shape(vec![
                b.clone(),
                Dim::Const(kv),
                Dim::Const(1),
                t.clone(),
                Dim::Const(d),
            ]))
            .unwrap()
    };
    let (k, v) = (as_heads(k), as_heads(v));
    let scores = q
        .matmul(&k.transpose(-1, -2).unwrap())
        .unwrap()
        .mul_scalar(1.0 / (d as f64).sqrt())
        .unwrap();
    let p = match (&t, &s) {
        (Dim::Const(tn), Dim::Const(sn)) => {
            let g = q.graph();
            let qi = g
                .arange(Shape(vec![s.clone(), Dim::Const(1)]), 0, DType::I32)
                .unwrap();
            let kj = g
                .arange(Shape(vec![Dim::Const(1), t.clone()]), 1, DType::I32)
                .unwrap();
            let hidden = qi
                .add(&qi.scalar((*tn as f64) - (*sn as f64)))
                .unwrap()
                .cmplt(&kj)
                .unwrap();
            hidden
                .where_(&scores.scalar(f32::MIN as f64), &scores)
                .unwrap()
                .softmax(-1)
                .unwrap()
        }
        // A decode step's one query sees every key of the cache.
        _ => scores.softmax(-1).unwrap(),
    };
    p.matmul(&v)
        .unwrap()
        .permute(&[0, 3, 1, 2, 4])
        .unwrap()
        .reshape(Shape(vec![b, s, Dim::Const(h * d)]))
        .unwrap()
}

fn dims4(x: &Tensor) -> (Dim, Dim, usize, usize) {
    let d = x.dims();
    (
        d[0].clone(),
        d[1].clone(),
        d[2].as_const().unwrap(),
        d[3].as_const().unwrap(),
    )
}

#[test]
fn causal_attention_is_a_flash_attention_kernel() {
    let g = Graph::new();
    let (b, s, h, kv, d) = (2, 7, 4, 2, 8);
    let q = g.input("q", Shape::of(&[b, s, h, d]), DType::F32);
    let k = g.input("k", Shape::of(&[b, s, kv, d]), DType::F32);
    let v = g.input("v", Shape::of(&[b, s, kv, d]), DType::F32);
    let out = causal_attention(&q, &k, &v, kv);
    let ks = kernels(&[&out]);
    let att = ks
        .iter()
        .find_map(|k| k.attention())
        .expect("a flash-attention kernel");
    assert!(att.mask.is_some());
}

#[test]
fn decode_step_writes_the_cache_and_attends_over_it() {
    let g = Graph::new();
    let (b, ctx, h, kv, d) = (1, 16, 4, 2, 8);
    let pos = Symbol::new("pos", 0, ctx as i64 - 1).unwrap();
    let p = Dim::sym(&pos);
    let x = weight(&g, "x", &[b, 1, 32], 1);
    let proj = |name: &str, n: usize, seed| {
        let w = weight(&g, name, &[n, 32], seed);
        x.matmul(&w.transpose(0, 1).unwrap()).unwrap()
    };
    let split = |t: Tensor, n: usize| t.reshape(Shape::of(&[b, 1, n, d])).unwrap();
    let q = split(proj("wq", h * d, 2), h);
    let k = split(proj("wk", kv * d, 3), kv);
    let v = split(proj("wv", kv * d, 4), kv);
    let cache = |name: &str| g.input(name, Shape::of(&[b, ctx, kv, d]), DType::F32);
    let at = [Dim::Const(0), p.clone(), Dim::Const(0), Dim::Const(0)];
    let ck = cache("cache.k").write_slice(&k, &at).unwrap();
    let cv = cache("cache.v").write_slice(&v, &at).unwrap();
    let n = p.add(1);
    let out = causal_attention(
        &q,
        &ck.narrow(1, 0, n.clone()).unwrap(),
        &cv.narrow(1, 0, n).unwrap(),
        kv,
    );
    let ks = kernels(&[&out, &ck, &cv]);
    assert!(
        ks.iter()
            .any(|k| k.attention().is_some_and(|a| a.mask.is_none()))
    );
    assert!(ks.iter().any(|k| !k.symbols.is_empty()));
}

#[test]
fn embedding_gather() {
    let g = Graph::new();
    let table = weight(&g, "wte", &[50, 16], 1);
    let tokens = g.input("tokens", Shape::of(&[2, 5]), DType::I32);
    let pos = weight(&g, "wpe", &[5, 16], 2);
    let h = table.gather_rows(&tokens).unwrap().add(&pos).unwrap();
    let ks = kernels(&[&h]);
    assert!(has_expr(&ks, |e| matches!(e, Expr::Gather { .. })));
}

#[test]
fn padded_sliced_and_indexed_views() {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[6, 10]), DType::F32);
    let padded = x.pad(&[(1, 2), (3, 0)]).unwrap().exp2().unwrap();
    let sliced = x
        .narrow(1, 2, 5)
        .unwrap()
        .narrow(0, 1, 3)
        .unwrap()
        .mul_scalar(3.0)
        .unwrap();
    let ramp = g.arange(Shape::of(&[6, 10]), 1, DType::I32).unwrap();
    let masked = ramp
        .cmplt(&ramp.scalar(4.0))
        .unwrap()
        .where_(&x, &x.neg().unwrap())
        .unwrap();
    let cat = Tensor::concat(&[x.clone(), x.sqrt().unwrap()], 0).unwrap();
    let ks = kernels(&[&padded, &sliced, &masked, &cat]);
    assert!(has_expr(
        &ks,
        |e| matches!(e, Expr::InBounds(c) if !c.is_empty())
    ));
    assert!(has_expr(
        &ks,
        |e| matches!(e, Expr::Load { conds, .. } if !conds.is_empty())
    ));
    assert!(has_expr(&ks, |e| matches!(e, Expr::Index(_))));
    // A symbolic window: a pad by a symbol, a slice at it.
    let pos = Symbol::new("pos", 1, 8).unwrap();
    let p = Dim::sym(&pos);
    let y = g.input("y", Shape::of(&[4, 3]), DType::F32);
    let grown = y
        .pad_dims(&[(Dim::Const(0), Dim::Const(0)), (Dim::Const(1), p.clone())])
        .unwrap()
        .add_scalar(2.0)
        .unwrap();
    let z = g.input("z", Shape::of(&[4, 16]), DType::F32);
    let window = z.narrow(1, p, 4).unwrap().mul_scalar(2.0).unwrap();
    let ks = kernels(&[&grown, &window]);
    assert!(ks.iter().all(|k| k.symbols == [pos.clone()]), "{ks:?}");
}

#[test]
fn key_text_has_no_names_and_reads_back() {
    let g = Graph::new();
    let y = norm_projections(&g, 10, 32, &[16, 8, 8]);
    let k = kernels(&y.iter().collect::<Vec<_>>()).remove(0);
    let key = k.key_text();
    assert!(
        !key.contains(&k.name) && key.contains("  part 1\n"),
        "{key}"
    );
    let parsed = parse_kernel_text(&key).unwrap();
    assert!(parsed.name.is_empty() && parsed.ops.is_empty());
    assert_eq!(parsed.parts().len(), 3);
}

/// Printed kernels of several shapes, the seeds of the mutation property.
fn corpus() -> Vec<String> {
    let g = Graph::new();
    let mut outs = norm_projections(&g, 3, 16, &[8, 8]);
    outs.push(outs[0].silu().unwrap().mul(&outs[1]).unwrap());
    let x = g.input("x", Shape::of(&[6, 10]), DType::F32);
    outs.push(x.pad(&[(1, 2), (3, 0)]).unwrap().softmax(-1).unwrap());
    let table = weight(&g, "wte", &[50, 16], 1);
    let tokens = g.input("tokens", Shape::of(&[2, 5]), DType::I32);
    outs.push(table.gather_rows(&tokens).unwrap());
    let (b, s, h, d) = (1, 4, 2, 4);
    let q = g.input("q", Shape::of(&[b, s, h, d]), DType::F32);
    outs.push(causal_attention(&q, &q, &q, 2));
    let mut texts = Vec::new();
    for o in &outs {
        for k in kernels_with(&[o], LowerOptions::default()) {
            texts.push(k.to_string());
        }
    }
    let all: Vec<&Tensor> = outs.iter().collect();
    for k in kernels_with(&all, LowerOptions::default()) {
        texts.push(k.to_string());
    }
    texts
}

/// One edit of a text: delete, insert or replace a character, drop or duplicate a line,
/// or cut the text short.
#[derive(Clone, Debug)]
enum Edit {
    Delete(usize),
    Insert(usize, char),
    Replace(usize, char),
    DropLine(usize),
    DupLine(usize),
    Truncate(usize),
    Token(usize, &'static str),
}

fn apply(text: &str, e: &Edit) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| if chars.is_empty() { 0 } else { i % chars.len() };
    let lines: Vec<&str> = text.lines().collect();
    let line = |i: usize| if lines.is_empty() { 0 } else { i % lines.len() };
    match *e {
        Edit::Delete(i) => chars
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != at(i))
            .map(|(_, c)| c)
            .collect(),
        Edit::Insert(i, c) => {
            let mut v = chars.clone();
            v.insert(at(i), c);
            v.into_iter().collect()
        }
        Edit::Replace(i, c) => {
            let mut v = chars.clone();
            if !v.is_empty() {
                let j = at(i);
                v[j] = c;
            }
            v.into_iter().collect()
        }
        Edit::DropLine(i) => {
            let mut v = lines.clone();
            if !v.is_empty() {
                v.remove(line(i));
            }
            v.join("\n")
        }
        Edit::DupLine(i) => {
            let mut v = lines.clone();
            if !v.is_empty() {
                let j = line(i);
                v.insert(j, lines[j]);
            }
            v.join("\n")
        }
        Edit::Truncate(i) => chars[..at(i)].iter().collect(),
        Edit::Token(i, t) => {
            let mut v = chars.clone();
            let j = at(i);
            v.splice(j..j, t.chars());
            v.into_iter().collect()
        }
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    let ch = prop_oneof![
        Just(' '),
        Just('-'),
        Just('+'),
        Just('*'),
        Just('['),
        Just(']'),
        Just('('),
        Just(')'),
        Just('e'),
        Just('i'),
        Just('9'),
        Just('0'),
        Just('\n'),
        Just('.'),
        Just(':'),
        Just('é'),
        any::<char>(),
    ];
    let token = prop_oneof![
        Just(" + "),
        Just(" - "),
        Just("99999999999999999999"),
        Just("-9223372036854775808"),
        Just("NaN:0x"),
        Just("pos"),
        Just(" && 0 <= i9 < pos+1"),
        Just("part 0"),
        Just(" pair(b e0 reduce e1 k i0)"),
        Just("e999"),
        Just("i999"),
    ];
    let n = 0usize..100_000;
    prop_oneof![
        n.clone().prop_map(Edit::Delete),
        (n.clone(), ch.clone()).prop_map(|(i, c)| Edit::Insert(i, c)),
        (n.clone(), ch).prop_map(|(i, c)| Edit::Replace(i, c)),
        n.clone().prop_map(Edit::DropLine),
        n.clone().prop_map(Edit::DupLine),
        n.clone().prop_map(Edit::Truncate),
        (n, token).prop_map(|(i, t)| Edit::Token(i, t)),
    ]
}

/// A parsed text prints to a text that parses to the same kernel.
fn stable(text: &str) {
    if let Ok(k) = parse_kernel_text(text) {
        let again = parse_kernel_text(&k.to_string())
            .unwrap_or_else(|e| panic!("{e}: the reprint of\n{text}\nis\n{k}"));
        assert_eq!(again, k, "{text}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn mutated_text_never_panics(seed in 0usize..1000, edits in proptest::collection::vec(edit(), 1..6)) {
        let corpus = corpus_cached();
        let mut text = corpus[seed % corpus.len()].clone();
        for e in &edits {
            text = apply(&text, e);
        }
        stable(&text);
    }

    #[test]
    fn random_text_never_panics(text in "(kernel |  arg0: |  sym0: |  loop i0 in 0..|  e[0-9] = |  store |  gemm: |  attention: |  part [0-9]|[a-z0-9.\\[\\]()+*=<&:, -]{0,12}|\n){0,40}") {
        stable(&text);
    }

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        stable(&text);
    }
}

fn corpus_cached() -> &'static [String] {
    static CORPUS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(corpus)
}
