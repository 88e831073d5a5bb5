//! Weights whose blocks of 32 along their rows are 8-bit integers times a scale (Q8_0, Q4_0,
//! Q5_0, per-channel int8), with an offset (Q4_1-like) or with a scale per half block
//! (Q6_K-like) are packed as Q8 panels, and 4-bit ones with an offset as nibbles: the GEMM is selected with them wherever the blocks run
//! along k; the exact kernel matches the interpreter and f32 panels of the same values to
//! within f32 rounding, for one row (decode) and many, partial panels, A read with a stride,
//! a SwiGLU pair and zero blocks; the integer kernel lands within the activations' rounding.

use cranegrad_graph::{Bindings, CompactFormat, DType, Graph, HostData, Shape, Tensor, lcg_values};
use cranegrad_lower::{LowerOptions, lower_tensors};
use cranegrad_runtime::{Feeds, Session, SessionOptions, interpret_tensors};

/// `rows` rows of `k` values of one scheme: Q8_0-like (each block reaching 127 steps of an
/// f16 scale), Q4_0-like (-8..=7 steps), int8-like (one scale per row), or Q4_1-like (16
/// levels above a minimum, scheme 3) or Q6_K-like (a scale per half block, scheme 4), with
/// every fifth block zero; schemes 5 and 6 are 3 and 1 again, packed as nibbles.
fn scheme_values(rows: usize, k: usize, seed: u64, scheme: usize) -> Vec<f32> {
    let raw = lcg_values(rows * k, seed, 1.0);
    let mut out = vec![0f32; rows * k];
    for r in 0..rows {
        let row_scale = 0.002 + 0.001 * (r % 7) as f32;
        for (bi, block) in raw[r * k..(r + 1) * k].chunks(32).enumerate() {
            if (r + bi) % 5 == 4 {
                continue;
            }
            let d = half::f16::from_f32(0.01 * (1 + (bi + r) % 3) as f32).to_f32();
            for (i, &v) in block.iter().enumerate() {
                out[r * k + bi * 32 + i] = match scheme {
                    0 => (v * 127.0).round() * d,
                    1 | 6 => (v * 8.0).round().clamp(-8.0, 7.0) * d,
                    2 => (v * 127.0).round() * row_scale,
                    // Q4_1-like: 16 levels above a minimum.
                    3 | 5 => ((v + 1.0) * 7.5).round() * d - 0.1 * d * (1 + bi % 4) as f32,
                    // Q6_K-like: -32..=31 steps of a scale per half block.
                    _ => (v * 32.0).round().clamp(-32.0, 31.0) * d * (1 + i / 16 * 2) as f32,
                };
            }
        }
    }
    out
}

/// A `[n, k]` weight of `scheme`'s values, marked Q8 when `mark`.
fn weight(
    g: &Graph,
    name: &str,
    n: usize,
    k: usize,
    seed: u64,
    scheme: usize,
    mark: bool,
) -> Tensor {
    let d = HostData::from(scheme_values(n, k, seed, scheme));
    let format = match scheme {
        3 => CompactFormat::Q8Offset,
        4 => CompactFormat::Q8Split,
        5 | 6 => CompactFormat::Q4,
        _ => CompactFormat::Q8,
    };
    let d = if mark {
        d.into_compact(format)
            .expect("the values are blocks of the format")
    } else {
        d
    };
    g.input_with_data(name, Shape::of(&[n, k]), d).unwrap()
}

/// `y` through the JIT on two threads, with integer dot products or exact.
fn jit(y: &Tensor, integer: bool) -> Vec<f32> {
    let mut s = Session::new(SessionOptions {
        fuse: true,
        threads: 2,
    })
    .unwrap();
    s.set_integer_dot(integer);
    s.realize(&[y], &Feeds::new(), &Bindings::new()).unwrap()[0].to_f32()
}

/// Whether `y`'s schedule has `text` (`packed q8`, which `packed q8o` contains too, or
/// `int8dot`).
fn schedule_has(y: &Tensor, text: &str) -> bool {
    let l = lower_tensors(&[y], LowerOptions::default()).unwrap();
    l.schedule.text().contains(text)
}

/// The outputs of `build(graph, mark)` marked and not (the exact path: Q8 widened to f32;
/// integer dot products are tested below), and whether the marked one's schedule uses block
/// panels (`packed q8`, `q8o`, `q8s` or `q4`). The marked one is also checked against the interpreter (f64, from the values).
fn both(build: impl Fn(&Graph, bool) -> Tensor) -> (Vec<f32>, Vec<f32>, bool) {
    let g = Graph::new();
    let y = build(&g, true);
    let q8 = jit(&y, false);
    let oracle = interpret_tensors(&[&y], &Feeds::new(), &Bindings::new()).unwrap()[0].to_f32();
    let scale = oracle.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (x, want)) in q8.iter().zip(&oracle).enumerate() {
        assert!(
            (x - want).abs() <= 1e-5 * scale,
            "[{i}] {x} vs interpreter {want}"
        );
    }
    let g = Graph::new();
    let f32_panels = jit(&build(&g, false), false);
    (q8, f32_panels, schedule_has(&y, "packed q"))
}

/// Every output within a few roundings of the f32-panel one, relative to the output scale.
fn assert_close(a: &[f32], b: &[f32], case: &str) {
    let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    assert_eq!(a.len(), b.len(), "{case}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 2e-6 * scale, "{case}: [{i}] {x} vs {y}");
    }
}

#[test]
fn q8_panels_compute_what_f32_panels_do() {
    for scheme in 0..7 {
        for &(m, k, n) in &[
            (1usize, 32usize, 8usize),
            (1, 256, 100),
            (2, 96, 20),
            (5, 64, 9),
            (33, 128, 24),
        ] {
            for strided_a in [false, true] {
                let (a, b, uses) = both(|g, mark| {
                    let x = if strided_a {
                        let x = g
                            .input_with_data("x", Shape::of(&[k, m]), lcg_values(m * k, 3, 1.0))
                            .unwrap();
                        x.transpose(0, 1).unwrap()
                    } else {
                        g.input_with_data("x", Shape::of(&[m, k]), lcg_values(m * k, 3, 1.0))
                            .unwrap()
                    };
                    let w = weight(g, "w", n, k, 5, scheme, mark);
                    x.matmul(&w.transpose(0, 1).unwrap()).unwrap()
                });
                let case = format!("scheme {scheme} m {m} k {k} n {n} strided A {strided_a}");
                assert!(uses, "{case}: Q8 panels");
                assert_close(&a, &b, &case);
            }
        }
    }
}

#[test]
fn a_swiglu_pair_is_packed_as_q8_too() {
    let (m, k, n) = (3usize, 64usize, 36usize);
    for rows in [1, m] {
        let (a, b, uses) = both(|g, mark| {
            let x = g
                .input_with_data("x", Shape::of(&[rows, k]), lcg_values(rows * k, 7, 1.0))
                .unwrap();
            let gate = weight(g, "gate", n, k, 8, 0, mark);
            let up = weight(g, "up", n, k, 9, 1, mark);
            let gate = x.matmul(&gate.transpose(0, 1).unwrap()).unwrap();
            let up = x.matmul(&up.transpose(0, 1).unwrap()).unwrap();
            gate.silu().unwrap().mul(&up).unwrap()
        });
        assert!(uses, "rows {rows}");
        assert_close(&a, &b, &format!("pair, rows {rows}"));
        let (a, b, uses) = integer_and_exact(|g| {
            let x = g
                .input_with_data("x", Shape::of(&[rows, k]), lcg_values(rows * k, 7, 1.0))
                .unwrap();
            let gate = weight(g, "gate", n, k, 8, 0, true);
            let up = weight(g, "up", n, k, 9, 1, true);
            let gate = x.matmul(&gate.transpose(0, 1).unwrap()).unwrap();
            let up = x.matmul(&up.transpose(0, 1).unwrap()).unwrap();
            gate.silu().unwrap().mul(&up).unwrap()
        });
        let err = relative_error(&a, &b);
        assert!(uses && err < 2e-2 && err > 0.0, "pair, rows {rows}: {err}");
    }
}

#[test]
fn q8_needs_blocks_along_k_and_exact_values() {
    // A `[k, n]` weight's memory rows run along n: its blocks are not along k, so f32 panels.
    let (m, k, n) = (2usize, 64usize, 32usize);
    let (a, b, uses) = both(|g, mark| {
        let x = g
            .input_with_data("x", Shape::of(&[m, k]), lcg_values(m * k, 3, 1.0))
            .unwrap();
        let d = HostData::from(scheme_values(k, n, 5, 0));
        let d = if mark {
            d.into_compact(CompactFormat::Q8).unwrap()
        } else {
            d
        };
        x.matmul(&g.input_with_data("w", Shape::of(&[k, n]), d).unwrap())
            .unwrap()
    });
    assert!(!uses);
    assert_eq!(a, b);
    let smooth = HostData::from(lcg_values(64, 1, 1.0));
    assert!(smooth.into_compact(CompactFormat::Q8).is_err());
}

/// The outputs of `y` on a session with integer dot products on and off, and whether the
/// integer run's schedule takes them.
fn integer_and_exact(build: impl Fn(&Graph) -> Tensor) -> (Vec<f32>, Vec<f32>, bool) {
    let g = Graph::new();
    let y = build(&g);
    (jit(&y, true), jit(&y, false), schedule_has(&y, "int8dot"))
}

/// Largest |a - b| over the largest |b|.
fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

#[test]
fn integer_dot_products_land_within_the_activations_rounding() {
    // Measured: 2e-3 to 1e-2 of the largest output (8-bit activations per block of 32); the
    // bound leaves room, a wrong sign or scale lands near 1.
    for scheme in 0..7 {
        for &(m, k, n) in &[
            (1usize, 32usize, 8usize),
            (1, 1536, 100),
            (3, 96, 20),
            (4, 256, 9),
            (37, 576, 40),
        ] {
            let (a, b, uses) = integer_and_exact(|g| {
                let mut xs = lcg_values(m * k, 3, 1.0);
                // A zero block and an outlier, as activations have.
                xs[..32.min(k)].fill(0.0);
                xs[k - 1] = 9.0;
                let x = g.input_with_data("x", Shape::of(&[m, k]), xs).unwrap();
                let w = weight(g, "w", n, k, 5, scheme, true);
                x.matmul(&w.transpose(0, 1).unwrap()).unwrap()
            });
            let case = format!("scheme {scheme} m {m} k {k} n {n}");
            assert!(uses, "{case}: integer dot products");
            let err = relative_error(&a, &b);
            eprintln!("{case}: {err:.2e}");
            assert!(err < 2e-2 && err > 0.0, "{case}: {err}");
        }
    }
    // Rows whose quantised copy would not fit the stack bound at once (301 x 1024 against Q8:
    // 240 rows a chunk, so two chunks, the last with a partial row block; 700 x 1536
    // against Q4: three chunks of 272): quantised and multiplied a chunk at a time.
    for (m, k, scheme) in [(301usize, 1024usize, 0usize), (700, 1536, 5)] {
        let (a, b, uses) = integer_and_exact(|g| {
            let x = g
                .input_with_data("x", Shape::of(&[m, k]), lcg_values(m * k, 3, 1.0))
                .unwrap();
            let w = weight(g, "w", 20, k, 5, scheme, true);
            x.matmul(&w.transpose(0, 1).unwrap()).unwrap()
        });
        let err = relative_error(&a, &b);
        assert!(uses && err < 2e-2 && err > 0.0, "{m} x {k}: {err}");
        // Every row's outputs, not only the largest: a chunk bound off by a row block
        // leaves rows at zero or reads another chunk's quantised rows.
        for (r, (ra, rb)) in a.chunks(20).zip(b.chunks(20)).enumerate() {
            let e = relative_error(ra, rb);
            assert!(e < 5e-2, "{m} x {k}: row {r}: {e}");
        }
    }
}

/// `ids` rows of `table` (`[n, k]`) and, tied, those rows times the table's transpose (an
/// embedding and its LM head) through the JIT with raw weights freed once packed, and the
/// interpreter's rows.
fn lookup_and_head(table: HostData, n: usize, k: usize, ids: &[i32]) -> (Vec<f32>, Vec<f32>) {
    let g = Graph::new();
    let w = g.input_with_data("w", Shape::of(&[n, k]), table).unwrap();
    let ids = g
        .input_with_data("ids", Shape::of(&[ids.len()]), HostData::from(ids.to_vec()))
        .unwrap();
    let rows = w.gather_rows(&ids).unwrap();
    let logits = rows.matmul(&w.transpose(0, 1).unwrap()).unwrap();
    let oracle = interpret_tensors(&[&rows, &logits], &Feeds::new(), &Bindings::new()).unwrap();
    let mut s = Session::new(SessionOptions {
        fuse: true,
        threads: 2,
    })
    .unwrap();
    s.set_integer_dot(false);
    s.set_free_raw_weights(true);
    s.prepack(&[&rows, &logits], &Feeds::new()).unwrap();
    // Both read the one copy of panels: the raw table had no other reader, and every whole
    // page of it is freed.
    let freed = s.freed_raw_bytes();
    assert!(
        freed + 2 * 4096 > n * k * 4,
        "{freed} of {} bytes freed",
        n * k * 4
    );
    assert_eq!(
        s.packed().0,
        1,
        "one packed copy serves the lookup and the head"
    );
    let out = s
        .realize(&[&rows, &logits], &Feeds::new(), &Bindings::new())
        .unwrap();
    let (got_rows, got_logits) = (out[0].to_f32(), out[1].to_f32());
    assert_close(&got_logits, &oracle[1].to_f32(), "tied head");
    (got_rows, oracle[0].to_f32())
}

#[test]
fn a_lookup_reads_the_rows_from_the_panels_the_head_multiplies() {
    // 77 rows (a partial panel) of 256 (eight blocks); ids repeat and reach both ends.
    let (n, k) = (77usize, 256usize);
    let ids = [0, 76, 5, 5, 40, 1];
    for scheme in 0..7 {
        let format = match scheme {
            3 => CompactFormat::Q8Offset,
            4 => CompactFormat::Q8Split,
            5 | 6 => CompactFormat::Q4,
            _ => CompactFormat::Q8,
        };
        let table = HostData::from(scheme_values(n, k, 11, scheme))
            .into_compact(format)
            .unwrap();
        let g = Graph::new();
        let w = g
            .input_with_data("w", Shape::of(&[n, k]), table.clone())
            .unwrap();
        let ids_t = g.input("ids", Shape::of(&[ids.len()]), DType::I32);
        assert!(schedule_has(
            &w.gather_rows(&ids_t).unwrap(),
            &format!("packed {}", format.name())
        ));
        let (got, want) = lookup_and_head(table, n, k, &ids);
        // Offsets come back within a few ulps of a block's largest value; the rest exactly.
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in got.iter().zip(&want).enumerate() {
            assert!(
                (x - y).abs() <= 1e-6 * scale,
                "scheme {scheme} [{i}] {x} vs {y}"
            );
        }
    }
    // bf16 panels hold rows of any length: 200 here.
    let (n, k) = (77usize, 200usize);
    let values: Vec<f32> = lcg_values(n * k, 4, 1.0)
        .into_iter()
        .map(|v| half::bf16::from_f32(v).to_f32())
        .collect();
    let table = HostData::from(values)
        .into_compact(CompactFormat::Bf16)
        .unwrap();
    let (got, want) = lookup_and_head(table, n, k, &ids);
    assert_eq!(got, want, "bf16 rows are exact");
}
