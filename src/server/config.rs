//! Settings of `qgpt serve`: what it listens on, the request limits, the transport.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::KvType;

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The GGUF model file; None: the demo model embedded in the binary.
    pub model: Option<PathBuf>,
    /// Address of the gRPC listener.
    pub addr: SocketAddr,
    /// Per-request limits.
    pub limits: Limits,
    /// HTTP/2 settings.
    pub transport: Transport,
    /// After SIGTERM/SIGINT, how long running requests may go on before they are cancelled.
    pub drain_timeout: Duration,
    /// Element type of the KV cache.
    pub kv_type: KvType,
    /// When set, generation calls must carry `authorization: Bearer <token>`.
    pub auth_token: Option<String>,
    /// When set, the listener speaks TLS only.
    pub tls: Option<TlsFiles>,
    /// Continuous-batching limits.
    pub batching: Batching,
    /// Histogram buckets that replace the defaults (when metrics are exported).
    pub metrics_buckets: Vec<crate::metrics::BucketOverride>,
}

/// How many requests generate together, and how big a step may be.
#[derive(Debug, Clone)]
pub struct Batching {
    /// Requests generating at once.
    pub max_running: usize,
    /// KV-cache positions all running requests may reserve together (each reserves its prompt
    /// plus its max_new_tokens); 0: max_running × the model's context.
    pub kv_cache_tokens: usize,
    /// Tokens per forward step (decode tokens first, then prompt chunks); at least max_running.
    pub max_batch_tokens: usize,
    /// Prompt tokens a step may carry while requests are decoding (bounds their inter-token
    /// latency while prompts arrive); steps with no decoding request use all of
    /// max_batch_tokens.
    pub max_prefill_while_decoding: usize,
    /// Messages a stream may leave unread before its request is cancelled as a slow reader.
    pub stream_buffer: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_running: 16,
            kv_cache_tokens: 0,
            max_batch_tokens: 512,
            max_prefill_while_decoding: 8,
            stream_buffer: 256,
        }
    }
}

/// PEM files of the server's TLS identity, and of the CA that client certificates must chain to
/// (mutual TLS) when given.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA for client certificates: when set, clients without a valid certificate are refused.
    pub client_ca: Option<PathBuf>,
}

/// Bounds on requests; a request over one fails with INVALID_ARGUMENT naming it.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests that may wait for the engine; more are refused with RESOURCE_EXHAUSTED.
    pub max_queued: usize,
    /// `max_new_tokens` when a request leaves it 0.
    pub default_max_new_tokens: u32,
    /// Stop strings per request.
    pub max_stop: usize,
    /// Bytes per stop string.
    pub max_stop_bytes: usize,
    /// Stop token ids per request.
    pub max_stop_token_ids: usize,
    /// Alternatives per token in `logprobs`.
    pub max_logprobs: u32,
    /// Bytes of a caller's request id.
    pub max_request_id_bytes: usize,
    /// Token ids per Detokenize request.
    pub max_detokenize_ids: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_queued: 64,
            default_max_new_tokens: 256,
            max_stop: 16,
            max_stop_bytes: 256,
            max_stop_token_ids: 64,
            max_logprobs: 20,
            max_request_id_bytes: 128,
            max_detokenize_ids: 1 << 20,
        }
    }
}

/// HTTP/2 transport settings.
#[derive(Debug, Clone)]
pub struct Transport {
    /// Largest message received or sent.
    pub max_message_bytes: usize,
    /// Interval of HTTP/2 keepalive pings (None: off).
    pub keepalive_interval: Option<Duration>,
    /// How long a keepalive ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Connections are closed (gracefully) after this age, so that clients behind an L4 load
    /// balancer reconnect and spread over new replicas (None: never).
    pub max_connection_age: Option<Duration>,
}

impl Default for Transport {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 << 20,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(10),
            max_connection_age: Some(Duration::from_secs(300)),
        }
    }
}
