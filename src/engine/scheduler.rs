//! The continuous-batching loop. Each step:
//! 1. admits waiting requests in FIFO order while the running cap and the KV-token budget allow
//!    (the head of the queue waits for room; nothing behind it overtakes it, so none starves);
//! 2. ends requests whose client has gone, whose deadline has passed, or that the drain cancels;
//! 3. plans one forward pass of at most `max_batch_tokens` tokens: one token for every request
//!    that is decoding, then prompt chunks for those in prefill, oldest first, at most
//!    `max_prefill_while_decoding` of them while anyone decodes (a long prompt is spread over
//!    several steps instead of freezing everyone's decode);
//! 4. runs it as one batched forward (each weight matrix read once for all of them);
//! 5. samples for every request that got logits and streams the token at once.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use tonic::{Code, Status};

use super::kv_pool::KvPool;
use super::messages::{finish_reason, plain_token, token_message, Times};
use super::{EngineConfig, EngineState, Event, Job, Prompt};
use crate::chat::ChatError;
use crate::generate::{CancelCheck, FinishReason, GenerateError};
use crate::metrics;
use crate::model::{KvCache, LoadedModel, Logits, Scratch, SeqStep};
use crate::server::pb;
use crate::session::Session;

/// A request admitted to the batch.
struct Running {
    request_id: String,
    tx: tokio::sync::mpsc::Sender<Event>,
    echo: Option<Vec<pb::Token>>,
    prompt: Vec<u32>,
    /// Prompt tokens already in the cache.
    done: usize,
    cache: KvCache,
    logits: Vec<f32>,
    session: Session,
    /// The token to feed at the next decode step.
    next: Option<u32>,
    /// KV positions reserved.
    reserve: usize,
    times: Times,
    /// Set once it has ended (its final message sent, or its client gone).
    ended: bool,
    /// Its logits are ready to sample in this step.
    sample_now: bool,
    /// A unary call (see [`Job::unary`]).
    unary: bool,
    /// When its generation must end.
    deadline: Option<Instant>,
}

/// A request ready to be admitted: tokenized, its reservation known.
struct Ready {
    job: Job,
    prompt: Vec<u32>,
    reserve: usize,
}

/// One request's share of a planned step.
#[derive(Clone, Copy)]
struct Part {
    /// Index in the running list.
    index: usize,
    /// Tokens fed: the next token (decode) or a prompt chunk.
    n: usize,
    /// Whether the logits of its last token are needed (decode, or the last prompt chunk).
    sample: bool,
}

/// The engine thread's loop; returns when the service drops the queue and nothing is running.
pub(super) fn run(m: &LoadedModel, rx: Receiver<Job>, state: Arc<EngineState>, cfg: &EngineConfig) {
    let c = m.model.config();
    let mut scratch = Scratch::new(c, cfg.max_batch_tokens);
    let mut running: Vec<Running> = Vec::new();
    let mut held: Option<Ready> = None;
    let mut kv_used = 0usize;
    // Freed caches kept for reuse, within the KV budget in bytes.
    let per_position = 2 * m.model.cache_elements(1) * m.model.kv_type().size();
    let mut pool = KvPool::new(cfg.kv_cache_tokens.saturating_mul(per_position));
    loop {
        // 1. Admission.
        while running.len() < cfg.max_running {
            let ready = match held.take() {
                Some(r) => r,
                None => {
                    let job = if running.is_empty() {
                        match rx.recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        }
                    } else {
                        match rx.try_recv() {
                            Ok(j) => j,
                            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                        }
                    };
                    match prepare(m, job, cfg, &state) {
                        Some(r) => r,
                        None => {
                            state.queued.fetch_sub(1, Ordering::SeqCst);
                            continue;
                        }
                    }
                }
            };
            if kv_used + ready.reserve > cfg.kv_cache_tokens {
                held = Some(ready);
                break;
            }
            if let Some(r) = admit(m, ready, &state, &running, &mut pool) {
                kv_used += r.reserve;
                running.push(r);
                // The reservation first: a scrape that sees the request running sees its KV.
                state.kv_tokens_used.store(kv_used as u64, Ordering::SeqCst);
                state.running.store(running.len(), Ordering::SeqCst);
            }
            // Counted as running before it stops counting as queued: the drain, which waits
            // for both to reach zero, never sees a request in neither.
            state.queued.fetch_sub(1, Ordering::SeqCst);
        }

        // 2. Requests whose client left, whose deadline passed, or that the drain cancels.
        for r in running.iter_mut() {
            if let Some(reason) = r.session.interrupted() {
                finish(r, reason, &state);
            }
        }

        // 3. Plan: decode tokens first, then prompt chunks, within the token budget.
        let mut parts = Vec::with_capacity(running.len());
        let mut budget = cfg.max_batch_tokens;
        for (index, r) in running.iter().enumerate() {
            if !r.ended && r.done == r.prompt.len() && r.next.is_some() && budget > 0 {
                parts.push(Part {
                    index,
                    n: 1,
                    sample: true,
                });
                budget -= 1;
            }
        }
        let decoding = parts.len();
        if decoding > 0 {
            budget = budget.min(cfg.max_prefill_while_decoding);
        }
        for (index, r) in running.iter().enumerate() {
            let left = r.prompt.len() - r.done;
            if !r.ended && left > 0 && budget > 0 {
                let n = left.min(budget);
                parts.push(Part {
                    index,
                    n,
                    sample: n == left,
                });
                budget -= n;
            }
        }

        // 4. One batched forward pass.
        let step_started = Instant::now();
        if !parts.is_empty() {
            let started = step_started;
            let result = forward(m, &mut running, &parts, &mut scratch);
            tracing::trace!(
                target: "qgpt::engine::step",
                decoding,
                prompt_tokens = parts[decoding..].iter().map(|p| p.n).sum::<usize>(),
                forward_us = started.elapsed().as_micros() as u64,
                "step"
            );
            if let Err(status) = result {
                for p in &parts {
                    fail(&mut running[p.index], status.clone());
                }
            }
        }

        // 5. Sample and stream, the requests in parallel (each scans the whole vocabulary).
        let now = Instant::now();
        for p in &parts {
            let r = &mut running[p.index];
            if r.ended {
                continue;
            }
            if r.done < r.prompt.len() {
                r.done += p.n;
                let done = r.done == r.prompt.len();
                if done {
                    r.times.prefilled = Some(now);
                }
                metrics::prefilled(p.n, done.then(|| now - r.times.admitted));
            }
            r.sample_now = p.sample;
        }
        running
            .par_iter_mut()
            .filter(|r| r.sample_now && !r.ended)
            .for_each(|r| {
                r.sample_now = false;
                let outcome = catch_unwind(AssertUnwindSafe(|| sample(m, r, &state)));
                if outcome.is_err() {
                    fail(r, Status::internal("generation failed (internal error)"));
                }
            });
        if !parts.is_empty() {
            let prompt_tokens: usize = parts[decoding..].iter().map(|p| p.n).sum();
            let kind = match (decoding, prompt_tokens) {
                (_, 0) => "decode",
                (0, _) => "prefill",
                _ => "mixed",
            };
            let took = step_started.elapsed();
            metrics::step(kind, parts.len(), decoding + prompt_tokens, took);
        }

        // Release what ended; keep its cache's memory for the next requests.
        let mut i = 0;
        while i < running.len() {
            if running[i].ended {
                let r = running.remove(i);
                kv_used -= r.reserve;
                pool.put(r.cache.into_memory(), in_use(&running));
            } else {
                i += 1;
            }
        }
        // The budget first: a reader that sees no request running sees none of it reserved.
        state.kv_tokens_used.store(kv_used as u64, Ordering::SeqCst);
        state.running.store(running.len(), Ordering::SeqCst);
    }
}

/// Tokenizes and checks `job` and sizes its reservation; on a refusal, answers it and returns
/// None.
fn prepare(m: &LoadedModel, job: Job, cfg: &EngineConfig, state: &EngineState) -> Option<Ready> {
    let waited = job.arrival.elapsed();
    if job.tx.is_closed() {
        // The client left while it waited (a unary call whose deadline came, or any client that
        // gave up).
        let late = job.opts.deadline.is_some_and(|d| Instant::now() >= d);
        let (reason, code) = if late {
            ("deadline", Code::DeadlineExceeded)
        } else {
            ("cancelled", Code::Cancelled)
        };
        log_end(&job.request_id, reason, code, waited, None);
        return None;
    }
    let refuse = |job: &Job, status: Status| {
        let error = Some(status.message());
        log_end(&job.request_id, "error", status.code(), waited, error);
        let _ = job.tx.try_send(Err(status));
    };
    if state.cancel_all.load(Ordering::SeqCst) {
        let status = Status::cancelled("cancelled: the server shut down before the request ran");
        log_end(&job.request_id, "cancelled", Code::Cancelled, waited, None);
        let _ = job.tx.try_send(Err(status));
        return None;
    }
    let n_ctx = m.model.config().n_ctx;
    let prompt = match &job.prompt {
        Prompt::Ids(ids) => ids.clone(),
        Prompt::Text(text) => match m.encode_prompt(text) {
            Ok(ids) => ids,
            Err(e) => {
                refuse(&job, Status::internal(e.to_string()));
                return None;
            }
        },
        Prompt::Chat(messages) => match m.encode_chat(messages) {
            Ok(ids) => ids,
            Err(e @ ChatError::NoTemplate) | Err(e @ ChatError::Compile(_)) => {
                refuse(&job, Status::failed_precondition(format!("messages: {e}")));
                return None;
            }
            Err(e @ ChatError::Render(_)) => {
                refuse(&job, Status::invalid_argument(format!("messages: {e}")));
                return None;
            }
            Err(e @ ChatError::Encode(_)) => {
                refuse(&job, Status::internal(format!("messages: {e}")));
                return None;
            }
        },
    };
    if prompt.is_empty() {
        refuse(
            &job,
            Status::invalid_argument("prompt: the text has no tokens (it must not be empty)"),
        );
        return None;
    }
    let room = n_ctx.min(cfg.kv_cache_tokens);
    if prompt.len() >= room {
        let msg = if room < n_ctx {
            format!(
                "prompt: {} tokens leave no room to generate in this server's KV budget of \
                 {room} positions (--kv-cache-tokens)",
                prompt.len()
            )
        } else {
            format!(
                "prompt: {} tokens leave no room to generate in the model's context of {n_ctx} \
                 tokens",
                prompt.len()
            )
        };
        refuse(&job, Status::invalid_argument(msg));
        return None;
    }
    let asked = match job.max_new_tokens {
        0 => cfg.default_max_new_tokens,
        n => n,
    } as usize;
    let reserve = prompt.len() + asked.min(room - prompt.len());
    Some(Ready {
        job,
        prompt,
        reserve,
    })
}

/// Bytes of the KV caches of `running`.
fn in_use(running: &[Running]) -> usize {
    running.iter().map(|r| r.cache.bytes()).sum()
}

/// Starts `ready`: its session, cache (on kept memory when some fits) and logits buffer; None if
/// it was refused or has ended.
fn admit(
    m: &LoadedModel,
    ready: Ready,
    state: &Arc<EngineState>,
    running: &[Running],
    pool: &mut KvPool,
) -> Option<Running> {
    let Ready {
        mut job,
        prompt,
        reserve,
    } = ready;
    let c = m.model.config();
    let tok = &m.tokenizer;
    job.opts.max_new_tokens = reserve - prompt.len();
    let (unary, deadline) = (job.unary, job.opts.deadline);
    // A client that has gone, or a drain past its timeout, ends the request before the next
    // forward pass.
    let (gone, st) = (job.tx.clone(), state.clone());
    job.opts.cancel = Some(CancelCheck(Arc::new(move || {
        gone.is_closed() || st.cancel_all.load(Ordering::SeqCst)
    })));
    let session = match Session::new(&prompt, job.opts, tok, c.n_vocab, c.n_ctx) {
        Ok(s) => s,
        Err(e) => {
            let status = match e {
                GenerateError::Forward(e) => Status::internal(e.to_string()),
                e => Status::invalid_argument(e.to_string()),
            };
            let (waited, error) = (job.arrival.elapsed(), Some(status.message()));
            log_end(&job.request_id, "error", status.code(), waited, error);
            let _ = job.tx.try_send(Err(status));
            return None;
        }
    };
    let elements = m.model.cache_elements(reserve);
    let memory = pool.take(elements);
    if memory.is_none() {
        // Fresh memory: first drop kept memory that would no longer fit beside it.
        let bytes = 2 * elements * m.model.kv_type().size();
        pool.make_room(in_use(running) + bytes);
    }
    let cache = m.model.new_cache_in(reserve, m.model.kv_type(), memory);
    let now = Instant::now();
    let mut r = Running {
        echo: job
            .echo
            .then(|| prompt.iter().map(|&id| plain_token(tok, id)).collect()),
        request_id: job.request_id,
        tx: job.tx,
        cache,
        logits: vec![0.0; c.n_vocab],
        prompt,
        done: 0,
        session,
        next: None,
        reserve,
        times: Times {
            arrival: job.arrival,
            admitted: now,
            prefilled: None,
            first_token: None,
            last_token: None,
        },
        ended: false,
        sample_now: false,
        unary,
        deadline,
    };
    metrics::left_queue(now.saturating_duration_since(r.times.arrival));
    if let Some(reason) = r.session.interrupted() {
        finish(&mut r, reason, state);
        return None;
    }
    Some(r)
}

/// Runs the planned parts as one batched forward pass; a failure or panic fails them all.
fn forward(
    m: &LoadedModel,
    running: &mut [Running],
    parts: &[Part],
    scratch: &mut Scratch,
) -> Result<(), Status> {
    let mut picked: Vec<Option<&mut Running>> = running.iter_mut().map(Some).collect();
    let mut steps = Vec::with_capacity(parts.len());
    for p in parts {
        let r = picked[p.index].take().expect("one part per request");
        let Running {
            cache,
            prompt,
            done,
            next,
            logits,
            ..
        } = r;
        let decoding = *done == prompt.len();
        let tokens: &[u32] = if decoding {
            std::slice::from_ref(next.as_ref().expect("a decoding request has a next token"))
        } else {
            &prompt[*done..*done + p.n]
        };
        let (which, logits) = if p.sample {
            (Logits::Last, &mut logits[..])
        } else {
            (Logits::None, &mut [][..])
        };
        steps.push(SeqStep {
            cache,
            tokens,
            which,
            logits,
        });
    }
    match catch_unwind(AssertUnwindSafe(|| {
        m.model.forward_batch(&mut steps, scratch)
    })) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Status::internal(format!("forward pass failed: {e}"))),
        Err(_) => Err(Status::internal("forward pass failed (internal error)")),
    }
}

/// Samples `r`'s next token from its logits and streams it; ends the request when that is its
/// last, or when its reader is too slow or gone.
fn sample(m: &LoadedModel, r: &mut Running, state: &EngineState) {
    let tok = &m.tokenizer;
    let (event, finished) = r.session.step(tok, &mut r.logits, r.cache.len());
    if let Some(ev) = &event {
        let now = Instant::now();
        let first = r.times.first_token.is_none();
        let since = now.saturating_duration_since(r.times.last_token.unwrap_or(r.times.arrival));
        r.times.first_token.get_or_insert(now);
        r.times.last_token = Some(now);
        r.next = Some(ev.id);
        let msg = token_message(tok, &r.request_id, ev, r.echo.take().unwrap_or_default());
        if let Err(code) = send(r, msg) {
            r.ended = true;
            // The token just sampled never reached the client.
            let streamed = r.session.ids.len().saturating_sub(1);
            let (reason, code) = match code {
                Code::ResourceExhausted => ("error", code),
                _ => outcome(r, FinishReason::Cancelled),
            };
            ended(r, reason, code, streamed, None);
            return;
        }
        metrics::token(first, since);
    }
    if let Some(reason) = finished {
        finish(r, reason, state);
    }
}

/// Sends a token message, keeping the last slot of the channel for the error that ends a slow
/// reader's stream. Err: the request is over, with the code its stream ended with (CANCELLED:
/// the reader is gone; RESOURCE_EXHAUSTED: it was too slow, and has been told).
fn send(r: &Running, msg: pb::GenerateResponse) -> Result<(), Code> {
    if r.tx.is_closed() {
        return Err(Code::Cancelled);
    }
    if r.tx.capacity() <= 1 {
        let _ = r.tx.try_send(Err(Status::resource_exhausted(format!(
            "cancelled: the client did not read its stream ({} messages unread)",
            r.tx.max_capacity() - 1
        ))));
        return Err(Code::ResourceExhausted);
    }
    r.tx.try_send(Ok(msg)).map_err(|_| Code::Cancelled)
}

/// Ends `r` with `status` (sent as its stream's error), unless it has ended already.
fn fail(r: &mut Running, status: Status) {
    if r.ended {
        return;
    }
    r.ended = true;
    let generated = r.session.ids.len();
    ended(r, "error", status.code(), generated, Some(status.message()));
    let _ = r.tx.try_send(Err(status));
}

/// How a request that reached `reason` ended for its client: the finish reason and the gRPC
/// code it saw. A stream gets a final message (OK) whatever the reason; a unary call fails
/// with DEADLINE_EXCEEDED or CANCELLED; a client that has gone saw CANCELLED, or its deadline.
fn outcome(r: &Running, reason: FinishReason) -> (&'static str, Code) {
    let gone = r.tx.is_closed();
    let late = r.deadline.is_some_and(|d| Instant::now() >= d);
    match reason {
        _ if gone && late => ("deadline", Code::DeadlineExceeded),
        _ if gone => ("cancelled", Code::Cancelled),
        FinishReason::Deadline if r.unary => ("deadline", Code::DeadlineExceeded),
        FinishReason::Cancelled if r.unary => ("cancelled", Code::Cancelled),
        reason => (reason.as_str(), Code::Ok),
    }
}

/// Records how a request that ran ended (`generated`: tokens its client was sent), and logs it:
/// one line per request.
fn ended(
    r: &Running,
    finish_reason: &'static str,
    code: Code,
    generated: usize,
    error: Option<&str>,
) {
    let now = Instant::now();
    let t = &r.times;
    metrics::request_ended(finish_reason, code);
    metrics::request_totals(now - t.arrival, r.prompt.len(), generated);
    let timings = t.timings(now);
    tracing::info!(
        request_id = %r.request_id,
        prompt_tokens = r.prompt.len(),
        generated_tokens = generated,
        finish_reason,
        code = metrics::code_name(code),
        error,
        queue_ms = timings.queue_ms,
        prefill_ms = timings.prefill_ms,
        ttft_ms = t.first_token.map(|f| (f - t.arrival).as_secs_f64() * 1e3),
        decode_ms = timings.decode_ms,
        total_ms = timings.total_ms,
        "request finished"
    );
}

/// Records and logs a request that ended before it ran (refused, or its client left) after
/// waiting `waited` in the queue.
fn log_end(
    request_id: &str,
    finish_reason: &'static str,
    code: Code,
    waited: std::time::Duration,
    error: Option<&str>,
) {
    metrics::left_queue(waited);
    metrics::request_ended(finish_reason, code);
    tracing::info!(
        request_id,
        prompt_tokens = 0,
        generated_tokens = 0,
        finish_reason,
        code = metrics::code_name(code),
        error,
        "request finished"
    );
}

/// Ends `r` for `reason`: the last message (held-back text, finish reason, usage, timings).
fn finish(r: &mut Running, reason: FinishReason, state: &EngineState) {
    if r.ended {
        return;
    }
    // First what may fail (flushing held-back text): a panic here leaves the request to `fail`.
    let (reason, tail) = r.session.finish(reason);
    r.ended = true;
    let now = Instant::now();
    let timings = r.times.timings(now);
    let generated = r.session.ids.len();
    let (label, code) = outcome(r, reason);
    ended(r, label, code, generated, None);
    // Moving average of run times (1/8 weight), for the wait estimate of refusals.
    let run_us = now.saturating_duration_since(r.times.admitted).as_micros() as u64;
    let avg = state.avg_run_us.load(Ordering::SeqCst);
    let avg = if avg == 0 {
        run_us
    } else {
        (avg * 7 + run_us) / 8
    };
    state.avg_run_us.store(avg, Ordering::SeqCst);
    let last = pb::GenerateResponse {
        request_id: r.request_id.clone(),
        text_delta: tail,
        prompt_tokens: r.echo.take().unwrap_or_default(),
        finish_reason: finish_reason(reason) as i32,
        usage: Some(pb::Usage {
            prompt_tokens: r.prompt.len() as u32,
            generated_tokens: generated as u32,
        }),
        timings: Some(timings),
        seed: r.session.options().sampling.seed,
        stop_reason: r.session.stop_reason.clone().unwrap_or_default(),
        ..Default::default()
    };
    // The channel always has room for the last message: `send` keeps one slot free.
    let _ = r.tx.try_send(Ok(last));
}
