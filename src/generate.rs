//! One generation from start to finish on the calling thread: prefill, then sample and decode
//! token by token, streaming text as it becomes final (valid UTF-8, not the possible start of a
//! stop string), until a limit, a stop condition, the deadline or the caller ends it.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::model::{ForwardError, Logits, Model, Scratch};
use crate::sampling::{SamplingError, SamplingParams};
use crate::session::Session;
use crate::tokenizer::Tokenizer;

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
    /// Stop when the text contains one of these (it is not returned).
    pub stop: Vec<String>,
    /// Stop after generating one of these tokens (it is returned).
    pub stop_token_ids: Vec<u32>,
    /// Most likely alternatives to report per token (0: no log-probabilities at all).
    pub logprobs: usize,
    /// Stop (finish reason `Deadline`) once this instant has passed; checked before every
    /// forward call.
    pub deadline: Option<Instant>,
    /// Stop (finish reason `Cancelled`) once this returns true; checked before every forward
    /// call, so a caller that has gone away stops prefill between chunks too.
    pub cancel: Option<CancelCheck>,
}

/// A cancellation test for [`GenerateOptions::cancel`].
#[derive(Clone)]
pub struct CancelCheck(pub std::sync::Arc<dyn Fn() -> bool + Send + Sync>);

impl std::fmt::Debug for CancelCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CancelCheck")
    }
}

impl GenerateOptions {
    /// `max_new_tokens` tokens with `sampling`, nothing else.
    pub fn new(max_new_tokens: usize, sampling: SamplingParams) -> Self {
        Self {
            max_new_tokens,
            sampling,
            ignore_eos: false,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            logprobs: 0,
            deadline: None,
            cancel: None,
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `max_new_tokens` reached.
    Length,
    /// The model produced its end-of-sequence token.
    Eos,
    /// A stop string or stop token was generated.
    StopSequence,
    /// The model's context is full.
    ContextFull,
    /// The deadline passed.
    Deadline,
    /// The caller asked to stop.
    Cancelled,
}

impl FinishReason {
    /// The snake_case name, as in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::Eos => "eos",
            FinishReason::StopSequence => "stop_sequence",
            FinishReason::ContextFull => "context_full",
            FinishReason::Deadline => "deadline",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// One generated token, as the callback of [`generate`] sees it.
#[derive(Debug)]
pub struct TokenEvent<'a> {
    /// Token id.
    pub id: u32,
    /// Its log-probability under the model's distribution, when log-probabilities were asked for.
    pub logprob: Option<f32>,
    /// The most likely alternatives (id, log-probability), best first.
    pub top: &'a [(u32, f32)],
    /// Text that became final with this token (whole UTF-8 characters; may be empty while
    /// text is held back as the possible start of a stop string).
    pub text: &'a str,
}

/// The result of a generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Prompt token ids.
    pub prompt_ids: Vec<u32>,
    /// Generated ids (an end-of-sequence token that stopped generation is not included).
    pub ids: Vec<u32>,
    /// Generated text (without a stop string and what followed it).
    pub text: String,
    /// Text released after the last token event (held-back text and incomplete characters);
    /// already part of `text`.
    pub final_text: String,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// The stop string or stop token (as text, e.g. "token 50256") that ended generation.
    pub stop_reason: Option<String>,
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
    #[error("token id {id} is outside the vocabulary ({n_vocab} tokens)")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

/// Generates from `prompt_ids`, calling `on_token` for each generated token; returning
/// `ControlFlow::Break` from it stops generation (finish reason `Cancelled`).
pub fn generate(
    model: &Model,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(TokenEvent<'_>) -> ControlFlow<()>,
) -> Result<Generation, GenerateError> {
    let cfg = model.config();
    let mut s = Session::new(prompt_ids, opts.clone(), tokenizer, cfg.n_vocab, cfg.n_ctx)?;
    let mut g = Generation {
        prompt_ids: prompt_ids.to_vec(),
        ids: Vec::new(),
        text: String::new(),
        final_text: String::new(),
        finish_reason: FinishReason::Length,
        stop_reason: None,
        prefill_time: Duration::ZERO,
        decode_time: Duration::ZERO,
        decode_steps: 0,
    };
    let reason = 'run: {
        if let Some(r) = s.interrupted() {
            break 'run r;
        }
        // The KV cache and buffers are sized by this request, never by the file's claims alone.
        let mut cache = model.new_cache((prompt_ids.len() + opts.max_new_tokens).min(cfg.n_ctx));
        let mut scratch = Scratch::new(cfg, PREFILL_CHUNK.min(prompt_ids.len()));
        let mut logits = vec![0f32; cfg.n_vocab];
        // Prefill in chunks, so that a deadline or a cancellation is seen between them.
        let start = Instant::now();
        let chunks = prompt_ids.chunks(PREFILL_CHUNK);
        let n_chunks = chunks.len();
        for (i, chunk) in chunks.enumerate() {
            if let Some(r) = s.interrupted() {
                g.prefill_time = start.elapsed();
                break 'run r;
            }
            let which = if i + 1 == n_chunks {
                Logits::Last
            } else {
                Logits::None
            };
            let out = if i + 1 == n_chunks {
                &mut logits[..]
            } else {
                &mut []
            };
            model.forward(&mut cache, chunk, &mut scratch, which, out)?;
        }
        g.prefill_time = start.elapsed();
        loop {
            let (event, finished) = s.step(tokenizer, &mut logits, cache.len());
            let id = event.as_ref().map(|e| e.id);
            if let Some(e) = event {
                if on_token(e).is_break() {
                    break 'run FinishReason::Cancelled;
                }
            }
            if let Some(r) = finished.or_else(|| s.interrupted()) {
                break 'run r;
            }
            let id = id.expect("a step that does not finish yields a token");
            let t = Instant::now();
            model.forward(&mut cache, &[id], &mut scratch, Logits::Last, &mut logits)?;
            g.decode_time += t.elapsed();
            g.decode_steps += 1;
        }
    };
    let (reason, tail) = s.finish(reason);
    g.finish_reason = reason;
    g.final_text = tail;
    g.ids = std::mem::take(&mut s.ids);
    g.text = std::mem::take(&mut s.text);
    g.stop_reason = s.stop_reason.take();
    Ok(g)
}
