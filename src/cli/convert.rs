//! `qgpt convert` and `qgpt quantize`: write GGUF files the way llama.cpp's converter and
//! quantizer do, from one binary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::{init_threads, CliError};
use qgpt::convert::{self, ConvertOptions, OutType, QuantizeOptions, Report};

/// Arguments of `qgpt convert`.
#[derive(clap::Args)]
pub struct ConvertArgs {
    /// Hugging Face checkpoint directory: config.json, model.safetensors (or shards with
    /// model.safetensors.index.json), tokenizer.json (or vocab.json + merges.txt).
    hf_dir: PathBuf,
    /// Output GGUF file (written atomically: it appears only when complete).
    #[arg(short, long)]
    output: PathBuf,
    /// Type of the matrices. q4_0/q4_1 store the tied embedding/head as Q6_K, as llama-quantize
    /// does; norms, biases and position embeddings stay F32.
    #[arg(long, value_enum, default_value = "q8_0")]
    outtype: OutType,
    /// general.name (default: the checkpoint directory's name).
    #[arg(long)]
    name: Option<String>,
    /// Worker threads (default: the CPUs this process may use).
    #[arg(short, long)]
    threads: Option<usize>,
    /// No progress bar (it is shown only on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
}

/// Arguments of `qgpt quantize`.
#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// Input GGUF file (F32 or F16 matrices).
    input: PathBuf,
    /// Output GGUF file (written atomically).
    output: PathBuf,
    /// Target type: Q8_0, Q4_0, Q4_1, F16 or F32 (llama-quantize's names, any case).
    #[arg(value_parser = parse_type)]
    r#type: OutType,
    /// Every matrix in TYPE: no Q6_K for the output head / tied embedding (llama-quantize --pure).
    #[arg(long)]
    pure: bool,
    /// Allow re-quantizing tensors that are already quantized.
    #[arg(long)]
    allow_requantize: bool,
    /// Worker threads (default: the CPUs this process may use).
    #[arg(short, long)]
    threads: Option<usize>,
    /// No progress bar (it is shown only on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
}

fn parse_type(s: &str) -> Result<OutType, String> {
    OutType::parse(s)
        .ok_or_else(|| format!("unknown type {s:?}: expected Q8_0, Q4_0, Q4_1, F16 or F32"))
}

fn progress_bar(hidden: bool) -> ProgressBar {
    if hidden || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {wide_msg}",
        )
        .expect("valid template"),
    );
    bar
}

/// Removes a half-written output if the process is interrupted (SIGINT, SIGTERM, SIGHUP), then
/// exits with 128 + the signal number.
fn clean_up_on_signal() {
    qgpt::memory::report_sigbus();
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let code = rt.block_on(async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                    signal(SignalKind::hangup()),
                ) else {
                    return None;
                };
                tokio::select! {
                    _ = int.recv() => Some(130),
                    _ = term.recv() => Some(143),
                    _ = hup.recv() => Some(129),
                }
            }
            #[cfg(not(unix))]
            {
                tokio::signal::ctrl_c().await.ok().map(|_| 130)
            }
        });
        if let Some(code) = code {
            if convert::output::remove_pending() > 0 {
                eprintln!("interrupted: the partial output was removed");
            } else {
                eprintln!("interrupted");
            }
            std::process::exit(code);
        }
    });
}

fn summary(out: &Path, r: &Report, secs: f64) -> String {
    format!(
        "wrote {} ({:.1} MiB, {} tensors: {}; {} parameters) in {secs:.2} s",
        out.display(),
        r.file_size as f64 / (1024.0 * 1024.0),
        r.tensors.len(),
        convert::type_summary(&r.tensors),
        convert::size_label(r.params)
    )
}

/// Runs `qgpt convert`.
pub fn run_convert(args: ConvertArgs) -> Result<(), CliError> {
    init_threads(args.threads)?;
    clean_up_on_signal();
    let bar = progress_bar(args.no_progress);
    let start = Instant::now();
    let opts = ConvertOptions {
        outtype: args.outtype,
        name: args.name,
    };
    let report = convert::convert_hf(&args.hf_dir, &args.output, &opts, &bar)?;
    bar.finish_and_clear();
    eprintln!(
        "{}",
        summary(&args.output, &report, start.elapsed().as_secs_f64())
    );
    Ok(())
}

/// Runs `qgpt quantize`.
pub fn run_quantize(args: QuantizeArgs) -> Result<(), CliError> {
    init_threads(args.threads)?;
    clean_up_on_signal();
    let bar = progress_bar(args.no_progress);
    let start = Instant::now();
    let opts = QuantizeOptions {
        out: args.r#type,
        pure: args.pure,
        allow_requantize: args.allow_requantize,
    };
    let report = convert::quantize_gguf(&args.input, &args.output, opts, &bar)?;
    bar.finish_and_clear();
    eprintln!(
        "{}",
        summary(&args.output, &report, start.elapsed().as_secs_f64())
    );
    Ok(())
}
