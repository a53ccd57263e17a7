//! One request's token-by-token state, whatever drives the forward passes: sampling (with its
//! penalties), log-probabilities, UTF-8-safe text, stop strings and tokens, limits, the deadline
//! and cancellation. `generate` drives one session alone; the engine drives many in one batch.
//! Both therefore produce the same tokens and text for the same request.

use std::time::Instant;

use crate::generate::{FinishReason, GenerateError, GenerateOptions, TokenEvent};
use crate::ops::log_softmax;
use crate::sampling::Sampler;
use crate::stop::StopMatcher;
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// A generation in progress.
#[derive(Debug)]
pub struct Session {
    opts: GenerateOptions,
    n_ctx: usize,
    /// Ids that end generation (EOS, end of turn), sorted.
    end: Vec<u32>,
    sampler: Sampler,
    decoder: StreamDecoder,
    stops: StopMatcher,
    stop_strings: Vec<String>,
    logprobs: Vec<f32>,
    top: Vec<(u32, f32)>,
    /// Text released by the last step.
    delta: String,
    /// Generated ids (an end-of-sequence token that ended generation is not included).
    pub ids: Vec<u32>,
    /// Generated text so far (final: never retracted).
    pub text: String,
    /// The stop string or token that ended generation.
    pub stop_reason: Option<String>,
    stopped_by_string: bool,
}

impl Session {
    /// Checks the prompt against the model (`n_vocab`, `n_ctx`) and `opts.sampling`.
    pub fn new(
        prompt_ids: &[u32],
        opts: GenerateOptions,
        tokenizer: &Tokenizer,
        n_vocab: usize,
        n_ctx: usize,
    ) -> Result<Self, GenerateError> {
        if prompt_ids.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        if prompt_ids.len() > n_ctx {
            return Err(GenerateError::PromptTooLong {
                len: prompt_ids.len(),
                n_ctx,
            });
        }
        if let Some(&id) = prompt_ids.iter().find(|&&id| id as usize >= n_vocab) {
            return Err(GenerateError::TokenOutOfRange { id, n_vocab });
        }
        let mut sampler = Sampler::new(opts.sampling.clone())?;
        sampler.observe(prompt_ids);
        // As given: the matcher reports indices into this list (it skips empty strings itself).
        let stop_strings = opts.stop.clone();
        Ok(Self {
            n_ctx,
            end: tokenizer.end_of_generation().to_vec(),
            sampler,
            decoder: StreamDecoder::default(),
            stops: StopMatcher::new(&opts.stop),
            stop_strings,
            logprobs: vec![0.0; if opts.logprobs > 0 { n_vocab } else { 0 }],
            top: Vec::with_capacity(opts.logprobs),
            delta: String::new(),
            ids: Vec::with_capacity(opts.max_new_tokens.min(n_ctx)),
            text: String::new(),
            stop_reason: None,
            stopped_by_string: false,
            opts,
        })
    }

    /// The options it runs with.
    pub fn options(&self) -> &GenerateOptions {
        &self.opts
    }

    /// Whether the deadline has passed or the request was cancelled: checked before every
    /// forward call.
    pub fn interrupted(&self) -> Option<FinishReason> {
        if self.opts.cancel.as_ref().is_some_and(|c| (c.0)()) {
            Some(FinishReason::Cancelled)
        } else if self.opts.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(FinishReason::Deadline)
        } else {
            None
        }
    }

    /// Takes the logits of the last position (`cache_len` positions are now cached): samples
    /// the next token and returns it as an event (none when generation ends without a token,
    /// as at end-of-sequence), and the finish reason when this ends generation.
    pub fn step(
        &mut self,
        tokenizer: &Tokenizer,
        logits: &mut [f32],
        cache_len: usize,
    ) -> (Option<TokenEvent<'_>>, Option<FinishReason>) {
        if self.ids.len() >= self.opts.max_new_tokens {
            return (None, Some(FinishReason::Length));
        }
        if self.opts.logprobs > 0 {
            log_softmax(logits, &mut self.logprobs);
            top_n(&self.logprobs, self.opts.logprobs, &mut self.top);
        }
        let id = self.sampler.sample(logits);
        if !self.opts.ignore_eos && self.end.binary_search(&id).is_ok() {
            return (None, Some(FinishReason::Eos));
        }
        self.ids.push(id);
        self.sampler.observe(&[id]);
        let released = self.stops.push(&self.decoder.push(tokenizer, id));
        self.delta = released.text;
        self.text.push_str(&self.delta);
        let finished = if let Some(i) = released.stopped {
            self.stop_reason = Some(self.stop_strings[i].clone());
            self.stopped_by_string = true;
            Some(FinishReason::StopSequence)
        } else if self.opts.stop_token_ids.contains(&id) {
            self.stop_reason = Some(format!("token {id}"));
            Some(FinishReason::StopSequence)
        } else if self.ids.len() == self.opts.max_new_tokens {
            Some(FinishReason::Length)
        } else if cache_len >= self.n_ctx {
            Some(FinishReason::ContextFull)
        } else {
            None
        };
        let event = TokenEvent {
            id,
            logprob: self.logprobs.get(id as usize).copied(),
            top: &self.top,
            text: &self.delta,
        };
        (Some(event), finished)
    }

    /// Ends generation for `reason`: releases the text still held (incomplete characters, the
    /// possible start of a stop string) and returns it with the final reason (a stop string
    /// may still complete in that text).
    pub fn finish(&mut self, reason: FinishReason) -> (FinishReason, String) {
        if self.stopped_by_string {
            return (reason, String::new());
        }
        let released = self.stops.push(&self.decoder.finish());
        let mut tail = released.text;
        let reason = match released.stopped {
            Some(i) => {
                self.stop_reason = Some(self.stop_strings[i].clone());
                self.stopped_by_string = true;
                FinishReason::StopSequence
            }
            None => {
                tail.push_str(&self.stops.finish());
                reason
            }
        };
        self.text.push_str(&tail);
        (reason, tail)
    }
}

/// The `n` largest of `logprobs` as (id, value), best first (ties by lower id).
fn top_n(logprobs: &[f32], n: usize, out: &mut Vec<(u32, f32)>) {
    out.clear();
    out.extend(logprobs.iter().enumerate().map(|(i, &v)| (i as u32, v)));
    let by_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if n < out.len() {
        out.select_nth_unstable_by(n, by_desc);
        out.truncate(n);
    }
    out.sort_unstable_by(by_desc);
}
