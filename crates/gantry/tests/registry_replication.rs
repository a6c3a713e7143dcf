//! Registry replication and promotion across registries, against a real peer: Debian's
//! `docker-registry` (CNCF Distribution), with and without HTTP Basic authentication. Rules
//! on push (only matching tags; a second image sharing layers sends only the missing
//! blobs; the digest is the same at the peer), on a schedule, run now; wrong credentials and
//! an unreachable peer fail with errors that say what to do; a queued run survives
//! `kill -9`; passwords are never shown nor stored in plaintext, and `rotate-key` reseals
//! them; only maintainers manage rules. `gantry image promote` both ways between Gantry and the peer. On SQLite and
//! PostgreSQL.

mod common;

use base64::Engine as _;
use common::oci::{Oci, Resp, sha256};
use common::server::{Api, Backend, Options, Server, backends, wait_for};
use gantry_testkit::registry::{Creds, PeerRegistry, Skopeo, tools_for_test};
use serde_json::{Value, json};
use std::time::Duration;

const PASSWORD: &str = "correct horse battery";
const MANIFEST_TYPES: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";
const T: Duration = Duration::from_secs(60);

/// A server without an agent (retries after `retry_ms`), an images-only project `dev`, users
/// mia (maintainer) and dave (developer) with API tokens.
fn setup(db: &Backend, retry_ms: u64) -> (Server, Api, Api) {
    let mut opts = Options::new(db);
    opts.local_agent = false;
    opts.server_args = vec!["--replication-retry-ms".into(), retry_ms.to_string()];
    let s = Server::start(opts);
    s.api()
        .post("/api/v1/projects", json!({"path": "dev"}))
        .unwrap();
    let mut apis = Vec::new();
    for (name, role) in [("mia", "maintainer"), ("dave", "developer")] {
        let creds = common::registry::user(&s, name, PASSWORD, false);
        s.api()
            .post(
                "/api/v1/projects/dev/members",
                json!({"username": name, "role": role}),
            )
            .unwrap();
        let token = common::registry::personal_token(&s, &creds, &["api"]).password;
        apis.push(Api {
            url: s.url.clone(),
            token: Some(token),
        });
    }
    let dave = apis.pop().unwrap();
    let mia = apis.pop().unwrap();
    (s, mia, dave)
}

fn peer_tools(test: &str) -> bool {
    tools_for_test(test, &["docker-registry"]).unwrap()
}

/// A token of the administrator for pushing into `names` of this server's registry.
fn push_token(s: &Server, names: &[&str]) -> String {
    let scopes: Vec<String> = names
        .iter()
        .map(|n| format!("repository:{n}:pull,push"))
        .collect();
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    Oci::new(&s.url).token(Some(("admin", &s.token)), &scopes)
}

/// The peer's answer to `GET /v2/NAME/manifests/REF` (Basic credentials when given).
fn peer_manifest(peer: &PeerRegistry, creds: Option<&Creds>, name: &str, reference: &str) -> Resp {
    let basic = creds.map(|c| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.user, c.password))
        )
    });
    let mut headers = vec![("Accept", MANIFEST_TYPES)];
    if let Some(b) = &basic {
        headers.push(("Authorization", b.as_str()));
    }
    Oci::new(&format!("http://{}", peer.addr())).call(
        "GET",
        &format!("/v2/{name}/manifests/{reference}"),
        None,
        &headers,
        b"",
    )
}

/// Waits until the run `pick` chooses among a rule's runs has finished; that run.
fn wait_run(s: &Server, api: &Api, rule: i64, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let all = runs(api, rule);
        if let Some(r) = all
            .iter()
            .find(|r| pick(r) && matches!(r["status"].as_str(), Some("succeeded" | "failed")))
        {
            return r.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; the runs: {all:#?}\nthe server's log:\n{}",
            s.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pushes an image into the peer as Docker does (Distribution 2 has no monolithic
/// `POST ?digest=`): each blob by `POST` then `PUT ?digest=`; the manifest's digest.
fn peer_push_image(peer: &PeerRegistry, name: &str, tag: &str, layers: &[&[u8]]) -> String {
    let oci = Oci::new(&format!("http://{}", peer.addr()));
    let config = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
        .to_string();
    let mut descs = Vec::new();
    for (i, blob) in std::iter::once(config.as_bytes())
        .chain(layers.iter().copied())
        .enumerate()
    {
        let r = oci.call(
            "POST",
            &format!("/v2/{name}/blobs/uploads/"),
            None,
            &[],
            b"",
        );
        assert_eq!(r.status, 202, "{}", r.text());
        let location = r.header("location").to_string();
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = oci.call(
            "PUT",
            &format!("{location}{sep}digest={}", sha256(blob)),
            None,
            &[("Content-Type", "application/octet-stream")],
            blob,
        );
        assert_eq!(r.status, 201, "{}", r.text());
        if i > 0 {
            descs.push(
                json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha256(blob), "size": blob.len()}),
            );
        }
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(config.as_bytes()), "size": config.len()},
        "layers": descs,
    })
    .to_string();
    let r = oci.call(
        "PUT",
        &format!("/v2/{name}/manifests/{tag}"),
        None,
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        manifest.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    sha256(manifest.as_bytes())
}

fn runs(api: &Api, rule: i64) -> Vec<Value> {
    api.get(&format!("/api/v1/projects/dev/replications/{rule}/runs"))
        .unwrap()["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// `gantry admin rotate-key` on the server's data, while it runs.
fn rotate_key(s: &Server) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"));
    cmd.args(["admin", "rotate-key", "--data-dir"])
        .arg(s.data.path())
        .env_remove("GANTRY_DATABASE_URL")
        .env_remove("GANTRY_SECRETS_KEY")
        .env_remove("GANTRY_SECRETS_KEY_FILE");
    if let Backend::Postgres(url) = &s.opts.backend {
        cmd.args(["--database-url", url]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "rotate-key: {out:?}");
}

fn id(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v}"))
}

#[test]
fn on_push_replicates_matching_tags_with_their_digest_and_only_missing_blobs() {
    if !peer_tools("replication_on_push") {
        return;
    }
    for db in backends("repl_push") {
        let what = db.name();
        let (s, mia, _) = setup(&db, 200);
        let peer = PeerRegistry::start().unwrap();
        let rule = mia
            .post(
                "/api/v1/projects/dev/replications",
                json!({"name": "peer", "url": format!("http://{}", peer.addr()),
                    "namespace": "mirror", "tags": "v*", "on_push": true}),
            )
            .unwrap();
        assert_eq!(rule["has_password"], false, "{what}: {rule}");
        let rule_id = id(&rule);
        let oci = Oci::new(&s.url);
        let token = push_token(&s, &["dev/app"]);

        // A matching tag: replicated at once, under the namespace, with its digest.
        let layer_a = vec![7u8; 300_000];
        let layer_b = b"second layer".repeat(1000);
        let v1 = oci.push_image(&token, "dev/app", "v1", &[&layer_a, &layer_b]);
        let run = wait_run(&s, &mia, rule_id, "the run of v1", |r| r["tag"] == "v1");
        assert_eq!(run["status"], "succeeded", "{what}: {run}");
        assert_eq!(run["triggered_by"], "push");
        assert_eq!(run["actor"], "admin-token");
        assert_eq!(run["images_copied"], 1, "{what}: {run}");
        assert_eq!(
            run["blobs_copied"], 3,
            "{what}: config and two layers: {run}"
        );
        assert_eq!(run["blobs_skipped"], 0, "{what}: {run}");
        let config_len =
            run["bytes_copied"].as_u64().unwrap() - (layer_a.len() + layer_b.len()) as u64;
        assert!(config_len > 0 && config_len < 200, "{what}: {run}");
        let at_peer = peer_manifest(&peer, None, "mirror/app", "v1");
        assert_eq!(at_peer.status, 200, "{what}: {}", at_peer.text());
        assert_eq!(at_peer.header("docker-content-digest"), v1, "{what}");
        assert_eq!(sha256(&at_peer.body), v1, "{what}: the very bytes");
        if tools_for_test("replication_on_push", &["skopeo"]).unwrap() {
            let raw = Skopeo::new()
                .unwrap()
                .inspect_raw(&format!("docker://{}/mirror/app:v1", peer.addr()), None)
                .unwrap();
            assert_eq!(sha256(&raw), v1, "{what}: skopeo sees the same digest");
        }

        // A tag the rule does not take: no run, nothing at the peer.
        oci.push_image(&token, "dev/app", "dev-1", &[&layer_a]);
        // A second image sharing the config and a layer: only the new layer goes.
        let layer_c = b"third layer, the only new one".repeat(500);
        let v2 = oci.push_image(&token, "dev/app", "v2", &[&layer_a, &layer_c]);
        let run = wait_run(&s, &mia, rule_id, "the run of v2", |r| r["tag"] == "v2");
        assert_eq!(run["status"], "succeeded", "{what}: {run}");
        assert_eq!(run["images_copied"], 1, "{what}: {run}");
        assert_eq!(run["blobs_copied"], 1, "{what}: only the new layer: {run}");
        assert_eq!(run["blobs_skipped"], 2, "{what}: config and layer A: {run}");
        assert_eq!(run["bytes_copied"], layer_c.len(), "{what}: {run}");
        assert_eq!(
            peer_manifest(&peer, None, "mirror/app", "v2").header("docker-content-digest"),
            v2
        );
        assert_eq!(
            peer_manifest(&peer, None, "mirror/app", "dev-1").status,
            404,
            "{what}: dev-1 does not match v*"
        );
        let all = runs(&mia, rule_id);
        assert_eq!(all.len(), 2, "{what}: one run per matching push: {all:?}");
        assert!(all.iter().all(|r| r["tag"] != "dev-1"), "{what}");

        // Run now: every matching tag; the peer has them with the same digests already.
        let run = mia
            .post(
                &format!("/api/v1/projects/dev/replications/{rule_id}/run"),
                json!({}),
            )
            .unwrap();
        assert_eq!(run["triggered_by"], "manual");
        let run_id = id(&run);
        let run = wait_run(&s, &mia, rule_id, "the manual run", |r| id(r) == run_id);
        assert_eq!(run["status"], "succeeded", "{what}: {run}");
        assert_eq!(
            (
                run["images_copied"].as_i64(),
                run["images_skipped"].as_i64(),
                run["blobs_copied"].as_i64()
            ),
            (Some(0), Some(2), Some(0)),
            "{what}: v1 and v2 are there already: {run}"
        );
        let r = mia
            .get(&format!("/api/v1/projects/dev/replications/{rule_id}"))
            .unwrap();
        assert_eq!(id(&r["last_run"]), run_id, "{what}: {r}");

        // Promoting into the project is a push of the tag too.
        s.api()
            .post("/api/v1/projects", json!({"path": "staging"}))
            .unwrap();
        let t = push_token(&s, &["staging/app"]);
        let v3 = oci.push_image(&t, "staging/app", "v3", &[&layer_b, &layer_c]);
        s.api()
            .post(
                "/api/v1/registry/promote",
                json!({"source": "staging/app:v3", "destination": "dev/app:v3"}),
            )
            .unwrap();
        let run = wait_run(&s, &mia, rule_id, "the run of the promoted v3", |r| {
            r["tag"] == "v3"
        });
        assert_eq!(run["status"], "succeeded", "{what}: {run}");
        assert_eq!(run["blobs_copied"], 0, "{what}: every blob is there: {run}");
        assert_eq!(
            peer_manifest(&peer, None, "mirror/app", "v3").header("docker-content-digest"),
            v3
        );

        // Docker's media types, and an index (one image new, one the peer has) go as they are.
        let layer_d = b"layer of the docker-typed image".repeat(100);
        assert_eq!(oci.push_blob(&token, "dev/app", &layer_d).status, 201);
        let config = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).to_string();
        let docker = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": sha256(config.as_bytes()), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "digest": sha256(&layer_d), "size": layer_d.len()}],
        })
        .to_string();
        let v5 = sha256(docker.as_bytes());
        // By digest first (no tag: no run), then listed in an index with v1.
        let r = oci.call(
            "PUT",
            &format!("/v2/dev/app/manifests/{v5}"),
            Some(&token),
            &[(
                "Content-Type",
                "application/vnd.docker.distribution.manifest.v2+json",
            )],
            docker.as_bytes(),
        );
        assert_eq!(r.status, 201, "{what}: {}", r.text());
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "digest": v5, "size": docker.len(), "platform": {"architecture": "arm64", "os": "linux"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": v1, "size": at_peer.body.len(), "platform": {"architecture": "amd64", "os": "linux"}},
            ],
        })
        .to_string();
        let v6 = sha256(index.as_bytes());
        let r = oci.call(
            "PUT",
            "/v2/dev/app/manifests/v6",
            Some(&token),
            &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
            index.as_bytes(),
        );
        assert_eq!(r.status, 201, "{what}: {}", r.text());
        let run = wait_run(&s, &mia, rule_id, "the run of the index", |r| {
            r["tag"] == "v6"
        });
        assert_eq!(run["status"], "succeeded", "{what}: {run}");
        assert_eq!(
            (
                run["images_copied"].as_i64(),
                run["blobs_copied"].as_i64(),
                run["blobs_skipped"].as_i64()
            ),
            (Some(1), Some(1), Some(1)),
            "{what}: the new image's layer; its config was there; v1 was not looked into: {run}"
        );
        let at_peer = peer_manifest(&peer, None, "mirror/app", "v6");
        assert_eq!(
            at_peer.header("docker-content-digest"),
            v6,
            "{what}: {}",
            at_peer.text()
        );
        assert_eq!(
            at_peer.header("content-type"),
            "application/vnd.oci.image.index.v1+json"
        );
        let child = Oci::new(&format!("http://{}", peer.addr())).call(
            "GET",
            &format!("/v2/mirror/app/manifests/{v5}"),
            None,
            &[(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json",
            )],
            b"",
        );
        assert_eq!(child.status, 200, "{what}: {}", child.text());
        assert_eq!(
            sha256(&child.body),
            v5,
            "{what}: the Docker manifest as it was"
        );
        assert_eq!(
            child.header("content-type"),
            "application/vnd.docker.distribution.manifest.v2+json"
        );

        // The audit log has the rule's making.
        let log = s.api().get("/api/v1/audit-log?per_page=100").unwrap();
        assert!(
            log["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == "replication.create" && e["actor"] == "mia"),
            "{what}: {log}"
        );
    }
}

#[test]
fn a_scheduled_rule_replicates_every_matching_tag() {
    if !peer_tools("replication_schedule") {
        return;
    }
    // Both backends at once: each waits for the next minute.
    let runs: Vec<_> = backends("repl_schedule")
        .into_iter()
        .map(|db| {
            std::thread::spawn(move || {
                let what = db.name();
                let (s, mia, _) = setup(&db, 200);
                let peer = PeerRegistry::start().unwrap();
                let oci = Oci::new(&s.url);
                let token = push_token(&s, &["dev/app", "dev/tools/lint"]);
                let app = oci.push_image(&token, "dev/app", "1.0", &[b"app layer"]);
                let lint = oci.push_image(&token, "dev/tools/lint", "1.0", &[b"lint layer"]);
                oci.push_image(&token, "dev/tools/lint", "draft", &[b"draft layer"]);
                let rule = mia
                    .post(
                        "/api/v1/projects/dev/replications",
                        json!({"name": "nightly", "url": format!("http://{}", peer.addr()),
                            "tags": "[0-9]*", "schedule": "* * * * *", "time_zone": "Europe/Paris"}),
                    )
                    .unwrap();
                let due = rule["next_run_at"].as_i64().expect("a next run");
                assert_eq!(rule["on_push"], false);
                let rule_id = id(&rule);
                let run = wait_for(Duration::from_secs(90), "the scheduled run", || {
                    runs(&mia, rule_id)
                        .into_iter()
                        .find(|r| r["status"] == "succeeded" || r["status"] == "failed")
                });
                assert_eq!(run["status"], "succeeded", "{what}: {run}");
                assert_eq!(run["triggered_by"], "schedule");
                assert_eq!(run["actor"], "schedule");
                assert!(run["queued_at"].as_i64().unwrap() >= due, "{what}: not before its minute");
                assert_eq!(run["images_copied"], 2, "{what}: {run}");
                for (name, digest) in [("dev/app", &app), ("dev/tools/lint", &lint)] {
                    let r = peer_manifest(&peer, None, name, "1.0");
                    assert_eq!(&r.header("docker-content-digest"), digest, "{what}: {name}");
                }
                assert_eq!(peer_manifest(&peer, None, "dev/tools/lint", "draft").status, 404);
                let after = mia
                    .get(&format!("/api/v1/projects/dev/replications/{rule_id}"))
                    .unwrap();
                assert!(after["next_run_at"].as_i64().unwrap() > due, "{what}: {after}");
            })
        })
        .collect();
    for r in runs {
        r.join().unwrap();
    }
}

#[test]
fn wrong_credentials_and_unreachable_peers_fail_with_what_to_do_and_passwords_stay_hidden() {
    if !peer_tools("replication_failures") {
        return;
    }
    for db in backends("repl_fail") {
        let what = db.name();
        let (mut s, mia, _) = setup(&db, 200);
        // Runs' ends reach the project's channels.
        let rt = common::fake::runtime();
        let hook = common::fake::fake(&rt, 200, json!({}));
        let slack = common::fake::fake(&rt, 200, json!({}));
        for (kind, url) in [("generic", hook.uri()), ("slack", slack.uri())] {
            s.api()
                .post(
                    "/api/v1/projects/dev/notifications",
                    json!({"kind": kind, "url": format!("{url}/hook"),
                        "events": ["replication_succeeded", "replication_failed"]}),
                )
                .unwrap();
        }
        let peer_creds = Creds::new("peeruser", "peer-pass-8f3d1c");
        let peer = PeerRegistry::start_with_auth(Some(&peer_creds)).unwrap();
        let oci = Oci::new(&s.url);
        let token = push_token(&s, &["dev/app"]);
        let digest = oci.push_image(&token, "dev/app", "1.0", &[b"a layer"]);
        let wrong = "wrong-pass-5b2e77";
        let rule = mia
            .post(
                "/api/v1/projects/dev/replications",
                json!({"name": "authed", "url": format!("http://{}", peer.addr()),
                    "username": "peeruser", "password": wrong}),
            )
            .unwrap();
        let rule_id = id(&rule);
        assert_eq!(rule["has_password"], true, "{what}: {rule}");
        assert_eq!(rule["username"], "peeruser");

        // Wrong credentials: failed at once (no retry helps), saying where and what to do.
        let run = mia
            .post(
                &format!("/api/v1/projects/dev/replications/{rule_id}/run"),
                json!({}),
            )
            .unwrap();
        let run_id = id(&run);
        let run = wait_run(&s, &mia, rule_id, "the run with a wrong password", |r| {
            id(r) == run_id
        });
        assert_eq!(run["status"], "failed", "{what}: {run}");
        assert_eq!(run["attempts"], 1, "{what}: {run}");
        let error = run["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("authentication failed at {}", peer.addr()))
                && error.contains("check the user name and password")
                && error.contains("dev/app:1.0"),
            "{what}: {error}"
        );
        assert!(!error.contains(wrong), "{what}: {error}");

        // The password is never shown, logged in the audit log nor stored in plaintext.
        for path in [
            "/api/v1/projects/dev/replications".to_string(),
            format!("/api/v1/projects/dev/replications/{rule_id}"),
            format!("/api/v1/projects/dev/replications/{rule_id}/runs"),
            "/api/v1/audit-log?per_page=100".to_string(),
        ] {
            let text = s.api().get_text(&path).unwrap();
            assert!(!text.contains(wrong), "{what}: {path}: {text}");
            if !path.contains("audit") {
                assert!(!text.contains("\"password\""), "{what}: {path}: {text}");
            }
        }
        s.assert_stored_nowhere(what, &[wrong]);
        assert!(
            !s.stderr_text().contains(wrong),
            "{what}: the server's log has the password"
        );

        // The right password: the next run succeeds.
        let r = mia
            .put(
                &format!("/api/v1/projects/dev/replications/{rule_id}"),
                json!({"password": peer_creds.password}),
            )
            .unwrap();
        assert_eq!(r["has_password"], true);
        let run = mia
            .post(
                &format!("/api/v1/projects/dev/replications/{rule_id}/run"),
                json!({}),
            )
            .unwrap();
        let run_id = id(&run);
        let run = wait_run(&s, &mia, rule_id, "the run with the right password", |r| {
            id(r) == run_id
        });
        assert_eq!(run["status"], "succeeded", "{what}: {run}");
        let r = peer_manifest(&peer, Some(&peer_creds), "dev/app", "1.0");
        assert_eq!(
            r.header("docker-content-digest"),
            digest,
            "{what}: {}",
            r.text()
        );
        s.assert_stored_nowhere(what, &[&peer_creds.password]);
        let audit = s.api().get_text("/api/v1/audit-log?per_page=100").unwrap();
        assert!(audit.contains("replication.update"), "{what}");
        assert!(!audit.contains(&peer_creds.password), "{what}");

        let events = wait_for(T, "two events", || {
            let b = common::fake::bodies(&rt, &hook);
            (b.len() >= 2).then_some(b)
        });
        assert_eq!(
            events[0]["event"], "replication_failed",
            "{what}: {events:?}"
        );
        assert_eq!(events[0]["replication"]["name"], "authed");
        assert!(
            events[0]["error"]
                .as_str()
                .unwrap()
                .contains("authentication failed"),
            "{what}: {events:?}"
        );
        assert_eq!(
            events[1]["event"], "replication_succeeded",
            "{what}: {events:?}"
        );
        assert_eq!(events[1]["run"]["images_copied"], 1, "{what}: {events:?}");
        let texts = wait_for(T, "two messages", || {
            let b = common::fake::bodies(&rt, &slack);
            (b.len() >= 2).then_some(b)
        });
        let first = texts[0]["text"].as_str().unwrap();
        assert!(
            first.contains(&format!(
                "dev: replication 'authed' to http://{} failed",
                peer.addr()
            )) && first.contains("check the user name and password"),
            "{what}: {first}"
        );
        for b in events.iter().chain(&texts) {
            let text = b.to_string();
            assert!(
                !text.contains(wrong) && !text.contains(&peer_creds.password),
                "{text}"
            );
        }

        // `gantry admin rotate-key` reseals the password while the server runs: it opens.
        let sealed = format!("SELECT password FROM registry_replications WHERE id = {rule_id}");
        let before = s.sql(&sealed);
        rotate_key(&s);
        let after = s.sql(&sealed);
        assert!(
            after.starts_with("gsec1:") && after != before,
            "{what}: {before} → {after}"
        );
        let run = mia
            .post(
                &format!("/api/v1/projects/dev/replications/{rule_id}/run"),
                json!({}),
            )
            .unwrap();
        let run_id = id(&run);
        let run = wait_run(&s, &mia, rule_id, "the run after the rotation", |r| {
            id(r) == run_id
        });
        assert_eq!(run["status"], "succeeded", "{what}: {run}");
        assert_eq!(run["images_skipped"], 1, "{what}: {run}");

        // An unreachable peer: tried again with backoff, then failed, saying so.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let down = mia
            .post(
                "/api/v1/projects/dev/replications",
                json!({"name": "down", "url": format!("http://{closed}")}),
            )
            .unwrap();
        let down_id = id(&down);
        let run = mia
            .post(
                &format!("/api/v1/projects/dev/replications/{down_id}/run"),
                json!({}),
            )
            .unwrap();
        let run_id = id(&run);
        let run = wait_run(&s, &mia, down_id, "the run to a closed port", |r| {
            id(r) == run_id
        });
        assert_eq!(run["status"], "failed", "{what}: {run}");
        assert_eq!(run["attempts"], 5, "{what}: {run}");
        let error = run["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("{closed} cannot be reached"))
                && error.contains("check the address")
                && error.contains("gave up after 5 attempts"),
            "{what}: {error}"
        );

        // A queued run survives kill -9: the rule points at the closed port again, with
        // retries far apart; the first attempt fails, the server is killed and started,
        // the rule is pointed at the peer, and that very run succeeds.
        s.kill9();
        s.opts.server_args = vec!["--replication-retry-ms".into(), "3000".into()];
        s.restart();
        let run = s
            .api()
            .post(
                &format!("/api/v1/projects/dev/replications/{down_id}/run"),
                json!({}),
            )
            .unwrap();
        let run_id = id(&run);
        wait_for(T, "the first attempt's failure", || {
            runs(&mia, down_id)
                .into_iter()
                .find(|r| id(r) == run_id && r["status"] == "queued" && r["attempts"] == 1)
        });
        s.kill9();
        s.opts.server_args = vec!["--replication-retry-ms".into(), "200".into()];
        s.restart();
        mia.put(
            &format!("/api/v1/projects/dev/replications/{down_id}"),
            json!({"url": format!("http://{}", peer.addr()), "username": "peeruser",
                "password": peer_creds.password}),
        )
        .unwrap();
        let run = wait_run(
            &s,
            &mia,
            down_id,
            "the run queued before the restart",
            |r| id(r) == run_id,
        );
        assert_eq!(run["status"], "succeeded", "{what}: {run}");
        assert!(run["attempts"].as_i64().unwrap() >= 2, "{what}: {run}");
        assert_eq!(
            run["images_skipped"], 1,
            "{what}: dev/app:1.0 is there: {run}"
        );
    }
}

#[test]
fn maintainers_manage_rules_and_bad_input_says_what_to_write() {
    for db in backends("repl_rules") {
        let what = db.name();
        let (s, mia, dave) = setup(&db, 200);
        let base = "/api/v1/projects/dev/replications";
        let body = json!({"name": "r", "url": "registry.example.com:5000", "password": "pw-9a7c"});

        // Developers see rules, not change or run them.
        let e = dave.post(base, body.clone()).unwrap_err();
        assert_eq!(e.status, 403, "{what}: {e}");
        let rule = mia.post(base, body).unwrap();
        assert_eq!(
            rule["url"], "https://registry.example.com:5000",
            "{what}: https by default"
        );
        assert_eq!(
            (rule["repositories"].as_str(), rule["tags"].as_str()),
            (Some("**"), Some("*"))
        );
        assert_eq!(rule["enabled"], true);
        let one = format!("{base}/{}", id(&rule));
        assert_eq!(
            dave.get(base).unwrap().as_array().unwrap().len(),
            1,
            "{what}"
        );
        assert_eq!(dave.get(&one).unwrap()["name"], "r");
        for (method, path) in [("PUT", one.clone()), ("POST", format!("{one}/run"))] {
            let e = match method {
                "PUT" => dave.put(&path, json!({"enabled": false})),
                _ => dave.post(&path, json!({})),
            }
            .unwrap_err();
            assert_eq!(e.status, 403, "{what}: {method} {path}: {e}");
        }
        assert_eq!(dave.delete(&one).unwrap_err().status, 403);
        assert!(!dave.get_text(base).unwrap().contains("pw-9a7c"));

        // Bad input: a 400 that says what to write; nothing stored.
        for (body, says) in [
            (json!({"url": "https://h"}), "needs a `name`"),
            (json!({"name": "x"}), "needs a `url`"),
            (
                json!({"name": "x", "url": "https://h/team/app"}),
                "namespace",
            ),
            (
                json!({"name": "x", "url": "https://u:p@h"}),
                "username and password",
            ),
            (
                json!({"name": "x", "url": "h", "namespace": "Team"}),
                "lowercase",
            ),
            (
                json!({"name": "x", "url": "h", "tags": "[v"}),
                "tags filter",
            ),
            (
                json!({"name": "x", "url": "h", "schedule": "every night"}),
                "5",
            ),
            (
                json!({"name": "x", "url": "h", "schedule": "0 3 * * *", "time_zone": "Mars/Base"}),
                "IANA",
            ),
            (
                json!({"name": "x", "url": "h", "time_zone": "Mars/Base"}),
                "IANA",
            ),
            (json!({"name": "r", "url": "h"}), "named 'r'"),
            (
                json!({"name": "x", "url": "h", "colour": "red"}),
                "unknown field",
            ),
            (
                json!({"name": "x", "url": "h", "password": 7}),
                "wrong type",
            ),
        ] {
            let e = mia.post(base, body.clone()).unwrap_err();
            assert!(matches!(e.status, 400 | 409), "{what}: {body}: {e}");
            assert!(e.body.to_string().contains(says), "{what}: {body}: {e}");
        }
        // A body that is not JSON is not echoed (it may carry the password).
        let (st, text) = {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let r = agent
                .post(&format!("{}{base}", s.url))
                .header(
                    "Authorization",
                    &format!("Bearer {}", mia.token.as_deref().unwrap()),
                )
                .header("content-type", "application/json")
                .send("{\"name\": \"x\", \"password\": \"leak-me-42\"");
            let mut r = r.unwrap();
            (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
        };
        assert_eq!(st, 400, "{what}: {text}");
        assert!(!text.contains("leak-me-42"), "{what}: {text}");
        assert_eq!(
            mia.get(base).unwrap().as_array().unwrap().len(),
            1,
            "{what}"
        );

        // Changes: absent fields stay; the schedule goes with ""; disabled rules do not run.
        let r = mia
            .put(&one, json!({"schedule": "30 2 * * *", "tags": "v*"}))
            .unwrap();
        assert!(r["next_run_at"].as_i64().is_some(), "{what}: {r}");
        assert_eq!(r["has_password"], true);
        let r = mia
            .put(&one, json!({"schedule": "", "enabled": false}))
            .unwrap();
        assert_eq!(
            (r["schedule"].as_str(), r["next_run_at"].as_i64()),
            (None, None),
            "{what}: {r}"
        );
        assert_eq!(r["tags"], "v*");
        let e = mia.post(&format!("{one}/run"), json!({})).unwrap_err();
        assert_eq!(e.status, 409, "{what}: {e}");
        assert!(e.body.to_string().contains("disabled"), "{what}: {e}");
        let r = mia.put(&one, json!({"password": ""})).unwrap();
        assert_eq!(r["has_password"], false, "{what}: {r}");
        assert_eq!(mia.get(&format!("{base}/999999")).unwrap_err().status, 404);
        mia.delete(&one).unwrap();
        assert_eq!(mia.get(&one).unwrap_err().status, 404, "{what}");
        let log = s.api().get_text("/api/v1/audit-log?per_page=100").unwrap();
        for action in [
            "replication.create",
            "replication.update",
            "replication.delete",
        ] {
            assert!(log.contains(action), "{what}: {action}");
        }
        assert!(!log.contains("pw-9a7c"), "{what}");
    }
}

/// `gantry image promote` across registries, as a user with a personal access token.
fn promote(s: &Server, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["image", "promote"])
        .args(args)
        .args(["--server", &s.url, "--format", "json"])
        .env("GANTRY_TOKEN", &s.token)
        .env_remove("GANTRY_DATA_DIR")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn image_promote_copies_between_gantry_and_a_peer_keeping_the_digest() {
    if !peer_tools("promote_across_registries") {
        return;
    }
    for db in backends("repl_promote") {
        let what = db.name();
        let (s, _, _) = setup(&db, 200);
        let peer = PeerRegistry::start().unwrap();
        let oci = Oci::new(&s.url);
        let token = push_token(&s, &["dev/app"]);
        let layer_a = vec![3u8; 200_000];
        let layer_b = b"b".repeat(5000);
        let layer_c = b"c".repeat(7000);

        // Gantry → peer: every blob the first time, only the new layer the second.
        let d1 = oci.push_image(&token, "dev/app", "1.0", &[&layer_a, &layer_b]);
        let dest = format!("{}/team/app:1.0", peer.addr());
        let (ok, out, err) = promote(&s, &["dev/app:1.0", &dest]);
        assert!(ok, "{what}: {out}{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["digest"], d1.as_str(), "{what}: {v}");
        assert_eq!(v["blobs_copied"], 3, "{what}: {v}");
        assert_eq!(
            peer_manifest(&peer, None, "team/app", "1.0").header("docker-content-digest"),
            d1
        );
        let d2 = oci.push_image(&token, "dev/app", "1.1", &[&layer_a, &layer_c]);
        let (ok, out, err) = promote(
            &s,
            &["dev/app:1.1", &format!("{}/team/app:1.1", peer.addr())],
        );
        assert!(ok, "{what}: {out}{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (v["blobs_copied"].as_u64(), v["blobs_present"].as_u64()),
            (Some(1), Some(2)),
            "{what}: {v}"
        );
        assert_eq!(v["bytes_copied"], layer_c.len(), "{what}: {v}");
        assert_eq!(
            peer_manifest(&peer, None, "team/app", "1.1").header("docker-content-digest"),
            d2
        );

        // Peer → Gantry: into another repository of the project, then again: nothing moves.
        let d3 = peer_push_image(&peer, "vendor/tool", "2.0", &[&layer_b, b"tool"]);
        let (ok, out, err) = promote(
            &s,
            &[&format!("{}/vendor/tool:2.0", peer.addr()), "dev/tool:2.0"],
        );
        assert!(ok, "{what}: {out}{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["digest"], d3.as_str(), "{what}: {v}");
        assert_eq!(v["blobs_copied"], 3, "{what}: {v}");
        let t = push_token(&s, &["dev/tool"]);
        let here = oci.call(
            "HEAD",
            "/v2/dev/tool/manifests/2.0",
            Some(&t),
            &[("Accept", MANIFEST_TYPES)],
            b"",
        );
        assert_eq!(here.header("docker-content-digest"), d3, "{what}");
        let (ok, out, err) = promote(
            &s,
            &[&format!("{}/vendor/tool:2.0", peer.addr()), "dev/tool:2.0"],
        );
        assert!(ok, "{what}: {out}{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (v["already_there"].as_bool(), v["blobs_copied"].as_u64()),
            (Some(true), Some(0)),
            "{what}: {v}"
        );
        // A second peer image sharing the config and a layer: only the new layer comes.
        let d4 = peer_push_image(&peer, "vendor/tool", "2.1", &[&layer_b, b"tool 2.1"]);
        let (ok, out, err) = promote(
            &s,
            &[&format!("{}/vendor/tool:2.1", peer.addr()), "dev/tool:2.1"],
        );
        assert!(ok, "{what}: {out}{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["digest"], d4.as_str());
        assert_eq!(
            (v["blobs_copied"].as_u64(), v["blobs_present"].as_u64()),
            (Some(1), Some(2)),
            "{what}: {v}"
        );

        // A source that does not exist: an error naming it, exit 1.
        let (ok, out, err) = promote(
            &s,
            &[&format!("{}/vendor/none:1", peer.addr()), "dev/none:1"],
        );
        assert!(!ok, "{what}: {out}");
        assert!(
            err.contains("vendor/none:1 does not exist"),
            "{what}: {err}"
        );
    }
}
