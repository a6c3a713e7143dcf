//! The projects list (each with its default branch's last pipeline) and a project's page
//! (its refs, each with its last pipeline).

use super::pipelines::{PipelineView, pipeline_views};
use super::{Chrome, PageResult, Pager, Viewer, at_least, html};
use crate::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use gantry_api::Role;
use gantry_store::db::PageReq;
use serde::Deserialize;

/// Rows per page of every list of the UI.
pub const PER_PAGE: u32 = 50;

#[derive(Debug, Deserialize)]
pub struct PageOnly {
    #[serde(default)]
    page: Option<u32>,
}

#[derive(Debug)]
pub struct ProjectRow {
    pub id: i64,
    pub path: String,
    pub default_branch: String,
    pub last: Option<PipelineView>,
}

#[derive(Debug, Template)]
#[template(path = "projects.html")]
struct ProjectsPage {
    chrome: Chrome,
    title: &'static str,
    projects: Vec<ProjectRow>,
    pager: Pager,
}

pub async fn list(State(s): State<AppState>, v: Viewer, Query(q): Query<PageOnly>) -> PageResult {
    let page = PageReq::new(q.page, Some(PER_PAGE));
    let list = s.engine.projects_for(&v.caller, page).await?;
    let ids: Vec<i64> = list.items.iter().map(|p| p.id).collect();
    let last = s.engine.db().last_default_branch_pipelines(&ids).await?;
    let mut last = pipeline_views(&last);
    let projects = list
        .items
        .into_iter()
        .map(|p| ProjectRow {
            last: last
                .iter()
                .position(|l| l.project_id == p.id)
                .map(|i| last.swap_remove(i)),
            id: p.id,
            path: p.path,
            default_branch: p.default_branch,
        })
        .collect();
    Ok(html(&ProjectsPage {
        chrome: v.chrome,
        title: "Projects",
        projects,
        pager: Pager::new("/", &[], page.page, list.next_page.is_some()),
    }))
}

#[derive(Debug, Template)]
#[template(path = "project.html")]
struct ProjectPage {
    chrome: Chrome,
    title: String,
    project: gantry_api::rest::Project,
    role: String,
    reporter: bool,
    developer: bool,
    maintainer: bool,
    refs: Vec<PipelineView>,
}

pub async fn show(State(s): State<AppState>, v: Viewer, Path(key): Path<String>) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let project = s.engine.project(id).await?;
    let role = v.role(&s, id).await?;
    let reporter = at_least(role, Role::Reporter);
    let refs = if reporter {
        pipeline_views(&s.engine.db().ref_heads(id, PER_PAGE as i64).await?)
    } else {
        Vec::new()
    };
    Ok(html(&ProjectPage {
        chrome: v.chrome,
        title: project.path.clone(),
        role: role.map(|r| r.to_string()).unwrap_or_default(),
        reporter,
        developer: at_least(role, Role::Developer),
        maintainer: at_least(role, Role::Maintainer),
        project,
        refs,
    }))
}
