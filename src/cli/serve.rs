//! `qgpt serve`: the gRPC server. Every flag can also come from the environment variable named in
//! its help (`QGPT_*`); a flag on the command line wins.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::{init_threads, CliError, KvTypeArg};
use qgpt::server::{serve_on, Batching, Limits, ServeConfig, TlsFiles, Transport};

/// Arguments of `qgpt serve`.
#[derive(clap::Args)]
pub struct Args {
    /// GGUF model file (default: the demo model embedded in the binary, a small GPT-2 trained on
    /// the King James Bible).
    #[arg(short, long, env = "QGPT_MODEL")]
    model: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "QGPT_HOST", default_value = "0.0.0.0")]
    host: IpAddr,
    /// gRPC port.
    #[arg(long, env = "QGPT_PORT", default_value_t = 50051)]
    port: u16,
    /// Port of the Prometheus endpoint (`GET /metrics`, plain HTTP, on --host); 0 turns metrics
    /// off.
    #[arg(long, env = "QGPT_METRICS_PORT", default_value_t = 9090)]
    metrics_port: u16,
    /// Histogram buckets replacing a default: NAME=B1,B2,... (bounds in the metric's unit,
    /// increasing), e.g. qgpt_time_to_first_token_seconds=0.05,0.1,0.5,1; may repeat (in the
    /// environment variable, separated by spaces).
    #[arg(long, env = "QGPT_METRICS_BUCKETS", value_delimiter = ' ')]
    metrics_buckets: Vec<qgpt::metrics::BucketOverride>,
    /// Compute threads (default: the CPUs this process may use, cgroup limits included).
    #[arg(short, long, env = "QGPT_THREADS")]
    threads: Option<usize>,
    /// Element type of the KV cache.
    #[arg(long, env = "QGPT_KV_TYPE", value_enum, default_value = "f16")]
    kv_type: KvTypeArg,
    /// Requests that may wait for the engine; more are refused at once with RESOURCE_EXHAUSTED.
    #[arg(long, env = "QGPT_MAX_QUEUED", default_value_t = 64)]
    max_queued: usize,
    /// Requests generating at once (continuous batching: they share every forward pass).
    #[arg(long, env = "QGPT_MAX_RUNNING", default_value_t = 16)]
    max_running: usize,
    /// KV-cache positions that running requests may reserve together (each reserves its prompt
    /// plus its max_new_tokens; F16 GPT-2 124M takes 36 KiB a position); 0: max-running × the
    /// model's context.
    #[arg(long, env = "QGPT_KV_CACHE_TOKENS", default_value_t = 0)]
    kv_cache_tokens: usize,
    /// Tokens per forward step: one per decoding request, the rest for prompt chunks (bounds
    /// how long a step, and so everyone's inter-token latency, can get while prompts arrive).
    #[arg(long, env = "QGPT_MAX_BATCH_TOKENS", default_value_t = 512)]
    max_batch_tokens: usize,
    /// Prompt tokens a step may carry while other requests are decoding: bounds their
    /// inter-token latency while prompts arrive (steps with no one decoding use all of
    /// --max-batch-tokens). Default: 4 per compute thread (a prompt token costs about the same
    /// time on each thread count when its share is the same)
    #[arg(long, env = "QGPT_MAX_PREFILL_WHILE_DECODING")]
    max_prefill_while_decoding: Option<usize>,
    /// Messages a stream may leave unread before its request is cancelled as a slow reader.
    #[arg(long, env = "QGPT_STREAM_BUFFER", default_value_t = 256)]
    stream_buffer: usize,
    /// max_new_tokens for requests that leave it 0 (always capped by the context left).
    #[arg(long, env = "QGPT_DEFAULT_MAX_NEW_TOKENS", default_value_t = 256)]
    default_max_new_tokens: u32,
    /// Most stop strings per request.
    #[arg(long, env = "QGPT_MAX_STOP", default_value_t = 16)]
    max_stop: usize,
    /// Most bytes per stop string.
    #[arg(long, env = "QGPT_MAX_STOP_BYTES", default_value_t = 256)]
    max_stop_bytes: usize,
    /// Most stop token ids per request.
    #[arg(long, env = "QGPT_MAX_STOP_TOKEN_IDS", default_value_t = 64)]
    max_stop_token_ids: usize,
    /// Most alternatives per token that `logprobs` may ask for.
    #[arg(long, env = "QGPT_MAX_LOGPROBS", default_value_t = 20)]
    max_logprobs: u32,
    /// Most bytes of a caller's request_id.
    #[arg(long, env = "QGPT_MAX_REQUEST_ID_BYTES", default_value_t = 128)]
    max_request_id_bytes: usize,
    /// Most token ids per Detokenize request.
    #[arg(long, env = "QGPT_MAX_DETOKENIZE_IDS", default_value_t = 1 << 20)]
    max_detokenize_ids: usize,
    /// Largest gRPC message received or sent, in bytes.
    #[arg(long, env = "QGPT_MAX_MESSAGE_BYTES", default_value_t = 4 << 20)]
    max_message_bytes: usize,
    /// Seconds between HTTP/2 keepalive pings; 0 turns them off.
    #[arg(long, env = "QGPT_KEEPALIVE_INTERVAL_S", default_value_t = 30)]
    keepalive_interval_s: u64,
    /// Seconds a keepalive ping may go unanswered before the connection is closed.
    #[arg(long, env = "QGPT_KEEPALIVE_TIMEOUT_S", default_value_t = 10)]
    keepalive_timeout_s: u64,
    /// Seconds after which a connection is closed gracefully so that clients reconnect and
    /// spread over replicas; 0: never.
    #[arg(long, env = "QGPT_MAX_CONNECTION_AGE_S", default_value_t = 300)]
    max_connection_age_s: u64,
    /// Seconds that running and queued requests get to finish after SIGTERM/SIGINT; past that
    /// they end with CANCELLED.
    #[arg(long, env = "QGPT_DRAIN_TIMEOUT_S", default_value_t = 30)]
    drain_timeout_s: u64,
    /// File holding a bearer token that generation calls must send (`authorization: Bearer
    /// <token>`); the environment variable QGPT_AUTH_TOKEN may hold the token itself instead.
    /// Health and reflection stay open.
    #[arg(long, env = "QGPT_AUTH_TOKEN_FILE")]
    auth_token_file: Option<PathBuf>,
    /// PEM certificate chain: serve TLS only (with --tls-key).
    #[arg(long, env = "QGPT_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "QGPT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate: require client certificates that chain to it (mutual TLS).
    #[arg(long, env = "QGPT_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

/// The bearer token from `--auth-token-file` or `QGPT_AUTH_TOKEN` (never a command-line value,
/// which `ps` would show).
fn auth_token(file: Option<&PathBuf>) -> Result<Option<String>, CliError> {
    let token = match file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("--auth-token-file {}: {e}", path.display()))?,
        ),
        None => std::env::var("QGPT_AUTH_TOKEN").ok(),
    };
    match token.map(|t| t.trim().to_owned()) {
        Some(t) if t.is_empty() => Err("the bearer token is empty".into()),
        Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => {
            Err("the bearer token must be printable ASCII without spaces".into())
        }
        other => Ok(other),
    }
}

/// Default prompt tokens per step while others decode, per compute thread. Measured on 2
/// threads (GPT-2 124M Q8_0, 8 streams, a 512-token prompt every second): 8 tokens a step gave
/// an inter-token p99 of 9.9 ms and the long prompts a time to first token of 457 ms (p50);
/// 16 gave 14.0 and 374 ms.
const PREFILL_PER_THREAD: usize = 4;

/// Runs the server until SIGTERM or SIGINT, then drains and returns.
pub fn run(args: Args) -> Result<(), CliError> {
    qgpt::memory::report_sigbus();
    let threads = init_threads(args.threads)?;
    let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
    let config = ServeConfig {
        model: args.model,
        addr: SocketAddr::new(args.host, args.port),
        limits: Limits {
            max_queued: args.max_queued,
            default_max_new_tokens: args.default_max_new_tokens,
            max_stop: args.max_stop,
            max_stop_bytes: args.max_stop_bytes,
            max_stop_token_ids: args.max_stop_token_ids,
            max_logprobs: args.max_logprobs,
            max_request_id_bytes: args.max_request_id_bytes,
            max_detokenize_ids: args.max_detokenize_ids,
        },
        transport: Transport {
            max_message_bytes: args.max_message_bytes,
            keepalive_interval: secs(args.keepalive_interval_s),
            keepalive_timeout: Duration::from_secs(args.keepalive_timeout_s),
            max_connection_age: secs(args.max_connection_age_s),
        },
        drain_timeout: Duration::from_secs(args.drain_timeout_s),
        kv_type: args.kv_type.into(),
        auth_token: auth_token(args.auth_token_file.as_ref())?,
        batching: Batching {
            max_running: args.max_running,
            kv_cache_tokens: args.kv_cache_tokens,
            max_batch_tokens: args.max_batch_tokens,
            max_prefill_while_decoding: args
                .max_prefill_while_decoding
                .unwrap_or(PREFILL_PER_THREAD * threads),
            stream_buffer: args.stream_buffer,
        },
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                client_ca: args.tls_client_ca,
            }),
            _ => None,
        },
        metrics_buckets: args.metrics_buckets,
    };
    if args.metrics_port != 0 && args.metrics_port == args.port {
        return Err(format!(
            "--metrics-port {} is also the gRPC port (--port): choose another, or 0 to turn \
             metrics off",
            args.metrics_port
        )
        .into());
    }
    tracing::info!(
        threads,
        metrics_port = args.metrics_port,
        "compute pool sized"
    );
    // The async threads only move messages; generation runs on the engine thread and the
    // compute pool.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("qgpt-io")
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| format!("listening on {}: {e}", config.addr))?;
        let metrics = match args.metrics_port {
            0 => None,
            port => {
                let at = SocketAddr::new(args.host, port);
                let l = tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(|e| format!("listening on {at} (--metrics-port): {e}"))?;
                Some(l)
            }
        };
        serve_on(listener, metrics, config, shutdown_signal()).await?;
        Ok(())
    })
}

/// Completes at the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown signal received");
}
