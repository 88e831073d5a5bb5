//! `cranegrad golden verify|write`: the golden-tensors workflow. Verify compares our logits and
//! greedy tokens with a file from an independent reference; write records our own outputs in
//! the same format.
//!
//! Exit codes of verify: 0 when the comparison ran and passed, 1 when it ran and failed
//! (logits outside tolerance or a different token). A golden that cannot be compared with the
//! model at all (no `generated` tensor, logits over another vocabulary) is bad input, exit 2
//! like every other error, so exit 1 always means "the model disagrees with the reference".

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};

use cranegrad_models::golden::{read, verify, write};
use cranegrad_models::quantize::Quantize;
use cranegrad_runtime::{Session, SessionOptions};

use super::table::Table;

/// Options of `cranegrad golden`.
#[derive(Args, Debug)]
pub struct GoldenArgs {
    #[command(subcommand)]
    command: GoldenCommand,
}

#[derive(Subcommand, Debug)]
enum GoldenCommand {
    /// Check the model against a golden safetensors file (exit 1 on a mismatch, 2 if the file
    /// does not fit the model).
    Verify {
        /// A preset, a Hugging Face folder, a .gguf file or a minimind JSON file.
        #[arg(short = 'm', long)]
        model: String,
        /// Golden file with `input_ids`, `logits` and `generated`.
        #[arg(long)]
        golden: PathBuf,
        /// Absolute tolerance.
        #[arg(long, default_value_t = 1e-4)]
        atol: f64,
        /// Relative tolerance.
        #[arg(long, default_value_t = 1e-4)]
        rtol: f64,
        /// Seed of a preset's random weights.
        #[arg(long, default_value_t = 0)]
        weights_seed: u64,
        /// Quantize the model's matrices at load (f16, bf16, q8_0, q4_0, int8, nf4) and check
        /// the quantized model (against a golden made from the same quantization).
        #[arg(long, value_parser = Quantize::parse)]
        quantize: Option<Quantize>,
        /// Run with fusion off.
        #[arg(long)]
        no_fuse: bool,
    },
    /// Write a golden file from our own outputs.
    Write {
        /// A preset, a Hugging Face folder, a .gguf file or a minimind JSON file.
        #[arg(short = 'm', long)]
        model: String,
        /// Token ids of one batch row, comma-separated; repeat for more rows.
        #[arg(long = "input-ids", required = true)]
        input_ids: Vec<String>,
        /// Greedy tokens to generate.
        #[arg(long, default_value_t = 16)]
        new_tokens: usize,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Seed of a preset's random weights.
        #[arg(long, default_value_t = 0)]
        weights_seed: u64,
        /// Quantize the model's matrices at load (f16, bf16, q8_0, q4_0, int8, nf4) and record
        /// the quantized model's own outputs.
        #[arg(long, value_parser = Quantize::parse)]
        quantize: Option<Quantize>,
    },
}

fn parse_rows(rows: &[String]) -> anyhow::Result<Vec<Vec<i32>>> {
    rows.iter()
        .map(|r| {
            r.split(',')
                .map(|t| {
                    t.trim()
                        .parse::<i32>()
                        .map_err(|e| anyhow!("--input-ids {r:?}: {t:?} is not a token id ({e})"))
                })
                .collect()
        })
        .collect()
}

/// Runs the command.
pub fn golden(a: GoldenArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        GoldenCommand::Verify {
            model,
            golden,
            atol,
            rtol,
            weights_seed,
            quantize,
            no_fuse,
        } => {
            let m = super::progress::load_model(&model, weights_seed, quantize)?;
            let g = read(&golden).with_context(|| format!("reading {}", golden.display()))?;
            let mut s = Session::new(SessionOptions {
                fuse: !no_fuse,
                ..SessionOptions::default()
            })?;
            let r = verify(&mut s, &m, &g, atol, rtol)
                .with_context(|| format!("checking {model} against {}", golden.display()))?;
            let mut t = Table::default();
            t.row("model", model)
                .row("golden", golden.display().to_string())
                .row("logits checked", r.logits_checked.to_string())
                .row("max abs error", format!("{:.3e}", r.max_abs_diff))
                .row(
                    "tolerance",
                    format!(
                        "atol {atol:e} + rtol {rtol:e} x |golden| (worst {:.3} of it)",
                        r.worst_ratio
                    ),
                )
                .row(
                    "generated tokens",
                    format!("{}/{} match", r.tokens_matching.0, r.tokens_matching.1),
                )
                .row("result", if r.passed { "PASS" } else { "FAIL" });
            print!("{}", t.render());
            Ok(if r.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        GoldenCommand::Write {
            model,
            input_ids,
            new_tokens,
            out,
            weights_seed,
            quantize,
        } => {
            let m = super::progress::load_model(&model, weights_seed, quantize)?;
            let rows = parse_rows(&input_ids)?;
            let mut s = Session::new(SessionOptions::default())?;
            write(&mut s, &m, &rows, new_tokens, &out)?;
            println!(
                "wrote {} ({} rows, {} prompt tokens, {new_tokens} generated)",
                out.display(),
                rows.len(),
                rows[0].len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
