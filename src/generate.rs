//! One generation from start to finish on the calling thread: prefill, then sample and decode
//! token by token, streaming text as it becomes valid UTF-8.

use std::time::{Duration, Instant};

use crate::model::{ForwardError, Gpt2, Logits, Scratch};
use crate::sampling::{Sampler, SamplingError, SamplingParams};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Most prompt tokens processed per forward call during prefill: llama.cpp's default
/// micro-batch. The batched GEMM reaches full speed from 32 rows; a 512-token step's buffers are
/// about 17 MiB for GPT-2 124M (they are sized by the prompt, so short prompts use less).
pub const PREFILL_CHUNK: usize = 512;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// Keep going after the end-of-sequence token.
    pub ignore_eos: bool,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `max_new_tokens` reached.
    Length,
    /// The model produced its end-of-sequence token.
    Eos,
    /// The model's context is full.
    ContextFull,
}

impl FinishReason {
    /// The snake_case name, as in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::Eos => "eos",
            FinishReason::ContextFull => "context_full",
        }
    }
}

/// The result of a generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Prompt token ids.
    pub prompt_ids: Vec<u32>,
    /// Generated ids (an end-of-sequence token that stopped generation is not included).
    pub ids: Vec<u32>,
    /// Generated text.
    pub text: String,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Time to process the prompt and produce the first logits.
    pub prefill_time: Duration,
    /// Time spent in decode steps.
    pub decode_time: Duration,
    /// Decode steps run (forward calls after the prompt).
    pub decode_steps: usize,
}

impl Generation {
    /// Prompt tokens per second.
    pub fn prefill_tokens_per_s(&self) -> f64 {
        per_second(self.prompt_ids.len(), self.prefill_time)
    }

    /// Decode steps per second.
    pub fn decode_tokens_per_s(&self) -> f64 {
        per_second(self.decode_steps, self.decode_time)
    }
}

fn per_second(n: usize, d: Duration) -> f64 {
    if n == 0 || d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

/// Why a generation could not run.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {len} tokens; the model's context holds {n_ctx}")]
    PromptTooLong { len: usize, n_ctx: usize },
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

/// Generates from `prompt_ids`, calling `on_text` with each piece of text as it completes.
pub fn generate(
    model: &Gpt2,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    opts: &GenerateOptions,
    mut on_text: impl FnMut(&str),
) -> Result<Generation, GenerateError> {
    let n_ctx = model.config().n_ctx;
    if prompt_ids.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    if prompt_ids.len() > n_ctx {
        return Err(GenerateError::PromptTooLong {
            len: prompt_ids.len(),
            n_ctx,
        });
    }
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    // The KV cache and buffers are sized by this request, never by the file's claims alone.
    let mut cache = model.new_cache(prompt_ids.len() + opts.max_new_tokens);
    let mut scratch = Scratch::new(model.config(), PREFILL_CHUNK.min(prompt_ids.len()));
    let mut logits = vec![0f32; model.config().n_vocab];

    let start = Instant::now();
    model.forward(
        &mut cache,
        prompt_ids,
        &mut scratch,
        Logits::Last,
        &mut logits,
    )?;
    let prefill_time = start.elapsed();

    let mut decoder = StreamDecoder::default();
    let mut ids = Vec::with_capacity(opts.max_new_tokens);
    let mut text = String::new();
    let mut decode_time = Duration::ZERO;
    let mut decode_steps = 0;
    let finish_reason = loop {
        if ids.len() == opts.max_new_tokens {
            break FinishReason::Length;
        }
        let id = sampler.sample(&logits);
        if !opts.ignore_eos && Some(id) == tokenizer.eos() {
            break FinishReason::Eos;
        }
        ids.push(id);
        let piece = decoder.push(tokenizer, id);
        if !piece.is_empty() {
            on_text(&piece);
            text.push_str(&piece);
        }
        if ids.len() == opts.max_new_tokens {
            break FinishReason::Length;
        }
        if cache.len() == n_ctx {
            break FinishReason::ContextFull;
        }
        let t = Instant::now();
        model.forward(&mut cache, &[id], &mut scratch, Logits::Last, &mut logits)?;
        decode_time += t.elapsed();
        decode_steps += 1;
    };
    let tail = decoder.finish();
    if !tail.is_empty() {
        on_text(&tail);
        text.push_str(&tail);
    }
    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        ids,
        text,
        finish_reason,
        prefill_time,
        decode_time,
        decode_steps,
    })
}
