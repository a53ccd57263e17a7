//! `qgpt perplexity`: llama-perplexity's method and output.

use std::path::PathBuf;
use std::time::Instant;

use super::{init_threads, print_flush, CliError, KvTypeArg};
use qgpt::model::LoadedModel;
use qgpt::perplexity::perplexity;

/// Arguments of `qgpt perplexity`.
#[derive(clap::Args)]
pub struct Args {
    /// GGUF model file.
    #[arg(short, long)]
    model: PathBuf,
    /// UTF-8 text file to score.
    #[arg(short, long)]
    file: PathBuf,
    /// Tokens per chunk (the context each prediction may use is up to this long).
    #[arg(short = 'c', long, default_value_t = 512)]
    ctx_size: usize,
    /// Score at most this many chunks (default: every whole chunk of the text).
    #[arg(long)]
    chunks: Option<usize>,
    /// Element type of the KV cache.
    #[arg(long, value_enum, default_value = "f16")]
    kv_type: KvTypeArg,
    /// One JSON object instead of the running figures and the `PPL = X +/- Y` line.
    #[arg(long)]
    json: bool,
    /// Worker threads (default: the CPUs this process may use).
    #[arg(short, long)]
    threads: Option<usize>,
}

/// Prints `[1]x,[2]y,...` as chunks finish, then `PPL = X +/- Y` as the last line.
pub fn run(args: Args) -> Result<(), CliError> {
    init_threads(args.threads)?;
    let isa = qgpt::kernels::init()?.isa;
    let mut m = LoadedModel::open(&args.model)?;
    m.model.set_kv_type(args.kv_type.into());
    let bytes = std::fs::read(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| format!("{} is not UTF-8: {e}", args.file.display()))?;
    let tokens = m.tokenizer.encode(&text)?;
    let bos = m.tokenizer.add_bos().then(|| m.tokenizer.bos()).flatten();
    let start = Instant::now();
    let mut write_err = None;
    let r = perplexity(
        &m.model,
        &tokens,
        args.ctx_size,
        args.chunks,
        bos,
        |i, ppl| {
            if !args.json && write_err.is_none() {
                write_err = print_flush(&format!("[{}]{ppl:.4},", i + 1)).err();
            }
        },
    )?;
    if let Some(e) = write_err {
        return Err(e);
    }
    let secs = start.elapsed().as_secs_f64();
    if args.json {
        let mut v = serde_json::to_value(&r)?;
        v["n_ctx"] = args.ctx_size.into();
        v["tokens"] = tokens.len().into();
        v["seconds"] = secs.into();
        print_flush(&format!("{v}\n"))?;
    } else {
        print_flush(&format!("\nPPL = {:.4} +/- {:.5}\n", r.ppl, r.ppl_stderr))?;
    }
    eprintln!(
        "{} tokens, {} chunks of {}, {} scored, {:.1} s ({:.0} tokens/s), isa: {isa}",
        tokens.len(),
        r.chunks,
        args.ctx_size,
        r.scored,
        secs,
        (r.chunks * args.ctx_size) as f64 / secs
    );
    Ok(())
}
