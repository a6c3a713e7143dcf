//! The OCI registry of `gantry server` through its HTTP API, request by request: Docker's
//! token flow and who gets which scope, blobs (ranges, delete), uploads (monolithic,
//! chunked with `Content-Range`, out-of-order chunks, status, cancel, corrupt data),
//! mounts, manifests (by tag and digest, sha512, missing blobs), referrers, tags and the
//! catalog with pagination, and the spec's errors for bad input (never a 500). On SQLite and
//! PostgreSQL. Real clients (docker, skopeo, buildah) are in `registry_clients.rs`.

mod common;

use common::Project;
use common::oci::{Oci, sha256, sha512};
use common::server::{Options, Server, backends};
use gantry_testkit::registry::Creds;
use serde_json::{Value, json};
use std::io::Write;

const PASSWORD: &str = "correct horse battery";

fn user(s: &Server, name: &str) {
    common::registry::user(s, name, PASSWORD, false);
}

fn member(s: &Server, project: &str, name: &str, role: &str) {
    s.api()
        .post(
            &format!("/api/v1/projects/{project}/members"),
            json!({"username": name, "role": role}),
        )
        .unwrap_or_else(|e| panic!("member {name}: {e}"));
}

/// A server without an agent, projects `dev` and `secret`, users alice (developer in dev),
/// rita (reporter in dev) and mallory (no role anywhere).
fn setup(db: &common::server::Backend) -> (Server, Project) {
    let mut opts = Options::new(db);
    opts.local_agent = false;
    let s = Server::start(opts);
    let repo = Project::new("job: {script: [true]}\n");
    repo.commit("init");
    s.project("dev", repo.path());
    s.project("secret", repo.path());
    for u in ["alice", "rita", "mallory"] {
        user(&s, u);
    }
    member(&s, "dev", "alice", "developer");
    member(&s, "dev", "rita", "reporter");
    (s, repo)
}

/// Signs `user` in and makes them a personal access token with `scopes`: the token.
fn personal_token(s: &Server, user: &str, scopes: &[&str]) -> String {
    common::registry::personal_token(s, &Creds::new(user, PASSWORD), scopes).password
}

fn actions(token: &str, name: &str) -> Vec<String> {
    Oci::access(token)
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"] == name)
        .flat_map(|a| a["actions"].as_array().unwrap().clone())
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn tokens_carry_what_each_role_may_do() {
    for db in backends("registry_tokens") {
        let (s, _repo) = setup(&db);
        let oci = Oci::new(&s.url);
        let what = db.name();

        // The base endpoint sends clients to the token endpoint.
        let r = oci.call("GET", "/v2/", None, &[], b"");
        assert_eq!(r.status, 401, "{what}");
        let challenge = r.header("www-authenticate");
        assert!(
            challenge.starts_with(&format!(
                "Bearer realm=\"{}/v2/token\",service=\"gantry-registry\"",
                s.url
            )),
            "{what}: {challenge}"
        );
        assert_eq!(r.header("docker-distribution-api-version"), "registry/2.0");

        let scope = "repository:dev/app:pull,push,delete";
        let alice = oci.token(Some(("alice", PASSWORD)), &[scope]);
        assert_eq!(actions(&alice, "dev/app"), ["pull", "push"], "{what}");
        let rita = oci.token(Some(("rita", PASSWORD)), &[scope]);
        assert_eq!(actions(&rita, "dev/app"), ["pull"], "{what}");
        let mallory = oci.token(Some(("mallory", PASSWORD)), &[scope]);
        assert!(actions(&mallory, "dev/app").is_empty(), "{what}");
        let admin = oci.token(Some(("admin", &s.token)), &[scope]);
        assert_eq!(actions(&admin, "dev/app"), ["pull", "push", "delete"]);
        let anonymous = oci.token(None, &[scope]);
        assert!(actions(&anonymous, "dev/app").is_empty(), "{what}");
        // No project owns `nowhere/app`: nothing is granted.
        let t = oci.token(
            Some(("admin", &s.token)),
            &["repository:nowhere/app:pull,push"],
        );
        assert!(actions(&t, "nowhere/app").is_empty(), "{what}");

        // A wrong password is refused at the token endpoint, with the reason.
        let r = oci.token_resp(Some(("alice", "wrong")), &[scope]);
        assert_eq!(r.status, 401, "{what}");
        assert_eq!(r.code(), "UNAUTHORIZED");
        assert!(
            r.text().contains("wrong user name or password"),
            "{}",
            r.text()
        );

        // With a token, the base endpoint answers; a forged one is refused.
        assert_eq!(oci.call("GET", "/v2/", Some(&alice), &[], b"").status, 200);
        let forged = format!("{}x", &alice[..alice.len() - 1]);
        let r = oci.call("GET", "/v2/", Some(&forged), &[], b"");
        assert_eq!(r.status, 401);
        assert!(
            r.header("www-authenticate")
                .contains("error=\"invalid_token\"")
        );

        // Personal access tokens: read_registry pulls only, write_registry pushes; a token
        // without a registry scope and one of another user are refused.
        let pat = |scopes: &[&str]| personal_token(&s, "alice", scopes);
        let read = pat(&["read_registry"]);
        let t = oci.token(Some(("alice", &read)), &[scope]);
        assert_eq!(actions(&t, "dev/app"), ["pull"], "{what}");
        let write = pat(&["write_registry"]);
        let t = oci.token(Some(("alice", &write)), &[scope]);
        assert_eq!(actions(&t, "dev/app"), ["pull", "push"], "{what}");
        let api_only = pat(&["read_api"]);
        let r = oci.token_resp(Some(("alice", &api_only)), &[scope]);
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert!(r.text().contains("no registry scope"), "{}", r.text());
        let r = oci.token_resp(Some(("rita", &write)), &[scope]);
        assert_eq!(r.status, 401, "{what}: {}", r.text());

        // Public projects: anonymous pulls, nothing more.
        s.api()
            .put(
                "/api/v1/projects/dev/registry",
                json!({"public": true, "push_role": "developer", "promote_role": "maintainer"}),
            )
            .unwrap();
        let anonymous = oci.token(None, &[scope]);
        assert_eq!(actions(&anonymous, "dev/app"), ["pull"], "{what}");
        let mallory = oci.token(Some(("mallory", PASSWORD)), &[scope]);
        assert_eq!(actions(&mallory, "dev/app"), ["pull"], "{what}");
        // Pushing into the project can be kept to maintainers.
        s.api()
            .put(
                "/api/v1/projects/dev/registry",
                json!({"public": false, "push_role": "maintainer", "promote_role": "maintainer"}),
            )
            .unwrap();
        let alice = oci.token(Some(("alice", PASSWORD)), &[scope]);
        assert_eq!(actions(&alice, "dev/app"), ["pull"], "{what}");
    }
}

#[test]
fn the_distribution_api_request_by_request() {
    for db in backends("registry_api") {
        let (s, _repo) = setup(&db);
        let oci = Oci::new(&s.url);
        let what = db.name();
        let alice = oci.token(
            Some(("alice", PASSWORD)),
            &[
                "repository:dev/app:pull,push",
                "repository:dev/copy:pull,push",
            ],
        );
        let tok = Some(alice.as_str());

        // Nothing without a token, with the scope to ask for.
        let r = oci.call("GET", "/v2/dev/app/tags/list", None, &[], b"");
        assert_eq!(r.status, 401, "{what}");
        assert!(
            r.header("www-authenticate")
                .contains("scope=\"repository:dev/app:pull\""),
            "{}",
            r.header("www-authenticate")
        );

        // A monolithic upload, then HEAD, GET and ranges.
        let blob: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let d = sha256(&blob);
        let r = oci.push_blob(&alice, "dev/app", &blob);
        assert_eq!(r.status, 201, "{what}: {}", r.text());
        assert_eq!(r.header("location"), format!("/v2/dev/app/blobs/{d}"));
        assert_eq!(r.header("docker-content-digest"), d);
        let r = oci.call("HEAD", &format!("/v2/dev/app/blobs/{d}"), tok, &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), "10000");
        assert_eq!(r.header("docker-content-digest"), d);
        let r = oci.call("GET", &format!("/v2/dev/app/blobs/{d}"), tok, &[], b"");
        assert_eq!(r.body, blob);
        let r = oci.call(
            "GET",
            &format!("/v2/dev/app/blobs/{d}"),
            tok,
            &[("Range", "bytes=100-199")],
            b"",
        );
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-range"), "bytes 100-199/10000");
        assert_eq!(r.body, &blob[100..200]);
        let r = oci.call(
            "GET",
            &format!("/v2/dev/app/blobs/{d}"),
            tok,
            &[("Range", "bytes=20000-")],
            b"",
        );
        assert_eq!(r.status, 416);
        assert_eq!(r.header("content-range"), "bytes */10000");
        // Another repository of the same bytes does not hold them until pushed or mounted.
        let r = oci.call("HEAD", &format!("/v2/dev/copy/blobs/{d}"), tok, &[], b"");
        assert_eq!(r.status, 404, "{what}");

        // Chunked: POST, PATCH with Content-Range, a chunk out of order (416), the status,
        // a wrong digest (400, the upload is gone), then the whole again.
        let start = |name: &str| {
            let r = oci.call("POST", &format!("/v2/{name}/blobs/uploads/"), tok, &[], b"");
            assert_eq!(r.status, 202, "{}", r.text());
            assert_eq!(r.header("range"), "0-0");
            assert!(!r.header("docker-upload-uuid").is_empty());
            r.header("location").to_string()
        };
        let loc = start("dev/app");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let (a, b) = data.split_at(120_000);
        let r = oci.call("PATCH", &loc, tok, &[("Content-Range", "0-119999")], a);
        assert_eq!(r.status, 202, "{}", r.text());
        assert_eq!(r.header("range"), "0-119999");
        let loc = r.header("location").to_string();
        let r = oci.call("PATCH", &loc, tok, &[("Content-Range", "100-299")], b);
        assert_eq!(r.status, 416, "{what}: a chunk that does not follow");
        assert_eq!(r.header("range"), "0-119999");
        let r = oci.call("GET", &loc, tok, &[], b"");
        assert_eq!(r.status, 204);
        assert_eq!(r.header("range"), "0-119999");
        let wrong = sha256(b"something else");
        let r = oci.call("PUT", &format!("{loc}?digest={wrong}"), tok, &[], b);
        assert_eq!(r.status, 400);
        assert_eq!(r.code(), "DIGEST_INVALID", "{}", r.text());
        let r = oci.call("GET", &loc, tok, &[], b"");
        assert_eq!(r.status, 404);
        assert_eq!(r.code(), "BLOB_UPLOAD_UNKNOWN");
        let r = oci.call("HEAD", &format!("/v2/dev/app/blobs/{wrong}"), tok, &[], b"");
        assert_eq!(r.status, 404, "a corrupt upload is never visible");
        let loc = start("dev/app");
        let r = oci.call("PATCH", &loc, tok, &[("Content-Range", "0-119999")], a);
        assert_eq!(r.status, 202);
        let r = oci.call(
            "PUT",
            &format!("{}?digest={}", r.header("location"), sha256(&data)),
            tok,
            &[("Content-Range", "120000-299999")],
            b,
        );
        assert_eq!(r.status, 201, "{}", r.text());
        let r = oci.call(
            "GET",
            &format!("/v2/dev/app/blobs/{}", sha256(&data)),
            tok,
            &[],
            b"",
        );
        assert_eq!(r.body, data);
        // An upload's URL under another repository names nothing.
        let loc = start("dev/app");
        let other = loc.replace("/dev/app/", "/dev/copy/");
        let r = oci.call("PATCH", &other, tok, &[], b"x");
        assert_eq!(r.status, 404, "{what}");
        // Cancel.
        assert_eq!(oci.call("DELETE", &loc, tok, &[], b"").status, 204);
        assert_eq!(oci.call("PATCH", &loc, tok, &[], b"x").status, 404);

        // sha512.
        let big = b"sha512 bytes".repeat(100);
        let loc = start("dev/app");
        let r = oci.call(
            "PUT",
            &format!("{loc}?digest={}", sha512(&big)),
            tok,
            &[],
            &big,
        );
        assert_eq!(r.status, 201, "{}", r.text());
        let r = oci.call(
            "GET",
            &format!("/v2/dev/app/blobs/{}", sha512(&big)),
            tok,
            &[],
            b"",
        );
        assert_eq!(r.body, big);

        // Mount into dev/copy from dev/app (pull there is in the token).
        let r = oci.call(
            "POST",
            &format!("/v2/dev/copy/blobs/uploads/?mount={d}&from=dev/app"),
            tok,
            &[],
            b"",
        );
        assert_eq!(r.status, 201, "{what}: {}", r.text());
        assert_eq!(
            oci.call("GET", &format!("/v2/dev/copy/blobs/{d}"), tok, &[], b"")
                .body,
            blob
        );
        // From a repository the token may not pull: an upload starts instead.
        let admin = oci.token(
            Some(("admin", &s.token)),
            &["repository:secret/x:pull,push"],
        );
        assert_eq!(oci.push_blob(&admin, "secret/x", b"hidden").status, 201);
        let r = oci.call(
            "POST",
            &format!(
                "/v2/dev/copy/blobs/uploads/?mount={}&from=secret/x",
                sha256(b"hidden")
            ),
            tok,
            &[],
            b"",
        );
        assert_eq!(r.status, 202, "{what}: no mount without pull in the source");

        // Manifests: a missing blob is refused; by tag; by digest; HEAD; sha512 digest.
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let missing = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": config.len()},
            "layers": [],
        })
        .to_string();
        let r = oci.put_manifest(&alice, "dev/app", "1.0", missing.as_bytes());
        assert_eq!(r.status, 400);
        assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN", "{}", r.text());
        let m = oci.push_image(&alice, "dev/app", "1.0", &[&blob, &data]);
        let r = oci.call(
            "GET",
            "/v2/dev/app/manifests/1.0",
            tok,
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
            b"",
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("docker-content-digest"), m);
        assert_eq!(
            r.header("content-type"),
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(sha256(&r.body), m);
        let manifest_bytes = r.body.clone();
        let r = oci.call("HEAD", &format!("/v2/dev/app/manifests/{m}"), tok, &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), manifest_bytes.len().to_string());
        let by512 = sha512(&manifest_bytes);
        let r = oci.put_manifest(&alice, "dev/app", &by512, &manifest_bytes);
        assert_eq!(r.status, 201, "{}", r.text());
        let r = oci.put_manifest(&alice, "dev/app", &sha256(b"other"), &manifest_bytes);
        assert_eq!(r.code(), "DIGEST_INVALID", "{}", r.text());

        // Referrers: an artifact whose subject is the image.
        let empty = b"{}";
        assert_eq!(oci.push_blob(&alice, "dev/app", empty).status, 201);
        let sig = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.signature",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2},
            "layers": [],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m, "size": manifest_bytes.len()},
            "annotations": {"org.example.signed-by": "ci"},
        })
        .to_string();
        let r = oci.put_manifest(&alice, "dev/app", &sha256(sig.as_bytes()), sig.as_bytes());
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.header("oci-subject"), m);
        let r = oci.call("GET", &format!("/v2/dev/app/referrers/{m}"), tok, &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type"),
            "application/vnd.oci.image.index.v1+json"
        );
        let refs = r.json();
        assert_eq!(
            refs["manifests"][0]["digest"],
            sha256(sig.as_bytes()),
            "{refs}"
        );
        assert_eq!(
            refs["manifests"][0]["artifactType"],
            "application/vnd.example.signature"
        );
        assert_eq!(
            refs["manifests"][0]["annotations"]["org.example.signed-by"],
            "ci"
        );
        let r = oci.call(
            "GET",
            &format!("/v2/dev/app/referrers/{m}?artifactType=other"),
            tok,
            &[],
            b"",
        );
        assert_eq!(r.header("oci-filters-applied"), "artifactType");
        assert_eq!(r.json()["manifests"], json!([]));

        // Tags with pagination.
        for t in ["1.1", "1.2", "1.3", "2.0"] {
            assert_eq!(
                oci.put_manifest(&alice, "dev/app", t, &manifest_bytes)
                    .status,
                201
            );
        }
        let r = oci.call("GET", "/v2/dev/app/tags/list?n=2", tok, &[], b"");
        assert_eq!(r.json(), json!({"name": "dev/app", "tags": ["1.0", "1.1"]}));
        assert_eq!(
            r.header("link"),
            "</v2/dev/app/tags/list?n=2&last=1.1>; rel=\"next\""
        );
        let r = oci.call("GET", "/v2/dev/app/tags/list?n=2&last=1.1", tok, &[], b"");
        assert_eq!(r.json()["tags"], json!(["1.2", "1.3"]));
        let r = oci.call("GET", "/v2/dev/app/tags/list?last=1.3", tok, &[], b"");
        assert_eq!(r.json()["tags"], json!(["2.0"]));
        assert_eq!(r.header("link"), "");

        // The catalog: alice sees dev's repositories, not secret's.
        let cat = oci.token(Some(("alice", PASSWORD)), &["registry:catalog:*"]);
        let r = oci.call("GET", "/v2/_catalog", Some(&cat), &[], b"");
        assert_eq!(
            r.json(),
            json!({"repositories": ["dev/app", "dev/copy"]}),
            "{what}"
        );
        let cat = oci.token(Some(("admin", &s.token)), &["registry:catalog:*"]);
        let r = oci.call("GET", "/v2/_catalog?n=1", Some(&cat), &[], b"");
        assert_eq!(r.json(), json!({"repositories": ["dev/app"]}));
        assert!(
            r.header("link").contains("last=dev%2Fapp"),
            "{}",
            r.header("link")
        );
        let r = oci.call("GET", "/v2/_catalog", tok, &[], b"");
        assert_eq!(r.status, 403, "the catalog needs its scope");

        // Bad input: the spec's codes, never a 500.
        let bad: [(&str, &str, &[u8], u16, &str); 7] = [
            ("GET", "/v2/dev/App/tags/list", b"", 400, "NAME_INVALID"),
            (
                "GET",
                "/v2/dev/app/blobs/sha256:nothex",
                b"",
                400,
                "DIGEST_INVALID",
            ),
            (
                "GET",
                "/v2/dev/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
                b"",
                400,
                "DIGEST_INVALID",
            ),
            (
                "PUT",
                "/v2/dev/app/manifests/latest",
                b"{not json",
                400,
                "MANIFEST_INVALID",
            ),
            (
                "PUT",
                "/v2/dev/app/manifests/.bad",
                b"{}",
                400,
                "TAG_INVALID",
            ),
            (
                "GET",
                "/v2/dev/app/manifests/nope",
                b"",
                404,
                "MANIFEST_UNKNOWN",
            ),
            ("GET", "/v2/dev/nothing/tags/list", b"", 404, "NAME_UNKNOWN"),
        ];
        let every = oci.token(
            Some(("admin", &s.token)),
            &[
                "repository:dev/app:pull,push",
                "repository:dev/nothing:pull",
                "repository:dev/App:pull",
            ],
        );
        for (method, path, body, status, code) in bad {
            let r = oci.call(
                method,
                path,
                Some(&every),
                &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
                body,
            );
            assert_eq!(
                (r.status, r.code().as_str()),
                (status, code),
                "{what}: {method} {path}: {}",
                r.text()
            );
        }

        // Deletes need the delete action: alice (developer) has none; the admin has.
        let r = oci.call("DELETE", "/v2/dev/app/manifests/2.0", tok, &[], b"");
        assert_eq!(r.status, 403, "{what}");
        assert!(
            r.header("www-authenticate")
                .contains("scope=\"repository:dev/app:delete\",error=\"insufficient_scope\""),
            "{}",
            r.header("www-authenticate")
        );
        let del = oci.token(
            Some(("admin", &s.token)),
            &["repository:dev/app:pull,delete"],
        );
        let r = oci.call("DELETE", "/v2/dev/app/manifests/2.0", Some(&del), &[], b"");
        assert_eq!(r.status, 202, "{}", r.text());
        let r = oci.call("GET", "/v2/dev/app/tags/list", tok, &[], b"");
        assert_eq!(r.json()["tags"], json!(["1.0", "1.1", "1.2", "1.3"]));
        let r = oci.call(
            "DELETE",
            &format!("/v2/dev/app/manifests/{m}"),
            Some(&del),
            &[],
            b"",
        );
        assert_eq!(r.status, 202);
        let r = oci.call("GET", "/v2/dev/app/manifests/1.0", tok, &[], b"");
        assert_eq!(
            r.code(),
            "MANIFEST_UNKNOWN",
            "the tags went with their manifest"
        );
        let r = oci.call(
            "DELETE",
            &format!("/v2/dev/app/blobs/{d}"),
            Some(&del),
            &[],
            b"",
        );
        assert_eq!(r.status, 202);
        assert_eq!(
            oci.call("HEAD", &format!("/v2/dev/app/blobs/{d}"), tok, &[], b"")
                .status,
            404
        );
        assert_eq!(
            oci.call("HEAD", &format!("/v2/dev/copy/blobs/{d}"), tok, &[], b"")
                .status,
            200,
            "{what}: another repository's link stays"
        );
        assert!(!s.stderr_text().contains("panicked"), "{}", s.stderr_text());
    }
}

#[test]
fn kill_9_during_an_upload_leaves_no_blob_and_the_next_push_succeeds() {
    let db = &backends("registry_kill9")[0];
    let (mut s, _repo) = setup(db);
    let oci = Oci::new(&s.url);
    let token = oci.token(Some(("alice", PASSWORD)), &["repository:dev/app:pull,push"]);
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let d = sha256(&data);

    // A monolithic upload that stops half-way: the server dies while it reads.
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        tcp,
        "POST /v2/dev/app/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .unwrap();
    tcp.write_all(&data[..data.len() / 2]).unwrap();
    tcp.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    s.kill9();
    drop(tcp);
    s.restart();

    let oci = Oci::new(&s.url);
    let token = oci.token(Some(("alice", PASSWORD)), &["repository:dev/app:pull,push"]);
    let r = oci.call(
        "HEAD",
        &format!("/v2/dev/app/blobs/{d}"),
        Some(&token),
        &[],
        b"",
    );
    assert_eq!(r.status, 404, "half a blob is never visible");
    let stored = walk(&s.data.path().join("blobs"));
    assert!(
        !stored.iter().any(|p| p.contains(&d[7..])),
        "no file under the blob's key: {stored:?}"
    );
    let r = oci.push_blob(&token, "dev/app", &data);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = oci.call(
        "GET",
        &format!("/v2/dev/app/blobs/{d}"),
        Some(&token),
        &[],
        b"",
    );
    assert_eq!(sha256(&r.body), d);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// `gantry image promote` as a user with a personal access token.
fn promote_cli(s: &Server, token: &str, src: &str, dst: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["image", "promote", src, dst, "--server", &s.url])
        .env("GANTRY_TOKEN", token)
        .env_remove("GANTRY_DATA_DIR")
        .output()
        .unwrap()
}

#[test]
fn promotion_dev_test_beta_release_keeps_the_digest_and_moves_no_bytes() {
    for db in backends("registry_promote") {
        let (s, _repo) = setup(&db);
        let what = db.name();
        let oci = Oci::new(&s.url);
        // Registry projects: no git repository, images only (as Harbor's projects).
        for p in ["test", "beta", "release"] {
            s.api()
                .post("/api/v1/projects", json!({"path": p}))
                .unwrap_or_else(|e| panic!("{p}: {e}"));
        }
        let e = s
            .api()
            .post("/api/v1/projects/test/pipelines", json!({}))
            .unwrap_err();
        assert_eq!(e.status, 400, "{e}");
        assert!(e.body.to_string().contains("no git repository"), "{e}");
        // Nobody but owners pushes into test, beta and release: images get there by
        // promotion. Testers (developers in test) promote into test; maintainers of beta and
        // release promote there.
        for (p, promote) in [
            ("test", "developer"),
            ("beta", "maintainer"),
            ("release", "maintainer"),
        ] {
            s.api()
                .put(
                    &format!("/api/v1/projects/{p}/registry"),
                    json!({"public": false, "push_role": "owner", "promote_role": promote}),
                )
                .unwrap();
        }
        for u in ["tess", "olga"] {
            user(&s, u);
        }
        member(&s, "test", "alice", "reporter");
        member(&s, "dev", "tess", "reporter");
        member(&s, "test", "tess", "developer");
        member(&s, "beta", "tess", "maintainer");
        member(&s, "beta", "olga", "reporter");
        member(&s, "release", "olga", "maintainer");

        // A developer pushes the image and its signature to dev.
        let alice = oci.token(
            Some(("alice", PASSWORD)),
            &[
                "repository:dev/app:pull,push",
                "repository:test/app:pull,push",
            ],
        );
        let layer_a = vec![7u8; 300_000];
        let layer_b = b"second layer".repeat(1000);
        let digest = oci.push_image(&alice, "dev/app", "1.4-dev", &[&layer_a, &layer_b]);
        let manifest = oci
            .call(
                "GET",
                "/v2/dev/app/manifests/1.4-dev",
                Some(&alice),
                &[],
                b"",
            )
            .body;
        assert_eq!(oci.push_blob(&alice, "dev/app", b"{}").status, 201);
        let sig = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.signature",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
            "layers": [],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": manifest.len()},
        })
        .to_string();
        assert_eq!(
            oci.put_manifest(&alice, "dev/app", &sha256(sig.as_bytes()), sig.as_bytes())
                .status,
            201
        );
        // The developer cannot push into test, nor promote there.
        let r = oci.push_blob(&alice, "test/app", b"x");
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        assert_eq!(r.code(), "DENIED");
        let alice_pat = personal_token(&s, "alice", &["api"]);
        let out = promote_cli(&s, &alice_pat, "dev/app:1.4-dev", "test/app:1.4-test");
        assert_eq!(out.status.code(), Some(2), "{what}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("needs the developer role"), "{err}");

        let files_before = walk(&s.data.path().join("blobs")).len();
        // The tester promotes into test, then beta; operations into release.
        let tess = personal_token(&s, "tess", &["api"]);
        let out = promote_cli(&s, &tess, "dev/app:1.4-dev", "test/app:1.4-test");
        assert!(out.status.success(), "{what}: {out:?}");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains(&digest) && said.contains("no layer copied"),
            "{said}"
        );
        let r = s
            .api()
            .post(
                "/api/v1/registry/promote",
                json!({"source": "test/app:1.4-test", "destination": "beta/app:1.4-beta"}),
            )
            .unwrap();
        assert_eq!(r["digest"], digest.as_str());
        let out = promote_cli(&s, &tess, "beta/app:1.4-beta", "release/app:1.4-release");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: testers do not release: {out:?}"
        );
        let olga = personal_token(&s, "olga", &["api"]);
        let out = promote_cli(
            &s,
            &olga,
            &format!("beta/app@{digest}"),
            "release/app:1.4-release",
        );
        assert!(out.status.success(), "{what}: {out:?}");

        // The same digest everywhere; the blobs are read through release; no file was added.
        let olga_reg = oci.token(Some(("olga", PASSWORD)), &["repository:release/app:pull"]);
        for (repo_name, tag) in [
            ("test/app", "1.4-test"),
            ("beta/app", "1.4-beta"),
            ("release/app", "1.4-release"),
        ] {
            let t = oci.token(
                Some(("admin", &s.token)),
                &[&format!("repository:{repo_name}:pull")],
            );
            let r = oci.call(
                "HEAD",
                &format!("/v2/{repo_name}/manifests/{tag}"),
                Some(&t),
                &[],
                b"",
            );
            assert_eq!(
                r.header("docker-content-digest"),
                digest,
                "{what}: {repo_name}:{tag}"
            );
        }
        let r = oci.call(
            "GET",
            &format!("/v2/release/app/blobs/{}", sha256(&layer_a)),
            Some(&olga_reg),
            &[],
            b"",
        );
        assert_eq!(r.body, layer_a);
        let r = oci.call(
            "GET",
            &format!("/v2/release/app/referrers/{digest}"),
            Some(&olga_reg),
            &[],
            b"",
        );
        assert_eq!(
            r.json()["manifests"][0]["digest"],
            sha256(sig.as_bytes()),
            "{what}: the signature came along"
        );
        assert_eq!(
            walk(&s.data.path().join("blobs")).len(),
            files_before,
            "{what}: no bytes copied"
        );

        // The audit log: who promoted which digest, where.
        let log = s.api().get("/api/v1/audit-log?per_page=100").unwrap();
        let promotions: Vec<&Value> = log["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "registry.promote")
            .collect();
        assert_eq!(promotions.len(), 3, "{what}: {log}");
        let text = serde_json::to_string(&promotions).unwrap();
        for needle in [
            "tess",
            "olga",
            "admin-token",
            "release/app:1.4-release",
            &digest,
        ] {
            assert!(text.contains(needle), "{what}: {needle} in {text}");
        }
    }
}

/// Whether the registry clients the job test uses are here; `GANTRY_REQUIRE_REGISTRY_TOOLS=1`
/// (set by scripts/test) makes their absence a failure.
fn tools(names: &[&str]) -> bool {
    let missing: Vec<&&str> = names
        .iter()
        .filter(|n| {
            !std::process::Command::new("sh")
                .args(["-c", &format!("command -v {n}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("GANTRY_REQUIRE_REGISTRY_TOOLS").as_deref() != Ok("1"),
        "GANTRY_REQUIRE_REGISTRY_TOOLS=1 but {missing:?} are missing"
    );
    eprintln!("skipped: {missing:?} not installed");
    false
}

#[test]
fn a_job_pushes_to_its_project_with_the_ci_registry_variables() {
    if !tools(&["skopeo", "umoci"]) {
        return;
    }
    let db = &backends("registry_job")[0];
    let s = Server::start(Options::new(db));
    let repo = Project::new(
        r#"push:
  script:
    - echo "registry=$CI_REGISTRY image=$CI_REGISTRY_IMAGE user=$CI_REGISTRY_USER"
    - umoci init --layout img && umoci new --image img:latest
    - skopeo copy --quiet --dest-tls-verify=false --dest-creds "$CI_REGISTRY_USER:$CI_REGISTRY_PASSWORD" oci:img:latest "docker://$CI_REGISTRY_IMAGE:built-by-ci"
    - if skopeo copy --quiet --dest-tls-verify=false --dest-creds "$CI_REGISTRY_USER:$CI_REGISTRY_PASSWORD" oci:img:latest "docker://$CI_REGISTRY/other/x:1"; then echo "pushed into another project"; exit 1; fi
    - echo "password=$CI_REGISTRY_PASSWORD"
"#,
    );
    repo.commit("init");
    let project = s.project("team/app", repo.path());
    s.project("other", repo.path());
    let p = s.pipeline(project, "main");
    let done = s.wait_pipeline(common::server::id(&p), std::time::Duration::from_secs(120));
    let job = common::server::job(&done, "push");
    let log = s.log(common::server::id(&job));
    assert_eq!(done["status"], "success", "{log}");
    let host = s.url.trim_start_matches("http://");
    assert!(
        log.contains(&format!(
            "registry={host} image={host}/team/app user=gitlab-ci-token"
        )),
        "{log}"
    );
    assert!(
        log.contains("password=[MASKED]"),
        "the job token is masked: {log}"
    );

    // The image is there, pushed by the job; the job's token no longer works.
    let oci = Oci::new(&s.url);
    let t = oci.token(Some(("admin", &s.token)), &["repository:team/app:pull"]);
    let r = oci.call("GET", "/v2/team/app/tags/list", Some(&t), &[], b"");
    assert_eq!(r.json()["tags"], json!(["built-by-ci"]), "{}", r.text());
    let pushed_by = s.sql("SELECT pushed_by FROM registry_tags");
    assert_eq!(
        pushed_by.trim(),
        format!("job:{}", common::server::id(&job))
    );
}

/// Image content of pusher `p`, image `i`: a unique layer and one every image shares.
fn layers(p: usize, i: usize) -> (Vec<u8>, Vec<u8>) {
    let unique = format!("pusher {p} image {i} ").repeat(2000).into_bytes();
    let shared = b"the base layer every image has".repeat(3000);
    (unique, shared)
}

#[test]
fn garbage_collection_removes_only_what_nothing_uses() {
    let db = &backends("registry_gc")[0];
    let (s, _repo) = setup(db);
    let oci = Oci::new(&s.url);
    let t = oci.token(
        Some(("admin", &s.token)),
        &[
            "repository:dev/a:pull,push,delete",
            "repository:dev/b:pull,push,delete",
        ],
    );
    let (ua, shared) = layers(0, 0);
    let (ub, _) = layers(0, 1);
    let a = oci.push_image(&t, "dev/a", "1", &[&ua, &shared]);
    let b = oci.push_image(&t, "dev/b", "1", &[&ub, &shared]);
    let orphan = b"pushed, never used by a manifest".repeat(100);
    assert_eq!(oci.push_blob(&t, "dev/a", &orphan).status, 201);
    assert_eq!(
        oci.call(
            "DELETE",
            &format!("/v2/dev/b/manifests/{b}"),
            Some(&t),
            &[],
            b""
        )
        .status,
        202
    );
    let files = || walk(&s.data.path().join("blobs")).len();
    let before = files();

    // Everything is younger than the grace period: nothing goes.
    let r = s.api().post("/api/v1/registry/gc", json!({})).unwrap();
    assert_eq!(r["blobs_removed"], 0, "{r}");
    assert_eq!(files(), before);

    // An hour later: dev/b's manifest and unique layer, and the orphan go; the shared layer
    // and config stay (dev/a uses them), and so does everything of dev/a.
    s.sql("UPDATE registry_blob_links SET created_at = 0");
    s.sql("UPDATE registry_blobs SET created_at = 0");
    let r = s.api().post("/api/v1/registry/gc", json!({})).unwrap();
    assert_eq!(r["blobs_removed"], 3, "{r}");
    assert_eq!(
        r["links_removed"], 4,
        "orphan in dev/a, config + 2 layers in dev/b: {r}"
    );
    assert_eq!(files(), before - 3);
    let r = oci.call("GET", "/v2/dev/a/manifests/1", Some(&t), &[], b"");
    assert_eq!(r.header("docker-content-digest"), a);
    let m = r.json();
    for l in m["layers"].as_array().unwrap() {
        let d = l["digest"].as_str().unwrap();
        let r = oci.call("GET", &format!("/v2/dev/a/blobs/{d}"), Some(&t), &[], b"");
        assert_eq!(sha256(&r.body), d);
    }
    for gone in [sha256(&orphan), sha256(&ub)] {
        let r = oci.call(
            "HEAD",
            &format!("/v2/dev/a/blobs/{gone}"),
            Some(&t),
            &[],
            b"",
        );
        assert_eq!(r.status, 404);
    }
    // The same bytes pushed again are stored again.
    assert_eq!(oci.push_blob(&t, "dev/b", &ub).status, 201);
    let r = oci.call(
        "GET",
        &format!("/v2/dev/b/blobs/{}", sha256(&ub)),
        Some(&t),
        &[],
        b"",
    );
    assert_eq!(r.body, ub);
}

#[test]
fn garbage_collection_while_pushes_happen_loses_nothing() {
    let db = &backends("registry_gc_online")[0];
    let mut opts = Options::new(db);
    opts.local_agent = false;
    // A two-second grace period: collection is as eager as it can be while still letting a
    // client put its manifest after its layers.
    opts.server_args = vec!["--registry-gc-grace".into(), "2".into()];
    let s = Server::start(opts);
    let repo = Project::new("job: {script: [true]}\n");
    repo.commit("init");
    s.project("dev", repo.path());
    let oci = Oci::new(&s.url);
    let scopes: Vec<String> = (0..4)
        .map(|p| format!("repository:dev/p{p}:pull,push,delete"))
        .collect();
    let scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let token = oci.token(Some(("admin", &s.token)), &scope_refs);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (api, stop) = (s.api(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            let mut removed = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = api.post("/api/v1/registry/gc", json!({})).unwrap();
                removed += r["blobs_removed"].as_u64().unwrap();
                runs += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            (runs, removed)
        })
    };
    // Four clients push 15 images each; every third image is deleted right away and pushed
    // again later (after its blobs became garbage), while the collector runs.
    let pushers: Vec<_> = (0..4)
        .map(|p| {
            let (oci, token) = (oci.clone(), token.clone());
            std::thread::spawn(move || {
                let name = format!("dev/p{p}");
                let mut kept = Vec::new();
                for i in 0..15 {
                    let (u, shared) = layers(p, i);
                    let d = oci.push_image(&token, &name, &format!("t{i}"), &[&u, &shared]);
                    if i % 3 == 0 {
                        let r = oci.call(
                            "DELETE",
                            &format!("/v2/{name}/manifests/{d}"),
                            Some(&token),
                            &[],
                            b"",
                        );
                        assert_eq!(r.status, 202);
                    } else {
                        kept.push((format!("t{i}"), d));
                    }
                    if i % 5 == 4 {
                        std::thread::sleep(std::time::Duration::from_millis(700));
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(2500));
                for i in (0..15).step_by(3) {
                    let (u, shared) = layers(p, i);
                    let d = oci.push_image(&token, &name, &format!("t{i}"), &[&u, &shared]);
                    kept.push((format!("t{i}"), d));
                }
                (name, kept)
            })
        })
        .collect();
    let mut images = Vec::new();
    for p in pushers {
        images.push(p.join().expect("every push succeeded"));
    }
    std::thread::sleep(std::time::Duration::from_millis(2500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (runs, removed) = collector.join().unwrap();
    assert!(runs >= 10, "the collector ran {runs} times");
    assert!(
        removed > 0,
        "it collected something (deleted images' blobs)"
    );

    for (name, kept) in images {
        assert_eq!(kept.len(), 15);
        for (tag, digest) in kept {
            let r = oci.call(
                "GET",
                &format!("/v2/{name}/manifests/{tag}"),
                Some(&token),
                &[],
                b"",
            );
            assert_eq!(r.header("docker-content-digest"), digest, "{name}:{tag}");
            let m = r.json();
            let blobs = std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap());
            for b in blobs {
                let d = b["digest"].as_str().unwrap();
                let r = oci.call(
                    "GET",
                    &format!("/v2/{name}/blobs/{d}"),
                    Some(&token),
                    &[],
                    b"",
                );
                assert_eq!(r.status, 200, "{name}:{tag} lost {d}");
                assert_eq!(sha256(&r.body), d, "{name}:{tag}: {d}'s bytes");
            }
        }
    }
}

#[test]
fn robot_accounts_work_in_their_project_until_revoked_or_expired() {
    let db = &backends("registry_robots")[0];
    let (s, _repo) = setup(db);
    let oci = Oci::new(&s.url);
    let scopes = [
        "repository:dev/app:pull,push",
        "repository:secret/x:pull,push",
    ];
    let make = |body: Value| {
        s.api()
            .post("/api/v1/projects/dev/robots", body)
            .unwrap_or_else(|e| panic!("robot: {e}"))
    };
    let ci = make(json!({"name": "ci", "actions": ["pull", "push"]}));
    assert_eq!(ci["username"], "robot$dev+ci");
    let ci_token = ci["token"].as_str().unwrap().to_string();
    let t = oci.token(Some(("robot$dev+ci", &ci_token)), &scopes);
    assert_eq!(actions(&t, "dev/app"), ["pull", "push"]);
    assert!(actions(&t, "secret/x").is_empty(), "only its own project");
    assert_eq!(
        oci.push_image(&t, "dev/app", "robot", &[b"layer"]).len(),
        71
    );

    let reader = make(json!({"name": "reader", "actions": ["pull"]}));
    let t = oci.token(
        Some(("robot$dev+reader", reader["token"].as_str().unwrap())),
        &scopes,
    );
    assert_eq!(actions(&t, "dev/app"), ["pull"]);

    // The token is shown once; the list has its hint only.
    let list = s.api().get("/api/v1/projects/dev/robots").unwrap();
    assert!(!list.to_string().contains(&ci_token), "{list}");
    assert_eq!(list[0]["hint"], &ci_token[..10]);
    // Another name with the token, a bad name, bad actions: refused.
    let r = oci.token_resp(Some(("robot$dev+other", &ci_token)), &scopes);
    assert_eq!(r.status, 401, "{}", r.text());
    for bad in [
        json!({"name": "Bad Name", "actions": ["pull"]}),
        json!({"name": "x", "actions": ["delete"]}),
        json!({"name": "ci", "actions": ["pull"]}),
    ] {
        let e = s
            .api()
            .post("/api/v1/projects/dev/robots", bad.clone())
            .unwrap_err();
        assert!(e.status == 400 || e.status == 409, "{bad}: {e}");
    }

    // Expiry and revocation end it, with the reason.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let brief = make(json!({"name": "brief", "actions": ["pull"], "expires_at": now + 1500}));
    let brief_token = brief["token"].as_str().unwrap();
    assert_eq!(
        oci.token_resp(Some(("robot$dev+brief", brief_token)), &scopes)
            .status,
        200
    );
    std::thread::sleep(std::time::Duration::from_millis(1600));
    let r = oci.token_resp(Some(("robot$dev+brief", brief_token)), &scopes);
    assert_eq!(r.status, 401);
    assert!(r.text().contains("has expired"), "{}", r.text());
    s.api()
        .delete(&format!("/api/v1/projects/dev/robots/{}", ci["id"]))
        .unwrap();
    let r = oci.token_resp(Some(("robot$dev+ci", &ci_token)), &scopes);
    assert_eq!(r.status, 401);
    assert!(r.text().contains("was revoked"), "{}", r.text());
}

#[test]
fn immutable_tags_stay_and_retention_removes_what_its_rules_say() {
    let db = &backends("registry_policy")[0];
    let (s, _repo) = setup(db);
    let oci = Oci::new(&s.url);
    let bad = s.api().put(
        "/api/v1/projects/dev/registry",
        json!({"public": false, "push_role": "developer", "promote_role": "maintainer",
               "policy": {"immutable_tags": ["[oops"]}}),
    );
    assert_eq!(bad.unwrap_err().status, 400);
    s.api()
        .put(
            "/api/v1/projects/dev/registry",
            json!({"public": false, "push_role": "developer", "promote_role": "developer",
            "policy": {
                "immutable_tags": ["v*", "1.*"],
                "mutable_tags": ["*-dev"],
                "retention": [
                    {"tags": "build-*", "keep_last": 2},
                    {"tags": "nightly-*", "pulled_within_days": 7}
                ]}}),
        )
        .unwrap();
    let t = oci.token(
        Some(("admin", &s.token)),
        &["repository:dev/app:pull,push,delete"],
    );
    let one = oci.push_image(&t, "dev/app", "v1.0", &[b"one"]);
    let two = oci.push_image(&t, "dev/app", "scratch", &[b"two"]);
    let two_bytes = oci
        .call("GET", "/v2/dev/app/manifests/scratch", Some(&t), &[], b"")
        .body;
    // v1.0 does not move, nor go; the same digest again is fine.
    let r = oci.put_manifest(&t, "dev/app", "v1.0", &two_bytes);
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "DENIED"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("immutable"), "{}", r.text());
    let one_bytes = oci
        .call(
            "GET",
            &format!("/v2/dev/app/manifests/{one}"),
            Some(&t),
            &[],
            b"",
        )
        .body;
    assert_eq!(
        oci.put_manifest(&t, "dev/app", "v1.0", &one_bytes).status,
        201
    );
    assert_eq!(
        oci.call("DELETE", "/v2/dev/app/manifests/v1.0", Some(&t), &[], b"")
            .status,
        403
    );
    assert_eq!(
        oci.call(
            "DELETE",
            &format!("/v2/dev/app/manifests/{one}"),
            Some(&t),
            &[],
            b""
        )
        .status,
        403
    );
    let e = s
        .api()
        .post(
            "/api/v1/registry/promote",
            json!({"source": "dev/app:scratch", "destination": "dev/app:v1.0"}),
        )
        .unwrap_err();
    assert_eq!(e.status, 403, "{e}");
    // Tags allowed to move do.
    assert_eq!(
        oci.put_manifest(&t, "dev/app", "1.4-dev", &one_bytes)
            .status,
        201
    );
    assert_eq!(
        oci.put_manifest(&t, "dev/app", "1.4-dev", &two_bytes)
            .status,
        201
    );
    assert_eq!(
        oci.call("HEAD", "/v2/dev/app/manifests/1.4-dev", Some(&t), &[], b"")
            .header("docker-content-digest"),
        two
    );

    // Retention: the last two builds stay, the nightly pulled lately stays.
    for tag in [
        "build-1",
        "build-2",
        "build-3",
        "build-4",
        "nightly-a",
        "nightly-b",
    ] {
        oci.push_image(&t, "dev/app", tag, &[tag.as_bytes()]);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        oci.call("GET", "/v2/dev/app/manifests/nightly-a", Some(&t), &[], b"")
            .status,
        200
    );
    common::server::wait_for(
        std::time::Duration::from_secs(10),
        "the pull recorded",
        || {
            (s.sql("SELECT COUNT(*) FROM registry_tags WHERE name = 'nightly-a' AND pulled_at IS NOT NULL") == "1").then_some(())
        },
    );
    let dry = s
        .api()
        .post(
            "/api/v1/projects/dev/registry/retention?dry_run=true",
            json!({}),
        )
        .unwrap();
    assert_eq!(
        dry["removed"],
        json!(["dev/app:build-1", "dev/app:build-2", "dev/app:nightly-b"]),
        "{dry}"
    );
    let tags = |oci: &Oci| {
        oci.call("GET", "/v2/dev/app/tags/list", Some(&t), &[], b"")
            .json()["tags"]
            .clone()
    };
    assert_eq!(
        tags(&oci).as_array().unwrap().len(),
        9,
        "a dry run removes nothing"
    );
    let done = s
        .api()
        .post("/api/v1/projects/dev/registry/retention", json!({}))
        .unwrap();
    assert_eq!(done["manifests_removed"], 3, "{done}");
    assert_eq!(
        tags(&oci),
        json!([
            "1.4-dev",
            "build-3",
            "build-4",
            "nightly-a",
            "scratch",
            "v1.0"
        ])
    );
    let log = s.api().get("/api/v1/audit-log?per_page=100").unwrap();
    assert!(log.to_string().contains("registry.retention"), "{log}");
}

#[test]
fn pushes_pulls_deletes_and_promotions_reach_the_projects_webhooks() {
    use common::fake::{bodies, fake, runtime};
    let rt = runtime();
    let db = &backends("registry_events")[0];
    let (s, repo) = setup(db);
    s.project("test", repo.path());
    let hook = fake(&rt, 200, json!({}));
    let slack = fake(&rt, 200, json!({}));
    let channel = |project: &str, body: Value| {
        s.api()
            .post(&format!("/api/v1/projects/{project}/notifications"), body)
            .unwrap_or_else(|e| panic!("channel: {e}"))
    };
    channel(
        "dev",
        json!({"kind": "generic", "url": format!("{}/hook", hook.uri()),
               "events": ["image_pushed", "image_pulled", "image_deleted"]}),
    );
    channel(
        "test",
        json!({"kind": "slack", "url": format!("{}/slack", slack.uri()), "events": ["image_promoted"]}),
    );
    let oci = Oci::new(&s.url);
    let alice = oci.token(Some(("alice", PASSWORD)), &["repository:dev/app:pull,push"]);
    let digest = oci.push_image(&alice, "dev/app", "1.0", &[b"event layer"]);
    assert_eq!(
        oci.call("GET", "/v2/dev/app/manifests/1.0", Some(&alice), &[], b"")
            .status,
        200
    );
    s.api()
        .post(
            "/api/v1/registry/promote",
            json!({"source": "dev/app:1.0", "destination": "test/app:1.0-test"}),
        )
        .unwrap();
    let admin = oci.token(Some(("admin", &s.token)), &["repository:dev/app:delete"]);
    assert_eq!(
        oci.call(
            "DELETE",
            "/v2/dev/app/manifests/1.0",
            Some(&admin),
            &[],
            b""
        )
        .status,
        202
    );

    let got = common::server::wait_for(std::time::Duration::from_secs(30), "three events", || {
        let b = bodies(&rt, &hook);
        (b.len() >= 3).then_some(b)
    });
    let mut events: Vec<(String, String, String)> = got
        .iter()
        .map(|b| {
            assert_eq!(b["repository"], "dev/app", "{b}");
            assert_eq!(b["digest"], digest.as_str(), "{b}");
            assert_eq!(b["project"]["path"], "dev", "{b}");
            (
                b["event"].as_str().unwrap().to_string(),
                b["tag"].as_str().unwrap_or("").to_string(),
                b["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            ("image_deleted".into(), "1.0".into(), "admin-token".into()),
            ("image_pulled".into(), "1.0".into(), "alice".into()),
            ("image_pushed".into(), "1.0".into(), "alice".into()),
        ]
    );
    let promoted =
        common::server::wait_for(std::time::Duration::from_secs(30), "a promotion", || {
            let b = bodies(&rt, &slack);
            (!b.is_empty()).then_some(b)
        });
    let text = promoted[0]["text"].as_str().unwrap();
    assert!(
        text.contains("test: test/app:1.0-test promoted by admin-token") && text.contains(&digest),
        "{text}"
    );
}

#[test]
fn gantry_registry_serves_the_registry_alone() {
    let db = &backends("registry_alone")[0];
    let mut opts = Options::new(db);
    opts.local_agent = false;
    opts.subcommand = "registry";
    let s = Server::start(opts);
    s.api()
        .post("/api/v1/projects", json!({"path": "images"}))
        .unwrap();
    user(&s, "alice");
    member(&s, "images", "alice", "developer");
    let oci = Oci::new(&s.url);
    let t = oci.token(
        Some(("alice", PASSWORD)),
        &["repository:images/app:pull,push"],
    );
    let d = oci.push_image(&t, "images/app", "1.0", &[b"alone"]);
    let r = oci.call("HEAD", "/v2/images/app/manifests/1.0", Some(&t), &[], b"");
    assert_eq!(r.header("docker-content-digest"), d);
    // What manages the registry is there; CI is not.
    assert!(s.api().get("/api/v1/projects/images/robots").is_ok());
    for path in ["/api/v1/agents", "/api/v1/projects/images/pipelines"] {
        assert_eq!(s.api().get(path).unwrap_err().status, 404, "{path}");
    }
}
