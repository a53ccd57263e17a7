//! `qgpt generate`.

use std::path::PathBuf;

use super::{init_threads, print_flush, CliError};
use qgpt::chat::ChatMessage;
use qgpt::generate::{generate, GenerateOptions};
use qgpt::memory::Resident;
use qgpt::sampling::SamplingParams;

/// Arguments of `qgpt generate`.
#[derive(clap::Args)]
pub struct Args {
    /// GGUF model file (default: the embedded demo model, a small GPT-2 trained on the King
    /// James Bible).
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Prompt text.
    #[arg(
        short,
        long,
        required_unless_present = "prompt_ids",
        conflicts_with = "prompt_ids"
    )]
    prompt: Option<String>,
    /// Prompt as token ids separated by spaces, e.g. "464 2068 7586".
    #[arg(long)]
    prompt_ids: Option<String>,
    /// Send --prompt as a user message through the model's chat template (the assistant's
    /// turn opened; generation ends at the end-of-turn token).
    #[arg(long, requires = "prompt")]
    chat: bool,
    /// With --chat: a system message before the user's.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(short = 'n', long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    temperature: f32,
    /// Sample from the k most likely tokens only; 0 disables.
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Sample from the smallest set of tokens whose probability reaches p; 1 disables.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// RNG seed; random when absent (it is printed so that a run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Do not stop at the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
    /// Stop when the text contains this string (not printed); repeatable.
    #[arg(long)]
    stop: Vec<String>,
    /// Print one JSON object at the end instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Worker threads (default: the CPUs this process may use).
    #[arg(short, long)]
    threads: Option<usize>,
}

#[derive(serde::Serialize)]
struct JsonOut<'a> {
    prompt_ids: &'a [u32],
    ids: &'a [u32],
    text: &'a str,
    prompt_tokens: usize,
    generated_tokens: usize,
    prefill_tokens_per_s: f64,
    decode_tokens_per_s: f64,
    finish_reason: qgpt::generate::FinishReason,
    seed: u64,
}

fn parse_ids(s: &str) -> Result<Vec<u32>, CliError> {
    s.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u32>()
                .map_err(|_| format!("--prompt-ids: '{p}' is not a token id").into())
        })
        .collect()
}

/// Streams generated text to stdout; statistics go to stderr.
pub fn run(args: Args) -> Result<(), CliError> {
    init_threads(args.threads)?;
    let isa = qgpt::kernels::init()?.isa;
    if args.model.is_none() {
        eprintln!(
            "model: {} (no --model given: a small GPT-2 trained on the King James Bible)",
            qgpt::demo::NAME
        );
    }
    let m = qgpt::demo::load_or_demo(args.model.as_deref())?;
    let prompt_ids = match (&args.prompt, &args.prompt_ids) {
        (_, Some(ids)) => parse_ids(ids)?,
        (Some(text), None) if args.chat => {
            let mut messages = Vec::new();
            if let Some(sys) = &args.system {
                messages.push(ChatMessage::new("system", sys));
            }
            messages.push(ChatMessage::new("user", text));
            m.encode_chat(&messages)?
        }
        (Some(text), None) => m.encode_prompt(text)?,
        (None, None) => unreachable!("clap requires one of them"),
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let opts = GenerateOptions {
        stop: args.stop.clone(),
        ignore_eos: args.ignore_eos,
        ..GenerateOptions::new(
            args.max_new_tokens,
            SamplingParams {
                temperature: args.temperature,
                top_k: args.top_k,
                top_p: args.top_p,
                seed,
                ..SamplingParams::greedy()
            },
        )
    };
    let mut write_err = None;
    let mut show = |text: &str| {
        if !args.json && write_err.is_none() && !text.is_empty() {
            write_err = print_flush(text).err();
        }
    };
    let g = generate(&m.model, &m.tokenizer, &prompt_ids, &opts, |ev| {
        show(ev.text);
        std::ops::ControlFlow::Continue(())
    })?;
    show(&g.final_text);
    if let Some(e) = write_err {
        return Err(e);
    }
    if args.json {
        let out = JsonOut {
            prompt_ids: &g.prompt_ids,
            ids: &g.ids,
            text: &g.text,
            prompt_tokens: g.prompt_ids.len(),
            generated_tokens: g.ids.len(),
            prefill_tokens_per_s: g.prefill_tokens_per_s(),
            decode_tokens_per_s: g.decode_tokens_per_s(),
            finish_reason: g.finish_reason,
            seed,
        };
        print_flush(&format!("{}\n", serde_json::to_string(&out)?))?;
    } else {
        print_flush("\n")?;
    }
    eprintln!(
        "prompt: {} tokens, {:.1} tokens/s | decode: {} tokens, {:.1} tokens/s | finish: {} | seed: {seed}",
        g.prompt_ids.len(),
        g.prefill_tokens_per_s(),
        g.ids.len(),
        g.decode_tokens_per_s(),
        g.finish_reason.as_str(),
    );
    if let Some(r) = Resident::now() {
        eprintln!(
            "load: {:.1} ms | isa: {isa} | {r}",
            m.load_time.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
