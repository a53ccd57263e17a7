//! The `qgpt.v1.TextGeneration` service: admission, validation and conversion; the engine does
//! the generating.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::config::Limits;
use super::pb;
use super::request::{check_ids, parse_grpc_timeout, validate};
use crate::engine::{plain_token, Engine, Event, Job};
use crate::model::LoadedModel;

/// A unary call's generation ends this long before the call's deadline (its finish reason
/// becomes DEADLINE_EXCEEDED), so that the caller gets that from us rather than tonic's own
/// timeout (CANCELLED).
const UNARY_DEADLINE_MARGIN: Duration = Duration::from_millis(20);
/// The unary call stops waiting this long before its deadline, should the engine's step run past
/// its own (shorter) deadline.
const UNARY_WAIT_MARGIN: Duration = Duration::from_millis(10);

/// The service's state.
pub(super) struct Service {
    pub engine: Engine,
    pub model: Arc<LoadedModel>,
    pub limits: Limits,
    pub info: pb::GetModelInfoResponse,
    /// Set at SIGTERM/SIGINT: new requests are refused with UNAVAILABLE.
    pub draining: Arc<AtomicBool>,
    pub started: Instant,
    /// Numbers the requests that come without an id, and varies assigned seeds.
    pub counter: AtomicU64,
}

impl Service {
    /// Validates and queues a generation; returns its message stream and its deadline. A refusal
    /// is counted and logged here (the engine counts and logs the requests it receives).
    fn submit(
        &self,
        req: Request<pb::GenerateRequest>,
        unary: bool,
    ) -> Result<(mpsc::Receiver<Event>, Option<Instant>), Status> {
        self.try_submit(req, unary).inspect_err(|status| {
            crate::metrics::request_ended("error", status.code());
            tracing::info!(
                code = crate::metrics::code_name(status.code()),
                error = status.message(),
                "request refused"
            );
        })
    }

    fn try_submit(
        &self,
        req: Request<pb::GenerateRequest>,
        unary: bool,
    ) -> Result<(mpsc::Receiver<Event>, Option<Instant>), Status> {
        let arrival = Instant::now();
        if self.draining.load(Ordering::SeqCst) {
            return Err(Status::unavailable("the server is shutting down"));
        }
        let deadline = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|d| arrival + d);
        let req = req.into_inner();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let request_id = match req.request_id.as_str() {
            "" => format!(
                "qgpt-{:x}-{n}",
                self.started.elapsed().as_nanos() as u64 ^ seed_base()
            ),
            id if id.len() > self.limits.max_request_id_bytes => {
                return Err(Status::invalid_argument(format!(
                    "request_id: {} bytes, at most {} allowed",
                    id.len(),
                    self.limits.max_request_id_bytes
                )))
            }
            id => id.to_owned(),
        };
        let c = self.model.model.config();
        let seed = seed_base().wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let ends = match deadline {
            Some(d) if unary => Some(d.checked_sub(UNARY_DEADLINE_MARGIN).unwrap_or(d)),
            d => d,
        };
        let v = validate(req, &self.limits, c.n_vocab, c.n_ctx, seed, ends)?;
        let (tx, rx) = self.engine.channel();
        self.engine.submit(Job {
            request_id,
            prompt: v.prompt,
            max_new_tokens: v.max_new_tokens,
            opts: v.opts,
            echo: v.echo,
            unary,
            arrival,
            tx,
        })?;
        Ok((rx, deadline))
    }

    /// Runs CPU work (tokenizer calls) on tokio's blocking pool, never on its async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LoadedModel) -> T + Send + 'static,
    ) -> Result<T, Status> {
        let m = self.model.clone();
        tokio::task::spawn_blocking(move || f(&m))
            .await
            .map_err(|_| Status::internal("tokenizer task failed"))
    }
}

/// Bits that differ from one server start to the next (for assigned seeds and ids).
fn seed_base() -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    })
}

/// Folds a stream's messages into one response.
fn merge(into: &mut pb::GenerateResponse, m: pb::GenerateResponse) {
    into.request_id = m.request_id;
    into.tokens.extend(m.tokens);
    into.text_delta.push_str(&m.text_delta);
    into.prompt_tokens.extend(m.prompt_tokens);
    if m.finish_reason != 0 {
        into.finish_reason = m.finish_reason;
        into.usage = m.usage;
        into.timings = m.timings;
        into.seed = m.seed;
        into.stop_reason = m.stop_reason;
    }
}

#[tonic::async_trait]
impl pb::text_generation_server::TextGeneration for Service {
    type GenerateStreamStream = ReceiverStream<Event>;

    async fn generate_stream(
        &self,
        req: Request<pb::GenerateRequest>,
    ) -> Result<Response<Self::GenerateStreamStream>, Status> {
        let (rx, _) = self.submit(req, false)?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn generate(
        &self,
        req: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let (mut rx, deadline) = self.submit(req, true)?;
        let collect = async move {
            let mut out = pb::GenerateResponse::default();
            while let Some(m) = rx.recv().await {
                merge(&mut out, m?);
            }
            Ok::<_, Status>(out)
        };
        let out = match deadline {
            Some(d) => {
                let at = d.checked_sub(UNARY_WAIT_MARGIN).unwrap_or(d);
                tokio::time::timeout_at(at.into(), collect)
                    .await
                    .map_err(|_| Status::deadline_exceeded("the deadline passed"))??
            }
            None => collect.await?,
        };
        match pb::FinishReason::try_from(out.finish_reason) {
            Ok(pb::FinishReason::Deadline) => Err(Status::deadline_exceeded("the deadline passed")),
            Ok(pb::FinishReason::Cancelled) => Err(Status::cancelled(
                "cancelled: the server shut down before the request finished",
            )),
            Ok(pb::FinishReason::Unspecified) | Err(_) => {
                Err(Status::internal("generation ended without a result"))
            }
            Ok(_) => Ok(Response::new(out)),
        }
    }

    async fn tokenize(
        &self,
        req: Request<pb::TokenizeRequest>,
    ) -> Result<Response<pb::TokenizeResponse>, Status> {
        let req = req.into_inner();
        let tokens = self
            .blocking(move |m| {
                let t = &m.tokenizer;
                // As Generate tokenizes a text prompt when special tokens are asked for.
                let ids = if req.add_special_tokens {
                    m.encode_prompt(&req.text)?
                } else {
                    t.encode(&req.text)?
                };
                Ok::<_, crate::model::ModelError>(
                    ids.into_iter().map(|id| plain_token(t, id)).collect(),
                )
            })
            .await?
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::TokenizeResponse { tokens }))
    }

    async fn detokenize(
        &self,
        req: Request<pb::DetokenizeRequest>,
    ) -> Result<Response<pb::DetokenizeResponse>, Status> {
        let req = req.into_inner();
        if req.ids.len() > self.limits.max_detokenize_ids {
            return Err(Status::invalid_argument(format!(
                "ids: {} ids, at most {} allowed",
                req.ids.len(),
                self.limits.max_detokenize_ids
            )));
        }
        check_ids("ids", &req.ids, self.model.model.config().n_vocab)?;
        let text = self
            .blocking(move |m| {
                let t = &m.tokenizer;
                let ids: Vec<u32> = req
                    .ids
                    .into_iter()
                    .filter(|&id| !(req.skip_special_tokens && t.is_special(id)))
                    .collect();
                t.decode(&ids)
            })
            .await?;
        Ok(Response::new(pb::DetokenizeResponse { text }))
    }

    async fn get_model_info(
        &self,
        _: Request<pb::GetModelInfoRequest>,
    ) -> Result<Response<pb::GetModelInfoResponse>, Status> {
        Ok(Response::new(self.info.clone()))
    }

    async fn get_server_status(
        &self,
        _: Request<pb::GetServerStatusRequest>,
    ) -> Result<Response<pb::GetServerStatusResponse>, Status> {
        let st = &self.engine.state;
        let cfg = &self.engine.config;
        let running = st.running.load(Ordering::SeqCst) as u32;
        let kv_total = cfg.kv_cache_tokens as u64;
        Ok(Response::new(pb::GetServerStatusResponse {
            running_requests: running,
            queued_requests: st.queued.load(Ordering::SeqCst) as u32,
            max_running_requests: cfg.max_running as u32,
            max_queued_requests: cfg.max_queued as u32,
            free_slots: (cfg.max_running as u32).saturating_sub(running),
            kv_cache_tokens_total: kv_total,
            kv_cache_tokens_free: kv_total.saturating_sub(st.kv_tokens_used.load(Ordering::SeqCst)),
            draining: self.draining.load(Ordering::SeqCst),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
        }))
    }
}
