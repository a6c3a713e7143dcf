//! `gantry server` and `gantry registry` with their blobs in S3-compatible object storage
//! (`--blob-store s3://BUCKET/PREFIX` against PyPI's moto, request signatures checked): an
//! image pushed request by request (a layer of several multipart parts) and by skopeo, pulled
//! back byte for byte, a range read, a promotion that adds no object, garbage collection
//! removing an unused blob's object, CI artifacts and caches in the bucket, the secret key
//! from a file, and the start-up errors for a wrong secret and a missing bucket. What is in
//! the bucket is read with boto3, not with Gantry's code. On SQLite and PostgreSQL.
//!
//! moto missing: skipped with a note, unless `GANTRY_REQUIRE_REGISTRY_TOOLS=1`.

mod common;

use common::Project;
use common::oci::{Oci, sha256};
use common::registry::{personal_token, project_target, user};
use common::server::{Backend, Options, Server, backends, id, job};
use gantry_testkit::registry::{check_skopeo_round_trip, seeded_bytes, tools_for_test};
use gantry_testkit::s3::{Moto, moto_for_test};
use serde_json::json;
use std::time::Duration;

const PREFIX: &str = "gantry";
/// S3's smallest part, so that a 12 MiB layer is three parts.
const PART: usize = 5 * 1024 * 1024;

/// A server whose blobs are in moto's bucket under `PREFIX/`.
fn options(db: &Backend, moto: &Moto, subcommand: &'static str) -> Options {
    let mut opts = Options::new(db);
    opts.subcommand = subcommand;
    opts.server_args = vec![
        "--blob-store".into(),
        format!("s3://{}/{PREFIX}", moto.bucket()),
        "--s3-part-size".into(),
        PART.to_string(),
    ];
    opts.server_env = moto.env();
    opts
}

/// The bucket's objects under `PREFIX/` (keys without it) and their sizes.
fn objects(moto: &Moto, under: &str) -> Vec<(String, u64)> {
    moto.objects(moto.bucket(), &format!("{PREFIX}/{under}"))
        .unwrap()
        .into_iter()
        .map(|(k, n)| (k[PREFIX.len() + 1..].to_string(), n))
        .collect()
}

fn blob_key(digest: &str) -> String {
    let hex = digest.trim_start_matches("sha256:");
    format!("registry/sha256/{}/{hex}", &hex[..2])
}

fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.flatten()
            .map(|e| {
                if e.path().is_dir() {
                    files_under(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

#[test]
fn registry_blobs_live_in_the_bucket() {
    for db in backends("registry_s3") {
        let Some(moto) = moto_for_test("registry_blobs_live_in_the_bucket").unwrap() else {
            return;
        };
        let what = db.name();
        let mut opts = options(&db, &moto, "server");
        opts.local_agent = false;
        let s = Server::start(opts);
        for p in ["dev", "test"] {
            s.api()
                .post("/api/v1/projects", json!({"path": p}))
                .unwrap_or_else(|e| panic!("{p}: {e}"));
        }
        let oci = Oci::new(&s.url);
        let t = oci.token(
            Some(("admin", &s.token)),
            &[
                "repository:dev/app:pull,push,delete",
                "repository:test/app:pull",
            ],
        );

        // A layer of two and a half parts, and a small one.
        let big = seeded_bytes(11, 2 * PART + PART / 2 + 77);
        let small = b"a small layer".repeat(100);
        let digest = oci.push_image(&t, "dev/app", "1.0", &[&big, &small]);
        let stored = objects(&moto, "registry/");
        for (d, n) in [(sha256(&big), big.len()), (sha256(&small), small.len())] {
            assert!(
                stored.contains(&(blob_key(&d), n as u64)),
                "{what}: {d} in the bucket: {stored:?}"
            );
        }
        assert!(
            stored.iter().any(|(k, _)| *k == blob_key(&digest)),
            "{what}: the manifest too: {stored:?}"
        );
        assert_eq!(
            files_under(&s.data.path().join("blobs")),
            0,
            "{what}: no blob on the server's disk"
        );
        assert_eq!(
            files_under(&s.data.path().join("registry-uploads")),
            0,
            "{what}: uploads were moved into the bucket"
        );
        assert!(moto.unfinished_uploads(moto.bucket()).unwrap().is_empty());

        // Pulled back: the manifest, then each blob, byte for byte.
        let r = oci.call("GET", "/v2/dev/app/manifests/1.0", Some(&t), &[], b"");
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        assert_eq!(sha256(&r.body), digest);
        let m = r.json();
        for l in m["layers"].as_array().unwrap() {
            let d = l["digest"].as_str().unwrap();
            let r = oci.call("GET", &format!("/v2/dev/app/blobs/{d}"), Some(&t), &[], b"");
            assert_eq!(r.status, 200, "{what}");
            assert_eq!(sha256(&r.body), d, "{what}");
        }
        // A range across the first part's end.
        let (a, b) = (PART - 10, PART + 20);
        let r = oci.call(
            "GET",
            &format!("/v2/dev/app/blobs/{}", sha256(&big)),
            Some(&t),
            &[("Range", &format!("bytes={a}-{b}"))],
            b"",
        );
        assert_eq!(r.status, 206, "{what}: {}", r.text());
        assert_eq!(r.body, big[a..=b], "{what}");
        assert_eq!(
            r.header("content-range"),
            format!("bytes {a}-{b}/{}", big.len())
        );

        // Promotion links; it adds no object.
        let before = objects(&moto, "");
        let p = s
            .api()
            .post(
                "/api/v1/registry/promote",
                json!({"source": "dev/app:1.0", "destination": "test/app:1.0"}),
            )
            .unwrap();
        assert_eq!(p["digest"], digest.as_str(), "{what}");
        assert_eq!(objects(&moto, ""), before, "{what}: no bytes moved");
        let r = oci.call(
            "GET",
            &format!("/v2/test/app/blobs/{}", sha256(&big)),
            Some(&t),
            &[],
            b"",
        );
        assert!(r.body == big, "{what}: read through test/app");

        // Garbage collection removes an unused blob's object, and only it.
        let orphan = b"pushed, never used by a manifest".repeat(100);
        assert_eq!(oci.push_blob(&t, "dev/app", &orphan).status, 201);
        let orphan_key = blob_key(&sha256(&orphan));
        assert!(
            objects(&moto, "registry/")
                .iter()
                .any(|(k, _)| *k == orphan_key)
        );
        s.sql("UPDATE registry_blob_links SET created_at = 0");
        s.sql("UPDATE registry_blobs SET created_at = 0");
        let r = s.api().post("/api/v1/registry/gc", json!({})).unwrap();
        assert_eq!(r["blobs_removed"], 1, "{what}: {r}");
        let after = objects(&moto, "");
        assert!(
            !after.iter().any(|(k, _)| *k == orphan_key),
            "{what}: {after:?}"
        );
        assert_eq!(after, before, "{what}: everything else stays");
        let r = oci.call(
            "GET",
            &format!("/v2/dev/app/blobs/{}", sha256(&big)),
            Some(&t),
            &[],
            b"",
        );
        assert!(r.body == big, "{what}");

        // A real client's chunked uploads land there too.
        if tools_for_test("skopeo against gantry on S3", &["skopeo", "umoci"]).unwrap() {
            let dev = user(&s, "dev", "correct horse battery", true);
            let pat = personal_token(&s, &dev, &["read_registry", "write_registry"]);
            let (target, _repo) = project_target(&s, "team", pat);
            let before = objects(&moto, "registry/").len();
            let d = check_skopeo_round_trip(&target, "app")
                .unwrap_or_else(|e| panic!("{e:#}\nserver log:\n{}", s.stderr_text()));
            assert!(
                objects(&moto, "registry/")
                    .iter()
                    .any(|(k, _)| *k == blob_key(&d)),
                "{what}"
            );
            assert_eq!(
                objects(&moto, "registry/").len(),
                before + 5,
                "{what}: three layers, a config, a manifest"
            );
        }
    }
}

#[test]
fn ci_artifacts_and_caches_live_in_the_bucket() {
    for db in backends("ci_s3") {
        let Some(moto) = moto_for_test("ci_artifacts_and_caches_live_in_the_bucket").unwrap()
        else {
            return;
        };
        let what = db.name();
        let s = Server::start(options(&db, &moto, "server"));
        let repo = Project::new(
            "stages: [build, test]\n\
             build:\n  stage: build\n  cache: {key: deps, paths: [deps/]}\n  \
             script:\n    - mkdir -p out deps\n    - echo artifact-from-build > out/a.txt\n    - head -c 6000000 /dev/urandom > out/big.bin\n    - echo cached-deps > deps/d.txt\n  \
             artifacts:\n    paths: [out/]\n\
             test:\n  stage: test\n  cache: {key: deps, paths: [deps/], policy: pull}\n  \
             script: [cat out/a.txt, cat deps/d.txt]\n",
        );
        let project = s.project("team/app", repo.path());
        let p = s.pipeline(project, "main");
        let done = s.wait_pipeline(id(&p), Duration::from_secs(120));
        let test = job(&done, "test");
        let log = s.log(id(&test));
        assert_eq!(done["status"], "success", "{what}: {log}");
        assert!(
            log.contains("artifact-from-build") && log.contains("cached-deps"),
            "{what}: {log}"
        );

        let build = id(&job(&done, "build"));
        // Over a part: uploaded in parts as the agent's request streamed in.
        let artifacts = objects(&moto, "artifacts/");
        assert!(
            artifacts
                .iter()
                .any(|(k, n)| *k == format!("artifacts/{build}.tar") && *n > PART as u64),
            "{what}: {artifacts:?}"
        );
        let caches = objects(&moto, "caches/");
        assert_eq!(caches.len(), 1, "{what}: {caches:?}");
        assert!(caches[0].0.starts_with("caches/"), "{what}: {caches:?}");
        assert_eq!(
            files_under(&s.data.path().join("blobs")),
            0,
            "{what}: no blob on the server's disk"
        );
        // Downloaded through the API: the archive from the bucket.
        let (status, _, body) = s
            .api()
            .get_raw(&format!("/api/v1/jobs/{build}/artifacts"), &[]);
        assert_eq!(status, 200, "{what}");
        // A plain tar: the file's name and content are in it as they are.
        let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        assert!(
            has(b"out/a.txt") && has(b"artifact-from-build\n"),
            "{what}: {} bytes",
            body.len()
        );
    }
}

/// `gantry registry` takes the same flags; the secret key from a file; what a wrong secret or
/// a missing bucket says, before the server listens.
#[test]
fn gantry_registry_on_s3_and_its_start_up_errors() {
    let Some(moto) = moto_for_test("gantry_registry_on_s3_and_its_start_up_errors").unwrap() else {
        return;
    };
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        secret_file.path(),
        format!("{}\n", moto.secret_access_key()),
    )
    .unwrap();
    let env_without_secret = || -> Vec<(String, String)> {
        moto.env()
            .into_iter()
            .filter(|(k, _)| k != "AWS_SECRET_ACCESS_KEY")
            .collect()
    };

    let mut opts = options(&Backend::Sqlite, &moto, "registry");
    opts.local_agent = false;
    opts.server_env = env_without_secret();
    opts.server_args.extend([
        "--s3-secret-access-key-file".into(),
        secret_file.path().display().to_string(),
    ]);
    let s = Server::start(opts);
    s.api()
        .post("/api/v1/projects", json!({"path": "images"}))
        .unwrap();
    let oci = Oci::new(&s.url);
    let t = oci.token(
        Some(("admin", &s.token)),
        &["repository:images/app:pull,push"],
    );
    let d = oci.push_image(&t, "images/app", "1.0", &[b"alone"]);
    assert!(
        objects(&moto, "registry/")
            .iter()
            .any(|(k, _)| *k == blob_key(&d))
    );
    drop(s);

    let start = |args: &[&str], env: Vec<(String, String)>| -> (bool, String, String) {
        let data = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
            .arg("registry")
            .arg("--data-dir")
            .arg(data.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("GANTRY_DATABASE_URL")
            .envs(env)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let location = format!("s3://{}/{PREFIX}", moto.bucket());

    // A wrong secret: refused, said so, and the secret is not printed.
    let mut env = env_without_secret();
    env.push((
        "AWS_SECRET_ACCESS_KEY".into(),
        "wrong-secret-0123456789".into(),
    ));
    let (ok, stdout, stderr) = start(&["--blob-store", &location], env);
    assert!(!ok, "{stderr}");
    assert!(
        !stdout.contains("listening on"),
        "nothing listens: {stdout}"
    );
    assert!(stderr.contains("refused the credentials"), "{stderr}");
    assert!(stderr.contains("AWS_SECRET_ACCESS_KEY"), "{stderr}");
    assert!(!stderr.contains("wrong-secret-0123456789"), "{stderr}");

    // A bucket that does not exist.
    let (ok, _, stderr) = start(&["--blob-store", "s3://no-such-bucket"], moto.env());
    assert!(!ok);
    assert!(
        stderr.contains("the bucket \"no-such-bucket\" does not exist"),
        "{stderr}"
    );

    // Something else than a directory or S3; S3 options without S3.
    let (ok, _, stderr) = start(&["--blob-store", "gs://bucket"], moto.env());
    assert!(
        !ok && stderr.contains("only s3://BUCKET[/PREFIX]"),
        "{stderr}"
    );
    let (ok, _, stderr) = start(&["--s3-region", "eu-west-1"], vec![]);
    assert!(
        !ok && stderr.contains("need --blob-store s3://"),
        "{stderr}"
    );
}
