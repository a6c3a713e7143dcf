//! A client of other registries (Harbor, a CNCF Distribution registry, any OCI registry) over
//! the Distribution API, and the copy of an image from a [`Source`] to one of them by digest.
//! `gantry image promote` uses it across registries (a [`Remote`] on both sides), and
//! replication from this registry (the local source of [`crate::replicate`]).
//!
//! ```text
//! Copier::copy(src NAME:REF → dst NAME:TAG)
//!   source's manifest (bytes as stored, digest checked) ─► the destination's tag already
//!   names that digest? skipped ─► an index: each image by digest (those the destination
//!   has are skipped) ─► each blob: HEAD at the destination (there: skipped) → a mount
//!   from a repository of the destination that has it (no byte sent) → else streamed from
//!   the source into a monolithic upload ─► the manifest PUT byte for byte; the digest the
//!   destination reports must be the source's
//! ```
//!
//! Authentication follows Docker's: a request without credentials, its 401 challenge
//! answered once, with a Bearer token from the realm (asked with Basic credentials when
//! there are some; kept until it expires) or Basic credentials. Errors say where and what to
//! do, never a secret, and whether another attempt may help ([`CopyError::retryable`]).

use crate::digest::{Algorithm, Digest};
use bytes::Bytes;
use gantry_store::secrets::{ExposeSecret, SecretString};
use reqwest::{Method, StatusCode, header};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What clients accept as a manifest: OCI and Docker schema 2, images and indexes.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The largest manifest read from another registry.
const MAX_MANIFEST: usize = 4 << 20;

/// What kind of failure a [`CopyError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Credentials refused or missing (401, 403, a token service's refusal).
    Auth,
    /// No answer: connection refused, DNS, TLS, a timeout.
    Unreachable,
    /// An answer that says "later": 5xx, 429, 408.
    Unavailable,
    /// Another refusal (a 4xx): the request is wrong for that registry.
    Refused,
    /// Not found (a 404).
    Missing,
    /// Deleted from this registry since the run chose it: nothing to copy.
    Gone,
    /// Bytes that are not what they claim (a digest, a size, a manifest that is not JSON).
    Invalid,
}

/// A failed copy: what went wrong, where, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyError {
    pub kind: ErrorKind,
    pub message: String,
}

impl CopyError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> CopyError {
        CopyError {
            kind,
            message: message.into(),
        }
    }

    /// Whether trying again later may help (the network, a registry that is down or busy).
    pub fn retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Unreachable | ErrorKind::Unavailable)
    }
}

impl std::fmt::Display for CopyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CopyError {}

type Result<T, E = CopyError> = std::result::Result<T, E>;

/// A user name and password (or token) for a registry.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: SecretString,
}

/// How a [`Remote`] connects.
#[derive(Debug, Clone, Copy)]
pub struct RemoteOptions {
    /// Accept any TLS certificate (a self-signed one).
    pub insecure: bool,
    /// Connecting, and each read, at most this long.
    pub timeout: Duration,
}

impl Default for RemoteOptions {
    fn default() -> RemoteOptions {
        RemoteOptions {
            insecure: false,
            timeout: Duration::from_secs(60),
        }
    }
}

/// A manifest as a registry serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    /// Of the bytes, checked.
    pub digest: String,
}

impl Manifest {
    /// Bytes from a registry, checked against the digest asked for (by digest) or the one
    /// the registry announced (by tag); the media type from the answer, else the document's.
    pub(crate) fn checked(
        bytes: Bytes,
        content_type: Option<&str>,
        reference: &str,
        announced: Option<&str>,
        where_: &str,
    ) -> Result<Manifest> {
        let wanted = Digest::parse(reference).or_else(|| announced.and_then(Digest::parse));
        let algorithm = wanted.as_ref().map_or(Algorithm::Sha256, Digest::algorithm);
        let digest = Digest::of(algorithm, &bytes).to_string();
        if let Some(w) = &wanted
            && w.to_string() != digest
        {
            return Err(CopyError::new(
                ErrorKind::Invalid,
                format!("{where_}: the manifest's bytes are {digest}, not {w}"),
            ));
        }
        let doc: Value = serde_json::from_slice(&bytes).map_err(|e| {
            CopyError::new(
                ErrorKind::Invalid,
                format!("{where_}: the manifest is not JSON ({e})"),
            )
        })?;
        let media_type = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim())
            .filter(|c| c.starts_with("application/vnd."))
            .map(String::from)
            .or_else(|| doc["mediaType"].as_str().map(String::from))
            .unwrap_or_else(|| {
                if doc["manifests"].is_array() {
                    OCI_INDEX.into()
                } else {
                    OCI_MANIFEST.into()
                }
            });
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    fn doc(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

/// A blob's bytes on their way.
#[derive(Debug)]
pub struct Blob {
    pub size: Option<u64>,
    pub body: reqwest::Body,
}

/// Where an image is copied from: another registry ([`Remote`]) or this one
/// (`crate::replicate`'s local source).
pub trait Source: Sync {
    /// The manifest `reference` (a tag or a digest) of repository `name`.
    fn manifest(
        &self,
        name: &str,
        reference: &str,
    ) -> impl Future<Output = Result<Manifest>> + Send;

    /// The bytes of blob `digest` of repository `name`.
    fn blob(&self, name: &str, digest: &str) -> impl Future<Output = Result<Blob>> + Send;

    /// The registry itself when it is spoken to over HTTP: blobs of the destination's own
    /// repositories are mounted rather than copied.
    fn remote(&self) -> Option<&Remote> {
        None
    }
}

/// How a registry wants its requests signed, per scope.
#[derive(Debug, Clone)]
enum Cached {
    Bearer(String, Instant),
    Basic,
}

/// Another registry, spoken to over the Distribution API.
pub struct Remote {
    /// `https://host:port`.
    base: String,
    /// `host:port`, as messages name it.
    host: String,
    http: reqwest::Client,
    creds: Option<Credentials>,
    auth: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("base", &self.base)
            .field("user", &self.creds.as_ref().map(|c| &c.username))
            .finish_non_exhaustive()
    }
}

/// The key of [`Cached::Basic`]: every scope.
const BASIC: &str = "*";

/// Repositories and the actions wanted in each, as a token's scope.
type Scope<'a> = &'a [(&'a str, &'a str)];

impl Remote {
    /// A registry at `url` (`https://host[:port]` or `http://host[:port]`; no path).
    pub fn new(url: &str, creds: Option<Credentials>, opts: RemoteOptions) -> Result<Remote> {
        let bad = |why: &str| {
            CopyError::new(
                ErrorKind::Refused,
                format!(
                    "'{url}' is not a registry's address ({why}): write https://HOST[:PORT] or http://HOST[:PORT]"
                ),
            )
        };
        let u = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(bad("the scheme is not http or https"));
        }
        let host = u.host_str().ok_or_else(|| bad("no host"))?;
        let host = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("gantry/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(opts.timeout.min(Duration::from_secs(15)))
            .read_timeout(opts.timeout)
            .redirect(reqwest::redirect::Policy::limited(5))
            .tls_danger_accept_invalid_certs(opts.insecure)
            .build()
            .map_err(|e| bad(&format!("no HTTP client: {e}")))?;
        Ok(Remote {
            base: format!("{}://{host}", u.scheme()),
            host,
            http,
            creds,
            auth: Mutex::new(HashMap::new()),
        })
    }

    /// `host:port`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `https://host:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn key(scope: Scope<'_>) -> String {
        scope
            .iter()
            .map(|(r, a)| format!("{r}:{a}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Signs a request as the registry asked for this scope before (nothing the first time).
    fn sign(&self, rb: reqwest::RequestBuilder, scope: Scope<'_>) -> reqwest::RequestBuilder {
        let cached = {
            let auth = self.auth.lock().expect("auth");
            auth.get(&Self::key(scope))
                .or_else(|| auth.get(BASIC))
                .cloned()
        };
        match cached {
            Some(Cached::Bearer(t, until)) if until > Instant::now() => rb.bearer_auth(t),
            Some(Cached::Basic) => match &self.creds {
                Some(c) => rb.basic_auth(&c.username, Some(c.password.expose_secret())),
                None => rb,
            },
            _ => rb,
        }
    }

    /// What a failed request says, with where and the first cause (never a URL's secret:
    /// there is none in ours, and reqwest's own URL is left out).
    fn unreachable(&self, what: &str, e: reqwest::Error) -> CopyError {
        let kind = if e.is_body() || e.is_decode() {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Unreachable
        };
        let e = e.without_url();
        let mut cause = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            cause = s.to_string();
            src = s.source();
        }
        CopyError::new(
            kind,
            format!(
                "{} cannot be reached ({what}: {cause}): check the address and that the registry is up",
                self.host
            ),
        )
    }

    /// Sends a request, answering a 401 challenge once.
    async fn send(
        &self,
        method: Method,
        path: &str,
        scope: Scope<'_>,
        build: &(dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Sync),
    ) -> Result<reqwest::Response> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let what = format!("{method} {}", path_only(path));
        let first = self
            .sign(build(self.http.request(method.clone(), &url)), scope)
            .send()
            .await
            .map_err(|e| self.unreachable(&what, e))?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let challenge = first
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        self.answer(&challenge, scope).await?;
        let again = self
            .sign(build(self.http.request(method, &url)), scope)
            .send()
            .await
            .map_err(|e| self.unreachable(&what, e))?;
        if again.status() == StatusCode::UNAUTHORIZED {
            return Err(self.status_error(&what, again).await);
        }
        Ok(again)
    }

    /// Gets what a challenge asks for: a token for the scope, or leave to send Basic.
    async fn answer(&self, challenge: &str, scope: Scope<'_>) -> Result<()> {
        let key = Self::key(scope);
        if !challenge.to_ascii_lowercase().starts_with("bearer") {
            if self.creds.is_none() {
                return Err(CopyError::new(
                    ErrorKind::Auth,
                    format!(
                        "authentication failed at {}: it wants a user name and password, and none were given",
                        self.host
                    ),
                ));
            }
            // Basic credentials are the registry's, whatever the scope.
            self.auth
                .lock()
                .expect("auth")
                .insert(BASIC.into(), Cached::Basic);
            return Ok(());
        }
        let params = challenge_params(challenge);
        let realm = params.get("realm").ok_or_else(|| {
            CopyError::new(
                ErrorKind::Refused,
                format!("{} sent a Bearer challenge without a realm", self.host),
            )
        })?;
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(s) = params.get("service") {
            q.push(("service", s.clone()));
        }
        for (repo, actions) in scope {
            q.push(("scope", format!("repository:{repo}:{actions}")));
        }
        let url = reqwest::Url::parse_with_params(realm, &q).map_err(|e| {
            CopyError::new(
                ErrorKind::Refused,
                format!("{}'s token realm '{realm}' is not a URL ({e})", self.host),
            )
        })?;
        let mut rb = self.http.get(url);
        if let Some(c) = &self.creds {
            rb = rb.basic_auth(&c.username, Some(c.password.expose_secret()));
        }
        let what = "asking its token service for a token";
        let r = rb.send().await.map_err(|e| self.unreachable(what, e))?;
        if !r.status().is_success() {
            return Err(self.status_error(what, r).await);
        }
        let v: Value = r.json().await.map_err(|e| {
            CopyError::new(
                ErrorKind::Refused,
                format!(
                    "{}'s token service answered something else than a token ({e})",
                    self.host
                ),
            )
        })?;
        let token = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .ok_or_else(|| {
                CopyError::new(
                    ErrorKind::Refused,
                    format!("{}'s token service sent no token", self.host),
                )
            })?
            .to_string();
        // Tokens without `expires_in` live 60 s (the token spec); renewed 10 s early.
        let life = v["expires_in"].as_u64().unwrap_or(60).max(15) - 10;
        let until = Instant::now() + Duration::from_secs(life);
        self.auth
            .lock()
            .expect("auth")
            .insert(key, Cached::Bearer(token, until));
        Ok(())
    }

    /// A refusal as a [`CopyError`]: the status, the registry's own message, what to do.
    async fn status_error(&self, what: &str, r: reqwest::Response) -> CopyError {
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        let said = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                let e = &v["errors"][0];
                let msg = e["message"].as_str().or(v["message"].as_str())?;
                Some(match e["code"].as_str() {
                    Some(code) => format!("{code}: {msg}"),
                    None => msg.to_string(),
                })
            })
            .unwrap_or_else(|| text.trim().chars().take(200).collect());
        let said = if said.is_empty() {
            status.to_string()
        } else {
            format!("{status}, {said}")
        };
        let host = &self.host;
        match status.as_u16() {
            401 => CopyError::new(
                ErrorKind::Auth,
                format!(
                    "authentication failed at {host} ({what}: {said}): check the user name and password"
                ),
            ),
            403 => CopyError::new(
                ErrorKind::Auth,
                format!(
                    "{host} denied it ({what}: {said}): the credentials may not push or pull there"
                ),
            ),
            404 => CopyError::new(ErrorKind::Missing, format!("{host}: {what}: {said}")),
            408 | 429 | 500..=599 => CopyError::new(
                ErrorKind::Unavailable,
                format!("{host} is unavailable ({what}: {said}): it may work later"),
            ),
            _ => CopyError::new(ErrorKind::Refused, format!("{host} refused {what}: {said}")),
        }
    }

    /// The manifest `reference` of `name`; `None` when the registry has none.
    pub async fn get_manifest(&self, name: &str, reference: &str) -> Result<Option<Manifest>> {
        let path = format!("/v2/{name}/manifests/{reference}");
        let r = self
            .send(Method::GET, &path, &[(name, "pull")], &|rb| {
                rb.header(header::ACCEPT, MANIFEST_TYPES)
            })
            .await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(self.status_error(&format!("GET {path}"), r).await);
        }
        if r.content_length().is_some_and(|n| n > MAX_MANIFEST as u64) {
            return Err(CopyError::new(
                ErrorKind::Invalid,
                format!(
                    "{}/{name}:{reference}: the manifest is larger than 4 MiB",
                    self.host
                ),
            ));
        }
        let headers = r.headers().clone();
        let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
        let bytes = r
            .bytes()
            .await
            .map_err(|e| self.unreachable(&format!("GET {path}"), e))?;
        Manifest::checked(
            bytes,
            header("content-type"),
            reference,
            header("docker-content-digest"),
            &format!("{}/{name}:{reference}", self.host),
        )
        .map(Some)
    }

    /// The digest `reference` of `name` names at the registry (`HEAD`, asking for push too
    /// so that one token serves a whole copy); `None` when it has none.
    pub async fn manifest_digest(&self, name: &str, reference: &str) -> Result<Option<String>> {
        let path = format!("/v2/{name}/manifests/{reference}");
        let r = self
            .send(Method::HEAD, &path, &[(name, "pull,push")], &|rb| {
                rb.header(header::ACCEPT, MANIFEST_TYPES)
            })
            .await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(self.status_error(&format!("HEAD {path}"), r).await);
        }
        match r
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            Some(d) => Ok(Some(d.to_string())),
            // No digest header: read it (and hash it).
            None => Ok(self.get_manifest(name, reference).await?.map(|m| m.digest)),
        }
    }

    /// Whether repository `name` has blob `digest`.
    pub async fn has_blob(&self, name: &str, digest: &str) -> Result<bool> {
        let path = format!("/v2/{name}/blobs/{digest}");
        let r = self
            .send(Method::HEAD, &path, &[(name, "pull,push")], &|rb| rb)
            .await?;
        match r.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(&format!("HEAD {path}"), r).await),
        }
    }

    /// The bytes of blob `digest` of `name`.
    pub async fn get_blob(&self, name: &str, digest: &str) -> Result<Blob> {
        let path = format!("/v2/{name}/blobs/{digest}");
        let r = self
            .send(Method::GET, &path, &[(name, "pull")], &|rb| rb)
            .await?;
        if !r.status().is_success() {
            let mut e = self.status_error(&format!("GET {path}"), r).await;
            if e.kind == ErrorKind::Missing {
                e.message = format!("{}/{name} has no blob {digest}", self.host);
            }
            return Err(e);
        }
        Ok(Blob {
            size: r.content_length(),
            body: reqwest::Body::wrap_stream(r.bytes_stream()),
        })
    }

    /// Starts an upload into `name` — as a mount of `digest` from `from` when given. `None`:
    /// mounted; else the upload's URL.
    async fn start_upload(
        &self,
        name: &str,
        mount: Option<(&str, &str)>,
    ) -> Result<Option<String>> {
        let (path, scope): (String, Vec<(&str, &str)>) = match mount {
            Some((digest, from)) => (
                format!("/v2/{name}/blobs/uploads/?mount={digest}&from={from}"),
                vec![(name, "pull,push"), (from, "pull")],
            ),
            None => (
                format!("/v2/{name}/blobs/uploads/"),
                vec![(name, "pull,push")],
            ),
        };
        let r = self
            .send(Method::POST, &path, &scope, &|rb| {
                rb.header(header::CONTENT_LENGTH, 0)
            })
            .await?;
        match r.status() {
            StatusCode::CREATED if mount.is_some() => Ok(None),
            StatusCode::ACCEPTED => {
                let location = r
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        CopyError::new(
                            ErrorKind::Refused,
                            format!("{}: the upload into {name} has no Location", self.host),
                        )
                    })?;
                let url = reqwest::Url::parse(&self.base)
                    .and_then(|b| b.join(location))
                    .map_err(|e| {
                        CopyError::new(
                            ErrorKind::Refused,
                            format!("{}: the upload's Location is not a URL ({e})", self.host),
                        )
                    })?;
                Ok(Some(url.to_string()))
            }
            _ => Err(self
                .status_error(&format!("POST {}", path_only(&path)), r)
                .await),
        }
    }

    /// Finishes an upload with the whole blob (one `PUT ?digest=`).
    async fn put_blob(&self, name: &str, upload: &str, digest: &str, blob: Blob) -> Result<()> {
        let mut url = reqwest::Url::parse(upload).map_err(|e| {
            CopyError::new(
                ErrorKind::Refused,
                format!("{}: upload URL: {e}", self.host),
            )
        })?;
        url.query_pairs_mut().append_pair("digest", digest);
        let mut rb = self
            .http
            .put(url)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(blob.body);
        if let Some(n) = blob.size {
            rb = rb.header(header::CONTENT_LENGTH, n);
        }
        // The upload's POST just answered any challenge: its signature is fresh.
        let what = format!("PUT /v2/{name}/blobs/uploads/… ({digest})");
        let r = self
            .sign(rb, &[(name, "pull,push")])
            .send()
            .await
            .map_err(|e| self.unreachable(&what, e))?;
        if r.status() != StatusCode::CREATED {
            return Err(self.status_error(&what, r).await);
        }
        Ok(())
    }

    /// Puts a manifest under `reference` and checks the registry stored those very bytes.
    pub async fn put_manifest(&self, name: &str, reference: &str, m: &Manifest) -> Result<()> {
        let path = format!("/v2/{name}/manifests/{reference}");
        let bytes = m.bytes.clone();
        let media_type = m.media_type.clone();
        let r = self
            .send(Method::PUT, &path, &[(name, "pull,push")], &|rb| {
                rb.header(header::CONTENT_TYPE, &media_type)
                    .body(bytes.clone())
            })
            .await?;
        if !r.status().is_success() {
            return Err(self.status_error(&format!("PUT {path}"), r).await);
        }
        let reported = r
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let stored = match reported {
            Some(d) => Some(d),
            None => self
                .manifest_digest(name, &m.digest)
                .await?
                .map(|_| m.digest.clone()),
        };
        if stored.as_deref() != Some(m.digest.as_str()) {
            return Err(CopyError::new(
                ErrorKind::Invalid,
                format!(
                    "{}/{name}:{reference} was stored as {}, not {}: the registry rewrote the manifest",
                    self.host,
                    stored.as_deref().unwrap_or("nothing"),
                    m.digest
                ),
            ));
        }
        Ok(())
    }
}

impl Source for Remote {
    async fn manifest(&self, name: &str, reference: &str) -> Result<Manifest> {
        self.get_manifest(name, reference).await?.ok_or_else(|| {
            CopyError::new(
                ErrorKind::Missing,
                format!("{}/{name}:{reference} does not exist", self.host),
            )
        })
    }

    async fn blob(&self, name: &str, digest: &str) -> Result<Blob> {
        self.get_blob(name, digest).await
    }

    fn remote(&self) -> Option<&Remote> {
        Some(self)
    }
}

/// A request's path without its query (which may name a digest, nothing secret, but long).
fn path_only(p: &str) -> &str {
    p.split('?').next().unwrap_or(p)
}

/// What a copy did, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Tags put at the destination.
    pub images_copied: u64,
    /// Tags the destination had already, with the same digest.
    pub images_skipped: u64,
    /// Manifests put (an index's images count too).
    pub manifests: u64,
    pub blobs_copied: u64,
    pub blobs_mounted: u64,
    pub blobs_skipped: u64,
    pub bytes_copied: u64,
}

/// Copies images from a [`Source`] to a [`Remote`], counting what it did; remembers which
/// destination repository has which blob, to mount rather than send a blob twice.
#[derive(Debug)]
pub struct Copier<'a, S> {
    src: &'a S,
    dst: &'a Remote,
    stats: CopyStats,
    /// Blob digest → a destination repository that has it.
    placed: HashMap<String, String>,
}

impl<'a, S: Source> Copier<'a, S> {
    pub fn new(src: &'a S, dst: &'a Remote) -> Copier<'a, S> {
        Copier {
            src,
            dst,
            stats: CopyStats::default(),
            placed: HashMap::new(),
        }
    }

    pub fn stats(&self) -> CopyStats {
        self.stats
    }

    /// Copies `src_name:reference` to `dst_name:dst_tag` (a tag, or the digest itself);
    /// the digest, which is the source's. A destination tag that names that digest already
    /// is left as it is.
    pub async fn copy(
        &mut self,
        src_name: &str,
        reference: &str,
        dst_name: &str,
        dst_tag: &str,
    ) -> Result<String> {
        let m = self.src.manifest(src_name, reference).await?;
        if self
            .dst
            .manifest_digest(dst_name, dst_tag)
            .await?
            .as_deref()
            == Some(&m.digest)
        {
            self.stats.images_skipped += 1;
            return Ok(m.digest);
        }
        self.copy_manifest(&m, src_name, dst_name, dst_tag).await?;
        self.stats.images_copied += 1;
        Ok(m.digest)
    }

    /// Copies what a manifest needs (an index's images, the config and layers), then puts it.
    async fn copy_manifest(
        &mut self,
        m: &Manifest,
        src_name: &str,
        dst_name: &str,
        dst_reference: &str,
    ) -> Result<()> {
        let doc = m.doc();
        for child in doc["manifests"].as_array().into_iter().flatten() {
            let digest = child["digest"].as_str().ok_or_else(|| {
                CopyError::new(
                    ErrorKind::Invalid,
                    format!("{src_name}@{}: an index entry without a digest", m.digest),
                )
            })?;
            if self.dst.manifest_digest(dst_name, digest).await?.is_some() {
                continue;
            }
            let child = self.src.manifest(src_name, digest).await?;
            Box::pin(self.copy_manifest(&child, src_name, dst_name, digest)).await?;
        }
        let descriptors = std::iter::once(&doc["config"])
            .chain(doc["layers"].as_array().into_iter().flatten())
            .chain(doc["blobs"].as_array().into_iter().flatten());
        let mut blobs: Vec<(String, u64)> = Vec::new();
        for d in descriptors {
            let (Some(digest), Some(size)) = (d["digest"].as_str(), d["size"].as_u64()) else {
                continue;
            };
            // Foreign (non-distributable) layers live at their URLs, not in registries.
            let foreign = d["mediaType"]
                .as_str()
                .is_some_and(|t| t.contains("foreign") || t.contains("nondistributable"));
            if !foreign && !blobs.iter().any(|(b, _)| b == digest) {
                blobs.push((digest.to_string(), size));
            }
        }
        for (digest, size) in blobs {
            self.copy_blob(src_name, dst_name, &digest, size).await?;
        }
        self.dst.put_manifest(dst_name, dst_reference, m).await?;
        self.stats.manifests += 1;
        Ok(())
    }

    async fn copy_blob(
        &mut self,
        src_name: &str,
        dst_name: &str,
        digest: &str,
        size: u64,
    ) -> Result<()> {
        if self.placed.get(digest).is_some_and(|r| r == dst_name)
            || self.dst.has_blob(dst_name, digest).await?
        {
            self.stats.blobs_skipped += 1;
            self.placed.insert(digest.to_string(), dst_name.to_string());
            return Ok(());
        }
        let same_registry = self.src.remote().is_some_and(|r| r.base == self.dst.base);
        let from = if same_registry {
            Some(src_name.to_string())
        } else {
            self.placed.get(digest).cloned()
        };
        let mounted = match &from {
            // A mount the destination refuses (no pull right there, the repository gone) is
            // an upload.
            Some(from) => match self.dst.start_upload(dst_name, Some((digest, from))).await {
                Err(e)
                    if matches!(
                        e.kind,
                        ErrorKind::Auth | ErrorKind::Refused | ErrorKind::Missing
                    ) =>
                {
                    None
                }
                other => Some(other?),
            },
            None => None,
        };
        let upload = match mounted {
            Some(upload) => upload,
            None => self.dst.start_upload(dst_name, None).await?,
        };
        let Some(upload) = upload else {
            self.stats.blobs_mounted += 1;
            self.placed.insert(digest.to_string(), dst_name.to_string());
            return Ok(());
        };
        let blob = self.src.blob(src_name, digest).await?;
        if blob.size.is_some_and(|n| n != size) {
            return Err(CopyError::new(
                ErrorKind::Invalid,
                format!(
                    "{src_name}: blob {digest} is {} bytes, its manifest says {size}",
                    blob.size.unwrap_or_default()
                ),
            ));
        }
        let blob = Blob {
            size: Some(size),
            body: blob.body,
        };
        self.dst.put_blob(dst_name, &upload, digest, blob).await?;
        self.stats.blobs_copied += 1;
        self.stats.bytes_copied += size;
        self.placed.insert(digest.to_string(), dst_name.to_string());
        Ok(())
    }
}

/// `Bearer realm="…",service="…",scope="…"` → its parameters.
fn challenge_params(c: &str) -> HashMap<String, String> {
    let rest = c.split_once(' ').map_or("", |(_, r)| r);
    let mut out = HashMap::new();
    let mut s = rest;
    while let Some(eq) = s.find('=') {
        let key = s[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &s[eq + 1..];
        let (value, next) = if let Some(stripped) = after.strip_prefix('"') {
            let end = stripped.find('"').unwrap_or(stripped.len());
            (&stripped[..end], stripped.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.insert(key, value.to_string());
        s = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let p = challenge_params(
            r#"Bearer realm="http://h/v2/token",service="gantry-registry",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "http://h/v2/token");
        assert_eq!(p["service"], "gantry-registry");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let p = challenge_params(r#"Basic realm="gantry-test""#);
        assert_eq!(p["realm"], "gantry-test");
    }

    #[test]
    fn addresses() {
        let r = Remote::new("https://harbor.example.com", None, RemoteOptions::default()).unwrap();
        assert_eq!(
            (r.base(), r.host()),
            ("https://harbor.example.com", "harbor.example.com")
        );
        let r = Remote::new("http://127.0.0.1:5000/", None, RemoteOptions::default()).unwrap();
        assert_eq!(
            (r.base(), r.host()),
            ("http://127.0.0.1:5000", "127.0.0.1:5000")
        );
        let e = Remote::new("ftp://x", None, RemoteOptions::default()).unwrap_err();
        assert!(e.message.contains("https://HOST"), "{e}");
    }

    #[test]
    fn manifests_are_checked() {
        let bytes = Bytes::from_static(br#"{"schemaVersion":2,"manifests":[]}"#);
        let d = Digest::of(Algorithm::Sha256, &bytes).to_string();
        let m = Manifest::checked(bytes.clone(), None, &d, None, "x").unwrap();
        assert_eq!(
            (m.digest.as_str(), m.media_type.as_str()),
            (d.as_str(), OCI_INDEX)
        );
        let m = Manifest::checked(
            bytes.clone(),
            Some("application/vnd.docker.distribution.manifest.list.v2+json"),
            "latest",
            Some(&d),
            "x",
        )
        .unwrap();
        assert_eq!(
            m.media_type,
            "application/vnd.docker.distribution.manifest.list.v2+json"
        );
        let other = Digest::of(Algorithm::Sha256, b"other").to_string();
        let e = Manifest::checked(bytes.clone(), None, &other, None, "x").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        let e = Manifest::checked(bytes, None, "v1", Some(&other), "x").unwrap_err();
        assert!(e.message.contains("not sha256:"), "{e}");
        let e = Manifest::checked(Bytes::from_static(b"nope"), None, "v1", None, "x").unwrap_err();
        assert!(e.message.contains("not JSON"), "{e}");
    }
}
