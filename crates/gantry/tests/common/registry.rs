//! Gantry as a registry under test: a user (password, or a personal access token with registry
//! scopes), a project, and the `gantry_testkit::registry::Target` the client checks take.
//! Nothing here needs the registry itself; [`has_registry`] says whether `/v2/` exists yet.

#![allow(dead_code)]

use super::server::Server;
use gantry_testkit::registry::{Creds, Target, http_status};
use serde_json::{Value, json};

/// The server's `HOST:PORT`, as image references start.
pub fn addr(s: &Server) -> String {
    s.url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// Whether `GET /v2/` is anything but 404 (Gantry without a registry answers 404).
pub fn has_registry(s: &Server) -> bool {
    http_status(&addr(s), "/v2/").is_ok_and(|st| st != 404)
}

/// Makes a user with `password` (an administrator when `admin`) through the API, with the
/// server's administrator token; their credentials.
pub fn user(s: &Server, name: &str, password: &str, admin: bool) -> Creds {
    s.api()
        .post(
            "/api/v1/users",
            json!({"username": name, "password": password, "admin": admin}),
        )
        .unwrap_or_else(|e| panic!("making user {name}: {e}"));
    Creds::new(name, password)
}

/// Signs `creds` in (a session) and makes them a personal access token with `scopes` (e.g.
/// `["read_registry", "write_registry"]`); the user name with the token as password, as
/// `docker login -u NAME --password-stdin` takes it.
pub fn personal_token(s: &Server, creds: &Creds, scopes: &[&str]) -> Creds {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(&format!("{}/api/v1/session", s.url))
        .header("content-type", "application/json")
        .send(json!({"username": creds.user, "password": creds.password}).to_string())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "signing in {}", creds.user);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    let csrf = body["csrf_token"]
        .as_str()
        .expect("a CSRF token")
        .to_string();
    let mut resp = agent
        .post(&format!("{}/api/v1/user/tokens", s.url))
        .header("content-type", "application/json")
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", &csrf)
        .send(json!({"name": "registry", "scopes": scopes}).to_string())
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(status, 201, "making a token: {body}");
    Creds::new(&creds.user, body["token"].as_str().expect("the token"))
}

/// A project at `path` (its git repository an empty commit in a temporary directory, kept
/// alive by the returned guard) and the target pushing into it as `creds`.
pub fn project_target(s: &Server, path: &str, creds: Creds) -> (Target, tempfile::TempDir) {
    let repo = tempfile::tempdir().unwrap();
    super::git(repo.path(), &["init", "-q", "-b", "main"]);
    super::git(
        repo.path(),
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@localhost",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "empty",
        ],
    );
    s.project(path, repo.path());
    let target = Target {
        addr: addr(s),
        creds: Some(creds),
        prefix: format!("{path}/"),
    };
    (target, repo)
}
