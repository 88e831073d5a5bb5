//! Each fusion pattern: the schedule has the promised kernel count, and the fused kernel agrees
//! with the interpreter and with `--no-fuse`, on odd sizes and large-magnitude inputs.

mod common;

use common::{check_all, rand_vec};
use cranegrad_graph::{Bindings, Graph, ReduceOp, Shape, Tensor};
use cranegrad_lower::kernel::Expr;
use cranegrad_lower::{LowerOptions, Lowered, lower_tensors};
use cranegrad_runtime::Feeds;

/// `outs` lowered with the default (fused) options.
fn lowered(outs: &[&Tensor]) -> Lowered {
    lower_tensors(outs, LowerOptions::default()).unwrap()
}

fn kernels(t: &Tensor) -> usize {
    lowered(&[t]).schedule.launches.len()
}

/// `x` `[rows, k]` (values up to 2) and a norm gain `[k]`, for the norm + matmul tests.
fn rows_and_gain(g: &Graph, rows: usize, k: usize) -> (Tensor, Tensor) {
    let x = g
        .input_with_data("x", Shape::of(&[rows, k]), rand_vec(rows * k, 1, 2.0))
        .unwrap();
    let gain = g
        .input_with_data("g", Shape::of(&[k]), rand_vec(k, 2, 1.0))
        .unwrap();
    (x, gain)
}

const SIZES: [usize; 6] = [1, 3, 17, 33, 100, 257];

/// Asserts every row of `cols` weights in `v` sums to 1 (a softmax's).
fn rows_sum_to_one(v: &[f32], cols: usize, what: &str) {
    for row in v.chunks(cols) {
        let total: f32 = row.iter().sum();
        assert!((total - 1.0).abs() < 1e-4, "{what}: a row sums to {total}");
    }
}

#[test]
fn softmax_is_one_kernel() {
    for &r in &SIZES {
        for &c in &[1usize, 5, 33, 257] {
            let g = Graph::new();
            // Values up to +-400 (+-200 once scaled): exp would overflow without the max
            // subtraction (past 88.7).
            let x = rand_vec(r * c, (r * 31 + c) as u64, 400.0);
            let x = g.input_with_data("x", Shape::of(&[r, c]), x).unwrap();
            let s = x.mul_scalar(0.5).unwrap().softmax(-1).unwrap();
            assert_eq!(kernels(&s), 1, "softmax [{r}, {c}]");
            let out = check_all(&[&s], &Feeds::new(), &Bindings::new(), 1e-6, 1e-5);
            rows_sum_to_one(&out[0].to_f32(), c, &format!("softmax [{r}, {c}]"));
        }
    }
}

#[test]
fn masked_scaled_softmax_is_one_kernel() {
    let g = Graph::new();
    let (s, t) = (17, 17);
    let scores = g
        .input_with_data("s", Shape::of(&[2, s, t]), rand_vec(2 * s * t, 3, 10.0))
        .unwrap();
    let qi = g
        .arange(Shape::of(&[s, 1]), 0, cranegrad_graph::DType::I32)
        .unwrap();
    let kj = g
        .arange(Shape::of(&[1, t]), 1, cranegrad_graph::DType::I32)
        .unwrap();
    let hidden = qi.cmplt(&kj).unwrap();
    let masked = hidden
        .where_(
            &scores.scalar(f32::MIN as f64),
            &scores.mul_scalar(0.125).unwrap(),
        )
        .unwrap();
    let p = masked.softmax(-1).unwrap();
    assert_eq!(kernels(&p), 1);
    check_all(&[&p], &Feeds::new(), &Bindings::new(), 1e-6, 1e-5);
}

#[test]
fn norms_are_one_kernel() {
    for &r in &SIZES {
        for &c in &[1usize, 3, 64, 100] {
            let g = Graph::new();
            // Tiny values: the mean of squares is ~1e-12, below eps.
            let x = g
                .input_with_data("x", Shape::of(&[r, c]), rand_vec(r * c, 5, 1e-6))
                .unwrap();
            let y = g
                .input_with_data("y", Shape::of(&[r, c]), rand_vec(r * c, 6, 50.0))
                .unwrap();
            let gain = g
                .input_with_data("g", Shape::of(&[c]), rand_vec(c, 7, 1.0))
                .unwrap();
            let bias = g
                .input_with_data("b", Shape::of(&[c]), rand_vec(c, 8, 1.0))
                .unwrap();
            let rms = x.rms_norm(&gain, 1e-5).unwrap();
            let ln = y.layer_norm(&gain, &bias, 1e-5).unwrap();
            assert_eq!(kernels(&rms), 1, "rms_norm [{r}, {c}]");
            assert_eq!(kernels(&ln), 1, "layer_norm [{r}, {c}]");
            check_all(&[&rms, &ln], &Feeds::new(), &Bindings::new(), 1e-5, 1e-4);
        }
    }
}

#[test]
fn matmul_epilogues_are_one_kernel() {
    let g = Graph::new();
    let x = g
        .input_with_data("x", Shape::of(&[5, 33]), rand_vec(165, 1, 1.0))
        .unwrap();
    let w = g
        .input_with_data("w", Shape::of(&[33, 17]), rand_vec(561, 2, 1.0))
        .unwrap();
    let b = g
        .input_with_data("b", Shape::of(&[17]), rand_vec(17, 3, 1.0))
        .unwrap();
    let r = g
        .input_with_data("r", Shape::of(&[5, 17]), rand_vec(85, 4, 1.0))
        .unwrap();
    let y = x
        .matmul(&w)
        .unwrap()
        .add(&b)
        .unwrap()
        .gelu_tanh()
        .unwrap()
        .add(&r)
        .unwrap();
    assert_eq!(kernels(&y), 1);
    // SwiGLU: silu(x @ Wg) * (x @ Wu) over 5 rows — one paired GEMM with silu(gate) * up in
    // its store.
    let wu = g
        .input_with_data("wu", Shape::of(&[33, 17]), rand_vec(561, 5, 1.0))
        .unwrap();
    let sw = x
        .matmul(&w)
        .unwrap()
        .silu()
        .unwrap()
        .mul(&x.matmul(&wu).unwrap())
        .unwrap();
    assert_eq!(kernels(&sw), 1);
    // Through a reshape that only adds a size-1 axis: the bias still runs in the GEMM's store.
    let u = x
        .matmul(&w)
        .unwrap()
        .reshape(Shape::of(&[5, 1, 17]))
        .unwrap()
        .add(&b)
        .unwrap();
    assert_eq!(kernels(&u), 1);
    let gemm = lowered(&[&u]).schedule.launches[0].kernel.gemm().is_some();
    assert!(gemm, "the reshaped epilogue keeps the GEMM template");
    check_all(&[&y, &sw, &u], &Feeds::new(), &Bindings::new(), 1e-4, 1e-4);
}

/// `rms_norm(x, g) @ W` with `W` stored `[N, K]` (an `nn.Linear` weight, read transposed).
fn norm_matmul(g: &Graph, rows: usize, k: usize, n: usize, scale: f32) -> Tensor {
    let x = g
        .input_with_data(
            "x",
            Shape::of(&[rows, k]),
            rand_vec(rows * k, rows as u64, scale),
        )
        .unwrap();
    let gain = g
        .input_with_data("g", Shape::of(&[k]), rand_vec(k, 7, 1.0))
        .unwrap();
    let w = g
        .input_with_data("w", Shape::of(&[n, k]), rand_vec(n * k, 8, 1.0))
        .unwrap();
    x.rms_norm(&gain, 1e-6)
        .unwrap()
        .matmul(&w.transpose(0, 1).unwrap())
        .unwrap()
}

#[test]
fn a_matmul_takes_its_epilogue_before_a_reduction_does() {
    // `x @ W + sum(y, -1)` (without the kept axis): both could run in the add's kernel, which
    // takes one; the matmul's, as a GEMM epilogue, is the one worth having. The sum comes
    // first in topological order.
    let g = Graph::new();
    let y = g
        .input_with_data("y", Shape::of(&[5, 17, 3]), rand_vec(5 * 17 * 3, 61, 1.0))
        .unwrap();
    let s = y.sum(-1, false).unwrap();
    let x = g
        .input_with_data("x", Shape::of(&[5, 33]), rand_vec(5 * 33, 62, 1.0))
        .unwrap();
    let w = g
        .input_with_data("w", Shape::of(&[33, 17]), rand_vec(33 * 17, 63, 1.0))
        .unwrap();
    let out = s.add(&x.matmul(&w).unwrap()).unwrap();
    let l = lowered(&[&out]);
    // The GEMM kernel stores the sum: the add is its epilogue.
    let gemm_adds = l.schedule.launches.iter().any(|launch| {
        launch.kernel.gemm().is_some() && launch.kernel.ops.iter().any(|o| o == "add")
    });
    assert!(gemm_adds, "{}", l.schedule.text());
    check_all(&[&out], &Feeds::new(), &Bindings::new(), 1e-4, 1e-4);
}

#[test]
fn rmsnorm_matmul_is_one_kernel() {
    for &rows in &SIZES {
        for &(k, n) in &[(33usize, 17usize), (64, 8), (17, 100)] {
            let g = Graph::new();
            let y = norm_matmul(&g, rows, k, n, 3.0);
            let lowered = lowered(&[&y]);
            let launches = &lowered.schedule.launches;
            assert_eq!(launches.len(), 1, "rms_norm @ W [{rows}, {k}] x [{k}, {n}]");
            let gm = launches[0].kernel.gemm().expect("runs as a GEMM");
            assert!(gm.row_reduce.is_some() && gm.b_scale.is_some());
            assert!(lowered.schedule.text().contains("rmsnorm+gem"));
            check_all(&[&y], &Feeds::new(), &Bindings::new(), 1e-4, 1e-4);
        }
    }
}

#[test]
fn rmsnorm_matmul_of_tiny_and_huge_rows_stays_finite() {
    // rms of 1e-6-sized rows is dominated by eps; 1e4-sized rows square to 1e8 per element.
    for scale in [1e-6f32, 1e4] {
        let g = Graph::new();
        let y = norm_matmul(&g, 9, 40, 24, scale);
        let out = check_all(&[&y], &Feeds::new(), &Bindings::new(), 1e-4, 1e-4);
        assert!(out[0].to_f32().iter().all(|v| v.is_finite()));
    }
}

#[test]
fn shared_norm_feeds_sibling_projections_in_one_kernel() {
    // Three projections of one normalised input (q, k, v, GQA-like widths, odd sizes): one
    // kernel of three GEMM parts, each with the norm in its prologue; no norm kernel.
    for &(rows, k, ns) in &[
        (10usize, 32usize, [16usize, 8, 8]),
        (1, 33, [17, 5, 5]),
        (17, 40, [33, 100, 3]),
    ] {
        let g = Graph::new();
        let (x, gain) = rows_and_gain(&g, rows, k);
        let xn = x.rms_norm(&gain, 1e-5).unwrap();
        let outs: Vec<Tensor> = (0..3)
            .map(|i| {
                let w = g
                    .input_with_data(
                        &format!("w{i}"),
                        Shape::of(&[ns[i], k]),
                        rand_vec(ns[i] * k, 10 + i as u64, 1.0),
                    )
                    .unwrap();
                xn.matmul(&w.transpose(0, 1).unwrap()).unwrap()
            })
            .collect();
        let lowered = lowered(&outs.iter().collect::<Vec<_>>());
        let launches = &lowered.schedule.launches;
        assert_eq!(launches.len(), 1, "{}", lowered.schedule.text());
        let parts = launches[0].kernel.parts();
        assert_eq!(parts.len(), 3);
        for p in parts {
            let gm = p.gemm().expect("each part runs as a GEMM");
            assert!(gm.row_reduce.is_some(), "the norm runs in every part");
        }
        let refs: Vec<&Tensor> = outs.iter().collect();
        check_all(&refs, &Feeds::new(), &Bindings::new(), 1e-4, 1e-4);
    }
}

#[test]
fn rmsnorm_swiglu_is_one_paired_gemm() {
    // silu(rms_norm(x) @ Wg) * (rms_norm(x) @ Wu) with nn.Linear weights, odd sizes: one
    // paired GEMM with the norm in its prologue and silu(gate) * up in its store, at every
    // row count (decode's one row to prefill's many).
    for &(rows, k, n) in &[
        (1usize, 33usize, 17usize),
        (3, 64, 100),
        (17, 40, 8),
        (100, 17, 33),
    ] {
        let g = Graph::new();
        let (x, gain) = rows_and_gain(&g, rows, k);
        let weight = |name: &str, seed| {
            g.input_with_data(name, Shape::of(&[n, k]), rand_vec(n * k, seed, 1.0))
                .unwrap()
                .transpose(0, 1)
                .unwrap()
        };
        let xn = x.rms_norm(&gain, 1e-6).unwrap();
        let gate = xn.matmul(&weight("wg", 3)).unwrap();
        let up = xn.matmul(&weight("wu", 4)).unwrap();
        let y = gate.silu().unwrap().mul(&up).unwrap();
        let lowered = lowered(&[&y]);
        let launches = &lowered.schedule.launches;
        assert_eq!(
            launches.len(),
            1,
            "norm + SwiGLU [{rows}, {k}] x [{k}, {n}]"
        );
        for l in launches {
            let gm = l.kernel.gemm().expect("runs as a GEMM");
            assert!(gm.pair.is_some(), "gate and up in one paired GEMM");
            assert!(
                gm.row_reduce.is_some(),
                "the norm runs in every GEMM's prologue"
            );
        }
        check_all(&[&y], &Feeds::new(), &Bindings::new(), 1e-4, 1e-4);
    }
}

#[test]
fn a_slice_of_the_last_position_sinks_below_the_norm_and_matmul() {
    // logits[:, -1:] of rms_norm(h) @ W: only one row per sequence is normalised and projected.
    let (b, s, k, n) = (2, 7, 32, 50);
    let g = Graph::new();
    let h = g
        .input_with_data("h", Shape::of(&[b, s, k]), rand_vec(b * s * k, 1, 2.0))
        .unwrap();
    let gain = g
        .input_with_data("g", Shape::of(&[k]), rand_vec(k, 2, 1.0))
        .unwrap();
    let w = g
        .input_with_data("w", Shape::of(&[n, k]), rand_vec(n * k, 3, 1.0))
        .unwrap();
    let logits = h
        .rms_norm(&gain, 1e-5)
        .unwrap()
        .matmul(&w.transpose(0, 1).unwrap())
        .unwrap();
    let last = logits.narrow(1, s - 1, 1).unwrap();
    let lowered = lowered(&[&last]);
    let launches = &lowered.schedule.launches;
    assert_eq!(launches.len(), 1, "{}", lowered.schedule.text());
    let gm = launches[0].kernel.gemm().expect("a GEMM");
    assert_eq!(gm.rows, b, "one row per sequence");
    check_all(&[&last], &Feeds::new(), &Bindings::new(), 1e-4, 1e-4);
}

#[test]
fn reductions_over_any_axis_are_one_kernel_with_their_prologue() {
    // sum(x * x) and max(exp(x)) over each axis of a [3, 17, 33] tensor, strided (axes 0, 1)
    // and contiguous (axis 2), keeping the axis or not: one kernel each, the elementwise
    // producer inside the reduce loop, the output written in its own layout (no copy).
    let g = Graph::new();
    let x = g
        .input_with_data("x", Shape::of(&[3, 17, 33]), rand_vec(3 * 17 * 33, 7, 3.0))
        .unwrap();
    let mut outs = Vec::new();
    for axis in 0..3 {
        for keep in [false, true] {
            let s = x.mul(&x).unwrap().sum(axis, keep).unwrap();
            let m = x.exp().unwrap().max(axis, keep).unwrap();
            // An epilogue after the dropped axis too.
            let r = s.sqrt().unwrap().mul_scalar(0.5).unwrap();
            assert_eq!(kernels(&s), 1, "sum over axis {axis}, keepdim {keep}");
            assert_eq!(kernels(&m), 1, "max over axis {axis}, keepdim {keep}");
            assert_eq!(kernels(&r), 1, "sqrt(sum) over axis {axis}, keepdim {keep}");
            outs.push(s);
            outs.push(m);
            outs.push(r);
        }
    }
    let refs: Vec<&Tensor> = outs.iter().collect();
    check_all(&refs, &Feeds::new(), &Bindings::new(), 1e-4, 1e-4);
}

#[test]
fn strided_axis_softmax_and_standardisation_are_one_kernel() {
    // A reduction over a strided axis whose result is broadcast back: softmax over axis 0
    // (columns of 16 x 4 and 4 lanes, a scalar remainder: 257 = 4 * 64 + 1), over the middle
    // axis of a 3-d tensor (units must not run past a row block's columns: 70 = 64 + 4 + 2),
    // and over axis 0 with the last two axes merged; values up to +-400 (+-200 once scaled),
    // so exp overflows without the max.
    let cases: Vec<(Vec<usize>, isize)> = [1usize, 3, 17, 100]
        .iter()
        .flat_map(|&r| {
            [1usize, 3, 17, 33, 100, 257]
                .iter()
                .map(move |&c| (vec![r, c], 0))
        })
        .chain([
            (vec![2, 17, 70], 1),
            (vec![5, 3, 33], 0),
            (vec![3, 9, 5], 1),
        ])
        .collect();
    for (dims, axis) in cases {
        let g = Graph::new();
        let n: usize = dims.iter().product();
        let x = g
            .input_with_data("x", Shape::of(&dims), rand_vec(n, n as u64 + 5, 400.0))
            .unwrap();
        let s = x.mul_scalar(0.5).unwrap().softmax(axis).unwrap();
        assert_eq!(kernels(&s), 1, "softmax over axis {axis} of {dims:?}");
        // The reduced axis is the kernel's innermost output loop (`reduced_axis_innermost`),
        // unless simplify_loops dropped it or merged it away.
        let k = &lowered(&[&s]).schedule.launches[0].kernel;
        let outs = k.output_loops();
        if axis as usize + 1 < dims.len() && dims[axis as usize] > 1 && dims[dims.len() - 1] > 1 {
            let inner = outs.last().map(|l| l.extent.clone());
            assert_eq!(
                inner,
                Some(cranegrad_graph::Dim::Const(dims[axis as usize])),
                "{dims:?}:\n{k}"
            );
        }
        let mean = x.mean(axis, true).unwrap();
        let var = x.var(axis, true).unwrap();
        let z = x
            .sub(&mean)
            .unwrap()
            .mul(&var.add_scalar(1e-5).unwrap().rsqrt().unwrap())
            .unwrap();
        assert_eq!(
            kernels(&z),
            1,
            "standardisation over axis {axis} of {dims:?}"
        );
        let out = check_all(&[&s, &z], &Feeds::new(), &Bindings::new(), 1e-5, 1e-4);
        // Every column of the softmax sums to 1.
        let v = out[0].to_f32();
        let (outer, len) = (
            dims[..axis as usize].iter().product::<usize>(),
            dims[axis as usize],
        );
        let inner = n / outer / len;
        for o in 0..outer {
            for i in 0..inner {
                let total: f32 = (0..len).map(|r| v[(o * len + r) * inner + i]).sum();
                assert!(
                    (total - 1.0).abs() < 1e-4,
                    "{dims:?}: column sums to {total}"
                );
            }
        }
    }
}

#[test]
fn column_reductions_with_prologue_and_epilogue_run_row_major() {
    // Reductions across outputs over a strided axis run row-major over each thread's whole
    // vectors of outputs, then the 4-wide and scalar rest: `sqrt(sum(x * x))` and `max(x)`
    // over axis 0 of widths 2, 3, 17, 1030 (257 vectors and 2 more outputs per call, odd
    // per-thread splits) and over the middle axis of a 3-d tensor; a NaN in one column.
    for (dims, axis) in [
        (vec![257usize, 2], 0isize),
        (vec![100, 3], 0),
        (vec![33, 17], 0),
        (vec![257, 1030], 0),
        (vec![5, 33, 70], 1),
    ] {
        let g = Graph::new();
        let n: usize = dims.iter().product();
        let mut data = rand_vec(n, n as u64 + 11, 4.0);
        let last = *dims.last().unwrap();
        // Row 3 (axis 0), or row 3 of the middle axis in the first block (axis 1).
        let nan_col = 2 % last;
        data[3 * last + nan_col] = f32::NAN;
        let x = g.input_with_data("x", Shape::of(&dims), data).unwrap();
        let norm = x.mul(&x).unwrap().sum(axis, false).unwrap().sqrt().unwrap();
        let max = x.max(axis, true).unwrap();
        assert_eq!(kernels(&norm), 1, "norm over axis {axis} of {dims:?}");
        let out = check_all(&[&norm, &max], &Feeds::new(), &Bindings::new(), 1e-5, 1e-5);
        // Only the NaN's own column of the max (and of the norm) is NaN.
        for o in &out {
            for (c, v) in o.to_f32().iter().enumerate() {
                assert_eq!(v.is_nan(), c == nan_col, "{dims:?}: column {c} is {v}");
            }
        }
    }
}

#[test]
fn a_row_group_takes_no_epilogue_reduction() {
    // `softmax(x) + sum(y, -1)` without the kept axis: the sum reaches the softmax's kernel
    // through a reshape, but inlined there it would depend on the row loop and turn the row
    // kernel into one that recomputes the row's max and sum at every output. Two kernels.
    let g = Graph::new();
    let (m, n, k) = (17, 33, 5);
    let x = g
        .input_with_data("x", Shape::of(&[m, n]), rand_vec(m * n, 21, 8.0))
        .unwrap();
    let y = g
        .input_with_data("y", Shape::of(&[m, n, k]), rand_vec(m * n * k, 22, 1.0))
        .unwrap();
    let out = x
        .softmax(-1)
        .unwrap()
        .add(&y.sum(-1, false).unwrap())
        .unwrap();
    let lw = lowered(&[&out]);
    assert_eq!(lw.schedule.launches.len(), 2);
    assert!(
        lw.schedule.launches.iter().all(|l| l
            .kernel
            .exprs
            .iter()
            .filter(|e| matches!(e, Expr::Reduce { .. }))
            .count()
            <= 2),
        "the softmax kernel holds only its own max and sum"
    );
    check_all(&[&out], &Feeds::new(), &Bindings::new(), 1e-5, 1e-5);
}

#[test]
fn row_groups_over_two_axes_do_not_share_a_kernel() {
    // `x / sum(x, 0) / sum(x, 1)` (a Sinkhorn step) ends two row groups, over different axes,
    // in one node. In one kernel one axis is the innermost loop and the other group's
    // reduction would run again for every output along it. So every reduction that reads
    // the innermost output loop must read every output loop (one per output), and the
    // values match the interpreter.
    let g = Graph::new();
    let x = g
        .input_with_data("x", Shape::of(&[33, 17]), rand_vec(33 * 17, 11, 1.0))
        .unwrap()
        .exp()
        .unwrap();
    let sinkhorn = x
        .div(&x.sum(0, true).unwrap())
        .unwrap()
        .div(&x.sum(1, true).unwrap())
        .unwrap();
    let centred = x
        .sub(&x.max(0, true).unwrap())
        .unwrap()
        .sub(&x.max(1, true).unwrap())
        .unwrap();
    for t in [&sinkhorn, &centred] {
        let l = lowered(&[t]);
        for launch in &l.schedule.launches {
            let k = &launch.kernel;
            let outs = k.output_loops().len();
            let deps: Vec<Vec<bool>> = (0..outs).map(|o| k.depends_on(o)).collect();
            for e in &k.exprs {
                if let Expr::Reduce { x, .. } = e {
                    let reads = |o: usize| deps[o][*x];
                    assert!(
                        outs == 0 || !reads(outs - 1) || (0..outs).all(reads),
                        "a reduction runs again along the innermost loop:\n{}",
                        l.schedule.text()
                    );
                }
            }
        }
        check_all(&[t], &Feeds::new(), &Bindings::new(), 1e-6, 1e-5);
    }
}

#[test]
fn a_softmax_past_the_l2s_is_exact_to_its_last_row() {
    // Rows holding more than 4 MB, an odd count split over two threads: the scaled softmax
    // carries each row's max into the row before's exp pass (clamped to the thread's last
    // row). The weights must match the interpreter's to the last row.
    let (r, c) = (1031, 1024);
    let g = Graph::new();
    let x = g
        .input_with_data("x", Shape::of(&[r, c]), rand_vec(r * c, 41, 30.0))
        .unwrap();
    let s = x.mul_scalar(0.125).unwrap().softmax(-1).unwrap();
    // A per-row bias inside the max: the carried max reads the next row's bias.
    let bias = g
        .input_with_data("b", Shape::of(&[r, 1]), rand_vec(r, 43, 50.0))
        .unwrap();
    let biased = x.add(&bias).unwrap().softmax(-1).unwrap();
    for t in [&s, &biased] {
        assert_eq!(kernels(t), 1);
        let out = check_all(&[t], &Feeds::new(), &Bindings::new(), 1e-6, 1e-5);
        rows_sum_to_one(&out[0].to_f32(), c, "softmax past the L2s");
    }
}

/// `[lead, rows, cols]` whose rows alternate between values near +400 and near -400, each
/// with one spike 1200 higher at a column that moves from row to row.
fn alternating_rows(g: &Graph, lead: usize, rows: usize, cols: usize) -> Tensor {
    let noise = rand_vec(lead * rows * cols, (lead * 7 + rows * 3 + cols) as u64, 2.0);
    let x: Vec<f32> = noise
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let (row, col) = (i / cols, i % cols);
            let base = if row % 2 == 0 { 400.0 } else { -400.0 };
            let spike = if col == (row * 7) % cols { 1200.0 } else { 0.0 };
            v + base + spike
        })
        .collect();
    g.input_with_data("x", Shape::of(&[lead, rows, cols]), x)
        .unwrap()
}

#[test]
fn a_carried_max_belongs_to_its_own_row() {
    // Each row's max is computed inside the row before's exp pass (the first row of each
    // thread's range in a pass of its own). Rows alternate between +400 and -400 (+-50
    // scaled), so a max taken from another row overflows or zeroes the row's weights, and
    // one that misses the row's spike overflows at the spike. Odd row counts
    // split over two threads, columns through every loop tail, rows crossing the leading
    // axis, and a causal mask whose condition is recomputed for the next row.
    for (lead, rows, cols) in [
        (1, 1, 1),
        (1, 2, 3),
        (1, 3, 17),
        (1, 101, 9),
        (3, 5, 33),
        (1, 17, 257),
        (2, 9, 100),
    ] {
        let g = Graph::new();
        let x = alternating_rows(&g, lead, rows, cols);
        let s = x.mul_scalar(0.125).unwrap().softmax(-1).unwrap();
        assert_eq!(kernels(&s), 1, "softmax {lead}x{rows}x{cols}");
        let out = check_all(&[&s], &Feeds::new(), &Bindings::new(), 1e-6, 1e-5);
        rows_sum_to_one(&out[0].to_f32(), cols, &format!("{lead}x{rows}x{cols}"));
        let qi = g
            .arange(Shape::of(&[rows, 1]), 0, cranegrad_graph::DType::I32)
            .unwrap();
        let kj = g
            .arange(Shape::of(&[1, cols]), 1, cranegrad_graph::DType::I32)
            .unwrap();
        let hidden = qi.cmplt(&kj).unwrap();
        let masked = hidden
            .where_(&x.scalar(f32::MIN as f64), &x.mul_scalar(0.125).unwrap())
            .unwrap();
        let p = masked.softmax(-1).unwrap();
        assert_eq!(kernels(&p), 1, "causal softmax {lead}x{rows}x{cols}");
        check_all(&[&p], &Feeds::new(), &Bindings::new(), 1e-6, 1e-5);
    }
}

#[test]
fn a_positive_scale_moves_out_of_the_max() {
    // `max(x * s)` is `max(x) * s` for s > 0: the scaled softmax's max reads the load
    // itself; a negative scale (max would become min) keeps the product inside. For a power
    // of two the exponent `x * s - max(x) * s` also becomes `(x - max(x)) * s`: no element
    // of x is multiplied by s.
    for (s, hoisted, factored) in [
        (0.125, true, true),
        (3.0, true, false),
        (-0.5, false, false),
        (0.25, true, true),
    ] {
        let g = Graph::new();
        let x = rand_vec(33 * 257, 7, 80.0);
        let x = g.input_with_data("x", Shape::of(&[33, 257]), x).unwrap();
        let y = x.mul_scalar(s).unwrap().softmax(-1).unwrap();
        let m = x.mul_scalar(s).unwrap().max(-1, true).unwrap();
        let l = lowered(&[&y]);
        let max_reads_load = l.schedule.launches.iter().any(|launch| {
            let exprs = &launch.kernel.exprs;
            exprs.iter().any(|e| {
                matches!(e, Expr::Reduce { op: ReduceOp::Max, x, .. }
                    if matches!(exprs[*x], Expr::Load { .. }))
            })
        });
        assert_eq!(max_reads_load, hoisted, "scale {s}:\n{}", l.schedule.text());
        let load_times_s = multiplies_a_load_by(&l, s);
        assert_eq!(!load_times_s, factored, "scale {s}:\n{}", l.schedule.text());
        check_all(&[&y, &m], &Feeds::new(), &Bindings::new(), 1e-4, 1e-4);
        // The hoist is exact: the max comes out bit for bit as the interpreter's `max(x * s)`.
        check_all(&[&m], &Feeds::new(), &Bindings::new(), 0.0, 0.0);
    }
}

#[test]
fn shifted_logits_as_an_output_are_factored_too() {
    // `x * 0.5 - max(x * 0.5)` requested as an output beside its softmax: the output is the
    // factored node, so no kernel multiplies a load by 0.5, and both match the interpreter.
    let g = Graph::new();
    let x = g
        .input_with_data("x", Shape::of(&[9, 70]), rand_vec(9 * 70, 51, 40.0))
        .unwrap();
    let y = x.mul_scalar(0.5).unwrap();
    let d = y.sub(&y.max(-1, true).unwrap()).unwrap();
    let e = d.exp().unwrap();
    let s = e.div(&e.sum(-1, true).unwrap()).unwrap();
    let l = lowered(&[&d, &s]);
    let load_times_half = multiplies_a_load_by(&l, 0.5);
    assert!(!load_times_half, "{}", l.schedule.text());
    check_all(&[&d, &s], &Feeds::new(), &Bindings::new(), 1e-5, 1e-5);
    // The factoring is exact for a power of two: `(x - max) * 0.5` is the interpreter's
    // `x * 0.5 - max(x * 0.5)` bit for bit.
    check_all(&[&d], &Feeds::new(), &Bindings::new(), 0.0, 0.0);
}

/// True when a kernel of `l` multiplies a load by the constant `c`.
fn multiplies_a_load_by(l: &Lowered, c: f64) -> bool {
    l.schedule.launches.iter().any(|launch| {
        let exprs = &launch.kernel.exprs;
        exprs.iter().any(|e| match e {
            Expr::Binary { a, b, .. } => {
                let (a, b) = (&exprs[*a], &exprs[*b]);
                matches!(a, Expr::Load { .. }) && b.const_value() == Some(c)
                    || matches!(b, Expr::Load { .. }) && a.const_value() == Some(c)
            }
            _ => false,
        })
    })
}

#[test]
fn softmax_of_huge_magnitudes_keeps_its_max_weight() {
    // x * s - max(x * s) for |x * s| past 2^30: contracted into an FMA, the row's largest
    // argument would be the product's rounding error, not 0, and could take every weight of
    // the row to 0 (a NaN row). The weights must come out as the reference's, including rows
    // masked to a huge finite value.
    // Rows of 41: the last element, each row's largest, is in the kernel's scalar tail.
    let g = Graph::new();
    let mut x = rand_vec(4 * 41, 11, 1.0);
    for (i, v) in x.iter_mut().enumerate() {
        if i % 41 == 40 {
            *v = 1.0;
        }
        *v = match i / 41 {
            0 => *v * 3e9 + 1e10,
            1 => *v * 1e30,
            2 => f32::MIN / 2.0 + *v,
            _ => *v * 80.0,
        };
    }
    let x = g.input_with_data("x", Shape::of(&[4, 41]), x).unwrap();
    for s in [0.125, 1.0, 3.0] {
        let y = x.mul_scalar(s).unwrap().softmax(-1).unwrap();
        check_all(&[&y], &Feeds::new(), &Bindings::new(), 1e-4, 1e-4);
    }
}

#[test]
fn a_gemm_reading_its_siblings_result_is_not_merged_with_it() {
    // `x @ W2 + rms_norm(x @ W1)`: both GEMMs read x, but the second's epilogue needs the
    // norm of the first's result, a kernel in between, so the two must not become one.
    let g = Graph::new();
    let x = g
        .input_with_data("x", Shape::of(&[5, 33]), rand_vec(5 * 33, 21, 1.0))
        .unwrap();
    let w = |name: &str, seed| {
        g.input_with_data(name, Shape::of(&[17, 33]), rand_vec(17 * 33, seed, 1.0))
            .unwrap()
            .transpose(0, 1)
            .unwrap()
    };
    let gain = g
        .input_with_data("g", Shape::of(&[17]), rand_vec(17, 24, 1.0))
        .unwrap();
    let first = x
        .matmul(&w("w1", 22))
        .unwrap()
        .rms_norm(&gain, 1e-5)
        .unwrap();
    let y = x.matmul(&w("w2", 23)).unwrap().add(&first).unwrap();
    let l = lowered(&[&y]);
    assert!(l.schedule.launches.len() >= 2, "{}", l.schedule.text());
    assert!(
        l.schedule
            .launches
            .iter()
            .all(|l| l.kernel.parts().is_empty()),
        "{}",
        l.schedule.text()
    );
    check_all(&[&y], &Feeds::new(), &Bindings::new(), 1e-4, 1e-4);
}
