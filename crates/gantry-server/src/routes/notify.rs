//! A project's commit statuses and notifications: its forge (the token write-only), its
//! notification channels (a webhook's URL write-only) and its outbox, what was sent and how.

use crate::AppState;
use crate::error::{ApiResult, HttpError};
use crate::routes::api::PageQuery;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use gantry_api::rest::{Forge, ForgeSettings, Notification, NotificationCreate, OutboxEntry, Page};

/// A JSON body, or 400 saying what is wrong with it.
fn body<T>(b: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> ApiResult<T> {
    b.map(|Json(t)| t).map_err(|e| {
        HttpError::bad_request(format!(
            "the body is not what this endpoint takes: {}",
            e.body_text()
        ))
    })
}

pub async fn put_forge(
    State(s): State<AppState>,
    Path(project): Path<String>,
    b: Result<Json<ForgeSettings>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Forge>> {
    Ok(Json(s.engine.set_forge(&project, body(b)?).await?))
}

pub async fn get_forge(
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> ApiResult<Json<Forge>> {
    Ok(Json(s.engine.forge(&project).await?))
}

pub async fn delete_forge(
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> ApiResult<StatusCode> {
    s.engine.delete_forge(&project).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_notifications(
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<Notification>>> {
    Ok(Json(s.engine.notifications(&project).await?))
}

pub async fn add_notification(
    State(s): State<AppState>,
    Path(project): Path<String>,
    b: Result<Json<NotificationCreate>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Notification>)> {
    let n = s.engine.add_notification(&project, body(b)?).await?;
    Ok((StatusCode::CREATED, Json(n)))
}

pub async fn delete_notification(
    State(s): State<AppState>,
    Path((project, id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    s.engine.delete_notification(&project, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn outbox(
    State(s): State<AppState>,
    Path(project): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<OutboxEntry>>> {
    Ok(Json(s.engine.outbox(&project, q.req()).await?))
}
