//! The documents of the REST API under `/api/v1`. Times are milliseconds since the Unix
//! epoch; ids are positive integers.

use crate::{FailureReason, JobStatus, PipelineStatus};
use serde::{Deserialize, Serialize};

/// Every error the API returns: `{"code": "not_found", "message": "…"}` with a fitting status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable and machine-readable: `not_found`, `bad_request`, `unauthorized`, `forbidden`,
    /// `conflict`, `invalid_pipeline`, `storage_full`, `internal`; webhooks add `unsigned`,
    /// `bad_signature`, `no_webhook_secret`, `replayed`, `malformed`, `missing_event`,
    /// `too_large`, `unknown_forge`.
    pub code: String,
    /// For a person: what went wrong and what to do.
    pub message: String,
}

/// One page of a list. Every list endpoint takes `?page=` (from 1) and `?per_page=` (1–100,
/// default 20) and answers with this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub per_page: u32,
    /// The next page's number, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectCreate {
    /// `group/name` or `name`: what `include:project` and `CI_PROJECT_PATH` use.
    pub path: String,
    /// A local path, `file://`, `http(s)://` or `ssh://` URL; empty or absent for a registry
    /// project that holds images only (no pipelines).
    #[serde(default)]
    pub git_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<String>,
    /// Defaults to `.gantry.yml`, then `.gitlab-ci.yml`, whichever the commit has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_file: Option<String>,
    /// For `http(s)://`: a user name and password or token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// For `ssh://`: a private key (OpenSSH format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<String>,
    /// The secret the forge's webhooks are authenticated with (GitLab's secret token, GitHub's
    /// and Gitea's webhook secret). When absent, Gantry makes one and returns it, once, in
    /// the answer ([`Project::webhook_secret`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// Poll the remote every this many seconds for new commits (for forges that cannot send
    /// webhooks); no polling when absent. See [`PollingUpdate`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_secs: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub id: i64,
    pub path: String,
    pub git_url: String,
    pub default_branch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_file: Option<String>,
    pub created_at: i64,
    /// Only in the answer to the registration that made it (no `webhook_secret` was given):
    /// it is stored encrypted and never shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

/// `POST /api/v1/projects/{project}/webhook-secret`: the project's new webhook secret, shown
/// this once; the old one stops working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSecret {
    pub webhook_secret: String,
}

/// The answer to a webhook delivery that was accepted: `201` with the pipeline it created
/// (`skipped` when the commit message says `[skip ci]`), or `200` with `created: false` and
/// the reason (a ping, a deleted branch, an event no pipeline runs on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookReply {
    pub created: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PipelineStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The delivery's record (`GET /api/v1/projects/{project}/webhook-deliveries`).
    pub delivery: i64,
}

/// A webhook request as Gantry recorded it: never its body, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    pub id: i64,
    pub project_id: i64,
    /// `gitlab`, `github` or `gitea` (Forgejo's deliveries are Gitea's).
    pub forge: String,
    /// The forge's event header: `Push Hook`, `pull_request`, …
    pub event: String,
    /// The forge's delivery id, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    pub received_at: i64,
    /// The HTTP status Gantry answered with.
    pub status: u16,
    /// `created`, `skipped`, `ignored`, `refused`, `failed`, or `accepted` while it is handled.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<i64>,
    /// Why it was refused, failed or ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /api/v1/projects/{id}/pipelines`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineCreate {
    /// A branch or tag; the project's default branch when absent.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// A commit; the ref's tip (fetched from the project's remote) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    #[serde(default)]
    pub variables: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub id: i64,
    pub project_id: i64,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub status: PipelineStatus,
    /// `CI_PIPELINE_SOURCE`: push, web, api, schedule, parent_pipeline, …
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_job_id: Option<i64>,
    /// The pipeline file's problems, rendered with file, line and column, when it could not
    /// be planned (the pipeline is then `failed` with no jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<String>,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// Present on `GET /pipelines/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Vec<Job>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: i64,
    pub pipeline_id: i64,
    pub name: String,
    pub stage: String,
    pub status: JobStatus,
    /// 1 for the first run; a retry is a new job with the next attempt number.
    pub attempt: u32,
    /// A newer attempt of this job exists.
    pub retried: bool,
    pub allow_failure: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<FailureReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why a pending job waits, e.g. "no online agent has tags [gpu]".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_reason: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<i64>,
    /// Who played a manual job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub played_by: Option<String>,
    pub log_size: u64,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub id: i64,
    pub name: String,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub executor: String,
    pub concurrency: u32,
    pub online: bool,
    /// Jobs it runs now.
    pub running: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<i64>,
    pub version: String,
}

/// `POST /api/v1/jobs/{id}/play` and friends name who acted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `POST /api/v1/projects/{project}/triggers`: a new trigger token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerTokenCreate {
    /// What the token is for ("nightly from the release repo"), shown in lists.
    #[serde(default)]
    pub description: String,
}

/// A trigger token of a project. `token` is only in the answer that created it: Gantry keeps
/// its hash, and shows `hint` (its first characters) to tell tokens apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerToken {
    pub id: i64,
    pub project_id: i64,
    pub description: String,
    pub hint: String,
    pub created_by: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `POST /api/v1/projects/{project}/trigger`, as JSON. The same fields are taken as a form
/// (`token`, `ref`, `variables[KEY]=value`, as GitLab's trigger API) or in the query string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRequest {
    #[serde(default)]
    pub token: String,
    /// A branch or tag; the project's default branch when absent.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default)]
    pub variables: std::collections::BTreeMap<String, String>,
}

/// `POST /api/v1/users` (administrators), and `gantry admin create-user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCreate {
    pub username: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// An instance administrator.
    #[serde(default)]
    pub admin: bool,
}

/// A user: never the password or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub email: String,
    pub admin: bool,
    pub blocked: bool,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login_at: Option<i64>,
}

/// `POST /api/v1/session`: sign in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    pub username: String,
    pub password: String,
}

/// A signed-in session. The cookie `gantry_session` carries `session` (HTTP-only); a change
/// made with it must send `csrf_token` in the `X-CSRF-Token` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: User,
    /// The cookie's value; the HTTP layer puts it in the cookie and leaves it out of the body.
    #[serde(default, skip_serializing)]
    pub session: String,
    pub csrf_token: String,
    pub expires_at: i64,
}

/// `POST /api/v1/user/tokens`: a personal access token for the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenCreate {
    pub name: String,
    pub scopes: Vec<crate::Scope>,
    /// When it stops working, ms since the epoch; never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// A personal access token; `token` only in the answer that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessToken {
    pub id: i64,
    pub name: String,
    pub hint: String,
    pub scopes: Vec<crate::Scope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A user's role in a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: i64,
    pub username: String,
    pub role: crate::Role,
    pub created_at: i64,
}

/// `POST /api/v1/projects/{project}/members`: give a user a role (or change it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSet {
    pub username: String,
    pub role: crate::Role,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<i64>,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

// ---- schedules and polling --------------------------------------------------------------------

/// `POST /api/v1/projects/{project}/schedules`: a cron schedule that starts pipelines with
/// source `schedule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleCreate {
    /// Shown in lists and to jobs as `CI_PIPELINE_SCHEDULE_DESCRIPTION`.
    pub description: String,
    /// A standard 5-field cron expression: minute hour day-of-month month day-of-week
    /// (`0 3 * * 1-5`).
    pub cron: String,
    /// An IANA time zone (`Europe/Paris`) the expression is read in; `UTC` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// A branch or tag; the project's default branch when absent.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default)]
    pub variables: Vec<KeyValue>,
    /// True when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// `PUT /api/v1/projects/{project}/schedules/{id}`: the fields to change; the others stay.
/// `variables`, when given, replaces the list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<Vec<KeyValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: i64,
    pub project_id: i64,
    pub description: String,
    pub cron: String,
    pub time_zone: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub variables: Vec<KeyValue>,
    pub active: bool,
    /// The next run (ms since the epoch); absent while inactive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<i64>,
    /// The same in ISO 8601, in the schedule's time zone (`2026-12-07T03:00:00+01:00`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at_iso: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pipeline_id: Option<i64>,
    /// Why the last run made no pipeline (the ref is gone, the remote failed), until one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `PUT /api/v1/projects/{project}/polling`: poll every `interval_secs` seconds (at least 1),
/// or stop polling (`null` or absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollingUpdate {
    #[serde(default)]
    pub interval_secs: Option<i64>,
}

/// A project's polling: its interval and how the last poll went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Polling {
    pub project_id: i64,
    /// `None`: the project is not polled.
    #[serde(default)]
    pub interval_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_poll_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_poll_at: Option<i64>,
    /// The last poll's failure (the remote unreachable, credentials refused), until a poll
    /// succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<i64>,
    /// How many branches and tags the polls have recorded.
    pub refs_seen: usize,
}

/// `PUT /api/v1/projects/{project}/forge`: where the project's commit statuses go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgeSettings {
    /// `gitlab`, `github`, `gitea` or `forgejo`.
    pub kind: String,
    /// The forge's base URL: `https://gitlab.example.com`, `https://api.github.com` (GitHub
    /// Enterprise: `https://HOST/api/v3`), `https://gitea.example.com`.
    pub api_url: String,
    /// GitLab: the project's id or path (`group/app`); GitHub, Gitea: `owner/repo`.
    pub repository: String,
    /// An access token that may set commit statuses. Write-only: never shown back. Leave it
    /// out to keep the token already stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Report every job too, not only the pipeline.
    #[serde(default)]
    pub job_statuses: bool,
}

/// A project's forge as the API shows it: never the token, only whether it is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forge {
    pub project_id: i64,
    /// `gitlab`, `github` or `gitea` (Forgejo is Gitea).
    pub kind: String,
    pub api_url: String,
    pub repository: String,
    pub token_set: bool,
    pub job_statuses: bool,
    pub updated_at: i64,
}

/// `POST /api/v1/projects/{project}/notifications`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationCreate {
    /// `email`, or a chat webhook: `slack` (and Slack-compatible: Mattermost, Rocket.Chat),
    /// `dingtalk`, `feishu` (Lark), `teams`, `generic` (Gantry's JSON event document).
    pub kind: String,
    /// Email: the addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Chat: the incoming webhook's URL. Write-only (it carries a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Among `failed`, `fixed`, `succeeded`, `manual` [default: failed, fixed, manual].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
}

/// A notification channel as the API shows it: never a webhook's URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: i64,
    pub project_id: i64,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    pub url_set: bool,
    pub events: Vec<String>,
    pub created_at: i64,
}

/// A message of the outbox: a commit status, an email or a chat message, and how sending it
/// went. Never a token, a webhook URL or the message itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub id: i64,
    /// `commit_status`, `email` or `chat`.
    pub kind: String,
    /// What it is for: `status:pipeline:12:running:…`, `notify:3:pipeline:12:failed:…`.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<i64>,
    /// `queued`, `sending`, `done`, `failed` (given up) or `superseded` (a newer status of the
    /// same pipeline or job was queued: the older one is not sent).
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `POST /api/v1/variables`, `POST /api/v1/projects/{project}/variables` (a new CI/CD
/// variable: `key` and `value` needed) and `PUT …/variables/{key}` (what is absent stays as
/// it is, the value too). The value is write-only: no answer ever carries it, and `Debug`
/// does not show it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableWrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Hidden in job logs (at least 8 characters, as GitLab asks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked: Option<bool>,
    /// Only for pipelines of protected branches and tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
    /// `env_var` (the default) or `file`: the job gets the path of a file with the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variable_type: Option<String>,
    /// `*` (the default: every job), an environment's name, or a glob (`review/*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl std::fmt::Debug for VariableWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VariableWrite")
            .field("key", &self.key)
            .field("value", &self.value.as_ref().map(|_| "[hidden]"))
            .field("masked", &self.masked)
            .field("protected", &self.protected)
            .field("variable_type", &self.variable_type)
            .field("environment_scope", &self.environment_scope)
            .finish_non_exhaustive()
    }
}

/// A CI/CD variable as the API shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    pub id: i64,
    /// Absent for an instance variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<i64>,
    pub key: String,
    pub masked: bool,
    pub protected: bool,
    pub variable_type: String,
    pub environment_scope: String,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `POST /api/v1/projects/{project}/protected-refs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectedRefCreate {
    /// A branch or tag name, or a glob: `main`, `release/*`, `v*`.
    pub pattern: String,
    /// `branch`, `tag` or `any` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// A protected branch or tag pattern of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectedRef {
    pub id: i64,
    pub pattern: String,
    pub kind: String,
    pub created_at: i64,
}

/// A project's registry settings (`GET`/`PUT /api/v1/projects/{p}/registry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Anyone, signed in or not, may pull its images.
    pub public: bool,
    /// The least role that pushes into its repositories.
    pub push_role: crate::Role,
    /// The least role that promotes images into it (`gantry image promote`).
    pub promote_role: crate::Role,
    /// Tag immutability and retention.
    #[serde(default)]
    pub policy: RegistryPolicy,
}

/// A project's tag rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryPolicy {
    /// Tags (globs: `v*`, `1.*`) that, once pushed, never point elsewhere nor go away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub immutable_tags: Vec<String>,
    /// Tags that move although they match `immutable_tags` (environment tags: `*-test`,
    /// `*-release`, `latest`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mutable_tags: Vec<String>,
    /// Which tags are removed when retention runs (with the registry's collection, or
    /// `POST /api/v1/projects/{p}/registry/retention`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<RetentionRule>,
}

/// Of the tags matching `tags` in each repository, keep the `keep_last` most recently
/// pushed and those pulled within `pulled_within_days`; remove the others. Immutable tags
/// always stay; tags no rule matches stay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    pub tags: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled_within_days: Option<u32>,
}

/// What retention removed (or would, in a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReport {
    /// `repository:tag` of each removed tag.
    pub removed: Vec<String>,
    /// Manifests removed because no tag named them any more.
    pub manifests_removed: usize,
    pub dry_run: bool,
}

/// A promotion inside the registry (`POST /api/v1/registry/promote`): the source image
/// (`dev/app:1.4` or `dev/app@sha256:…`) and the destination tag (`test/app:1.4-test`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePromote {
    pub source: String,
    pub destination: String,
}

/// What a promotion did: the digest both tags now name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePromoted {
    pub digest: String,
    pub source: String,
    pub destination: String,
    /// Manifests the destination received (the image, an index's images, referrers).
    pub manifests: usize,
}

/// A garbage collection of the registry (`POST /api/v1/registry/gc`, administrators).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryGc {
    /// Spare what is younger than this [default: the server's `--registry-gc-grace`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_secs: Option<u64>,
}

/// What a garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryGcReport {
    pub uploads_removed: u64,
    pub links_removed: u64,
    pub blobs_removed: u64,
    pub bytes_freed: u64,
}

/// A robot account to make (`POST /api/v1/projects/{p}/robots`): it logs in to the registry
/// as `robot$PROJECT+NAME` and pulls, or pulls and pushes, the project's repositories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobotCreate {
    pub name: String,
    /// `["pull"]` or `["pull", "push"]`.
    pub actions: Vec<String>,
    /// When it stops working, ms since the epoch; never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// A robot account; `token` only in the answer that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Robot {
    pub id: i64,
    /// What `docker login -u` takes: `robot$PROJECT+NAME`.
    pub username: String,
    pub actions: Vec<String>,
    pub hint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub created_by: String,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A replication rule to make (`POST /api/v1/projects/{p}/replications`) or the fields to
/// change (`PUT …/replications/{id}`: absent fields stay; `password: ""` removes it). The
/// password is write-only: no answer carries it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationWrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The destination registry: `https://harbor.example.com`, `registry.example.com:5000`
    /// (https), or `http://host:port` for plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Put in place of the project's path at the destination (`team` makes `dev/app` →
    /// `team/app`); empty: names are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Write-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A glob on repository names below the project's path (`app`, `tools/*`, `**`)
    /// [default: `**`, every one].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<String>,
    /// A glob on tags (`v*`, `*-release`) [default: `*`, every one].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    /// Replicate a matching tag as soon as it is pushed (or promoted) into the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_push: Option<bool>,
    /// A 5-field cron expression: replicate every matching tag at those minutes; `""`
    /// removes the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The schedule's IANA time zone [default: UTC].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Accept any TLS certificate from the destination (a self-signed one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
}

impl std::fmt::Debug for ReplicationWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationWrite")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[hidden]"))
            .finish_non_exhaustive()
    }
}

/// A replication rule of a project: which of its images go to which registry, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    pub url: String,
    pub namespace: String,
    pub username: String,
    /// Whether a password is set (it is never shown).
    pub has_password: bool,
    pub repositories: String,
    pub tags: String,
    pub on_push: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    pub time_zone: String,
    /// The next scheduled run, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<i64>,
    pub enabled: bool,
    pub insecure: bool,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<ReplicationRun>,
}

/// A run of a replication rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationRun {
    pub id: i64,
    pub replication_id: i64,
    /// `push`, `schedule` or `manual`.
    pub triggered_by: String,
    /// The pushed image, for `push` runs (the others replicate every matching tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Who pushed, or asked for the run (`schedule` for scheduled ones).
    pub actor: String,
    /// `queued` (also while it waits to be tried again: then `error` says why the last
    /// attempt failed), `running`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub queued_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// When a queued run is tried (again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<i64>,
    /// Tags put at the destination.
    pub images_copied: i64,
    /// Tags the destination had already, with the same digest.
    pub images_skipped: i64,
    /// Blobs uploaded (the destination lacked them).
    pub blobs_copied: i64,
    /// Blobs the destination mounted from another of its repositories (no byte sent).
    pub blobs_mounted: i64,
    /// Blobs the destination had already.
    pub blobs_skipped: i64,
    /// Bytes uploaded.
    pub bytes_copied: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
