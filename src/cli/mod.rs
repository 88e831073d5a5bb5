//! Command-line parsing and dispatch. Exit codes: 0 success, 1 a failed check, 2 bad input or
//! usage.

mod attention_png;
mod bench;
mod cache;
mod chat;
mod chat_input;
mod checks;
mod conversation;
mod generate;
mod golden;
mod html_view;
mod info;
mod interrupt;
mod progress;
mod run;
mod stop;
mod table;
mod template;
mod text_out;
mod tokenize;
mod tokenizer_load;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// cranegrad: a compute-graph compiler that fuses lazy tensor graphs and JIT-compiles them to
/// CPU kernels with Cranelift.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where compiled kernels are kept between runs (default: $CRANEGRAD_CACHE_DIR, else
    /// $XDG_CACHE_HOME/cranegrad, else ~/.cache/cranegrad).
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<std::path::PathBuf>,
    /// Compile every kernel, reading and writing no disk cache (also CRANEGRAD_NO_DISK_CACHE=1).
    #[arg(long, global = true)]
    no_disk_cache: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a built-in example through the JIT and report cold and warm latency.
    Run(run::RunArgs),
    /// Show a model's config, parameter count and bytes per stored dtype.
    Info(info::InfoArgs),
    /// Verify against, or write, golden tensors (logits and greedy tokens).
    Golden(golden::GoldenArgs),
    /// Generate text with a KV cache, streaming tokens to stdout.
    Generate(generate::GenerateArgs),
    /// Interactive chat: each line continues the conversation; live tokens/s.
    Chat(chat::ChatArgs),
    /// Benchmark a model: load, cold start, warm latency, generation, memory, throughput.
    Bench(bench::BenchArgs),
    /// Print the token ids (and pieces) of a text with a model's tokenizer.
    Tokenize(tokenize::TokenizeArgs),
    /// Print the text of token ids with a model's tokenizer.
    Detokenize(tokenize::DetokenizeArgs),
    /// Render a conversation with a model's chat template (or a template file).
    Template(template::TemplateArgs),
    /// The compiled-kernel cache on disk: its path, what it holds, or clear it.
    Cache(cache::CacheArgs),
}

/// Runs the parsed command.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Cache(a) = cli.command {
        return cache::cache(a, cli.cache_dir.as_deref());
    }
    cache::install(cli.cache_dir.as_deref(), cli.no_disk_cache);
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Info(a) => info::info(a),
        Command::Golden(a) => golden::golden(a),
        Command::Generate(a) => generate::generate(a),
        Command::Chat(a) => chat::chat(a),
        Command::Bench(a) => bench::bench(a),
        Command::Tokenize(a) => tokenize::tokenize(a),
        Command::Detokenize(a) => tokenize::detokenize(a),
        Command::Template(a) => template::template(a),
        Command::Cache(_) => unreachable!("handled above"),
    }
}
