//! Projects whose repositories need credentials: `http://` with a user name and password,
//! served by git's own `git http-backend`.

mod common;
#[path = "common/git_http.rs"]
mod git_http;

use common::Project;
use common::server::{Options, Server, backends};
use serde_json::json;
use std::time::Duration;

#[test]
fn an_http_project_with_credentials_fetches_and_runs_and_a_wrong_password_says_so() {
    let repo = Project::new("hello:\n  script: [echo hello from http]\n");
    let (git, url) = git_http::GitHttp::serve_repo(repo.path(), "ci", "s3cret-pw");
    for db in backends("git_http") {
        let s = Server::start(Options::new(&db));
        let api = s.api();
        let err = api
            .post(
                "/api/v1/projects",
                json!({"path": "team/wrong", "git_url": url, "username": "ci", "password": "nope-pw"}),
            )
            .unwrap_err();
        let text = err.body.to_string();
        assert_eq!(err.body["code"], "git_error", "{}: {text}", db.name());
        assert!(text.contains(&git.url), "the message names the URL: {text}");
        assert!(
            !text.contains("nope-pw"),
            "the password never shows: {text}"
        );

        // Nothing was kept of the failed registration: the same path registers now.
        let p = api
            .post(
                "/api/v1/projects",
                json!({"path": "team/wrong", "git_url": url, "username": "ci", "password": "s3cret-pw"}),
            )
            .unwrap();
        assert!(!p.to_string().contains("s3cret-pw"), "{p}");
        let pipeline = s.pipeline(p["id"].as_i64().unwrap(), "main");
        let done = s.wait_pipeline(pipeline["id"].as_i64().unwrap(), Duration::from_secs(60));
        assert_eq!(done["status"], "success", "{}: {done:#}", db.name());
        let job = done["jobs"][0]["id"].as_i64().unwrap();
        assert!(s.log(job).contains("hello from http"));
        // The password is not in the mirror's config (nor anywhere else the server stores:
        // see server_secrets.rs).
        let config = std::fs::read_to_string(
            s.data
                .path()
                .join("git")
                .join(format!("{}.git", p["id"]))
                .join("config"),
        )
        .unwrap();
        assert!(!config.contains("s3cret-pw"), "{config}");
    }
}

#[path = "common/sshd.rs"]
mod sshd;

#[test]
fn an_ssh_project_with_a_key_fetches_and_runs_and_a_wrong_key_says_so() {
    let Some(ssh) = sshd::Sshd::start() else {
        assert!(
            std::env::var("GANTRY_REQUIRE_SSHD").as_deref() != Ok("1"),
            "GANTRY_REQUIRE_SSHD=1 but /usr/sbin/sshd is missing (Debian's openssh-server)"
        );
        eprintln!("skipping: no /usr/sbin/sshd (Debian's openssh-server)");
        return;
    };
    let repo = Project::new("hello:\n  script: [echo hello over ssh]\n");
    let url = ssh.url(repo.path());
    for db in backends("git_ssh") {
        let s = Server::start(Options::new(&db));
        let api = s.api();
        let err = api
            .post(
                "/api/v1/projects",
                json!({"path": "team/ssh", "git_url": url, "ssh_key": ssh.other_key}),
            )
            .unwrap_err();
        let text = err.body.to_string();
        assert_eq!(err.body["code"], "git_error", "{}: {text}", db.name());
        assert!(!text.contains("PRIVATE KEY"), "the key never shows: {text}");

        let p = api
            .post(
                "/api/v1/projects",
                json!({"path": "team/ssh", "git_url": url, "ssh_key": ssh.key}),
            )
            .unwrap();
        let pipeline = s.pipeline(p["id"].as_i64().unwrap(), "main");
        let done = s.wait_pipeline(pipeline["id"].as_i64().unwrap(), Duration::from_secs(60));
        assert_eq!(done["status"], "success", "{}: {done:#}", db.name());
        let job = done["jobs"][0]["id"].as_i64().unwrap();
        assert!(s.log(job).contains("hello over ssh"));
    }
}
