//! The blob store in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, Garage, R2, …),
//! through the `object_store` crate (Apache Arrow's), for deployments that keep no state on
//! the server's disk: `gantry server --blob-store s3://BUCKET[/PREFIX]`.
//!
//! A blob is the object `{PREFIX}/{key}` of the bucket; the keys are those of
//! [`FsBlobStore`](super::FsBlobStore) (`artifacts/12.tar`, `registry/sha256/…`).
//!
//! # Atomicity
//!
//! S3 makes an object visible whole or not at all: a single `PUT` and the completion of a
//! multipart upload are each atomic per object, so a reader sees the old blob or the new one,
//! never a part of one. A put that fails (the source broke, the network did) aborts its
//! multipart upload, and the previous object stays as it was. Parts of an upload that a crash
//! left behind are invisible to every read and list; a lifecycle rule on the bucket
//! (`AbortIncompleteMultipartUpload`) removes them (see the README).
//!
//! # Streaming
//!
//! Nothing holds a whole blob in memory. A put sends a blob smaller than one part
//! ([`DEFAULT_PART_SIZE`], 8 MiB) in one `PUT`, and a larger one as a multipart upload read from
//! its source a part at a time with at most [`PARTS_IN_FLIGHT`] parts being sent at once (a
//! 256 MiB layer holds about 32 MiB while it goes). A read is one `GET` (ranged for
//! [`BlobStore::open_at`]) whose body is handed on as it arrives; a body cut off mid-way is
//! resumed by `object_store` from where it stopped, checked against the object's ETag.
//!
//! # Sync over async
//!
//! [`BlobStore`] is synchronous (see the module above for why) and the server calls it from
//! `spawn_blocking` threads; `object_store` is async. Each call here runs its future to the
//! end with `Handle::block_on` on the server's runtime: the calling thread is a blocking
//! thread that would have waited for a file anyway, the HTTP connections and the multipart
//! parts' tasks run on the runtime's workers, and no second runtime (with threads and
//! connection pools of its own) is made. Should a caller forget `spawn_blocking`,
//! `block_in_place` first hands its worker's other tasks to another worker, so the call still
//! works on the multi-threaded runtime instead of panicking.
//!
//! # Configuration
//!
//! [`S3Settings`] starts from the standard AWS environment (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_ALLOW_HTTP`, and the web identity, container and instance credentials
//! `object_store` knows); what the settings name explicitly wins. [`S3BlobStore::connect`]
//! lists the bucket and writes and deletes a small object before it answers, so that a wrong
//! endpoint, bucket or credential stops the server at start-up with what to check instead of
//! failing the first push.

use super::{BlobStore, check_key};
use crate::{Result, StoreError};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientConfigKey, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};
use secrecy::{ExposeSecret, SecretString};
use std::future::Future;
use std::io::{self, Read};
use std::time::Duration;
use tokio::runtime::Handle;

/// The size of a multipart upload's parts: S3 wants at least 5 MiB (but for the last) and at
/// most 10,000 parts, so blobs up to 80 GB.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;

/// The smallest part S3 accepts.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// How many parts of one upload are sent at once.
pub const PARTS_IN_FLIGHT: usize = 3;

/// The object [`S3BlobStore::connect`] writes and deletes to check that it may write.
const PROBE: &str = ".gantry-startup-check";

/// Where the blobs go and how to reach it. `Debug` never shows the secret key.
#[derive(Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// `""`, or a path ending in `/` that every key is put under.
    pub prefix: String,
    /// `https://s3.example.com` [default: `AWS_ENDPOINT_URL`, else AWS's endpoint of the
    /// region].
    pub endpoint: Option<String>,
    /// [default: `AWS_REGION`, else `us-east-1`].
    pub region: Option<String>,
    /// [default: `AWS_ACCESS_KEY_ID`, else the environment's other credential sources].
    pub access_key_id: Option<String>,
    /// [default: `AWS_SECRET_ACCESS_KEY`].
    pub secret_access_key: Option<SecretString>,
    /// Allow an `http://` endpoint [default: `AWS_ALLOW_HTTP`, else no].
    pub allow_http: Option<bool>,
    /// See [`DEFAULT_PART_SIZE`]; at least [`MIN_PART_SIZE`].
    pub part_size: usize,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field("allow_http", &self.allow_http)
            .field("part_size", &self.part_size)
            .finish()
    }
}

impl S3Settings {
    /// Reads `s3://BUCKET[/PREFIX]`; everything else at its default.
    pub fn from_url(url: &str) -> Result<S3Settings> {
        let bad = |why: &str| {
            StoreError::Conflict(format!(
                "{url:?} is not an S3 location: {why} (write s3://BUCKET or s3://BUCKET/PREFIX)"
            ))
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it does not start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !bucket_ok {
            return Err(bad(&format!(
                "the bucket name {bucket:?} is not one S3 allows (3 to 63 lower-case letters, digits, '-' and '.')"
            )));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() && check_key(prefix).is_err() {
            return Err(bad(&format!(
                "the prefix {prefix:?} is not a plain path (names separated by single '/', no '..')"
            )));
        }
        Ok(S3Settings {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: None,
            part_size: DEFAULT_PART_SIZE,
        })
    }

    /// `s3://BUCKET/PREFIX`, for messages.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn builder(&self, retry: RetryConfig) -> AmazonS3Builder {
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_retry(retry)
            // A whole GET may take long (a large layer to a slow client, which reads at its
            // pace): no overall limit on it, but a connection that stays silent for a minute
            // is retried, from the byte it stopped at. Part uploads send 8 MiB each.
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                "10 minutes",
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ReadTimeout),
                "60 seconds",
            );
        if let Some(e) = &self.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &self.region {
            b = b.with_region(r);
        }
        if let Some(k) = &self.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &self.secret_access_key {
            b = b.with_secret_access_key(s.expose_secret());
        }
        if let Some(h) = self.allow_http {
            b = b.with_allow_http(h);
        }
        b
    }
}

/// Blobs as objects in an S3 bucket. See the module's documentation.
pub struct S3BlobStore {
    store: AmazonS3,
    handle: Handle,
    settings: S3Settings,
    endpoint: String,
}

impl std::fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("location", &self.settings.url())
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// An `object_store` error as the store's, with what was being done.
fn remote(what: impl Into<String>, e: object_store::Error) -> StoreError {
    StoreError::Remote {
        what: what.into(),
        source: Box::new(e),
    }
}

impl S3BlobStore {
    /// Connects to the bucket with `settings` and checks, with a list, a small write and its
    /// delete (a few seconds at most, not the minutes of retries the store makes later), that
    /// the endpoint answers, the bucket exists and the credentials may read and write it;
    /// otherwise an error that says what to check. The calls of the store run on `handle`'s
    /// runtime (see the module's documentation).
    pub async fn connect(settings: S3Settings, handle: Handle) -> Result<S3BlobStore> {
        let location = settings.url();
        let config =
            |why: String| StoreError::Conflict(format!("the blob store {location}: {why}"));
        if settings.part_size < MIN_PART_SIZE {
            return Err(config(format!(
                "parts of {} bytes are smaller than the {MIN_PART_SIZE} S3 accepts",
                settings.part_size
            )));
        }
        let builder = settings.builder(RetryConfig::default());
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .unwrap_or_else(|| {
                let region = builder
                    .get_config_value(&AmazonS3ConfigKey::Region)
                    .unwrap_or_else(|| "us-east-1".into());
                format!("https://s3.{region}.amazonaws.com")
            });
        let allow_http = builder
            .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if endpoint.starts_with("http://") && !allow_http {
            return Err(config(format!(
                "the endpoint {endpoint} is plain HTTP: set AWS_ALLOW_HTTP=true (or --s3-allow-http) to use it, or give its https:// address"
            )));
        }
        let store = builder
            .build()
            .map_err(|e| config(format!("{e} (check AWS_ENDPOINT_URL, AWS_REGION and the credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")))?;
        // The check: retried briefly, so a wrong address fails in seconds.
        let quick = settings
            .builder(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                ..RetryConfig::default()
            })
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "5 seconds",
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                "20 seconds",
            )
            .build()
            .map_err(|e| config(e.to_string()))?;
        let s = S3BlobStore {
            store,
            handle,
            settings,
            endpoint,
        };
        s.check(&quick).await?;
        Ok(s)
    }

    /// The bucket, the prefix and the endpoint, for messages (no credential).
    pub fn describe(&self) -> String {
        format!("{} at {}", self.settings.url(), self.endpoint)
    }

    async fn check(&self, quick: &AmazonS3) -> Result<()> {
        let (location, endpoint) = (self.settings.url(), &self.endpoint);
        let explain = |step: &str, e: object_store::Error| {
            let hint = match Trouble::of(&e) {
                Trouble::NoBucket => format!(
                    "the bucket {:?} does not exist at {endpoint}: create it, or check the bucket name and AWS_ENDPOINT_URL / AWS_REGION",
                    self.settings.bucket
                ),
                Trouble::Credentials => format!(
                    "{endpoint} refused the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the role the server runs as) and that they may {step} in the bucket {:?}",
                    self.settings.bucket
                ),
                Trouble::Unreachable => format!(
                    "{endpoint} could not be reached: check AWS_ENDPOINT_URL (AWS_ALLOW_HTTP=true for http://), AWS_REGION, and that this machine reaches it"
                ),
                Trouble::Other => format!(
                    "{endpoint} did not answer as S3 does: check AWS_ENDPOINT_URL (AWS_ALLOW_HTTP=true for http://), AWS_REGION, that the server reaches it, and the credentials"
                ),
            };
            StoreError::Conflict(format!(
                "the blob store {location} is not usable: {hint}. ({step}: {e})"
            ))
        };
        let base = match self.settings.prefix.trim_end_matches('/') {
            "" => None,
            p => Some(ObjectPath::parse(p).map_err(|e| {
                StoreError::Conflict(format!("the prefix of {location} is not valid: {e}"))
            })?),
        };
        quick
            .list_with_delimiter(base.as_ref())
            .await
            .map_err(|e| explain("list objects", e))?;
        let probe = self.object_path(PROBE)?;
        quick
            .put(
                &probe,
                PutPayload::from_static(b"gantry checks that it may write here\n"),
            )
            .await
            .map_err(|e| explain("write objects", e))?;
        quick
            .delete(&probe)
            .await
            .map_err(|e| explain("delete objects", e))?;
        Ok(())
    }

    /// The object's path of a key (checked) or of the prefix's folder.
    fn object_path(&self, key: &str) -> Result<ObjectPath> {
        ObjectPath::parse(format!("{}{key}", self.settings.prefix))
            .map_err(|e| StoreError::Conflict(format!("{key:?} is not a valid object key: {e}")))
    }

    fn key_path(&self, key: &str) -> Result<ObjectPath> {
        check_key(key)?;
        self.object_path(key)
    }

    /// Runs a future to its end from a synchronous caller (see the module's documentation).
    fn wait<F: Future>(&self, f: F) -> F::Output {
        wait_on(&self.handle, f)
    }

    /// Appends up to `want` bytes of `data` to `buf` (fewer only at the end of `data`).
    fn fill(key: &str, data: &mut dyn Read, buf: &mut Vec<u8>, want: usize) -> Result<()> {
        match data.take(want as u64).read_to_end(buf) {
            Ok(_) => Ok(()),
            // The source failed (a broken upload): not the store.
            Err(e) => Err(StoreError::Io {
                what: format!("reading the data for the blob {key}"),
                source: e,
            }),
        }
    }

    /// The multipart upload of a blob whose first part is `first` (full), the rest from
    /// `data`. Aborted (its parts removed) on any error.
    fn put_multipart(
        &self,
        key: &str,
        path: &ObjectPath,
        first: Vec<u8>,
        data: &mut dyn Read,
    ) -> Result<u64> {
        let part = self.settings.part_size;
        let upload = self
            .wait(self.store.put_multipart(path))
            .map_err(|e| remote(format!("starting the upload of the blob {key}"), e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, part);
        // `put` spawns each full part's request as a task: on the runtime.
        let put = |w: &mut WriteMultipart, bytes: Vec<u8>| {
            let _runtime = self.handle.enter();
            w.put(Bytes::from(bytes));
        };
        let mut size = first.len() as u64;
        put(&mut w, first);
        let sent = loop {
            if let Err(e) = self.wait(w.wait_for_capacity(PARTS_IN_FLIGHT)) {
                break Err(remote(format!("uploading the blob {key}"), e));
            }
            let mut buf = Vec::with_capacity(part);
            if let Err(e) = Self::fill(key, data, &mut buf, part) {
                break Err(e);
            }
            if buf.is_empty() {
                break Ok(());
            }
            size += buf.len() as u64;
            put(&mut w, buf);
        };
        match sent {
            Ok(()) => {
                self.wait(w.finish())
                    .map_err(|e| remote(format!("completing the upload of the blob {key}"), e))?;
                Ok(size)
            }
            Err(e) => {
                if let Err(abort) = self.wait(w.abort()) {
                    tracing::warn!(key, error = %abort, "could not abort a failed multipart upload (a lifecycle rule removes its parts)");
                }
                Err(e)
            }
        }
    }
}

/// What a failed start-up check points at.
enum Trouble {
    NoBucket,
    Credentials,
    /// No HTTP answer at all (refused, timed out, TLS failed).
    Unreachable,
    Other,
}

impl Trouble {
    /// From the error's kind, else from S3's error code in the answer it quotes (`object_store`
    /// reports a refused list as a generic error with the response's body).
    fn of(e: &object_store::Error) -> Trouble {
        match e {
            object_store::Error::NotFound { .. } => return Trouble::NoBucket,
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => return Trouble::Credentials,
            _ => {}
        }
        let text = e.to_string();
        let code = |c: &str| text.contains(&format!("<Code>{c}</Code>"));
        if code("NoSuchBucket") {
            Trouble::NoBucket
        } else if [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "InvalidToken",
            "ExpiredToken",
        ]
        .into_iter()
        .any(code)
            || text.contains("403 Forbidden")
            || text.contains("401 Unauthorized")
        {
            Trouble::Credentials
        } else if text.contains("HTTP error") || text.contains("error sending request") {
            Trouble::Unreachable
        } else {
            Trouble::Other
        }
    }
}

/// `handle.block_on(f)`, inside `block_in_place` so that a runtime worker calling it by
/// mistake hands its other tasks over first (see the module's documentation).
fn wait_on<F: Future>(handle: &Handle, f: F) -> F::Output {
    tokio::task::block_in_place(|| handle.block_on(f))
}

impl BlobStore for S3BlobStore {
    fn put(&self, key: &str, data: &mut dyn Read) -> Result<u64> {
        let path = self.key_path(key)?;
        let part = self.settings.part_size;
        let mut first = Vec::with_capacity(part.min(1 << 20));
        Self::fill(key, data, &mut first, part)?;
        if first.len() < part {
            let size = first.len() as u64;
            self.wait(self.store.put(&path, PutPayload::from(first)))
                .map_err(|e| remote(format!("storing the blob {key}"), e))?;
            return Ok(size);
        }
        self.put_multipart(key, &path, first, data)
    }

    /// Uploads the file (multipart when large, never read whole into memory), then removes
    /// it. `durable` changes nothing: S3 acknowledges an object once it is stored durably.
    fn put_moved(&self, key: &str, path: &std::path::Path, durable: bool) -> Result<u64> {
        let _ = durable;
        let size = self.put_file(key, path)?;
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a file moved into the blob store");
        }
        Ok(size)
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        self.open_at(key, 0)
    }

    fn open_at(&self, key: &str, offset: u64) -> Result<Box<dyn Read + Send>> {
        let path = self.key_path(key)?;
        let mut options = GetOptions::default();
        if offset > 0 {
            options.range = Some(GetRange::Offset(offset));
        }
        let got = match self.wait(self.store.get_opts(&path, options)) {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::NotFound(format!("blob {key}")));
            }
            // A range at or past the end: S3 refuses it; a file read there reads nothing.
            Err(e) if offset > 0 => match self.size(key)? {
                Some(size) if size <= offset => return Ok(Box::new(io::empty())),
                _ => return Err(remote(format!("reading the blob {key}"), e)),
            },
            Err(e) => return Err(remote(format!("reading the blob {key}"), e)),
        };
        Ok(Box::new(ObjectReader {
            handle: self.handle.clone(),
            key: key.to_string(),
            stream: got.into_stream(),
            chunk: Bytes::new(),
        }))
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.key_path(key)?;
        match self.wait(self.store.head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote(format!("reading the size of the blob {key}"), e)),
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.key_path(key)?;
        match self.wait(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(remote(format!("removing the blob {key}"), e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        // List the folder the prefix names (`caches/3/` of `caches/3/de`): S3 lists by
        // whole path segments here; the rest of the prefix filters.
        let folder = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        if !folder.is_empty() {
            check_key(folder)?;
        }
        let base = format!("{}{folder}", self.settings.prefix);
        let base = base.trim_end_matches('/');
        let base = if base.is_empty() {
            None
        } else {
            Some(ObjectPath::parse(base).map_err(|e| {
                StoreError::Conflict(format!("{prefix:?} is not a valid prefix: {e}"))
            })?)
        };
        let metas: Vec<_> = self
            .wait(self.store.list(base.as_ref()).try_collect::<Vec<_>>())
            .map_err(|e| remote(format!("listing the blobs under {prefix:?}"), e))?;
        let mut out: Vec<String> = metas
            .into_iter()
            .filter_map(|m| {
                let full = m.location.as_ref();
                let key = full.strip_prefix(self.settings.prefix.as_str())?;
                (key.starts_with(prefix) && key != PROBE).then(|| key.to_string())
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

/// A GET's body as a `Read`: each read waits for the next piece when the last is used up.
struct ObjectReader {
    handle: Handle,
    key: String,
    stream: futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match wait_on(&self.handle, self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => {
                    return Err(io::Error::other(format!(
                        "reading the blob {} from object storage: {e}",
                        self.key
                    )));
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_read_and_checked() {
        let s = S3Settings::from_url("s3://gantry-blobs").unwrap();
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("gantry-blobs", ""));
        let s = S3Settings::from_url("s3://gantry-blobs/prod/ci/").unwrap();
        assert_eq!(
            (s.bucket.as_str(), s.prefix.as_str()),
            ("gantry-blobs", "prod/ci/")
        );
        assert_eq!(s.url(), "s3://gantry-blobs/prod/ci/");
        for bad in [
            "gantry-blobs",
            "http://gantry-blobs",
            "s3://",
            "s3://ab",
            "s3://Upper",
            "s3://b_c_d",
            "s3://-bucket",
            "s3://bucket/../x",
            "s3://bucket/a//b",
        ] {
            let e = S3Settings::from_url(bad).unwrap_err().to_string();
            assert!(e.contains("s3://BUCKET"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_secret_never_shows_in_debug() {
        let mut s = S3Settings::from_url("s3://gantry-blobs").unwrap();
        s.secret_access_key = Some(SecretString::from("hunter2-very-secret"));
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }
}
