//! The engine: one OS thread that owns the model, the running batch and their KV caches.
//! Requests wait in a bounded FIFO queue; each step the scheduler (`scheduler.rs`) admits what
//! the limits allow, advances every running request by one batched forward pass (one token for
//! those decoding, a prompt chunk for those in prefill) and streams every sampled token at once.
//! Tokio's threads only move messages: no model work runs on them.

mod kv_pool;
mod messages;
mod scheduler;

pub(crate) use messages::{plain_token, token_text};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::generate::GenerateOptions;
use crate::model::LoadedModel;
use crate::server::pb;

/// `google.rpc.ErrorInfo.reason` of a refusal because the queue is full.
pub const QUEUE_FULL: &str = "QUEUE_FULL";
/// `google.rpc.ErrorInfo.domain` of qgpt's errors.
pub const ERROR_DOMAIN: &str = "qgpt";

/// What a request's stream receives: responses, or one error that ends it.
pub type Event = Result<pb::GenerateResponse, Status>;

/// A prompt as the request gave it.
#[derive(Debug)]
pub enum Prompt {
    /// Text, tokenized by the engine (CPU work stays off the async threads).
    Text(String),
    /// Token ids (already checked against the vocabulary).
    Ids(Vec<u32>),
    /// A conversation, rendered with the model's chat template by the engine.
    Chat(Vec<crate::chat::ChatMessage>),
}

/// A validated request waiting for the engine.
pub struct Job {
    /// The request's id (the caller's or an assigned one).
    pub request_id: String,
    /// Text or ids.
    pub prompt: Prompt,
    /// 0: the server's default; either way capped by what the context leaves.
    pub max_new_tokens: u32,
    /// Sampling, stops, log-probabilities, deadline (`max_new_tokens` is set by the engine).
    pub opts: GenerateOptions,
    /// Return the prompt's tokens in the first message.
    pub echo: bool,
    /// A unary call: its client sees DEADLINE_EXCEEDED or CANCELLED where a stream gets a final
    /// message with that finish reason (for how the request is counted and logged).
    pub unary: bool,
    /// When the server received it.
    pub arrival: Instant,
    /// Where its messages go; see [`Engine::channel`].
    pub tx: mpsc::Sender<Event>,
}

/// The scheduler's limits.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Requests that may wait; more are refused with RESOURCE_EXHAUSTED.
    pub max_queued: usize,
    /// Requests generating at once.
    pub max_running: usize,
    /// KV-cache positions that running requests may reserve in all (each reserves its prompt
    /// plus its max_new_tokens when admitted).
    pub kv_cache_tokens: usize,
    /// Tokens per forward step: every decoding request's one token, then prompt chunks.
    pub max_batch_tokens: usize,
    /// Prompt tokens per step while some request is decoding (steps with none use all of
    /// `max_batch_tokens`): a step's prompt tokens lengthen it for every decoding request.
    pub max_prefill_while_decoding: usize,
    /// `max_new_tokens` when a request leaves it 0.
    pub default_max_new_tokens: u32,
    /// Messages a stream may have unread before its request is cancelled as a slow reader.
    pub stream_buffer: usize,
}

/// Counters shared with the service (for GetServerStatus and admission).
#[derive(Debug, Default)]
pub struct EngineState {
    /// Requests accepted and not yet admitted.
    pub queued: AtomicUsize,
    /// Requests generating.
    pub running: AtomicUsize,
    /// KV-cache positions reserved by running requests.
    pub kv_tokens_used: AtomicU64,
    /// Set when the drain timeout has passed: running requests end with CANCELLED.
    pub cancel_all: AtomicBool,
    /// Moving average of the time requests spend running, in microseconds (for the wait
    /// estimate of a refusal).
    pub avg_run_us: AtomicU64,
}

/// The handle the service submits jobs through.
pub struct Engine {
    queue: SyncSender<Job>,
    /// Shared counters.
    pub state: Arc<EngineState>,
    /// The limits it runs with.
    pub config: EngineConfig,
}

impl Engine {
    /// Starts the engine thread over `model`.
    pub fn start(model: Arc<LoadedModel>, config: EngineConfig) -> Self {
        let (queue, rx) = sync_channel(config.max_queued);
        let state = Arc::new(EngineState::default());
        let (st, cfg) = (state.clone(), config.clone());
        std::thread::Builder::new()
            .name("qgpt-engine".into())
            .spawn(move || scheduler::run(&model, rx, st, &cfg))
            .expect("spawning the engine thread");
        Self {
            queue,
            state,
            config,
        }
    }

    /// A request's message channel: room for the stream buffer plus the error that ends a
    /// slow reader's stream.
    pub fn channel(&self) -> (mpsc::Sender<Event>, mpsc::Receiver<Event>) {
        mpsc::channel(self.config.stream_buffer + 1)
    }

    /// Queues `job`, or refuses it at once with RESOURCE_EXHAUSTED when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), Status> {
        self.state.queued.fetch_add(1, Ordering::SeqCst);
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.state.queued.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => self.overloaded(),
                    TrySendError::Disconnected(_) => Status::unavailable("the engine has stopped"),
                })
            }
        }
    }

    /// RESOURCE_EXHAUSTED with the queue length and an estimate of the wait, in the message and
    /// as structured details (`google.rpc.RetryInfo` with the wait, `google.rpc.ErrorInfo` with
    /// reason `QUEUE_FULL`, domain `qgpt`, and metadata `queue_length`, `max_queued`, `running`,
    /// `estimated_wait_ms`), which gRPC clients read without parsing the message.
    fn overloaded(&self) -> Status {
        let s = &self.state;
        // The counter also holds other submissions racing this one (counted before they try the
        // queue): the queue itself holds at most max_queued.
        let queued = s.queued.load(Ordering::SeqCst).min(self.config.max_queued);
        let running = s.running.load(Ordering::SeqCst);
        let avg_ms = s.avg_run_us.load(Ordering::SeqCst) as f64 / 1e3;
        // The queue empties at about max_running requests per average request time.
        let wait_ms =
            (avg_ms * (queued as f64 + 1.0) / self.config.max_running.max(1) as f64).round() as u64;
        let message = format!(
            "the queue is full: {queued} requests waiting (limit {}, flag --max-queued), \
             {running} running; estimated wait {wait_ms} ms; retry later",
            self.config.max_queued,
        );
        let metadata: HashMap<String, String> = [
            ("queue_length", queued.to_string()),
            ("max_queued", self.config.max_queued.to_string()),
            ("running", running.to_string()),
            ("estimated_wait_ms", wait_ms.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut details = ErrorDetails::with_retry_info(Some(Duration::from_millis(wait_ms)));
        details.set_error_info(QUEUE_FULL, ERROR_DOMAIN, metadata);
        Status::with_error_details(Code::ResourceExhausted, message, details)
    }
}
