//! The `qgpt` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "qgpt",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("QGPT_GIT_SHA"), ")"),
    about = "GPT-family text generation from GGUF files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a GGUF file: architecture, hyperparameters, tokenizer, tensors.
    Inspect(cli::inspect::Args),
    /// Print the token ids of a text as a JSON array.
    Tokenize(cli::tokenize::Args),
    /// Generate text from a prompt, streaming it to stdout.
    Generate(cli::generate::Args),
    /// Benchmark a model end to end (`-m FILE`, llama-bench's method) or the kernels (`--kernels`).
    Bench(cli::bench::Args),
    /// Score a text file's perplexity (llama-perplexity's method).
    Perplexity(cli::perplexity::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Tokenize(a) => cli::tokenize::run(a),
        Command::Generate(a) => cli::generate::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Perplexity(a) => cli::perplexity::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
