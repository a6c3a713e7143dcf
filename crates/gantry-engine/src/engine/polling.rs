//! Polling: pipelines for repositories whose forge cannot send webhooks. Every project with
//! an interval has its remote's branches and tags listed (`git ls-remote`, with the project's
//! credentials) when its poll is due, and one pipeline is started per ref whose head moved.
//!
//! ```text
//! tick ─► due polls (next_poll_at <= clock) ─► claim (next_poll_at += interval, conditional)
//!     ─► a task per project (never two at once for one project): ls-remote ─► compare with
//!     polled_refs ─► first poll: record them all, start nothing ─► later polls: fetch, then
//!     per new or moved ref: claim its new sha, then a push pipeline (a branch: before_sha =
//!     the previous head; a tag: a tag pipeline) ─► deleted refs are forgotten, start nothing
//! ```
//!
//! A failing remote is logged and recorded (`last_error`, shown by the polling endpoint);
//! nothing recorded changes, so the next poll tries the same refs again. A ref's move is
//! claimed (a conditional update of its recorded sha) before its pipeline is created, as a
//! webhook delivery is: two servers polling one project start one pipeline, and a claim
//! whose pipeline cannot be made is given back for the next poll.

use super::{Engine, TriggerExtras, blocking};
use crate::error::{EngineError, Result};
use crate::forge;
use crate::git::Mirror;
use gantry_api::rest::{self, PipelineCreate};
use gantry_pipeline::trigger::{Source, Trigger};
use gantry_pipeline::vars::NULL_SHA;
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

/// The login polled pipelines are started by (`GITLAB_USER_LOGIN`).
const POLL_USER: &str = "polling";
/// The longest interval accepted: a week.
const MAX_INTERVAL_SECS: i64 = 7 * 24 * 3600;

/// Projects being polled right now (at most one poll per project).
#[derive(Debug, Default)]
pub(super) struct Polls {
    running: Mutex<HashSet<i64>>,
}

/// Takes a project's place in [`Polls`] until dropped.
struct PollSlot<'a> {
    polls: &'a Polls,
    project_id: i64,
}

impl Polls {
    fn take(&self, project_id: i64) -> Option<PollSlot<'_>> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.insert(project_id).then_some(PollSlot {
            polls: self,
            project_id,
        })
    }
}

impl Drop for PollSlot<'_> {
    fn drop(&mut self) {
        self.polls
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.project_id);
    }
}

/// Checks an interval given through the API: 400 with what to give otherwise.
pub(super) fn check_interval(secs: i64) -> Result<()> {
    if !(1..=MAX_INTERVAL_SECS).contains(&secs) {
        return Err(EngineError::BadRequest(format!(
            "poll interval {secs} s is not valid: give a number of seconds from 1 to \
             {MAX_INTERVAL_SECS} (a week), e.g. 60; or null to stop polling"
        )));
    }
    Ok(())
}

/// What one poll saw and did.
enum Outcome {
    /// The first poll: the heads recorded, no pipeline.
    Primed,
    /// Refs that moved (or appeared), with their previous sha (`None`: new).
    Changed(Vec<(String, String, Option<String>)>),
}

impl Engine {
    /// Sets a project's polling interval (`None`: no polling). The next poll is due at once;
    /// the first one only records the remote's heads.
    pub async fn set_polling(
        &self,
        project: &str,
        interval_secs: Option<i64>,
    ) -> Result<rest::Polling> {
        let p = self.find_project_row(project).await?;
        if let Some(secs) = interval_secs {
            check_interval(secs)?;
        }
        let now = self.clock_ms();
        self.inner
            .db
            .set_polling(p.id, interval_secs, now, now)
            .await?;
        self.polling(&p.id.to_string()).await
    }

    /// A project's polling settings and the last poll's outcome.
    pub async fn polling(&self, project: &str) -> Result<rest::Polling> {
        let p = self.find_project_row(project).await?;
        let db = &self.inner.db;
        Ok(match db.polling(p.id).await? {
            Some(row) => rest::Polling {
                project_id: p.id,
                interval_secs: Some(row.interval_secs),
                next_poll_at: Some(row.next_poll_at),
                last_poll_at: row.last_poll_at,
                last_error: row.last_error,
                last_error_at: row.last_error_at,
                refs_seen: db.polled_refs(p.id).await?.len(),
            },
            None => rest::Polling {
                project_id: p.id,
                interval_secs: None,
                next_poll_at: None,
                last_poll_at: None,
                last_error: None,
                last_error_at: None,
                refs_seen: 0,
            },
        })
    }

    /// From the tick: claims every due poll and runs it in a task of its own.
    pub(super) async fn start_due_polls(&self) {
        let now = self.clock_ms();
        let due = match self.inner.db.due_polls(now).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("reading due polls: {e}");
                return;
            }
        };
        for row in due {
            // The next poll is one interval from now, not from the missed one.
            let next = now + row.interval_secs.max(1) * 1000;
            match self
                .inner
                .db
                .claim_poll(row.project_id, row.next_poll_at, next)
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(project = row.project_id, "claiming a poll: {e}");
                    continue;
                }
            }
            let this = self.clone();
            tokio::spawn(async move {
                let Some(_slot) = this.inner.polls.take(row.project_id) else {
                    tracing::info!(
                        project = row.project_id,
                        "poll skipped: the last one still runs"
                    );
                    return;
                };
                let result = this.poll(row.project_id, row.primed).await;
                let at = this.clock_ms();
                let error = result.as_ref().err().map(|e| e.to_string());
                if let Some(e) = &error {
                    tracing::warn!(project = row.project_id, "poll failed: {e}");
                }
                if let Err(e) = this
                    .inner
                    .db
                    .finish_poll(row.project_id, at, error.as_deref())
                    .await
                {
                    tracing::warn!(project = row.project_id, "recording a poll: {e}");
                }
            });
        }
    }

    /// One poll of a project: lists the remote, records or starts pipelines. The first error
    /// stops it (what was recorded stays; the rest is tried again next time).
    async fn poll(&self, project_id: i64, primed: bool) -> Result<()> {
        let p = self.project_row(project_id).await?;
        let seen: BTreeMap<String, String> = self
            .inner
            .db
            .polled_refs(project_id)
            .await?
            .into_iter()
            .collect();
        let this = self.clone();
        let p2 = p.clone();
        let seen2 = seen.clone();
        let outcome = blocking(move || {
            let m = this.mirror_of(&p2)?;
            let remote = m.list_remote()?;
            if !primed {
                return Ok((remote, Outcome::Primed));
            }
            let changed: Vec<(String, String, Option<String>)> = remote
                .iter()
                .filter(|(r, sha)| seen2.get(r) != Some(sha))
                .map(|(r, sha)| (r.clone(), sha.clone(), seen2.get(r).cloned()))
                .collect();
            if !changed.is_empty() {
                let refs: Vec<&str> = changed.iter().map(|(r, _, _)| r.as_str()).collect();
                m.fetch(&refs)?;
            }
            Ok((remote, Outcome::Changed(changed)))
        })
        .await?;
        let (remote, outcome) = outcome;
        let now = self.clock_ms();
        let changed = match outcome {
            Outcome::Primed => {
                tracing::info!(project = %p.path, refs = remote.len(), "first poll: heads recorded");
                self.inner
                    .db
                    .prime_polling(project_id, &remote, now)
                    .await?;
                return Ok(());
            }
            Outcome::Changed(c) => c,
        };
        let on_remote: HashSet<&str> = remote.iter().map(|(r, _)| r.as_str()).collect();
        for gone in seen.keys().filter(|r| !on_remote.contains(r.as_str())) {
            self.inner.db.set_polled_ref(project_id, gone, None).await?;
        }
        let db = &self.inner.db;
        for (full, sha, before) in changed {
            // Claimed first (another server polling the same project may have seen it too);
            // given back when the pipeline cannot be made, so the next poll tries again.
            if !db
                .claim_polled_ref(project_id, &full, before.as_deref(), &sha)
                .await?
            {
                continue;
            }
            match self
                .polled_pipeline(&p.id.to_string(), &full, &sha, before.clone())
                .await
            {
                Ok(pipeline) => {
                    tracing::info!(project = %p.path, git_ref = %full, pipeline = pipeline.id, "poll: new commit");
                }
                Err(e) => {
                    db.release_polled_ref(project_id, &full, before.as_deref(), &sha)
                        .await?;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The pipeline of a ref that moved: a push to a branch (with the previous head as
    /// `CI_COMMIT_BEFORE_SHA` and the changed files for `rules:changes`), or a new tag.
    async fn polled_pipeline(
        &self,
        project: &str,
        full_ref: &str,
        sha: &str,
        before: Option<String>,
    ) -> Result<rest::Pipeline> {
        let is_tag = full_ref.starts_with("refs/tags/");
        let name = full_ref
            .strip_prefix("refs/heads/")
            .or_else(|| full_ref.strip_prefix("refs/tags/"))
            .unwrap_or(full_ref)
            .to_string();
        let req = PipelineCreate {
            git_ref: Some(name),
            sha: Some(sha.to_string()),
            variables: Vec::new(),
        };
        let after = sha.to_string();
        let extras = TriggerExtras {
            fetch_ref: Some(full_ref.to_string()),
            apply: Some(Box::new(move |m: &Mirror, t: &mut Trigger| {
                match before.as_deref().filter(|_| !is_tag) {
                    Some(before) => {
                        t.commit.before_sha = before.to_string();
                        if let Ok(files) = m.changed_files(before, &after) {
                            t.changed_files = Some(files);
                        }
                    }
                    None => t.commit.before_sha = NULL_SHA.to_string(),
                }
                Ok(forge::skips_ci(&t.commit.message)
                    .then(|| "skipped: [skip ci] in the commit message".to_string()))
            })),
        };
        self.create_pipeline_with(project, req, Source::Push, POLL_USER, extras)
            .await
    }
}
