//! The project's webhook settings: a new secret.

use crate::AppState;
use crate::auth::Admin;
use crate::error::ApiResult;
use axum::Json;
use axum::extract::{Path, State};
use gantry_api::rest::WebhookSecret;

pub async fn regenerate_secret(
    _: Admin,
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> ApiResult<Json<WebhookSecret>> {
    Ok(Json(s.engine.regenerate_webhook_secret(&project).await?))
}
