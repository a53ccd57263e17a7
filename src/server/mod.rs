//! The gRPC server (`qgpt serve`): `qgpt.v1.TextGeneration`, `grpc.health.v1.Health` and server
//! reflection on one port.
//!
//! Lifecycle: the port opens at once with health NOT_SERVING (generation calls get UNAVAILABLE);
//! the model is mapped, validated and warmed up with one forward step on a blocking thread; then
//! health turns SERVING. When the shutdown signal comes, health turns NOT_SERVING and new
//! requests get UNAVAILABLE; running and queued requests finish within the drain timeout (past
//! it they end with CANCELLED); then the server closes and `serve_on` returns.

mod auth;
mod config;
mod gate;
mod grpc_metrics;
mod info;
mod metrics_http;
pub mod pb;
mod request;
mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic_health::ServingStatus;

pub use config::{Batching, Limits, ServeConfig, TlsFiles, Transport};
pub use request::decode_and_validate;

use crate::engine::{Engine, EngineConfig};
use crate::generate::{generate, GenerateOptions};
use crate::model::LoadedModel;
use crate::sampling::SamplingParams;
use gate::Gate;
use service::Service;

/// qgpt's version and commit, as `qgpt --version` prints them.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("QGPT_GIT_SHA"), ")");

/// How long connections may take to close after the drain before they are dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The fully qualified name of the generation service, as health checks name it.
pub const SERVICE_NAME: &str = "qgpt.v1.TextGeneration";

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("loading the model: {0}")]
    Model(#[from] crate::model::ModelError),
    #[error("warming up the model: {0}")]
    WarmUp(String),
    #[error("{0}")]
    Kernels(String),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("configuration: {0}")]
    Config(String),
}

/// The listener's TLS settings from `files`.
fn tls_config(files: &TlsFiles) -> Result<tonic::transport::ServerTlsConfig, ServeError> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| ServeError::Tls(format!("reading {}: {e}", p.display())))
    };
    let mut tls =
        ServerTlsConfig::new().identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?));
    if let Some(ca) = &files.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(tls)
}

/// Serves gRPC on `listener` (and Prometheus metrics on `metrics`, when given) until `shutdown`
/// completes, then drains and returns.
pub async fn serve_on(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let started = Instant::now();
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| ServeError::WarmUp(format!("reading the listener's address: {e}")))?;
    let engine_gauges = metrics_http::EngineGauges::default();
    let (metrics_stop, metrics_task) = match metrics {
        Some(l) => {
            let handle =
                crate::metrics::install(&config.metrics_buckets).map_err(ServeError::Config)?;
            let at = l
                .local_addr()
                .map_err(|e| ServeError::WarmUp(format!("reading the metrics address: {e}")))?;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(metrics_http::serve(
                l,
                handle,
                engine_gauges.clone(),
                async {
                    let _ = rx.await;
                },
            ));
            tracing::info!(addr = %at, "metrics at http://{at}/metrics");
            (Some(tx), Some(task))
        }
        None => (None, None),
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let gate = Gate::default();
    let draining = Arc::new(AtomicBool::new(false));
    let t = &config.transport;
    let api = pb::text_generation_server::TextGenerationServer::new(gate.clone())
        .max_decoding_message_size(t.max_message_bytes)
        .max_encoding_message_size(t.max_message_bytes);
    let api = tonic::service::interceptor::InterceptedService::new(
        api,
        auth::BearerAuth::new(config.auth_token.as_deref()),
    );
    let mut builder = tonic::transport::Server::builder()
        .layer(grpc_metrics::GrpcMetricsLayer)
        .http2_keepalive_interval(t.keepalive_interval)
        .http2_keepalive_timeout(Some(t.keepalive_timeout));
    if let Some(age) = t.max_connection_age {
        builder = builder.max_connection_age(age);
    }
    if let Some(files) = &config.tls {
        builder = builder.tls_config(tls_config(files)?)?;
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api);
    // No Nagle on accepted connections: every token goes out at once. (With it, the first
    // message of a stream waited about 40 ms for the client's delayed ACK of the headers.)
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(c) = &conn {
            let _ = c.set_nodelay(true);
        }
        conn
    });
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = stop_rx.await;
    }));
    tracing::info!(%addr, "listening (NOT_SERVING until the model is loaded)");

    // Load and warm up off the async threads. A shutdown signal during loading still stops us.
    let mut shutdown = Box::pin(shutdown);
    let cfg = config.clone();
    let load = tokio::task::spawn_blocking(move || load(&cfg));
    let loaded = tokio::select! {
        r = load => Some(r.map_err(|e| ServeError::WarmUp(e.to_string()))??),
        () = shutdown.as_mut() => None,
    };
    let Some((model, isa)) = loaded else {
        let _ = stop_tx.send(());
        server
            .await
            .map_err(|e| ServeError::WarmUp(e.to_string()))??;
        stop_metrics(metrics_stop, metrics_task).await;
        return Ok(());
    };
    let model = Arc::new(model);
    let engine = Engine::start(
        model.clone(),
        engine_config(&config, model.model.config(), model.model.kv_type())?,
    );
    tracing::info!(
        max_running = engine.config.max_running,
        kv_cache_tokens = engine.config.kv_cache_tokens,
        max_batch_tokens = engine.config.max_batch_tokens,
        max_prefill_while_decoding = engine.config.max_prefill_while_decoding,
        max_queued = engine.config.max_queued,
        "engine started"
    );
    let state = engine.state.clone();
    let _ = engine_gauges.set((state.clone(), engine.config.kv_cache_tokens as u64));
    let info = info::model_info(&model, config.model.as_deref(), &isa);
    let name = if info.name.is_empty() {
        &info.file_name
    } else {
        &info.name
    };
    crate::metrics::serving(started.elapsed(), &isa, name, &info.file_type);
    gate.open(Service {
        info,
        engine,
        model,
        limits: config.limits.clone(),
        draining: draining.clone(),
        started,
        counter: AtomicU64::new(0),
    });
    set_health(&health, ServingStatus::Serving).await;
    tracing::info!(
        load_ms = started.elapsed().as_secs_f64() * 1e3,
        threads = rayon::current_num_threads(),
        isa,
        "serving"
    );

    shutdown.await;
    draining.store(true, Ordering::SeqCst);
    set_health(&health, ServingStatus::NotServing).await;
    let busy = || state.queued.load(Ordering::SeqCst) + state.running.load(Ordering::SeqCst);
    tracing::info!(
        in_flight = busy(),
        timeout_s = config.drain_timeout.as_secs_f64(),
        "draining"
    );
    let drain_end = Instant::now() + config.drain_timeout;
    while busy() > 0 && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if busy() > 0 {
        tracing::warn!(in_flight = busy(), "drain timeout: cancelling what is left");
        state.cancel_all.store(true, Ordering::SeqCst);
        // Each running request stops within one forward step.
        while busy() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let _ = stop_tx.send(());
    // The transport now closes each connection gracefully, which waits for the client to take
    // what was sent: a client that stops reading would hold the exit forever. Bounded.
    let mut server = server;
    match tokio::time::timeout(CLOSE_GRACE, &mut server).await {
        Ok(joined) => joined.map_err(|e| ServeError::WarmUp(e.to_string()))??,
        Err(_) => {
            tracing::warn!(
                grace_s = CLOSE_GRACE.as_secs_f64(),
                "connections still open after the drain: no longer waiting for them"
            );
            // Stops the accept loop; the connections' own tasks end with the runtime (the
            // binary exits next).
            server.abort();
        }
    }
    stop_metrics(metrics_stop, metrics_task).await;
    tracing::info!("stopped");
    Ok(())
}

/// Stops the metrics endpoint (after the gRPC server, so the last requests can be scraped
/// until then).
async fn stop_metrics(
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
) {
    if let Some(stop) = stop {
        let _ = stop.send(());
    }
    if let Some(task) = task {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the metrics endpoint failed"),
            Err(e) => tracing::warn!(error = %e, "the metrics endpoint panicked"),
        }
    }
}

/// The engine's limits from the server's settings, checked.
fn engine_config(
    c: &ServeConfig,
    m: &crate::model::ModelConfig,
    kv_type: crate::model::KvType,
) -> Result<EngineConfig, ServeError> {
    let n_ctx = m.n_ctx;
    let b = &c.batching;
    if b.max_running == 0 {
        return Err(ServeError::Config(
            "--max-running must be at least 1".into(),
        ));
    }
    if b.max_batch_tokens < b.max_running {
        return Err(ServeError::Config(format!(
            "--max-batch-tokens ({}) must be at least --max-running ({}): every running \
             request needs one token per step",
            b.max_batch_tokens, b.max_running
        )));
    }
    if b.max_prefill_while_decoding == 0 {
        return Err(ServeError::Config(
            "--max-prefill-while-decoding must be at least 1: prompts would wait for every \
             decoding request to finish"
                .into(),
        ));
    }
    if b.stream_buffer == 0 {
        return Err(ServeError::Config(
            "--stream-buffer must be at least 1".into(),
        ));
    }
    let kv = match b.kv_cache_tokens {
        0 => b.max_running.saturating_mul(n_ctx),
        n if n < 2 => {
            return Err(ServeError::Config(format!(
                "--kv-cache-tokens ({n}) cannot hold a prompt and a generated token"
            )))
        }
        n => n,
    };
    // KV memory is reserved per request, so it grows to at most the budget or what the running
    // requests can hold, whichever is less: refuse at startup what the machine cannot give.
    let per_token = 2 * m.n_layer * m.kv_dim() * kv_type.size();
    let worst = kv.min(b.max_running.saturating_mul(n_ctx)) as u128 * per_token as u128;
    if let Some(limit) = crate::memory::memory_limit() {
        if worst > u128::from(limit) {
            let gib = |b: u128| b as f64 / (1u64 << 30) as f64;
            return Err(ServeError::Config(format!(
                "the KV cache may grow to {:.1} GiB ({} tokens of {} KiB, {}), more than the \
                 {:.1} GiB of memory this process may use: lower --kv-cache-tokens or \
                 --max-running",
                gib(worst),
                kv.min(b.max_running.saturating_mul(n_ctx)),
                per_token / 1024,
                kv_type.name(),
                gib(u128::from(limit))
            )));
        }
    }
    Ok(EngineConfig {
        max_queued: c.limits.max_queued,
        max_running: b.max_running,
        kv_cache_tokens: kv,
        max_batch_tokens: b.max_batch_tokens,
        max_prefill_while_decoding: b.max_prefill_while_decoding,
        default_max_new_tokens: c.limits.default_max_new_tokens,
        stream_buffer: b.stream_buffer,
    })
}

/// Sets the status of the whole server and of the generation service.
async fn set_health(h: &tonic_health::server::HealthReporter, status: ServingStatus) {
    h.set_service_status("", status).await;
    h.set_service_status(SERVICE_NAME, status).await;
}

/// Maps, validates and warms up the model (one forward step); returns it with the ISA in use.
fn load(cfg: &ServeConfig) -> Result<(LoadedModel, String), ServeError> {
    let isa = crate::kernels::init()
        .map_err(|e| ServeError::Kernels(e.to_string()))?
        .isa
        .to_string();
    let mut m = crate::demo::load_or_demo(cfg.model.as_deref())?;
    m.model.set_kv_type(cfg.kv_type);
    let first = m.tokenizer.bos().or(m.tokenizer.eos()).unwrap_or(0);
    generate(
        &m.model,
        &m.tokenizer,
        &[first],
        &GenerateOptions::new(1, SamplingParams::greedy()),
        |_| std::ops::ControlFlow::Continue(()),
    )
    .map_err(|e| ServeError::WarmUp(e.to_string()))?;
    // After the warm-up step, which touched every weight: how the kernel backs the map.
    let file = m.model.file();
    let mib = |b: u64| (b as f64 / (1u64 << 20) as f64).round() as u64;
    tracing::info!(
        path = %cfg.model.as_deref().map_or(crate::demo::NAME.into(), |p| p.display().to_string()),
        mapped_mib = mib(file.len()),
        huge_page_mib = file.huge_page_bytes().map_or(0, mib),
        "model mapped (huge_page_mib: the part on 2 MiB pages, which decode reads faster)"
    );
    Ok((m, isa))
}
