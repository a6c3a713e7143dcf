//! Webhooks from GitLab, GitHub, Gitea and Forgejo, authenticated by the forge's signature
//! with the project's webhook secret (no token), and the project's webhook settings: a new
//! secret, the deliveries received.

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiResult, HttpError};
use crate::routes::api::PageQuery;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use futures_util::StreamExt;
use gantry_api::rest::{HookReply, Page, WebhookDelivery, WebhookSecret};
use gantry_engine::engine::{HookBody, HookRequest};
use gantry_engine::forge::{Headers, MAX_BODY};

/// `POST /api/v1/hooks/{forge}/{project}`. The body is read up to [`MAX_BODY`]: a longer
/// one (by its `Content-Length`, or once that much has arrived) is refused with 413 without
/// being read to the end.
pub async fn receive(
    State(s): State<AppState>,
    Path((forge, project)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<HookReply>)> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let read = match announced {
        Some(n) if n > MAX_BODY => Err(n),
        _ => read_limited(body, announced.unwrap_or(0)).await?,
    };
    let body = match &read {
        Ok(b) => HookBody::Complete(b),
        Err(size) => HookBody::TooLarge { size: *size },
    };
    let text: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    let reply = s
        .engine
        .receive_webhook(HookRequest {
            forge: &forge,
            project: &project,
            headers: text.into_iter().collect::<Headers>(),
            body,
        })
        .await?;
    let status = if reply.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(reply)))
}

/// Reads a body of at most [`MAX_BODY`] bytes; `Err(size)` as soon as more than that arrived.
async fn read_limited(body: Body, announced: usize) -> ApiResult<Result<Vec<u8>, usize>> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::with_capacity(announced.min(MAX_BODY));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            HttpError::bad_request(format!("the request body could not be read: {e}"))
        })?;
        if buf.len() + chunk.len() > MAX_BODY {
            return Ok(Err(buf.len() + chunk.len()));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Ok(buf))
}

pub async fn regenerate_secret(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
) -> ApiResult<Json<WebhookSecret>> {
    let secret = s.engine.regenerate_webhook_secret(&project).await?;
    let id = s.engine.find_project(&project).await.ok();
    s.engine
        .audit(
            &caller,
            "webhook_secret.replace",
            id,
            &format!("project {project}"),
            None,
        )
        .await;
    Ok(Json(secret))
}

pub async fn deliveries(
    State(s): State<AppState>,
    Path(project): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<WebhookDelivery>>> {
    Ok(Json(s.engine.webhook_deliveries(&project, q.req()).await?))
}
