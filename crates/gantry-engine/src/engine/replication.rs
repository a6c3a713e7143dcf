//! Registry replication: a project's rules (which of its images go to which registry, on
//! push and on a schedule), their durable queue of runs, and the task that runs them.
//!
//! ```text
//! image_pushed / image_promoted (registry_event, off the push's path) ─► the project's
//!     enabled on-push rules whose filters match ─► a queued run per rule (one per image
//!     waiting at a time) ─► the worker woken
//! tick ─► rules whose schedule slot is due: the slot claimed (conditional UPDATE, as
//!     pipeline schedules) ─► a queued run for every matching tag
//! POST …/replications/{id}/run ─► a queued run (manual)
//! worker (one task): due runs claimed (conditionally; one per rule at a time, at most
//!     `concurrency` at once) ─► the rule read, its password opened ─► the Replicator (the
//!     registry's copy, wired by the server) while the run's lease is renewed
//!     ─► succeeded | failed | queued again after base·2^(n-1) (capped) when the failure is
//!     temporary and attempts remain ─► replication_succeeded / replication_failed events
//! ```
//!
//! The copying is the registry's (`gantry_registry::replicate`): the engine does not link
//! the registry, it calls the [`Replicator`] the server gives [`Engine::start_replication`],
//! which also owns what a filter means. Runs are rows, so a run queued when the server stops
//! runs after it starts again; a run whose server died while it ran is taken over once its
//! lease passes. Passwords are sealed to their row (`replication:<id>:password`), resealed
//! by `gantry admin rotate-key`, and never in an answer, a log line or an event.

use super::schedules::When;
use super::{Caller, Engine, paged};
use crate::error::{EngineError, Result};
use gantry_api::rest::{self, Page, ReplicationWrite};
use gantry_store::db::replication::{
    NewReplicationRun, PasswordChange, ReplicationCounts, ReplicationFields, ReplicationRow,
    ReplicationRunRow, replication_password_aad,
};
use gantry_store::db::{PageReq, now_ms};
use gantry_store::secrets::SecretString;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// What one run is to do, for the [`Replicator`].
#[derive(Debug, Clone)]
pub struct ReplicationTask {
    pub run_id: i64,
    pub project_id: i64,
    pub project_path: String,
    /// `https://host[:port]` or `http://host[:port]`.
    pub url: String,
    /// Replaces the project's path at the destination; empty: names kept.
    pub namespace: String,
    pub username: String,
    /// Opened for this run only.
    pub password: Option<SecretString>,
    pub repositories: String,
    pub tags: String,
    pub insecure: bool,
    /// The pushed image (repository, tag) of a push run; `None`: every matching tag.
    pub image: Option<(String, String)>,
}

/// Why a run failed, and whether another attempt may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationFailure {
    pub message: String,
    pub retry: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationReport {
    pub counts: ReplicationCounts,
    pub failure: Option<ReplicationFailure>,
}

/// The registry's side of replication, as the engine calls it (the server implements it on
/// `gantry_registry`): what filters mean, and one run's copy.
pub trait Replicator: Send + Sync + 'static {
    /// Whether the filters are valid globs; an error names the bad one.
    fn check_filters(&self, repositories: &str, tags: &str) -> std::result::Result<(), String>;

    /// Whether a rule with these filters takes `repository` (its name below the project's
    /// path) and `tag`.
    fn matches(&self, repositories: &str, tags: &str, repository: &str, tag: &str) -> bool;

    /// Runs a task to its end.
    fn replicate(
        &self,
        task: ReplicationTask,
    ) -> Pin<Box<dyn Future<Output = ReplicationReport> + Send + 'static>>;
}

/// How runs are run and retried.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// The first retry waits this long, each next one twice as long, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// A run fails for good after this many attempts.
    pub max_attempts: i64,
    /// Runs at once (of different rules).
    pub concurrency: usize,
    /// A running run is held this long, renewed at a third of it.
    pub lease: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> ReplicationConfig {
        ReplicationConfig {
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(30 * 60),
            max_attempts: 5,
            concurrency: 4,
            lease: Duration::from_secs(60),
        }
    }
}

/// The worker's shared state.
#[derive(Default)]
pub(super) struct Worker {
    wake: tokio::sync::Notify,
    /// Rules with a run in progress in this process.
    busy: Mutex<HashSet<i64>>,
    replicator: OnceLock<Arc<dyn Replicator>>,
}

/// The longest wait between two looks at the queue, in ms (runs queued by other servers).
const IDLE_MS: i64 = 5000;
/// Finished runs are kept this long.
const KEEP: Duration = Duration::from_secs(90 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// The user schedule runs are started by.
const SCHEDULE_ACTOR: &str = "schedule";

fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::BadRequest(msg.into())
}

/// A destination as stored: `https://host[:port]` (a bare `host[:port]` is https), or
/// `http://…`; no path, query or credentials.
fn check_url(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    if url.is_empty() {
        return Err(bad(
            "url is missing: give the destination registry, e.g. https://harbor.example.com",
        ));
    }
    let full = if url.contains("://") {
        url.to_string()
    } else {
        format!("https://{url}")
    };
    let refuse = |why: &str| {
        bad(format!(
            "url '{url}' {why}: give the registry's address, https://HOST[:PORT] (or http://HOST[:PORT] for plain HTTP)"
        ))
    };
    let u = reqwest::Url::parse(&full).map_err(|e| refuse(&format!("is not a URL ({e})")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(refuse("is neither http nor https"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(refuse(
            "carries credentials: give them as username and password instead",
        ));
    }
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() {
        return Err(refuse(
            "has a path: registries answer at /v2/ of their host, and repositories go in namespace",
        ));
    }
    let host = u.host_str().ok_or_else(|| refuse("has no host"))?;
    Ok(match u.port() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    })
}

/// A namespace: repository path components, lowercase (`team`, `mirror/dev`), or empty.
fn check_namespace(ns: &str) -> Result<String> {
    let ns = ns.trim().trim_matches('/');
    let ok = ns.split('/').all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && part
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && part
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric())
    });
    if !ns.is_empty() && !ok {
        return Err(bad(format!(
            "namespace '{ns}' is not a repository path: lowercase letters, digits, '.', '_', '-' \
             in parts separated by '/' (e.g. 'team' or 'mirror/dev')"
        )));
    }
    Ok(ns.to_string())
}

fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(bad(
            "name is missing or not valid: 1-100 characters that say where images go (e.g. 'harbor-prod')",
        ));
    }
    Ok(name.to_string())
}

fn run_dto(r: &ReplicationRunRow) -> rest::ReplicationRun {
    rest::ReplicationRun {
        id: r.id,
        replication_id: r.replication_id,
        triggered_by: r.triggered_by.clone(),
        repository: r.repository.clone(),
        tag: r.tag.clone(),
        actor: r.actor.clone(),
        status: r.status.clone(),
        attempts: r.attempts,
        queued_at: r.queued_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        next_attempt_at: (r.status == "queued").then_some(r.next_attempt_at),
        images_copied: r.counts.images_copied,
        images_skipped: r.counts.images_skipped,
        blobs_copied: r.counts.blobs_copied,
        blobs_mounted: r.counts.blobs_mounted,
        blobs_skipped: r.counts.blobs_skipped,
        bytes_copied: r.counts.bytes_copied,
        error: r.error.clone(),
    }
}

fn rule_dto(r: &ReplicationRow, last: Option<&ReplicationRunRow>) -> rest::Replication {
    let f = &r.fields;
    rest::Replication {
        id: r.id,
        project_id: r.project_id,
        name: f.name.clone(),
        url: f.url.clone(),
        namespace: f.namespace.clone(),
        username: f.username.clone(),
        has_password: r.password.is_some(),
        repositories: f.repositories.clone(),
        tags: f.tags.clone(),
        on_push: f.on_push,
        schedule: f.schedule.clone(),
        time_zone: f.time_zone.clone(),
        next_run_at: f.next_run_at,
        enabled: f.enabled,
        insecure: f.insecure,
        created_by: r.created_by.clone(),
        created_at: r.created_at,
        updated_at: r.updated_at,
        last_run: last.map(run_dto),
    }
}

/// What the audit log says of a rule (never its password).
fn describe(f: &ReplicationFields, password: &str) -> String {
    json!({
        "url": f.url, "namespace": f.namespace, "username": f.username, "password": password,
        "repositories": f.repositories, "tags": f.tags, "on_push": f.on_push,
        "schedule": f.schedule, "time_zone": f.time_zone, "enabled": f.enabled,
        "insecure": f.insecure,
    })
    .to_string()
}

impl Engine {
    fn replicator(&self) -> Option<&Arc<dyn Replicator>> {
        self.inner.replication.replicator.get()
    }

    /// Checks a write's fields merged into `base` (the stored rule, or the defaults of a new
    /// one) and computes the next scheduled slot.
    fn merged_fields(
        &self,
        base: &ReplicationFields,
        req: &ReplicationWrite,
        is_new: bool,
    ) -> Result<ReplicationFields> {
        let mut f = base.clone();
        if let Some(n) = &req.name {
            f.name = check_name(n)?;
        } else if is_new {
            return Err(bad(
                "a replication rule needs a `name` and a `url` (the destination registry)",
            ));
        }
        if let Some(u) = &req.url {
            f.url = check_url(u)?;
        } else if is_new {
            return Err(bad(
                "a replication rule needs a `url`: the destination registry, e.g. https://harbor.example.com",
            ));
        }
        if let Some(ns) = &req.namespace {
            f.namespace = check_namespace(ns)?;
        }
        if let Some(u) = &req.username {
            let u = u.trim();
            if u.len() > 255 || u.chars().any(char::is_control) {
                return Err(bad(
                    "username is not valid: at most 255 printable characters",
                ));
            }
            f.username = u.to_string();
        }
        for (what, v, field) in [
            ("repositories", &req.repositories, &mut f.repositories),
            ("tags", &req.tags, &mut f.tags),
        ] {
            if let Some(v) = v {
                let v = v.trim();
                if v.is_empty() || v.len() > 255 {
                    return Err(bad(format!(
                        "{what} is empty or too long: a glob such as '*' (every one) or 'v*'"
                    )));
                }
                *field = v.to_string();
            }
        }
        if let Some(r) = self.replicator() {
            r.check_filters(&f.repositories, &f.tags).map_err(|e| {
                bad(format!(
                    "{e}: write a glob such as '**', 'app', 'tools/*' or 'v*'"
                ))
            })?;
        }
        if let Some(b) = req.on_push {
            f.on_push = b;
        }
        if let Some(b) = req.enabled {
            f.enabled = b;
        }
        if let Some(b) = req.insecure {
            f.insecure = b;
        }
        if let Some(s) = &req.schedule {
            let s = s.trim();
            f.schedule = (!s.is_empty()).then(|| s.to_string());
        }
        if let Some(tz) = &req.time_zone {
            let tz = tz.trim();
            f.time_zone = if tz.is_empty() {
                "UTC".into()
            } else {
                tz.to_string()
            };
            // Checked now, also without a schedule yet.
            When::parse("* * * * *", &f.time_zone)?;
        }
        let when_changed = req.schedule.is_some()
            || req.time_zone.is_some()
            || req.enabled.is_some()
            || base.next_run_at.is_none();
        f.next_run_at = match (&f.schedule, f.enabled) {
            (Some(cron), true) => {
                let when = When::parse(cron, &f.time_zone)?;
                if when_changed {
                    Some(when.next_after(self.clock_ms())?)
                } else {
                    base.next_run_at
                }
            }
            (Some(cron), false) => {
                When::parse(cron, &f.time_zone)?;
                None
            }
            (None, _) => None,
        };
        Ok(f)
    }

    async fn replication_row(
        &self,
        project_id: i64,
        path: &str,
        id: i64,
    ) -> Result<ReplicationRow> {
        match self.inner.db.replication(id).await? {
            Some(r) if r.project_id == project_id => Ok(r),
            _ => Err(EngineError::not_found(format!(
                "replication rule {id} of project '{path}'"
            ))),
        }
    }

    async fn replication_dto(&self, r: &ReplicationRow) -> Result<rest::Replication> {
        let last = self
            .inner
            .db
            .replication_runs(r.id, PageReq::new(Some(1), Some(1)))
            .await?;
        Ok(rule_dto(r, last.first()))
    }

    /// A project's replication rules, by name, each with its last run.
    pub async fn replications(&self, project: &str) -> Result<Vec<rest::Replication>> {
        let p = self.find_project_row(project).await?;
        let mut out = Vec::new();
        for r in self.inner.db.replications_of_project(p.id).await? {
            out.push(self.replication_dto(&r).await?);
        }
        Ok(out)
    }

    pub async fn replication(&self, project: &str, id: i64) -> Result<rest::Replication> {
        let p = self.find_project_row(project).await?;
        let r = self.replication_row(p.id, &p.path, id).await?;
        self.replication_dto(&r).await
    }

    /// Makes a rule; everything is checked before anything is written; the password is
    /// sealed to the new row in the same transaction.
    pub async fn create_replication(
        &self,
        project: &str,
        req: ReplicationWrite,
        caller: &Caller,
    ) -> Result<rest::Replication> {
        let p = self.find_project_row(project).await?;
        let defaults = ReplicationFields {
            name: String::new(),
            url: String::new(),
            namespace: String::new(),
            username: String::new(),
            repositories: "**".into(),
            tags: "*".into(),
            on_push: false,
            schedule: None,
            time_zone: "UTC".into(),
            next_run_at: None,
            enabled: true,
            insecure: false,
        };
        let f = self.merged_fields(&defaults, &req, true)?;
        let password = req.password.as_deref().filter(|p| !p.is_empty());
        if password.is_some_and(|p| p.len() > 4096) {
            return Err(bad("password is longer than 4096 bytes"));
        }
        let keys = &self.inner.keys;
        let id = self
            .inner
            .db
            .insert_replication(
                p.id,
                &f,
                &caller.name(),
                now_ms(),
                password.map(|pw| {
                    move |id: i64| keys.seal(pw.as_bytes(), &replication_password_aad(id))
                }),
            )
            .await?;
        tracing::info!(project = %p.path, rule = %f.name, url = %f.url, "replication rule made");
        self.audit(
            caller,
            "replication.create",
            Some(p.id),
            &f.name,
            Some(describe(
                &f,
                if password.is_some() { "set" } else { "none" },
            )),
        )
        .await;
        self.replication(project, id).await
    }

    /// Changes a rule: fields absent from `req` stay (the password too; `""` removes it).
    pub async fn update_replication(
        &self,
        project: &str,
        id: i64,
        req: ReplicationWrite,
        caller: &Caller,
    ) -> Result<rest::Replication> {
        let p = self.find_project_row(project).await?;
        let row = self.replication_row(p.id, &p.path, id).await?;
        let f = self.merged_fields(&row.fields, &req, false)?;
        let password = match req.password.as_deref() {
            None => PasswordChange::Keep,
            Some("") => PasswordChange::Clear,
            Some(pw) if pw.len() > 4096 => {
                return Err(bad("password is longer than 4096 bytes"));
            }
            Some(pw) => PasswordChange::Set(
                self.inner
                    .keys
                    .seal(pw.as_bytes(), &replication_password_aad(id)),
            ),
        };
        if !self
            .inner
            .db
            .update_replication(id, &f, &password, now_ms())
            .await?
        {
            return Err(EngineError::not_found(format!("replication rule {id}")));
        }
        let said = match password {
            PasswordChange::Keep => "kept",
            PasswordChange::Clear => "removed",
            PasswordChange::Set(_) => "changed",
        };
        self.audit(
            caller,
            "replication.update",
            Some(p.id),
            &f.name,
            Some(describe(&f, said)),
        )
        .await;
        self.replication(project, id).await
    }

    /// Removes a rule and its runs' history.
    pub async fn delete_replication(&self, project: &str, id: i64, caller: &Caller) -> Result<()> {
        let p = self.find_project_row(project).await?;
        let row = self.replication_row(p.id, &p.path, id).await?;
        if !self.inner.db.delete_replication(p.id, id).await? {
            return Err(EngineError::not_found(format!("replication rule {id}")));
        }
        self.audit(
            caller,
            "replication.delete",
            Some(p.id),
            &row.fields.name,
            Some(json!({"url": row.fields.url}).to_string()),
        )
        .await;
        Ok(())
    }

    /// Queues a run of every matching tag now (or answers the one already waiting).
    pub async fn run_replication(
        &self,
        project: &str,
        id: i64,
        caller: &Caller,
    ) -> Result<rest::ReplicationRun> {
        let p = self.find_project_row(project).await?;
        let row = self.replication_row(p.id, &p.path, id).await?;
        if !row.fields.enabled {
            return Err(EngineError::Conflict(format!(
                "replication rule '{}' is disabled: enable it (PUT {{\"enabled\": true}}) to run it",
                row.fields.name
            )));
        }
        let (run, new) = self
            .inner
            .db
            .queue_replication_run(&NewReplicationRun {
                replication_id: id,
                project_id: p.id,
                triggered_by: "manual".into(),
                image: None,
                actor: caller.name(),
                now: now_ms(),
            })
            .await?;
        if new {
            self.audit(
                caller,
                "replication.run",
                Some(p.id),
                &row.fields.name,
                None,
            )
            .await;
            self.wake_replication();
        }
        let r = self
            .inner
            .db
            .replication_run(run)
            .await?
            .ok_or_else(|| EngineError::not_found(format!("replication run {run}")))?;
        Ok(run_dto(&r))
    }

    /// A rule's runs, newest first.
    pub async fn replication_runs(
        &self,
        project: &str,
        id: i64,
        page: PageReq,
    ) -> Result<Page<rest::ReplicationRun>> {
        let p = self.find_project_row(project).await?;
        self.replication_row(p.id, &p.path, id).await?;
        let rows = self.inner.db.replication_runs(id, page).await?;
        Ok(paged(page, rows, |r| run_dto(&r)))
    }

    // ---- triggers -------------------------------------------------------------------------

    /// A tag was pushed (or promoted) into a project: a run of each enabled on-push rule
    /// whose filters take it. Called off the push's path (the registry's event task); a
    /// failure is logged, never the push's.
    pub(super) async fn queue_push_replications(&self, project_id: i64, doc: &Value) {
        let (Some(repository), Some(tag)) = (doc["repository"].as_str(), doc["tag"].as_str())
        else {
            return; // pushed by digest (an index's image): the index's tag brings it
        };
        let actor = doc["actor"].as_str().unwrap_or_default();
        let run = async {
            let rules = self.inner.db.push_replications(project_id).await?;
            if rules.is_empty() {
                return Ok::<bool, EngineError>(false);
            }
            let project = self.project_row(project_id).await?;
            let Some(short) = repository
                .strip_prefix(&project.path)
                .and_then(|r| r.strip_prefix('/'))
            else {
                return Ok(false);
            };
            let mut queued = false;
            for r in rules {
                let takes = self
                    .replicator()
                    .is_none_or(|m| m.matches(&r.fields.repositories, &r.fields.tags, short, tag));
                if !takes {
                    continue;
                }
                let (_, new) = self
                    .inner
                    .db
                    .queue_replication_run(&NewReplicationRun {
                        replication_id: r.id,
                        project_id,
                        triggered_by: "push".into(),
                        image: Some((repository.to_string(), tag.to_string())),
                        actor: actor.to_string(),
                        now: now_ms(),
                    })
                    .await?;
                queued |= new;
            }
            Ok(queued)
        };
        match run.await {
            Ok(true) => self.wake_replication(),
            Ok(false) => {}
            Err(e) => tracing::warn!(project_id, repository, tag, "queueing replications: {e}"),
        }
    }

    /// From the ticker: rules whose scheduled slot has come get a run, once per slot.
    pub(super) async fn queue_due_replications(&self) {
        let now = self.clock_ms();
        let due = match self.inner.db.due_replications(now).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("due replications: {e}");
                return;
            }
        };
        let mut queued = false;
        for r in due {
            let Some(slot) = r.fields.next_run_at else {
                continue;
            };
            let next = r
                .fields
                .schedule
                .as_deref()
                .and_then(|c| When::parse(c, &r.fields.time_zone).ok())
                .and_then(|w| w.next_after(now).ok());
            match self.inner.db.claim_replication_slot(r.id, slot, next).await {
                Ok(true) => {}
                Ok(false) => continue, // another tick or server took it
                Err(e) => {
                    tracing::warn!(rule = r.id, "claiming a replication slot: {e}");
                    continue;
                }
            }
            match self
                .inner
                .db
                .queue_replication_run(&NewReplicationRun {
                    replication_id: r.id,
                    project_id: r.project_id,
                    triggered_by: "schedule".into(),
                    image: None,
                    actor: SCHEDULE_ACTOR.into(),
                    now: now_ms(),
                })
                .await
            {
                Ok((_, new)) => queued |= new,
                Err(e) => tracing::warn!(rule = r.id, "queueing a scheduled replication: {e}"),
            }
        }
        if queued {
            self.wake_replication();
        }
    }

    fn wake_replication(&self) {
        self.inner.replication.wake.notify_one();
    }

    // ---- the worker -----------------------------------------------------------------------

    /// Starts the task that runs queued replications with `replicator` (once; the server
    /// calls it when its registry is ready). Before it, runs are queued and wait.
    pub fn start_replication(&self, replicator: Arc<dyn Replicator>, config: ReplicationConfig) {
        if self.inner.replication.replicator.set(replicator).is_err() {
            tracing::warn!("replication is started already");
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
            let mut pruned: Option<std::time::Instant> = None;
            loop {
                if pruned.is_none_or(|t| t.elapsed() > PRUNE_EVERY) {
                    pruned = Some(std::time::Instant::now());
                    let before = now_ms() - KEEP.as_millis() as i64;
                    if let Err(e) = this.inner.db.prune_replication_runs(before).await {
                        tracing::warn!("replication: pruning runs: {e}");
                    }
                }
                if let Err(e) = this.replication_round(&slots, &config).await {
                    tracing::warn!("replication: {e}");
                }
                let next = this.inner.db.replication_next_due().await.ok().flatten();
                let wait = next.map_or(IDLE_MS, |at| (at - now_ms()).clamp(10, IDLE_MS));
                tokio::select! {
                    _ = this.inner.replication.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                }
            }
        });
    }

    async fn replication_round(
        &self,
        slots: &Arc<tokio::sync::Semaphore>,
        config: &ReplicationConfig,
    ) -> Result<()> {
        let free = slots.available_permits();
        if free == 0 {
            return Ok(());
        }
        let now = now_ms();
        let lease = config.lease.as_millis() as i64;
        let busy = |rule: i64| {
            self.inner
                .replication
                .busy
                .lock()
                .expect("busy")
                .contains(&rule)
        };
        let runs = self
            .inner
            .db
            .claim_replication_runs(now, now + lease, free as i64, &busy)
            .await?;
        for run in runs {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                break; // cannot happen: as many runs as permits were free
            };
            self.inner
                .replication
                .busy
                .lock()
                .expect("busy")
                .insert(run.replication_id);
            let (this, config) = (self.clone(), config.clone());
            tokio::spawn(async move {
                let rule = run.replication_id;
                this.run_one(run, &config).await;
                this.inner
                    .replication
                    .busy
                    .lock()
                    .expect("busy")
                    .remove(&rule);
                drop(permit);
                this.wake_replication();
            });
        }
        Ok(())
    }

    /// One attempt of a claimed run, to its recorded end.
    async fn run_one(&self, run: ReplicationRunRow, config: &ReplicationConfig) {
        let report = match self.task_of(&run).await {
            Ok(task) => {
                let replicator = self.replicator().expect("started").clone();
                let work = replicator.replicate(task);
                tokio::pin!(work);
                let renew = config.lease / 3;
                let lease = config.lease.as_millis() as i64;
                loop {
                    tokio::select! {
                        r = &mut work => break r,
                        _ = tokio::time::sleep(renew) => {
                            match self.inner.db
                                .renew_replication_lease(run.id, run.attempts, now_ms() + lease)
                                .await
                            {
                                Ok(true) => {}
                                // Deleted with its rule, or taken over: stop.
                                Ok(false) => return,
                                Err(e) => tracing::warn!(run = run.id, "renewing a lease: {e}"),
                            }
                        }
                    }
                }
            }
            Err(failure) => ReplicationReport {
                counts: ReplicationCounts::default(),
                failure: Some(failure),
            },
        };
        let now = now_ms();
        let (status, retry_at) = match &report.failure {
            None => ("succeeded", None),
            Some(f) if f.retry && run.attempts < config.max_attempts => {
                let shift = (run.attempts - 1).clamp(0, 20) as u32;
                let wait = config
                    .retry_base
                    .saturating_mul(1 << shift)
                    .min(config.retry_max);
                ("queued", Some(now + wait.as_millis() as i64))
            }
            Some(_) => ("failed", None),
        };
        let error = report.failure.as_ref().map(|f| {
            if status == "failed" && f.retry {
                format!("{} (gave up after {} attempts)", f.message, run.attempts)
            } else {
                f.message.clone()
            }
        });
        match self
            .inner
            .db
            .end_replication_attempt(
                run.id,
                run.attempts,
                status,
                retry_at,
                &report.counts,
                error.as_deref(),
                now,
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(run = run.id, "recording a replication's end: {e}");
                return;
            }
        }
        match &error {
            Some(e) => tracing::warn!(
                run = run.id,
                rule = run.replication_id,
                status,
                "replication: {e}"
            ),
            None => tracing::info!(
                run = run.id,
                rule = run.replication_id,
                "replication succeeded"
            ),
        }
        if status != "queued" {
            self.replication_event(&run, status).await;
        }
    }

    /// What the replicator needs for a run: the rule as it is now, its password opened.
    async fn task_of(
        &self,
        run: &ReplicationRunRow,
    ) -> std::result::Result<ReplicationTask, ReplicationFailure> {
        let fail = |message: String| ReplicationFailure {
            message,
            retry: false,
        };
        let temporary = |e: EngineError| ReplicationFailure {
            message: format!("this server's database: {e}"),
            retry: true,
        };
        let rule = self
            .inner
            .db
            .replication(run.replication_id)
            .await
            .map_err(|e| temporary(e.into()))?
            .ok_or_else(|| fail("the replication rule was deleted".into()))?;
        if !rule.fields.enabled {
            return Err(fail(
                "the rule was disabled before this run started: enable it and run it again".into(),
            ));
        }
        let project = self.project_row(rule.project_id).await.map_err(temporary)?;
        let password = match &rule.password {
            None => None,
            Some(sealed) => Some(
                self.inner
                    .keys
                    .open(sealed, &replication_password_aad(rule.id))
                    .map_err(|e| {
                        fail(format!(
                            "the rule's password cannot be opened ({e}): set it again (PUT with \"password\")"
                        ))
                    })?,
            ),
        };
        let f = rule.fields;
        Ok(ReplicationTask {
            run_id: run.id,
            project_id: rule.project_id,
            project_path: project.path,
            url: f.url,
            namespace: f.namespace,
            username: f.username,
            password,
            repositories: f.repositories,
            tags: f.tags,
            insecure: f.insecure,
            image: run.repository.clone().zip(run.tag.clone()),
        })
    }

    /// `replication_succeeded` / `replication_failed` to the project's channels.
    async fn replication_event(&self, run: &ReplicationRunRow, status: &str) {
        let Ok(Some(done)) = self.inner.db.replication_run(run.id).await else {
            return;
        };
        let Ok(Some(rule)) = self.inner.db.replication(run.replication_id).await else {
            return;
        };
        let doc = json!({
            "replication": {"id": rule.id, "name": rule.fields.name, "url": rule.fields.url},
            "run": run_dto(&done),
            "repository": done.repository,
            "tag": done.tag,
            "actor": done.actor,
            "error": done.error,
        });
        let event = if status == "succeeded" {
            "replication_succeeded"
        } else {
            "replication_failed"
        };
        self.registry_event(run.project_id, event, doc).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(
            check_url("harbor.example.com").unwrap(),
            "https://harbor.example.com"
        );
        assert_eq!(
            check_url("http://127.0.0.1:5000/").unwrap(),
            "http://127.0.0.1:5000"
        );
        for (bad, says) in [
            ("", "missing"),
            ("ftp://x", "neither http nor https"),
            ("https://u:p@h", "credentials"),
            ("https://h/team", "has a path"),
        ] {
            let e = check_url(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(check_namespace("/team/").unwrap(), "team");
        assert_eq!(check_namespace("").unwrap(), "");
        assert!(check_namespace("Team").is_err());
        assert!(check_namespace("a//b").is_err());
    }
}
