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
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gantry")
}

impl Server {
    pub fn start(opts: Options) -> Server {
        let data = tempfile::tempdir().unwrap();
        let mut s = Server {
            child: None,
            opts,
            stderr: data.path().join("server.stderr"),
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
        cmd.arg("server")
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
}

impl Agent {
    pub fn start(server: &Server, extra: &[&str]) -> Agent {
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
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let child = Command::new(bin())
            .args(&self.args)
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

    pub fn post(&self, path: &str, body: Value) -> Result<Value, HttpErr> {
        let r = self.auth(self.agent().post(&format!("{}{path}", self.url)));
        let r = r.header("content-type", "application/json");
        Self::finish(r.send(body.to_string()).expect("the server answers"))
    }
}
