//! `gantry lint`, `config`, `plan` and `schema` as a user runs them.

mod common;

use common::Project;
use std::io::{Read, Write};
use std::net::TcpListener;

#[test]
fn lint_exit_codes_and_json() {
    let ok = Project::new("build:\n  script: make\n");
    let r = ok.gantry(&["lint"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(".gitlab-ci.yml: valid, 1 job(s)"),
        "{}",
        r.stdout
    );

    let bad = Project::new(
        "build:\n  script: make\n  stage: biuld\ntest:\n  needs: [buidl]\n  scirpt: x\n",
    );
    let r = bad.gantry(&["lint"]);
    assert_eq!(r.code, 1);
    for needle in [
        "error[E0205]",
        "error[E0203]",
        "error[E0201]: unknown key 'scirpt'",
        "--> .gitlab-ci.yml:6:3",
        "did you mean 'script'?",
    ] {
        assert!(r.stderr.contains(needle), "missing {needle}:\n{}", r.stderr);
    }
    let r = bad.gantry(&["lint", "--format", "json"]);
    assert_eq!(r.code, 1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["valid"], false);
    let first = &v["diagnostics"][0];
    assert!(
        first["code"].as_str().unwrap().starts_with('E')
            && first["line"].as_u64().is_some()
            && first["file"] == ".gitlab-ci.yml",
        "{v}"
    );

    let warn = Project::new("job:\n  script: a\n  script: b\n");
    let r = warn.gantry(&["lint"]);
    assert_eq!(r.code, 0, "warnings alone pass");
    assert!(r.stderr.contains("warning[W0106]"), "{}", r.stderr);
}

#[test]
fn gantry_yml_wins_and_file_overrides() {
    let p = Project::with_files(&[
        (".gitlab-ci.yml", "from_gitlab:\n  script: x\n"),
        (".gantry.yml", "from_gantry:\n  script: x\n"),
        ("other.yml", "from_other:\n  script: x\n"),
    ]);
    let r = p.gantry(&["plan"]);
    assert!(
        r.stdout.contains("from_gantry") && !r.stdout.contains("from_gitlab"),
        "{}",
        r.stdout
    );
    let r = p.gantry(&["plan", "--file", "other.yml"]);
    assert!(r.stdout.contains("from_other"), "{}", r.all());
    let r = p.gantry(&["lint", "missing.yml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("missing.yml does not exist"),
        "{}",
        r.stderr
    );
}

#[test]
fn config_explain_says_where_keys_come_from() {
    let p = Project::with_files(&[
        (
            ".gitlab-ci.yml",
            "include: ci/base.yml\njob:\n  extends: .base\n  script: [echo job]\n",
        ),
        (
            "ci/base.yml",
            ".base:\n  image: alpine:3.20\n  tags: [linux]\n",
        ),
    ]);
    let r = p.gantry(&["config"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("job:\n  image: alpine:3.20"),
        "{}",
        r.stdout
    );
    let r = p.gantry(&["config", "--explain"]);
    assert!(
        r.stdout.contains("image: alpine:3.20  # ci/base.yml:2"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("# .gitlab-ci.yml:4"), "{}", r.stdout);
}

#[test]
fn plan_shows_why_for_each_event() {
    let p = Project::new(
        "deploy:\n  script: d\n  rules:\n    - if: $CI_COMMIT_TAG\nmr:\n  script: m\n  rules:\n    - if: $CI_PIPELINE_SOURCE == \"merge_request_event\"\ndocs:\n  script: x\n  rules:\n    - changes: [docs/**/*]\n",
    );
    let r = p.gantry(&["plan", "--tag", "v1.0"]);
    assert!(
        r.stdout
            .contains("deploy\n      why: rule 1 matched (if: $CI_COMMIT_TAG)"),
        "{}",
        r.stdout
    );
    let r = p.gantry(&[
        "plan",
        "--source",
        "merge_request_event",
        "--ref",
        "feature",
    ]);
    assert!(r.stdout.contains("  mr\n"), "{}", r.stdout);
    assert!(r.stdout.contains("deploy: no rule matched"), "{}", r.stdout);
    let r = p.gantry(&["plan", "--changed", "src/main.rs"]);
    assert!(r.stdout.contains("docs: no rule matched"), "{}", r.stdout);
    let r = p.gantry(&[
        "plan",
        "--changed",
        "docs/guide/index.md",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["name"] == "docs"),
        "{v}"
    );
    let r = p.gantry(&["plan", "--source", "nonsense"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("unknown --source 'nonsense'"),
        "{}",
        r.stderr
    );
}

#[test]
fn schema_is_json_schema() {
    let p = Project::new("job:\n  script: x\n");
    let r = p.gantry(&["schema"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["$schema"], "http://json-schema.org/draft-07/schema#");
    assert!(v["additionalProperties"]["properties"]["rules"].is_object());
}

/// A one-shot HTTP server on loopback: `body` for /ok.yml, 5 MiB for /big.yml, nothing (hang)
/// for /slow.yml, 404 otherwise.
fn serve() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming().take(8) {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let n = c.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                let body: Vec<u8> = match path.as_str() {
                    "/ok.yml" => b"remote_job:\n  script: [echo remote]\n".to_vec(),
                    "/big.yml" => vec![b'#'; 5 << 20],
                    "/slow.yml" => {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        return;
                    }
                    _ => {
                        let _ = c.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                        return;
                    }
                };
                let _ = c.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                let _ = c.write_all(&body);
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn remote_includes_with_timeout_and_size_limit() {
    let base = serve();
    let p = Project::new(&format!(
        "include:\n  - remote: {base}/ok.yml\n  - remote: {base}/big.yml\n  - remote: {base}/slow.yml\n  - remote: {base}/missing.yml\njob:\n  script: x\n"
    ));
    let mut c = p.command(&["lint"]);
    c.env("GANTRY_INCLUDE_TIMEOUT_SECS", "1");
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("big.yml' could not be read: the file is larger than 4194304 bytes"),
        "{err}"
    );
    assert!(
        err.contains("slow.yml' could not be read: no answer within 1s"),
        "{err}"
    );
    assert!(err.contains("missing.yml' does not exist"), "{err}");
    assert!(!err.contains("ok.yml"), "the good include is read: {err}");
}

#[test]
fn compare_to_diffs_against_the_named_ref() {
    let p = Project::new(
        "docker:\n  script: x\n  rules:\n    - changes:\n        paths: [Dockerfile]\n        compare_to: refs/heads/main\nnever:\n  script: x\n  rules:\n    - changes:\n        paths: [Dockerfile]\n        compare_to: refs/heads/missing\n",
    );
    common::git(p.path(), &["checkout", "-q", "-b", "feature"]);
    p.write("README.md", "docs\n");
    p.commit("docs only");
    let r = p.gantry(&["plan"]);
    assert!(r.stdout.contains("docker: no rule matched"), "{}", r.all());
    assert!(
        r.stderr.contains("compare_to names 'refs/heads/missing'"),
        "{}",
        r.stderr
    );
    p.write("Dockerfile", "FROM scratch\n");
    p.commit("add a Dockerfile");
    let r = p.gantry(&["plan"]);
    assert!(r.stdout.contains("  docker\n"), "{}", r.all());
}
