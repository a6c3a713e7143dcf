//! A project's registry replication rules (list, make, change, delete, run now, runs). The
//! password is write-only: bodies are parsed here rather than by axum's `Json`, whose
//! rejections quote what they could not read; ours say where, never what.

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiResult, HttpError};
use crate::routes::api::PageQuery;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use gantry_api::rest::{Page, Replication, ReplicationRun, ReplicationWrite};

/// The body as a [`ReplicationWrite`]; the error names the line and column, not the text.
fn body(bytes: &Bytes) -> ApiResult<ReplicationWrite> {
    serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "a field of the wrong type or an unknown field",
            _ => "not JSON",
        };
        HttpError::bad_request(format!(
            "the body is not a replication rule ({what}, at line {} column {}): send JSON \
             {{\"name\": \"…\", \"url\": \"https://registry.example.com\", \"namespace\": \"…\", \
             \"username\": \"…\", \"password\": \"…\", \"repositories\": \"**\", \"tags\": \"*\", \
             \"on_push\": bool, \"schedule\": \"0 3 * * *\", \"time_zone\": \"UTC\", \
             \"enabled\": bool, \"insecure\": bool}}",
            e.line(),
            e.column()
        ))
    })
}

pub async fn list(
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<Replication>>> {
    Ok(Json(s.engine.replications(&project).await?))
}

pub async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
    bytes: Bytes,
) -> ApiResult<(StatusCode, Json<Replication>)> {
    let r = s
        .engine
        .create_replication(&project, body(&bytes)?, &caller)
        .await?;
    Ok((StatusCode::CREATED, Json(r)))
}

pub async fn get(
    State(s): State<AppState>,
    Path((project, id)): Path<(String, i64)>,
) -> ApiResult<Json<Replication>> {
    Ok(Json(s.engine.replication(&project, id).await?))
}

pub async fn update(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, i64)>,
    bytes: Bytes,
) -> ApiResult<Json<Replication>> {
    let r = s
        .engine
        .update_replication(&project, id, body(&bytes)?, &caller)
        .await?;
    Ok(Json(r))
}

pub async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    s.engine.delete_replication(&project, id, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queues a run of every matching tag now: 202 with the run (the one already waiting, if
/// any); `GET …/runs` follows it.
pub async fn run(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, i64)>,
) -> ApiResult<(StatusCode, Json<ReplicationRun>)> {
    let r = s.engine.run_replication(&project, id, &caller).await?;
    Ok((StatusCode::ACCEPTED, Json(r)))
}

pub async fn runs(
    State(s): State<AppState>,
    Path((project, id)): Path<(String, i64)>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<ReplicationRun>>> {
    Ok(Json(
        s.engine.replication_runs(&project, id, q.req()).await?,
    ))
}

/// The OpenAPI schemas of the bodies these routes take.
pub fn schemas() -> serde_json::Value {
    serde_json::json!({
        "ReplicationWrite": {"type": "object",
            "description": "POST: name and url are needed. PUT: absent fields stay; \"password\": \"\" removes it; \"schedule\": \"\" removes it.",
            "properties": {
                "name": {"type": "string"},
                "url": {"type": "string", "description": "https://HOST[:PORT] (a bare HOST[:PORT] is https) or http://HOST[:PORT]"},
                "namespace": {"type": "string", "description": "put in place of the project's path at the destination; empty: names kept"},
                "username": {"type": "string"},
                "password": {"type": "string", "writeOnly": true},
                "repositories": {"type": "string", "description": "a glob on names below the project's path (** crosses /) [default: **]"},
                "tags": {"type": "string", "description": "a glob on tags [default: *]"},
                "on_push": {"type": "boolean"},
                "schedule": {"type": "string", "description": "a 5-field cron expression"},
                "time_zone": {"type": "string", "description": "IANA name [default: UTC]"},
                "enabled": {"type": "boolean"},
                "insecure": {"type": "boolean", "description": "accept any TLS certificate from the destination"}}},
    })
}
