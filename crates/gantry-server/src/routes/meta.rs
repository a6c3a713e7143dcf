//! Health, metrics and the API's description.

use crate::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn openapi() -> impl IntoResponse {
    Json(super::openapi())
}

/// Prometheus text format. Jobs by state are counted in the database at scrape time.
pub async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    match s.engine.db().job_counts().await {
        Ok(counts) => {
            for st in gantry_api::JobStatus::ALL {
                let n = counts
                    .iter()
                    .find(|(k, _)| k == st.as_str())
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("gantry_jobs", "state" => st.as_str()).set(n as f64);
            }
        }
        Err(e) => tracing::warn!("metrics: {e}"),
    }
    metrics::gauge!("gantry_queue_length").set(s.engine.queue_len() as f64);
    metrics::gauge!("gantry_agents_online").set(s.engine.agents_online() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}
