//! Validation of requests: every bound checked before a request is queued, each failure an
//! INVALID_ARGUMENT that names the field and the limit.

use std::time::{Duration, Instant};

use tonic::Status;

use super::config::Limits;
use super::pb;
use crate::chat::ChatMessage;
use crate::engine::Prompt;
use crate::generate::GenerateOptions;
use crate::sampling::SamplingParams;

/// A generation request that passed validation.
#[derive(Debug)]
pub(super) struct Validated {
    pub prompt: Prompt,
    pub max_new_tokens: u32,
    pub opts: GenerateOptions,
    pub echo: bool,
}

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

/// Checks ids against the vocabulary.
pub(super) fn check_ids(field: &str, ids: &[u32], n_vocab: usize) -> Result<(), Status> {
    match ids.iter().position(|&id| id as usize >= n_vocab) {
        Some(i) => Err(invalid(format!(
            "{field}[{i}]: token id {} is outside the vocabulary (ids must be below {n_vocab})",
            ids[i]
        ))),
        None => Ok(()),
    }
}

/// Validates `req` against `limits` and the model (`n_vocab`, `n_ctx`); `seed` is used when the
/// request has none; `deadline` comes from the call's grpc-timeout.
pub(super) fn validate(
    req: pb::GenerateRequest,
    limits: &Limits,
    n_vocab: usize,
    n_ctx: usize,
    seed: u64,
    deadline: Option<Instant>,
) -> Result<Validated, Status> {
    let prompt = match req.input {
        None => {
            return Err(invalid(
                "input: a prompt, prompt_token_ids or messages is required",
            ))
        }
        Some(pb::generate_request::Input::Messages(c)) => Prompt::Chat(chat_messages(c)?),
        Some(pb::generate_request::Input::Prompt(p)) if p.is_empty() => {
            return Err(invalid("prompt: must not be empty"))
        }
        Some(pb::generate_request::Input::Prompt(p)) => Prompt::Text(p),
        Some(pb::generate_request::Input::PromptTokenIds(t)) => {
            if t.ids.is_empty() {
                return Err(invalid("prompt_token_ids: must not be empty"));
            }
            if t.ids.len() >= n_ctx {
                return Err(invalid(format!(
                    "prompt_token_ids: {} tokens leave no room to generate in the model's \
                     context of {n_ctx} tokens",
                    t.ids.len()
                )));
            }
            check_ids("prompt_token_ids", &t.ids, n_vocab)?;
            Prompt::Ids(t.ids)
        }
    };
    if req.stop.len() > limits.max_stop {
        return Err(invalid(format!(
            "stop: {} strings, at most {} allowed",
            req.stop.len(),
            limits.max_stop
        )));
    }
    if let Some((i, s)) = req
        .stop
        .iter()
        .enumerate()
        .find(|(_, s)| s.is_empty() || s.len() > limits.max_stop_bytes)
    {
        return Err(invalid(format!(
            "stop[{i}]: {} bytes; each stop string must have 1 to {} bytes",
            s.len(),
            limits.max_stop_bytes
        )));
    }
    if req.stop_token_ids.len() > limits.max_stop_token_ids {
        return Err(invalid(format!(
            "stop_token_ids: {} ids, at most {} allowed",
            req.stop_token_ids.len(),
            limits.max_stop_token_ids
        )));
    }
    check_ids("stop_token_ids", &req.stop_token_ids, n_vocab)?;
    if req.logprobs > limits.max_logprobs {
        return Err(invalid(format!(
            "logprobs: {} alternatives asked, at most {} allowed",
            req.logprobs, limits.max_logprobs
        )));
    }
    if req.max_new_tokens as usize > n_ctx {
        return Err(invalid(format!(
            "max_new_tokens: {} exceeds the model's context of {n_ctx} tokens",
            req.max_new_tokens
        )));
    }
    let sampling = sampling(req.sampling.unwrap_or_default(), n_vocab, seed)?;
    Ok(Validated {
        prompt,
        max_new_tokens: req.max_new_tokens,
        opts: GenerateOptions {
            max_new_tokens: 0,
            sampling,
            ignore_eos: req.ignore_eos,
            stop: req.stop,
            stop_token_ids: req.stop_token_ids,
            logprobs: req.logprobs as usize,
            deadline,
            cancel: None,
        },
        echo: req.echo,
    })
}

/// Most messages in a conversation.
pub const MAX_CHAT_MESSAGES: usize = 1024;
/// Longest role name, in bytes.
pub const MAX_ROLE_BYTES: usize = 64;

/// The messages of a chat request, checked.
fn chat_messages(c: pb::ChatMessages) -> Result<Vec<ChatMessage>, Status> {
    if c.messages.is_empty() {
        return Err(invalid("messages: at least one message is required"));
    }
    if c.messages.len() > MAX_CHAT_MESSAGES {
        return Err(invalid(format!(
            "messages: {} messages, at most {MAX_CHAT_MESSAGES} allowed",
            c.messages.len()
        )));
    }
    c.messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            if m.role.is_empty() || m.role.len() > MAX_ROLE_BYTES {
                return Err(invalid(format!(
                    "messages[{i}].role: {} bytes; a role must have 1 to {MAX_ROLE_BYTES} bytes",
                    m.role.len()
                )));
            }
            Ok(ChatMessage {
                role: m.role,
                content: m.content,
            })
        })
        .collect()
}

/// What the server does with a GenerateRequest body before queueing it: protobuf decoding, then
/// every check of [`validate`] (for fuzzing and tests; `Ok` means the request would be queued).
pub fn decode_and_validate(
    body: &[u8],
    limits: &Limits,
    n_vocab: usize,
    n_ctx: usize,
) -> Result<(), Status> {
    let req = <pb::GenerateRequest as prost::Message>::decode(body)
        .map_err(|e| Status::invalid_argument(format!("undecodable request: {e}")))?;
    validate(req, limits, n_vocab, n_ctx, 0, None).map(|_| ())
}

/// The request's sampling settings over the API's defaults (greedy, every filter off).
fn sampling(p: pb::SamplingParams, n_vocab: usize, seed: u64) -> Result<SamplingParams, Status> {
    let d = SamplingParams::greedy();
    let top_k = p.top_k.unwrap_or(0) as usize;
    if top_k > n_vocab {
        return Err(invalid(format!(
            "sampling.top_k: {top_k} exceeds the vocabulary size {n_vocab}"
        )));
    }
    let s = SamplingParams {
        temperature: p.temperature.unwrap_or(d.temperature),
        top_k,
        top_p: p.top_p.unwrap_or(d.top_p),
        min_p: p.min_p.unwrap_or(d.min_p),
        typical_p: p.typical_p.unwrap_or(d.typical_p),
        repetition_penalty: p.repetition_penalty.unwrap_or(d.repetition_penalty),
        presence_penalty: p.presence_penalty.unwrap_or(d.presence_penalty),
        frequency_penalty: p.frequency_penalty.unwrap_or(d.frequency_penalty),
        seed: p.seed.unwrap_or(seed),
    };
    s.validate().map_err(|e| invalid(format!("sampling.{e}")))?;
    Ok(s)
}

/// Parses a `grpc-timeout` header value ("100m", "5S", ...: at most 8 digits and a unit).
pub(super) fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        for bad in ["", "m", "10", "123456789S", "1x", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
