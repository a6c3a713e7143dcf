//! Pipelines: a project's list (filtered by ref, status and source, paginated, live),
//! running one for a ref with variables, the pipeline graph (a column per stage, a box per
//! job, lines for `needs`, child pipelines; live) and the pipeline's actions.

use super::projects::PER_PAGE;
use super::{
    Chrome, Error, PageResult, Pager, Viewer, at_least, badge, html, icon, ran, see_other, when,
};
use crate::AppState;
use crate::error::HttpError;
use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use gantry_api::rest::{KeyValue, PipelineCreate};
use gantry_api::{JobStatus, PipelineStatus, Role};
use gantry_pipeline::trigger::Source;
use gantry_store::db::ui::{GraphJob, PipelineFilter};
use gantry_store::db::{PageReq, PipelineRow};
use serde::Deserialize;
use std::collections::HashMap;

/// A pipeline as lists show it.
#[derive(Debug, Clone)]
pub struct PipelineView {
    pub id: i64,
    pub project_id: i64,
    pub status: String,
    pub badge: String,
    pub git_ref: String,
    pub sha: String,
    pub title: String,
    pub user: String,
    pub source: String,
    pub created: String,
    pub duration: String,
    pub child: bool,
}

#[derive(Debug, Default, Deserialize)]
struct SlimTrigger {
    #[serde(default)]
    user: SlimUser,
    #[serde(default)]
    commit: SlimCommit,
}

#[derive(Debug, Default, Deserialize)]
struct SlimUser {
    #[serde(default)]
    login: String,
}

#[derive(Debug, Default, Deserialize)]
struct SlimCommit {
    #[serde(default)]
    message: String,
}

pub fn pipeline_view(p: &PipelineRow) -> PipelineView {
    let t: SlimTrigger = serde_json::from_str(&p.trigger_json).unwrap_or_default();
    PipelineView {
        id: p.id,
        project_id: p.project_id,
        status: p.status.as_str().to_string(),
        badge: badge(p.status.as_str()),
        git_ref: p.git_ref.clone(),
        sha: p.sha.chars().take(8).collect(),
        title: t.commit.message.lines().next().unwrap_or("").to_string(),
        user: t.user.login,
        source: p.source.clone(),
        created: when(p.created_at),
        duration: ran(p.started_at, p.finished_at),
        child: p.parent_job_id.is_some(),
    }
}

pub fn pipeline_views(rows: &[PipelineRow]) -> Vec<PipelineView> {
    rows.iter().map(pipeline_view).collect()
}

// ---- the list ------------------------------------------------------------------------------

#[derive(Debug, Template)]
#[template(path = "pipeline_row.html")]
pub struct RowTpl<'a> {
    pub p: &'a PipelineView,
}

#[derive(Debug, Template)]
#[template(path = "pipelines.html")]
struct ListPage {
    chrome: Chrome,
    title: String,
    project: gantry_api::rest::Project,
    rows: Vec<String>,
    ids: String,
    f: ListQuery,
    statuses: Vec<&'static str>,
    sources: Vec<&'static str>,
    pager: Pager,
    developer: bool,
    stream: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default, rename = "ref")]
    pub git_ref: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub page: Option<u32>,
}

impl ListQuery {
    pub fn filter(&self) -> PipelineFilter {
        let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
        PipelineFilter {
            git_ref: some(&self.git_ref),
            status: some(&self.status),
            source: some(&self.source),
        }
    }
}

pub async fn list(
    State(s): State<AppState>,
    v: Viewer,
    Path(key): Path<String>,
    Query(q): Query<ListQuery>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let project = s.engine.project(id).await?;
    let role = v.role(&s, id).await?;
    let page = PageReq::new(q.page, Some(PER_PAGE));
    let rows = s
        .engine
        .db()
        .pipelines_filtered(id, &q.filter(), page)
        .await?;
    let (rows, next) = page.finish(rows);
    let views = pipeline_views(&rows);
    let ids = views
        .iter()
        .map(|p| p.id.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let rendered = views
        .iter()
        .map(|p| RowTpl { p }.render().unwrap_or_default())
        .collect();
    let query = [
        ("ref", q.git_ref.clone()),
        ("status", q.status.clone()),
        ("source", q.source.clone()),
    ];
    let base = format!("/projects/{id}/pipelines");
    let mut stream = format!("{base}/stream?ids={ids}");
    if page.page == 1 && q.filter().git_ref.is_none() && q.filter().status.is_none() {
        stream.push_str("&new=1");
    }
    Ok(html(&ListPage {
        chrome: v.chrome,
        title: format!("Pipelines · {}", project.path),
        project,
        rows: rendered,
        ids,
        pager: Pager::new(&base, &query, page.page, next.is_some()),
        f: q,
        statuses: PipelineStatus::ALL.iter().map(|s| s.as_str()).collect(),
        sources: Source::ALL.iter().map(|s| s.as_str()).collect(),
        developer: at_least(role, Role::Developer),
        stream,
    }))
}

// ---- running one ---------------------------------------------------------------------------

#[derive(Debug, Template)]
#[template(path = "run.html")]
struct RunPage {
    chrome: Chrome,
    title: String,
    project: gantry_api::rest::Project,
    git_ref: String,
    variables: String,
    error: Option<String>,
}

pub async fn new_form(State(s): State<AppState>, v: Viewer, Path(key): Path<String>) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let project = s.engine.project(id).await?;
    Ok(html(&RunPage {
        chrome: v.chrome,
        title: format!("Run a pipeline · {}", project.path),
        git_ref: project.default_branch.clone(),
        project,
        variables: String::new(),
        error: None,
    }))
}

#[derive(Debug, Deserialize)]
pub struct RunForm {
    #[serde(default, rename = "ref")]
    git_ref: String,
    /// `KEY=value` lines.
    #[serde(default)]
    variables: String,
}

/// `KEY=value` lines (blank lines and `#` comments skipped) as variables.
pub fn parse_variables(text: &str) -> Result<Vec<KeyValue>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!(
                "variables, line {}: '{line}' is not KEY=value",
                n + 1
            ));
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "variables, line {}: '{k}' is not a variable name (letters, digits, _)",
                n + 1
            ));
        }
        out.push(KeyValue {
            key: k.to_string(),
            value: v.to_string(),
        });
    }
    Ok(out)
}

pub async fn create(
    State(s): State<AppState>,
    v: Viewer,
    Path(key): Path<String>,
    Form(f): Form<RunForm>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let project = s.engine.project(id).await?;
    let fail = |msg: String, project: gantry_api::rest::Project, chrome: Chrome| {
        let page = RunPage {
            chrome,
            title: format!("Run a pipeline · {}", project.path),
            project,
            git_ref: f.git_ref.clone(),
            variables: f.variables.clone(),
            error: Some(msg),
        };
        Ok((axum::http::StatusCode::BAD_REQUEST, html(&page)).into_response())
    };
    let variables = match parse_variables(&f.variables) {
        Ok(v) => v,
        Err(e) => return fail(e, project, v.chrome),
    };
    let req = PipelineCreate {
        git_ref: (!f.git_ref.trim().is_empty()).then(|| f.git_ref.trim().to_string()),
        sha: None,
        variables,
    };
    match s
        .engine
        .create_pipeline(&id.to_string(), req, Source::Web, &v.name())
        .await
    {
        Ok(p) => Ok(see_other(&format!("/pipelines/{}", p.id))),
        Err(e) => {
            let e = HttpError::from(e);
            if e.status.is_client_error() {
                fail(e.message, project, v.chrome)
            } else {
                Err(Error(e))
            }
        }
    }
}

// ---- the graph -----------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct SlimDef {
    #[serde(default)]
    pub when: String,
    #[serde(default)]
    pub needs: Option<Vec<SlimNeed>>,
    #[serde(default)]
    pub environment: Option<SlimEnv>,
    #[serde(default)]
    pub child: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub image: Option<SlimImage>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SlimNeed {
    pub job: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct SlimEnv {
    pub name: String,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SlimImage {
    pub name: String,
}

pub fn slim(def: &str) -> SlimDef {
    serde_json::from_str(def).unwrap_or_default()
}

/// What the graph reads of a job's definition.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub manual: bool,
    pub child: bool,
    /// Comma-separated names of the jobs it needs.
    pub needs: String,
}

/// Definitions never change once stored (a retry is a new job), so what the graph reads of
/// them is kept here by job id: a live graph rendered again after each change reads only
/// its new jobs' definitions. Bounded: emptied when full.
static FACTS: std::sync::LazyLock<std::sync::Mutex<HashMap<i64, Facts>>> =
    std::sync::LazyLock::new(Default::default);
const FACTS_KEPT: usize = 100_000;

async fn facts(s: &AppState, ids: &[i64]) -> Result<HashMap<i64, Facts>, Error> {
    let mut out = HashMap::with_capacity(ids.len());
    let missing: Vec<i64> = {
        let cache = FACTS.lock().unwrap_or_else(|p| p.into_inner());
        ids.iter()
            .copied()
            .filter(|id| match cache.get(id) {
                Some(f) => {
                    out.insert(*id, f.clone());
                    false
                }
                None => true,
            })
            .collect()
    };
    let mut fresh = Vec::with_capacity(missing.len());
    for chunk in missing.chunks(500) {
        for (id, def) in s.engine.db().job_definitions(chunk).await? {
            let d = slim(&def);
            let f = Facts {
                manual: d.when == "manual",
                child: d.child.is_some(),
                needs: d
                    .needs
                    .unwrap_or_default()
                    .into_iter()
                    .map(|n| n.job)
                    .collect::<Vec<_>>()
                    .join(","),
            };
            fresh.push((id, f));
        }
    }
    let mut cache = FACTS.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() + fresh.len() > FACTS_KEPT {
        cache.clear();
    }
    for (id, f) in fresh {
        cache.insert(id, f.clone());
        out.insert(id, f);
    }
    Ok(out)
}

#[derive(Debug)]
pub struct JobBox {
    pub id: i64,
    pub name: String,
    pub status: &'static str,
    pub icon: &'static str,
    pub duration: String,
    pub manual: bool,
    pub allow_failure: bool,
    /// Earlier attempts of this job.
    pub retries: u32,
    /// Comma-separated names of the jobs it needs.
    pub needs: String,
    pub can_play: bool,
    pub can_retry: bool,
    pub can_cancel: bool,
    pub tip: String,
}

#[derive(Debug)]
pub struct StageView {
    pub name: String,
    pub jobs: Vec<JobBox>,
}

#[derive(Debug)]
pub struct ChildView {
    pub id: i64,
    pub badge: String,
    pub via: String,
    pub git_ref: String,
}

#[derive(Debug, Template)]
#[template(path = "graph.html")]
pub struct GraphTpl {
    pub stages: Vec<StageView>,
    pub children: Vec<ChildView>,
    pub csrf: String,
    pub act: bool,
    pub jobs: usize,
}

#[derive(Debug, Template)]
#[template(path = "pipeline_head.html")]
pub struct HeadTpl {
    pub p: PipelineView,
    pub errors: Option<String>,
    pub csrf: String,
    pub act: bool,
    pub can_cancel: bool,
    pub can_retry: bool,
    pub parent: Option<(i64, i64)>,
}

/// What a pipeline page shows, rendered: the head and the graph, with the ids to watch for
/// live changes (the pipeline, its children, its jobs).
#[derive(Debug)]
pub struct Rendered {
    pub head: String,
    pub graph: String,
    pub pipelines: Vec<i64>,
    pub jobs: Vec<i64>,
    pub project_id: i64,
    pub path_title: String,
}

/// Renders a pipeline's head and graph: three queries (the pipeline, its jobs, its
/// children), whatever the number of jobs, and a fourth for the definitions of jobs not
/// seen before.
pub async fn render(s: &AppState, id: i64, act: bool, csrf: &str) -> Result<Rendered, Error> {
    let db = s.engine.db();
    let row = db
        .pipeline(id)
        .await?
        .ok_or_else(|| HttpError::not_found(format!("pipeline {id} not found")))?;
    let jobs = db.graph_jobs(id).await?;
    let children = db.child_pipelines(id).await?;
    let view = pipeline_view(&row);
    let parent = match row.parent_job_id {
        Some(j) => db.job(j).await?.map(|job| (job.pipeline_id, j)),
        None => None,
    };
    let mut attempts: HashMap<&str, u32> = HashMap::new();
    for j in &jobs {
        *attempts.entry(j.name.as_str()).or_default() += 1;
    }
    let mut current: Vec<&GraphJob> = jobs.iter().filter(|j| !j.retried).collect();
    current.sort_by_key(|j| (j.stage_index, j.position, j.id));
    let ids: Vec<i64> = current.iter().map(|j| j.id).collect();
    let known = facts(s, &ids).await?;
    let mut stages: Vec<StageView> = Vec::new();
    let mut names: HashMap<i64, String> = HashMap::new();
    for j in &current {
        let def = known.get(&j.id).cloned().unwrap_or_default();
        names.insert(j.id, j.name.clone());
        let status = j.status.as_str();
        let mut tip = status.to_string();
        if let Some(r) = &j.failure_reason {
            tip.push_str(&format!(" ({r})"));
        }
        let b = JobBox {
            id: j.id,
            name: j.name.clone(),
            status,
            icon: icon(status),
            duration: ran(j.started_at, j.finished_at),
            manual: def.manual,
            allow_failure: j.allow_failure,
            retries: attempts.get(j.name.as_str()).copied().unwrap_or(1) - 1,
            needs: def.needs,
            can_play: act && j.status == JobStatus::Manual,
            can_retry: act && j.status.is_finished() && !def.child,
            can_cancel: act && (j.status.is_active() || j.status == JobStatus::Manual),
            tip,
        };
        match stages.last_mut() {
            Some(st) if st.name == j.stage => st.jobs.push(b),
            _ => stages.push(StageView {
                name: j.stage.clone(),
                jobs: vec![b],
            }),
        }
    }
    let mut child_views: Vec<ChildView> = Vec::new();
    for c in children.iter().rev() {
        let via = c
            .parent_job_id
            .and_then(|j| names.get(&j).cloned())
            .unwrap_or_default();
        // The newest child of each trigger job (retries make new ones).
        if child_views.iter().any(|v| v.via == via) {
            continue;
        }
        child_views.push(ChildView {
            id: c.id,
            badge: badge(c.status.as_str()),
            via,
            git_ref: c.git_ref.clone(),
        });
    }
    child_views.reverse();
    let unfinished = !row.status.is_finished();
    let has_failed = current
        .iter()
        .any(|j| matches!(j.status, JobStatus::Failed | JobStatus::Canceled));
    let head = HeadTpl {
        errors: row.errors.clone(),
        csrf: csrf.to_string(),
        act,
        can_cancel: act && unfinished,
        can_retry: act && has_failed && row.errors.is_none(),
        parent,
        p: view,
    };
    let graph = GraphTpl {
        jobs: current.len(),
        stages,
        children: child_views,
        csrf: csrf.to_string(),
        act,
    };
    let mut pipelines = vec![id];
    pipelines.extend(children.iter().map(|c| c.id));
    Ok(Rendered {
        head: head.render().map_err(internal)?,
        graph: graph.render().map_err(internal)?,
        pipelines,
        jobs: jobs.iter().map(|j| j.id).collect(),
        project_id: row.project_id,
        path_title: format!("Pipeline #{id}"),
    })
}

pub fn internal(e: askama::Error) -> Error {
    Error(HttpError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("a page failed to render: {e}"),
    ))
}

#[derive(Debug, Template)]
#[template(path = "pipeline.html")]
struct ShowPage {
    chrome: Chrome,
    title: String,
    project: gantry_api::rest::Project,
    id: i64,
    head: String,
    graph: String,
}

pub async fn show(State(s): State<AppState>, v: Viewer, Path(id): Path<i64>) -> PageResult {
    let project_id = s.engine.project_of_pipeline(id).await?;
    let role = v.role(&s, project_id).await?;
    let r = render(&s, id, at_least(role, Role::Developer), &v.chrome.csrf).await?;
    let project = s.engine.project(project_id).await?;
    Ok(html(&ShowPage {
        chrome: v.chrome,
        title: format!("{} · {}", r.path_title, project.path),
        project,
        id,
        head: r.head,
        graph: r.graph,
    }))
}

pub async fn cancel(State(s): State<AppState>, Path(id): Path<i64>) -> PageResult {
    s.engine.cancel_pipeline(id).await?;
    Ok(see_other(&format!("/pipelines/{id}")))
}

pub async fn retry(State(s): State<AppState>, Path(id): Path<i64>) -> PageResult {
    s.engine.retry_pipeline(id).await?;
    Ok(see_other(&format!("/pipelines/{id}")))
}

#[cfg(test)]
mod tests {
    use super::parse_variables;

    #[test]
    fn variables_are_key_value_lines() {
        let v = parse_variables("A=1\n\n# note\nB = two=2\n").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!((v[1].key.as_str(), v[1].value.as_str()), ("B", " two=2"));
        assert!(parse_variables("no equals").is_err());
        assert!(parse_variables("BAD KEY=1").is_err());
    }
}
