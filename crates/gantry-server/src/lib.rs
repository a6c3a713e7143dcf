//! # gantry-server
//!
//! The server's HTTP face, on axum. One table, [`routes::ROUTES`], lists every endpoint with
//! its method, path, who may call it and what it does; the router and the OpenAPI document
//! (`GET /api/v1/openapi.json`) are both built from it, so they cannot drift apart.
//!
//! - [`routes`]: the table and the handlers: REST under `/api/v1` ([`routes::api`]), the
//!   agent's WebSocket ([`routes::agent_ws`]), logs whole, by range and live over SSE
//!   ([`routes::logs`]), artifacts, caches and sources ([`routes::files`]), `/metrics`.
//! - [`ui`]: the web UI, server-rendered pages with live parts over SSE, on the same table.
//! - [`auth`]: bearer tokens and sessions to callers; [`error`]: errors as JSON with a code.
//! - [`registry`]: the OCI registry (`gantry_registry`) under `/v2/`, beside the table, with
//!   the engine's accounts as its authority.

pub mod auth;
pub mod error;
pub mod registry;
pub mod routes;
pub mod ui;

use gantry_engine::Engine;
use std::sync::Arc;

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: Engine,
    pub metrics: Arc<metrics_exporter_prometheus::PrometheusHandle>,
    /// The OCI registry under `/v2/`.
    pub registry: registry::ServerRegistry,
    /// `gantry registry`: only the registry and the routes that manage it.
    pub registry_only: bool,
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let app = routes::router(state);
    // Without TCP_NODELAY a pushed job can wait for the agent's delayed ACK of the previous
    // small message (~40 ms on Linux): every byte of this protocol is latency-bound.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("TCP_NODELAY: {e}");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The process-wide Prometheus recorder (installed once).
pub fn metrics_handle() -> Arc<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Arc<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("gantry_job_pickup_seconds".into()),
                    &[
                        0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
                    ],
                )
                .expect("buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed already (tests): then ours stays unused.
            let _ = metrics::set_global_recorder(recorder);
            Arc::new(handle)
        })
        .clone()
}
