//! The route table: every endpoint once, with who may call it. The router and the OpenAPI
//! document are both made from it.

pub mod accounts;
pub mod agent_ws;
pub mod api;
pub mod files;
pub mod hooks;
pub mod logs;
pub mod meta;
pub mod notify;
pub mod registry;
pub mod replication;
pub mod schedules;
pub mod triggers;
pub mod variables;

use crate::AppState;
use axum::Router;
use axum::routing::{MethodRouter, delete, get, post, put};
use gantry_api::Role;
use serde_json::{Map, Value, json};

/// Who may call an endpoint. [`crate::auth::authorize`] enforces it for every route before
/// the handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nobody needs a token (health, the API's own description, signing in).
    Public,
    /// An instance administrator: the administrator's token or an administrator user.
    Admin,
    /// Any user (a session or a personal access token) or the administrator's token; what
    /// it shows depends on who asks (the projects one is a member of).
    Signed,
    /// A user's own things (their tokens, their session): a session or a personal access
    /// token, not the administrator's token.
    User,
    /// At least this role in the project the path names (`{project}`, or the project of the
    /// pipeline or job `{id}`); administrators are owners everywhere. Non-members get 404.
    Project(Role),
    /// The registration token, in the body.
    Registration,
    /// An agent's token.
    Agent,
    /// A running job's token (its own job, or jobs of its pipeline for artifacts), or the
    /// administrator's.
    Job,
    /// As [`Access::Job`], or a user with at least this role in the job's project (a
    /// reporter downloading artifacts).
    JobOr(Role),
    /// Authenticated by the forge's signature, not a token: the project's webhook secret
    /// checks the request (GitLab's `X-Gitlab-Token`, GitHub's `X-Hub-Signature-256`,
    /// Gitea's and Forgejo's HMAC of the body).
    Webhook,
    /// A trigger token of the project, carried in the request (`token` in the JSON body, the
    /// form or the query string), not in a header.
    TriggerToken,
    /// A page of the web UI (HTML), checked as its [`PageAccess`] says, with a browser's
    /// answers: a signed-out visitor is redirected to `/login?next=…`, a refusal is a page
    /// (404 for non-members, as the API), and a form may carry the session's CSRF token in
    /// its `_csrf` field instead of the `X-CSRF-Token` header.
    Page(PageAccess),
}

/// Who may see a page of the web UI: as [`Access::Signed`], [`Access::Admin`],
/// [`Access::Project`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageAccess {
    Signed,
    Admin,
    Project(Role),
}

impl PageAccess {
    /// The API access it is checked as.
    pub fn api(self) -> Access {
        match self {
            PageAccess::Signed => Signed,
            PageAccess::Admin => Admin,
            PageAccess::Project(r) => Project(r),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    /// The JSON body it takes, by `gantry_api::rest` type name.
    pub body: Option<&'static str>,
}

impl Route {
    /// A route of the web UI (a page, its form or stream, the sign-in page, the assets): in
    /// the table (the router, the access checks) but not in the API's OpenAPI document.
    pub fn is_ui(&self) -> bool {
        !self.path.starts_with("/api/") && !matches!(self.path, "/healthz" | "/metrics")
    }
}

const fn r(
    method: &'static str,
    path: &'static str,
    access: Access,
    summary: &'static str,
    body: Option<&'static str>,
) -> Route {
    Route {
        method,
        path,
        access,
        summary,
        body,
    }
}

use Access::*;

pub const ROUTES: &[Route] = &[
    r(
        "GET",
        "/healthz",
        Public,
        "Liveness: 200 when the server answers",
        None,
    ),
    r(
        "GET",
        "/metrics",
        Public,
        "Prometheus metrics: queue, pickup latency, jobs by state, agents online",
        None,
    ),
    r(
        "GET",
        "/api/v1/openapi.json",
        Public,
        "This API's OpenAPI document",
        None,
    ),
    r(
        "POST",
        "/api/v1/session",
        Public,
        "Sign in with a user name and password: a session cookie (HTTP-only) and its CSRF token",
        Some("Login"),
    ),
    r(
        "DELETE",
        "/api/v1/session",
        User,
        "Sign out: the session ends",
        None,
    ),
    r("GET", "/api/v1/user", User, "The signed-in user", None),
    r(
        "GET",
        "/api/v1/user/tokens",
        User,
        "The user's personal access tokens (never the tokens)",
        None,
    ),
    r(
        "POST",
        "/api/v1/user/tokens",
        User,
        "Make a personal access token (scopes api, read_api, read_registry, write_registry; \
         an expiry), shown this once",
        Some("AccessTokenCreate"),
    ),
    r(
        "DELETE",
        "/api/v1/user/tokens/{id}",
        User,
        "Revoke one of the user's personal access tokens",
        None,
    ),
    r("GET", "/api/v1/users", Admin, "All users", None),
    r(
        "POST",
        "/api/v1/users",
        Admin,
        "Make a local user (Argon2id password)",
        Some("UserCreate"),
    ),
    r(
        "GET",
        "/api/v1/audit-log",
        Admin,
        "Who did what and when, newest first: sign-ins, tokens, members, manual jobs, settings",
        None,
    ),
    r(
        "GET",
        "/api/v1/projects/{project}/members",
        Project(Role::Guest),
        "The project's members and their roles",
        None,
    ),
    r(
        "POST",
        "/api/v1/projects/{project}/members",
        Project(Role::Maintainer),
        "Give a user a role in the project, or change it (only owners give or take owner)",
        Some("MemberSet"),
    ),
    r(
        "DELETE",
        "/api/v1/projects/{project}/members/{username}",
        Project(Role::Maintainer),
        "Take a user's role in the project away",
        None,
    ),
    r(
        "POST",
        "/api/v1/projects",
        Signed,
        "Register a project (git URL, credentials, default branch, pipeline file)",
        Some("ProjectCreate"),
    ),
    r("GET", "/api/v1/projects", Signed, "List projects", None),
    r(
        "GET",
        "/api/v1/projects/{project}",
        Project(Role::Guest),
        "A project, by id or URL-encoded path",
        None,
    ),
    r(
        "POST",
        "/api/v1/projects/{project}/webhook-secret",
        Project(Role::Maintainer),
        "Give the project a new webhook secret, shown this once (the old one stops working)",
        None,
    ),
    r(
        "POST",
        "/api/v1/registry/promote",
        Signed,
        "Promote an image by digest (dev/app:1.4 → test/app:1.4-test): pull in the source \
         project and the destination's promote role; no layer is copied",
        Some("ImagePromote"),
    ),
    r(
        "POST",
        "/api/v1/registry/gc",
        Admin,
        "Collect the registry's garbage now: unused links and unlinked blobs older than the \
         grace period, abandoned uploads",
        Some("RegistryGc"),
    ),
    r(
        "POST",
        "/api/v1/projects/{project}/registry/retention",
        Project(Role::Maintainer),
        "Apply the project's retention rules now (?dry_run=true: only say what would go)",
        None,
    ),
    r(
        "GET",
        "/api/v1/projects/{project}/robots",
        Project(Role::Maintainer),
        "The project's registry robot accounts (their tokens are never shown again)",
        None,
    ),
    r(
        "POST",
        "/api/v1/projects/{project}/robots",
        Project(Role::Maintainer),
        "Make a robot account (robot$PROJECT+NAME) that pulls, or pulls and pushes, the \
         project's images; its token is in this answer only",
        Some("RobotCreate"),
    ),
    r(
        "DELETE",
        "/api/v1/projects/{project}/robots/{id}",
        Project(Role::Maintainer),
        "Revoke a robot account",
        None,
    ),
    r(
        "GET",
        "/api/v1/projects/{project}/registry",
        Project(Role::Guest),
        "The project's registry settings: public pulls, who pushes, who promotes",
        None,
    ),
    r(
        "PUT",
        "/api/v1/projects/{project}/registry",
        Project(Role::Maintainer),
        "Change the project's registry settings",
        Some("RegistrySettings"),
    ),
    r(
        "GET",
        "/api/v1/projects/{project}/replications",
        Project(Role::Developer),
        "The project's registry replication rules (where its images are pushed, on push or on \
         a schedule), each with its last run; passwords are never shown",
        None,
    ),
    r(
        "POST",
        "/api/v1/projects/{project}/replications",
        Project(Role::Maintainer),
        "Make a replication rule: the destination registry (URL, namespace, credentials; the \
         password is write-only), repository and tag globs, on_push and/or a cron schedule",
        Some("ReplicationWrite"),
    ),
    r(
        "GET",
        "/api/v1/projects/{project}/replications/{id}",
        Project(Role::Developer),
        "A replication rule, with its last run and next scheduled run",
        None,
    ),
    r(
        "PUT",
        "/api/v1/projects/{project}/replications/{id}",
        Project(Role::Maintainer),
        "Change a replication rule's fields (absent ones stay; \"password\": \"\" removes it)",
        Some("ReplicationWrite"),
    ),
    r(
        "DELETE",
        "/api/v1/projects/{project}/replications/{id}",
        Project(Role::Maintainer),
        "Delete a replication rule and its runs' history",
        None,
    ),
    r(
        "POST",
        "/api/v1/projects/{project}/replications/{id}/run",
        Project(Role::Maintainer),
        "Replicate every matching tag now: 202 with the queued run",
        None,
    ),
    r(
        "GET",
        "/api/v1/projects/{project}/replications/{id}/runs",
        Project(Role::Developer),
        "A replication rule's runs, newest first: trigger, status, attempts, images and blobs \
         copied or skipped, bytes, error",
        None,
    ),
    r(
        "GET",
        "/api/v1/projects/{project}/webhook-deliveries",
        Project(Role::Maintainer),
        "The project's webhook deliveries, newest first: status, outcome, pipeline, error",
        None,
    ),
    r(
        "GET",
        "/api/v1/projects/{project}/schedules",
        Project(Role::Reporter),
        "The project's cron schedules, with their next run",
        None,
    ),
    r(
        "POST",
        "/api/v1/projects/{project}/schedules",
        Project(Role::Maintainer),
        "Create a cron schedule (expression, time zone, ref, variables, active)",
        Some("ScheduleCreate"),
    ),
    r(
        "GET",
        "/api/v1/projects/{project}/schedules/{id}",
        Project(Role::Reporter),
        "A schedule, with its next run and last pipeline",
        None,
    ),
    r(
        "PUT",
        "/api/v1/projects/{project}/schedules/{id}",
        Project(Role::Maintainer),
        "Change a schedule's fields (activating it computes its next run from now)",
        Some("ScheduleUpdate"),
    ),
    r(
        "DELETE",
        "/api/v1/projects/{project}/schedules/{id}",
        Project(Role::Maintainer),
        "Delete a schedule",
        None,
    ),
    r(
        "POST",
        "/api/v1/projects/{project}/schedules/{id}/play",
        Project(Role::Developer),
        "Run a schedule now (source schedule); its next run stays",
        None,
    ),
    r(
        "PUT",
        "/api/v1/projects/{project}/forge",
        Project(Role::Maintainer),
        "Set the forge that gets the project's commit statuses (GitLab, GitHub, Gitea/Forgejo); \
         the token is write-only",
        Some("ForgeSettings"),
    ),
    r(
        "GET",
        "/api/v1/projects/{project}/forge",
        Project(Role::Maintainer),
        "The project's forge: kind, API URL, repository, whether a token is set",
        None,
    ),
    r(
        "DELETE",
        "/api/v1/projects/{project}/forge",
        Project(Role::Maintainer),
        "Stop sending commit statuses",
        None,
    ),
    r(
        "GET",
        "/api/v1/projects/{project}/polling",
        Project(Role::Maintainer),
        "The project's polling interval and its last poll (time, error)",
        None,
    ),
    r(
        "PUT",
        "/api/v1/projects/{project}/polling",
        Project(Role::Maintainer),
        "Poll the remote every interval_secs for new commits (null: stop polling)",
        Some("PollingUpdate"),
    ),
    r(
        "GET",
        "/api/v1/projects/{project}/notifications",
        Project(Role::Maintainer),
        "The project's notification channels (email, chat webhooks) and their events",
        None,
    ),
    r(
        "POST",
        "/api/v1/projects/{project}/notifications",
        Project(Role::Maintainer),
        "Add a notification channel: email recipients or a chat webhook (slack, dingtalk, \
         feishu, teams, generic) for failed, fixed, succeeded, manual",
        Some("NotificationCreate"),
    ),
    r(
        "DELETE",
        "/api/v1/projects/{project}/notifications/{id}",
        Project(Role::Maintainer),
        "Remove a notification channel",
        None,
    ),
    r(
        "GET",
        "/api/v1/projects/{project}/outbox",
        Project(Role::Maintainer),
        "Commit statuses and notifications, newest first: state, attempts, last error",
        None,
    ),
    r(
        "POST",
        "/api/v1/hooks/{forge}/{*project}",
        Webhook,
        "A webhook from GitLab, GitHub, Gitea or Forgejo (forge: gitlab, github, gitea, forgejo; \
         project: its id or path): push and merge request events start pipelines",
        Some("ForgePayload"),
    ),
    r(
        "POST",
        "/api/v1/projects/{project}/triggers",
        Project(Role::Maintainer),
        "Make a trigger token for the project, shown this once",
        Some("TriggerTokenCreate"),
    ),
    r(
        "GET",
        "/api/v1/projects/{project}/triggers",
        Project(Role::Maintainer),
        "The project's trigger tokens (their first characters, never the tokens)",
        None,
    ),
    r(
        "DELETE",
        "/api/v1/projects/{project}/triggers/{id}",
        Project(Role::Maintainer),
        "Revoke a trigger token",
        None,
    ),
    r(
        "GET",
        "/api/v1/variables",
        Admin,
        "The instance's CI/CD variables (keys and flags, never values)",
        None,
    ),
    r(
        "POST",
        "/api/v1/variables",
        Admin,
        "Make an instance CI/CD variable (masked, protected, file, environment scope); the \
         value is write-only",
        Some("VariableCreate"),
    ),
    r(
        "PUT",
        "/api/v1/variables/{key}",
        Admin,
        "Change an instance variable (?environment_scope= names one of several); without a \
         value the stored one stays",
        Some("VariableUpdate"),
    ),
    r(
        "DELETE",
        "/api/v1/variables/{key}",
        Admin,
        "Delete an instance variable (?environment_scope= names one of several)",
        None,
    ),
    r(
        "GET",
        "/api/v1/projects/{project}/variables",
        Project(Role::Maintainer),
        "The project's CI/CD variables (keys and flags, never values)",
        None,
    ),
    r(
        "POST",
        "/api/v1/projects/{project}/variables",
        Project(Role::Maintainer),
        "Make a project CI/CD variable (masked, protected, file, environment scope); the \
         value is write-only",
        Some("VariableCreate"),
    ),
    r(
        "PUT",
        "/api/v1/projects/{project}/variables/{key}",
        Project(Role::Maintainer),
        "Change a project variable (?environment_scope= names one of several); without a \
         value the stored one stays",
        Some("VariableUpdate"),
    ),
    r(
        "DELETE",
        "/api/v1/projects/{project}/variables/{key}",
        Project(Role::Maintainer),
        "Delete a project variable (?environment_scope= names one of several)",
        None,
    ),
    r(
        "GET",
        "/api/v1/projects/{project}/protected-refs",
        Project(Role::Reporter),
        "The project's protected branch and tag patterns (the default branch is protected too)",
        None,
    ),
    r(
        "POST",
        "/api/v1/projects/{project}/protected-refs",
        Project(Role::Maintainer),
        "Protect a branch or tag pattern (main, release/*, v*): its pipelines get protected \
         variables",
        Some("ProtectedRefCreate"),
    ),
    r(
        "DELETE",
        "/api/v1/projects/{project}/protected-refs/{id}",
        Project(Role::Maintainer),
        "Unprotect a pattern",
        None,
    ),
    r(
        "POST",
        "/api/v1/projects/{project}/trigger",
        TriggerToken,
        "Start a pipeline with a trigger token (source trigger): token, ref and variables as \
         JSON, as a form (variables[KEY]=value) or in the query string",
        Some("TriggerRequest"),
    ),
    r(
        "POST",
        "/api/v1/projects/{project}/pipelines",
        Project(Role::Developer),
        "Create a pipeline for a ref or commit, with variables",
        Some("PipelineCreate"),
    ),
    r(
        "GET",
        "/api/v1/projects/{project}/pipelines",
        Project(Role::Reporter),
        "A project's pipelines, newest first",
        None,
    ),
    r(
        "GET",
        "/api/v1/pipelines",
        Admin,
        "All pipelines, newest first",
        None,
    ),
    r(
        "GET",
        "/api/v1/pipelines/{id}",
        Project(Role::Reporter),
        "A pipeline with its jobs (every attempt)",
        None,
    ),
    r(
        "POST",
        "/api/v1/pipelines/{id}/cancel",
        Project(Role::Developer),
        "Cancel every unfinished job",
        None,
    ),
    r(
        "POST",
        "/api/v1/pipelines/{id}/retry",
        Project(Role::Developer),
        "Retry the failed, canceled and skipped jobs",
        None,
    ),
    r(
        "GET",
        "/api/v1/pipelines/{id}/jobs",
        Project(Role::Reporter),
        "A pipeline's jobs",
        None,
    ),
    r(
        "GET",
        "/api/v1/jobs/{id}",
        Project(Role::Reporter),
        "A job",
        None,
    ),
    r(
        "POST",
        "/api/v1/jobs/{id}/retry",
        Project(Role::Developer),
        "Run a finished job again as a new attempt",
        None,
    ),
    r(
        "POST",
        "/api/v1/jobs/{id}/play",
        Project(Role::Developer),
        "Play a manual job",
        Some("Actor"),
    ),
    r(
        "POST",
        "/api/v1/jobs/{id}/cancel",
        Project(Role::Developer),
        "Cancel a job",
        None,
    ),
    r(
        "GET",
        "/api/v1/jobs/{id}/log",
        Project(Role::Reporter),
        "The job's log, whole or by byte range (Range: bytes=a-b)",
        None,
    ),
    r(
        "GET",
        "/api/v1/jobs/{id}/log/stream",
        Project(Role::Reporter),
        "The job's log live, as server-sent events; resumes from Last-Event-ID",
        None,
    ),
    r(
        "GET",
        "/api/v1/job",
        Job,
        "The job a CI_JOB_TOKEN belongs to (GitLab's GET /job), while it runs",
        None,
    ),
    r(
        "GET",
        "/api/v1/jobs/{id}/artifacts",
        JobOr(Role::Reporter),
        "The job's artifacts archive (tar): for jobs of the caller's pipeline, and for \
         reporters of the project",
        None,
    ),
    r(
        "PUT",
        "/api/v1/jobs/{id}/artifacts",
        Job,
        "Upload the running job's artifacts archive (tar)",
        None,
    ),
    r(
        "GET",
        "/api/v1/jobs/{id}/source",
        Job,
        "The running job's commit as a tar",
        None,
    ),
    r(
        "GET",
        "/api/v1/jobs/{id}/cache/{key}",
        Job,
        "A cache archive of the job's project",
        None,
    ),
    r(
        "PUT",
        "/api/v1/jobs/{id}/cache/{key}",
        Job,
        "Upload a cache archive for the job's project",
        None,
    ),
    r(
        "GET",
        "/api/v1/agents",
        Admin,
        "List agents, online or not, with their running jobs",
        None,
    ),
    r(
        "DELETE",
        "/api/v1/agents/{id}",
        Admin,
        "Revoke an agent's token: it cannot connect again, and its connection ends",
        None,
    ),
    r(
        "POST",
        "/api/v1/agents/register",
        Registration,
        "Register an agent with the registration token",
        Some("RegisterRequest"),
    ),
    r(
        "GET",
        "/api/v1/agents/connect",
        Agent,
        "The agent's WebSocket: jobs pushed, logs and results back",
        None,
    ),
    // ---- the web UI (HTML pages, crate::ui) ----
    r("GET", "/login", Public, "Web UI: the sign-in page", None),
    r(
        "POST",
        "/login",
        Public,
        "Web UI: sign in with the form (user name, password): the session cookie, then the page asked for",
        None,
    ),
    r(
        "GET",
        "/static/{file}",
        Public,
        "Web UI: the stylesheet and the script (content-hashed URLs, cached for a year)",
        None,
    ),
    r(
        "POST",
        "/logout",
        Page(PageAccess::Signed),
        "Web UI: sign out",
        None,
    ),
    r(
        "GET",
        "/",
        Page(PageAccess::Signed),
        "Web UI: the projects one is a member of, with their default branch's last pipeline",
        None,
    ),
    r(
        "GET",
        "/agents",
        Page(PageAccess::Admin),
        "Web UI: agents, online or not, their tags, executor, jobs and last contact",
        None,
    ),
    r(
        "POST",
        "/agents/revoke",
        Page(PageAccess::Admin),
        "Web UI: revoke an agent's token",
        None,
    ),
    r(
        "GET",
        "/admin/audit",
        Page(PageAccess::Admin),
        "Web UI: the audit log",
        None,
    ),
    r(
        "GET",
        "/projects/{project}",
        Page(PageAccess::Project(Role::Guest)),
        "Web UI: a project, its refs and their last pipelines",
        None,
    ),
    r(
        "GET",
        "/projects/{project}/pipelines",
        Page(PageAccess::Project(Role::Reporter)),
        "Web UI: a project's pipelines, filtered by ref, status and source, live",
        None,
    ),
    r(
        "GET",
        "/projects/{project}/pipelines/stream",
        Page(PageAccess::Project(Role::Reporter)),
        "Web UI: the pipelines list's live changes (server-sent events)",
        None,
    ),
    r(
        "GET",
        "/projects/{project}/pipelines/new",
        Page(PageAccess::Project(Role::Developer)),
        "Web UI: the form to run a pipeline for a ref with variables",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/pipelines",
        Page(PageAccess::Project(Role::Developer)),
        "Web UI: run a pipeline (source web)",
        None,
    ),
    r(
        "GET",
        "/projects/{project}/lint",
        Page(PageAccess::Project(Role::Developer)),
        "Web UI: the lint page",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/lint",
        Page(PageAccess::Project(Role::Developer)),
        "Web UI: lint a pipeline file for a ref and a source: diagnostics at their lines, the planned graph",
        None,
    ),
    r(
        "GET",
        "/projects/{project}/settings",
        Page(PageAccess::Project(Role::Maintainer)),
        "Web UI: a project's settings: members, variables, schedules, webhooks, notifications, trigger tokens",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/settings/members",
        Page(PageAccess::Project(Role::Maintainer)),
        "Web UI: give a user a role in the project",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/settings/members/remove",
        Page(PageAccess::Project(Role::Maintainer)),
        "Web UI: take a user's role away",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/settings/variables",
        Page(PageAccess::Project(Role::Maintainer)),
        "Web UI: add a CI/CD variable (its value is write-only)",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/settings/variables/delete",
        Page(PageAccess::Project(Role::Maintainer)),
        "Web UI: delete a CI/CD variable",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/settings/schedules",
        Page(PageAccess::Project(Role::Maintainer)),
        "Web UI: add a cron schedule",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/settings/schedules/delete",
        Page(PageAccess::Project(Role::Maintainer)),
        "Web UI: delete a schedule",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/settings/schedules/play",
        Page(PageAccess::Project(Role::Maintainer)),
        "Web UI: run a schedule now",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/settings/triggers",
        Page(PageAccess::Project(Role::Maintainer)),
        "Web UI: make a trigger token (shown once)",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/settings/notifications",
        Page(PageAccess::Project(Role::Maintainer)),
        "Web UI: add a notification channel (its webhook URL write-only)",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/settings/notifications/delete",
        Page(PageAccess::Project(Role::Maintainer)),
        "Web UI: remove a notification channel",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/settings/triggers/delete",
        Page(PageAccess::Project(Role::Maintainer)),
        "Web UI: revoke a trigger token",
        None,
    ),
    r(
        "GET",
        "/projects/{project}/registry",
        Page(PageAccess::Project(Role::Guest)),
        "Web UI: the project's registry: repositories, the pull command, registry settings",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/registry/settings",
        Page(PageAccess::Project(Role::Maintainer)),
        "Web UI: change the registry settings (public, push and promote roles, tag rules, retention)",
        None,
    ),
    r(
        "GET",
        "/projects/{project}/registry/repositories/{*name}",
        Page(PageAccess::Project(Role::Guest)),
        "Web UI: a repository's tags (digest, kind, size, pushed, last pulled)",
        None,
    ),
    r(
        "GET",
        "/projects/{project}/registry/images/{*reference}",
        Page(PageAccess::Project(Role::Guest)),
        "Web UI: an image by NAME:TAG or NAME@DIGEST: layers, config, platforms, referrers, tags",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/registry/tags/delete",
        Page(PageAccess::Project(Role::Maintainer)),
        "Web UI: delete a tag (the checks of the Distribution API's DELETE: immutable tags stay)",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/registry/promote",
        Page(PageAccess::Project(Role::Guest)),
        "Web UI: promote an image of the project (the checks of POST /api/v1/registry/promote)",
        None,
    ),
    r(
        "GET",
        "/projects/{project}/registry/robots",
        Page(PageAccess::Project(Role::Maintainer)),
        "Web UI: the project's robot accounts",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/registry/robots",
        Page(PageAccess::Project(Role::Maintainer)),
        "Web UI: make a robot account (its secret shown once)",
        None,
    ),
    r(
        "POST",
        "/projects/{project}/registry/robots/revoke",
        Page(PageAccess::Project(Role::Maintainer)),
        "Web UI: revoke a robot account",
        None,
    ),
    r(
        "GET",
        "/projects/{project}/registry/history",
        Page(PageAccess::Project(Role::Reporter)),
        "Web UI: the registry's history: promotions, deletions, retention",
        None,
    ),
    r(
        "GET",
        "/pipelines/{id}",
        Page(PageAccess::Project(Role::Reporter)),
        "Web UI: a pipeline's graph, live",
        None,
    ),
    r(
        "GET",
        "/pipelines/{id}/stream",
        Page(PageAccess::Project(Role::Reporter)),
        "Web UI: the pipeline graph's live changes (server-sent events)",
        None,
    ),
    r(
        "POST",
        "/pipelines/{id}/cancel",
        Page(PageAccess::Project(Role::Developer)),
        "Web UI: cancel a pipeline",
        None,
    ),
    r(
        "POST",
        "/pipelines/{id}/retry",
        Page(PageAccess::Project(Role::Developer)),
        "Web UI: retry a pipeline's failed jobs",
        None,
    ),
    r(
        "GET",
        "/jobs/{id}",
        Page(PageAccess::Project(Role::Reporter)),
        "Web UI: a job: its live log, its metadata, its artifacts",
        None,
    ),
    r(
        "GET",
        "/jobs/{id}/stream",
        Page(PageAccess::Project(Role::Reporter)),
        "Web UI: the job's live state (server-sent events; the log has its own stream)",
        None,
    ),
    r(
        "GET",
        "/jobs/{id}/artifacts/browse",
        Page(PageAccess::Project(Role::Reporter)),
        "Web UI: the files of a job's artifacts",
        None,
    ),
    r(
        "GET",
        "/jobs/{id}/log/lines",
        Page(PageAccess::Project(Role::Reporter)),
        "Web UI: how many lines the job's log has before a byte offset (line numbers of a large log's end)",
        None,
    ),
    r(
        "GET",
        "/jobs/{id}/tests",
        Page(PageAccess::Project(Role::Reporter)),
        "Web UI: the job's JUnit results (artifacts:reports:junit)",
        None,
    ),
    r(
        "GET",
        "/jobs/{id}/artifacts/file",
        Page(PageAccess::Project(Role::Reporter)),
        "Web UI: one file of a job's artifacts",
        None,
    ),
    r(
        "POST",
        "/jobs/{id}/retry",
        Page(PageAccess::Project(Role::Developer)),
        "Web UI: retry a job",
        None,
    ),
    r(
        "POST",
        "/jobs/{id}/cancel",
        Page(PageAccess::Project(Role::Developer)),
        "Web UI: cancel a job",
        None,
    ),
    r(
        "GET",
        "/jobs/{id}/play",
        Page(PageAccess::Project(Role::Developer)),
        "Web UI: the confirmation of a manual job, naming it and its environment",
        None,
    ),
    r(
        "POST",
        "/jobs/{id}/play",
        Page(PageAccess::Project(Role::Developer)),
        "Web UI: play a manual job (the approval: who played it is recorded)",
        None,
    ),
];

fn handler(method: &str, path: &str) -> MethodRouter<AppState> {
    match (method, path) {
        ("GET", "/healthz") => get(meta::healthz),
        ("GET", "/metrics") => get(meta::metrics),
        ("GET", "/api/v1/openapi.json") => get(meta::openapi),
        ("POST", "/api/v1/session") => post(accounts::login),
        ("DELETE", "/api/v1/session") => delete(accounts::logout),
        ("GET", "/api/v1/user") => get(accounts::me),
        ("GET", "/api/v1/user/tokens") => get(accounts::tokens),
        ("POST", "/api/v1/user/tokens") => post(accounts::create_token),
        ("DELETE", "/api/v1/user/tokens/{id}") => delete(accounts::revoke_token),
        ("GET", "/api/v1/users") => get(accounts::users),
        ("POST", "/api/v1/users") => post(accounts::create_user),
        ("GET", "/api/v1/audit-log") => get(accounts::audit_log),
        ("GET", "/api/v1/projects/{project}/members") => get(accounts::members),
        ("POST", "/api/v1/projects/{project}/members") => post(accounts::set_member),
        ("DELETE", "/api/v1/projects/{project}/members/{username}") => {
            delete(accounts::remove_member)
        }
        ("POST", "/api/v1/projects") => post(api::create_project),
        ("GET", "/api/v1/projects") => get(api::list_projects),
        ("GET", "/api/v1/projects/{project}") => get(api::get_project),
        ("POST", "/api/v1/projects/{project}/webhook-secret") => post(hooks::regenerate_secret),
        ("GET", "/api/v1/projects/{project}/registry") => get(registry::settings),
        ("POST", "/api/v1/registry/promote") => post(registry::promote),
        ("POST", "/api/v1/registry/gc") => post(registry::gc),
        ("GET", "/api/v1/projects/{project}/robots") => get(registry::robots),
        ("POST", "/api/v1/projects/{project}/registry/retention") => post(registry::retention),
        ("POST", "/api/v1/projects/{project}/robots") => post(registry::create_robot),
        ("DELETE", "/api/v1/projects/{project}/robots/{id}") => delete(registry::revoke_robot),
        ("PUT", "/api/v1/projects/{project}/registry") => put(registry::set_settings),
        ("GET", "/api/v1/projects/{project}/replications") => get(replication::list),
        ("POST", "/api/v1/projects/{project}/replications") => post(replication::create),
        ("GET", "/api/v1/projects/{project}/replications/{id}") => get(replication::get),
        ("PUT", "/api/v1/projects/{project}/replications/{id}") => put(replication::update),
        ("DELETE", "/api/v1/projects/{project}/replications/{id}") => delete(replication::delete),
        ("POST", "/api/v1/projects/{project}/replications/{id}/run") => post(replication::run),
        ("GET", "/api/v1/projects/{project}/replications/{id}/runs") => get(replication::runs),
        ("GET", "/api/v1/projects/{project}/webhook-deliveries") => get(hooks::deliveries),
        ("GET", "/api/v1/projects/{project}/schedules") => get(schedules::list),
        ("POST", "/api/v1/projects/{project}/schedules") => post(schedules::create),
        ("GET", "/api/v1/projects/{project}/schedules/{id}") => get(schedules::get),
        ("PUT", "/api/v1/projects/{project}/schedules/{id}") => put(schedules::update),
        ("DELETE", "/api/v1/projects/{project}/schedules/{id}") => delete(schedules::delete),
        ("POST", "/api/v1/projects/{project}/schedules/{id}/play") => post(schedules::play),
        ("GET", "/api/v1/projects/{project}/polling") => get(schedules::get_polling),
        ("PUT", "/api/v1/projects/{project}/polling") => put(schedules::set_polling),
        ("PUT", "/api/v1/projects/{project}/forge") => put(notify::put_forge),
        ("GET", "/api/v1/projects/{project}/forge") => get(notify::get_forge),
        ("DELETE", "/api/v1/projects/{project}/forge") => delete(notify::delete_forge),
        ("GET", "/api/v1/projects/{project}/notifications") => get(notify::list_notifications),
        ("POST", "/api/v1/projects/{project}/notifications") => post(notify::add_notification),
        ("DELETE", "/api/v1/projects/{project}/notifications/{id}") => {
            delete(notify::delete_notification)
        }
        ("GET", "/api/v1/projects/{project}/outbox") => get(notify::outbox),
        ("POST", "/api/v1/hooks/{forge}/{*project}") => post(hooks::receive),
        ("POST", "/api/v1/projects/{project}/triggers") => post(triggers::create),
        ("GET", "/api/v1/projects/{project}/triggers") => get(triggers::list),
        ("DELETE", "/api/v1/projects/{project}/triggers/{id}") => delete(triggers::delete),
        ("POST", "/api/v1/projects/{project}/trigger") => post(triggers::trigger),
        ("GET", "/api/v1/variables") => get(variables::list_instance),
        ("POST", "/api/v1/variables") => post(variables::create_instance),
        ("PUT", "/api/v1/variables/{key}") => put(variables::update_instance),
        ("DELETE", "/api/v1/variables/{key}") => delete(variables::delete_instance),
        ("GET", "/api/v1/projects/{project}/variables") => get(variables::list_project),
        ("POST", "/api/v1/projects/{project}/variables") => post(variables::create_project),
        ("PUT", "/api/v1/projects/{project}/variables/{key}") => put(variables::update_project),
        ("DELETE", "/api/v1/projects/{project}/variables/{key}") => {
            delete(variables::delete_project)
        }
        ("GET", "/api/v1/projects/{project}/protected-refs") => get(variables::list_protected),
        ("POST", "/api/v1/projects/{project}/protected-refs") => post(variables::create_protected),
        ("DELETE", "/api/v1/projects/{project}/protected-refs/{id}") => {
            delete(variables::delete_protected)
        }
        ("POST", "/api/v1/projects/{project}/pipelines") => post(api::create_pipeline),
        ("GET", "/api/v1/projects/{project}/pipelines") => get(api::project_pipelines),
        ("GET", "/api/v1/pipelines") => get(api::list_pipelines),
        ("GET", "/api/v1/pipelines/{id}") => get(api::get_pipeline),
        ("POST", "/api/v1/pipelines/{id}/cancel") => post(api::cancel_pipeline),
        ("POST", "/api/v1/pipelines/{id}/retry") => post(api::retry_pipeline),
        ("GET", "/api/v1/pipelines/{id}/jobs") => get(api::pipeline_jobs),
        ("GET", "/api/v1/jobs/{id}") => get(api::get_job),
        ("POST", "/api/v1/jobs/{id}/retry") => post(api::retry_job),
        ("POST", "/api/v1/jobs/{id}/play") => post(api::play_job),
        ("POST", "/api/v1/jobs/{id}/cancel") => post(api::cancel_job),
        ("GET", "/api/v1/jobs/{id}/log") => get(logs::whole),
        ("GET", "/api/v1/jobs/{id}/log/stream") => get(logs::stream),
        ("GET", "/api/v1/job") => get(files::own_job),
        ("GET", "/api/v1/jobs/{id}/artifacts") => get(files::get_artifacts),
        ("PUT", "/api/v1/jobs/{id}/artifacts") => put(files::put_artifacts),
        ("GET", "/api/v1/jobs/{id}/source") => get(files::source),
        ("GET", "/api/v1/jobs/{id}/cache/{key}") => get(files::get_cache),
        ("PUT", "/api/v1/jobs/{id}/cache/{key}") => put(files::put_cache),
        ("GET", "/api/v1/agents") => get(api::list_agents),
        ("DELETE", "/api/v1/agents/{id}") => delete(api::revoke_agent),
        ("POST", "/api/v1/agents/register") => post(api::register_agent),
        ("GET", "/api/v1/agents/connect") => get(agent_ws::connect),
        ("GET", "/login") => get(crate::ui::session::login_page),
        ("POST", "/login") => post(crate::ui::session::login),
        ("GET", "/static/{file}") => get(crate::ui::asset),
        ("POST", "/logout") => post(crate::ui::session::logout),
        ("GET", "/") => get(crate::ui::projects::list),
        ("GET", "/agents") => get(crate::ui::admin::agents),
        ("POST", "/agents/revoke") => post(crate::ui::admin::revoke_agent),
        ("GET", "/admin/audit") => get(crate::ui::admin::audit),
        ("GET", "/projects/{project}") => get(crate::ui::projects::show),
        ("GET", "/projects/{project}/pipelines") => get(crate::ui::pipelines::list),
        ("GET", "/projects/{project}/pipelines/stream") => get(crate::ui::live::pipelines_stream),
        ("GET", "/projects/{project}/pipelines/new") => get(crate::ui::pipelines::new_form),
        ("POST", "/projects/{project}/pipelines") => post(crate::ui::pipelines::create),
        ("GET", "/projects/{project}/lint") => get(crate::ui::lint::page),
        ("POST", "/projects/{project}/lint") => post(crate::ui::lint::run),
        ("GET", "/projects/{project}/settings") => get(crate::ui::settings::page),
        ("POST", "/projects/{project}/settings/members") => post(crate::ui::settings::set_member),
        ("POST", "/projects/{project}/settings/members/remove") => {
            post(crate::ui::settings::remove_member)
        }
        ("POST", "/projects/{project}/settings/variables") => {
            post(crate::ui::settings::add_variable)
        }
        ("POST", "/projects/{project}/settings/variables/delete") => {
            post(crate::ui::settings::delete_variable)
        }
        ("POST", "/projects/{project}/settings/schedules") => {
            post(crate::ui::settings::add_schedule)
        }
        ("POST", "/projects/{project}/settings/schedules/delete") => {
            post(crate::ui::settings::delete_schedule)
        }
        ("POST", "/projects/{project}/settings/schedules/play") => {
            post(crate::ui::settings::play_schedule)
        }
        ("POST", "/projects/{project}/settings/triggers") => post(crate::ui::settings::add_trigger),
        ("POST", "/projects/{project}/settings/notifications") => {
            post(crate::ui::settings::add_notification)
        }
        ("POST", "/projects/{project}/settings/notifications/delete") => {
            post(crate::ui::settings::delete_notification)
        }
        ("POST", "/projects/{project}/settings/triggers/delete") => {
            post(crate::ui::settings::delete_trigger)
        }
        ("GET", "/projects/{project}/registry") => get(crate::ui::registry::page),
        ("POST", "/projects/{project}/registry/settings") => {
            post(crate::ui::registry::set_settings)
        }
        ("GET", "/projects/{project}/registry/repositories/{*name}") => {
            get(crate::ui::registry::repository_page)
        }
        ("GET", "/projects/{project}/registry/images/{*reference}") => {
            get(crate::ui::registry::image_page)
        }
        ("POST", "/projects/{project}/registry/tags/delete") => {
            post(crate::ui::registry::delete_tag)
        }
        ("POST", "/projects/{project}/registry/promote") => post(crate::ui::registry::promote),
        ("GET", "/projects/{project}/registry/robots") => get(crate::ui::registry::robots),
        ("POST", "/projects/{project}/registry/robots") => post(crate::ui::registry::create_robot),
        ("POST", "/projects/{project}/registry/robots/revoke") => {
            post(crate::ui::registry::revoke_robot)
        }
        ("GET", "/projects/{project}/registry/history") => get(crate::ui::registry::history),
        ("GET", "/pipelines/{id}") => get(crate::ui::pipelines::show),
        ("GET", "/pipelines/{id}/stream") => get(crate::ui::live::pipeline_stream),
        ("POST", "/pipelines/{id}/cancel") => post(crate::ui::pipelines::cancel),
        ("POST", "/pipelines/{id}/retry") => post(crate::ui::pipelines::retry),
        ("GET", "/jobs/{id}") => get(crate::ui::jobs::show),
        ("GET", "/jobs/{id}/stream") => get(crate::ui::live::job_stream),
        ("GET", "/jobs/{id}/artifacts/browse") => get(crate::ui::jobs::artifacts),
        ("GET", "/jobs/{id}/artifacts/file") => get(crate::ui::jobs::artifact_file),
        ("GET", "/jobs/{id}/tests") => get(crate::ui::junit::page),
        ("GET", "/jobs/{id}/log/lines") => get(crate::ui::jobs::lines_before),
        ("POST", "/jobs/{id}/retry") => post(crate::ui::jobs::retry),
        ("POST", "/jobs/{id}/cancel") => post(crate::ui::jobs::cancel),
        ("GET", "/jobs/{id}/play") => get(crate::ui::jobs::play_page),
        ("POST", "/jobs/{id}/play") => post(crate::ui::jobs::play),
        _ => unreachable!("every route of the table has a handler: {method} {path}"),
    }
}

/// A response body read from a blocking reader on a blocking thread, `piece` bytes at a
/// time: memory stays bounded whatever the size (logs of any length, large archives).
pub(crate) fn stream_reader(
    piece: usize,
    open: impl FnOnce() -> std::io::Result<Box<dyn std::io::Read + Send>> + Send + 'static,
) -> axum::body::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut reader = match open() {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        let mut buf = vec![0u8; piece];
        loop {
            let item = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => Ok(bytes::Bytes::copy_from_slice(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let stop = item.is_err();
            if tx.blocking_send(item).is_err() || stop {
                break;
            }
        }
    });
    axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Whether `gantry registry` (the registry alone) serves a route: accounts, projects and
/// their members, the registry's settings, robots, replication rules, promotion and
/// collection, notification channels (registry events), the audit log; not pipelines, jobs, agents or webhooks.
pub fn registry_route(route: &Route) -> bool {
    const PROJECT_PARTS: &[&str] = &[
        "",
        "members",
        "registry",
        "robots",
        "notifications",
        "replications",
    ];
    let p = route.path;
    if let Some(rest) = p.strip_prefix("/api/v1/projects/{project}") {
        let part = rest.trim_start_matches('/').split('/').next().unwrap_or("");
        return PROJECT_PARTS.contains(&part);
    }
    p == "/healthz"
        || p == "/metrics"
        || p == "/api/v1/openapi.json"
        || p == "/api/v1/projects"
        || p.starts_with("/api/v1/session")
        || p.starts_with("/api/v1/user")
        || p.starts_with("/api/v1/registry/")
        || p.starts_with("/api/v1/audit-log")
}

/// The router, from [`ROUTES`] (those of [`registry_route`] for `gantry registry`).
pub fn router(state: AppState) -> Router {
    let mut by_path: Vec<(&str, MethodRouter<AppState>)> = Vec::new();
    for route in ROUTES
        .iter()
        .filter(|r| !state.registry_only || registry_route(r))
    {
        let h = handler(route.method, route.path).route_layer(
            axum::middleware::from_fn_with_state(state.clone(), move |st, req, next| {
                crate::auth::authorize(st, route, req, next)
            }),
        );
        match by_path.iter_mut().find(|(p, _)| *p == route.path) {
            Some((_, mr)) => *mr = std::mem::take(mr).merge(h),
            None => by_path.push((route.path, h)),
        }
    }
    let mut router = Router::new();
    for (path, mr) in by_path {
        router = router.route(path, mr);
    }
    // The registry's `/v2/` routes authorize with registry tokens (Docker's token flow),
    // each endpoint for the action it needs: they are not API routes.
    let registry = gantry_registry::router(state.registry.clone());
    router
        .fallback(|uri: axum::http::Uri| async move {
            use axum::response::IntoResponse;
            // The links commit statuses and notifications carry, GitLab's way
            // (`/PROJECT/-/pipelines/ID`), lead to the UI's page, which checks access.
            match crate::ui::gitlab_link(uri.path()) {
                Some(to) => axum::response::Redirect::permanent(&to).into_response(),
                None => crate::error::HttpError::not_found(
                    "no such endpoint: see GET /api/v1/openapi.json for the API",
                )
                .into_response(),
            }
        })
        .with_state(state)
        .merge(registry)
}

/// How the OpenAPI document names an access: `admin`, `signed`, `project:developer`, ….
pub fn access_name(a: Access) -> String {
    match a {
        Project(role) => format!("project:{role}"),
        JobOr(role) => format!("job|project:{role}"),
        Page(p) => format!("page:{}", access_name(p.api())),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for route in ROUTES.iter().filter(|r| !r.is_ui()) {
        // `{*rest}` (the rest of the path, slashes included) is `{rest}` in OpenAPI.
        let path = route.path.replace("{*", "{");
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": route.summary,
            "operationId": format!("{} {}", route.method.to_lowercase(), path),
            "x-access": access_name(route.access),
            "responses": {
                "default": {
                    "description": "an error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}}
                },
                "2XX": {"description": "success"}
            }
        });
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if !matches!(route.access, Public | Registration | Webhook | TriggerToken) {
            // A session cookie works too (with X-CSRF-Token for changes).
            op["security"] = json!([{"bearer": []}]);
        }
        if let Some(body) = route.body {
            op["requestBody"] = json!({
                "required": !matches!(body, "Actor" | "TriggerTokenCreate"),
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}
            });
        }
        let entry = paths
            .entry(path.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[route.method.to_lowercase()] = op;
    }
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {"title": "Gantry", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "ApiError": {"type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
                "ProjectCreate": {"type": "object", "required": ["path", "git_url"],
                    "properties": {"path": {"type": "string"}, "git_url": {"type": "string"},
                        "default_branch": {"type": "string"}, "pipeline_file": {"type": "string"},
                        "username": {"type": "string"}, "password": {"type": "string"}, "ssh_key": {"type": "string"},
                        "webhook_secret": {"type": "string"}, "poll_interval_secs": {"type": "integer", "minimum": 1}}},
                "ForgeSettings": {"type": "object", "required": ["kind", "api_url", "repository"],
                    "properties": {"kind": {"type": "string", "enum": ["gitlab", "github", "gitea", "forgejo"]},
                        "api_url": {"type": "string"}, "repository": {"type": "string"},
                        "token": {"type": "string", "writeOnly": true}, "job_statuses": {"type": "boolean"}}},
                "NotificationCreate": {"type": "object", "required": ["kind"],
                    "properties": {"kind": {"type": "string", "enum": ["email", "slack", "dingtalk", "feishu", "teams", "generic"]},
                        "recipients": {"type": "array", "items": {"type": "string"}},
                        "url": {"type": "string", "writeOnly": true},
                        "events": {"type": "array", "items": {"type": "string", "enum": ["failed", "fixed", "succeeded", "manual"]}}}},
                "ForgePayload": {"type": "object",
                    "description": "The forge's own JSON payload, unchanged, with its headers (event, delivery id, signature or token)"},
                "PipelineCreate": {"type": "object",
                    "properties": {"ref": {"type": "string"}, "sha": {"type": "string"},
                        "variables": {"type": "array", "items": {"type": "object", "required": ["key", "value"],
                            "properties": {"key": {"type": "string"}, "value": {"type": "string"}}}}}},
                "Actor": {"type": "object", "properties": {"user": {"type": "string"}}},
                "TriggerTokenCreate": {"type": "object", "properties": {"description": {"type": "string"}}},
                "Login": {"type": "object", "required": ["username", "password"],
                    "properties": {"username": {"type": "string"}, "password": {"type": "string"}}},
                "UserCreate": {"type": "object", "required": ["username", "password"],
                    "properties": {"username": {"type": "string"}, "password": {"type": "string"},
                        "name": {"type": "string"}, "email": {"type": "string"}, "admin": {"type": "boolean"}}},
                "AccessTokenCreate": {"type": "object", "required": ["name", "scopes"],
                    "properties": {"name": {"type": "string"},
                        "scopes": {"type": "array", "items": {"type": "string",
                            "enum": ["api", "read_api", "read_registry", "write_registry"]}},
                        "expires_at": {"type": "integer", "description": "ms since the Unix epoch"}}},
                "MemberSet": {"type": "object", "required": ["username", "role"],
                    "properties": {"username": {"type": "string"},
                        "role": {"type": "string", "enum": ["guest", "reporter", "developer", "maintainer", "owner"]}}},
                "TriggerRequest": {"type": "object", "required": ["token"],
                    "properties": {"token": {"type": "string"}, "ref": {"type": "string"},
                        "variables": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "RegisterRequest": {"type": "object",
                    "required": ["token", "name", "run_untagged", "executor", "concurrency", "version"],
                    "properties": {"token": {"type": "string"}, "name": {"type": "string"},
                        "tags": {"type": "array", "items": {"type": "string"}}, "run_untagged": {"type": "boolean"},
                        "executor": {"type": "string", "enum": ["shell", "docker"]},
                        "concurrency": {"type": "integer"}, "version": {"type": "string"}}}
            }
        }
    });
    for more in [
        schedules::schemas(),
        variables::schemas(),
        registry::schemas(),
        replication::schemas(),
    ] {
        if let (Some(all), Value::Object(more)) =
            (doc["components"]["schemas"].as_object_mut(), more)
        {
            all.extend(more);
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_handler_and_a_documented_body() {
        for route in ROUTES {
            let _ = handler(route.method, route.path);
            if let Some(b) = route.body {
                assert!(openapi()["components"]["schemas"][b].is_object(), "{b}");
            }
        }
        let doc = openapi();
        let n: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_object().unwrap().len())
            .sum();
        assert_eq!(n, ROUTES.iter().filter(|r| !r.is_ui()).count());
        assert!(
            ROUTES
                .iter()
                .filter(|r| r.is_ui())
                .all(|r| matches!(r.access, Page(_)) || r.access == Public),
            "a page is checked as a page"
        );
    }
}
