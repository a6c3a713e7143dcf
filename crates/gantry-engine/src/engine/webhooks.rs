//! Webhooks from the forges, wired to pipelines: [`Engine::receive_webhook`] takes what the
//! route `POST /api/v1/hooks/{forge}/{project}` received and follows the order of
//! [`crate::forge`] (size, authentication, payload, replay), then creates the pipeline the
//! event asks for through [`Engine::create_pipeline_with`].
//!
//! ```text
//! project (404) ─► forge (404) ─► size (413) ─► verify with the project's webhook secret
//!     (401 unsigned, 403 wrong or no secret) ─► parse (400) ─► ignored? 200, created: false
//!     ─► claim the delivery: a row in webhook_deliveries, unique by delivery id and by
//!     payload (409 for a replay) ─► push or merge request pipeline ─► 201 with its id
//! ```
//!
//! Every request that names a project leaves a row in `webhook_deliveries` with the status
//! it got, and a log line; neither holds the body or a secret. A delivery claims its id
//! before its pipeline is created, so two concurrent copies cannot both create one; a
//! delivery whose pipeline could not be created (the remote did not answer) gives its claim
//! back, so the forge may deliver it again.
//!
//! - **Push** to a branch or a tag: source `push`, the pushed commit (fetched by its full ref
//!   when the mirror lacks it), `CI_COMMIT_BEFORE_SHA` from `before`, the pusher as the user,
//!   and the changed files from `git diff before after` in the mirror (the payload's lists
//!   when the mirror cannot tell; unknown for a new ref, as in GitLab).
//! - **Merge request** opened, reopened or updated: the forge's head ref
//!   (`refs/pull/N/head`, `refs/merge-requests/N/head`) is fetched, so forks work; source
//!   `merge_request_event`; the job's ref is the source branch, the pipeline is listed under
//!   `refs/merge-requests/IID/head` as GitLab shows it; `rules:changes` sees the files
//!   changed since the merge base with the target branch (`git diff target...head`); a fork's
//!   pipeline is not protected.
//! - **`[skip ci]`** (or `[ci skip]`) in the message of the commit, as the mirror has it: a
//!   pipeline is created with the status `skipped`, no job, and the reason, as GitLab shows
//!   one.

use super::{Engine, TriggerExtras};
use crate::error::{EngineError, Result};
use crate::forge::{
    self, Forge, Headers, HookError, HookEvent, MergeRequestEvent, PushEvent, User,
};
use crate::git::Mirror;
use gantry_api::rest::{self, Page, PipelineCreate};
use gantry_pipeline::trigger::{Source, Trigger};
use gantry_pipeline::vars::NULL_SHA;
use gantry_store::StoreError;
use gantry_store::db::{
    DeliveryEnd, DeliveryRow, MergeRequestState, NewDelivery, PageReq, ProjectRow,
};
use gantry_store::secrets::ExposeSecret;
use sha2::{Digest, Sha256};
use std::collections::{HashSet, VecDeque};

/// Why a pipeline of a `[skip ci]` commit runs no job.
const SKIP_CI: &str = "skipped: [skip ci] in the commit message";
/// How far back (commits per side) the merge base of a merge request is looked for.
const MERGE_BASE_LIMIT: usize = 10_000;

/// A webhook request as the HTTP layer received it.
#[derive(Debug)]
pub struct HookRequest<'a> {
    /// The URL's forge segment: `gitlab`, `github`, `gitea` or `forgejo`.
    pub forge: &'a str,
    /// The project's id or path.
    pub project: &'a str,
    pub headers: Headers<'a>,
    pub body: HookBody<'a>,
}

/// The body of a webhook request.
#[derive(Debug)]
pub enum HookBody<'a> {
    Complete(&'a [u8]),
    /// Longer than [`forge::MAX_BODY`]: refused before it was read to the end. `size` is what
    /// the request announced (its `Content-Length`), or what was read when it stopped.
    TooLarge {
        size: usize,
    },
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Engine {
    /// Receives a webhook: see the [module](self). `Ok` is a delivery that was accepted (a
    /// pipeline created, or nothing to do and why); refusals are [`EngineError::Hook`] with
    /// their status.
    pub async fn receive_webhook(&self, req: HookRequest<'_>) -> Result<rest::HookReply> {
        let project = match self.find_project_row(req.project).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(
                    forge = req.forge,
                    project = req.project,
                    "webhook refused: {e}"
                );
                return Err(e);
            }
        };
        let mut record = NewDelivery {
            project_id: project.id,
            forge: cut(&req.forge.to_ascii_lowercase(), 32),
            event: String::new(),
            delivery_id: None,
            payload_sha256: String::new(),
            claimed: false,
            status: 0,
            outcome: "refused".into(),
            pipeline_id: None,
            error: None,
        };
        let forge: Forge = match req.forge.parse() {
            Ok(f) => f,
            Err(e) => return self.refuse(&project, record, e.into()).await,
        };
        record.forge = forge.as_str().to_string();
        record.event = cut(forge::event_name(forge, &req.headers).unwrap_or(""), 100);
        let body = match req.body {
            HookBody::Complete(b) => b,
            HookBody::TooLarge { size } => {
                return self
                    .refuse(&project, record, HookError::TooLarge { size }.into())
                    .await;
            }
        };
        record.payload_sha256 = hex::encode(Sha256::digest(body));
        record.delivery_id = forge::delivery_id(forge, &req.headers, body).map(|id| cut(&id, 200));
        let secret = match self.webhook_secret_of(&project) {
            Ok(s) => s,
            Err(e) => return self.refuse(&project, record, e).await,
        };
        let key = secret
            .as_ref()
            .map_or(&b""[..], |s| s.expose_secret().as_bytes());
        if let Err(e) = forge::verify(forge, key, &req.headers, body) {
            return self.refuse(&project, record, e.into()).await;
        }
        drop(secret);
        let event = match forge::parse(forge, &req.headers, body) {
            Ok(e) => e,
            Err(e) => return self.refuse(&project, record, e.into()).await,
        };
        let event = match event {
            HookEvent::MergeRequestClosed { iid, reason } => {
                self.inner
                    .db
                    .close_merge_request(project.id, iid as i64)
                    .await?;
                HookEvent::Ignored { reason }
            }
            other => other,
        };
        if let HookEvent::Ignored { reason } = event {
            record.status = 200;
            record.outcome = "ignored".into();
            record.error = Some(reason.clone());
            let delivery = self.inner.db.insert_delivery(&record).await?;
            tracing::info!(
                project = %project.path,
                forge = forge.as_str(),
                event = %record.event,
                delivery = ?record.delivery_id,
                "webhook ignored: {reason}"
            );
            return Ok(rest::HookReply {
                created: false,
                pipeline_id: None,
                status: None,
                reason: Some(reason),
                delivery,
            });
        }

        // Claim the delivery before creating anything.
        record.claimed = true;
        record.status = 202;
        record.outcome = "accepted".into();
        let delivery = match self.inner.db.insert_delivery(&record).await {
            Ok(id) => id,
            Err(StoreError::Conflict(_)) => {
                record.claimed = false;
                let delivery_id = record.delivery_id.clone().unwrap_or_else(|| {
                    format!("(no id, payload sha256 {})", &record.payload_sha256[..16])
                });
                return self
                    .refuse(&project, record, HookError::Replayed { delivery_id }.into())
                    .await;
            }
            Err(e) => return Err(e.into()),
        };
        let created = match event {
            HookEvent::Push(push) => self.push_pipeline(&project, push).await,
            HookEvent::MergeRequest(mr) => self.merge_request_pipeline(&project, mr).await,
            HookEvent::Ignored { .. } | HookEvent::MergeRequestClosed { .. } => {
                unreachable!("answered above")
            }
        };
        match created {
            Ok(p) => {
                let skipped = p.status == gantry_api::PipelineStatus::Skipped;
                let reason = p.errors.clone().filter(|_| skipped);
                self.inner
                    .db
                    .finish_delivery(
                        delivery,
                        &DeliveryEnd {
                            status: 201,
                            outcome: if skipped { "skipped" } else { "created" }.into(),
                            pipeline_id: Some(p.id),
                            error: reason.clone(),
                            keep_claim: true,
                        },
                    )
                    .await?;
                tracing::info!(
                    project = %project.path,
                    forge = forge.as_str(),
                    event = %record.event,
                    delivery = ?record.delivery_id,
                    pipeline = p.id,
                    git_ref = %p.git_ref,
                    status = %p.status,
                    "webhook created a pipeline"
                );
                Ok(rest::HookReply {
                    created: true,
                    pipeline_id: Some(p.id),
                    status: Some(p.status),
                    reason,
                    delivery,
                })
            }
            Err(e) => {
                let end = DeliveryEnd {
                    status: e.http_status(),
                    outcome: "failed".into(),
                    pipeline_id: None,
                    error: Some(e.to_string()),
                    keep_claim: false,
                };
                if let Err(store) = self.inner.db.finish_delivery(delivery, &end).await {
                    tracing::warn!(delivery, "recording a failed webhook delivery: {store}");
                }
                tracing::warn!(
                    project = %project.path,
                    forge = forge.as_str(),
                    event = %record.event,
                    delivery = ?record.delivery_id,
                    status = end.status,
                    "webhook failed: {e}"
                );
                Err(e)
            }
        }
    }

    /// Records and logs a refused request, and returns its error.
    async fn refuse(
        &self,
        project: &ProjectRow,
        mut record: NewDelivery,
        e: EngineError,
    ) -> Result<rest::HookReply> {
        record.status = e.http_status();
        record.outcome = if record.status >= 500 {
            "failed"
        } else {
            "refused"
        }
        .into();
        record.error = Some(e.to_string());
        if let Err(store) = self.inner.db.insert_delivery(&record).await {
            tracing::warn!(project = %project.path, "recording a refused webhook: {store}");
        }
        tracing::warn!(
            project = %project.path,
            forge = %record.forge,
            event = %record.event,
            delivery = ?record.delivery_id,
            status = record.status,
            code = e.code(),
            "webhook refused: {e}"
        );
        Err(e)
    }

    /// A project's webhook deliveries, newest first.
    pub async fn webhook_deliveries(
        &self,
        project: &str,
        page: PageReq,
    ) -> Result<Page<rest::WebhookDelivery>> {
        let p = self.find_project_row(project).await?;
        let rows = self.inner.db.deliveries(p.id, page).await?;
        Ok(super::paged(page, rows, delivery_dto))
    }

    async fn push_pipeline(&self, project: &ProjectRow, push: PushEvent) -> Result<rest::Pipeline> {
        let req = PipelineCreate {
            git_ref: Some(push.ref_name.clone()),
            sha: Some(push.after.clone()),
            variables: Vec::new(),
        };
        let user = login(&push.pusher);
        let extras = TriggerExtras {
            fetch_ref: Some(push.git_ref()),
            apply: Some(Box::new(move |m: &Mirror, t: &mut Trigger| {
                // The mirror's commit is the truth; the push says what came before it.
                let commit = t.commit.clone();
                push.apply_to(t);
                t.commit = commit;
                t.commit.before_sha = push.before.clone();
                if !push.created()
                    && let Ok(files) = m.changed_files(&push.before, &push.after)
                {
                    t.changed_files = Some(files);
                }
                Ok(forge::skips_ci(&t.commit.message).then(|| SKIP_CI.to_string()))
            })),
        };
        self.create_pipeline_with(&project.id.to_string(), req, Source::Push, &user, extras)
            .await
    }

    async fn merge_request_pipeline(
        &self,
        project: &ProjectRow,
        mr: MergeRequestEvent,
    ) -> Result<rest::Pipeline> {
        self.inner
            .db
            .upsert_merge_request(&MergeRequestState {
                project_id: project.id,
                iid: mr.iid as i64,
                source_branch: mr.source_branch.clone(),
                target_branch: mr.target_branch.clone(),
                title: mr.title.clone(),
                from_fork: mr.is_fork,
                is_open: true,
            })
            .await?;
        let req = PipelineCreate {
            git_ref: Some(mr.source_branch.clone()),
            sha: Some(mr.source_sha.clone()),
            variables: Vec::new(),
        };
        let user = login(&mr.user);
        let extras = TriggerExtras {
            fetch_ref: Some(mr.head_ref.clone()),
            apply: Some(Box::new(move |m: &Mirror, t: &mut Trigger| {
                let commit = t.commit.clone();
                mr.apply_to(t);
                t.commit = commit;
                t.commit.before_sha = NULL_SHA.to_string();
                let (base, files) = changes_against_target(m, &mr);
                if let (Some(base), Some(request)) = (base, t.merge_request.as_mut())
                    && request.diff_base_sha.is_empty()
                {
                    request.diff_base_sha = base;
                }
                t.changed_files = files;
                Ok(forge::skips_ci(&t.commit.message).then(|| SKIP_CI.to_string()))
            })),
        };
        self.create_pipeline_with(
            &project.id.to_string(),
            req,
            Source::MergeRequestEvent,
            &user,
            extras,
        )
        .await
    }
}

/// Who the pipeline is for: the login, else the name, else `webhook`.
fn login(user: &User) -> String {
    [&user.username, &user.name]
        .into_iter()
        .find(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| "webhook".into())
}

/// The merge base of a merge request's source head with its target branch, and the files
/// changed from there to the head (GitLab's `rules:changes` for merge request pipelines:
/// `git diff target...head`). The target's head comes from the payload when the mirror has
/// it, else from the target branch, fetched. `None` files when the mirror cannot tell: then
/// `changes` rules match, as GitLab does when it has no diff.
fn changes_against_target(
    m: &Mirror,
    mr: &MergeRequestEvent,
) -> (Option<String>, Option<Vec<String>>) {
    let head = mr.source_sha.as_str();
    let known = |sha: &str| m.resolve(sha).ok().flatten();
    let base = match mr.merge_base.as_deref().and_then(known) {
        Some(base) => Some(base),
        None => {
            let target = mr.target_sha.as_deref().and_then(known).or_else(|| {
                let branch = format!("refs/heads/{}", mr.target_branch);
                if let Err(e) = m.fetch(&[&branch]) {
                    tracing::warn!("fetching the target branch {}: {e}", mr.target_branch);
                }
                known(&branch)
            });
            target.and_then(|t| merge_base(m, &t, head, MERGE_BASE_LIMIT))
        }
    };
    let files = base.as_deref().and_then(|b| m.changed_files(b, head).ok());
    (base, files)
}

/// A nearest common ancestor of commits `a` and `b`, walking both histories breadth-first,
/// at most `limit` commits on each side (`git merge-base` without its generation numbers: in
/// a criss-cross history it may pick another of the best common ancestors).
fn merge_base(m: &Mirror, a: &str, b: &str, limit: usize) -> Option<String> {
    if a == b {
        return Some(a.to_string());
    }
    let mut seen = [
        HashSet::from([a.to_string()]),
        HashSet::from([b.to_string()]),
    ];
    let mut queue = [
        VecDeque::from([a.to_string()]),
        VecDeque::from([b.to_string()]),
    ];
    let mut walked = [0usize; 2];
    while !(queue[0].is_empty() && queue[1].is_empty()) {
        for side in 0..2 {
            if walked[side] >= limit {
                queue[side].clear();
            }
            let Some(commit) = queue[side].pop_front() else {
                continue;
            };
            walked[side] += 1;
            for parent in m.commit_info(&commit).ok()?.parents {
                if seen[1 - side].contains(&parent) {
                    return Some(parent);
                }
                if seen[side].insert(parent.clone()) {
                    queue[side].push_back(parent);
                }
            }
        }
    }
    None
}

fn delivery_dto(d: DeliveryRow) -> rest::WebhookDelivery {
    rest::WebhookDelivery {
        id: d.id,
        project_id: d.project_id,
        forge: d.forge,
        event: d.event,
        delivery_id: d.delivery_id,
        received_at: d.received_at,
        status: d.status,
        outcome: d.outcome,
        pipeline_id: d.pipeline_id,
        error: d.error,
    }
}
