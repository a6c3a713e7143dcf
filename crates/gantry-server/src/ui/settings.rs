//! A project's settings, for maintainers: members and their roles (given and taken here),
//! CI/CD variables (added and deleted here; values are write-only and never shown),
//! schedules, recent webhook deliveries, notification channels and trigger tokens (shown;
//! changed through the API).

use super::{Chrome, PageResult, Viewer, html, see_other, when, when_opt};
use crate::AppState;
use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use gantry_api::Role;
use gantry_api::rest::{
    Member, MemberSet, Notification, Schedule, TriggerToken, Variable, VariableWrite,
    WebhookDelivery,
};
use gantry_store::db::PageReq;
use serde::Deserialize;

#[derive(Debug, Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    chrome: Chrome,
    title: String,
    project: gantry_api::rest::Project,
    members: Vec<Member>,
    roles: Vec<&'static str>,
    variables: Vec<Variable>,
    schedules: Vec<(Schedule, String)>,
    deliveries: Vec<(WebhookDelivery, String)>,
    notifications: Vec<Notification>,
    triggers: Vec<(TriggerToken, String)>,
}

pub async fn page(State(s): State<AppState>, v: Viewer, Path(key): Path<String>) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let k = id.to_string();
    let project = s.engine.project(id).await?;
    let e = &s.engine;
    let (members, variables, schedules, deliveries, notifications, triggers) = tokio::try_join!(
        e.members(&k),
        e.variables(Some(&k)),
        e.schedules(&k, PageReq::new(Some(1), Some(50))),
        e.webhook_deliveries(&k, PageReq::new(Some(1), Some(20))),
        e.notifications(&k),
        e.trigger_tokens(&k),
    )?;
    Ok(html(&SettingsPage {
        chrome: v.chrome,
        title: format!("Settings · {}", project.path),
        project,
        members,
        roles: Role::ALL.iter().map(|r| r.as_str()).collect(),
        variables,
        schedules: schedules
            .items
            .into_iter()
            .map(|s| {
                let next = when_opt(s.next_run_at);
                (s, next)
            })
            .collect(),
        deliveries: deliveries
            .items
            .into_iter()
            .map(|d| {
                let at = when(d.received_at);
                (d, at)
            })
            .collect(),
        notifications,
        triggers: triggers
            .into_iter()
            .map(|t| {
                let used = when_opt(t.last_used_at);
                (t, used)
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize)]
pub struct MemberForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    role: String,
}

pub async fn set_member(
    State(s): State<AppState>,
    v: Viewer,
    Path(key): Path<String>,
    Form(f): Form<MemberForm>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let role: Role = f
        .role
        .parse()
        .map_err(crate::error::HttpError::bad_request)?;
    s.engine
        .set_member(
            &v.caller,
            &id.to_string(),
            MemberSet {
                username: f.username.trim().to_string(),
                role,
            },
        )
        .await?;
    Ok(see_other(&format!("/projects/{id}/settings#members")))
}

pub async fn remove_member(
    State(s): State<AppState>,
    v: Viewer,
    Path(key): Path<String>,
    Form(f): Form<MemberForm>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    s.engine
        .remove_member(&v.caller, &id.to_string(), f.username.trim())
        .await?;
    Ok(see_other(&format!("/projects/{id}/settings#members")))
}

#[derive(Deserialize)]
pub struct VariableForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    masked: Option<String>,
    #[serde(default)]
    protected: Option<String>,
    #[serde(default)]
    environment_scope: String,
}

impl std::fmt::Debug for VariableForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VariableForm")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

pub async fn add_variable(
    State(s): State<AppState>,
    v: Viewer,
    Path(key): Path<String>,
    Form(f): Form<VariableForm>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let scope = f.environment_scope.trim();
    s.engine
        .create_variable(
            Some(&id.to_string()),
            VariableWrite {
                key: Some(f.key.trim().to_string()),
                value: Some(f.value),
                masked: Some(f.masked.is_some()),
                protected: Some(f.protected.is_some()),
                variable_type: None,
                environment_scope: (!scope.is_empty()).then(|| scope.to_string()),
                description: None,
            },
            &v.caller,
        )
        .await?;
    Ok(see_other(&format!("/projects/{id}/settings#variables")))
}

#[derive(Debug, Deserialize)]
pub struct DeleteVariableForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    environment_scope: String,
}

pub async fn delete_variable(
    State(s): State<AppState>,
    v: Viewer,
    Path(key): Path<String>,
    Form(f): Form<DeleteVariableForm>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let scope = f.environment_scope.trim();
    s.engine
        .delete_variable(
            Some(&id.to_string()),
            f.key.trim(),
            (!scope.is_empty()).then_some(scope),
            &v.caller,
        )
        .await?;
    Ok(see_other(&format!("/projects/{id}/settings#variables")))
}
