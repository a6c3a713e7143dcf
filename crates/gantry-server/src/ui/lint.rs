//! The lint page: a pipeline file in an editor with line numbers (prefilled with the default
//! branch's file), linted for a ref and a source as a pipeline would be
//! ([`gantry_engine::Engine::lint`]): the diagnostics at their lines, and the planned graph.
//! Nothing is committed, fetched or stored.

use super::{Chrome, PageResult, Viewer, html};
use crate::AppState;
use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use gantry_engine::engine::lint::LintDiagnostic;
use gantry_pipeline::model::AllowFailure;
use gantry_pipeline::plan::After;
use gantry_pipeline::trigger::Source;
use serde::Deserialize;

#[derive(Debug)]
pub struct PlanJob {
    pub name: String,
    pub when: String,
    pub needs: String,
    pub allow_failure: bool,
}

#[derive(Debug)]
pub struct PlanStage {
    pub name: String,
    pub jobs: Vec<PlanJob>,
}

#[derive(Debug, Template)]
#[template(path = "lint.html")]
struct LintPage {
    chrome: Chrome,
    title: String,
    project: gantry_api::rest::Project,
    file: String,
    content: String,
    git_ref: String,
    source: String,
    sources: Vec<&'static str>,
    linted: bool,
    sha: Option<String>,
    diagnostics: Vec<LintDiagnostic>,
    error_lines: String,
    errors: usize,
    warnings: usize,
    rendered: String,
    workflow: String,
    created: bool,
    stages: Vec<PlanStage>,
}

pub async fn page(State(s): State<AppState>, v: Viewer, Path(key): Path<String>) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let project = s.engine.project(id).await?;
    let file = project
        .pipeline_file
        .clone()
        .unwrap_or_else(|| ".gantry.yml".into());
    // The default branch's file, as the mirror has it (no fetch).
    let content = match s.engine.mirror(id).await {
        Ok(m) => {
            let branch = project.default_branch.clone();
            let names = match &project.pipeline_file {
                Some(f) => vec![f.clone()],
                None => vec![".gantry.yml".to_string(), ".gitlab-ci.yml".to_string()],
            };
            tokio::task::spawn_blocking(move || {
                let sha = m.resolve(&branch).ok().flatten()?;
                names
                    .iter()
                    .find_map(|n| m.read_file(&sha, n).ok().flatten())
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            })
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
        }
        Err(_) => String::new(),
    };
    Ok(html(&LintPage {
        chrome: v.chrome,
        title: format!("Lint · {}", project.path),
        git_ref: project.default_branch.clone(),
        project,
        file,
        content,
        source: "push".into(),
        sources: Source::ALL.iter().map(|s| s.as_str()).collect(),
        linted: false,
        sha: None,
        diagnostics: Vec::new(),
        error_lines: String::new(),
        errors: 0,
        warnings: 0,
        rendered: String::new(),
        workflow: String::new(),
        created: false,
        stages: Vec::new(),
    }))
}

#[derive(Debug, Deserialize)]
pub struct LintForm {
    #[serde(default)]
    content: String,
    #[serde(default, rename = "ref")]
    git_ref: String,
    #[serde(default)]
    source: String,
}

pub async fn run(
    State(s): State<AppState>,
    v: Viewer,
    Path(key): Path<String>,
    Form(f): Form<LintForm>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let project = s.engine.project(id).await?;
    let source = Source::parse(&f.source).unwrap_or(Source::Push);
    let content = f.content.replace("\r\n", "\n");
    let report = s
        .engine
        .lint(id, &f.git_ref, source, content.clone(), &v.name())
        .await?;
    let file = project
        .pipeline_file
        .clone()
        .unwrap_or_else(|| ".gantry.yml".into());
    let mut error_lines: Vec<String> = report
        .diagnostics
        .iter()
        .filter(|d| d.error && d.file.as_deref() == Some(file.as_str()))
        .filter_map(|d| d.line.map(|l| l.to_string()))
        .collect();
    error_lines.dedup();
    let (mut workflow, mut created, mut stages) = (String::new(), false, Vec::<PlanStage>::new());
    if let Some(plan) = &report.plan {
        workflow = plan.workflow.clone();
        created = plan.created;
        for j in &plan.jobs {
            let needs = match &j.after {
                After::Jobs(idx) => idx
                    .iter()
                    .filter_map(|i| plan.jobs.get(*i).map(|n| n.name.clone()))
                    .collect::<Vec<_>>()
                    .join(","),
                After::EarlierStages => String::new(),
            };
            let job = PlanJob {
                name: j.name.clone(),
                when: j.when.as_str().to_string(),
                needs,
                allow_failure: !matches!(j.allow_failure, AllowFailure::Bool(false)),
            };
            match stages.last_mut() {
                Some(st) if st.name == j.stage => st.jobs.push(job),
                _ => stages.push(PlanStage {
                    name: j.stage.clone(),
                    jobs: vec![job],
                }),
            }
        }
    }
    let errors = report.diagnostics.iter().filter(|d| d.error).count();
    Ok(html(&LintPage {
        chrome: v.chrome,
        title: format!("Lint · {}", project.path),
        project,
        file,
        content,
        git_ref: f.git_ref,
        source: source.as_str().to_string(),
        sources: Source::ALL.iter().map(|s| s.as_str()).collect(),
        linted: true,
        sha: report.sha.map(|s| s.chars().take(8).collect()),
        warnings: report.diagnostics.len() - errors,
        errors,
        diagnostics: report.diagnostics,
        error_lines: error_lines.join(","),
        rendered: report.rendered,
        workflow,
        created,
        stages,
    }))
}
