//! The job page (the log live, its metadata, its artifacts), the job actions, and the
//! manual job's confirmation: playing a manual job is the approval of what it does (a
//! deployment to its environment), so the page names both, and who played it is recorded
//! (on the job and in the audit log).

use super::pipelines::{internal, slim};
use super::{
    Chrome, Error, PageResult, Viewer, at_least, html, job_badge, ran, see_other, when, when_opt,
};
use crate::AppState;
use crate::error::HttpError;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use gantry_api::{JobStatus, Role};
use serde::Deserialize;
use std::io::Read;

#[derive(Debug, Template)]
#[template(path = "job_head.html")]
pub struct HeadTpl {
    pub id: i64,
    pub name: String,
    pub status: String,
    pub badge: String,
    pub stage: String,
    pub pipeline_id: i64,
    pub facts: Vec<(&'static str, String)>,
    pub artifacts: bool,
    /// It has `artifacts:reports:junit`.
    pub junit: bool,
    pub environment: Option<String>,
    pub csrf: String,
    pub can_play: bool,
    pub can_retry: bool,
    pub can_cancel: bool,
    pub live: bool,
}

/// The head of a job page (state, actions, metadata), rendered: also what the live stream
/// sends when the job changes.
pub async fn render_head(s: &AppState, id: i64, act: bool, csrf: &str) -> Result<String, Error> {
    let head = head(s, id, act, csrf).await?;
    head.render().map_err(internal)
}

async fn head(s: &AppState, id: i64, act: bool, csrf: &str) -> Result<HeadTpl, Error> {
    let j = s.engine.job_row(id).await?;
    let def = slim(&j.definition);
    let agent = match j.agent_id {
        Some(a) => s.engine.db().agent(a).await?,
        None => None,
    };
    let mut facts: Vec<(&'static str, String)> = Vec::new();
    facts.push(("Stage", j.stage.clone()));
    facts.push(("Attempt", j.attempt.to_string()));
    if let Some(a) = &agent {
        facts.push(("Agent", format!("{} (#{})", a.name, a.id)));
        facts.push(("Executor", a.executor.clone()));
    }
    if let Some(i) = &def.image {
        facts.push(("Image", i.name.clone()));
    }
    if !j.tags.is_empty() {
        facts.push(("Tags", j.tags.join(", ")));
    }
    if let Some(e) = &def.environment {
        facts.push(("Environment", e.name.clone()));
    }
    facts.push(("Created", when(j.created_at)));
    if j.queued_at.is_some() {
        facts.push(("Queued", when_opt(j.queued_at)));
    }
    if j.started_at.is_some() {
        facts.push(("Started", when_opt(j.started_at)));
        facts.push(("Duration", ran(j.started_at, j.finished_at)));
    }
    if j.finished_at.is_some() {
        facts.push(("Finished", when_opt(j.finished_at)));
    }
    if let Some(r) = j.failure_reason {
        facts.push(("Failure", r.as_str().to_string()));
    }
    if let Some(c) = j.exit_code {
        facts.push(("Exit code", c.to_string()));
    }
    if j.allow_failure {
        facts.push(("Allowed to fail", "yes".into()));
    }
    if let Some(p) = &j.played_by {
        facts.push(("Played by", p.clone()));
    }
    if j.status == JobStatus::Pending
        && let Ok(dto) = s.engine.job(id).await
        && let Some(w) = dto.waiting_reason
    {
        facts.push(("Waiting", w));
    }
    Ok(HeadTpl {
        id,
        name: j.name.clone(),
        status: j.status.as_str().to_string(),
        badge: job_badge(j.status),
        stage: j.stage.clone(),
        pipeline_id: j.pipeline_id,
        facts,
        artifacts: j.has_artifacts,
        junit: !super::junit::junit_paths(&j.definition).is_empty(),
        environment: def.environment.map(|e| e.name),
        csrf: csrf.to_string(),
        can_play: act && j.status == JobStatus::Manual,
        can_retry: act && j.status.is_finished() && def.child.is_none(),
        can_cancel: act && (j.status.is_active() || j.status == JobStatus::Manual),
        live: !j.status.is_finished(),
    })
}

#[derive(Debug, Template)]
#[template(path = "job.html")]
struct JobPage {
    chrome: Chrome,
    title: String,
    project: gantry_api::rest::Project,
    id: i64,
    pipeline_id: i64,
    head: String,
    log_size: u64,
    live: bool,
}

pub async fn show(State(s): State<AppState>, v: Viewer, Path(id): Path<i64>) -> PageResult {
    let project_id = s.engine.project_of_job(id).await?;
    let role = v.role(&s, project_id).await?;
    let h = head(&s, id, at_least(role, Role::Developer), &v.chrome.csrf).await?;
    let project = s.engine.project(project_id).await?;
    Ok(html(&JobPage {
        chrome: v.chrome,
        title: format!("{} · job #{id} · {}", h.name, project.path),
        project,
        id,
        pipeline_id: h.pipeline_id,
        log_size: s.engine.log_len(id),
        live: h.live,
        head: h.render().map_err(internal)?,
    }))
}

#[derive(Debug, Deserialize)]
pub struct Back {
    #[serde(default)]
    back: Option<String>,
}

pub async fn retry(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    Query(b): Query<Back>,
) -> PageResult {
    let new = s.engine.retry_job(id).await?;
    Ok(match b.back.as_deref() {
        Some("pipeline") => see_other(&format!("/pipelines/{}", new.pipeline_id)),
        _ => see_other(&format!("/jobs/{}", new.id)),
    })
}

pub async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    Query(b): Query<Back>,
) -> PageResult {
    let job = s.engine.cancel_job(id).await?;
    Ok(match b.back.as_deref() {
        Some("pipeline") => see_other(&format!("/pipelines/{}", job.pipeline_id)),
        _ => see_other(&format!("/jobs/{id}")),
    })
}

#[derive(Debug, Template)]
#[template(path = "play.html")]
struct PlayPage {
    chrome: Chrome,
    title: String,
    id: i64,
    name: String,
    stage: String,
    environment: Option<String>,
    environment_url: Option<String>,
    git_ref: String,
    pipeline_id: i64,
}

pub async fn play_page(State(s): State<AppState>, v: Viewer, Path(id): Path<i64>) -> PageResult {
    let j = s.engine.job_row(id).await?;
    if j.status != JobStatus::Manual {
        return Err(Error(HttpError::new(
            axum::http::StatusCode::CONFLICT,
            "conflict",
            format!(
                "job '{}' is {}, not waiting to be played",
                j.name,
                j.status.as_str()
            ),
        )));
    }
    let p = s.engine.db().pipeline(j.pipeline_id).await?;
    let def = slim(&j.definition);
    Ok(html(&PlayPage {
        chrome: v.chrome,
        title: format!("Play {}", j.name),
        id,
        name: j.name,
        stage: j.stage,
        environment_url: def.environment.as_ref().and_then(|e| e.url.clone()),
        environment: def.environment.map(|e| e.name),
        git_ref: p.map(|p| p.git_ref).unwrap_or_default(),
        pipeline_id: j.pipeline_id,
    }))
}

pub async fn play(State(s): State<AppState>, v: Viewer, Path(id): Path<i64>) -> PageResult {
    let user = v.name();
    let job = s.engine.play_job(id, &user).await?;
    let project = s.engine.project_of_job(id).await.ok();
    let env = slim(&s.engine.job_row(id).await?.definition)
        .environment
        .map(|e| format!(" to {}", e.name))
        .unwrap_or_default();
    s.engine
        .audit(
            &v.caller,
            "job.play",
            project,
            &format!("job {id} ({}){env}", job.name),
            None,
        )
        .await;
    Ok(see_other(&format!("/pipelines/{}", job.pipeline_id)))
}

// ---- artifacts -----------------------------------------------------------------------------

/// The most entries an artifacts listing shows.
const LISTED: usize = 5000;
/// The largest single file served from an archive (bigger ones: download the archive).
const FILE_LIMIT: u64 = 64 << 20;

#[derive(Debug, Template)]
#[template(path = "artifacts.html")]
struct ArtifactsPage {
    chrome: Chrome,
    title: String,
    id: i64,
    name: String,
    pipeline_id: i64,
    files: Vec<(String, String, bool)>,
    more: bool,
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

pub async fn artifacts(State(s): State<AppState>, v: Viewer, Path(id): Path<i64>) -> PageResult {
    let j = s.engine.job_row(id).await?;
    if !j.has_artifacts {
        return Err(Error(HttpError::not_found(format!(
            "job {id} has no artifacts"
        ))));
    }
    let blobs = s.engine.blobs().clone();
    let (files, more) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let r = blobs
            .open(&format!("artifacts/{id}.tar"))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut a = tar::Archive::new(r);
        let mut files = Vec::new();
        let mut more = false;
        for e in a.entries()? {
            let e = e?;
            if files.len() == LISTED {
                more = true;
                break;
            }
            let path = e.path()?.to_string_lossy().into_owned();
            let dir = e.header().entry_type().is_dir();
            files.push((path, human(e.size()), dir));
        }
        Ok((files, more))
    })
    .await
    .map_err(|e| HttpError::bad_request(e.to_string()))?
    .map_err(|e| HttpError::bad_request(format!("the artifacts archive: {e}")))?;
    Ok(html(&ArtifactsPage {
        chrome: v.chrome,
        title: format!("Artifacts of {}", j.name),
        id,
        name: j.name,
        pipeline_id: j.pipeline_id,
        files,
        more,
    }))
}

#[derive(Debug, Deserialize)]
pub struct FileQuery {
    path: String,
}

pub async fn artifact_file(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<FileQuery>,
) -> PageResult {
    let blobs = s.engine.blobs().clone();
    let want = q.path.clone();
    let found = tokio::task::spawn_blocking(move || -> std::io::Result<Option<Vec<u8>>> {
        let r = blobs
            .open(&format!("artifacts/{id}.tar"))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut a = tar::Archive::new(r);
        for e in a.entries()? {
            let mut e = e?;
            if e.path()?.to_string_lossy() == want && e.header().entry_type().is_file() {
                if e.size() > FILE_LIMIT {
                    return Err(std::io::Error::other(
                        "this file is too large to open alone: download the archive",
                    ));
                }
                let mut out = Vec::with_capacity(e.size() as usize);
                e.read_to_end(&mut out)?;
                return Ok(Some(out));
            }
        }
        Ok(None)
    })
    .await
    .map_err(|e| HttpError::bad_request(e.to_string()))?
    .map_err(|e| HttpError::bad_request(format!("the artifacts archive: {e}")))?;
    let Some(bytes) = found else {
        return Err(Error(HttpError::not_found(format!(
            "no file '{}' in the artifacts of job {id}",
            q.path
        ))));
    };
    let name = q.path.rsplit('/').next().unwrap_or("file").replace('"', "");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

// ---- line numbers of a large log -------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct LinesQuery {
    offset: u64,
}

/// How many lines a job's log has before byte `offset`: the log viewer, which shows the end
/// of a large log, numbers its lines with it. Read on a blocking thread, a piece at a time
/// (memory stays bounded; a 100 MiB log is read once).
pub async fn lines_before(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<LinesQuery>,
) -> PageResult {
    s.engine.job_row(id).await?;
    let offset = q.offset.min(s.engine.log_len(id));
    let logs = s.engine.logs().clone();
    let lines = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let mut r = logs
            .read(id, 0, Some(offset))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let got = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            n += buf[..got].iter().filter(|&&b| b == b'\n').count() as u64;
        }
        Ok(n)
    })
    .await
    .map_err(|e| HttpError::bad_request(e.to_string()))?
    .map_err(|e| HttpError::bad_request(format!("the log: {e}")))?;
    Ok(axum::Json(serde_json::json!({"offset": offset, "lines": lines})).into_response())
}
