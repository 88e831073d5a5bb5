//! `info --tensors` lists what a file stores, tensor by tensor: a K-quant mix shows its
//! per-tensor types (llama.cpp's Q4_K_M puts the last layers' `attn_v`/`ffn_down` in Q6_K)
//! and the per-type byte totals add up.

use std::process::Command;

#[test]
fn tensors_of_a_k_quant_mix_are_listed_with_their_types() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/testdata/llama-small-quant/model-q4_k_m.gguf"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_cranegrad"))
        .env("CRANEGRAD_NO_DISK_CACHE", "1")
        .args(["info", "-m", path, "--tensors"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8(o.stdout).unwrap();
    let row = |name: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} in {out}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let ty = |name: &str| row(name)[row(name).len() - 2].clone();
    assert_eq!(ty("model.layers.0.self_attn.v_proj.weight"), "Q4_K");
    assert_eq!(ty("model.layers.2.self_attn.v_proj.weight"), "Q6_K");
    assert_eq!(ty("lm_head.weight"), "Q6_K");
    assert_eq!(ty("model.norm.weight"), "F32");
    // The listed bytes of each type add up to the summary's `bytes <type>` row.
    for dtype in ["Q4_K", "Q6_K", "F32"] {
        let listed: u64 = out
            .lines()
            // Tensor rows: the first word is a tensor name (`model.norm.weight`).
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|w| w.ends_with(".weight"))
            })
            .filter(|l| l.split_whitespace().rev().nth(1) == Some(dtype))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum();
        let summary: u64 = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("bytes {dtype}")))
            .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .unwrap();
        assert_eq!(listed, summary, "{dtype}");
    }
}
