//! A project's cron schedules (list, create, change, delete, run now) and its polling
//! settings: the triggers that start pipelines without an event from outside.

use crate::AppState;
use crate::error::{ApiResult, HttpError};
use crate::routes::api::PageQuery;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use gantry_api::rest::{
    Page, Pipeline, Polling, PollingUpdate, Schedule, ScheduleCreate, ScheduleUpdate,
};
use serde_json::{Value, json};

/// A JSON body, or a 400 that says what is wrong with it and what the body should be.
fn body<T>(r: Result<Json<T>, JsonRejection>, what: &str) -> ApiResult<T> {
    r.map(|Json(t)| t).map_err(|e| {
        HttpError::bad_request(format!(
            "the request body is not a valid {what} ({}): see its schema in GET /api/v1/openapi.json",
            e.body_text()
        ))
    })
}

pub async fn list(
    State(s): State<AppState>,
    Path(project): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<Schedule>>> {
    Ok(Json(s.engine.schedules(&project, q.req()).await?))
}

pub async fn create(
    State(s): State<AppState>,
    Path(project): Path<String>,
    req: Result<Json<ScheduleCreate>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Schedule>)> {
    let req = body(req, "ScheduleCreate")?;
    Ok((
        StatusCode::CREATED,
        Json(s.engine.create_schedule(&project, req).await?),
    ))
}

pub async fn get(
    State(s): State<AppState>,
    Path((project, id)): Path<(String, i64)>,
) -> ApiResult<Json<Schedule>> {
    Ok(Json(s.engine.schedule(&project, id).await?))
}

pub async fn update(
    State(s): State<AppState>,
    Path((project, id)): Path<(String, i64)>,
    req: Result<Json<ScheduleUpdate>, JsonRejection>,
) -> ApiResult<Json<Schedule>> {
    let req = body(req, "ScheduleUpdate")?;
    Ok(Json(s.engine.update_schedule(&project, id, req).await?))
}

pub async fn delete(
    State(s): State<AppState>,
    Path((project, id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    s.engine.delete_schedule(&project, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn play(
    State(s): State<AppState>,
    Path((project, id)): Path<(String, i64)>,
) -> ApiResult<(StatusCode, Json<Pipeline>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.engine.play_schedule(&project, id).await?),
    ))
}

pub async fn get_polling(
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> ApiResult<Json<Polling>> {
    Ok(Json(s.engine.polling(&project).await?))
}

pub async fn set_polling(
    State(s): State<AppState>,
    Path(project): Path<String>,
    req: Result<Json<PollingUpdate>, JsonRejection>,
) -> ApiResult<Json<Polling>> {
    let req = body(req, "PollingUpdate")?;
    Ok(Json(
        s.engine.set_polling(&project, req.interval_secs).await?,
    ))
}

/// The OpenAPI schemas of the bodies above.
pub fn schemas() -> Value {
    let vars = json!({"type": "array", "items": {"type": "object", "required": ["key", "value"],
        "properties": {"key": {"type": "string"}, "value": {"type": "string"}}}});
    json!({
        "ScheduleCreate": {"type": "object", "required": ["description", "cron"],
            "properties": {"description": {"type": "string"},
                "cron": {"type": "string", "description": "5 fields: minute hour day-of-month month day-of-week"},
                "time_zone": {"type": "string", "description": "IANA name, UTC when absent"},
                "ref": {"type": "string"}, "variables": vars, "active": {"type": "boolean"}}},
        "ScheduleUpdate": {"type": "object",
            "properties": {"description": {"type": "string"}, "cron": {"type": "string"},
                "time_zone": {"type": "string"}, "ref": {"type": "string"}, "variables": vars,
                "active": {"type": "boolean"}}},
        "PollingUpdate": {"type": "object",
            "properties": {"interval_secs": {"type": ["integer", "null"], "minimum": 1}}},
    })
}
