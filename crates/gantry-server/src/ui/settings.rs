//! A project's settings, for maintainers: members and their roles, CI/CD variables (values
//! write-only, never shown), schedules (added, run now, deleted), trigger tokens (made —
//! shown once — and revoked), notification channels (added with their write-only webhook
//! URL or recipients, removed), all changed here; recent webhook deliveries shown.

use super::{Chrome, PageResult, Viewer, html, see_other, when, when_opt};
use crate::AppState;
use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use gantry_api::Role;
use gantry_api::rest::{
    Member, MemberSet, Notification, NotificationCreate, Schedule, ScheduleCreate, TriggerToken,
    TriggerTokenCreate, Variable, VariableWrite, WebhookDelivery,
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
    /// A trigger token just made: shown this once.
    new_token: Option<String>,
}

pub async fn page(State(s): State<AppState>, v: Viewer, Path(key): Path<String>) -> PageResult {
    render(&s, v, &key, None).await
}

async fn render(s: &AppState, v: Viewer, key: &str, new_token: Option<String>) -> PageResult {
    let id = s.engine.find_project(key).await?;
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
        new_token,
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

#[derive(Debug, Deserialize)]
pub struct ScheduleForm {
    #[serde(default)]
    description: String,
    #[serde(default)]
    cron: String,
    #[serde(default)]
    time_zone: String,
    #[serde(default, rename = "ref")]
    git_ref: String,
}

pub async fn add_schedule(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Form(f): Form<ScheduleForm>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let some = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_string());
    s.engine
        .create_schedule(
            &id.to_string(),
            ScheduleCreate {
                description: f.description.trim().to_string(),
                cron: f.cron.trim().to_string(),
                time_zone: some(&f.time_zone),
                git_ref: some(&f.git_ref),
                variables: Vec::new(),
                active: Some(true),
            },
        )
        .await?;
    Ok(see_other(&format!("/projects/{id}/settings#schedules")))
}

#[derive(Debug, Deserialize)]
pub struct IdForm {
    #[serde(default)]
    id: i64,
}

pub async fn delete_schedule(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Form(f): Form<IdForm>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    s.engine.delete_schedule(&id.to_string(), f.id).await?;
    Ok(see_other(&format!("/projects/{id}/settings#schedules")))
}

pub async fn play_schedule(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Form(f): Form<IdForm>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let p = s.engine.play_schedule(&id.to_string(), f.id).await?;
    Ok(see_other(&format!("/pipelines/{}", p.id)))
}

#[derive(Debug, Deserialize)]
pub struct TriggerForm {
    #[serde(default)]
    description: String,
}

/// Makes a trigger token and shows it, this once, on the settings page.
pub async fn add_trigger(
    State(s): State<AppState>,
    v: Viewer,
    Path(key): Path<String>,
    Form(f): Form<TriggerForm>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let t = s
        .engine
        .create_trigger_token(
            &id.to_string(),
            TriggerTokenCreate {
                description: f.description,
            },
            &v.caller,
        )
        .await?;
    render(&s, v, &id.to_string(), t.token).await
}

pub async fn delete_trigger(
    State(s): State<AppState>,
    v: Viewer,
    Path(key): Path<String>,
    Form(f): Form<IdForm>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    s.engine
        .delete_trigger_token(&id.to_string(), f.id, &v.caller)
        .await?;
    Ok(see_other(&format!("/projects/{id}/settings#triggers")))
}

/// A notification channel to add: `target` is the webhook URL (write-only: it carries a
/// secret) or, for `email`, comma-separated addresses; `events` comma-separated.
#[derive(Deserialize)]
pub struct NotificationForm {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    events: String,
}

impl std::fmt::Debug for NotificationForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationForm")
            .field("kind", &self.kind)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

pub async fn add_notification(
    State(s): State<AppState>,
    _v: Viewer,
    Path(key): Path<String>,
    Form(f): Form<NotificationForm>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    let list = |t: &str| -> Vec<String> {
        t.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect()
    };
    let kind = f.kind.trim().to_string();
    let email = kind == "email";
    s.engine
        .add_notification(
            &id.to_string(),
            NotificationCreate {
                recipients: if email { list(&f.target) } else { Vec::new() },
                url: (!email).then(|| f.target.trim().to_string()),
                events: list(&f.events),
                kind,
            },
        )
        .await?;
    Ok(see_other(&format!("/projects/{id}/settings#notifications")))
}

pub async fn delete_notification(
    State(s): State<AppState>,
    _v: Viewer,
    Path(key): Path<String>,
    Form(f): Form<IdForm>,
) -> PageResult {
    let id = s.engine.find_project(&key).await?;
    s.engine.delete_notification(&id.to_string(), f.id).await?;
    Ok(see_other(&format!("/projects/{id}/settings#notifications")))
}
