//! The Prometheus endpoint: `GET /metrics` on its own port, in the text exposition format.
//! It answers from the start (build info and load time appear once the model serves); the
//! engine's gauges are read at each scrape, so they are exact when scraped.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::engine::EngineState;

/// How often histogram samples are folded into their buckets when nobody scrapes (bounds the
/// memory they hold).
const UPKEEP: Duration = Duration::from_secs(5);

/// The engine's counters and its KV budget, once it runs.
pub(super) type EngineGauges = Arc<OnceLock<(Arc<EngineState>, u64)>>;

/// Serves `/metrics` on `listener` until `stop` completes.
pub(super) async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    engine: EngineGauges,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let upkeep = {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        })
    };
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let (handle, engine) = (handle.clone(), engine.clone());
            async move { render(&handle, &engine) }
        }),
    );
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await;
    upkeep.abort();
    served
}

/// The exposition, with the engine's gauges read now.
fn render(handle: &PrometheusHandle, engine: &EngineGauges) -> impl IntoResponse {
    use std::sync::atomic::Ordering::SeqCst;
    if let Some((s, kv_total)) = engine.get() {
        crate::metrics::load(
            s.running.load(SeqCst),
            s.queued.load(SeqCst),
            s.kv_tokens_used.load(SeqCst),
            *kv_total,
        );
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}
