//! The engine: one OS thread that owns generation. Requests wait in a bounded FIFO queue and run
//! one at a time on the compute pool; every token is sent to the request's stream as soon as it
//! is sampled. Tokio's threads only move messages: no model work runs on them.
//!
//! Issue #6 replaces the one-at-a-time loop with continuous batching; the queue, the job and the
//! event stream stay.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tonic::Status;

use super::pb;
use super::request::{token_text, Prompt};
use crate::generate::{generate, CancelCheck, FinishReason, GenerateError, GenerateOptions};
use crate::model::LoadedModel;

/// What a request's stream receives: responses, or one error that ends it.
pub(super) type Event = Result<pb::GenerateResponse, Status>;

/// A validated request waiting for the engine.
pub(super) struct Job {
    /// The request's id (the caller's or an assigned one).
    pub request_id: String,
    /// Text (tokenized by the engine) or ids.
    pub prompt: Prompt,
    /// 0: the server's default; either way capped by what the context leaves.
    pub max_new_tokens: u32,
    /// Sampling, stops, log-probabilities, deadline (`max_new_tokens` is set by the engine).
    pub opts: GenerateOptions,
    /// Return the prompt's tokens in the first message.
    pub echo: bool,
    /// When the server received it.
    pub arrival: Instant,
    /// Where its messages go. Capacity: one message per token plus the last, so the engine
    /// never waits on a reader.
    pub tx: mpsc::Sender<Event>,
}

/// Counters shared with the service (for GetServerStatus and admission).
#[derive(Debug, Default)]
pub(super) struct EngineState {
    /// Requests accepted and not yet taken by the engine.
    pub queued: AtomicUsize,
    /// Requests being generated.
    pub running: AtomicUsize,
    /// KV-cache positions held by running requests.
    pub kv_tokens_used: AtomicU64,
    /// Set when the drain timeout has passed: running requests end with CANCELLED.
    pub cancel_all: AtomicBool,
}

/// The handle the service submits jobs through.
pub(super) struct Engine {
    queue: SyncSender<Job>,
    /// Shared counters.
    pub state: Arc<EngineState>,
    /// Requests that may wait.
    pub max_queued: usize,
}

impl Engine {
    /// Starts the engine thread over `model`, with `max_queued` waiting requests at most and
    /// `default_max_new_tokens` for requests that leave it unset.
    pub fn start(model: Arc<LoadedModel>, max_queued: usize, default_max_new_tokens: u32) -> Self {
        let (queue, rx) = sync_channel(max_queued);
        let state = Arc::new(EngineState::default());
        let st = state.clone();
        std::thread::Builder::new()
            .name("qgpt-engine".into())
            .spawn(move || run(&model, rx, st, default_max_new_tokens))
            .expect("spawning the engine thread");
        Self {
            queue,
            state,
            max_queued,
        }
    }

    /// Queues `job`, or refuses it at once with RESOURCE_EXHAUSTED when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), Status> {
        self.state.queued.fetch_add(1, Ordering::SeqCst);
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.state.queued.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => Status::resource_exhausted(format!(
                        "the queue is full: {} requests waiting (limit {}, flag --max-queued) \
                         and {} running; retry later",
                        self.state.queued.load(Ordering::SeqCst),
                        self.max_queued,
                        self.state.running.load(Ordering::SeqCst),
                    )),
                    TrySendError::Disconnected(_) => Status::unavailable("the engine has stopped"),
                })
            }
        }
    }
}

/// The engine loop: FIFO, one request at a time.
fn run(m: &LoadedModel, rx: Receiver<Job>, state: Arc<EngineState>, default_max_new: u32) {
    for job in rx {
        state.queued.fetch_sub(1, Ordering::SeqCst);
        if job.tx.is_closed() {
            continue; // the client left while it waited
        }
        state.running.fetch_add(1, Ordering::SeqCst);
        let tx = job.tx.clone();
        // A panic fails this request with INTERNAL; the engine goes on with the next.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_job(m, job, &state, default_max_new)
        }));
        state.kv_tokens_used.store(0, Ordering::SeqCst);
        state.running.fetch_sub(1, Ordering::SeqCst);
        let err = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(status)) => Some(status),
            Err(_) => Some(Status::internal("generation failed (internal error)")),
        };
        if let Some(status) = err {
            let _ = tx.try_send(Err(status));
        }
    }
}

/// Runs one request to its end, streaming its messages.
fn run_job(
    m: &LoadedModel,
    mut job: Job,
    state: &Arc<EngineState>,
    default_max_new: u32,
) -> Result<(), Status> {
    let started = Instant::now();
    let tok = &m.tokenizer;
    let n_ctx = m.model.config().n_ctx;
    let prompt_ids = match std::mem::replace(&mut job.prompt, Prompt::Ids(Vec::new())) {
        Prompt::Ids(ids) => ids,
        Prompt::Text(text) => {
            let mut ids = Vec::new();
            if tok.add_bos() {
                ids.extend(tok.bos());
            }
            ids.extend(
                tok.encode(&text)
                    .map_err(|e| Status::internal(e.to_string()))?,
            );
            ids
        }
    };
    if prompt_ids.is_empty() {
        return Err(Status::invalid_argument(
            "prompt: the text has no tokens (it must not be empty)",
        ));
    }
    if prompt_ids.len() >= n_ctx {
        return Err(Status::invalid_argument(format!(
            "prompt: {} tokens leave no room to generate in the model's context of {n_ctx} tokens",
            prompt_ids.len()
        )));
    }
    let room = (n_ctx - prompt_ids.len()) as u32;
    let asked = if job.max_new_tokens == 0 {
        default_max_new
    } else {
        job.max_new_tokens
    };
    job.opts.max_new_tokens = asked.min(room) as usize;
    // A client that has gone (or a drain past its timeout) stops generation before the next
    // forward call, prefill chunks included.
    let (gone, st) = (job.tx.clone(), state.clone());
    job.opts.cancel = Some(CancelCheck(Arc::new(move || {
        gone.is_closed() || st.cancel_all.load(Ordering::SeqCst)
    })));
    state.kv_tokens_used.store(
        (prompt_ids.len() + job.opts.max_new_tokens) as u64,
        Ordering::SeqCst,
    );

    let rid = job.request_id.clone();
    let mut first: Option<Instant> = None;
    let mut echo = job.echo.then(|| {
        prompt_ids
            .iter()
            .map(|&id| pb::Token {
                id,
                text: token_text(tok, id),
                logprob: None,
                special: tok.is_special(id),
                top_logprobs: Vec::new(),
            })
            .collect::<Vec<_>>()
    });
    let tx = &job.tx;
    let g = generate(&m.model, tok, &prompt_ids, &job.opts, |ev| {
        first.get_or_insert_with(Instant::now);
        let msg = pb::GenerateResponse {
            request_id: rid.clone(),
            tokens: vec![pb::Token {
                id: ev.id,
                text: token_text(tok, ev.id),
                logprob: ev.logprob,
                special: tok.is_special(ev.id),
                top_logprobs: ev
                    .top
                    .iter()
                    .map(|&(id, logprob)| pb::TopLogprob {
                        id,
                        text: token_text(tok, id),
                        logprob,
                    })
                    .collect(),
            }],
            text_delta: ev.text.to_owned(),
            prompt_tokens: echo.take().unwrap_or_default(),
            ..Default::default()
        };
        // The channel has room for every token; failing means the client has gone.
        if state.cancel_all.load(Ordering::SeqCst) || tx.try_send(Ok(msg)).is_err() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .map_err(|e| match e {
        GenerateError::Forward(e) => Status::internal(e.to_string()),
        e => Status::invalid_argument(e.to_string()),
    })?;
    let now = Instant::now();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let finish = match g.finish_reason {
        FinishReason::Length | FinishReason::ContextFull => pb::FinishReason::Length,
        FinishReason::Eos => pb::FinishReason::EosToken,
        FinishReason::StopSequence => pb::FinishReason::StopSequence,
        FinishReason::Deadline => pb::FinishReason::Deadline,
        FinishReason::Cancelled => pb::FinishReason::Cancelled,
    };
    let last = pb::GenerateResponse {
        request_id: rid,
        text_delta: g.final_text.clone(),
        prompt_tokens: echo.take().unwrap_or_default(),
        finish_reason: finish as i32,
        usage: Some(pb::Usage {
            prompt_tokens: prompt_ids.len() as u32,
            generated_tokens: g.ids.len() as u32,
        }),
        timings: Some(pb::Timings {
            queue_ms: ms(started - job.arrival),
            time_to_first_token_ms: first.map_or(0.0, |f| ms(f - job.arrival)),
            prefill_ms: ms(g.prefill_time),
            decode_ms: ms(g.decode_time),
            total_ms: ms(now - job.arrival),
        }),
        seed: job.opts.sampling.seed,
        stop_reason: g.stop_reason.unwrap_or_default(),
        ..Default::default()
    };
    tracing::info!(
        request_id = %last.request_id,
        prompt_tokens = prompt_ids.len(),
        generated_tokens = g.ids.len(),
        finish_reason = g.finish_reason.as_str(),
        total_ms = ms(now - job.arrival),
        "request finished"
    );
    let _ = job.tx.try_send(Ok(last));
    Ok(())
}
