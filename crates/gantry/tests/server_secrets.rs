//! Secrets at rest in a running server: a project's password and webhook secret are sealed
//! in the database (SQLite and PostgreSQL) and nowhere else in plaintext, the server still
//! uses them, and `gantry admin rotate-key` moves them to a new key, while the server runs
//! and across restarts, sealing the plaintext credentials of older databases on the way.

mod common;
#[path = "common/git_http.rs"]
mod git_http;

use common::Project;
use common::server::{Backend, Options, Server, backends, id, job};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn key_ids(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    assert_eq!(
        std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// `gantry admin rotate-key` on the server's data; its output.
fn rotate(s: &Server) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry"));
    cmd.args(["admin", "rotate-key", "--data-dir"])
        .arg(s.data.path())
        .env_remove("GANTRY_DATABASE_URL")
        .env_remove("GANTRY_SECRETS_KEY")
        .env_remove("GANTRY_SECRETS_KEY_FILE");
    if let Backend::Postgres(url) = &s.opts.backend {
        cmd.args(["--database-url", url]);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "rotate-key: {text}");
    text
}

/// A pipeline through the API (which fetches the ref with the project's credentials) runs.
fn runs(s: &Server, project: i64, what: &str) {
    let p = s.pipeline(project, "main");
    let p = s.wait_pipeline(id(&p), T);
    assert_eq!(p["status"], "success", "{what}: {p:#}");
    assert!(s.log(id(&job(&p, "hello"))).contains("hello from http"));
}

/// A GitLab push webhook for the repository's last commit.
fn gitlab_push(s: &Server, project: i64, token: &str, repo: &Path, key: &str) -> (u16, Value) {
    let rev = |r: &str| {
        let o = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["rev-parse", r])
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let path =
        common::repo_root().join("crates/gantry-engine/tests/fixtures/webhooks/gitlab/push.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["ref"] = json!("refs/heads/main");
    v["before"] = json!(rev("HEAD~1"));
    v["after"] = json!(rev("HEAD"));
    v["checkout_sha"] = v["after"].clone();
    v["commits"] = json!([]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(&format!("{}/api/v1/hooks/gitlab/{project}", s.url))
        .header("X-Gitlab-Event", "Push Hook")
        .header("X-Gitlab-Token", token)
        .header("Idempotency-Key", key)
        .send(v.to_string())
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[test]
fn project_secrets_are_sealed_at_rest_and_rotate_key_reseals_them() {
    let repo = Project::new("hello:\n  script: [echo hello from http]\n");
    let password = "pw-3c9e1f-never-stored";
    let (_git, url) = git_http::GitHttp::serve_repo(repo.path(), "ci", password);
    for db in backends("secrets") {
        let backend = db.name();
        let mut s = Server::start(Options::new(&db));
        let hook = "hook-5b7d02-never-stored";
        let p = s
            .api()
            .post(
                "/api/v1/projects",
                json!({"path": "team/secret", "git_url": url, "username": "ci",
                       "password": password, "webhook_secret": hook}),
            )
            .unwrap();
        let project = id(&p);
        let key_file = s.data.path().join("secrets.key");
        assert_eq!(key_ids(&key_file), ["k1"], "{backend}: made at first start");
        let stored = |s: &Server| {
            s.sql(&format!(
                "SELECT credentials, webhook_secret FROM projects WHERE id = {project}"
            ))
        };
        let row = stored(&s);
        assert!(
            row.starts_with("gsec1:k1:") && row.contains("|gsec1:k1:"),
            "{backend}: {row}"
        );
        s.assert_stored_nowhere(s.opts.backend.name(), &[password, hook]);
        runs(&s, project, backend);

        // Rotated while the server runs: both values move to k2.
        let out = rotate(&s);
        assert!(out.contains("new key k2 (keys: k1, k2)"), "{out}");
        assert!(out.contains("resealed 2 values with key k2"), "{out}");
        assert_eq!(key_ids(&key_file), ["k1", "k2"]);
        let row = stored(&s);
        assert!(
            row.starts_with("gsec1:k2:") && row.contains("|gsec1:k2:"),
            "{backend}: {row}"
        );
        // The running server opens what k2 sealed: a webhook signed with the secret verifies,
        // and its pipeline fetches with the credentials.
        repo.commit("after the rotation");
        let (status, reply) = gitlab_push(&s, project, hook, repo.path(), "rotated-1");
        assert_eq!(status, 201, "{backend}: {reply}");
        let done = s.wait_pipeline(reply["pipeline_id"].as_i64().unwrap(), T);
        assert_eq!(done["status"], "success", "{backend}: {done:#}");
        let (status, _) = gitlab_push(&s, project, "not it", repo.path(), "rotated-2");
        assert_eq!(status, 403);

        // After a restart the credentials come from the value sealed with k2.
        s.kill9();
        s.restart();
        runs(&s, project, backend);

        // Plaintext credentials, as a database from before encryption at rest has them, are
        // still read, and the next rotation seals them.
        s.kill9();
        s.sql(&format!(
                "UPDATE projects SET credentials = '{{\"username\":\"ci\",\"password\":\"{password}\"}}' WHERE id = {project}"
            ),
        );
        s.restart();
        runs(&s, project, backend);
        let out = rotate(&s);
        assert!(out.contains("resealed 2 values with key k3"), "{out}");
        assert!(out.contains("sealed 1 plaintext credentials"), "{out}");
        let row = stored(&s);
        assert!(
            row.starts_with("gsec1:k3:") && row.contains("|gsec1:k3:"),
            "{backend}: {row}"
        );
        s.kill9();
        s.restart();
        runs(&s, project, backend);
        s.assert_stored_nowhere(s.opts.backend.name(), &[password, hook]);
        assert!(!s.stderr_text().contains(password) && !s.stderr_text().contains(hook));
    }
}
