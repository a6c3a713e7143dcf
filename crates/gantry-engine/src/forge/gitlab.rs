//! GitLab's webhooks, as its "Webhook events" documentation describes them: `Push Hook`,
//! `Tag Push Hook` and `Merge Request Hook`, authenticated by `X-Gitlab-Token`.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{
    Commit, Forge, Headers, HookError, HookEvent, MergeRequestAction, MergeRequestEvent, PushParts,
    PushedCommit, Repository, User, check_merge_request, decode, email, non_empty, nullable,
    skips_ci,
};
use crate::token::constant_time_eq;

const FORGE: Forge = Forge::Gitlab;
pub(super) const EVENT_HEADER: &str = "X-Gitlab-Event";
const TOKEN_HEADER: &str = "X-Gitlab-Token";

/// `X-Gitlab-Token` must be the secret. Both sides are hashed before the comparison, so its
/// time says nothing about the secret, not even its length.
pub(super) fn verify(secret: &[u8], headers: &Headers<'_>) -> Result<(), HookError> {
    let token = headers.get(TOKEN_HEADER).ok_or(HookError::Unsigned {
        forge: FORGE,
        header: TOKEN_HEADER,
    })?;
    // GitLab sends the token with line breaks removed.
    let secret: Vec<u8> = secret
        .iter()
        .copied()
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .collect();
    let given = hex::encode(Sha256::digest(token.as_bytes()));
    let expected = hex::encode(Sha256::digest(&secret));
    if constant_time_eq(&given, &expected) {
        Ok(())
    } else {
        Err(HookError::BadSignature {
            header: TOKEN_HEADER,
            problem: "is not the project's webhook secret: set the webhook's secret token in \
                      GitLab to the project's webhook secret in Gantry"
                .to_string(),
        })
    }
}

/// `Idempotency-Key` when GitLab sends it (17.4 and later), else `X-Gitlab-Event-UUID` with
/// the first 16 hex digits of the body's SHA-256, since GitLab gives every delivery of one hook
/// made while handling one request the same UUID.
pub(super) fn delivery_id(headers: &Headers<'_>, body: &[u8]) -> Option<String> {
    if let Some(key) = headers.get("Idempotency-Key") {
        return Some(key.to_string());
    }
    let uuid = headers.get("X-Gitlab-Event-UUID")?;
    let digest = hex::encode(Sha256::digest(body));
    Some(format!("{uuid}:{}", &digest[..16]))
}

pub(super) fn parse(headers: &Headers<'_>, body: &[u8]) -> Result<HookEvent, HookError> {
    let event = headers.get(EVENT_HEADER).ok_or(HookError::MissingEvent {
        forge: FORGE,
        header: EVENT_HEADER,
    })?;
    match event {
        "Push Hook" => push("Push Hook", body),
        "Tag Push Hook" => push("Tag Push Hook", body),
        "Merge Request Hook" => merge_request("Merge Request Hook", body),
        "System Hook" => Ok(HookEvent::Ignored {
            reason: "GitLab system hooks start no pipeline: add the webhook to the project \
                     (or its group) instead"
                .to_string(),
        }),
        other => Ok(HookEvent::Ignored {
            reason: format!("GitLab '{other}' events start no pipeline"),
        }),
    }
}

#[derive(Deserialize)]
struct Project {
    #[serde(default, deserialize_with = "nullable")]
    id: u64,
    path_with_namespace: String,
    #[serde(default, deserialize_with = "nullable")]
    web_url: String,
    #[serde(default, deserialize_with = "nullable")]
    git_http_url: String,
    #[serde(default, deserialize_with = "nullable")]
    git_ssh_url: String,
    #[serde(default, deserialize_with = "nullable")]
    default_branch: String,
}

impl From<Project> for Repository {
    fn from(p: Project) -> Repository {
        Repository {
            id: p.id,
            path: p.path_with_namespace,
            web_url: p.web_url,
            http_url: p.git_http_url,
            ssh_url: p.git_ssh_url,
            default_branch: p.default_branch,
        }
    }
}

#[derive(Deserialize, Default)]
struct Author {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    email: String,
}

#[derive(Deserialize)]
struct PushCommit {
    id: String,
    #[serde(default, deserialize_with = "nullable")]
    message: String,
    #[serde(default, deserialize_with = "nullable")]
    timestamp: String,
    #[serde(default, deserialize_with = "nullable")]
    author: Author,
    #[serde(default, deserialize_with = "nullable")]
    added: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    modified: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    removed: Vec<String>,
}

/// `Push Hook` and `Tag Push Hook` share this payload.
#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default, deserialize_with = "nullable")]
    user_name: String,
    #[serde(default, deserialize_with = "nullable")]
    user_username: String,
    #[serde(default, deserialize_with = "nullable")]
    user_email: String,
    #[serde(default, deserialize_with = "nullable")]
    commits: Vec<PushCommit>,
    #[serde(default)]
    total_commits_count: Option<u64>,
    project: Project,
}

fn push(event: &'static str, body: &[u8]) -> Result<HookEvent, HookError> {
    let p: Push = decode(FORGE, event, body)?;
    PushParts {
        forge: FORGE,
        event,
        git_ref: p.git_ref,
        before: p.before,
        after: p.after,
        deleted: false,
        forced: false,
        commits: p
            .commits
            .into_iter()
            .map(|c| PushedCommit {
                commit: Commit {
                    sha: c.id,
                    message: c.message,
                    timestamp: c.timestamp,
                    author_name: c.author.name,
                    author_email: email(c.author.email),
                },
                added: c.added,
                modified: c.modified,
                removed: c.removed,
            })
            .collect(),
        head_commit: None,
        total_commits: p.total_commits_count,
        list_limit: None,
        pusher: User {
            name: non_empty(p.user_name).unwrap_or_else(|| p.user_username.clone()),
            username: p.user_username,
            email: email(p.user_email),
        },
        repository: p.project.into(),
    }
    .into_event()
}

#[derive(Deserialize, Default)]
struct GitlabUser {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    username: String,
    #[serde(default, deserialize_with = "nullable")]
    email: String,
}

#[derive(Deserialize)]
struct Label {
    #[serde(default, deserialize_with = "nullable")]
    title: String,
}

#[derive(Deserialize)]
struct LastCommit {
    id: String,
    #[serde(default, deserialize_with = "nullable")]
    message: String,
}

#[derive(Deserialize)]
struct Attributes {
    #[serde(default, deserialize_with = "nullable")]
    id: u64,
    iid: u64,
    source_branch: String,
    target_branch: String,
    #[serde(default, deserialize_with = "nullable")]
    source_project_id: u64,
    #[serde(default, deserialize_with = "nullable")]
    target_project_id: u64,
    #[serde(default, deserialize_with = "nullable")]
    title: String,
    #[serde(default, deserialize_with = "nullable")]
    description: String,
    #[serde(default, deserialize_with = "nullable")]
    draft: bool,
    #[serde(default, deserialize_with = "nullable")]
    work_in_progress: bool,
    #[serde(default, deserialize_with = "nullable")]
    url: String,
    #[serde(default)]
    source: Option<Project>,
    #[serde(default)]
    target: Option<Project>,
    last_commit: LastCommit,
    #[serde(default, deserialize_with = "nullable")]
    labels: Vec<Label>,
    action: String,
    #[serde(default)]
    oldrev: Option<String>,
}

#[derive(Deserialize)]
struct MergeRequestHook {
    #[serde(default, deserialize_with = "nullable")]
    user: GitlabUser,
    project: Project,
    object_attributes: Attributes,
    #[serde(default)]
    labels: Option<Vec<Label>>,
    #[serde(default, deserialize_with = "nullable")]
    assignees: Vec<GitlabUser>,
}

fn merge_request(event: &'static str, body: &[u8]) -> Result<HookEvent, HookError> {
    let hook: MergeRequestHook = decode(FORGE, event, body)?;
    let a = hook.object_attributes;
    let oldrev = a.oldrev.filter(|r| !r.is_empty());
    let action = match (a.action.as_str(), &oldrev) {
        ("open", _) => MergeRequestAction::Opened,
        ("reopen", _) => MergeRequestAction::Reopened,
        ("update", Some(_)) => MergeRequestAction::Updated,
        ("update", None) => {
            return Ok(HookEvent::Ignored {
                reason: format!(
                    "merge request !{} was edited without new commits: only pushed commits \
                     start a merge request pipeline",
                    a.iid
                ),
            });
        }
        (action @ ("close" | "merge"), _) => {
            return Ok(HookEvent::MergeRequestClosed {
                iid: a.iid,
                reason: format!(
                    "merge request !{} action '{action}' starts no pipeline (open, reopen and \
                     update with new commits do)",
                    a.iid
                ),
            });
        }
        (other, _) => {
            return Ok(HookEvent::Ignored {
                reason: format!(
                    "merge request !{} action '{other}' starts no pipeline (open, reopen and \
                     update with new commits do)",
                    a.iid
                ),
            });
        }
    };
    let target: Repository = a.target.unwrap_or(hook.project).into();
    let source: Option<Repository> = a.source.map(Into::into);
    let is_fork = if a.source_project_id != 0 && a.target_project_id != 0 {
        a.source_project_id != a.target_project_id
    } else {
        source
            .as_ref()
            .is_some_and(|s| !s.path.eq_ignore_ascii_case(&target.path))
    };
    let labels = hook.labels.unwrap_or(a.labels);
    let message = a.last_commit.message;
    let mr = MergeRequestEvent {
        action,
        id: a.id,
        iid: a.iid,
        title: a.title,
        description: a.description,
        draft: a.draft || a.work_in_progress,
        url: a.url,
        source_branch: a.source_branch,
        source_sha: a.last_commit.id,
        previous_source_sha: oldrev,
        target_branch: a.target_branch,
        target_sha: None,
        merge_base: None,
        head_ref: format!("refs/merge-requests/{}/head", a.iid),
        source,
        target,
        is_fork,
        author: None,
        user: User {
            name: non_empty(hook.user.name).unwrap_or_else(|| hook.user.username.clone()),
            username: hook.user.username,
            email: email(hook.user.email),
        },
        labels: labels
            .into_iter()
            .map(|l| l.title)
            .filter(|t| !t.is_empty())
            .collect(),
        assignees: hook
            .assignees
            .into_iter()
            .map(|u| u.username)
            .filter(|u| !u.is_empty())
            .collect(),
        skip_ci: skips_ci(&message),
        head_commit_message: Some(message),
    };
    check_merge_request(
        FORGE,
        event,
        &mr,
        [
            "object_attributes.source_branch",
            "object_attributes.target_branch",
            "object_attributes.last_commit.id",
            "",
            "",
            "object_attributes.oldrev",
        ],
    )?;
    Ok(HookEvent::MergeRequest(mr))
}
