//! Instance pages for administrators: agents (online or not, tags, executor, current jobs,
//! last contact) and the audit log.

use super::projects::PER_PAGE;
use super::{Chrome, PageResult, Pager, Viewer, html, when_opt};
use crate::AppState;
use askama::Template;
use axum::extract::{Query, State};
use gantry_api::rest::{Agent, AuditEvent};
use gantry_store::db::PageReq;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct PageOnly {
    #[serde(default)]
    page: Option<u32>,
}

#[derive(Debug)]
pub struct AgentView {
    pub a: Agent,
    pub last_seen: String,
    /// (job id, job name, pipeline id)
    pub jobs: Vec<(i64, String, i64)>,
}

#[derive(Debug, Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    chrome: Chrome,
    title: &'static str,
    agents: Vec<AgentView>,
    pager: Pager,
}

pub async fn agents(State(s): State<AppState>, v: Viewer, Query(q): Query<PageOnly>) -> PageResult {
    let page = PageReq::new(q.page, Some(PER_PAGE));
    let list = s.engine.agents(page).await?;
    let running = s.engine.db().running_jobs().await?;
    let agents = list
        .items
        .into_iter()
        .map(|a| AgentView {
            last_seen: when_opt(a.last_seen_at),
            jobs: running
                .iter()
                .filter(|(_, _, _, agent)| *agent == a.id)
                .map(|(id, name, p, _)| (*id, name.clone(), *p))
                .collect(),
            a,
        })
        .collect();
    Ok(html(&AgentsPage {
        chrome: v.chrome,
        title: "Agents",
        agents,
        pager: Pager::new("/agents", &[], page.page, list.next_page.is_some()),
    }))
}

#[derive(Debug, serde::Deserialize)]
pub struct AgentForm {
    #[serde(default)]
    id: i64,
}

/// Revokes an agent's token: its connection ends and it cannot connect again.
pub async fn revoke_agent(
    State(s): State<AppState>,
    v: Viewer,
    axum::Form(f): axum::Form<AgentForm>,
) -> PageResult {
    s.engine.revoke_agent(f.id, &v.caller).await?;
    Ok(super::see_other("/agents"))
}

#[derive(Debug)]
pub struct AuditView {
    pub e: AuditEvent,
    pub at: String,
    pub details: String,
}

#[derive(Debug, Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    title: &'static str,
    events: Vec<AuditView>,
    pager: Pager,
}

pub async fn audit(State(s): State<AppState>, v: Viewer, Query(q): Query<PageOnly>) -> PageResult {
    let page = PageReq::new(q.page, Some(PER_PAGE));
    let list = s.engine.audit_log(page).await?;
    let events = list
        .items
        .into_iter()
        .map(|e| AuditView {
            at: super::when(e.at),
            details: e
                .details
                .as_ref()
                .map(|d| d.to_string())
                .unwrap_or_default(),
            e,
        })
        .collect();
    Ok(html(&AuditPage {
        chrome: v.chrome,
        title: "Audit log",
        events,
        pager: Pager::new("/admin/audit", &[], page.page, list.next_page.is_some()),
    }))
}
