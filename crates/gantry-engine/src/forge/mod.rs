//! Webhooks from the forges: authenticating a delivery, naming it for replay detection, and
//! reading its payload into one of two events a pipeline can start from, a push or a merge
//! request. Pure: no HTTP server, no database, no git; the route at
//! `/api/v1/hooks/{gitlab,github,gitea,forgejo}/{project}` hands in the headers and the raw
//! body and gets back a [`HookEvent`] or a [`HookError`] that knows its HTTP status.
//!
//! # What each forge sends
//!
//! | | GitLab | GitHub | Gitea, Forgejo |
//! |---|---|---|---|
//! | event | `X-Gitlab-Event`: `Push Hook`, `Tag Push Hook`, `Merge Request Hook` | `X-GitHub-Event`: `push`, `pull_request`, `ping` | `X-Gitea-Event` / `X-Forgejo-Event` (or `X-Gogs-Event`): `push`, `pull_request` |
//! | authentication | `X-Gitlab-Token`: the secret itself | `X-Hub-Signature-256`: `sha256=` + hex HMAC-SHA256 of the body | `X-Gitea-Signature` / `X-Forgejo-Signature`: hex HMAC-SHA256 of the body |
//! | delivery id | `Idempotency-Key` (GitLab 17.4+), else `X-Gitlab-Event-UUID` | `X-GitHub-Delivery` | `X-Gitea-Delivery` / `X-Forgejo-Delivery` |
//! | branch deleted | `after` all zeros | `deleted: true` | `after` all zeros (and a `delete` event) |
//! | merge request | `object_attributes.action` `open`, `reopen`, `update` (with `oldrev` when commits were pushed) | `action` `opened`, `reopened`, `synchronize` | `action` `opened`, `reopened`, `synchronized` |
//! | source head in the target repository | `refs/merge-requests/IID/head` | `refs/pull/N/head` | `refs/pull/N/head` |
//!
//! Payloads are read into typed structs that name only the fields Gantry uses: unknown fields
//! are skipped (forges add fields all the time), the few fields a pipeline cannot do without
//! (the ref, the shas, the repository path, the merge request's number and branches) are
//! required, the rest default when absent or `null`. Commit shas must be 40 or 64 hex digits
//! and ref names must be names git accepts, since both end up as arguments of git commands.
//!
//! # The order a receiver follows
//!
//! 1. Refuse bodies over [`MAX_BODY`] before buffering them (413).
//! 2. [`verify`] the forge's authentication against the project's secret (401 unsigned,
//!    403 wrong). Nothing of an unauthenticated body is parsed.
//! 3. Look the [`delivery_id`] up among those already received: a repeat is
//!    [`HookError::Replayed`] (409) and creates nothing.
//! 4. [`parse`] the payload (400 when malformed): a [`HookEvent::Push`], a
//!    [`HookEvent::MergeRequest`], or [`HookEvent::Ignored`] with the reason (answer 200 or 202
//!    and create nothing).
//!
//! [`receive`] does 1, 2 and 4 and returns the delivery id for 3.
//!
//! # Decisions
//!
//! - **Statuses**: 401 when the authentication header is missing or empty (the forge was set up
//!   without a secret), 403 when it is present but wrong or unreadable, or when the project has
//!   no secret to check against (Gantry never accepts unsigned webhooks), 400 for a payload that
//!   is not what the forge sends (the message gives the JSON path), 404 for an unknown forge
//!   in the path, 409 for a replay, 413 over [`MAX_BODY`].
//! - **[`MAX_BODY`] is 25 MiB**, GitHub's own cap on webhook payloads (a push of 2048 commits
//!   with their file lists stays far below it; GitLab lists at most 20 commits).
//! - **Tag and branch creation come from the push event.** All three forges send a push for a
//!   new tag or branch; GitHub's and Gitea's separate `create` events are [`HookEvent::Ignored`]
//!   so a webhook subscribed to both does not start two pipelines for one tag.
//! - **GitLab `update` without `oldrev`** (a title, label or description edit) is ignored:
//!   GitLab itself starts merge request pipelines only when commits are pushed.
//!   `close` and `merge` (GitHub's and Gitea's `closed`) start nothing but are
//!   [`HookEvent::MergeRequestClosed`], so the merge request leaves its branch's
//!   `CI_OPEN_MERGE_REQUESTS`; `approved` and the like are ignored on every forge, as are
//!   GitHub's `edited`, `labeled`, `ready_for_review` and Gitea's `label_updated`, `assigned`, ….
//! - **GitLab's delivery id**: `Idempotency-Key` is the same for the retries of one event and
//!   only for them. Older GitLab only sends `X-Gitlab-Event-UUID`, which it keeps for every
//!   delivery of one hook made while handling one request or job
//!   (`Gitlab::WebHooks::RecursionDetection::UUID`), so a push of several branches can give
//!   several deliveries with one UUID; the id is then that UUID with a digest of the body
//!   appended: a replay repeats the body, another branch's push does not.
//! - **`[skip ci]`** follows GitLab's `\[(ci[ _-]skip|skip[ _-]ci)\]`, case-insensitive, on the
//!   head commit's message. When the payload does not carry that message (GitLab's tag pushes
//!   and pushes of no new commit, GitHub's and Gitea's pull requests), `skip_ci` is false and
//!   the caller can read the commit from the mirror and ask [`skips_ci`].
//! - **Forks**: a merge request whose source repository differs from its target (by id, else by
//!   path) has `is_fork` set; [`MergeRequestEvent::apply_to`] then clears
//!   `Trigger::protected`, so it runs without protected variables.

pub mod git;
mod gitea;
mod github;
mod gitlab;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use gantry_pipeline::trigger::{MergeRequest, ProjectInfo, Source, Trigger};
use gantry_pipeline::vars::{NULL_SHA, pipeline_variables};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::Sha256;

/// The largest webhook body accepted, in bytes: 25 MiB, GitHub's own limit on what it sends.
/// Receivers should refuse longer bodies while reading them, before buffering.
pub const MAX_BODY: usize = 25 * 1024 * 1024;

/// A forge that sends webhooks. Forgejo sends Gitea's format and is [`Forge::Gitea`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Forge {
    Gitlab,
    Github,
    Gitea,
    /// No forge: the `post-receive` hook of a bare repository ([`git`]).
    Git,
}

impl Forge {
    /// The path segment of the webhook URL (`gitlab`, `github`, `gitea`).
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::Gitlab => "gitlab",
            Forge::Github => "github",
            Forge::Gitea => "gitea",
            Forge::Git => "git",
        }
    }
}

/// The forge's name as people write it.
impl fmt::Display for Forge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Forge::Gitlab => "GitLab",
            Forge::Github => "GitHub",
            Forge::Gitea => "Gitea",
            Forge::Git => "a repository hook",
        })
    }
}

/// The webhook URL's path segment: `gitlab`, `github`, `gitea` or `forgejo` (any case).
impl FromStr for Forge {
    type Err = HookError;

    fn from_str(s: &str) -> Result<Forge, HookError> {
        match s.to_ascii_lowercase().as_str() {
            "gitlab" => Ok(Forge::Gitlab),
            "github" => Ok(Forge::Github),
            "gitea" | "forgejo" => Ok(Forge::Gitea),
            "git" => Ok(Forge::Git),
            _ => Err(HookError::UnknownForge(s.to_string())),
        }
    }
}

/// The request's headers, looked up by name without regard to case. Build it from whatever the
/// HTTP layer has, keeping the values that are text:
///
/// ```
/// # use gantry_engine::forge::Headers;
/// let raw = [("X-GitHub-Event", "push"), ("Content-Type", "application/json")];
/// let headers: Headers = raw.into_iter().collect();
/// assert_eq!(headers.get("x-github-event"), Some("push"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Headers<'a> {
    /// The first value of header `name`, trimmed; `None` when absent or blank.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The first of `names` that is present, with its name.
    fn first_of(&self, names: &[&'static str]) -> Option<(&'static str, &'a str)> {
        names
            .iter()
            .find_map(|&name| self.get(name).map(|value| (name, value)))
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Headers<'a> {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(iter: I) -> Self {
        Headers(iter.into_iter().collect())
    }
}

/// Why a webhook request was refused. [`HookError::status`] is the HTTP status to answer with,
/// [`HookError::code`] a stable name for logs and the JSON error; the message says what is
/// wrong and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// The URL names no forge Gantry knows.
    #[error(
        "'{0}' is not a forge Gantry receives webhooks from: use /api/v1/hooks/gitlab, \
         /api/v1/hooks/github, /api/v1/hooks/gitea or /api/v1/hooks/forgejo"
    )]
    UnknownForge(String),
    /// The body is larger than [`MAX_BODY`].
    #[error(
        "the request body is {size} bytes, more than the {max} bytes Gantry accepts from a webhook",
        max = MAX_BODY
    )]
    TooLarge { size: usize },
    /// The project has no webhook secret, so no request can be authenticated.
    #[error(
        "the project has no webhook secret, and Gantry accepts no unsigned webhook: set a \
         secret on the project in Gantry and the same one in the {forge} webhook's settings"
    )]
    NoSecret { forge: Forge },
    /// The forge's authentication header is missing or empty.
    #[error(
        "the request has no {header} header: set a secret in the {forge} webhook's settings, \
         the same as the project's webhook secret in Gantry"
    )]
    Unsigned { forge: Forge, header: &'static str },
    /// The authentication header is there but does not match the body and the secret.
    #[error("{header} {problem}")]
    BadSignature {
        header: &'static str,
        problem: String,
    },
    /// The header naming the event is missing.
    #[error(
        "the request has no {header} header, which every {forge} webhook sends: check that \
         this webhook comes from {forge} and is sent to /api/v1/hooks/{path}/…",
        path = forge.as_str()
    )]
    MissingEvent { forge: Forge, header: &'static str },
    /// The body is not the JSON the forge sends for this event.
    #[error("the {forge} '{event}' payload cannot be read: {detail}")]
    Malformed {
        forge: Forge,
        event: String,
        detail: String,
    },
    /// This delivery was received before (the caller detects it with [`delivery_id`]).
    #[error(
        "delivery {delivery_id} was already received (this delivery id, or the same payload \
         under another id): a repeated delivery creates nothing (redeliver only deliveries \
         that failed)"
    )]
    Replayed { delivery_id: String },
}

impl HookError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HookError::UnknownForge(_) => 404,
            HookError::TooLarge { .. } => 413,
            HookError::Unsigned { .. } => 401,
            HookError::NoSecret { .. } | HookError::BadSignature { .. } => 403,
            HookError::MissingEvent { .. } | HookError::Malformed { .. } => 400,
            HookError::Replayed { .. } => 409,
        }
    }

    /// A stable name for the error, for logs and the JSON error's code.
    pub fn code(&self) -> &'static str {
        match self {
            HookError::UnknownForge(_) => "unknown_forge",
            HookError::TooLarge { .. } => "too_large",
            HookError::NoSecret { .. } => "no_webhook_secret",
            HookError::Unsigned { .. } => "unsigned",
            HookError::BadSignature { .. } => "bad_signature",
            HookError::MissingEvent { .. } => "missing_event",
            HookError::Malformed { .. } => "malformed",
            HookError::Replayed { .. } => "replayed",
        }
    }
}

/// What a verified, well-formed delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per webhook request, moved once: boxes would buy nothing"
)]
pub enum HookEvent {
    /// Commits or a new ref were pushed to a branch or a tag.
    Push(PushEvent),
    /// A merge (pull) request was opened, reopened, or its source branch got new commits.
    MergeRequest(MergeRequestEvent),
    /// A merge request was closed or merged: it starts nothing, and is no longer listed in its
    /// branch's pipelines (`CI_OPEN_MERGE_REQUESTS`).
    MergeRequestClosed { iid: u64, reason: String },
    /// A valid delivery that starts nothing: a ping, a deleted branch or tag, a merge request
    /// merely edited, an event type pipelines do not run on.
    Ignored { reason: String },
}

/// Whether a push went to a branch or a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefKind {
    Branch,
    Tag,
}

impl RefKind {
    /// `refs/heads/` or `refs/tags/`.
    pub fn prefix(self) -> &'static str {
        match self {
            RefKind::Branch => "refs/heads/",
            RefKind::Tag => "refs/tags/",
        }
    }
}

/// A repository as the forge describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Repository {
    /// The forge's numeric id (GitLab's project id); 0 when the payload has none.
    pub id: u64,
    /// `namespace/name` (GitLab's `path_with_namespace`, GitHub's and Gitea's `full_name`).
    pub path: String,
    /// The repository's page.
    pub web_url: String,
    /// Clone URL over HTTP(S).
    pub http_url: String,
    /// Clone URL over SSH.
    pub ssh_url: String,
    /// Empty when the payload does not say.
    pub default_branch: String,
}

/// A person on the forge: who pushed, who opened or updated a merge request. Fields the payload
/// does not give are empty (GitLab sends `[REDACTED]` for private e-mail addresses, which is
/// kept empty here too).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct User {
    /// The login (`jsmith`).
    pub username: String,
    /// The display name (`John Smith`); the login when the forge gives none.
    pub name: String,
    pub email: String,
}

/// A commit as the payload lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Commit {
    pub sha: String,
    pub message: String,
    /// ISO 8601, as the forge wrote it.
    pub timestamp: String,
    pub author_name: String,
    pub author_email: String,
}

/// A push to a branch or a tag (deletions are [`HookEvent::Ignored`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushEvent {
    pub ref_kind: RefKind,
    /// The branch or tag name, without `refs/heads/` or `refs/tags/`.
    pub ref_name: String,
    /// The ref's previous commit; all zeros when the push created the ref.
    pub before: String,
    /// The ref's new commit: the pipeline's commit.
    pub after: String,
    /// The commit at `after`, when the payload gives it: GitHub and Gitea do; GitLab only when
    /// it is among the commits it lists (never for tags).
    pub head_commit: Option<Commit>,
    pub pusher: User,
    /// How many commits the push brought, as the forge counts them (GitLab's
    /// `total_commits_count`, Gitea's `total_commits`, the length of GitHub's list).
    pub commit_count: u64,
    /// `[skip ci]` or `[ci skip]` (any case, `-` or `_` for the space) in the head commit's
    /// message: GitLab records such a pipeline as skipped instead of running it.
    pub skip_ci: bool,
    /// The files the pushed commits add, modify or remove, sorted and deduplicated, when the
    /// payload lists all of them: `None` for new refs, force pushes the forge reports, and
    /// commit lists the forge cut short. A `git diff before after` in the mirror is exact where
    /// this is only the payload's view.
    pub changed_paths: Option<Vec<String>>,
    pub repository: Repository,
}

impl PushEvent {
    /// The full ref (`refs/heads/main`, `refs/tags/v1.0`), for fetching.
    pub fn git_ref(&self) -> String {
        format!("{}{}", self.ref_kind.prefix(), self.ref_name)
    }

    /// Whether the push created the ref.
    pub fn created(&self) -> bool {
        is_null_sha(&self.before)
    }

    /// Sets what this push decides on a [`Trigger`]: source `push`, the ref and whether it is a
    /// tag, the commit (sha, previous sha, and the head commit's message, author and time when
    /// the payload has it), the pusher as the user (login, name, e-mail; the id is left to the
    /// caller), and `changed_files`. Project, protection, ids and variables are the caller's.
    pub fn apply_to(&self, trigger: &mut Trigger) {
        trigger.source = Source::Push;
        trigger.ref_name = self.ref_name.clone();
        trigger.is_tag = self.ref_kind == RefKind::Tag;
        trigger.merge_request = None;
        trigger.commit.sha = self.after.clone();
        trigger.commit.before_sha = self.before.clone();
        if let Some(c) = &self.head_commit {
            trigger.commit.message = c.message.clone();
            trigger.commit.author_name = c.author_name.clone();
            trigger.commit.author_email = c.author_email.clone();
            if !c.timestamp.is_empty() {
                trigger.commit.timestamp = c.timestamp.clone();
            }
        }
        set_user(trigger, &self.pusher);
        trigger.changed_files = self.changed_paths.clone();
    }
}

/// What happened to a merge request that calls for a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeRequestAction {
    Opened,
    /// New commits on the source branch (GitLab `update` with `oldrev`, GitHub `synchronize`,
    /// Gitea `synchronized`).
    Updated,
    Reopened,
}

/// A merge (pull) request that was opened, reopened or got new commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MergeRequestEvent {
    pub action: MergeRequestAction,
    /// The forge's global id of the merge request (0 when the payload has none).
    pub id: u64,
    /// The number within the target project (GitLab's `iid`, GitHub's and Gitea's `number`).
    pub iid: u64,
    pub title: String,
    pub description: String,
    pub draft: bool,
    /// The merge request's page.
    pub url: String,
    pub source_branch: String,
    /// The source branch's head: the pipeline's commit.
    pub source_sha: String,
    /// The source branch's head before this update, when the forge says (GitLab's `oldrev`,
    /// GitHub's `before`).
    pub previous_source_sha: Option<String>,
    pub target_branch: String,
    /// The target branch's head, when the payload has it (GitHub, Gitea; not GitLab).
    pub target_sha: Option<String>,
    /// The merge base of source and target, when the payload has it (Gitea).
    pub merge_base: Option<String>,
    /// The ref in the *target* repository that holds the source head
    /// (`refs/merge-requests/IID/head` on GitLab, `refs/pull/N/head` elsewhere): a mirror of
    /// the target fetches it even when the source is a fork.
    pub head_ref: String,
    /// The source repository; `None` when the forge no longer knows it (a deleted fork).
    pub source: Option<Repository>,
    pub target: Repository,
    /// The source repository is not the target: run without protected variables.
    pub is_fork: bool,
    /// The author's login, when the payload names it (GitHub, Gitea; GitLab gives only an id).
    pub author: Option<String>,
    /// Who caused this event (opened, pushed, reopened).
    pub user: User,
    pub labels: Vec<String>,
    /// Assignees' logins.
    pub assignees: Vec<String>,
    /// The source head's message, when the payload has it (GitLab's `last_commit`).
    pub head_commit_message: Option<String>,
    /// `[skip ci]` or `[ci skip]` in `head_commit_message`.
    pub skip_ci: bool,
}

impl MergeRequestEvent {
    /// The merge request as `gantry-pipeline` models it, from which it computes the
    /// `CI_MERGE_REQUEST_*` variables. A merge request within one repository has an empty
    /// `source_project_path` (the pipeline crate reads that as "the project itself", whatever
    /// the project is called in Gantry); a fork's gives the fork's path and id on the forge.
    pub fn to_merge_request(&self) -> MergeRequest {
        let (source_project_path, source_project_id) = match (&self.source, self.is_fork) {
            (Some(repo), true) => (repo.path.clone(), repo.id),
            _ => (String::new(), 0),
        };
        MergeRequest {
            iid: self.iid,
            id: self.id,
            title: self.title.clone(),
            description: self.description.clone(),
            source_branch: self.source_branch.clone(),
            source_branch_sha: self.source_sha.clone(),
            target_branch: self.target_branch.clone(),
            target_branch_sha: self.target_sha.clone().unwrap_or_default(),
            diff_base_sha: self.merge_base.clone().unwrap_or_default(),
            labels: self.labels.clone(),
            source_project_path,
            source_project_id,
            draft: self.draft,
            assignees: self.assignees.clone(),
            approved: false,
        }
    }

    /// Sets what this merge request decides on a [`Trigger`]: source `merge_request_event`,
    /// the source branch as the ref, the source head as the commit, the merge request, the
    /// user, and `changed_files` to unknown (`rules:changes` compares with the target branch:
    /// the caller diffs the target against the source head in the mirror). A fork's merge
    /// request is never protected: `protected` is cleared, so protected variables stay out.
    pub fn apply_to(&self, trigger: &mut Trigger) {
        trigger.source = Source::MergeRequestEvent;
        trigger.ref_name = self.source_branch.clone();
        trigger.is_tag = false;
        trigger.commit.sha = self.source_sha.clone();
        trigger.commit.before_sha = NULL_SHA.to_string();
        if let Some(message) = &self.head_commit_message {
            trigger.commit.message = message.clone();
        }
        trigger.merge_request = Some(self.to_merge_request());
        set_user(trigger, &self.user);
        trigger.changed_files = None;
        if self.is_fork {
            trigger.protected = false;
        }
    }

    /// The `CI_MERGE_REQUEST_*` variables of a pipeline for this merge request in `project`,
    /// computed by `gantry-pipeline` exactly as for the pipeline itself. The pipeline runs on
    /// the source head, which GitLab calls a detached merge request pipeline: its
    /// `CI_MERGE_REQUEST_EVENT_TYPE` is `detached` and the two `*_BRANCH_SHA` variables are
    /// empty, as in GitLab.
    pub fn variables(&self, project: &ProjectInfo) -> Vec<(String, String)> {
        let mut trigger = Trigger {
            project: project.clone(),
            ..Trigger::default()
        };
        self.apply_to(&mut trigger);
        pipeline_variables(&trigger)
            .into_iter()
            .filter(|v| v.name.starts_with("CI_MERGE_REQUEST_"))
            .map(|v| (v.name, v.value))
            .collect()
    }
}

/// A verified, parsed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// What names this delivery for replay detection (see [`delivery_id`]).
    pub delivery_id: Option<String>,
    pub event: HookEvent,
}

/// Checks the size, verifies the authentication, then parses: everything a receiver does but
/// the replay check, in the order that never reads an unauthenticated payload.
pub fn receive(
    forge: Forge,
    secret: &[u8],
    headers: &Headers<'_>,
    body: &[u8],
) -> Result<Received, HookError> {
    verify(forge, secret, headers, body)?;
    let event = parse(forge, headers, body)?;
    Ok(Received {
        delivery_id: delivery_id(forge, headers, body),
        event,
    })
}

/// Verifies the forge's authentication of `body` with the project's `secret`, in constant
/// time: GitLab's `X-Gitlab-Token` must equal the secret (line breaks removed from the secret,
/// as GitLab removes them before sending it); GitHub's `X-Hub-Signature-256` must be
/// `sha256=` and the hex HMAC-SHA256 of the body (the SHA-1 `X-Hub-Signature` is not
/// accepted); Gitea's `X-Gitea-Signature` or Forgejo's `X-Forgejo-Signature` must be the hex
/// HMAC-SHA256 of the body.
pub fn verify(
    forge: Forge,
    secret: &[u8],
    headers: &Headers<'_>,
    body: &[u8],
) -> Result<(), HookError> {
    check_size(body)?;
    if secret.is_empty() {
        return Err(HookError::NoSecret { forge });
    }
    match forge {
        Forge::Gitlab => gitlab::verify(secret, headers),
        Forge::Github => github::verify(secret, headers, body),
        Forge::Gitea => gitea::verify(secret, headers, body),
        Forge::Git => git::verify(secret, headers),
    }
}

/// The event the request names in the forge's header (`Push Hook`, `pull_request`, …), for
/// logs and records; `None` when the header is absent.
pub fn event_name<'a>(forge: Forge, headers: &Headers<'a>) -> Option<&'a str> {
    match forge {
        Forge::Gitlab => headers.get(gitlab::EVENT_HEADER),
        Forge::Github => headers.get(github::EVENT_HEADER),
        Forge::Gitea => headers.first_of(&gitea::EVENT_HEADERS).map(|(_, v)| v),
        Forge::Git => headers.get(git::EVENT_HEADER),
    }
}

/// What names this delivery, for the caller to refuse a second one with
/// [`HookError::Replayed`]: GitHub's `X-GitHub-Delivery` and Gitea's `X-Gitea-Delivery` (or
/// Forgejo's `X-Forgejo-Delivery`), which a redelivery repeats; GitLab's `Idempotency-Key`,
/// else `X-Gitlab-Event-UUID` and a digest of the body (see the module's decisions). `None`
/// when the request carries none of them.
pub fn delivery_id(forge: Forge, headers: &Headers<'_>, body: &[u8]) -> Option<String> {
    match forge {
        Forge::Gitlab => gitlab::delivery_id(headers, body),
        Forge::Github => headers.get("X-GitHub-Delivery").map(str::to_string),
        Forge::Gitea => headers
            .first_of(&["X-Forgejo-Delivery", "X-Gitea-Delivery", "X-Gogs-Delivery"])
            .map(|(_, id)| id.to_string()),
        Forge::Git => headers.get(git::DELIVERY_HEADER).map(str::to_string),
    }
}

/// Reads the event the delivery announces. Call it only on a [`verify`]-ed body.
pub fn parse(forge: Forge, headers: &Headers<'_>, body: &[u8]) -> Result<HookEvent, HookError> {
    check_size(body)?;
    match forge {
        Forge::Gitlab => gitlab::parse(headers, body),
        Forge::Github => github::parse(headers, body),
        Forge::Gitea => gitea::parse(headers, body),
        Forge::Git => git::parse(headers, body),
    }
}

/// Whether a commit message asks to skip the pipeline, as GitLab decides it:
/// `[ci skip]` or `[skip ci]`, in any case, with a space, `-` or `_` between the words.
pub fn skips_ci(message: &str) -> bool {
    let separator = |b: u8| matches!(b, b' ' | b'-' | b'_');
    message.as_bytes().windows(9).any(|w| {
        let w = w.to_ascii_lowercase();
        let inner = &w[1..8];
        w[0] == b'['
            && w[8] == b']'
            && ((inner.starts_with(b"ci") && separator(inner[2]) && inner.ends_with(b"skip"))
                || (inner.starts_with(b"skip") && separator(inner[4]) && inner.ends_with(b"ci")))
    })
}

fn check_size(body: &[u8]) -> Result<(), HookError> {
    if body.len() > MAX_BODY {
        return Err(HookError::TooLarge { size: body.len() });
    }
    Ok(())
}

fn set_user(trigger: &mut Trigger, user: &User) {
    if !user.username.is_empty() {
        trigger.user.login = user.username.clone();
    }
    if !user.name.is_empty() {
        trigger.user.name = user.name.clone();
    }
    trigger.user.email = user.email.clone();
}

/// Checks a hex HMAC-SHA256 signature of `body` in constant time.
fn check_hmac(
    secret: &[u8],
    body: &[u8],
    header: &'static str,
    hex_signature: &str,
    forge: Forge,
) -> Result<(), HookError> {
    let bad = |problem: String| HookError::BadSignature { header, problem };
    let signature = hex::decode(hex_signature)
        .ok()
        .filter(|s| s.len() == 32)
        .ok_or_else(|| {
            bad(format!(
                "is not 64 hex digits of an HMAC-SHA256 (got {} characters): check that \
                 nothing between {forge} and Gantry rewrites webhook headers",
                hex_signature.len()
            ))
        })?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC-SHA256 takes keys of any length");
    mac.update(body);
    mac.verify_slice(&signature).map_err(|_| {
        bad(format!(
            "does not match the body: check the webhook secret configured in {forge} against \
             the project's webhook secret in Gantry{}",
            if forge == Forge::Gitea {
                " (Forgejo sends Gitea's signature too)"
            } else {
                ""
            }
        ))
    })
}

/// The error for a payload that is not what the forge sends.
fn malformed(forge: Forge, event: &str, detail: impl Into<String>) -> HookError {
    HookError::Malformed {
        forge,
        event: event.to_string(),
        detail: detail.into(),
    }
}

/// Deserialises a payload, naming the JSON path of whatever is wrong.
fn decode<T: for<'de> Deserialize<'de>>(
    forge: Forge,
    event: &str,
    body: &[u8],
) -> Result<T, HookError> {
    if body.starts_with(b"payload=") {
        return Err(malformed(
            forge,
            event,
            "the body is form-encoded: set the webhook's content type to application/json",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let detail = if path == "." {
            inner.to_string()
        } else {
            format!("at `{path}`: {inner}")
        };
        malformed(forge, event, detail)
    })?;
    de.end()
        .map_err(|e| malformed(forge, event, e.to_string()))?;
    Ok(value)
}

/// For `#[serde(default, deserialize_with = "nullable")]`: `null` reads as the default.
fn nullable<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// The all-zero sha forges use for "no commit" (40 or 64 digits).
fn is_null_sha(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

/// Checks that `sha` (at JSON `path`) is a SHA-1 or SHA-256 object name.
fn check_sha(forge: Forge, event: &str, path: &str, sha: &str) -> Result<(), HookError> {
    if matches!(sha.len(), 40 | 64) && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(malformed(
            forge,
            event,
            format!("at `{path}`: '{sha}' is not a commit sha (40 or 64 hex digits)"),
        ))
    }
}

/// Checks that `name` (at JSON `path`) is a branch or tag name git accepts, in the parts that
/// matter when it becomes a command argument or a ref path (`git check-ref-format`).
fn check_ref_name(forge: Forge, event: &str, path: &str, name: &str) -> Result<(), HookError> {
    let bad_char = |c: char| c.is_ascii_control() || " ~^:?*[\\".contains(c);
    let valid = !name.is_empty()
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && !name.contains("/.")
        && name != "@"
        && !name.chars().any(bad_char);
    if valid {
        Ok(())
    } else {
        Err(malformed(
            forge,
            event,
            format!("at `{path}`: '{name}' is not a valid branch or tag name"),
        ))
    }
}

/// A pushed commit in the shape the three forges share.
struct PushedCommit {
    commit: Commit,
    added: Vec<String>,
    modified: Vec<String>,
    removed: Vec<String>,
}

/// A push payload in the shape the three forges share, before the common checks.
struct PushParts {
    forge: Forge,
    event: &'static str,
    git_ref: String,
    before: String,
    after: String,
    /// The forge says the ref was deleted (GitHub's `deleted`).
    deleted: bool,
    /// The forge says the push rewrote history (GitHub's `forced`).
    forced: bool,
    commits: Vec<PushedCommit>,
    /// The head commit when the payload gives it apart from the list.
    head_commit: Option<Commit>,
    /// The forge's count of pushed commits, when it gives one.
    total_commits: Option<u64>,
    /// The most commits the forge lists (GitHub: 2048); a list this long may be cut short.
    list_limit: Option<usize>,
    pusher: User,
    repository: Repository,
}

impl PushParts {
    /// The common rules: deletions and refs that are neither branch nor tag are ignored, shas
    /// and names are checked, the head commit and changed paths are worked out.
    fn into_event(self) -> Result<HookEvent, HookError> {
        let (forge, event) = (self.forge, self.event);
        let kind = if self.git_ref.starts_with(RefKind::Branch.prefix()) {
            RefKind::Branch
        } else if self.git_ref.starts_with(RefKind::Tag.prefix()) {
            RefKind::Tag
        } else {
            return Ok(HookEvent::Ignored {
                reason: format!(
                    "{forge} push to '{}', which is neither a branch nor a tag",
                    self.git_ref
                ),
            });
        };
        let ref_name = self.git_ref[kind.prefix().len()..].to_string();
        let what = match kind {
            RefKind::Branch => "branch",
            RefKind::Tag => "tag",
        };
        if self.deleted || is_null_sha(&self.after) {
            return Ok(HookEvent::Ignored {
                reason: format!("{what} '{ref_name}' was deleted: a deletion starts no pipeline"),
            });
        }
        check_ref_name(forge, event, "ref", &ref_name)?;
        check_sha(forge, event, "before", &self.before)?;
        check_sha(forge, event, "after", &self.after)?;

        let created = is_null_sha(&self.before);
        let listed = self.commits.len();
        let complete = !created
            && !self.forced
            && listed > 0
            && self
                .total_commits
                .is_none_or(|total| total == listed as u64)
            && self.list_limit.is_none_or(|limit| listed < limit);
        let changed_paths = complete.then(|| {
            let paths: BTreeSet<&String> = self
                .commits
                .iter()
                .flat_map(|c| c.added.iter().chain(&c.modified).chain(&c.removed))
                .collect();
            paths.into_iter().cloned().collect()
        });
        let head_commit = self.head_commit.or_else(|| {
            self.commits
                .into_iter()
                .map(|c| c.commit)
                .find(|c| c.sha == self.after)
        });
        let skip_ci = head_commit.as_ref().is_some_and(|c| skips_ci(&c.message));
        Ok(HookEvent::Push(PushEvent {
            ref_kind: kind,
            ref_name,
            before: self.before,
            after: self.after,
            head_commit,
            pusher: self.pusher,
            commit_count: self.total_commits.unwrap_or(listed as u64),
            skip_ci,
            changed_paths,
            repository: self.repository,
        }))
    }
}

/// The common checks of a merge request event: branch names and shas; `paths` are the JSON
/// paths of the source and target branch, the source, target and merge-base shas and the
/// previous source sha, in that order.
fn check_merge_request(
    forge: Forge,
    event: &str,
    mr: &MergeRequestEvent,
    paths: [&str; 6],
) -> Result<(), HookError> {
    let [
        source_branch,
        target_branch,
        source_sha,
        target_sha,
        merge_base,
        previous,
    ] = paths;
    check_ref_name(forge, event, source_branch, &mr.source_branch)?;
    check_ref_name(forge, event, target_branch, &mr.target_branch)?;
    check_sha(forge, event, source_sha, &mr.source_sha)?;
    if let Some(sha) = &mr.target_sha {
        check_sha(forge, event, target_sha, sha)?;
    }
    if let Some(sha) = &mr.merge_base {
        check_sha(forge, event, merge_base, sha)?;
    }
    if let Some(sha) = &mr.previous_source_sha {
        check_sha(forge, event, previous, sha)?;
    }
    Ok(())
}

/// A non-empty string, else `None`.
fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// GitLab's placeholder for private e-mail addresses reads as none.
fn email(s: String) -> String {
    if s == "[REDACTED]" { String::new() } else { s }
}
