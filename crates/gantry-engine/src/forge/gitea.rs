//! Gitea's webhooks (and Forgejo's, which keep Gitea's format and add `X-Forgejo-*` headers),
//! as Gitea's payload structs (`modules/structs/hook.go`) define them: `push` and
//! `pull_request`, signed by `X-Gitea-Signature` / `X-Forgejo-Signature`.

use serde::Deserialize;

// Gitea's payloads describe commits and repositories exactly as GitHub's do.
use super::github::{PushCommit, Repo};
use super::{
    Forge, Headers, HookError, HookEvent, MergeRequestAction, MergeRequestEvent, PushParts,
    Repository, User, check_hmac, check_merge_request, decode, non_empty, nullable,
};

const FORGE: Forge = Forge::Gitea;
/// Forgejo sends both its own headers and Gitea's; Gitea also sends Gogs'.
pub(super) const EVENT_HEADERS: [&str; 3] = ["X-Forgejo-Event", "X-Gitea-Event", "X-Gogs-Event"];
const SIGNATURE_HEADERS: [&str; 2] = ["X-Forgejo-Signature", "X-Gitea-Signature"];

/// The hex HMAC-SHA256 of the body, in `X-Forgejo-Signature` or `X-Gitea-Signature`. Gitea
/// sends the header empty when the webhook has no secret: that is unsigned.
pub(super) fn verify(secret: &[u8], headers: &Headers<'_>, body: &[u8]) -> Result<(), HookError> {
    let (header, hex) = headers
        .first_of(&SIGNATURE_HEADERS)
        .ok_or(HookError::Unsigned {
            forge: FORGE,
            header: "X-Gitea-Signature (or X-Forgejo-Signature)",
        })?;
    check_hmac(secret, body, header, hex, FORGE)
}

pub(super) fn parse(headers: &Headers<'_>, body: &[u8]) -> Result<HookEvent, HookError> {
    let (_, event) = headers
        .first_of(&EVENT_HEADERS)
        .ok_or(HookError::MissingEvent {
            forge: FORGE,
            header: "X-Gitea-Event (or X-Forgejo-Event)",
        })?;
    match event {
        "push" => push(body),
        "pull_request" => pull_request(body),
        "create" => Ok(HookEvent::Ignored {
            reason: "Gitea 'create' events start no pipeline: the 'push' event Gitea sends \
                     for the same branch or tag does"
                .to_string(),
        }),
        other => Ok(HookEvent::Ignored {
            reason: format!("Gitea '{other}' events start no pipeline"),
        }),
    }
}

/// `pusher`, `sender`, a pull request's `user` and `assignees`.
#[derive(Deserialize, Default)]
struct Account {
    #[serde(default, deserialize_with = "nullable")]
    login: String,
    /// The older name of `login`, still sent.
    #[serde(default, deserialize_with = "nullable")]
    username: String,
    #[serde(default, deserialize_with = "nullable")]
    full_name: String,
    #[serde(default, deserialize_with = "nullable")]
    email: String,
}

impl From<Account> for User {
    fn from(a: Account) -> User {
        let username = non_empty(a.login).unwrap_or(a.username);
        User {
            name: non_empty(a.full_name).unwrap_or_else(|| username.clone()),
            username,
            email: a.email,
        }
    }
}

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default, deserialize_with = "nullable")]
    commits: Vec<PushCommit>,
    #[serde(default)]
    total_commits: Option<u64>,
    #[serde(default)]
    head_commit: Option<PushCommit>,
    repository: Repo,
    #[serde(default)]
    pusher: Option<Account>,
    #[serde(default)]
    sender: Option<Account>,
}

fn push(body: &[u8]) -> Result<HookEvent, HookError> {
    let p: Push = decode(FORGE, "push", body)?;
    PushParts {
        forge: FORGE,
        event: "push",
        git_ref: p.git_ref,
        before: p.before,
        after: p.after,
        deleted: false,
        forced: false,
        commits: p.commits.into_iter().map(PushCommit::into_parts).collect(),
        head_commit: p.head_commit.map(|c| c.into_parts().commit),
        total_commits: p.total_commits,
        list_limit: None,
        pusher: p.pusher.or(p.sender).unwrap_or_default().into(),
        repository: p.repository.into(),
    }
    .into_event()
}

#[derive(Deserialize)]
struct Label {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
}

#[derive(Deserialize)]
struct Branch {
    #[serde(rename = "ref")]
    git_ref: String,
    sha: String,
    #[serde(default, deserialize_with = "nullable")]
    repo_id: u64,
    /// `null` when the fork it came from was deleted.
    #[serde(default)]
    repo: Option<Repo>,
}

#[derive(Deserialize)]
struct PullRequest {
    #[serde(default, deserialize_with = "nullable")]
    id: u64,
    #[serde(default, deserialize_with = "nullable")]
    title: String,
    #[serde(default, deserialize_with = "nullable")]
    body: String,
    #[serde(default, deserialize_with = "nullable")]
    draft: bool,
    #[serde(default, deserialize_with = "nullable")]
    html_url: String,
    #[serde(default, deserialize_with = "nullable")]
    user: Account,
    #[serde(default, deserialize_with = "nullable")]
    labels: Vec<Label>,
    #[serde(default, deserialize_with = "nullable")]
    assignees: Vec<Account>,
    head: Branch,
    base: Branch,
    #[serde(default, deserialize_with = "nullable")]
    merge_base: String,
}

#[derive(Deserialize)]
struct PullRequestHook {
    action: String,
    number: u64,
    pull_request: PullRequest,
    repository: Repo,
    #[serde(default, deserialize_with = "nullable")]
    sender: Account,
}

fn pull_request(body: &[u8]) -> Result<HookEvent, HookError> {
    let event = "pull_request";
    let hook: PullRequestHook = decode(FORGE, event, body)?;
    let action = match hook.action.as_str() {
        "opened" => MergeRequestAction::Opened,
        "reopened" => MergeRequestAction::Reopened,
        "synchronized" => MergeRequestAction::Updated,
        "closed" => {
            return Ok(HookEvent::MergeRequestClosed {
                iid: hook.number,
                reason: format!(
                    "pull request #{} action 'closed' starts no pipeline (opened, reopened \
                     and synchronized do)",
                    hook.number
                ),
            });
        }
        other => {
            return Ok(HookEvent::Ignored {
                reason: format!(
                    "pull request #{} action '{other}' starts no pipeline (opened, reopened \
                     and synchronized do)",
                    hook.number
                ),
            });
        }
    };
    let pr = hook.pull_request;
    let (head_id, base_id) = (pr.head.repo_id, pr.base.repo_id);
    let target: Repository = pr.base.repo.unwrap_or(hook.repository).into();
    let source: Option<Repository> = pr.head.repo.map(Into::into);
    let is_fork = match &source {
        _ if head_id != 0 && base_id != 0 => head_id != base_id,
        None => true,
        Some(s) => !s.path.eq_ignore_ascii_case(&target.path),
    };
    let mr = MergeRequestEvent {
        action,
        id: pr.id,
        iid: hook.number,
        title: pr.title,
        description: pr.body,
        draft: pr.draft,
        url: pr.html_url,
        source_branch: pr.head.git_ref,
        source_sha: pr.head.sha,
        previous_source_sha: None,
        target_branch: pr.base.git_ref,
        target_sha: Some(pr.base.sha),
        merge_base: non_empty(pr.merge_base),
        head_ref: format!("refs/pull/{}/head", hook.number),
        source,
        target,
        is_fork,
        author: non_empty(User::from(pr.user).username),
        user: hook.sender.into(),
        labels: pr
            .labels
            .into_iter()
            .map(|l| l.name)
            .filter(|n| !n.is_empty())
            .collect(),
        assignees: pr
            .assignees
            .into_iter()
            .map(|a| User::from(a).username)
            .filter(|l| !l.is_empty())
            .collect(),
        head_commit_message: None,
        skip_ci: false,
    };
    check_merge_request(
        FORGE,
        event,
        &mr,
        [
            "pull_request.head.ref",
            "pull_request.base.ref",
            "pull_request.head.sha",
            "pull_request.base.sha",
            "pull_request.merge_base",
            "",
        ],
    )?;
    Ok(HookEvent::MergeRequest(mr))
}
