//! Projects, pipelines, jobs and agents: the REST documents of `gantry_api::rest`.

use crate::AppState;
use crate::auth::Admin;
use crate::error::ApiResult;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use gantry_api::agent::{RegisterRequest, RegisterResponse};
use gantry_api::rest::{Actor, Agent, Job, Page, Pipeline, PipelineCreate, Project, ProjectCreate};
use gantry_pipeline::trigger::Source;
use gantry_store::db::PageReq;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    page: Option<u32>,
    per_page: Option<u32>,
}

impl PageQuery {
    pub(crate) fn req(&self) -> PageReq {
        PageReq::new(self.page, self.per_page)
    }
}

pub async fn create_project(
    _: Admin,
    State(s): State<AppState>,
    Json(req): Json<ProjectCreate>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.engine.create_project(req).await?),
    ))
}

pub async fn list_projects(
    _: Admin,
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<Project>>> {
    Ok(Json(s.engine.projects(q.req()).await?))
}

pub async fn get_project(
    _: Admin,
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<Json<Project>> {
    let id = s.engine.find_project(&key).await?;
    Ok(Json(s.engine.project(id).await?))
}

pub async fn create_pipeline(
    _: Admin,
    State(s): State<AppState>,
    Path(key): Path<String>,
    Json(req): Json<PipelineCreate>,
) -> ApiResult<(StatusCode, Json<Pipeline>)> {
    let p = s
        .engine
        .create_pipeline(&key, req, Source::Api, "admin")
        .await?;
    Ok((StatusCode::CREATED, Json(p)))
}

pub async fn project_pipelines(
    _: Admin,
    State(s): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<Pipeline>>> {
    let id = s.engine.find_project(&key).await?;
    Ok(Json(s.engine.pipelines(Some(id), q.req()).await?))
}

pub async fn list_pipelines(
    _: Admin,
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<Pipeline>>> {
    Ok(Json(s.engine.pipelines(None, q.req()).await?))
}

pub async fn get_pipeline(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Pipeline>> {
    Ok(Json(s.engine.pipeline(id, true).await?))
}

pub async fn cancel_pipeline(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Pipeline>> {
    Ok(Json(s.engine.cancel_pipeline(id).await?))
}

pub async fn retry_pipeline(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Pipeline>> {
    Ok(Json(s.engine.retry_pipeline(id).await?))
}

pub async fn pipeline_jobs(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<Job>>> {
    Ok(Json(s.engine.jobs(id, q.req()).await?))
}

pub async fn get_job(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Job>> {
    Ok(Json(s.engine.job(id).await?))
}

pub async fn retry_job(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    Ok((StatusCode::CREATED, Json(s.engine.retry_job(id).await?)))
}

pub async fn play_job(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<i64>,
    body: Option<Json<Actor>>,
) -> ApiResult<Json<Job>> {
    let user = body
        .and_then(|b| b.0.user)
        .unwrap_or_else(|| "admin".to_string());
    Ok(Json(s.engine.play_job(id, &user).await?))
}

pub async fn cancel_job(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Job>> {
    Ok(Json(s.engine.cancel_job(id).await?))
}

pub async fn list_agents(
    _: Admin,
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<Agent>>> {
    Ok(Json(s.engine.agents(q.req()).await?))
}

/// Authenticated by the registration token in the body.
pub async fn register_agent(
    State(s): State<AppState>,
    Json(req): Json<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<RegisterResponse>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.engine.register_agent(req).await?),
    ))
}
