//! The messages a request's stream carries, built on the engine thread.

use std::time::{Duration, Instant};

use crate::generate::{FinishReason, TokenEvent};
use crate::server::pb;
use crate::tokenizer::Tokenizer;

/// The text of one token for display (a partial UTF-8 sequence becomes U+FFFD).
pub(crate) fn token_text(tok: &Tokenizer, id: u32) -> String {
    String::from_utf8_lossy(tok.token_bytes(id).unwrap_or_default()).into_owned()
}

/// A prompt token (no log-probability).
pub(crate) fn plain_token(tok: &Tokenizer, id: u32) -> pb::Token {
    pb::Token {
        id,
        text: token_text(tok, id),
        logprob: None,
        special: tok.is_special(id),
        top_logprobs: Vec::new(),
    }
}

/// The message of one generated token (with the prompt's tokens when `echo` holds them).
pub(super) fn token_message(
    tok: &Tokenizer,
    request_id: &str,
    ev: &TokenEvent<'_>,
    echo: Vec<pb::Token>,
) -> pb::GenerateResponse {
    pb::GenerateResponse {
        request_id: request_id.to_owned(),
        tokens: vec![pb::Token {
            logprob: ev.logprob,
            top_logprobs: ev
                .top
                .iter()
                .map(|&(id, logprob)| pb::TopLogprob {
                    id,
                    text: token_text(tok, id),
                    logprob,
                })
                .collect(),
            ..plain_token(tok, ev.id)
        }],
        text_delta: ev.text.to_owned(),
        prompt_tokens: echo,
        ..Default::default()
    }
}

/// The API's finish reason.
pub(super) fn finish_reason(r: FinishReason) -> pb::FinishReason {
    match r {
        FinishReason::Length | FinishReason::ContextFull => pb::FinishReason::Length,
        FinishReason::Eos => pb::FinishReason::EosToken,
        FinishReason::StopSequence => pb::FinishReason::StopSequence,
        FinishReason::Deadline => pb::FinishReason::Deadline,
        FinishReason::Cancelled => pb::FinishReason::Cancelled,
    }
}

/// When a request's phases happened.
#[derive(Debug, Clone, Copy)]
pub(super) struct Times {
    pub arrival: Instant,
    pub admitted: Instant,
    pub prefilled: Option<Instant>,
    pub first_token: Option<Instant>,
    /// When the latest token was streamed.
    pub last_token: Option<Instant>,
}

/// Milliseconds.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Times {
    /// The API's timings, at `now`.
    pub fn timings(&self, now: Instant) -> pb::Timings {
        let prefilled = self.prefilled.unwrap_or(now);
        pb::Timings {
            queue_ms: ms(self.admitted - self.arrival),
            time_to_first_token_ms: self.first_token.map_or(0.0, |f| ms(f - self.arrival)),
            prefill_ms: ms(prefilled.saturating_duration_since(self.admitted)),
            decode_ms: ms(now.saturating_duration_since(prefilled)),
            total_ms: ms(now - self.arrival),
        }
    }
}
