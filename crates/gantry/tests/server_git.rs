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
    let root = repo.path().parent().unwrap().to_path_buf();
    let name = repo
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let git = git_http::GitHttp::start(root, "ci", "s3cret-pw");
    let url = format!("{}/{name}", git.url);
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
        // The password is in no file of the server's data directory (SQLite stores it in
        // gantry.db until secrets are encrypted at rest; the mirror's config must not).
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
