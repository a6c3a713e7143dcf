//! The S3 blob store against a real S3 implementation (PyPI's moto server, request signatures
//! checked): single and multipart puts, a put moved from a file, whole and ranged reads,
//! sizes, listing by prefix, deletes, missing blobs, a failed upload that leaves the old blob
//! and no parts, calls from async code, and the start-up check's errors for a wrong secret, a
//! missing bucket, an endpoint that does not answer and plain HTTP not allowed. What is in
//! the bucket is read back with boto3, not with the code under test.

mod support;

use gantry_store::StoreError;
use gantry_store::blob::BlobStore;
use gantry_store::blob::s3::{MIN_PART_SIZE, S3BlobStore, S3Settings};
use gantry_store::secrets::SecretString;
use gantry_testkit::s3::{Moto, REGION, moto_for_test};
use std::io::{self, Read};
use std::sync::Arc;
use support::noise;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Settings for moto's bucket under `url` (`s3://BUCKET[/PREFIX]`), parts of the smallest size.
fn settings(moto: &Moto, url: &str) -> S3Settings {
    let mut s = S3Settings::from_url(url).unwrap();
    s.endpoint = Some(moto.endpoint().to_string());
    s.region = Some(REGION.into());
    s.access_key_id = Some(moto.access_key_id().into());
    s.secret_access_key = Some(SecretString::from(moto.secret_access_key()));
    s.allow_http = Some(true);
    s.part_size = MIN_PART_SIZE;
    s
}

fn connect(rt: &tokio::runtime::Runtime, s: S3Settings) -> Result<S3BlobStore, StoreError> {
    rt.block_on(S3BlobStore::connect(s, rt.handle().clone()))
}

fn get(s: &dyn BlobStore, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    s.open(key).unwrap().read_to_end(&mut out).unwrap();
    out
}

fn get_at(s: &dyn BlobStore, key: &str, offset: u64) -> Vec<u8> {
    let mut out = Vec::new();
    s.open_at(key, offset)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn put_open_ranges_size_list_delete() {
    let Some(moto) = moto_for_test("put_open_ranges_size_list_delete").unwrap() else {
        return;
    };
    let rt = runtime();
    let bucket = moto.bucket().to_string();
    let store = connect(&rt, settings(&moto, &format!("s3://{bucket}/ci"))).unwrap();
    let s: &dyn BlobStore = &store;

    assert_eq!(s.put("artifacts/1.tar", &mut &b"one"[..]).unwrap(), 3);
    assert_eq!(s.put("artifacts/1.tar", &mut &b"second"[..]).unwrap(), 6);
    assert_eq!(get(s, "artifacts/1.tar"), b"second");
    assert_eq!(s.size("artifacts/1.tar").unwrap(), Some(6));
    assert!(s.exists("artifacts/1.tar").unwrap());
    assert_eq!(s.size("artifacts/2.tar").unwrap(), None);
    assert_eq!(s.size("artifacts").unwrap(), None, "a folder is no blob");
    assert!(matches!(
        s.open("artifacts/2.tar"),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.open_at("artifacts/2.tar", 5),
        Err(StoreError::NotFound(_))
    ));
    s.put("caches/3/empty.tar", &mut &b""[..]).unwrap();
    assert_eq!(get(s, "caches/3/empty.tar"), b"");
    assert_eq!(s.size("caches/3/empty.tar").unwrap(), Some(0));

    // A layer of two and a half parts, moved in from a file: three parts, the file gone.
    let big = noise(7, 2 * MIN_PART_SIZE + MIN_PART_SIZE / 2 + 123);
    let dir = tempfile::tempdir().unwrap();
    let upload = dir.path().join("upload");
    std::fs::write(&upload, &big).unwrap();
    let key = "registry/sha256/ab/abcdef";
    assert_eq!(s.put_moved(key, &upload, true).unwrap(), big.len() as u64);
    assert!(!upload.exists(), "the moved file is removed");
    assert!(get(s, key) == big, "the multipart blob reads back whole");
    assert_eq!(s.size(key).unwrap(), Some(big.len() as u64));
    let n = big.len() as u64;
    for offset in [
        1,
        1000,
        MIN_PART_SIZE as u64 - 1,
        MIN_PART_SIZE as u64,
        2 * MIN_PART_SIZE as u64 + 7,
        n - 1,
    ] {
        assert!(
            get_at(s, key, offset) == big[offset as usize..],
            "from {offset}"
        );
    }
    assert!(get_at(s, key, n).is_empty(), "at the end: nothing");
    assert!(get_at(s, key, n + 10).is_empty(), "past the end: nothing");
    // A reader taken part-way, as a range request does.
    let mut r = s.open_at(key, 100).unwrap().take(50);
    let mut part = Vec::new();
    r.read_to_end(&mut part).unwrap();
    assert_eq!(part, big[100..150]);

    // put_file leaves its file; put from a reader that is larger than a part.
    std::fs::write(&upload, b"from a file").unwrap();
    assert_eq!(s.put_file("caches/3/deps.tar", &upload).unwrap(), 11);
    assert!(upload.exists(), "the source stays");
    let streamed = noise(8, MIN_PART_SIZE + 1);
    assert_eq!(
        s.put("caches/30/x.tar", &mut &streamed[..]).unwrap(),
        streamed.len() as u64
    );
    assert!(get(s, "caches/30/x.tar") == streamed);
    s.put("sources/5/abc/def.tar", &mut &b"x"[..]).unwrap();

    assert_eq!(
        s.list("caches/3/").unwrap(),
        ["caches/3/deps.tar", "caches/3/empty.tar"]
    );
    assert_eq!(
        s.list("caches/3").unwrap(),
        ["caches/3/deps.tar", "caches/3/empty.tar", "caches/30/x.tar"]
    );
    assert_eq!(s.list("caches/3/de").unwrap(), ["caches/3/deps.tar"]);
    assert_eq!(s.list("sources/").unwrap(), ["sources/5/abc/def.tar"]);
    assert!(s.list("nothing/").unwrap().is_empty());
    assert_eq!(s.list("").unwrap().len(), 6, "{:?}", s.list(""));

    // In the bucket, everything is under the prefix, with the sizes put; no part is left.
    let objects = moto.objects(&bucket, "").unwrap();
    assert!(
        objects.iter().all(|(k, _)| k.starts_with("ci/")),
        "{objects:?}"
    );
    assert!(
        objects.contains(&(format!("ci/{key}"), big.len() as u64)),
        "{objects:?}"
    );
    assert_eq!(objects.len(), 6, "{objects:?}");
    assert!(moto.unfinished_uploads(&bucket).unwrap().is_empty());

    s.delete("caches/3/deps.tar").unwrap();
    s.delete("caches/3/deps.tar").unwrap();
    s.delete("never/was.tar").unwrap();
    assert_eq!(s.list("caches/3/").unwrap(), ["caches/3/empty.tar"]);
    assert!(
        !moto
            .objects(&bucket, "ci/caches/3/deps")
            .unwrap()
            .iter()
            .any(|(k, _)| k.ends_with("deps.tar"))
    );

    // Keys that name something outside the store are refused before any request.
    for bad in ["../outside", "/abs", "a//b", ".tmp/x", ""] {
        let conflict = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Conflict(_)));
        assert!(conflict(s.put(bad, &mut &b"x"[..]).map(drop)), "{bad:?}");
        assert!(conflict(s.open(bad).map(drop)), "{bad:?}");
        assert!(conflict(s.size(bad).map(drop)), "{bad:?}");
        assert!(conflict(s.delete(bad)), "{bad:?}");
    }
}

/// A reader that fails after `.0` bytes, as a broken upload does.
struct Broken(usize);

impl Read for Broken {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0 == 0 {
            return Err(io::Error::other("connection reset"));
        }
        let n = buf.len().min(self.0);
        buf[..n].fill(b'x');
        self.0 -= n;
        Ok(n)
    }
}

#[test]
fn a_failed_put_keeps_the_old_blob_and_leaves_no_parts() {
    let Some(moto) = moto_for_test("a_failed_put_keeps_the_old_blob_and_leaves_no_parts").unwrap()
    else {
        return;
    };
    let rt = runtime();
    let bucket = moto.bucket().to_string();
    let s = connect(&rt, settings(&moto, &format!("s3://{bucket}"))).unwrap();
    s.put("k/a.tar", &mut &b"old"[..]).unwrap();
    // Broken in the second part: the first was sent, then the upload is aborted.
    let err = s
        .put("k/a.tar", &mut Broken(MIN_PART_SIZE + MIN_PART_SIZE / 2))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("reading the data for the blob k/a.tar"),
        "{err}"
    );
    assert_eq!(get(&s, "k/a.tar"), b"old");
    // Broken in the first part: nothing was sent.
    assert!(s.put("k/new.tar", &mut Broken(10)).is_err());
    assert!(!s.exists("k/new.tar").unwrap());
    assert_eq!(s.list("").unwrap(), ["k/a.tar"]);
    assert_eq!(
        moto.objects(&bucket, "").unwrap(),
        [("k/a.tar".to_string(), 3)]
    );
    assert!(
        moto.unfinished_uploads(&bucket).unwrap().is_empty(),
        "the failed multipart upload was aborted"
    );
}

/// As the server calls it: from blocking threads of the runtime whose handle the store has,
/// several at once, and (by mistake) from a task on a worker thread.
#[test]
fn calls_from_the_runtime_s_threads() {
    let Some(moto) = moto_for_test("calls_from_the_runtime_s_threads").unwrap() else {
        return;
    };
    let rt = runtime();
    let bucket = moto.bucket().to_string();
    let s: Arc<dyn BlobStore> =
        Arc::new(connect(&rt, settings(&moto, &format!("s3://{bucket}/x"))).unwrap());
    let sums = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..6u64 {
            let s = s.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                let data = noise(i, 300_000 + i as usize);
                let key = format!("artifacts/{i}.tar");
                s.put(&key, &mut &data[..]).unwrap();
                let back = {
                    let mut v = Vec::new();
                    s.open(&key).unwrap().read_to_end(&mut v).unwrap();
                    v
                };
                back == data
            }));
        }
        let mut ok = Vec::new();
        for t in tasks {
            ok.push(t.await.unwrap());
        }
        // On a worker thread, not a blocking one.
        let s2 = s.clone();
        let on_worker = tokio::spawn(async move { s2.size("artifacts/3.tar").unwrap() })
            .await
            .unwrap();
        (ok, on_worker)
    });
    assert_eq!(sums.0, [true; 6]);
    assert_eq!(sums.1, Some(300_003));
    assert_eq!(s.list("artifacts/").unwrap().len(), 6);
}

#[test]
fn the_start_up_check_says_what_is_wrong() {
    let Some(moto) = moto_for_test("the_start_up_check_says_what_is_wrong").unwrap() else {
        return;
    };
    let rt = runtime();
    let bucket = moto.bucket().to_string();

    // A wrong secret: moto checks the signature.
    let mut wrong = settings(&moto, &format!("s3://{bucket}"));
    wrong.secret_access_key = Some(SecretString::from("not-the-secret-at-all"));
    let e = connect(&rt, wrong).unwrap_err().to_string();
    assert!(e.contains("refused the credentials"), "{e}");
    assert!(e.contains("AWS_SECRET_ACCESS_KEY"), "{e}");
    assert!(
        !e.contains("not-the-secret-at-all"),
        "no secret in messages: {e}"
    );
    assert!(!e.contains(moto.secret_access_key()), "{e}");
    // An unknown key id.
    let mut unknown = settings(&moto, &format!("s3://{bucket}"));
    unknown.access_key_id = Some("AKIAUNKNOWNKEY000000".into());
    let e = connect(&rt, unknown).unwrap_err().to_string();
    assert!(e.contains("refused the credentials"), "{e}");

    // A bucket that does not exist.
    let e = connect(&rt, settings(&moto, "s3://no-such-bucket/p"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the bucket \"no-such-bucket\" does not exist"),
        "{e}"
    );
    // Made, it works (and a prefix of several levels is fine).
    moto.create_bucket("made-later").unwrap();
    let s = connect(&rt, settings(&moto, "s3://made-later/a/b")).unwrap();
    s.put("k", &mut &b"v"[..]).unwrap();
    assert_eq!(
        moto.objects("made-later", "").unwrap(),
        [("a/b/k".to_string(), 1)],
        "the start-up check leaves nothing behind"
    );

    // Nothing listens there: a quick, clear failure.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut nowhere = settings(&moto, &format!("s3://{bucket}"));
    nowhere.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let started = std::time::Instant::now();
    let e = connect(&rt, nowhere).unwrap_err().to_string();
    assert!(e.contains("could not be reached"), "{e}");
    assert!(e.contains("AWS_ENDPOINT_URL"), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    // Plain HTTP must be allowed explicitly.
    let mut http = settings(&moto, &format!("s3://{bucket}"));
    http.allow_http = Some(false);
    let e = connect(&rt, http).unwrap_err().to_string();
    assert!(
        e.contains("is plain HTTP") && e.contains("AWS_ALLOW_HTTP"),
        "{e}"
    );

    // Parts S3 would refuse.
    let mut small = settings(&moto, &format!("s3://{bucket}"));
    small.part_size = 1 << 20;
    let e = connect(&rt, small).unwrap_err().to_string();
    assert!(e.contains("smaller than"), "{e}");
}
