//! llama-bench-style rows: for each combination of the comma lists (`--batch-size`, `-p`,
//! `-n`, `-t`), a prompt-processing row `ppP` (one prefill of `batch x P` tokens) and a
//! text-generation row `tgN` (`N` decode steps), each in tokens/s as the mean ± standard
//! deviation over `-r` repetitions, so results sit beside llama-bench's. Formats: a Markdown
//! table (`md`, llama-bench's default look), `csv`, `json` (an array of rows) and `jsonl`.

use std::process::ExitCode;
use std::time::Instant;

use serde::Serialize;

use cranegrad::stats::mean_sd;
use cranegrad::workload::{check_forward_memory, default_input, sample_tokens};
use cranegrad_models::generate::Generator;
use cranegrad_runtime::{Session, SessionOptions};

use super::super::checks::{self, MAX_COUNT};
use super::super::{interrupt, progress};
use super::BenchArgs;

/// How `bench` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The full report (one combination).
    Table,
    /// Rows as a Markdown table.
    Md,
    /// Rows as CSV with a header.
    Csv,
    /// Rows as one JSON array.
    Json,
    /// Rows as one JSON object per line.
    Jsonl,
}

/// One row: a test of one combination.
#[derive(Serialize, Clone, Debug)]
pub struct Row {
    /// The `--model` argument.
    pub model: String,
    /// The model's parameters.
    pub params: usize,
    /// Sequences per forward.
    pub batch_size: usize,
    /// Threads, the caller included.
    pub threads: usize,
    /// `ppP` (prompt processing of P tokens) or `tgN` (generation of N tokens).
    pub test: String,
    /// Tokens per second, mean over the repetitions.
    pub tokens_per_s: f64,
    /// Their sample standard deviation.
    pub tokens_per_s_sd: f64,
    /// Repetitions measured.
    pub repetitions: usize,
}

/// Runs every combination and prints its rows.
pub fn sweep(a: &BenchArgs) -> anyhow::Result<ExitCode> {
    checks::positive("--repetitions", a.repetitions, MAX_COUNT)?;
    // The full report's options have no rows to act on: refused, not ignored.
    let report_only = [
        ("--json FILE", a.json.is_some()),
        ("--compare", a.compare),
        ("--profile", a.profile),
        ("--trace", a.trace.is_some()),
        ("--plot", a.plot.is_some()),
        ("--iters", a.iters.is_some()),
    ];
    if let Some((flag, _)) = report_only.iter().find(|(_, given)| *given) {
        anyhow::bail!(
            "{flag} applies to the full report (one combination, -o table or json); rows take -o md|csv|json|jsonl and -r"
        );
    }
    let (db, ds) = default_input(&a.model);
    let list = |l: &[usize], default: usize| -> Vec<usize> {
        if l.is_empty() {
            vec![default]
        } else {
            l.to_vec()
        }
    };
    let batches = list(&a.batch_size, db);
    let prompts = list(&a.prompt_len, ds);
    let gens = list(&a.gen_len, 16);
    let threads: Vec<usize> = if a.threads.is_empty() {
        vec![checks::threads(None)?]
    } else {
        a.threads
            .iter()
            .map(|&t| checks::threads(Some(t)))
            .collect::<anyhow::Result<_>>()?
    };
    for &b in &batches {
        checks::positive("--batch-size", b, MAX_COUNT)?;
    }
    for &p in &prompts {
        checks::positive("--prompt-len", p, MAX_COUNT)?;
    }
    for &n in &gens {
        checks::count("--gen-len", n, MAX_COUNT)?;
    }
    let model = progress::load_model(&a.model, a.weights_seed, a.quantize)?;
    let positions = model.max_positions();
    for (&p, &n) in prompts
        .iter()
        .flat_map(|p| gens.iter().map(move |n| (p, n)))
    {
        if p.saturating_add(n) > positions {
            anyhow::bail!("-p {p} + -n {n} exceeds the model's {positions} positions");
        }
    }
    let params = model.config.param_count();
    let mut rows = Vec::new();
    'all: for &t in &threads {
        let mut session = Session::new(SessionOptions {
            fuse: true,
            threads: t,
        })?;
        session.set_attention_fusion(!a.unfused_attention);
        for &b in &batches {
            for &p in &prompts {
                check_forward_memory(b, p, model.vocab())?;
                let prompt: Vec<Vec<i32>> = sample_tokens(b, p, model.vocab())
                    .chunks(p)
                    .map(<[i32]>::to_vec)
                    .collect();
                for &n in &gens {
                    // Made before the timed loop: the decode rows time the steps alone.
                    let step_tokens: Vec<Vec<i32>> =
                        (0..n).map(|i| vec![(i % 64) as i32; b]).collect();
                    let pb = progress::spinner(&format!("t {t}, batch {b}, pp{p}, tg{n}"));
                    // One untimed round compiles the prefill and decode plans.
                    let (mut pp, mut tg) = (Vec::new(), Vec::new());
                    for round in 0..=a.repetitions {
                        if interrupt::pending() {
                            break 'all;
                        }
                        let mut g = Generator::new(&model, &mut session, b, p + n.max(1))?;
                        let t0 = Instant::now();
                        g.prefill(&mut session, &prompt)?;
                        let prefill_s = t0.elapsed().as_secs_f64();
                        let t1 = Instant::now();
                        for tokens in &step_tokens {
                            g.step(&mut session, tokens)?;
                        }
                        let decode_s = t1.elapsed().as_secs_f64();
                        if round > 0 {
                            pp.push((b * p) as f64 / prefill_s);
                            if n > 0 {
                                tg.push((b * n) as f64 / decode_s);
                            }
                        }
                    }
                    pb.finish_and_clear();
                    let row = |test: String, samples: &[f64]| {
                        let (mean, sd) = mean_sd(samples);
                        Row {
                            model: a.model.clone(),
                            params,
                            batch_size: b,
                            threads: t,
                            test,
                            tokens_per_s: mean,
                            tokens_per_s_sd: sd,
                            repetitions: samples.len(),
                        }
                    };
                    rows.push(row(format!("pp{p}"), &pp));
                    if n > 0 {
                        rows.push(row(format!("tg{n}"), &tg));
                    }
                }
            }
        }
    }
    print!("{}", render(&rows, a.output)?);
    Ok(if interrupt::pending() {
        eprintln!("[interrupted: the rows above cover what ran before Ctrl-C]");
        ExitCode::from(interrupt::EXIT_INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    })
}

/// The rows in `format` (a Markdown table for `table`, which cannot show a sweep whole).
pub fn render(rows: &[Row], format: Format) -> anyhow::Result<String> {
    let cells = |r: &Row| {
        [
            r.model.clone(),
            r.params.to_string(),
            r.batch_size.to_string(),
            r.threads.to_string(),
            r.test.clone(),
            format!("{:.2} ± {:.2}", r.tokens_per_s, r.tokens_per_s_sd),
        ]
    };
    let header = ["model", "params", "batch", "threads", "test", "t/s"];
    Ok(match format {
        Format::Table | Format::Md => {
            let mut s = format!("| {} |\n", header.join(" | "));
            s.push_str(&format!("|{}\n", " --- |".repeat(header.len())));
            for r in rows {
                s.push_str(&format!("| {} |\n", cells(r).join(" | ")));
            }
            s
        }
        Format::Csv => {
            let mut s = String::from(
                "model,params,batch_size,threads,test,tokens_per_s,tokens_per_s_sd,repetitions\n",
            );
            for r in rows {
                s.push_str(&format!(
                    "{},{},{},{},{},{:.4},{:.4},{}\n",
                    csv_field(&r.model),
                    r.params,
                    r.batch_size,
                    r.threads,
                    r.test,
                    r.tokens_per_s,
                    r.tokens_per_s_sd,
                    r.repetitions
                ));
            }
            s
        }
        Format::Json => format!("{}\n", serde_json::to_string_pretty(rows)?),
        Format::Jsonl => {
            let mut s = String::new();
            for r in rows {
                s.push_str(&serde_json::to_string(r)?);
                s.push('\n');
            }
            s
        }
    })
}

/// A CSV field, quoted when it holds a separator, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
