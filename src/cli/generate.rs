//! `cranegrad generate`: streams generated text to stdout (so it can be piped) and prints
//! TTFT, decode ms/token and tokens/s to stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, anyhow};
use clap::Args;
use serde_json::{Map, json};

use cranegrad::stats::median;
use cranegrad_models::chat_template::ChatMessage;
use cranegrad_models::generate::Generator;
use cranegrad_models::quantize::Quantize;
use cranegrad_models::sample::{Sampler, SamplingParams};
use cranegrad_models::tokenizer::{TextStream, Tokenizer};
use cranegrad_runtime::{Session, SessionOptions};

use super::table::write_json;
use super::{checks, interrupt, progress, stop, text_out};

/// Options of `cranegrad generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A preset, a Hugging Face folder, a .gguf file or a minimind JSON file.
    #[arg(long, short = 'm', default_value = "small")]
    model: String,
    /// Prompt text; repeat for a batch.
    #[arg(long, short = 'p')]
    prompt: Vec<String>,
    /// A file with one prompt per line.
    #[arg(long, short = 'f')]
    prompt_file: Option<PathBuf>,
    /// Tokens to generate per prompt.
    #[arg(long, short = 'n', visible_alias = "n-predict", default_value_t = 32)]
    max_new: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(
        long,
        visible_alias = "temp",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    temperature: f32,
    /// Keep only the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(
        long,
        visible_alias = "repeat-penalty",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    repetition_penalty: f32,
    /// Sampling seed.
    #[arg(long, short = 's', default_value_t = 0)]
    seed: u64,
    /// Seed of a preset's random weights.
    #[arg(long, default_value_t = 0)]
    weights_seed: u64,
    /// Repeat a single prompt this many times as one batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// KV-cache length (default 2048, capped at the model's maximum).
    #[arg(long, short = 'c', visible_alias = "ctx-size")]
    ctx: Option<usize>,
    /// Stop generating where the text contains this string (repeatable); it is not printed.
    #[arg(long)]
    stop: Vec<String>,
    /// Threads (default: all cores).
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// A tokenizer.json or GGUF vocabulary to use instead of the model's own (or byte-level).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Render each prompt as a user message with the model's chat template (the assistant's
    /// reply is generated), as `chat` does for one turn.
    #[arg(long)]
    chat: bool,
    /// With --chat: a system prompt rendered before the user message.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Also write the timing figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Convert the model's matrices at load: f16, bf16, q8_0, q4_0 (llama.cpp's blocks),
    /// int8 (per output channel) or nf4; q8_0, q4_0 and int8 run from 8-bit panels, bf16
    /// from 16-bit ones, the others from their exact dequantisation (see docs/cli.md).
    #[arg(long, value_parser = Quantize::parse)]
    quantize: Option<Quantize>,
    /// `html:FILE`: write a self-contained HTML view of the first prompt's forward (its graph,
    /// kernels, their IR, machine code and times).
    #[arg(long, require_equals = true)]
    dump_graph: Option<String>,
    /// Write one PNG per layer of the first prompt's attention weights into this folder
    /// (created if absent): a grid of heads, a colour bar, tokens on the axes when short.
    #[arg(long)]
    attention_png: Option<PathBuf>,
}

/// Runs the command.
pub fn generate(a: GenerateArgs) -> anyhow::Result<ExitCode> {
    interrupt::install();
    let json = checks::optional_output("--json", a.json.as_deref(), None)?;
    let page = super::html_view::page_flag(a.dump_graph.as_deref())?;
    if let Some(d) = &a.attention_png {
        checks::output_dir("--attention-png", d)?;
    }
    let threads = checks::threads(a.threads)?;
    checks::positive("--max-new", a.max_new, checks::MAX_COUNT)?;
    checks::sampling(a.temperature, a.top_p, a.repetition_penalty)?;
    if let Some(b) = a.batch_size {
        checks::positive("--batch-size", b, checks::MAX_COUNT)?;
    }
    if let Some(c) = a.ctx {
        checks::positive("--ctx", c, usize::MAX)?;
    }
    let model = progress::load_model(&a.model, a.weights_seed, a.quantize)?;
    let tok = match &a.tokenizer {
        Some(p) => Tokenizer::from_file(p)?,
        None => Tokenizer::for_model(&a.model, model.vocab())?,
    };
    let mut prompts = a.prompt.clone();
    if let Some(f) = &a.prompt_file {
        // `-f -` reads the prompts from stdin.
        let text = if f.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading prompts from stdin")?
        } else {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        };
        prompts.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
    }
    if prompts.is_empty() {
        return Err(anyhow!(
            "give a prompt with --prompt TEXT or --prompt-file FILE"
        ));
    }
    if let Some(b) = a.batch_size {
        if prompts.len() != 1 || b == 0 {
            return Err(anyhow!(
                "--batch-size repeats one prompt; give exactly one and B >= 1"
            ));
        }
        prompts = vec![prompts[0].clone(); b];
    }
    let rows: Vec<Vec<i32>> = if a.chat {
        let Some(template) = tok.chat_template() else {
            return Err(anyhow!(
                "--chat: {} carries no chat template (tokenizer: {})",
                a.model,
                tok.name()
            ));
        };
        prompts
            .iter()
            .map(|p| {
                let mut messages: Vec<ChatMessage> = a
                    .system
                    .iter()
                    .map(|s| ChatMessage::new("system", s))
                    .collect();
                messages.push(ChatMessage::new("user", p));
                // The template writes the special tokens itself (BOS included).
                tok.encode(&template.render(&messages, true)?)
            })
            .collect::<Result<_, _>>()?
    } else {
        prompts
            .iter()
            .map(|p| tok.encode_prompt(p))
            .collect::<Result<_, _>>()?
    };
    if rows.iter().any(Vec::is_empty) {
        return Err(anyhow!("every prompt must tokenize to at least one token"));
    }
    let ctx = a.ctx.unwrap_or(2048).min(model.max_positions());
    let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
    let need = checks::add_lengths("prompt + --max-new", longest, a.max_new)?;
    if need > ctx {
        return Err(anyhow!(
            "prompt ({} tokens) + --max-new {} = {need} exceeds the context of {ctx} positions",
            longest,
            a.max_new
        ));
    }
    let opts = SessionOptions {
        threads,
        ..SessionOptions::default()
    };
    let mut session = Session::new(opts)?;
    // Weights live on as packed panels only: raw copies are freed once packed.
    session.set_free_raw_weights(true);
    let params = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        repetition_penalty: a.repetition_penalty,
    };
    let mut samplers: Vec<Sampler> = (0..rows.len())
        .map(|i| Sampler::new(params.clone(), a.seed.wrapping_add(i as u64)))
        .collect();
    let mut eos = model.config.eos_token_ids().to_vec();
    eos.extend(&tok.info().end_of_generation);
    let b = rows.len();
    let v = model.vocab();
    let mut seqs = rows.clone();
    let mut done = vec![false; b];
    let mut out = text_out::TextOut::new();
    let stream = b == 1;
    let mut text = TextStream::new(&tok, &rows[0])?;
    let mut stops = stop::StopFilter::new(&a.stop);
    if !a.stop.is_empty() && !stream {
        anyhow::bail!("--stop applies to one prompt (a batch is printed whole at the end)");
    }
    let mut interrupted = false;
    let t0 = Instant::now();
    let mut gen_ = Generator::new(&model, &mut session, b, ctx)?;
    let pb = progress::spinner("compiling and running the prompt");
    let mut logits = gen_.prefill(&mut session, &rows)?;
    pb.finish_and_clear();
    // The prompt shows once the spinner is gone, the generated text right after it.
    // The prompt as typed: a BOS the tokenizer added is not text the user wrote.
    let bos_added = (!a.chat)
        .then(|| tok.info().adds.first().copied())
        .flatten();
    let typed = |ids: &'_ [i32]| -> Vec<i32> {
        match (bos_added, ids.first()) {
            (Some(b), Some(&first)) if first == b as i32 => ids[1..].to_vec(),
            _ => ids.to_vec(),
        }
    };
    if stream {
        out.write(&tok.decode_bytes(&typed(&rows[0]))?)?;
    }
    let mut ttft = 0.0;
    let mut steps = Vec::new();
    for i in 0..a.max_new {
        let next: Vec<i32> = (0..b)
            .map(|r| samplers[r].sample(&logits[r * v..(r + 1) * v], &seqs[r]))
            .collect();
        if i == 0 {
            ttft = t0.elapsed().as_secs_f64() * 1e3;
        }
        for r in 0..b {
            if done[r] {
                continue;
            }
            let is_eos = eos.contains(&(next[r] as u32));
            done[r] = is_eos;
            if is_eos {
                continue;
            }
            seqs[r].push(next[r]);
            if stream {
                out.write(&stops.push(&text.push(next[r])?))?;
                if stops.stopped() {
                    done[r] = true;
                }
            }
        }
        if interrupt::take() {
            interrupted = true;
            break;
        }
        if done.iter().all(|&d| d) || i + 1 == a.max_new {
            break;
        }
        let t = Instant::now();
        logits = gen_.step(&mut session, &next)?;
        steps.push(t.elapsed().as_secs_f64() * 1e3);
    }
    if stream {
        // Text held back inside a multi-byte character is printed, not lost.
        let rest = stops.push(&text.finish()?);
        out.write(&rest)?;
        out.write(&stops.finish())?;
        out.newline()?;
    } else {
        for s in &seqs {
            out.write(&tok.decode_bytes(&typed(s))?)?;
            out.newline()?;
        }
    }
    // No decode step (one new token, or EOS at once): no figure rather than a zero.
    let per_token = (!steps.is_empty()).then(|| median(&steps));
    let tps = per_token.map(|d| b as f64 * 1000.0 / d);
    let show =
        |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    if interrupted {
        eprintln!(
            "[interrupted: stopped after {} tokens]",
            seqs[0].len() - rows[0].len()
        );
    }
    eprintln!(
        "ttft {ttft:.2} ms | decode {} ms/token (median of {} steps) | {} tokens/s | batch {b} | {} kernels compiled, {} cache hits | tokenizer {}",
        show(per_token, 3),
        steps.len(),
        show(tps, 1),
        session.cache_stats().misses,
        session.cache_stats().hits,
        tok.name()
    );
    if let Some(out) = json {
        let mut m = Map::new();
        m.insert("ttft_ms".into(), json!(ttft));
        m.insert("decode_ms_per_token".into(), json!(per_token));
        m.insert("tokens_per_s".into(), json!(tps));
        m.insert("batch".into(), json!(b));
        m.insert("decode_steps".into(), json!(steps.len()));
        m.insert(
            "kernels_compiled".into(),
            json!(session.cache_stats().misses),
        );
        write_json(&out, &m)?;
    }
    if let Some(dir) = a.attention_png.as_ref().filter(|_| !interrupted) {
        let pb = progress::spinner("drawing the attention maps");
        let maps =
            cranegrad_models::attention_maps::attention_maps(&model, &mut session, &rows[0])?;
        let tokens: Vec<String> = rows[0]
            .iter()
            .map(|&id| String::from_utf8_lossy(&tok.piece(id).unwrap_or_default()).into_owned())
            .collect();
        let written = super::attention_png::write_all(dir, &maps, &tokens)?;
        pb.finish_and_clear();
        eprintln!(
            "attention maps: {} layers written to {}",
            written.len(),
            dir.display()
        );
    }
    if let Some(page) = page.filter(|_| !interrupted) {
        let (_g, logits) = model.forward_graph(1, rows[0].len())?;
        let mut feeds = cranegrad_runtime::Feeds::new();
        feeds.insert("tokens".into(), rows[0].clone().into());
        // The generating session: its packed panels serve this forward too (its raw
        // weights may be freed).
        let title = format!("{}: forward of the first prompt", a.model);
        super::html_view::write_page(&mut session, &logits, &feeds, &title, &page)?;
    }
    Ok(if interrupted {
        ExitCode::from(interrupt::EXIT_INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    })
}
