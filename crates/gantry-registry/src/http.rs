//! The `/v2/` endpoints. Repository names hold slashes, so one catch-all route reads the
//! path from its end (`…/blobs/uploads/<id>`, `…/manifests/<ref>`, `…/tags/list`) and
//! [`dispatch`] sends it on. Every endpoint checks the request's registry token for the
//! action it needs before it touches anything.

use crate::digest::{Algorithm, Digest};
use crate::error::{Code, RegistryError, Result};
use crate::manifest::{self, MAX_MANIFEST_BYTES, OCI_INDEX};
use crate::names::{project_candidates, valid_name, valid_tag};
use crate::token::{self, Authority, Claims, Refusal, Scope};
use crate::{Registry, uploads};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use base64::Engine as _;
use bytes::Bytes;
use gantry_store::db::{ManifestRow, NewManifest, RepositoryRow};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;

const API_VERSION: &str = "Docker-Distribution-API-Version";
const CONTENT_DIGEST: &str = "Docker-Content-Digest";
const UPLOAD_UUID: &str = "Docker-Upload-UUID";
/// Tags and repositories listed per page when the client gives no `n`, and at most.
const DEFAULT_PAGE: i64 = 1000;
const MAX_PAGE: i64 = 10_000;

/// The registry's routes: `/v2/…` and the token endpoint `/v2/token`.
pub fn router<A: Authority>(registry: Registry<A>) -> Router {
    Router::new()
        .route("/v2", get(base::<A>))
        .route("/v2/", get(base::<A>))
        .route("/v2/token", get(token_get::<A>).post(token_post::<A>))
        .route("/v2/_catalog", get(catalog::<A>))
        .route("/v2/{*path}", any(dispatch::<A>))
        .layer(axum::middleware::map_response(
            |mut r: Response| async move {
                r.headers_mut()
                    .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
                r
            },
        ))
        .with_state(registry)
}

// ---- authorization ---------------------------------------------------------------------------

/// What a request needs in a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Pull,
    Push,
    Delete,
}

impl<A: Authority> Registry<A> {
    fn realm(&self, headers: &HeaderMap) -> String {
        if let Some(u) = &self.inner.public_url {
            return format!("{}/v2/token", u.trim_end_matches('/'));
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let proto = headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .filter(|p| *p == "https" || *p == "http")
            .unwrap_or("http");
        format!("{proto}://{host}/v2/token")
    }

    /// A 401 that tells the client where to get a token, and for what.
    fn challenge(&self, headers: &HeaderMap, scope: Option<String>, msg: &str) -> RegistryError {
        let mut v = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            self.realm(headers),
            self.inner.keys.service()
        );
        if let Some(s) = scope {
            v.push_str(&format!(",scope=\"{s}\""));
        }
        // RFC 6750: a valid token without the scope is 403 `insufficient_scope` (clients
        // such as oras then ask for a new token); a bad or expired one is 401.
        // An anonymous visitor's token lacking the scope means: log in (401).
        let (code, error) = match bearer(headers).map(|t| self.inner.keys.verify(t)) {
            Some(Some(c)) if !c.sub.is_empty() => (Code::Denied, Some("insufficient_scope")),
            Some(Some(_)) => (Code::Unauthorized, Some("insufficient_scope")),
            Some(None) => (Code::Unauthorized, Some("invalid_token")),
            None => (Code::Unauthorized, None),
        };
        if let Some(e) = error {
            v.push_str(&format!(",error=\"{e}\""));
        }
        RegistryError::new(code, msg).with_header(header::WWW_AUTHENTICATE, &v)
    }

    fn claims(&self, headers: &HeaderMap) -> Option<Claims> {
        bearer(headers).and_then(|t| self.inner.keys.verify(t))
    }

    /// The token's claims when they allow `need` in `name`; a challenge otherwise.
    fn authorize(&self, headers: &HeaderMap, name: &str, need: Need) -> Result<Claims> {
        let claims = self.claims(headers);
        let ok = claims.as_ref().is_some_and(|c| {
            let a = c.actions(name);
            match need {
                Need::Pull => a.pull,
                Need::Push => a.push && a.pull,
                Need::Delete => a.delete,
            }
        });
        let wanted = match need {
            Need::Pull => "pull",
            Need::Push => "pull,push",
            Need::Delete => "delete",
        };
        match claims {
            Some(c) if ok => Ok(c),
            Some(c) => Err(self.challenge(
                headers,
                Some(format!("repository:{name}:{wanted}")),
                &format!(
                    "the token of '{}' does not allow {wanted} in {name}: ask a maintainer of its project for a role that does",
                    if c.sub.is_empty() { "anonymous" } else { &c.sub }
                ),
            )),
            None => Err(self.challenge(
                headers,
                Some(format!("repository:{name}:{wanted}")),
                "authentication required: log in (docker login) with a user, a personal access token, a robot account or CI_JOB_TOKEN",
            )),
        }
    }

    /// The repository a read names; NAME_UNKNOWN when it has never been pushed to.
    async fn repo_for_read(&self, name: &str) -> Result<RepositoryRow> {
        self.repository(name).await?.ok_or_else(|| {
            RegistryError::new(
                Code::NameUnknown,
                format!("repository {name} is not known to this registry"),
            )
        })
    }

    /// The repository a push names, made on its first push inside its project.
    pub(crate) async fn repo_for_write(&self, name: &str) -> Result<RepositoryRow> {
        if let Some(r) = self.repository(name).await? {
            return Ok(r);
        }
        let project = self.project_of(name).await?.ok_or_else(|| {
            RegistryError::new(
                Code::NameUnknown,
                format!(
                    "no project owns {name}: push to PROJECT/NAME where PROJECT is a Gantry project (create it first)"
                ),
            )
        })?;
        Ok(self.inner.db.ensure_repository(project, name).await?)
    }

    /// The project whose path is the longest prefix of `name`.
    pub async fn project_of(&self, name: &str) -> Result<Option<i64>> {
        if let Some(r) = self.repository(name).await? {
            return Ok(Some(r.project_id));
        }
        for candidate in project_candidates(name) {
            if let Some(p) = self.inner.db.project_by_path(candidate).await? {
                return Ok(Some(p.id));
            }
        }
        Ok(None)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

// ---- base and token ----------------------------------------------------------------------------

async fn base<A: Authority>(State(reg): State<Registry<A>>, headers: HeaderMap) -> Response {
    if reg.claims(&headers).is_some() {
        return (StatusCode::OK, axum::Json(json!({}))).into_response();
    }
    reg.challenge(
        &headers,
        None,
        "authentication required: log in (docker login) with a user, a personal access token, a robot account or CI_JOB_TOKEN",
    )
    .into_response()
}

async fn token_get<A: Authority>(
    State(reg): State<Registry<A>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut scopes = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if k == "scope" {
            scopes.extend(Scope::parse_all(&v));
        }
    }
    issue(&reg, basic(&headers), scopes, peer).await
}

/// The OAuth2 form Docker sends with `--password-stdin` identity tokens
/// (`grant_type=password`, `username`, `password`, `scope`).
async fn token_post<A: Authority>(
    State(reg): State<Registry<A>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let mut scopes = Vec::new();
    if let Some(s) = form.get("scope") {
        scopes = Scope::parse_all(s);
    }
    let creds = match (form.get("username"), form.get("password")) {
        (Some(u), Some(p)) => Some((u.clone(), p.clone())),
        _ => basic(&headers),
    };
    issue(&reg, creds, scopes, peer).await
}

async fn issue<A: Authority>(
    reg: &Registry<A>,
    creds: Option<(String, String)>,
    scopes: Vec<Scope>,
    peer: SocketAddr,
) -> Response {
    let who = match reg.inner.authority.authenticate(creds, peer.ip()).await {
        Ok(p) => p,
        Err(Refusal::Unauthorized(msg)) => {
            return RegistryError::new(Code::Unauthorized, msg).into_response();
        }
        Err(Refusal::TooMany(msg)) => {
            return RegistryError::new(Code::Denied, msg)
                .with_status(StatusCode::TOO_MANY_REQUESTS)
                .into_response();
        }
    };
    match grant(reg, &who, &scopes).await {
        Ok((access, projects)) => {
            let name = reg.inner.authority.name(&who);
            let (token, claims) = reg.inner.keys.issue(&name, access, projects);
            let issued = chrono_like(claims.iat);
            axum::Json(json!({
                "token": token,
                "access_token": token,
                "expires_in": token::TOKEN_TTL_SECS,
                "issued_at": issued,
            }))
            .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// What `who` gets of the scopes asked for: each repository's allowed actions, cut to what
/// was asked; nothing for names no project owns or that are not valid.
async fn grant<A: Authority>(
    reg: &Registry<A>,
    who: &A::Principal,
    scopes: &[Scope],
) -> Result<(Vec<token::ResourceActions>, Option<Vec<i64>>)> {
    let mut access = Vec::new();
    let mut projects = None;
    for s in scopes {
        match s {
            Scope::Repository { name, actions } => {
                if !valid_name(name) {
                    continue;
                }
                let Some(project) = reg.project_of(name).await? else {
                    continue;
                };
                let allowed = reg.inner.authority.allowed(who, project).await;
                let granted = allowed.intersect(*actions);
                if !granted.is_empty() {
                    access.push(token::repository_access(name, granted));
                }
            }
            Scope::Catalog => {
                if !reg.inner.authority.name(who).is_empty() {
                    access.push(token::catalog_access());
                    projects = reg.inner.authority.visible_projects(who).await;
                }
            }
        }
    }
    Ok((access, projects))
}

/// RFC 3339 UTC of a Unix time, without a date library.
fn chrono_like(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---- the catch-all -------------------------------------------------------------------------------

/// What a `/v2/<path>` names.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Tags(&'a str),
    StartUpload(&'a str),
    Upload(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Manifest(&'a str, &'a str),
    Referrers(&'a str, &'a str),
}

fn target(path: &str) -> Option<Target<'_>> {
    let (rest, last) = path.rsplit_once('/')?;
    let (rest2, second) = rest.rsplit_once('/')?;
    if second == "tags" && last == "list" {
        return Some(Target::Tags(rest2));
    }
    if second == "uploads" {
        let (name, blobs) = rest2.rsplit_once('/')?;
        if blobs == "blobs" {
            return Some(if last.is_empty() {
                Target::StartUpload(name)
            } else {
                Target::Upload(name, last)
            });
        }
    }
    if last.is_empty() {
        // `…/blobs/uploads` without the slash is handled below; other trailing slashes are not
        // endpoints.
        return None;
    }
    match second {
        "blobs" if last == "uploads" => None,
        "blobs" => Some(Target::Blob(rest2, last)),
        "manifests" => Some(Target::Manifest(rest2, last)),
        "referrers" => Some(Target::Referrers(rest2, last)),
        _ => None,
    }
}

async fn dispatch<A: Authority>(
    State(reg): State<Registry<A>>,
    Path(path): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let (method, headers) = (parts.method, parts.headers);
    let path = path.trim_start_matches('/');
    // `POST …/blobs/uploads` (no slash) starts an upload too.
    let owned;
    let path = if method == Method::POST && path.ends_with("/blobs/uploads") {
        owned = format!("{path}/");
        owned.as_str()
    } else {
        path
    };
    let Some(t) = target(path) else {
        return RegistryError::new(
            Code::NameInvalid,
            format!("/v2/{path} is not a registry endpoint"),
        )
        .with_status(StatusCode::NOT_FOUND)
        .into_response();
    };
    let name = match &t {
        Target::Tags(n)
        | Target::StartUpload(n)
        | Target::Upload(n, _)
        | Target::Blob(n, _)
        | Target::Manifest(n, _)
        | Target::Referrers(n, _) => *n,
    };
    if !valid_name(name) {
        return RegistryError::new(
            Code::NameInvalid,
            format!(
                "'{name}' is not a valid repository name: lowercase letters and digits, separated by '.', '_', '__', '-' or '/'"
            ),
        )
        .into_response();
    }
    let r = match (t, method.clone()) {
        (Target::Blob(n, d), Method::GET) => get_blob(&reg, &headers, n, d, true).await,
        (Target::Blob(n, d), Method::HEAD) => get_blob(&reg, &headers, n, d, false).await,
        (Target::Blob(n, d), Method::DELETE) => delete_blob(&reg, &headers, n, d).await,
        (Target::StartUpload(n), Method::POST) => {
            let mut body = Some(body);
            let r = start_upload(&reg, &headers, n, &q, &mut body).await;
            drain(body).await;
            r
        }
        (Target::Upload(n, id), Method::PATCH) => {
            let mut body = Some(body);
            let r = patch_upload(&reg, &headers, n, id, &mut body).await;
            drain(body).await;
            r
        }
        (Target::Upload(n, id), Method::PUT) => {
            let mut body = Some(body);
            let r = put_upload(&reg, &headers, n, id, &q, &mut body).await;
            drain(body).await;
            r
        }
        (Target::Upload(n, id), Method::GET) => upload_status(&reg, &headers, n, id).await,
        (Target::Upload(n, id), Method::DELETE) => cancel_upload(&reg, &headers, n, id).await,
        (Target::Manifest(n, r), Method::GET) => get_manifest(&reg, &headers, n, r, true).await,
        (Target::Manifest(n, r), Method::HEAD) => get_manifest(&reg, &headers, n, r, false).await,
        (Target::Manifest(n, r), Method::PUT) => put_manifest(&reg, &headers, n, r, body).await,
        (Target::Manifest(n, r), Method::DELETE) => delete_manifest(&reg, &headers, n, r).await,
        (Target::Tags(n), Method::GET) => tags(&reg, &headers, n, &q).await,
        (Target::Referrers(n, d), Method::GET) => referrers(&reg, &headers, n, d, &q).await,
        (_, m) => Err(RegistryError::new(
            Code::Unsupported,
            format!("{m} is not supported on /v2/{path}"),
        )),
    };
    r.unwrap_or_else(IntoResponse::into_response)
}

/// Reads what is left of a request body that was refused before it was read (up to a few
/// megabytes), so that the client, still sending, reads the answer instead of a reset
/// connection.
async fn drain(body: Option<Body>) {
    if let Some(b) = body {
        let _ = axum::body::to_bytes(b, 16 << 20).await;
    }
}

fn digest_param(s: &str) -> Result<Digest> {
    Digest::parse(s).ok_or_else(|| {
        RegistryError::new(
            Code::DigestInvalid,
            format!(
                "'{s}' is not a digest this registry supports (sha256:<64 hex> or sha512:<128 hex>)"
            ),
        )
    })
}

fn location(name: &str, kind: &str, what: &str) -> String {
    format!("/v2/{name}/{kind}/{what}")
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

// ---- blobs -------------------------------------------------------------------------------------------

/// A single `bytes=a-b`, `bytes=a-` or `bytes=-n` range of a blob of `size` bytes:
/// `Ok(None)` without a Range header, an error when it cannot be served.
fn range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>> {
    let Some(v) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let bad = || {
        RegistryError::new(
            Code::RangeInvalid,
            format!("the Range header is not one satisfiable byte range of this {size}-byte blob"),
        )
        .with_header(header::CONTENT_RANGE, &format!("bytes */{size}"))
    };
    let s = v.to_str().map_err(|_| bad())?;
    let spec = s.strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(bad());
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| bad())?;
            if n == 0 {
                return Err(bad());
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (a, "") => (a.parse().map_err(|_| bad())?, size.saturating_sub(1)),
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            (a, b.min(size.saturating_sub(1)))
        }
    };
    if size == 0 || start > end || start >= size {
        return Err(bad());
    }
    Ok(Some((start, end)))
}

async fn get_blob<A: Authority>(
    reg: &Registry<A>,
    headers: &HeaderMap,
    name: &str,
    digest: &str,
    with_body: bool,
) -> Result<Response> {
    reg.authorize(headers, name, Need::Pull)?;
    let d = digest_param(digest)?;
    let repo = reg.repo_for_read(name).await?;
    let size = reg
        .inner
        .db
        .linked_blob(repo.id, &d.to_string())
        .await?
        .ok_or_else(|| blob_unknown(name, &d))? as u64;
    if !with_body {
        // A client that finds the blob will not push it: keep it through collection.
        reg.keep_link(repo.id, &d.to_string()).await?;
    }
    let r = range(headers, size)?;
    let (status, start, len) = match r {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        None => (StatusCode::OK, 0, size),
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_DIGEST, d.to_string())
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{d}\""));
    if let Some((a, b)) = r {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{size}"));
    }
    let body = if with_body {
        stream_blob(reg, d.blob_key(), start, len)
    } else {
        Body::empty()
    };
    Ok(resp.body(body).expect("valid response"))
}

fn blob_unknown(name: &str, d: &Digest) -> RegistryError {
    RegistryError::new(Code::BlobUnknown, format!("blob {d} is not in {name}"))
}

/// The bytes `start..start+len` of a stored blob as a response body, read on a blocking
/// thread a megabyte at a time.
fn stream_blob<A: Authority>(reg: &Registry<A>, key: String, start: u64, len: u64) -> Body {
    let blobs = reg.inner.blobs.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut r = match blobs.open_at(&key, start) {
            Ok(r) => r.take(len),
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        };
        let mut left = len;
        while left > 0 {
            // read_to_end fills spare capacity without zeroing it first.
            let want = (1u64 << 20).min(left);
            let mut buf = Vec::with_capacity(want as usize);
            match (&mut r).take(want).read_to_end(&mut buf) {
                Ok(0) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(format!(
                        "blob {key} is shorter than recorded"
                    ))));
                    return;
                }
                Ok(n) => {
                    left -= n as u64;
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return; // the client went away
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    Body::from_stream(tokio_stream_of(rx))
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn delete_blob<A: Authority>(
    reg: &Registry<A>,
    headers: &HeaderMap,
    name: &str,
    digest: &str,
) -> Result<Response> {
    reg.authorize(headers, name, Need::Delete)?;
    let d = digest_param(digest)?;
    let repo = reg.repo_for_read(name).await?;
    if !reg.inner.db.unlink_blob(repo.id, &d.to_string()).await? {
        return Err(blob_unknown(name, &d));
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

// ---- uploads -------------------------------------------------------------------------------------------

/// Uploads are named `<repository id>-<random>`, so an upload's URL under another repository
/// names nothing.
fn upload_key(repo: &RepositoryRow, id: &str) -> String {
    format!("{}-{id}", repo.id)
}

fn upload_unknown(id: &str) -> RegistryError {
    RegistryError::new(
        Code::BlobUploadUnknown,
        format!("upload {id} is not in progress (finished, cancelled or expired): start a new one"),
    )
}

fn upload_response(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
    Response::builder()
        .status(status)
        .header(header::LOCATION, location(name, "blobs/uploads", id))
        .header(header::RANGE, format!("0-{}", size.saturating_sub(1)))
        .header(UPLOAD_UUID, id)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}

fn blob_created(name: &str, d: &Digest) -> Response {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, location(name, "blobs", &d.to_string()))
        .header(CONTENT_DIGEST, d.to_string())
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}

async fn start_upload<A: Authority>(
    reg: &Registry<A>,
    headers: &HeaderMap,
    name: &str,
    q: &HashMap<String, String>,
    body: &mut Option<Body>,
) -> Result<Response> {
    let claims = reg.authorize(headers, name, Need::Push)?;
    let repo = reg.repo_for_write(name).await?;
    if let (Some(mount), Some(from)) = (q.get("mount"), q.get("from")) {
        let d = digest_param(mount)?;
        // Mounting needs pull in the source: otherwise it is a plain upload, as the spec says.
        if valid_name(from)
            && claims.actions(from).pull
            && let Some(src) = reg.repository(from).await?
            && reg
                .inner
                .db
                .mount_blob(repo.id, &d.to_string(), src.id)
                .await?
        {
            return Ok(blob_created(name, &d));
        }
    }
    let id = reg.inner.uploads.create_for(&upload_key(&repo, "")).await?;
    let key = upload_key(&repo, &id);
    if let Some(digest) = q.get("digest") {
        // Monolithic: the whole blob in this request.
        let d = digest_param(digest)?;
        let slot = reg
            .inner
            .uploads
            .get(&key)
            .ok_or_else(|| upload_unknown(&id))?;
        let mut up = slot.lock().await;
        let body = body.take().unwrap_or_default();
        let result = async {
            reg.inner.uploads.append(&key, &mut up, body).await?;
            commit(reg, &repo, &key, &mut up, &d).await
        }
        .await;
        drop(up);
        reg.inner.uploads.remove(&key);
        result?;
        return Ok(blob_created(name, &d));
    }
    Ok(upload_response(StatusCode::ACCEPTED, name, &id, 0))
}

/// Checks a finished upload's digest and moves its bytes into the blob store; the blob is
/// then the repository's.
async fn commit<A: Authority>(
    reg: &Registry<A>,
    repo: &RepositoryRow,
    key: &str,
    up: &mut uploads::Upload,
    d: &Digest,
) -> Result<()> {
    let path = reg.inner.uploads.verify(key, up, d).await?;
    let size = up.size;
    let digest = d.to_string();
    let _held = reg.lock_digest(d).await;
    let stored = reg.inner.db.known_blob(&digest).await?.is_some() && {
        let (blobs, k) = (reg.inner.blobs.clone(), d.blob_key());
        tokio::task::spawn_blocking(move || blobs.exists(&k))
            .await
            .expect("blob exists")?
    };
    if !stored {
        let (blobs, k, durable) = (reg.inner.blobs.clone(), d.blob_key(), reg.inner.durable);
        tokio::task::spawn_blocking(move || blobs.put_moved(&k, &path, durable))
            .await
            .expect("blob move")?;
    }
    reg.inner
        .db
        .link_new_blob(repo.id, &digest, size as i64)
        .await?;
    Ok(())
}

/// The upload `id` of the repository, locked for this request.
async fn upload_of<A: Authority>(
    reg: &Registry<A>,
    name: &str,
    id: &str,
) -> Result<(RepositoryRow, String, uploads::Slot)> {
    let repo = reg
        .repo_for_read(name)
        .await
        .map_err(|_| upload_unknown(id))?;
    let key = upload_key(&repo, id);
    let slot = reg
        .inner
        .uploads
        .get(&key)
        .ok_or_else(|| upload_unknown(id))?;
    Ok((repo, key, slot))
}

/// `Content-Range: a-b` of a chunk: it must start where the upload ends.
fn check_chunk_start(headers: &HeaderMap, name: &str, id: &str, size: u64) -> Result<()> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(());
    };
    let s = v.to_str().unwrap_or("");
    let s = s.strip_prefix("bytes ").unwrap_or(s);
    let start = s
        .split(['-', '/'])
        .next()
        .and_then(|a| a.trim().parse::<u64>().ok());
    if start != Some(size) {
        return Err(RegistryError::new(
            Code::RangeInvalid,
            format!(
                "this chunk starts at {s:?} but the upload has {size} bytes: send the chunk that starts at byte {size}"
            ),
        )
        .with_header(header::LOCATION, &location(name, "blobs/uploads", id))
        .with_header(header::RANGE, &format!("0-{}", size.saturating_sub(1)))
        .with_header(header::HeaderName::from_static("docker-upload-uuid"), id));
    }
    Ok(())
}

async fn patch_upload<A: Authority>(
    reg: &Registry<A>,
    headers: &HeaderMap,
    name: &str,
    id: &str,
    body: &mut Option<Body>,
) -> Result<Response> {
    reg.authorize(headers, name, Need::Push)?;
    let (_, key, slot) = upload_of(reg, name, id).await?;
    let mut up = slot.lock().await;
    check_chunk_start(headers, name, id, up.size)?;
    let body = body.take().unwrap_or_default();
    reg.inner.uploads.append(&key, &mut up, body).await?;
    Ok(upload_response(StatusCode::ACCEPTED, name, id, up.size))
}

async fn put_upload<A: Authority>(
    reg: &Registry<A>,
    headers: &HeaderMap,
    name: &str,
    id: &str,
    q: &HashMap<String, String>,
    body: &mut Option<Body>,
) -> Result<Response> {
    reg.authorize(headers, name, Need::Push)?;
    let (repo, key, slot) = upload_of(reg, name, id).await?;
    let d = digest_param(q.get("digest").map(String::as_str).unwrap_or(""))?;
    let mut up = slot.lock().await;
    check_chunk_start(headers, name, id, up.size)?;
    let body = body.take().unwrap_or_default();
    let result = async {
        reg.inner.uploads.append(&key, &mut up, body).await?;
        commit(reg, &repo, &key, &mut up, &d).await
    }
    .await;
    match result {
        // A broken final chunk can be sent again.
        Err(e) if e.code == Code::BlobUploadInvalid => return Err(e),
        // A storage failure loses nothing: the upload stays for a retry.
        Err(e) if e.code == Code::Unavailable => return Err(e),
        _ => {}
    }
    drop(up);
    reg.inner.uploads.remove(&key);
    result?;
    Ok(blob_created(name, &d))
}

async fn upload_status<A: Authority>(
    reg: &Registry<A>,
    headers: &HeaderMap,
    name: &str,
    id: &str,
) -> Result<Response> {
    reg.authorize(headers, name, Need::Push)?;
    let (_, _, slot) = upload_of(reg, name, id).await?;
    let size = slot.lock().await.size;
    Ok(upload_response(StatusCode::NO_CONTENT, name, id, size))
}

async fn cancel_upload<A: Authority>(
    reg: &Registry<A>,
    headers: &HeaderMap,
    name: &str,
    id: &str,
) -> Result<Response> {
    reg.authorize(headers, name, Need::Push)?;
    let (_, key, slot) = upload_of(reg, name, id).await?;
    let _held = slot.lock().await;
    reg.inner.uploads.remove(&key);
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- manifests -----------------------------------------------------------------------------------------

/// A manifest by tag or digest.
async fn find_manifest<A: Authority>(
    reg: &Registry<A>,
    repo: &RepositoryRow,
    name: &str,
    reference: &str,
) -> Result<ManifestRow> {
    let found = if reference.contains(':') {
        let d = digest_param(reference)?;
        reg.inner.db.manifest(repo.id, &d.to_string()).await?
    } else if valid_tag(reference) {
        reg.inner.db.tagged_manifest(repo.id, reference).await?
    } else {
        return Err(tag_invalid(reference));
    };
    found.ok_or_else(|| {
        RegistryError::new(
            Code::ManifestUnknown,
            format!("manifest {reference} is not in {name}"),
        )
    })
}

fn tag_invalid(tag: &str) -> RegistryError {
    RegistryError::new(
        Code::TagInvalid,
        format!(
            "'{tag}' is not a valid tag: letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-'"
        ),
    )
}

async fn get_manifest<A: Authority>(
    reg: &Registry<A>,
    headers: &HeaderMap,
    name: &str,
    reference: &str,
    with_body: bool,
) -> Result<Response> {
    let claims = reg.authorize(headers, name, Need::Pull)?;
    let repo = reg.repo_for_read(name).await?;
    let m = find_manifest(reg, &repo, name, reference).await?;
    let body = if with_body {
        let d = Digest::parse(&m.digest).ok_or_else(|| blob_unknown(name, &digest_of("")))?;
        let (blobs, key) = (reg.inner.blobs.clone(), d.blob_key());
        let bytes = tokio::task::spawn_blocking(move || -> gantry_store::Result<Vec<u8>> {
            let mut v = Vec::new();
            blobs
                .open(&key)?
                .read_to_end(&mut v)
                .map_err(|e| gantry_store::StoreError::Io {
                    what: format!("reading the manifest {key}"),
                    source: e,
                })?;
            Ok(v)
        })
        .await
        .expect("manifest read")?;
        if !reference.contains(':') {
            reg.record_pull(repo.id, reference, &m.digest);
        }
        reg.emit(crate::Event {
            kind: "image_pulled",
            project_id: repo.project_id,
            repository: name.to_string(),
            tag: (!reference.contains(':')).then(|| reference.to_string()),
            digest: m.digest.clone(),
            actor: claims.sub.clone(),
        });
        Body::from(bytes)
    } else {
        Body::empty()
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, &m.media_type)
        .header(header::CONTENT_LENGTH, m.size)
        .header(CONTENT_DIGEST, &m.digest)
        .header(header::ETAG, format!("\"{}\"", m.digest))
        .body(body)
        .expect("valid response"))
}

fn digest_of(s: &str) -> Digest {
    Digest::of(Algorithm::Sha256, s.as_bytes())
}

async fn put_manifest<A: Authority>(
    reg: &Registry<A>,
    headers: &HeaderMap,
    name: &str,
    reference: &str,
    body: Body,
) -> Result<Response> {
    let claims = reg.authorize(headers, name, Need::Push)?;
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST_BYTES)
        .await
        .map_err(|_| {
            RegistryError::new(
                Code::SizeInvalid,
                format!("a manifest may have at most {MAX_MANIFEST_BYTES} bytes"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        })?;
    let (digest, tag) = if reference.contains(':') {
        let want = digest_param(reference)?;
        let got = Digest::of(want.algorithm(), &bytes);
        if got != want {
            return Err(RegistryError::new(
                Code::DigestInvalid,
                format!("the manifest's digest is {got}, not {want}"),
            ));
        }
        (want, None)
    } else if valid_tag(reference) {
        (Digest::of(Algorithm::Sha256, &bytes), Some(reference))
    } else {
        return Err(tag_invalid(reference));
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let parsed = manifest::parse(&bytes, content_type)?;
    let repo = reg.repo_for_write(name).await?;
    if let Some(t) = tag {
        reg.check_tag_change(&repo, t, Some(&digest.to_string()))
            .await?;
    }
    let blobs: Vec<String> = parsed.blobs.iter().map(Digest::to_string).collect();
    let missing = reg.inner.db.missing_blobs(repo.id, &blobs).await?;
    if let Some(first) = missing.first() {
        return Err(RegistryError::new(
            Code::ManifestBlobUnknown,
            format!(
                "the manifest references {} blob(s) not pushed to {name}, first {first}: push the blobs before the manifest",
                missing.len()
            ),
        ));
    }
    let children: Vec<String> = parsed.manifests.iter().map(Digest::to_string).collect();
    let missing = reg.inner.db.missing_manifests(repo.id, &children).await?;
    if let Some(first) = missing.first() {
        return Err(RegistryError::new(
            Code::ManifestBlobUnknown,
            format!(
                "the index references {} manifest(s) not in {name}, first {first}: push them before the index",
                missing.len()
            ),
        ));
    }
    let _held = reg.lock_digest(&digest).await;
    store_manifest_bytes(reg, &digest, bytes.clone()).await?;
    let mut refs = blobs;
    refs.extend(children);
    let row = ManifestRow {
        digest: digest.to_string(),
        media_type: parsed.media_type.clone(),
        size: bytes.len() as i64,
        artifact_type: parsed.artifact_type.clone(),
        subject: parsed.subject.as_ref().map(Digest::to_string),
        annotations: parsed.annotations.clone(),
        pushed_by: claims.sub.clone(),
        created_at: 0,
    };
    reg.inner
        .db
        .put_manifest(
            repo.id,
            &NewManifest {
                row,
                children: &refs,
            },
            tag,
        )
        .await
        .map_err(|e| match e {
            gantry_store::StoreError::NotFound(what) => RegistryError::new(
                Code::ManifestBlobUnknown,
                format!("{what} was removed from {name} (unused for a long time) before this manifest came: push it again"),
            ),
            e => e.into(),
        })?;
    drop(_held);
    reg.emit(crate::Event {
        kind: "image_pushed",
        project_id: repo.project_id,
        repository: name.to_string(),
        tag: tag.map(String::from),
        digest: digest.to_string(),
        actor: claims.sub.clone(),
    });
    let mut resp = Response::builder()
        .status(StatusCode::CREATED)
        .header(
            header::LOCATION,
            location(name, "manifests", &digest.to_string()),
        )
        .header(CONTENT_DIGEST, digest.to_string())
        .header(header::CONTENT_LENGTH, 0);
    if let Some(s) = &parsed.subject {
        resp = resp.header("OCI-Subject", header_value(&s.to_string()));
    }
    Ok(resp.body(Body::empty()).expect("valid response"))
}

/// Writes a manifest's bytes into the blob store (through an upload file and a rename).
async fn store_manifest_bytes<A: Authority>(
    reg: &Registry<A>,
    d: &Digest,
    bytes: Bytes,
) -> Result<()> {
    let path = reg
        .inner
        .uploads
        .dir()
        .join(format!("m-{}", uploads::new_id()));
    let (blobs, key, durable) = (reg.inner.blobs.clone(), d.blob_key(), reg.inner.durable);
    tokio::task::spawn_blocking(move || -> gantry_store::Result<()> {
        std::fs::write(&path, &bytes)
            .map_err(|e| gantry_store::StoreError::io("writing a manifest", &path, e))?;
        let r = blobs.put_moved(&key, &path, durable);
        if r.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        r.map(drop)
    })
    .await
    .expect("manifest write")?;
    Ok(())
}

async fn delete_manifest<A: Authority>(
    reg: &Registry<A>,
    headers: &HeaderMap,
    name: &str,
    reference: &str,
) -> Result<Response> {
    let claims = reg.authorize(headers, name, Need::Delete)?;
    if !reference.contains(':') {
        // A tag: the same path as the web UI's Delete button.
        reg.delete_tag(name, reference, &claims.sub).await?;
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    let repo = reg.repo_for_read(name).await?;
    let d = digest_param(reference)?;
    let digest = d.to_string();
    reg.check_manifest_removal(&repo, &digest).await?;
    if !reg.inner.db.delete_manifest(repo.id, &digest).await? {
        return Err(RegistryError::new(
            Code::ManifestUnknown,
            format!("manifest {reference} is not in {name}"),
        ));
    }
    reg.emit(crate::Event {
        kind: "image_deleted",
        project_id: repo.project_id,
        repository: name.to_string(),
        tag: None,
        digest,
        actor: claims.sub.clone(),
    });
    Ok(StatusCode::ACCEPTED.into_response())
}

// ---- listings ------------------------------------------------------------------------------------------

fn page_size(q: &HashMap<String, String>) -> Result<i64> {
    match q.get("n") {
        None => Ok(DEFAULT_PAGE),
        Some(n) => n
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| n.min(MAX_PAGE))
            .ok_or_else(|| {
                RegistryError::new(
                    Code::Unsupported,
                    format!("n={n} is not a number of entries"),
                )
                .with_status(StatusCode::BAD_REQUEST)
            }),
    }
}

fn next_link(path: &str, n: i64, last: &str) -> String {
    let enc: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
    format!("<{path}?n={n}&last={enc}>; rel=\"next\"")
}

async fn tags<A: Authority>(
    reg: &Registry<A>,
    headers: &HeaderMap,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<Response> {
    reg.authorize(headers, name, Need::Pull)?;
    let repo = reg.repo_for_read(name).await?;
    let n = page_size(q)?;
    let last = q.get("last").map(String::as_str);
    let mut rows = if n == 0 {
        Vec::new()
    } else {
        reg.inner.db.tags(repo.id, last, n + 1).await?
    };
    let more = rows.len() as i64 > n;
    rows.truncate(n as usize);
    let names: Vec<String> = rows.into_iter().map(|t| t.name).collect();
    let mut resp = axum::Json(json!({"name": name, "tags": names})).into_response();
    if more && let Some(l) = names.last() {
        resp.headers_mut().insert(
            header::LINK,
            header_value(&next_link(&format!("/v2/{name}/tags/list"), n, l)),
        );
    }
    Ok(resp)
}

async fn catalog<A: Authority>(
    State(reg): State<Registry<A>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let run = async {
        let claims = reg.claims(&headers).filter(Claims::catalog).ok_or_else(|| {
            reg.challenge(
                &headers,
                Some("registry:catalog:*".into()),
                "listing repositories needs a signed-in user's token with the registry:catalog:* scope",
            )
        })?;
        let n = page_size(&q)?;
        let last = q.get("last").map(String::as_str);
        let mut names = if n == 0 {
            Vec::new()
        } else {
            reg.inner
                .db
                .repository_names(last, n + 1, claims.projects.as_deref())
                .await?
        };
        let more = names.len() as i64 > n;
        names.truncate(n as usize);
        let mut resp = axum::Json(json!({"repositories": names})).into_response();
        if more && let Some(l) = names.last() {
            resp.headers_mut()
                .insert(header::LINK, header_value(&next_link("/v2/_catalog", n, l)));
        }
        Ok::<_, RegistryError>(resp)
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn referrers<A: Authority>(
    reg: &Registry<A>,
    headers: &HeaderMap,
    name: &str,
    digest: &str,
    q: &HashMap<String, String>,
) -> Result<Response> {
    reg.authorize(headers, name, Need::Pull)?;
    let d = digest_param(digest)?;
    let rows = match reg.repository(name).await? {
        Some(repo) => reg.inner.db.referrers(repo.id, &d.to_string()).await?,
        None => Vec::new(),
    };
    let filter = q.get("artifactType");
    let manifests: Vec<Value> = rows
        .into_iter()
        .filter(|m| filter.is_none_or(|f| m.artifact_type.as_deref() == Some(f.as_str())))
        .map(|m| {
            let mut v = json!({"mediaType": m.media_type, "digest": m.digest, "size": m.size});
            if let Some(t) = m.artifact_type {
                v["artifactType"] = json!(t);
            }
            if let Some(a) = m
                .annotations
                .and_then(|a| serde_json::from_str::<Value>(&a).ok())
            {
                v["annotations"] = a;
            }
            v
        })
        .collect();
    let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, OCI_INDEX);
    if filter.is_some() {
        resp = resp.header("OCI-Filters-Applied", "artifactType");
    }
    Ok(resp
        .body(Body::from(body.to_string()))
        .expect("valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_from_their_end() {
        assert_eq!(target("a/b/tags/list"), Some(Target::Tags("a/b")));
        assert_eq!(target("a/blobs/uploads/"), Some(Target::StartUpload("a")));
        assert_eq!(
            target("a/b/blobs/uploads/x1"),
            Some(Target::Upload("a/b", "x1"))
        );
        assert_eq!(
            target("blobs/x/blobs/sha256:1"),
            Some(Target::Blob("blobs/x", "sha256:1"))
        );
        assert_eq!(
            target("m/manifests/latest"),
            Some(Target::Manifest("m", "latest"))
        );
        assert_eq!(
            target("m/referrers/sha256:1"),
            Some(Target::Referrers("m", "sha256:1"))
        );
        assert_eq!(target("m/manifests/"), None);
        assert_eq!(target("m"), None);
        assert_eq!(target("m/other/x"), None);
    }

    #[test]
    fn ranges() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(range(&HeaderMap::new(), 10).unwrap(), None);
        assert_eq!(range(&h("bytes=0-3"), 10).unwrap(), Some((0, 3)));
        assert_eq!(range(&h("bytes=5-"), 10).unwrap(), Some((5, 9)));
        assert_eq!(range(&h("bytes=-4"), 10).unwrap(), Some((6, 9)));
        assert_eq!(range(&h("bytes=8-100"), 10).unwrap(), Some((8, 9)));
        for bad in [
            "bytes=10-",
            "bytes=4-2",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=x-",
        ] {
            let e = range(&h(bad), 10).unwrap_err();
            assert_eq!(e.status, StatusCode::RANGE_NOT_SATISFIABLE, "{bad}");
        }
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(chrono_like(0), "1970-01-01T00:00:00Z");
        assert_eq!(chrono_like(1_796_601_600), "2026-12-07T00:00:00Z");
    }
}
