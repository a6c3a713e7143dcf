//! Projects, pipelines, jobs and agents: the REST documents of `gantry_api::rest`.

use crate::AppState;
use crate::auth::Auth;
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

/// Any user may register a project, and becomes its owner.
pub async fn create_project(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Json(req): Json<ProjectCreate>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.engine.create_project_as(req, &caller).await?),
    ))
}

/// The projects the caller is a member of (all of them for administrators).
pub async fn list_projects(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<Project>>> {
    Ok(Json(s.engine.projects_for(&caller, q.req()).await?))
}

pub async fn get_project(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<Json<Project>> {
    let id = s.engine.find_project(&key).await?;
    Ok(Json(s.engine.project(id).await?))
}

pub async fn create_pipeline(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(key): Path<String>,
    Json(req): Json<PipelineCreate>,
) -> ApiResult<(StatusCode, Json<Pipeline>)> {
    let p = s
        .engine
        .create_pipeline(&key, req, Source::Api, &user_name(&caller))
        .await?;
    Ok((StatusCode::CREATED, Json(p)))
}

pub async fn project_pipelines(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<Pipeline>>> {
    let id = s.engine.find_project(&key).await?;
    Ok(Json(s.engine.pipelines(Some(id), q.req()).await?))
}

pub async fn list_pipelines(
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<Pipeline>>> {
    Ok(Json(s.engine.pipelines(None, q.req()).await?))
}

pub async fn get_pipeline(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Pipeline>> {
    Ok(Json(s.engine.pipeline(id, true).await?))
}

pub async fn cancel_pipeline(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Pipeline>> {
    Ok(Json(s.engine.cancel_pipeline(id).await?))
}

pub async fn retry_pipeline(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Pipeline>> {
    Ok(Json(s.engine.retry_pipeline(id).await?))
}

pub async fn pipeline_jobs(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<Job>>> {
    Ok(Json(s.engine.jobs(id, q.req()).await?))
}

pub async fn get_job(State(s): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Job>> {
    Ok(Json(s.engine.job(id).await?))
}

pub async fn retry_job(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    Ok((StatusCode::CREATED, Json(s.engine.retry_job(id).await?)))
}

/// The administrator's token may say whom it plays for (`{"user": …}`); a user plays as
/// themselves.
pub async fn play_job(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<i64>,
    body: Option<Json<Actor>>,
) -> ApiResult<Json<Job>> {
    let user = match (&caller, body.and_then(|b| b.0.user)) {
        (gantry_engine::Caller::Admin, Some(named)) => named,
        _ => user_name(&caller),
    };
    let job = s.engine.play_job(id, &user).await?;
    let project = s.engine.project_of_job(id).await.ok();
    s.engine
        .audit(
            &caller,
            "job.play",
            project,
            &format!("job {id} ({})", job.name),
            None,
        )
        .await;
    Ok(Json(job))
}

/// Who a pipeline or a played job is for: the user name; `admin` for the administrator's
/// token.
fn user_name(caller: &gantry_engine::Caller) -> String {
    match caller {
        gantry_engine::Caller::User(u) => u.username.clone(),
        _ => "admin".to_string(),
    }
}

pub async fn cancel_job(State(s): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Job>> {
    Ok(Json(s.engine.cancel_job(id).await?))
}

pub async fn list_agents(
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<Agent>>> {
    Ok(Json(s.engine.agents(q.req()).await?))
}

/// Revokes an agent's token (administrators).
pub async fn revoke_agent(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    s.engine.revoke_agent(id, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
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
