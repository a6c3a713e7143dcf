//! Commit statuses and notifications: the events, where they are queued, and the API of a
//! project's forge and notification channels.
//!
//! ```text
//! set_pipeline_status (changed) ─► a commit status row (the project has a forge)
//!                              └─► finished: failed / fixed / succeeded ─► a row per channel
//! a job made manual (advance, or its first decision) ─► a row per channel that wants `manual`
//! a job running or finished (forge with job statuses) ─► a commit status row for the job
//! ```
//!
//! Everything here only writes rows into the outbox (gantry_store::db::outbox) and wakes the
//! sender (outbox.rs); nothing talks to a forge, a chat or an SMTP server on a pipeline's
//! path, and a failure to queue is logged, never the pipeline's failure.
//!
//! Commit status rows carry only which pipeline or job they are about: the sender posts the
//! state that is current when it sends, and skips a row when a newer one of the same group
//! (the pipeline's, or a job name's) was queued. A status change is queued once, as its
//! transition happens once (the store's updates are conditional); a crash between the
//! transition and the queueing loses that one status, which the next transition repairs.
//!
//! Notification rows carry the whole message (the event document of [`event_doc`]), keyed by
//! channel, pipeline, event and the pipeline's finish time (so a retried pipeline that fails
//! again notifies again, and the same finish never twice).

use super::Engine;
use crate::error::{EngineError, Result};
use gantry_api::rest::{self, Page};
use gantry_api::{JobStatus, PipelineStatus};
use gantry_pipeline::trigger::Trigger;
use gantry_store::db::outbox::{
    ChannelRow, ForgeRow, NewChannel, NewOutbox, OutboxRow, channel_url_aad, forge_token_aad,
};
use gantry_store::db::{JobRow, PageReq, PipelineRow, ProjectRow, now_ms};
use gantry_store::secrets::SecretString;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// The events a channel may want.
pub const EVENTS: &[&str] = &[
    "failed",
    "fixed",
    "succeeded",
    "manual",
    "image_pushed",
    "image_pulled",
    "image_deleted",
    "image_promoted",
    "replication_succeeded",
    "replication_failed",
];
const DEFAULT_EVENTS: &[&str] = &["failed", "fixed", "manual"];
const CHAT_KINDS: &[&str] = &["slack", "dingtalk", "feishu", "teams", "generic"];

/// How the outbox is sent.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// The SMTP server for email notifications; none: email channels are refused.
    pub smtp: Option<SmtpConfig>,
    /// The first retry waits this long, each next one twice as long, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// A message is given up after this many attempts, or when it is older than `max_age`.
    pub max_attempts: i64,
    pub max_age: Duration,
    /// One HTTP request or SMTP session at most this long.
    pub timeout: Duration,
}

impl Default for NotifyConfig {
    fn default() -> NotifyConfig {
        NotifyConfig {
            smtp: None,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            max_attempts: 300,
            max_age: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
        }
    }
}

/// How the plain SMTP session becomes private.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plaintext (a relay on localhost).
    None,
    /// STARTTLS, required.
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// The instance's SMTP server.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    /// Never logged, never shown.
    pub password: Option<SecretString>,
    /// `Gantry <ci@example.com>`.
    pub from: String,
    /// Extra CA certificates (PEM) the server's certificate may chain to.
    pub ca_file: Option<PathBuf>,
}

/// The forge kinds, as stored.
fn forge_kind(kind: &str) -> Option<&'static str> {
    match kind.to_ascii_lowercase().as_str() {
        "gitlab" => Some("gitlab"),
        "github" => Some("github"),
        "gitea" | "forgejo" => Some("gitea"),
        _ => None,
    }
}

fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::BadRequest(msg.into())
}

/// An `http://` or `https://` URL with a host.
fn check_url(what: &str, url: &str) -> Result<()> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(bad(format!(
            "{what} must be an http:// or https:// URL, such as https://forge.example.com"
        ))),
    }
}

impl Engine {
    // ---- events ---------------------------------------------------------------------------

    /// The store's `set_pipeline_status`, and the events of a change.
    pub(super) async fn set_pipeline_status(
        &self,
        id: i64,
        status: PipelineStatus,
    ) -> Result<bool> {
        let changed = self.inner.db.set_pipeline_status(id, status).await?;
        if changed {
            self.pipeline_changed(id, &[]).await;
        }
        Ok(changed)
    }

    /// A pipeline was just stored with its first decisions: its first status, its manual
    /// jobs, and, for a pipeline that failed to plan, its failure.
    pub(super) async fn pipeline_stored(&self, id: i64) {
        self.pipeline_changed(id, &[]).await;
    }

    /// Jobs of a pipeline became manual.
    pub(super) async fn jobs_made_manual(&self, pipeline_id: i64, jobs: &[i64]) {
        if !jobs.is_empty() {
            self.pipeline_changed(pipeline_id, jobs).await;
        }
    }

    /// A job started or finished: its own commit status, when the forge wants those.
    pub(super) async fn job_changed(&self, job: &JobRow) {
        if let Err(e) = self.queue_job_status(job).await {
            tracing::warn!(job = job.id, "queueing the job's commit status: {e}");
        }
    }

    async fn queue_job_status(&self, job: &JobRow) -> Result<()> {
        let Some(forge) = self.inner.db.forge(job.project_id).await? else {
            return Ok(());
        };
        if !forge.job_statuses {
            return Ok(());
        }
        let status = self
            .inner
            .db
            .job(job.id)
            .await?
            .map_or(job.status, |j| j.status);
        let queued = self
            .inner
            .db
            .enqueue(&NewOutbox {
                project_id: job.project_id,
                pipeline_id: Some(job.pipeline_id),
                job_id: Some(job.id),
                kind: "commit_status".into(),
                channel_id: None,
                dedupe_key: format!("status:job:{}:{status}:{}", job.id, now_ms()),
                group_key: format!("status:pipeline:{}:job:{}", job.pipeline_id, job.name),
                payload: json!({"pipeline_id": job.pipeline_id, "job_id": job.id}).to_string(),
            })
            .await?;
        if queued {
            self.wake_outbox();
        }
        Ok(())
    }

    /// Queues what a pipeline's current state calls for; `manual`: jobs that just became
    /// manual (and then only those are notified). Logs failures.
    async fn pipeline_changed(&self, id: i64, manual: &[i64]) {
        if let Err(e) = self.queue_pipeline_events(id, manual).await {
            tracing::warn!(
                pipeline = id,
                "queueing commit statuses and notifications: {e}"
            );
        }
    }

    async fn queue_pipeline_events(&self, id: i64, manual: &[i64]) -> Result<()> {
        let db = &self.inner.db;
        let Some(p) = db.pipeline(id).await? else {
            return Ok(());
        };
        // A child pipeline is part of its parent's: the parent's status and messages say it.
        if p.parent_job_id.is_some() {
            return Ok(());
        }
        let (forge, channels) = db.notify_targets(p.project_id).await?;
        let mut queued = false;
        if forge && manual.is_empty() {
            queued |= db
                .enqueue(&NewOutbox {
                    project_id: p.project_id,
                    pipeline_id: Some(p.id),
                    job_id: None,
                    kind: "commit_status".into(),
                    channel_id: None,
                    dedupe_key: format!("status:pipeline:{}:{}:{}", p.id, p.status, now_ms()),
                    group_key: format!("status:pipeline:{}", p.id),
                    payload: json!({"pipeline_id": p.id}).to_string(),
                })
                .await?;
        }
        if channels > 0 {
            queued |= self.queue_notifications(&p, manual).await?;
        }
        if queued {
            self.wake_outbox();
        }
        Ok(())
    }

    async fn queue_notifications(&self, p: &PipelineRow, manual: &[i64]) -> Result<bool> {
        let db = &self.inner.db;
        let jobs = db.jobs_of_pipeline(p.id).await?;
        // (event, key suffix, the job a manual event is about)
        let mut events: Vec<(&str, String, Option<&JobRow>)> = Vec::new();
        let first = manual.is_empty();
        for j in &jobs {
            // Jobs that just became manual, or, when the pipeline was just stored, those
            // whose first decision was manual (any change on a pipeline re-reads them: the
            // key makes each job's event once).
            let wanted = if first {
                j.status == JobStatus::Manual
            } else {
                manual.contains(&j.id)
            };
            if wanted && j.status == JobStatus::Manual && !j.retried {
                events.push(("manual", format!("job:{}:manual", j.id), Some(j)));
            }
        }
        let finished = p.finished_at.unwrap_or(0);
        match p.status {
            PipelineStatus::Failed if first => events.push((
                "failed",
                format!("pipeline:{}:failed:{finished}", p.id),
                None,
            )),
            PipelineStatus::Success if first => {
                let before = db
                    .previous_result_on_ref(p.project_id, &p.git_ref, p.id)
                    .await?;
                let event = if before.as_deref() == Some("failed") {
                    "fixed"
                } else {
                    "succeeded"
                };
                events.push((event, format!("pipeline:{}:{event}:{finished}", p.id), None));
            }
            _ => {}
        }
        if events.is_empty() {
            return Ok(false);
        }
        let project = self.project_row(p.project_id).await?;
        let channels = db.channels(p.project_id).await?;
        let trigger: Trigger = serde_json::from_str(&p.trigger_json).unwrap_or_default();
        let mut queued = false;
        for (event, key, job) in events {
            let doc = event_doc(
                &self.inner.config.external_url,
                &project,
                p,
                &trigger,
                &jobs,
                event,
                job,
            );
            for c in &channels {
                let wants = c.events.split(',').any(|e| {
                    e == event || (event == "fixed" && e == "succeeded") // fixed is a success too
                });
                if !wants {
                    continue;
                }
                let kind = if c.kind == "email" { "email" } else { "chat" };
                let dedupe_key = format!("notify:{}:{key}", c.id);
                queued |= db
                    .enqueue(&NewOutbox {
                        project_id: p.project_id,
                        pipeline_id: Some(p.id),
                        job_id: job.map(|j| j.id),
                        kind: kind.into(),
                        channel_id: Some(c.id),
                        group_key: dedupe_key.clone(),
                        dedupe_key,
                        payload: doc.to_string(),
                    })
                    .await?;
            }
        }
        Ok(queued)
    }

    /// A registry event (`image_pushed`, `image_pulled`, `image_deleted`, `image_promoted`,
    /// `replication_succeeded`, `replication_failed`) to the project's channels that want
    /// it: `doc` is the message (and the body of `generic` webhooks). A tag pushed or
    /// promoted also queues the project's on-push replications (replication.rs). Logs
    /// failures; never the registry's failure.
    pub async fn registry_event(&self, project_id: i64, event: &str, mut doc: Value) {
        if matches!(event, "image_pushed" | "image_promoted") {
            self.queue_push_replications(project_id, &doc).await;
        }
        let run = async {
            let channels = self.inner.db.channels(project_id).await?;
            let wanting: Vec<_> = channels
                .iter()
                .filter(|c| c.events.split(',').any(|e| e == event))
                .collect();
            if wanting.is_empty() {
                return Ok::<bool, EngineError>(false);
            }
            let project = self.project_row(project_id).await?;
            doc["event"] = json!(event);
            doc["project"] = json!({"id": project.id, "path": project.path});
            doc["at"] = json!(now_ms());
            let id = crate::token::new_token("");
            let mut queued = false;
            for c in wanting {
                let kind = if c.kind == "email" { "email" } else { "chat" };
                let dedupe_key = format!("notify:{}:registry:{id}", c.id);
                queued |= self
                    .inner
                    .db
                    .enqueue(&NewOutbox {
                        project_id,
                        pipeline_id: None,
                        job_id: None,
                        kind: kind.into(),
                        channel_id: Some(c.id),
                        group_key: dedupe_key.clone(),
                        dedupe_key,
                        payload: doc.to_string(),
                    })
                    .await?;
            }
            Ok(queued)
        };
        match run.await {
            Ok(true) => self.wake_outbox(),
            Ok(false) => {}
            Err(e) => tracing::warn!(project_id, event, "queueing a registry event: {e}"),
        }
    }

    // ---- the API ---------------------------------------------------------------------------

    /// `PUT /api/v1/projects/{project}/forge`.
    pub async fn set_forge(&self, project: &str, s: rest::ForgeSettings) -> Result<rest::Forge> {
        let p = self.find_project_row(project).await?;
        let Some(kind) = forge_kind(&s.kind) else {
            return Err(bad(format!(
                "unknown forge kind '{}': use gitlab, github, gitea or forgejo",
                s.kind
            )));
        };
        let api_url = s.api_url.trim().trim_end_matches('/').to_string();
        check_url("api_url", &api_url)?;
        let repository = s.repository.trim().trim_matches('/').to_string();
        if repository.is_empty() || repository.chars().any(|c| c.is_control() || c == ' ') {
            return Err(bad(
                "repository is missing: give the GitLab project's id or path (group/app), or owner/repo for GitHub and Gitea",
            ));
        }
        if kind != "gitlab" && repository.split('/').filter(|s| !s.is_empty()).count() != 2 {
            return Err(bad(format!(
                "repository '{repository}' is not owner/repo, which {kind} needs"
            )));
        }
        let token = match s.token.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => {
                if t.chars().any(char::is_control) || t.len() > 4096 {
                    return Err(bad(
                        "token has control characters or is over 4096 bytes: paste the token alone",
                    ));
                }
                self.inner.keys.seal(t.as_bytes(), &forge_token_aad(p.id))
            }
            _ => match self.inner.db.forge(p.id).await? {
                Some(old) => old.token,
                None => {
                    return Err(bad(
                        "token is missing: give an access token allowed to set commit statuses (GitLab: api scope; GitHub: repo:status or Commit statuses: write; Gitea: repository write)",
                    ));
                }
            },
        };
        self.inner
            .db
            .set_forge(&ForgeRow {
                project_id: p.id,
                kind: kind.into(),
                api_url,
                repository,
                token,
                job_statuses: s.job_statuses,
                updated_at: 0,
            })
            .await?;
        tracing::info!(project = %p.path, kind, "forge set");
        self.forge(project).await
    }

    /// `GET /api/v1/projects/{project}/forge`.
    pub async fn forge(&self, project: &str) -> Result<rest::Forge> {
        let p = self.find_project_row(project).await?;
        let f = self
            .inner
            .db
            .forge(p.id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("project {} has no forge", p.path)))?;
        Ok(rest::Forge {
            project_id: f.project_id,
            kind: f.kind,
            api_url: f.api_url,
            repository: f.repository,
            token_set: !f.token.is_empty(),
            job_statuses: f.job_statuses,
            updated_at: f.updated_at,
        })
    }

    /// `DELETE /api/v1/projects/{project}/forge`.
    pub async fn delete_forge(&self, project: &str) -> Result<()> {
        let p = self.find_project_row(project).await?;
        if !self.inner.db.delete_forge(p.id).await? {
            return Err(EngineError::NotFound(format!(
                "project {} has no forge",
                p.path
            )));
        }
        Ok(())
    }

    /// `POST /api/v1/projects/{project}/notifications`.
    pub async fn add_notification(
        &self,
        project: &str,
        c: rest::NotificationCreate,
    ) -> Result<rest::Notification> {
        let p = self.find_project_row(project).await?;
        let kind = c.kind.trim().to_ascii_lowercase();
        let mut events: Vec<String> = c.events.iter().map(|e| e.trim().to_string()).collect();
        if events.is_empty() {
            events = DEFAULT_EVENTS.iter().map(|e| e.to_string()).collect();
        }
        if let Some(e) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
            return Err(bad(format!(
                "unknown event '{e}': use failed, fixed, succeeded, manual, image_pushed, image_pulled, image_deleted, image_promoted, replication_succeeded or replication_failed"
            )));
        }
        events.dedup();
        let (recipients, url) = if kind == "email" {
            if self.inner.config.notify.smtp.is_none() {
                return Err(bad(
                    "this server has no SMTP server to send email with: start it with --smtp-host (see gantry server --help), or use a chat webhook",
                ));
            }
            let list: Vec<String> = c
                .recipients
                .iter()
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
                .collect();
            if list.is_empty() {
                return Err(bad(
                    "recipients is empty: give the email addresses to notify",
                ));
            }
            if let Some(r) = list
                .iter()
                .find(|r| r.parse::<lettre::Address>().is_err() || r.contains(','))
            {
                return Err(bad(format!(
                    "'{r}' is not an email address (name@example.com)"
                )));
            }
            (Some(list.join(",")), None)
        } else if CHAT_KINDS.contains(&kind.as_str()) {
            let url = c.url.as_deref().map(str::trim).unwrap_or_default();
            if url.is_empty() {
                return Err(bad(format!(
                    "url is missing: give the {kind} incoming webhook's URL"
                )));
            }
            check_url("url", url)?;
            (None, Some(url.to_string()))
        } else {
            return Err(bad(format!(
                "unknown notification kind '{}': use email, slack, dingtalk, feishu, teams or generic",
                c.kind
            )));
        };
        let keys = &self.inner.keys;
        let id = self
            .inner
            .db
            .insert_channel_sealed(
                &NewChannel {
                    project_id: p.id,
                    kind,
                    recipients,
                    events: events.join(","),
                },
                |id| url.map(|u| keys.seal(u.as_bytes(), &channel_url_aad(id))),
            )
            .await?;
        let row = self
            .inner
            .db
            .channel(id)
            .await?
            .ok_or_else(|| EngineError::not_found(format!("notification {id}")))?;
        Ok(channel_dto(row))
    }

    /// `GET /api/v1/projects/{project}/notifications`.
    pub async fn notifications(&self, project: &str) -> Result<Vec<rest::Notification>> {
        let p = self.find_project_row(project).await?;
        let rows = self.inner.db.channels(p.id).await?;
        Ok(rows.into_iter().map(channel_dto).collect())
    }

    /// `DELETE /api/v1/projects/{project}/notifications/{id}`.
    pub async fn delete_notification(&self, project: &str, id: i64) -> Result<()> {
        let p = self.find_project_row(project).await?;
        if !self.inner.db.delete_channel(p.id, id).await? {
            return Err(EngineError::not_found(format!(
                "notification {id} of project {}",
                p.path
            )));
        }
        Ok(())
    }

    /// `GET /api/v1/projects/{project}/outbox`, newest first.
    pub async fn outbox(&self, project: &str, page: PageReq) -> Result<Page<rest::OutboxEntry>> {
        let p = self.find_project_row(project).await?;
        let rows = self.inner.db.outbox_of_project(p.id, page).await?;
        Ok(super::paged(page, rows, outbox_dto))
    }
}

fn channel_dto(c: ChannelRow) -> rest::Notification {
    rest::Notification {
        id: c.id,
        project_id: c.project_id,
        kind: c.kind,
        recipients: c
            .recipients
            .map(|r| r.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        url_set: c.url.is_some(),
        events: c.events.split(',').map(str::to_string).collect(),
        created_at: c.created_at,
    }
}

fn outbox_dto(r: OutboxRow) -> rest::OutboxEntry {
    rest::OutboxEntry {
        id: r.id,
        kind: r.kind,
        key: r.dedupe_key,
        pipeline_id: r.pipeline_id,
        job_id: r.job_id,
        channel_id: r.channel_id,
        state: r.state,
        attempts: r.attempts,
        next_attempt_at: r.next_attempt_at,
        last_error: r.last_error,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// The pipeline's page in Gantry's UI: `{external_url}/{project path}/-/pipelines/{id}`.
pub(super) fn pipeline_url(external: &str, project: &str, id: i64) -> String {
    format!(
        "{}/{project}/-/pipelines/{id}",
        external.trim_end_matches('/')
    )
}

/// A job's page in Gantry's UI: `{external_url}/{project path}/-/jobs/{id}`.
pub(super) fn job_url(external: &str, project: &str, id: i64) -> String {
    format!("{}/{project}/-/jobs/{id}", external.trim_end_matches('/'))
}

/// The event document: what every message is made from, and the body of `generic` webhooks.
fn event_doc(
    external: &str,
    project: &ProjectRow,
    p: &PipelineRow,
    trigger: &Trigger,
    jobs: &[JobRow],
    event: &str,
    job: Option<&JobRow>,
) -> Value {
    let job_doc = |j: &JobRow| {
        json!({
            "id": j.id,
            "name": j.name,
            "stage": j.stage,
            "status": j.status.to_string(),
            "failure_reason": j.failure_reason.map(|r| r.to_string()),
            "url": job_url(external, &project.path, j.id),
        })
    };
    let failed: Vec<Value> = jobs
        .iter()
        .filter(|j| j.status == JobStatus::Failed && !j.retried && !j.allow_failure)
        .map(job_doc)
        .collect();
    let title = trigger.commit.message.lines().next().unwrap_or("").trim();
    let short_sha: String = p.sha.chars().take(8).collect();
    let user = if trigger.user.login.is_empty() {
        trigger.user.name.clone()
    } else {
        trigger.user.login.clone()
    };
    json!({
        "event": event,
        "project": {"id": project.id, "path": project.path},
        "pipeline": {
            "id": p.id,
            "status": p.status.to_string(),
            "ref": p.git_ref,
            "sha": p.sha,
            "short_sha": short_sha,
            "source": p.source,
            "url": pipeline_url(external, &project.path, p.id),
            "errors": p.errors,
        },
        "commit": {
            "title": title,
            "author": trigger.commit.author_name,
        },
        "user": user,
        "failed_jobs": failed,
        "job": job.map(job_doc),
    })
}
