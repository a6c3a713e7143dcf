//! GitHub's webhooks, as its "Webhook events and payloads" documentation describes them:
//! `push`, `pull_request` and `ping`, signed by `X-Hub-Signature-256`.

use serde::Deserialize;

use super::{
    Commit, Forge, Headers, HookError, HookEvent, MergeRequestAction, MergeRequestEvent, PushParts,
    PushedCommit, Repository, User, check_hmac, check_merge_request, decode, non_empty, nullable,
};

const FORGE: Forge = Forge::Github;
pub(super) const EVENT_HEADER: &str = "X-GitHub-Event";
const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
/// GitHub lists at most this many commits in a push.
const MAX_LISTED_COMMITS: usize = 2048;

pub(super) fn verify(secret: &[u8], headers: &Headers<'_>, body: &[u8]) -> Result<(), HookError> {
    let value = headers.get(SIGNATURE_HEADER).ok_or(HookError::Unsigned {
        forge: FORGE,
        header: SIGNATURE_HEADER,
    })?;
    let hex = value
        .strip_prefix("sha256=")
        .ok_or_else(|| HookError::BadSignature {
            header: SIGNATURE_HEADER,
            problem: "does not start with 'sha256=': check that nothing between GitHub and \
                      Gantry rewrites webhook headers"
                .to_string(),
        })?;
    check_hmac(secret, body, SIGNATURE_HEADER, hex, FORGE)
}

pub(super) fn parse(headers: &Headers<'_>, body: &[u8]) -> Result<HookEvent, HookError> {
    let event = headers.get(EVENT_HEADER).ok_or(HookError::MissingEvent {
        forge: FORGE,
        header: EVENT_HEADER,
    })?;
    match event {
        "push" => push(body),
        "pull_request" => pull_request(body),
        "ping" => {
            let ping: Ping = decode(FORGE, "ping", body)?;
            Ok(HookEvent::Ignored {
                reason: format!(
                    "GitHub ping for webhook {}: the webhook reaches Gantry and its secret \
                     matches",
                    ping.hook_id
                ),
            })
        }
        "create" => Ok(HookEvent::Ignored {
            reason: "GitHub 'create' events start no pipeline: the 'push' event GitHub sends \
                     for the same branch or tag does"
                .to_string(),
        }),
        other => Ok(HookEvent::Ignored {
            reason: format!("GitHub '{other}' events start no pipeline"),
        }),
    }
}

#[derive(Deserialize)]
struct Ping {
    #[serde(default, deserialize_with = "nullable")]
    hook_id: u64,
}

/// A repository as GitHub describes it (Gitea and Forgejo describe it the same way).
#[derive(Deserialize)]
pub(super) struct Repo {
    #[serde(default, deserialize_with = "nullable")]
    id: u64,
    full_name: String,
    #[serde(default, deserialize_with = "nullable")]
    html_url: String,
    #[serde(default, deserialize_with = "nullable")]
    clone_url: String,
    #[serde(default, deserialize_with = "nullable")]
    ssh_url: String,
    #[serde(default, deserialize_with = "nullable")]
    default_branch: String,
}

impl From<Repo> for Repository {
    fn from(r: Repo) -> Repository {
        Repository {
            id: r.id,
            path: r.full_name,
            web_url: r.html_url,
            http_url: r.clone_url,
            ssh_url: r.ssh_url,
            default_branch: r.default_branch,
        }
    }
}

/// `sender`, a pull request's `user`, `assignees`.
#[derive(Deserialize, Default)]
struct Account {
    #[serde(default, deserialize_with = "nullable")]
    login: String,
}

/// A commit's author or committer as GitHub writes it (Gitea and Forgejo write the same).
#[derive(Deserialize, Default)]
pub(super) struct GitUser {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    email: String,
}

/// A commit of a push event as GitHub lists it (Gitea and Forgejo list the same).
#[derive(Deserialize)]
pub(super) struct PushCommit {
    id: String,
    #[serde(default, deserialize_with = "nullable")]
    message: String,
    #[serde(default, deserialize_with = "nullable")]
    timestamp: String,
    #[serde(default, deserialize_with = "nullable")]
    author: GitUser,
    #[serde(default, deserialize_with = "nullable")]
    added: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    modified: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    removed: Vec<String>,
}

impl PushCommit {
    pub(super) fn into_parts(self) -> PushedCommit {
        PushedCommit {
            commit: Commit {
                sha: self.id,
                message: self.message,
                timestamp: self.timestamp,
                author_name: self.author.name,
                author_email: self.author.email,
            },
            added: self.added,
            modified: self.modified,
            removed: self.removed,
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
    deleted: bool,
    #[serde(default, deserialize_with = "nullable")]
    forced: bool,
    #[serde(default, deserialize_with = "nullable")]
    commits: Vec<PushCommit>,
    #[serde(default)]
    head_commit: Option<PushCommit>,
    repository: Repo,
    /// `name` is the login here.
    #[serde(default, deserialize_with = "nullable")]
    pusher: GitUser,
    #[serde(default, deserialize_with = "nullable")]
    sender: Account,
}

fn push(body: &[u8]) -> Result<HookEvent, HookError> {
    let p: Push = decode(FORGE, "push", body)?;
    let username = non_empty(p.sender.login).unwrap_or_else(|| p.pusher.name.clone());
    PushParts {
        forge: FORGE,
        event: "push",
        git_ref: p.git_ref,
        before: p.before,
        after: p.after,
        deleted: p.deleted,
        forced: p.forced,
        commits: p.commits.into_iter().map(PushCommit::into_parts).collect(),
        head_commit: p.head_commit.map(|c| c.into_parts().commit),
        total_commits: None,
        list_limit: Some(MAX_LISTED_COMMITS),
        pusher: User {
            name: non_empty(p.pusher.name).unwrap_or_else(|| username.clone()),
            username,
            email: p.pusher.email,
        },
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
}

#[derive(Deserialize)]
struct PullRequestHook {
    action: String,
    number: u64,
    /// The source head before a `synchronize`.
    #[serde(default)]
    before: Option<String>,
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
        "synchronize" => MergeRequestAction::Updated,
        "closed" => {
            return Ok(HookEvent::MergeRequestClosed {
                iid: hook.number,
                reason: format!(
                    "pull request #{} action 'closed' starts no pipeline (opened, reopened \
                     and synchronize do)",
                    hook.number
                ),
            });
        }
        other => {
            return Ok(HookEvent::Ignored {
                reason: format!(
                    "pull request #{} action '{other}' starts no pipeline (opened, reopened \
                     and synchronize do)",
                    hook.number
                ),
            });
        }
    };
    let pr = hook.pull_request;
    let target: Repository = pr.base.repo.unwrap_or(hook.repository).into();
    let source: Option<Repository> = pr.head.repo.map(Into::into);
    let is_fork = match &source {
        None => true,
        Some(s) if s.id != 0 && target.id != 0 => s.id != target.id,
        Some(s) => !s.path.eq_ignore_ascii_case(&target.path),
    };
    let login = hook.sender.login;
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
        previous_source_sha: hook.before.filter(|b| !b.is_empty()),
        target_branch: pr.base.git_ref,
        target_sha: Some(pr.base.sha),
        merge_base: None,
        head_ref: format!("refs/pull/{}/head", hook.number),
        source,
        target,
        is_fork,
        author: non_empty(pr.user.login),
        user: User {
            username: login.clone(),
            name: login,
            email: String::new(),
        },
        labels: pr
            .labels
            .into_iter()
            .map(|l| l.name)
            .filter(|n| !n.is_empty())
            .collect(),
        assignees: pr
            .assignees
            .into_iter()
            .map(|a| a.login)
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
            "",
            "before",
        ],
    )?;
    Ok(HookEvent::MergeRequest(mr))
}
