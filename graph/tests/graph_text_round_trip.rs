//! `parse_graph_text` reads back what `graph_text` prints: print -> parse -> print is the same
//! text for every op, symbolic dimensions and a transformer-like graph, and malformed text is an
//! error naming its line, never a panic.

use cranegrad_graph::{
    DType, Dim, Graph, GraphData, NodeId, Shape, Symbol, Tensor, graph_text, lcg_values,
    parse_graph_text, structural_hash,
};
use proptest::prelude::*;

/// Every mnemonic `Op::name` can print; the every-op graph must contain each.
const EVERY_OP: [&str; 25] = [
    "input",
    "const",
    "arange",
    "neg",
    "exp2",
    "log2",
    "sqrt",
    "recip",
    "sin",
    "cast",
    "add",
    "mul",
    "max",
    "cmplt",
    "where",
    "sum",
    "reduce_max",
    "reshape",
    "permute",
    "expand",
    "slice",
    "pad",
    "gather",
    "write_slice",
    "matmul",
];

fn ids(outputs: &[&Tensor]) -> Vec<NodeId> {
    outputs.iter().map(|t| t.id()).collect()
}

fn text_of(g: &Graph, outputs: &[&Tensor]) -> String {
    g.with(|d| graph_text(d, &ids(outputs)))
}

/// Parses `text`, prints the result, and checks it is `text` again; returns the parsed graph.
#[track_caller]
fn assert_round_trip(text: &str, symbols: &[Symbol]) -> (GraphData, Vec<NodeId>) {
    let (parsed, outs) = parse_graph_text(text, symbols).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(graph_text(&parsed, &outs), text);
    (parsed, outs)
}

fn every_op_graph() -> (Graph, Vec<Tensor>) {
    let g = Graph::new();
    let x = g.input("x", Shape::of(&[2, 3]), DType::F32);
    let half = g.constant(0.5, Shape::of(&[2, 3]), DType::F32);
    let column = g.arange(Shape::of(&[2, 3]), 1, DType::F32).unwrap();
    let unaries = x
        .neg()
        .and_then(|t| t.exp2())
        .and_then(|t| t.log2())
        .and_then(|t| t.sqrt())
        .and_then(|t| t.recip())
        .and_then(|t| t.sin())
        .unwrap();
    let as_int = x.cast(DType::I32).unwrap();
    let arith = x.add(&half).unwrap().mul(&column).unwrap();
    let below = arith.cmplt(&unaries).unwrap();
    let picked = below.where_(&arith, &x.maximum(&half).unwrap()).unwrap();
    let row_sums = picked.sum(1, true).unwrap();
    let col_maxes = picked.max(0, true).unwrap();
    let reshaped = x.reshape(Shape::of(&[3, 2])).unwrap();
    let transposed = x.permute(&[1, 0]).unwrap();
    let expanded = row_sums.expand(&Shape::of(&[2, 3])).unwrap();
    let window = x.narrow(1, 1, 2).unwrap();
    let padded = window.pad(&[(1, 0), (0, 2)]).unwrap();
    let table = g.input("table", Shape::of(&[5, 3]), DType::F32);
    let rows = g.input("rows", Shape::of(&[4]), DType::I32);
    let gathered = table.gather_rows(&rows).unwrap();
    let cache = g.input("cache", Shape::of(&[4, 3]), DType::F32);
    let written = cache
        .write_slice(&x, &[Dim::Const(1), Dim::Const(0)])
        .unwrap();
    let product = x.matmul(&transposed).unwrap();
    let outputs = vec![
        as_int, col_maxes, reshaped, expanded, padded, gathered, written, product,
    ];
    (g, outputs)
}

#[test]
fn every_op_round_trips() {
    let (g, outputs) = every_op_graph();
    let refs: Vec<&Tensor> = outputs.iter().collect();
    let text = text_of(&g, &refs);
    for op in EVERY_OP {
        assert!(
            text.contains(&format!("= {op} ")),
            "the graph has no {op}:\n{text}"
        );
    }
    let (parsed, outs) = assert_round_trip(&text, &[]);
    let original = g.with(|d| structural_hash(d, &ids(&refs)));
    assert_eq!(structural_hash(&parsed, &outs), original);
}

#[test]
fn constants_read_back_to_the_same_value() {
    let g = Graph::new();
    let values = [
        0.0,
        -0.0,
        0.1,
        -2.5,
        1e-7,
        1e20,
        123_456_789_012_345.0,
        1e15,
        f64::from(i32::MIN),
        f64::MAX,
        f64::MIN_POSITIVE,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ];
    let consts: Vec<Tensor> = values
        .iter()
        .map(|&v| g.constant(v, Shape::of(&[]), DType::F32))
        .collect();
    let refs: Vec<&Tensor> = consts.iter().collect();
    let (parsed, outs) = assert_round_trip(&text_of(&g, &refs), &[]);
    for (&want, &n) in values.iter().zip(&outs) {
        match parsed.node(n).op {
            cranegrad_graph::Op::Const { value } => {
                assert!(
                    value.to_bits() == want.to_bits() || (value.is_nan() && want.is_nan()),
                    "{want:?} came back as {value:?}"
                );
            }
            ref op => panic!("{want:?} came back as {op:?}"),
        }
    }
}

#[test]
fn an_input_name_may_hold_quotes_and_the_type_separator() {
    let g = Graph::new();
    let odd = g.input("a \"b\" : c (%0)", Shape::of(&[2]), DType::Bool);
    let (parsed, outs) = assert_round_trip(&text_of(&g, &[&odd]), &[]);
    assert!(matches!(
        &parsed.node(outs[0]).op,
        cranegrad_graph::Op::Input { name } if name == "a \"b\" : c (%0)"
    ));
}

/// A KV-cache step: symbolic slice starts, pads, narrowed lengths and negative offsets.
fn symbolic_graph(pos: &Symbol, len: &Symbol) -> (Graph, Vec<Tensor>) {
    let g = Graph::new();
    let cache = g.input("cache", Shape::of(&[16, 4]), DType::F32);
    let row = g.input("row", Shape::of(&[1, 4]), DType::F32);
    let at = Dim::sym(pos);
    let written = cache
        .write_slice(&row, &[at.clone(), Dim::Const(0)])
        .unwrap();
    let seen = written.narrow(0, 0, at.add(1)).unwrap();
    let one_row = cache.narrow(0, at.clone(), 1).unwrap();
    let shifted = row
        .pad_dims(&[(at, Dim::Const(0)), (Dim::Const(0), Dim::Const(0))])
        .unwrap();
    let joined = seen.add(&shifted).unwrap().sum(0, true).unwrap();
    let short = g.input(
        "short",
        Shape(vec![Dim::sym(len).add(-2), Dim::Const(3)]),
        DType::F32,
    );
    let doubled = short.mul_scalar(2.0).unwrap();
    (g, vec![joined, one_row, doubled])
}

#[test]
fn symbolic_dims_round_trip_with_their_bounds() {
    let pos = Symbol::new("pos", 0, 15).unwrap();
    let len = Symbol::new("len", 2, 9).unwrap();
    let (g, outputs) = symbolic_graph(&pos, &len);
    let refs: Vec<&Tensor> = outputs.iter().collect();
    let text = text_of(&g, &refs);
    for printed in ["starts=[pos, 0]", "pos+1", "[(pos, 0), (0, 0)]", "len-2"] {
        assert!(text.contains(printed), "no `{printed}` in\n{text}");
    }
    let symbols = [pos.clone(), len.clone()];
    let (parsed, outs) = assert_round_trip(&text, &symbols);
    // Bounds are part of the hash, so equal hashes show the bounds came from `symbols`.
    let original = g.with(|d| structural_hash(d, &ids(&refs)));
    assert_eq!(structural_hash(&parsed, &outs), original);

    let wider = [Symbol::new("pos", 0, 14).unwrap(), len];
    let (other, other_outs) = parse_graph_text(&text, &wider).unwrap();
    assert_ne!(structural_hash(&other, &other_outs), original);
}

#[test]
fn a_symbol_without_bounds_is_an_error() {
    let pos = Symbol::new("pos", 0, 15).unwrap();
    let len = Symbol::new("len", 2, 9).unwrap();
    let (g, outputs) = symbolic_graph(&pos, &len);
    let refs: Vec<&Tensor> = outputs.iter().collect();
    let text = text_of(&g, &refs);
    let err = parse_graph_text(&text, std::slice::from_ref(&pos)).unwrap_err();
    let first_len_line = text.lines().position(|l| l.contains("len")).unwrap() + 1;
    assert_eq!(err.line, first_len_line, "{err}");
    assert!(err.message.contains("len"), "{err}");
}

/// One decoder layer with a KV cache: embedding gather, RMSNorm, matmuls, heads reshaped and
/// permuted, the new keys written into the cache at `pos`, a grouped-query head expanded,
/// a masked softmax, a SiLU MLP and a concat (pads).
fn transformer_graph(pos: &Symbol) -> (Graph, Vec<Tensor>) {
    let (batch, seq, width, heads, head_dim, vocab, ctx) = (2, 4, 8, 2, 4, 16, 16);
    let g = Graph::new();
    let weight = |name: &str, dims: &[usize], seed: u64| {
        let n = dims.iter().product();
        g.input_with_data(name, Shape::of(dims), lcg_values(n, seed, 0.1))
            .unwrap()
    };
    let tokens = g.input("tokens", Shape::of(&[batch, seq]), DType::I32);
    let embedding = weight("embedding", &[vocab, width], 1);
    let x = embedding.gather_rows(&tokens).unwrap();
    let h = x.rms_norm(&weight("attn_norm", &[width], 2), 1e-5).unwrap();
    let split_heads = |t: Tensor, n: usize| {
        t.reshape(Shape::of(&[batch, seq, n, head_dim]))
            .and_then(|t| t.permute(&[0, 2, 1, 3]))
            .unwrap()
    };
    let q = split_heads(h.matmul(&weight("wq", &[width, width], 3)).unwrap(), heads);
    let k = split_heads(h.matmul(&weight("wk", &[width, head_dim], 4)).unwrap(), 1);
    let v = split_heads(h.matmul(&weight("wv", &[width, head_dim], 5)).unwrap(), 1);

    let at = Dim::sym(pos);
    let context = at.add(seq as i64);
    let cached = |name: &str, new: &Tensor| {
        let cache = g.input(name, Shape::of(&[batch, 1, ctx, head_dim]), DType::F32);
        let zero = Dim::Const(0);
        let written = cache
            .write_slice(new, &[zero.clone(), zero.clone(), at.clone(), zero])
            .unwrap();
        let seen = written.narrow(2, 0, context.clone()).unwrap();
        // Grouped-query attention: the one key/value head serves every query head.
        let grouped = seen
            .reshape(Shape(vec![
                Dim::Const(batch),
                Dim::Const(1),
                Dim::Const(1),
                context.clone(),
                Dim::Const(head_dim),
            ]))
            .unwrap();
        let repeated = grouped
            .expand(&Shape(vec![
                Dim::Const(batch),
                Dim::Const(1),
                Dim::Const(heads),
                context.clone(),
                Dim::Const(head_dim),
            ]))
            .unwrap()
            .reshape(Shape(vec![
                Dim::Const(batch),
                Dim::Const(heads),
                context.clone(),
                Dim::Const(head_dim),
            ]))
            .unwrap();
        (written, repeated)
    };
    let (k_cache, keys) = cached("k_cache", &k);
    let (v_cache, values) = cached("v_cache", &v);

    let scores = q
        .matmul(&keys.transpose(-1, -2).unwrap())
        .unwrap()
        .mul_scalar(1.0 / (head_dim as f64).sqrt())
        .unwrap();
    let mask_shape = Shape(vec![Dim::Const(seq), context.clone()]);
    let query_index = g.arange(mask_shape.clone(), 0, DType::F32).unwrap();
    let key_index = g.arange(mask_shape, 1, DType::F32).unwrap();
    let hidden = query_index.cmplt(&key_index).unwrap();
    let masked = hidden
        .where_(&scores.scalar(f64::NEG_INFINITY), &scores)
        .unwrap();
    let attended = masked.softmax(-1).unwrap().matmul(&values).unwrap();
    let merged = attended
        .permute(&[0, 2, 1, 3])
        .unwrap()
        .reshape(Shape::of(&[batch, seq, width]))
        .unwrap()
        .matmul(&weight("wo", &[width, width], 6))
        .unwrap();
    let x = x.add(&merged).unwrap();

    let h = x.rms_norm(&weight("mlp_norm", &[width], 7), 1e-5).unwrap();
    let up = h.matmul(&weight("w_up", &[width, 16], 8)).unwrap();
    let down = up
        .silu()
        .unwrap()
        .matmul(&weight("w_down", &[16, width], 9))
        .unwrap();
    let x = x.add(&down).unwrap();
    let halves = [x.narrow(1, 0, 2).unwrap(), x.narrow(1, 2, seq - 2).unwrap()];
    let rejoined = Tensor::concat(&halves, 1).unwrap();
    let logits = rejoined
        .matmul(&embedding.transpose(0, 1).unwrap())
        .unwrap();
    (g, vec![logits, k_cache, v_cache])
}

#[test]
fn a_transformer_layer_round_trips_without_its_weights() {
    let pos = Symbol::new("pos", 0, 12).unwrap();
    let (g, outputs) = transformer_graph(&pos);
    let refs: Vec<&Tensor> = outputs.iter().collect();
    let text = text_of(&g, &refs);
    let (parsed, outs) = assert_round_trip(&text, &[pos]);
    let order = parsed.topo_from(&outs);
    assert!(order.iter().all(|&n| parsed.node(n).data.is_none()));
    let original_data = g.with(|d| {
        d.topo_from(&ids(&refs))
            .into_iter()
            .filter(|&n| d.node(n).data.is_some())
            .count()
    });
    assert_eq!(original_data, 9, "the weights carried data before printing");
}

/// (text, the line the error must name).
const MALFORMED: &[(&str, usize)] = &[
    ("", 1),
    ("%0 = input \"x\" : f32[2]\n", 2),
    ("%0 = input \"x\" : f32[2]\n\n\n", 4),
    ("%0 = frob (%1) : f32[2]\noutputs: %0\n", 1),
    ("%0 = neg (%1) : f32[2]\noutputs: %0\n", 1),
    ("%0 = neg (%0) : f32[2]\noutputs: %0\n", 1),
    (
        "%0 = input \"x\" : f32[2]\n%1 = neg (%0, %0) : f32[2]\noutputs: %1\n",
        2,
    ),
    (
        "%0 = input \"x\" : f32[2]\n%1 = add (%0) : f32[2]\noutputs: %1\n",
        2,
    ),
    (
        "%0 = input \"x\" : f32[2]\n%1 = neg () : f32[2]\noutputs: %1\n",
        2,
    ),
    (
        "%0 = input \"x\" : f32[2]\n%1 = neg (%0 : f32[2]\noutputs: %1\n",
        2,
    ),
    (
        "%0 = input \"x\" : f32[2]\n%1 = neg(%0) : f32[2]\noutputs: %1\n",
        2,
    ),
    (
        "%0 = input \"x\" : f32[2]\n%1 = neg (%0) extra : f32[2]\noutputs: %1\n",
        2,
    ),
    (
        "%0 = input \"x\" : f32[2]\n%0 = neg (%0) : f32[2]\noutputs: %0\n",
        2,
    ),
    ("%0 = input \"x\" : f64[2]\noutputs: %0\n", 1),
    ("%0 = input \"x\" : f32[2\noutputs: %0\n", 1),
    ("%0 = input \"x\" : f32\noutputs: %0\n", 1),
    ("%0 = input \"x\" : f32[2] \noutputs: %0\n", 1),
    ("%0 = input \"x\" : f32[-1]\noutputs: %0\n", 1),
    ("%0 = input \"x\" : f32[2,3]\noutputs: %0\n", 1),
    ("%0 = input x : f32[2]\noutputs: %0\n", 1),
    ("%0 = input \" : f32[2]\noutputs: %0\n", 1),
    ("%0 = input : f32[2]\noutputs: %0\n", 1),
    ("%0 = input \"x\" f32[2]\noutputs: %0\n", 1),
    ("%0 = const abc : f32[]\noutputs: %0\n", 1),
    ("%0 = const : f32[]\noutputs: %0\n", 1),
    ("%0 = const 1.0 (%0) : f32[]\noutputs: %0\n", 1),
    ("%0 = arange axis=2 : f32[2, 3]\noutputs: %0\n", 1),
    ("%0 = arange axis=x : f32[2]\noutputs: %0\n", 1),
    ("%0 = arange 1 : f32[2]\noutputs: %0\n", 1),
    (
        "%0 = input \"x\" : f32[2]\n%1 = sum axis=1 (%0) : f32[1]\noutputs: %1\n",
        2,
    ),
    (
        "%0 = input \"x\" : f32[2]\n%1 = sum axis=0(%0) : f32[1]\noutputs: %1\n",
        2,
    ),
    (
        "%0 = input \"x\" : f32[2, 3]\n%1 = permute [0, 0] (%0) : f32[2, 2]\noutputs: %1\n",
        2,
    ),
    (
        "%0 = input \"x\" : f32[2, 3]\n%1 = permute [1] (%0) : f32[3]\noutputs: %1\n",
        2,
    ),
    (
        "%0 = input \"x\" : f32[2, 3]\n%1 = permute [1, x] (%0) : f32[3, 2]\noutputs: %1\n",
        2,
    ),
    (
        "%0 = input \"x\" : f32[2, 3]\n%1 = slice starts=[0] (%0) : f32[1, 3]\noutputs: %1\n",
        2,
    ),
    (
        "%0 = input \"x\" : f32[2, 3]\n%1 = slice [0, 0] (%0) : f32[1, 3]\noutputs: %1\n",
        2,
    ),
    (
        "%0 = input \"x\" : f32[2]\n%1 = pad [(0, 0), (1, 1)] (%0) : f32[2]\noutputs: %1\n",
        2,
    ),
    (
        "%0 = input \"x\" : f32[2]\n%1 = pad [(0 0)] (%0) : f32[2]\noutputs: %1\n",
        2,
    ),
    (
        "%0 = input \"x\" : f32[2]\n%1 = pad [(0, 1] (%0) : f32[3]\noutputs: %1\n",
        2,
    ),
    ("%0 = input \"x\" : f32[pos]\noutputs: %0\n", 1),
    ("%0 = input \"x\" : f32[2]\noutputs: %3\n", 2),
    ("%0 = input \"x\" : f32[2]\noutputs: 0\n", 2),
    ("%0 = input \"x\" : f32[2]\noutputs: %0,%0\n", 2),
    (
        "%0 = input \"x\" : f32[2]\noutputs: %0\n%1 = neg (%0) : f32[2]\n",
        3,
    ),
    ("%0 = input \"x\" : f32[2]\noutputs: %0\noutputs: %0\n", 3),
    ("x = input \"x\" : f32[2]\noutputs: x\n", 1),
    ("%a = input \"x\" : f32[2]\noutputs: %a\n", 1),
    ("% = input \"x\" : f32[2]\noutputs: %\n", 1),
    (
        "%99999999999999999999999 = input \"x\" : f32[2]\noutputs: %0\n",
        1,
    ),
    ("%0 input \"x\" : f32[2]\noutputs: %0\n", 1),
];

#[test]
fn malformed_text_is_an_error_naming_its_line() {
    for &(text, line) in MALFORMED {
        match parse_graph_text(text, &[]) {
            Ok(_) => panic!("parsed:\n{text}"),
            Err(e) => {
                assert_eq!(e.line, line, "{e} for\n{text}");
                assert!(!e.message.is_empty());
            }
        }
    }
}

/// Characters that mean something to the parser, so mutations reach its error paths.
const SIGNIFICANT: &[&str] = &[
    "%", " ", ", ", "(", ")", "[", "]", "+", "-", "0", "9", "\"", " : ", " = ", "=", "\n", "pos",
    "axis=", "starts=", "NaN", "", "%99",
];

proptest! {
    #[test]
    fn arbitrary_text_does_not_panic(text in "\\PC{0,200}") {
        let _ = parse_graph_text(&text, &[]);
    }

    /// A mutated real graph either fails with an error or parses to a graph whose text parses
    /// back to the same text.
    #[test]
    fn mutated_text_fails_cleanly_or_round_trips(
        at in 0usize..10_000,
        cut in 0usize..4,
        insert in proptest::sample::select(SIGNIFICANT),
    ) {
        let pos = Symbol::new("pos", 0, 12).unwrap();
        let (g, outputs) = transformer_graph(&pos);
        let refs: Vec<&Tensor> = outputs.iter().collect();
        let text = text_of(&g, &refs);
        let mut start = at % text.len();
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let end = (start + cut).min(text.len());
        let mutated = format!("{}{insert}{}", &text[..start], &text[end..]);
        let symbols = [pos];
        if let Ok((parsed, outs)) = parse_graph_text(&mutated, &symbols) {
            let printed = graph_text(&parsed, &outs);
            let (again, again_outs) = parse_graph_text(&printed, &symbols)
                .map_err(|e| TestCaseError::fail(format!("{e}\n{printed}")))?;
            prop_assert_eq!(graph_text(&again, &again_outs), printed);
        }
    }

    /// Any prefix of a graph's text that stops before the `outputs:` line is an error.
    #[test]
    fn a_text_cut_before_its_outputs_is_an_error(keep in 0usize..200) {
        let (g, outputs) = every_op_graph();
        let refs: Vec<&Tensor> = outputs.iter().collect();
        let text = text_of(&g, &refs);
        let lines: Vec<&str> = text.lines().collect();
        let kept = lines[..keep % (lines.len() - 1)].join("\n");
        prop_assert!(parse_graph_text(&kept, &[]).is_err());
    }
}
