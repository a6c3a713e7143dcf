//! The outbox's sender: one task, started with the engine, that delivers the queued commit
//! statuses, chat messages and emails (gantry_store::db::outbox), apart from pipelines.
//!
//! ```text
//! loop: due rows, oldest first ─► skip those whose group is being sent ─► claim (conditional)
//!   ─► one task per group (at most CONCURRENCY), its rows in order:
//!        a newer row of the group exists ─► superseded (an older status never overwrites)
//!        send (bounded by NotifyConfig::timeout) ─► done
//!          | temporary failure (network, 5xx, 429) ─► queued again after base·2^(n-1),
//!            capped at retry_max; given up (failed) after max_attempts or max_age
//!          | permanent failure (4xx, a removed channel) ─► failed
//!   ─► sleep until the next row is due (at most 5 s), or until woken by a new row
//! every hour: finished rows older than 30 days are forgotten
//! ```
//!
//! A process that dies while sending leaves rows `sending`: they are queued again at the next
//! start, so a message may then arrive twice (at least once); nothing else sends twice.
//! Errors are recorded without secrets: reqwest's errors lose their URL (a chat webhook's URL
//! is its secret), and tokens only travel in headers.

use super::Engine;
use super::notify::{SmtpConfig, SmtpTls, job_url, pipeline_url};
use gantry_api::{JobStatus, PipelineStatus};
use gantry_store::db::now_ms;
use gantry_store::db::outbox::{OutboxRow, channel_url_aad, forge_token_aad};
use gantry_store::secrets::ExposeSecret;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Groups sent at once.
const CONCURRENCY: usize = 4;
/// The longest sleep between two looks at the outbox, in ms.
const IDLE_MS: i64 = 5000;
/// Rows read per round.
const BATCH: i64 = 64;
/// Finished rows are kept this long (the outbox's API shows them), then forgotten.
const KEEP: Duration = Duration::from_secs(30 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What sending one row came to.
enum Outcome {
    Done,
    /// Worth another attempt.
    Retry(String),
    /// Not worth one.
    Fail(String),
}

/// The sender's shared state.
pub(super) struct Sender {
    wake: tokio::sync::Notify,
    busy: Mutex<HashSet<String>>,
    timeout: Duration,
    /// Made at the first message: its TLS roots cost memory a server without forges or
    /// chat channels never needs.
    http: std::sync::OnceLock<reqwest::Client>,
}

impl Sender {
    pub(super) fn new(timeout: Duration) -> Sender {
        Sender {
            wake: tokio::sync::Notify::new(),
            busy: Mutex::new(HashSet::new()),
            timeout,
            http: std::sync::OnceLock::new(),
        }
    }

    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(self.timeout)
                .connect_timeout(self.timeout.min(Duration::from_secs(5)))
                .user_agent(concat!("gantry/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client")
        })
    }
}

impl Engine {
    /// Tells the sender that rows were queued.
    pub(super) fn wake_outbox(&self) {
        self.inner.sender.wake.notify_one();
    }

    /// Starts the sender task.
    pub(super) async fn start_outbox(&self) -> crate::error::Result<()> {
        let n = self.inner.db.outbox_requeue_sending().await?;
        if n > 0 {
            tracing::warn!(
                rows = n,
                "outbox: messages being sent when the server stopped are sent again"
            );
        }
        let this = self.clone();
        tokio::spawn(async move {
            let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
            let mut pruned = std::time::Instant::now();
            loop {
                if pruned.elapsed() > PRUNE_EVERY {
                    pruned = std::time::Instant::now();
                    let before = now_ms() - KEEP.as_millis() as i64;
                    if let Err(e) = this.inner.db.outbox_prune(before).await {
                        tracing::warn!("outbox: pruning: {e}");
                    }
                }
                if let Err(e) = this.outbox_round(&limit).await {
                    tracing::warn!("outbox: {e}");
                }
                let next = this.inner.db.outbox_next_due().await.ok().flatten();
                // Rows queued by this process wake the loop; a look every few seconds finds
                // those of other servers on the same database.
                let wait = next.map_or(IDLE_MS, |at| (at - now_ms()).clamp(10, IDLE_MS));
                tokio::select! {
                    _ = this.inner.sender.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                }
            }
        });
        Ok(())
    }

    async fn outbox_round(&self, limit: &Arc<tokio::sync::Semaphore>) -> crate::error::Result<()> {
        let now = now_ms();
        let busy = |group: &str| self.inner.sender.busy.lock().expect("busy").contains(group);
        let rows = self.inner.db.claim_due(now, BATCH, &busy).await?;
        let mut groups: BTreeMap<String, Vec<OutboxRow>> = BTreeMap::new();
        for r in rows {
            groups.entry(r.group_key.clone()).or_default().push(r);
        }
        for (group, rows) in groups {
            self.inner
                .sender
                .busy
                .lock()
                .expect("busy")
                .insert(group.clone());
            let permit = limit.clone().acquire_owned().await.expect("semaphore");
            let this = self.clone();
            tokio::spawn(async move {
                for r in rows {
                    this.send_row(r).await;
                }
                this.inner.sender.busy.lock().expect("busy").remove(&group);
                drop(permit);
                this.wake_outbox();
            });
        }
        Ok(())
    }

    async fn send_row(&self, r: OutboxRow) {
        let db = &self.inner.db;
        let result = async {
            if r.kind == "commit_status"
                && let Some(newer) = db.outbox_newer_in_group(&r.group_key, r.id).await?
            {
                db.outbox_finish(r.id, "superseded", Some(&format!("superseded by #{newer}")))
                    .await?;
                return Ok::<_, crate::error::EngineError>(());
            }
            let outcome = match r.kind.as_str() {
                "commit_status" => self.send_commit_status(&r).await,
                "chat" => self.send_chat(&r).await,
                "email" => self.send_email(&r).await,
                other => Outcome::Fail(format!("unknown kind {other}")),
            };
            let cfg = &self.inner.config.notify;
            match outcome {
                Outcome::Done => db.outbox_finish(r.id, "done", None).await?,
                Outcome::Fail(e) => {
                    tracing::warn!(id = r.id, key = %r.dedupe_key, "outbox: not sent: {e}");
                    db.outbox_finish(r.id, "failed", Some(&e)).await?
                }
                Outcome::Retry(e) => {
                    let age = now_ms() - r.created_at;
                    if r.attempts >= cfg.max_attempts || age > cfg.max_age.as_millis() as i64 {
                        let e = format!("gave up after {} attempts: {e}", r.attempts);
                        tracing::warn!(id = r.id, key = %r.dedupe_key, "outbox: {e}");
                        db.outbox_finish(r.id, "failed", Some(&e)).await?
                    } else {
                        let exp = (r.attempts - 1).clamp(0, 20) as u32;
                        let delay = cfg
                            .retry_base
                            .saturating_mul(2u32.saturating_pow(exp))
                            .min(cfg.retry_max);
                        tracing::info!(
                            id = r.id,
                            key = %r.dedupe_key,
                            attempt = r.attempts,
                            "outbox: will retry in {delay:?}: {e}"
                        );
                        db.outbox_retry(r.id, now_ms() + delay.as_millis() as i64, &e)
                            .await?
                    }
                }
            }
            Ok(())
        };
        if let Err(e) = result.await {
            tracing::warn!(id = r.id, "outbox: {e}");
        }
    }

    // ---- commit statuses ------------------------------------------------------------------

    async fn send_commit_status(&self, r: &OutboxRow) -> Outcome {
        let db = &self.inner.db;
        let load = async {
            let forge = db.forge(r.project_id).await?;
            let p = db.pipeline(r.pipeline_id.unwrap_or(0)).await?;
            let project = db.project(r.project_id).await?;
            let job = match r.job_id {
                Some(id) => db.job(id).await?,
                None => None,
            };
            Ok::<_, gantry_store::StoreError>((forge, p, project, job))
        };
        let (forge, p, project, job) = match load.await {
            Ok(x) => x,
            Err(e) => return Outcome::Retry(format!("reading the database: {e}")),
        };
        let (Some(forge), Some(p), Some(project)) = (forge, p, project) else {
            return Outcome::Fail("the project's forge or the pipeline is gone".into());
        };
        let token = match self
            .inner
            .keys
            .open(&forge.token, &forge_token_aad(forge.project_id))
        {
            Ok(t) => t,
            Err(e) => return Outcome::Fail(format!("the forge token cannot be opened: {e}")),
        };
        let external = &self.inner.config.external_url;
        let (gantry_state, name, url, what) = match &job {
            Some(j) => (
                job_state(j.status),
                format!("gantry/{}", j.name),
                job_url(external, &project.path, j.id),
                format!("Job {}", j.name),
            ),
            None => (
                pipeline_state(p.status),
                "gantry".to_string(),
                pipeline_url(external, &project.path, p.id),
                format!("Pipeline #{}", p.id),
            ),
        };
        let Some(state) = gantry_state else {
            return Outcome::Done; // nothing a forge shows (created)
        };
        let waiting = job
            .as_ref()
            .map_or(p.status == PipelineStatus::Manual, |j| {
                j.status == JobStatus::Manual
            });
        let description = match waiting {
            true => format!("{what} is waiting for a manual action"),
            false => format!("{what} {}", describe(state)),
        };
        let base = forge.api_url.trim_end_matches('/');
        let (req, body) = match forge.kind.as_str() {
            "gitlab" => {
                let st = match state {
                    "pending" | "running" | "success" | "failed" | "canceled" | "skipped" => state,
                    _ => "pending",
                };
                let mut body = json!({
                    "state": st, "name": name, "target_url": url, "description": description,
                });
                if !p.git_ref.starts_with("refs/") {
                    body["ref"] = Value::String(p.git_ref.clone());
                }
                let u = format!(
                    "{base}/api/v4/projects/{}/statuses/{}",
                    encode(&forge.repository),
                    p.sha
                );
                (
                    self.inner
                        .sender
                        .http()
                        .post(u)
                        .header("PRIVATE-TOKEN", token.expose_secret()),
                    body,
                )
            }
            kind => {
                let st = match state {
                    "pending" | "running" => "pending",
                    "success" => "success",
                    "failed" => "failure",
                    "skipped" => return Outcome::Done, // neither shows skipped
                    _ => "error",                      // canceled
                };
                let (owner, repo) = forge.repository.split_once('/').unwrap_or(("", ""));
                let body = json!({
                    "state": st, "context": name, "target_url": url,
                    "description": truncate(&description, 140),
                });
                let (u, auth) = if kind == "github" {
                    (
                        format!(
                            "{base}/repos/{}/{}/statuses/{}",
                            encode(owner),
                            encode(repo),
                            p.sha
                        ),
                        format!("Bearer {}", token.expose_secret()),
                    )
                } else {
                    (
                        format!(
                            "{base}/api/v1/repos/{}/{}/statuses/{}",
                            encode(owner),
                            encode(repo),
                            p.sha
                        ),
                        format!("token {}", token.expose_secret()),
                    )
                };
                let mut req = self
                    .inner
                    .sender
                    .http()
                    .post(u)
                    .header("Authorization", auth);
                if kind == "github" {
                    req = req
                        .header("Accept", "application/vnd.github+json")
                        .header("X-GitHub-Api-Version", "2022-11-28");
                }
                (req, body)
            }
        };
        match http_outcome(req.json(&body).send().await, None).await {
            // GitLab refuses to set the state a status already has (`pending` for a
            // scheduled, then a manual pipeline): it has it, which is what was asked.
            Outcome::Fail(e)
                if forge.kind == "gitlab" && e.contains("Cannot transition status") =>
            {
                Outcome::Done
            }
            other => other,
        }
    }

    // ---- chat -----------------------------------------------------------------------------

    async fn send_chat(&self, r: &OutboxRow) -> Outcome {
        let channel = match self.inner.db.channel(r.channel_id.unwrap_or(0)).await {
            Ok(Some(c)) => c,
            Ok(None) => return Outcome::Fail("the notification channel was removed".into()),
            Err(e) => return Outcome::Retry(format!("reading the database: {e}")),
        };
        let Some(sealed) = channel.url.as_deref() else {
            return Outcome::Fail("the channel has no URL".into());
        };
        let url = match self.inner.keys.open(sealed, &channel_url_aad(channel.id)) {
            Ok(u) => u,
            Err(e) => return Outcome::Fail(format!("the webhook URL cannot be opened: {e}")),
        };
        let doc: Value = serde_json::from_str(&r.payload).unwrap_or_default();
        let body = chat_body(&channel.kind, &doc);
        let req = self
            .inner
            .sender
            .http()
            .post(url.expose_secret())
            .json(&body);
        http_outcome(req.send().await, Some(&channel.kind)).await
    }

    // ---- email ----------------------------------------------------------------------------

    async fn send_email(&self, r: &OutboxRow) -> Outcome {
        let Some(smtp) = self.inner.config.notify.smtp.clone() else {
            return Outcome::Fail("this server has no SMTP settings".into());
        };
        let channel = match self.inner.db.channel(r.channel_id.unwrap_or(0)).await {
            Ok(Some(c)) => c,
            Ok(None) => return Outcome::Fail("the notification channel was removed".into()),
            Err(e) => return Outcome::Retry(format!("reading the database: {e}")),
        };
        let doc: Value = serde_json::from_str(&r.payload).unwrap_or_default();
        let (subject, text) = message(&doc);
        let recipients = channel.recipients.unwrap_or_default();
        match send_mail(
            &smtp,
            &recipients,
            &subject,
            &text,
            self.inner.config.notify.timeout,
        )
        .await
        {
            Ok(()) => Outcome::Done,
            Err(e) => e,
        }
    }
}

/// The pipeline's state in GitLab's words; `None` when there is nothing to show yet.
fn pipeline_state(s: PipelineStatus) -> Option<&'static str> {
    Some(match s {
        PipelineStatus::Created => return None,
        PipelineStatus::Pending | PipelineStatus::Scheduled | PipelineStatus::Manual => "pending",
        PipelineStatus::Running => "running",
        PipelineStatus::Success => "success",
        PipelineStatus::Failed => "failed",
        PipelineStatus::Canceled => "canceled",
        PipelineStatus::Skipped => "skipped",
    })
}

fn job_state(s: JobStatus) -> Option<&'static str> {
    Some(match s {
        JobStatus::Created | JobStatus::Skipped => return None,
        JobStatus::Pending | JobStatus::Scheduled | JobStatus::Manual => "pending",
        JobStatus::Running => "running",
        JobStatus::Success => "success",
        JobStatus::Failed => "failed",
        JobStatus::Canceled => "canceled",
    })
}

fn describe(state: &str) -> &'static str {
    match state {
        "pending" => "is pending",
        "running" => "is running",
        "success" => "passed",
        "failed" => "failed",
        "canceled" => "was canceled",
        _ => "was skipped",
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max - 1).collect();
    t.push('…');
    t
}

/// Percent-encodes a path segment (a GitLab project path `group/app` becomes `group%2Fapp`).
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a response or an error means for the row. DingTalk and Feishu answer errors with
/// 200 and a code in the body.
async fn http_outcome(sent: reqwest::Result<reqwest::Response>, chat: Option<&str>) -> Outcome {
    let resp = match sent {
        Ok(r) => r,
        // Without the URL: a chat webhook's URL is its secret.
        Err(e) => return Outcome::Retry(e.without_url().to_string()),
    };
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let short = truncate(text.trim(), 300);
    if status.is_success() {
        let body: Value = serde_json::from_str(&text).unwrap_or_default();
        let code = match chat {
            Some("dingtalk") => body.get("errcode").and_then(Value::as_i64),
            Some("feishu") => body
                .get("code")
                .or_else(|| body.get("StatusCode"))
                .and_then(Value::as_i64),
            _ => None,
        };
        return match code {
            Some(c) if c != 0 => Outcome::Fail(format!("the webhook refused the message: {short}")),
            _ => Outcome::Done,
        };
    }
    let msg = format!("HTTP {status}: {short}");
    if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
        Outcome::Retry(msg)
    } else {
        Outcome::Fail(msg)
    }
}

/// A message's subject (or title) and plain text, from the event document.
pub(super) fn message(doc: &Value) -> (String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let event = s(&doc["event"]);
    if let Some(outcome) = event.strip_prefix("replication_") {
        let r = &doc["replication"];
        let run = &doc["run"];
        let subject = format!(
            "{} {}: replication '{}' to {} {outcome}",
            if outcome == "failed" { "❌" } else { "🔁" },
            s(&doc["project"]["path"]),
            s(&r["name"]),
            s(&r["url"])
        );
        let mut text = match doc["tag"].as_str() {
            Some(t) => format!("Image: {}:{t}\n", s(&doc["repository"])),
            None => "Every matching tag\n".to_string(),
        };
        text.push_str(&format!(
            "Run: #{} ({}, {} attempt(s))\nImages: {} copied, {} already there\nBlobs: {} copied ({} bytes), {} mounted, {} already there\n",
            run["id"].as_i64().unwrap_or_default(),
            s(&run["triggered_by"]),
            run["attempts"].as_i64().unwrap_or_default(),
            run["images_copied"].as_i64().unwrap_or_default(),
            run["images_skipped"].as_i64().unwrap_or_default(),
            run["blobs_copied"].as_i64().unwrap_or_default(),
            run["bytes_copied"].as_i64().unwrap_or_default(),
            run["blobs_mounted"].as_i64().unwrap_or_default(),
            run["blobs_skipped"].as_i64().unwrap_or_default(),
        ));
        if let Some(e) = doc["error"].as_str() {
            text.push_str(&format!("Error: {e}\n"));
        }
        return (subject, text);
    }
    if let Some(verb) = event.strip_prefix("image_") {
        let image = match doc["tag"].as_str() {
            Some(t) => format!("{}:{t}", s(&doc["repository"])),
            None => format!("{}@{}", s(&doc["repository"]), s(&doc["digest"])),
        };
        let mut subject = format!("📦 {}: {image} {verb}", s(&doc["project"]["path"]));
        let actor = s(&doc["actor"]);
        if !actor.is_empty() {
            subject.push_str(&format!(" by {actor}"));
        }
        let mut text = format!("Digest: {}\n", s(&doc["digest"]));
        if let Some(from) = doc["source"].as_str() {
            text.push_str(&format!("From: {from}\n"));
        }
        return (subject, text);
    }
    let project = s(&doc["project"]["path"]);
    let p = &doc["pipeline"];
    let id = p["id"].as_i64().unwrap_or_default();
    let git_ref = s(&p["ref"]);
    let subject = match event.as_str() {
        "failed" => format!("❌ {project}: pipeline #{id} failed on {git_ref}"),
        "fixed" => format!("✅ {project}: pipeline #{id} fixed {git_ref}"),
        "succeeded" => format!("✅ {project}: pipeline #{id} succeeded on {git_ref}"),
        "manual" => format!(
            "⏸ {project}: job {} is waiting for approval (pipeline #{id}, {git_ref})",
            s(&doc["job"]["name"])
        ),
        _ => format!("{project}: pipeline #{id} {event}"),
    };
    let mut text = String::new();
    text.push_str(&format!("Project: {project}\n"));
    text.push_str(&format!(
        "Ref: {git_ref}\nCommit: {} {}\n",
        s(&p["short_sha"]),
        s(&doc["commit"]["title"])
    ));
    let author = s(&doc["commit"]["author"]);
    if !author.is_empty() {
        text.push_str(&format!("Author: {author}\n"));
    }
    let user = s(&doc["user"]);
    if !user.is_empty() {
        text.push_str(&format!("Pushed by: {user}\n"));
    }
    if let Some(errors) = p["errors"].as_str() {
        text.push_str(&format!("Errors:\n{errors}\n"));
    }
    if let Some(failed) = doc["failed_jobs"].as_array().filter(|f| !f.is_empty()) {
        text.push_str("Failed jobs:\n");
        for j in failed {
            text.push_str(&format!(
                "- {} (stage {}): {}\n",
                s(&j["name"]),
                s(&j["stage"]),
                s(&j["url"])
            ));
        }
    }
    if event == "manual" {
        text.push_str(&format!(
            "Waiting job: {} (stage {}): {}\n",
            s(&doc["job"]["name"]),
            s(&doc["job"]["stage"]),
            s(&doc["job"]["url"])
        ));
    }
    text.push_str(&format!("Pipeline: {}\n", s(&p["url"])));
    (subject, text)
}

/// The body each chat service documents for an incoming webhook.
fn chat_body(kind: &str, doc: &Value) -> Value {
    let (title, text) = message(doc);
    match kind {
        "slack" => json!({"text": format!("*{title}*\n{text}")}),
        "dingtalk" => {
            let md: String = text.lines().map(|l| format!("{l}  \n")).collect();
            json!({"msgtype": "markdown", "markdown": {"title": title, "text": format!("### {title}\n\n{md}")}})
        }
        "feishu" => json!({"msg_type": "text", "content": {"text": format!("{title}\n{text}")}}),
        "teams" => json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {"type": "TextBlock", "text": title, "weight": "Bolder", "wrap": true},
                        {"type": "TextBlock", "text": text, "wrap": true}
                    ],
                    "actions": if doc["pipeline"]["url"].is_string() {
                        json!([{"type": "Action.OpenUrl", "title": "Open the pipeline",
                                "url": doc["pipeline"]["url"]}])
                    } else {
                        json!([])
                    }
                }
            }]
        }),
        _ => doc.clone(),
    }
}

/// One email over SMTP.
async fn send_mail(
    smtp: &SmtpConfig,
    recipients: &str,
    subject: &str,
    text: &str,
    timeout: Duration,
) -> Result<(), Outcome> {
    use lettre::message::{Mailbox, header::ContentType};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let fail = |what: &str, e: &dyn std::fmt::Display| Outcome::Fail(format!("{what}: {e}"));
    let from: Mailbox = smtp
        .from
        .parse()
        .map_err(|e| fail("the sender address", &e))?;
    let mut builder = Message::builder()
        .from(from)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for r in recipients.split(',').filter(|r| !r.is_empty()) {
        builder = builder.to(r.parse().map_err(|e| fail("a recipient", &e))?);
    }
    let email = builder
        .body(text.to_string())
        .map_err(|e| fail("the message", &e))?;
    let tls = if smtp.tls == SmtpTls::None {
        Tls::None
    } else {
        let mut params = TlsParameters::builder(smtp.host.clone());
        if let Some(file) = &smtp.ca_file {
            let pem = std::fs::read(file)
                .map_err(|e| Outcome::Retry(format!("reading {}: {e}", file.display())))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| fail(&format!("the CA file {}", file.display()), &e))?;
            params = params.add_root_certificate(cert);
        }
        let params = params.build().map_err(|e| fail("TLS settings", &e))?;
        match smtp.tls {
            SmtpTls::Tls => Tls::Wrapper(params),
            _ => Tls::Required(params),
        }
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let (Some(user), Some(pass)) = (&smtp.username, &smtp.password) {
        transport = transport.credentials(Credentials::new(
            user.clone(),
            pass.expose_secret().to_string(),
        ));
    }
    match transport.build().send(email).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(Outcome::Fail(format!("SMTP: {e}"))),
        Err(e) => Err(Outcome::Retry(format!("SMTP: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlab_paths_are_encoded_and_descriptions_fit_github() {
        assert_eq!(encode("group/sub/app"), "group%2Fsub%2Fapp");
        assert_eq!(encode("42"), "42");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }

    #[test]
    fn states_as_the_forges_know_them() {
        assert_eq!(pipeline_state(PipelineStatus::Created), None);
        assert_eq!(pipeline_state(PipelineStatus::Manual), Some("pending"));
        assert_eq!(pipeline_state(PipelineStatus::Scheduled), Some("pending"));
        assert_eq!(job_state(JobStatus::Skipped), None);
        assert_eq!(job_state(JobStatus::Failed), Some("failed"));
    }

    #[test]
    fn each_chat_gets_its_documented_shape() {
        let doc = json!({
            "event": "failed",
            "project": {"path": "team/app"},
            "pipeline": {"id": 7, "ref": "main", "short_sha": "abcdef12", "url": "http://ci/team/app/-/pipelines/7"},
            "commit": {"title": "fix it", "author": "Dev"},
            "user": "dev",
            "failed_jobs": [{"name": "test", "stage": "test", "url": "http://ci/team/app/-/jobs/9"}],
        });
        let (subject, text) = message(&doc);
        assert_eq!(subject, "❌ team/app: pipeline #7 failed on main");
        assert!(
            text.contains("Commit: abcdef12 fix it\nAuthor: Dev\nPushed by: dev\n"),
            "{text}"
        );
        assert!(
            text.contains("- test (stage test): http://ci/team/app/-/jobs/9\n"),
            "{text}"
        );
        assert!(
            chat_body("slack", &doc)["text"]
                .as_str()
                .unwrap()
                .starts_with("*❌")
        );
        assert_eq!(chat_body("dingtalk", &doc)["msgtype"], "markdown");
        assert_eq!(chat_body("feishu", &doc)["msg_type"], "text");
        assert_eq!(chat_body("teams", &doc)["type"], "message");
        assert_eq!(chat_body("generic", &doc), doc);
    }
}
