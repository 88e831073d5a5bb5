//! `cranegrad chat`: an interactive prompt. Each line you type is appended to the
//! conversation (the KV cache keeps every earlier turn) and the reply streams back with live
//! tokens/s. Works with stdin from a pipe too: one prompt per line.

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use super::conversation::{Conversation, common_prefix};
use super::{chat_input, checks, interrupt, progress, stop, text_out};
use cranegrad_models::chat_template::ChatMessage;
use cranegrad_models::generate::Generator;
use cranegrad_models::quantize::Quantize;
use cranegrad_models::sample::{Sampler, SamplingParams};
use cranegrad_models::tokenizer::{TextStream, Tokenizer};
use cranegrad_runtime::{Session, SessionOptions};

/// Options of `cranegrad chat`.
#[derive(Args, Debug)]
pub struct ChatArgs {
    /// A preset, a Hugging Face folder, a .gguf file or a minimind JSON file.
    #[arg(long, short = 'm', default_value = "small")]
    model: String,
    /// Convert the model's matrices at load: f16, bf16, q8_0, q4_0 (llama.cpp's blocks),
    /// int8 (per output channel) or nf4; q8_0, q4_0 and int8 run from 8-bit panels, bf16
    /// from 16-bit ones, the others from their exact dequantisation (see docs/cli.md).
    #[arg(long, value_parser = Quantize::parse)]
    quantize: Option<Quantize>,
    /// Tokens to generate per reply.
    #[arg(long, short = 'n', visible_alias = "n-predict", default_value_t = 64)]
    max_new: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(
        long,
        visible_alias = "temp",
        default_value_t = 0.7,
        allow_negative_numbers = true
    )]
    temperature: f32,
    /// Keep only the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    top_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(
        long,
        visible_alias = "repeat-penalty",
        default_value_t = 1.1,
        allow_negative_numbers = true
    )]
    repetition_penalty: f32,
    /// Sampling seed.
    #[arg(long, short = 's', default_value_t = 0)]
    seed: u64,
    /// Seed of a preset's random weights.
    #[arg(long, default_value_t = 0)]
    weights_seed: u64,
    /// KV-cache length: the whole conversation must fit.
    #[arg(long, short = 'c', visible_alias = "ctx-size")]
    ctx: Option<usize>,
    /// Stop generating where the text contains this string (repeatable); it is not printed.
    #[arg(long)]
    stop: Vec<String>,
    /// A tokenizer.json or GGUF vocabulary to use instead of the model's own (or byte-level).
    #[arg(long)]
    tokenizer: Option<std::path::PathBuf>,
    /// The system prompt, rendered first by the chat template.
    #[arg(long)]
    system: Option<String>,
    /// Send the raw lines, without the model's chat template.
    #[arg(long)]
    no_template: bool,
    /// Append one JSON object per turn to FILE (prompt and reply tokens, TTFT, tokens/s), as
    /// each turn ends.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Threads (default: all cores).
    #[arg(long, short = 't')]
    threads: Option<usize>,
}

/// Runs the command.
pub fn chat(a: ChatArgs) -> anyhow::Result<ExitCode> {
    interrupt::install();
    let threads = checks::threads(a.threads)?;
    checks::positive("--max-new", a.max_new, checks::MAX_COUNT)?;
    checks::sampling(a.temperature, a.top_p, a.repetition_penalty)?;
    if let Some(c) = a.ctx {
        checks::positive("--ctx", c, usize::MAX)?;
    }
    let mut turn_log = match checks::optional_output("--json", a.json.as_deref(), None)? {
        None => None,
        Some(checks::Output::Stdout) => {
            anyhow::bail!("--json - would mix with the replies on stdout; give a file")
        }
        Some(checks::Output::File(p)) => Some(
            std::fs::File::create(&p)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?,
        ),
    };
    let model = progress::load_model(&a.model, a.weights_seed, a.quantize)?;
    let tok = match &a.tokenizer {
        Some(p) => Tokenizer::from_file(p)?,
        None => Tokenizer::for_model(&a.model, model.vocab())?,
    };
    let opts = SessionOptions {
        threads,
        ..SessionOptions::default()
    };
    let mut session = Session::new(opts)?;
    // Weights live on as packed panels only: raw copies are freed once packed.
    session.set_free_raw_weights(true);
    let ctx = a.ctx.unwrap_or(2048).min(model.max_positions());
    if a.max_new >= ctx {
        anyhow::bail!(
            "--max-new {} leaves no room for a line in the context of {ctx} positions",
            a.max_new
        );
    }
    let mut gen_ = Generator::new(&model, &mut session, 1, ctx)?;
    let mut sampler = Sampler::new(
        SamplingParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            repetition_penalty: a.repetition_penalty,
        },
        a.seed,
    );
    let mut eos = model.config.eos_token_ids().to_vec();
    eos.extend(&tok.info().end_of_generation);
    let v = model.vocab();
    let template = if a.no_template {
        None
    } else {
        tok.chat_template()
    };
    if a.system.is_some() && template.is_none() {
        eprintln!("warning: no chat template: --system is sent as a raw first line");
    }
    let mut conv = Conversation::new(&tok, template, a.system.clone());
    // The ids in the KV cache, in order.
    let mut history: Vec<i32> = Vec::new();
    let mut logits: Vec<f32> = Vec::new();
    let mut out = text_out::TextOut::new();
    eprintln!(
        "cranegrad chat — {} ({}; {}); one prompt per line, /help for commands, Ctrl-D to quit",
        a.model,
        tok.name(),
        match template {
            Some(t) => format!("chat template from {}", t.origin),
            None if a.no_template => "raw lines (--no-template)".to_string(),
            None => "raw lines: the model carries no chat template".to_string(),
        }
    );
    let mut last: Option<TurnStats> = None;
    let mut input = chat_input::ChatInput::open();
    loop {
        let raw = match input.next()? {
            chat_input::Entry::Line(raw) => raw,
            chat_input::Entry::Cancelled => continue,
            chat_input::Entry::End => break,
        };
        // Ctrl-C at the prompt only clears it: the reply it would stop has not started.
        interrupt::take();
        // One line of bytes that are not UTF-8 is reported and skipped, not the end of the chat.
        let Ok(line) = std::str::from_utf8(&raw) else {
            eprintln!("[skipped a line that is not valid UTF-8]");
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        if let Some(command) = line.trim().strip_prefix('/') {
            let (name, arg) = command.split_once(' ').unwrap_or((command, ""));
            match name {
                "bye" | "exit" => break,
                "help" => eprintln!("{HELP}"),
                "clear" => {
                    history.clear();
                    conv.turns.clear();
                    last = None;
                    gen_ = Generator::new(&model, &mut session, 1, ctx)?;
                    eprintln!("[new conversation]");
                }
                "system" if arg.trim().is_empty() => match &conv.system {
                    Some(s) => eprintln!("[system prompt: {s}]"),
                    None => eprintln!("[no system prompt; /system TEXT sets one]"),
                },
                "system" => {
                    // The next turn renders the new system prompt first; the cache keeps
                    // what still matches and recomputes the rest.
                    conv.system = Some(arg.trim().to_string());
                    eprintln!("[system prompt set; it applies from the next line]");
                }
                "stats" => match &last {
                    Some(t) => eprintln!(
                        "[{} message(s) in the context, {} of {ctx} positions in use; last reply {} tokens, TTFT {:.1} ms, {:.1} tokens/s]",
                        conv.messages().len(),
                        history.len(),
                        t.reply_tokens,
                        t.ttft_ms,
                        t.tokens_per_s
                    ),
                    None => eprintln!("[no reply yet]"),
                },
                "save" if !arg.trim().is_empty() => {
                    let path = std::path::Path::new(arg.trim());
                    let messages = conv.messages();
                    let saved = checks::output("/save", path, None).and_then(|o| {
                        o.write(
                            format!("{}\n", serde_json::to_string_pretty(&messages)?).as_bytes(),
                        )
                    });
                    match saved {
                        Ok(()) => {
                            eprintln!("[saved {} messages to {}]", messages.len(), path.display())
                        }
                        Err(e) => eprintln!("[not saved: {e:#}]"),
                    }
                }
                _ => eprintln!("[unknown command /{name}; /help lists them]"),
            }
            continue;
        }
        let submitted = Instant::now();
        let mut target = conv.prompt_ids(line)?;
        // A full context drops the oldest turns (the system prompt stays).
        let mut dropped = 0;
        while target.len() + a.max_new > ctx && conv.drop_oldest_turn() {
            dropped += 1;
            target = conv.prompt_ids(line)?;
        }
        if target.len() + a.max_new > ctx {
            eprintln!(
                "[skipped a line: its prompt of {} tokens with --max-new {} exceeds the context of {ctx} positions]",
                target.len(),
                a.max_new
            );
            continue;
        }
        if dropped > 0 {
            eprintln!(
                "[context of {ctx} positions full: dropped the oldest {dropped} turn(s), kept {}]",
                conv.turns.len() / 2
            );
        }
        // The cache keeps the longest prefix it shares with the new prompt; the rest is fed.
        let keep = common_prefix(&history, &target);
        if keep == 0 || dropped > 0 {
            gen_ = Generator::new(&model, &mut session, 1, ctx)?;
            history.clear();
        } else if keep < history.len() {
            gen_.rewind(keep)?;
            history.truncate(keep);
        }
        let fed = target.len() - history.len();
        if history.is_empty() {
            logits = gen_.prefill(&mut session, std::slice::from_ref(&target))?;
        } else {
            for &t in &target[history.len()..] {
                logits = gen_.step(&mut session, &[t])?;
            }
        }
        history = target;
        let t0 = Instant::now();
        let mut ttft_ms = None;
        let reply_start = history.len();
        let mut n = 0usize;
        let mut text = TextStream::new(&tok, &history)?;
        let mut stops = stop::StopFilter::new(&a.stop);
        let mut printed: Vec<u8> = Vec::new();
        for _ in 0..a.max_new {
            // Ctrl-C stops this reply; the conversation goes on from what it said.
            if interrupt::take() {
                eprintln!("\n[reply stopped]");
                break;
            }
            let next = sampler.sample(&logits[..v], &history);
            if eos.contains(&(next as u32)) {
                break;
            }
            ttft_ms.get_or_insert_with(|| submitted.elapsed().as_secs_f64() * 1e3);
            history.push(next);
            let piece = stops.push(&text.push(next)?);
            out.write(&piece)?;
            printed.extend(piece);
            n += 1;
            logits = gen_.step(&mut session, &[next])?;
            if stops.stopped() {
                break;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        // Text held back inside a multi-byte character is printed, not lost.
        let rest = stops.push(&text.finish()?);
        out.write(&rest)?;
        printed.extend(rest);
        let tail = stops.finish();
        out.write(&tail)?;
        printed.extend(tail);
        out.newline()?;
        let tokens_per_s = n as f64 / secs.max(1e-9);
        eprintln!("[{n} tokens, {tokens_per_s:.1} tokens/s]");
        // The reply as shown (cut at a stop string) is what later turns render.
        conv.turns.push(ChatMessage::new("user", line));
        conv.turns.push(ChatMessage::new(
            "assistant",
            &String::from_utf8_lossy(&printed),
        ));
        let stats = TurnStats {
            reply_tokens: n,
            ttft_ms: ttft_ms.unwrap_or(0.0),
            tokens_per_s,
        };
        if let Some(f) = turn_log.as_mut() {
            use std::io::Write;
            let row = serde_json::json!({
                "prompt_tokens": fed,
                "context_tokens": reply_start,
                "reply_tokens": stats.reply_tokens,
                "ttft_ms": ttft_ms,
                "tokens_per_s": (n > 0).then_some(tokens_per_s),
            });
            writeln!(f, "{row}").and_then(|()| f.flush())?;
        }
        last = Some(stats);
    }
    Ok(ExitCode::SUCCESS)
}

/// The commands a chat line may be, for /help.
const HELP: &str = "/help  this list\n/bye, /exit  end the chat (as Ctrl-D)\n/clear  a new conversation (the KV cache starts empty)\n/stats  turns, context in use, the last reply's figures\n/system TEXT  set the system prompt (/system alone shows it)\n/save FILE  the conversation as [{\"role\", \"content\"}] JSON";

/// Figures of one turn.
struct TurnStats {
    /// Tokens of the reply.
    reply_tokens: usize,
    /// Line submitted to first reply token, ms (0 for an empty reply).
    ttft_ms: f64,
    /// Reply tokens per second.
    tokens_per_s: f64,
}
