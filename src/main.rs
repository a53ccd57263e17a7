//! The `qgpt` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "qgpt",
    version = qgpt::server::VERSION,
    about = "GPT-family text generation from GGUF files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: human-readable text, or one JSON object per line (for log
    /// collectors). The level comes from RUST_LOG (default: info for serve, warn otherwise).
    #[arg(
        long,
        global = true,
        env = "QGPT_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

/// `--log-format`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: timestamp, level, target, message and fields.
    Json,
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
    /// Serve the gRPC API (qgpt.v1.TextGeneration, health, reflection) until SIGTERM/SIGINT.
    Serve(cli::serve::Args),
    /// Convert a Hugging Face GPT-2 checkpoint (safetensors) into a GGUF file.
    Convert(cli::convert::ConvertArgs),
    /// Requantize a GGUF file (llama-quantize's recipe): Q8_0, Q4_0, Q4_1, F16 or F32.
    Quantize(cli::convert::QuantizeArgs),
    /// Load a running server with concurrent streams and report throughput and latency.
    Loadtest(cli::loadtest::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs its lifecycle and each finished request; the other commands only warn.
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    let result = match cli.command {
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Tokenize(a) => cli::tokenize::run(a),
        Command::Generate(a) => cli::generate::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Perplexity(a) => cli::perplexity::run(a),
        Command::Serve(a) => cli::serve::run(a),
        Command::Loadtest(a) => cli::loadtest::run(a),
        Command::Convert(a) => cli::convert::run_convert(a),
        Command::Quantize(a) => cli::convert::run_quantize(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
