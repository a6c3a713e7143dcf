//! A real `gantry server` (and real `gantry agent`s) as child processes, on SQLite or on
//! the private PostgreSQL the test command starts, and a small JSON client for its API.
//!
//! Every test that uses it runs once per backend: `for db in backends("name") { … }`.
//! PostgreSQL is used when `GANTRY_TEST_POSTGRES_URL` is set (a fresh database per test and
//! backend, made with `psql`); `GANTRY_REQUIRE_POSTGRES=1` makes its absence a failure.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

/// SQLite, and PostgreSQL when the test command started one (a fresh database named after
/// the test).
pub fn backends(test: &str) -> Vec<Backend> {
    let mut out = vec![Backend::Sqlite];
    match std::env::var("GANTRY_TEST_POSTGRES_URL") {
        Ok(base) => {
            let name = format!("gantry_srv_{test}_{}", std::process::id());
            for sql in [
                format!("DROP DATABASE IF EXISTS {name}"),
                format!("CREATE DATABASE {name}"),
            ] {
                let st = Command::new("psql")
                    .args([&base, "-q", "-c", &sql])
                    .stdout(Stdio::null())
                    .status()
                    .expect("psql runs (Debian's postgresql-client)");
                assert!(st.success(), "{sql}");
            }
            let (prefix, _) = base.rsplit_once('/').expect("a database URL");
            out.push(Backend::Postgres(format!("{prefix}/{name}")));
        }
        Err(_) if std::env::var("GANTRY_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("GANTRY_REQUIRE_POSTGRES=1 but GANTRY_TEST_POSTGRES_URL is not set")
        }
        Err(_) => {
            eprintln!("PostgreSQL not available (GANTRY_TEST_POSTGRES_URL unset): SQLite only")
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct Options {
    pub backend: Backend,
    pub local_agent: bool,
    pub local_executor: &'static str,
    pub local_concurrency: u32,
    pub lease_secs: u64,
    pub heartbeat_secs: u64,
    /// Make the data directory inside this directory (e.g. a small tmpfs) instead of the
    /// system's temporary directory; the server's stderr is then kept outside it.
    pub data_in: Option<PathBuf>,
    /// More arguments and environment variables for `gantry server`.
    pub server_args: Vec<String>,
    pub server_env: Vec<(String, String)>,
    /// `server`, or `registry` (the registry alone).
    pub subcommand: &'static str,
}

impl Options {
    pub fn new(backend: &Backend) -> Options {
        Options {
            backend: backend.clone(),
            local_agent: true,
            local_executor: "shell",
            local_concurrency: 4,
            lease_secs: 30,
            heartbeat_secs: 1,
            data_in: None,
            server_args: Vec::new(),
            server_env: Vec::new(),
            subcommand: "server",
        }
    }
}

pub struct Server {
    child: Option<Child>,
    pub opts: Options,
    pub data: tempfile::TempDir,
    pub url: String,
    pub token: String,
    pub registration: String,
    stderr: PathBuf,
    /// Holds the stderr file when the data directory is elsewhere (`Options::data_in`).
    aux: Option<tempfile::TempDir>,
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gantry")
}

impl Server {
    pub fn start(opts: Options) -> Server {
        let data = match &opts.data_in {
            Some(dir) => tempfile::tempdir_in(dir).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let aux = opts.data_in.as_ref().map(|_| tempfile::tempdir().unwrap());
        let mut s = Server {
            child: None,
            opts,
            stderr: aux
                .as_ref()
                .map_or(data.path(), |a| a.path())
                .join("server.stderr"),
            aux,
            data,
            url: String::new(),
            token: String::new(),
            registration: String::new(),
        };
        s.spawn("127.0.0.1:0");
        s
    }

    fn spawn(&mut self, listen: &str) {
        let mut cmd = Command::new(bin());
        cmd.arg(self.opts.subcommand)
            .arg("--data-dir")
            .arg(self.data.path())
            .args(["--listen", listen])
            .args(["--lease-timeout", &self.opts.lease_secs.to_string()])
            .args(["--heartbeat", &self.opts.heartbeat_secs.to_string()])
            .env("GANTRY_LOG", "info")
            .env_remove("GANTRY_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.stderr)
                    .unwrap(),
            );
        if let Backend::Postgres(url) = &self.opts.backend {
            cmd.args(["--database-url", url]);
        }
        cmd.args(&self.opts.server_args);
        cmd.envs(self.opts.server_env.iter().map(|(k, v)| (k, v)));
        if self.opts.local_agent {
            cmd.args(["--local-agent-executor", self.opts.local_executor])
                .args([
                    "--local-agent-concurrency",
                    &self.opts.local_concurrency.to_string(),
                ]);
        } else {
            cmd.arg("--no-local-agent");
        }
        let mut child = cmd.spawn().expect("gantry server starts");
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let first = lines
            .next()
            .and_then(|l| l.ok())
            .unwrap_or_else(|| panic!("server printed nothing; stderr:\n{}", self.stderr_text()));
        self.url = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_string();
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        self.token = std::fs::read_to_string(self.data.path().join("admin-token"))
            .unwrap()
            .trim()
            .to_string();
        self.registration = std::fs::read_to_string(self.data.path().join("registration-token"))
            .unwrap()
            .trim()
            .to_string();
        self.child = Some(child);
        if self.opts.local_agent {
            self.wait_agents(1);
        }
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// `kill -9`: nothing is flushed, nothing is cleaned up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the server process still runs (it has not exited or crashed).
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts again on the same data (and the same port, so agents find it).
    pub fn restart(&mut self) {
        let addr = self.url.trim_start_matches("http://").to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The port may linger for a moment after a kill.
            let probe = std::net::TcpListener::bind(&addr);
            if probe.is_ok() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.spawn(&addr);
    }

    pub fn api(&self) -> Api {
        Api {
            url: self.url.clone(),
            token: Some(self.token.clone()),
        }
    }

    /// Waits until `n` agents are online.
    pub fn wait_agents(&self, n: usize) {
        let api = self.api();
        wait_for(Duration::from_secs(20), "agents online", || {
            let list = api.get("/api/v1/agents").ok()?;
            let online = list["items"]
                .as_array()?
                .iter()
                .filter(|a| a["online"] == true)
                .count();
            (online >= n).then_some(())
        });
    }

    /// Registers a project for a repository directory.
    pub fn project(&self, path: &str, repo: &Path) -> i64 {
        let p = self
            .api()
            .post(
                "/api/v1/projects",
                json!({"path": path, "git_url": repo.display().to_string()}),
            )
            .unwrap_or_else(|e| panic!("project: {e}"));
        p["id"].as_i64().unwrap()
    }

    /// Runs SQL on the server's database with its command-line client (Debian's sqlite3 or
    /// psql); the rows, `|` between columns.
    pub fn sql(&self, query: &str) -> String {
        let out = match &self.opts.backend {
            Backend::Sqlite => Command::new("sqlite3")
                .arg(self.data.path().join("gantry.db"))
                .arg(query)
                .output()
                .expect("sqlite3 runs (Debian's sqlite3)"),
            Backend::Postgres(url) => Command::new("psql")
                .args([url.as_str(), "-Atc", query])
                .output()
                .expect("psql runs"),
        };
        assert!(
            out.status.success(),
            "{query}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Every byte the server stores: the files of its data directory (SQLite's database and
    /// write-ahead log, logs), and a dump of its PostgreSQL database.
    pub fn stored_bytes(&self) -> Vec<(String, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let path = e.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    out.push((path.display().to_string(), bytes));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.data.path(), &mut out);
        if let Backend::Postgres(url) = &self.opts.backend {
            let dump = Command::new("pg_dump")
                .arg(url)
                .output()
                .expect("pg_dump runs");
            assert!(dump.status.success());
            out.push(("pg_dump".into(), dump.stdout));
        }
        assert!(
            out.iter()
                .any(|(p, _)| p.ends_with("gantry.db") || p == "pg_dump")
        );
        out
    }

    /// None of `secrets` is stored in plaintext ([`Server::stored_bytes`]).
    pub fn assert_stored_nowhere(&self, what: &str, secrets: &[&str]) {
        for (path, bytes) in self.stored_bytes() {
            for secret in secrets {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{what}: {secret} is stored in plaintext in {path}"
                );
            }
        }
    }

    /// The project's outbox (commit statuses, notifications), newest first (up to 100).
    pub fn outbox(&self, project: i64) -> Vec<Value> {
        self.api()
            .get(&format!("/api/v1/projects/{project}/outbox?per_page=100"))
            .unwrap()["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// How many pipelines the project has (up to 100).
    pub fn pipeline_count(&self, project: i64) -> usize {
        self.api()
            .get(&format!(
                "/api/v1/projects/{project}/pipelines?per_page=100"
            ))
            .unwrap()["items"]
            .as_array()
            .unwrap()
            .len()
    }

    /// Creates a pipeline on `git_ref` and returns its document.
    pub fn pipeline(&self, project: i64, git_ref: &str) -> Value {
        self.api()
            .post(
                &format!("/api/v1/projects/{project}/pipelines"),
                json!({"ref": git_ref}),
            )
            .unwrap_or_else(|e| panic!("pipeline: {e}"))
    }

    /// Waits until pipeline `id` is finished and returns it.
    pub fn wait_pipeline(&self, id: i64, timeout: Duration) -> Value {
        let api = self.api();
        wait_for(timeout, &format!("pipeline {id} to finish"), || {
            let p = api.get(&format!("/api/v1/pipelines/{id}")).ok()?;
            matches!(
                p["status"].as_str()?,
                "success" | "failed" | "canceled" | "skipped"
            )
            .then_some(p)
        })
    }

    /// Waits until a job of pipeline `id` named `name` (latest attempt) has `status`.
    pub fn wait_job(&self, pipeline: i64, name: &str, status: &str, timeout: Duration) -> Value {
        let api = self.api();
        wait_for(timeout, &format!("job {name} to be {status}"), || {
            let p = api.get(&format!("/api/v1/pipelines/{pipeline}")).ok()?;
            let job = job_named(&p, name)?;
            (job["status"] == status).then_some(job)
        })
    }

    /// The server process's id (for /proc).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// The server's resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }

    /// Creates a pipeline with a request body of `PipelineCreate` (ref, sha, variables).
    pub fn pipeline_with(&self, project: i64, body: Value) -> Value {
        self.api()
            .post(&format!("/api/v1/projects/{project}/pipelines"), body)
            .unwrap_or_else(|e| panic!("pipeline: {e}"))
    }

    /// Creates a pipeline on `git_ref` with variables.
    pub fn pipeline_vars(&self, project: i64, git_ref: &str, vars: &[(&str, &str)]) -> Value {
        let variables: Vec<Value> = vars
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        self.pipeline_with(project, json!({"ref": git_ref, "variables": variables}))
    }

    /// Pipeline `id` with its jobs.
    pub fn get_pipeline(&self, id: i64) -> Value {
        self.api()
            .get(&format!("/api/v1/pipelines/{id}"))
            .unwrap_or_else(|e| panic!("pipeline {id}: {e}"))
    }

    /// Waits until pipeline `id` has `status`.
    pub fn wait_pipeline_status(&self, id: i64, status: &str, timeout: Duration) -> Value {
        let api = self.api();
        wait_for(timeout, &format!("pipeline {id} to be {status}"), || {
            let p = api.get(&format!("/api/v1/pipelines/{id}")).ok()?;
            (p["status"] == status).then_some(p)
        })
    }

    pub fn log(&self, job: i64) -> String {
        self.api()
            .get_text(&format!("/api/v1/jobs/{job}/log"))
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A document's `id`.
pub fn id(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v:#}"))
}

/// The latest attempt of job `name` in a pipeline document (which must have it).
pub fn job(p: &Value, name: &str) -> Value {
    job_named(p, name).unwrap_or_else(|| panic!("no job {name} in {p:#}"))
}

/// Every attempt of job `name`, first attempt first.
pub fn attempts(p: &Value, name: &str) -> Vec<Value> {
    let mut v: Vec<Value> = p["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["name"] == name)
        .cloned()
        .collect();
    v.sort_by_key(|j| j["attempt"].as_i64());
    v
}

/// The latest attempt of job `name` in a pipeline document.
pub fn job_named(p: &Value, name: &str) -> Option<Value> {
    p["jobs"]
        .as_array()?
        .iter()
        .filter(|j| j["name"] == name)
        .max_by_key(|j| j["attempt"].as_i64())
        .cloned()
}

/// A separate `gantry agent` process.
pub struct Agent {
    child: Option<Child>,
    pub state: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Agent {
    pub fn start(server: &Server, extra: &[&str]) -> Agent {
        Agent::start_env(server, extra, &[])
    }

    /// Like [`Agent::start`], with extra environment variables (e.g. `DOCKER_HOST`).
    pub fn start_env(server: &Server, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let state = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--server".into(),
            server.url.clone(),
            "--token".into(),
            server.registration.clone(),
            "--state-dir".into(),
            state.path().display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut a = Agent {
            child: None,
            state,
            args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let child = Command::new(bin())
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.state.path().join("agent.stderr")).unwrap())
            .spawn()
            .expect("gantry agent starts");
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.state.path().join("agent.stderr")).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// VmRSS of a process in KiB, from /proc/<pid>/status.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Polls `f` every 20 ms until it gives a value.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A blocking JSON client (ureq).
#[derive(Debug, Clone)]
pub struct Api {
    pub url: String,
    pub token: Option<String>,
}

/// An HTTP status and the body.
#[derive(Debug)]
pub struct HttpErr {
    pub status: u16,
    pub body: Value,
}

impl std::fmt::Display for HttpErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

impl Api {
    fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    fn finish(mut resp: ureq::http::Response<ureq::Body>) -> Result<Value, HttpErr> {
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            Err(HttpErr { status, body })
        } else {
            Ok(body)
        }
    }

    fn auth<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => r.header("Authorization", &format!("Bearer {t}")),
            None => r,
        }
    }

    pub fn get(&self, path: &str) -> Result<Value, HttpErr> {
        let r = self.auth(self.agent().get(&format!("{}{path}", self.url)));
        Self::finish(r.call().expect("the server answers"))
    }

    pub fn get_text(&self, path: &str) -> Result<String, HttpErr> {
        let r = self.auth(self.agent().get(&format!("{}{path}", self.url)));
        let mut resp = r.call().expect("the server answers");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if status >= 400 {
            Err(HttpErr {
                status,
                body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            })
        } else {
            Ok(text)
        }
    }

    /// GET with extra headers; returns the status, the headers asked for and the body.
    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut r = self.auth(self.agent().get(&format!("{}{path}", self.url)));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let mut resp = r.call().expect("the server answers");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    }

    /// GET with extra headers, not reading the body: for streams and large bodies.
    pub fn open(&self, path: &str, headers: &[(&str, &str)]) -> ureq::http::Response<ureq::Body> {
        let mut r = self.auth(self.agent().get(&format!("{}{path}", self.url)));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.call().expect("the server answers")
    }

    /// GET with extra headers: the status, the response headers (lower-case names) and the
    /// body as bytes (no size limit).
    pub fn get_raw(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        use std::io::Read;
        let resp = self.open(path, headers);
        let status = resp.status().as_u16();
        let hs = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let mut body = Vec::new();
        resp.into_body()
            .into_reader()
            .read_to_end(&mut body)
            .unwrap();
        (status, hs, body)
    }

    /// Server-sent events from `path`, resuming after `last_event_id` when given.
    pub fn sse(&self, path: &str, last_event_id: Option<&str>) -> SseReader {
        let mut headers = vec![("Accept", "text/event-stream")];
        if let Some(id) = last_event_id {
            headers.push(("Last-Event-ID", id));
        }
        let resp = self.open(path, &headers);
        assert_eq!(resp.status().as_u16(), 200, "SSE {path}");
        SseReader {
            lines: BufReader::new(Box::new(resp.into_body().into_reader())),
        }
    }

    pub fn post(&self, path: &str, body: Value) -> Result<Value, HttpErr> {
        let r = self.auth(self.agent().post(&format!("{}{path}", self.url)));
        let r = r.header("content-type", "application/json");
        Self::finish(r.send(body.to_string()).expect("the server answers"))
    }

    pub fn put(&self, path: &str, body: Value) -> Result<Value, HttpErr> {
        let r = self.auth(self.agent().put(&format!("{}{path}", self.url)));
        let r = r.header("content-type", "application/json");
        Self::finish(r.send(body.to_string()).expect("the server answers"))
    }

    pub fn delete(&self, path: &str) -> Result<Value, HttpErr> {
        let r = self.auth(self.agent().delete(&format!("{}{path}", self.url)));
        Self::finish(r.call().expect("the server answers"))
    }
}

/// One server-sent event.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// Reads server-sent events one at a time from a response body.
pub struct SseReader {
    lines: BufReader<Box<dyn std::io::Read + Send>>,
}

impl SseReader {
    /// The next event (comments and keep-alives skipped); `None` at the end of the stream.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        let mut ev = SseEvent::default();
        let mut any = false;
        loop {
            let mut line = String::new();
            let n = self.lines.read_line(&mut line).ok()?;
            if n == 0 {
                return any.then_some(ev);
            }
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if any {
                    return Some(ev);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            any = true;
            match field {
                "event" => ev.event = value.to_string(),
                "id" => ev.id = Some(value.to_string()),
                "data" => {
                    if !ev.data.is_empty() {
                        ev.data.push('\n');
                    }
                    ev.data.push_str(value);
                }
                _ => {}
            }
        }
    }
}
