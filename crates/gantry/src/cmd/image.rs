//! `gantry image promote SRC DEST`: promotion by digest.
//!
//! Inside this server's registry (`dev/app:1.4` → `test/app:1.4-test`, no host, or the
//! server's own host) it is one API call: the destination gets the same manifest and links
//! to the same blobs, no byte moves, and the audit log says who promoted which digest.
//!
//! When either side is another registry (`harbor.example.com/team/app:1.4`, a Distribution
//! registry, any OCI registry) the image is copied over the Distribution API: each blob the
//! destination lacks is mounted (same registry) or streamed from the source, blobs it has are
//! skipped, and the manifest is put byte for byte, so the digest stays the same.

use super::client::{self, ApiFailure, Client, Conn, Output};
use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use gantry_api::rest::{ImagePromote, ImagePromoted};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Mutex;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Promote an image by digest: `dev/app:1.4 test/app:1.4-test` inside this server's
    /// registry (links only); `HOST/NAME:TAG` on either side copies only the blobs the
    /// destination lacks, keeping the digest.
    Promote(PromoteArgs),
}

#[derive(clap::Args, Debug)]
pub struct PromoteArgs {
    /// The image: `PROJECT/NAME:TAG`, `PROJECT/NAME@sha256:…`, or with a registry host in
    /// front (`registry.example.com:5000/team/app:1.4`).
    pub source: String,
    /// The destination tag: `PROJECT/NAME:TAG`, or with a registry host in front.
    pub destination: String,
    /// The environment variable holding `user:password` for the source registry (when it
    /// is not this server).
    #[arg(long, value_name = "VAR")]
    pub src_creds_env: Option<String>,
    /// The environment variable holding `user:password` for the destination registry.
    #[arg(long, value_name = "VAR")]
    pub dest_creds_env: Option<String>,
    /// Speak plain HTTP to other registries (loopback addresses always are).
    #[arg(long)]
    pub plain_http: bool,
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub conn: Conn,
}

pub fn run(c: Command) -> Result<ExitCode> {
    match c {
        Command::Promote(a) => client::run(promote(a)),
    }
}

/// An image reference split as Docker does: a first segment with a `.` or `:` or named
/// `localhost` is a registry host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Remote {
    host: Option<String>,
    name: String,
    /// A tag or a digest.
    reference: String,
}

fn split(s: &str) -> Result<Remote> {
    let (host, rest) = match s.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first.to_string()), rest)
        }
        _ => (None, s),
    };
    let (name, reference) = if let Some((n, d)) = rest.split_once('@') {
        (n, d.to_string())
    } else if let Some((n, t)) = rest.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
        (n, t.to_string())
    } else {
        bail!("'{s}' names no tag or digest: write NAME:TAG or NAME@sha256:…");
    };
    Ok(Remote {
        host,
        name: name.to_string(),
        reference,
    })
}

async fn promote(a: PromoteArgs) -> Result<ExitCode> {
    let src = split(&a.source).map_err(usage)?;
    let dst = split(&a.destination).map_err(usage)?;
    let server_host = a
        .conn
        .server
        .split_once("://")
        .map_or(a.conn.server.as_str(), |(_, h)| h)
        .trim_end_matches('/')
        .to_string();
    let local = |r: &Remote| r.host.as_deref().is_none_or(|h| h == server_host);
    if local(&src) && local(&dst) {
        let client = Client::new(&a.conn).map_err(usage)?;
        let strip = |s: &str, r: &Remote| match &r.host {
            Some(h) => s.trim_start_matches(h).trim_start_matches('/').to_string(),
            None => s.to_string(),
        };
        let body = ImagePromote {
            source: strip(&a.source, &src),
            destination: strip(&a.destination, &dst),
        };
        let v = client
            .post(
                "/api/v1/registry/promote",
                Some(&serde_json::to_value(&body).expect("serializes")),
            )
            .await?;
        let done: ImagePromoted = client::typed(&v)?;
        if a.output.json() {
            client::print_json(&v);
        } else {
            println!(
                "promoted {} → {} ({}, {} manifest{}, no layer copied)",
                done.source,
                done.destination,
                done.digest,
                done.manifests,
                if done.manifests == 1 { "" } else { "s" }
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let creds = |var: &Option<String>| -> Result<Option<(String, String)>, ApiFailure> {
        let Some(var) = var else { return Ok(None) };
        let v = std::env::var(var).map_err(|_| usage(anyhow!("{var} is not set")))?;
        let (u, p) = v
            .split_once(':')
            .ok_or_else(|| usage(anyhow!("{var} must hold user:password")))?;
        Ok(Some((u.to_string(), p.to_string())))
    };
    let endpoint = |r: &Remote, c: Option<(String, String)>| {
        let host = r.host.clone().unwrap_or_else(|| server_host.clone());
        let plain = a.plain_http
            || host.starts_with("127.")
            || host.starts_with("localhost")
            || host.starts_with("[::1]")
            || (r.host.is_none() && a.conn.server.starts_with("http://"));
        Registry::new(
            format!("{}://{host}", if plain { "http" } else { "https" }),
            c,
        )
    };
    let from = endpoint(&src, creds(&a.src_creds_env)?);
    let to = endpoint(&dst, creds(&a.dest_creds_env)?);
    let same_registry = from.base == to.base;
    let mut stats = Stats::default();
    let digest = copy_manifest(
        &from,
        &src.name,
        &src.reference,
        &to,
        &dst.name,
        &dst.reference,
        same_registry,
        &mut stats,
    )
    .await
    .map_err(|e| ApiFailure {
        message: format!("{e:#}"),
        exit: 1,
        status: None,
    })?;
    if a.output.json() {
        client::print_json(&json!({
            "digest": digest, "source": a.source, "destination": a.destination,
            "blobs_copied": stats.copied, "blobs_mounted": stats.mounted,
            "blobs_present": stats.present, "bytes_copied": stats.bytes,
        }));
    } else {
        println!(
            "copied {} → {} ({digest}): {} blob{} copied ({} bytes), {} mounted, {} already there",
            a.source,
            a.destination,
            stats.copied,
            if stats.copied == 1 { "" } else { "s" },
            stats.bytes,
            stats.mounted,
            stats.present
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn usage(e: anyhow::Error) -> ApiFailure {
    ApiFailure {
        message: format!("{e:#}"),
        exit: 2,
        status: None,
    }
}

#[derive(Debug, Default)]
struct Stats {
    copied: usize,
    mounted: usize,
    present: usize,
    bytes: u64,
}

const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Copies a manifest (and what it needs) from one registry to another; its digest.
#[allow(clippy::too_many_arguments)]
async fn copy_manifest(
    from: &Registry,
    src: &str,
    reference: &str,
    to: &Registry,
    dst: &str,
    dst_reference: &str,
    same_registry: bool,
    stats: &mut Stats,
) -> Result<String> {
    let r = from
        .send(
            Method::GET,
            src,
            &format!("/v2/{src}/manifests/{reference}"),
            "pull",
            |rb| rb.header(header::ACCEPT, MANIFEST_TYPES),
        )
        .await?;
    if !r.status().is_success() {
        bail!("{}{src}:{reference}: {}", from.show(), explain(r).await);
    }
    let media_type = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_string();
    let bytes = r.bytes().await?;
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );
    let m: Value = serde_json::from_slice(&bytes).context("the source's manifest is not JSON")?;
    if let Some(children) = m["manifests"].as_array() {
        for c in children {
            let d = c["digest"]
                .as_str()
                .context("an index entry without a digest")?;
            Box::pin(copy_manifest(
                from,
                src,
                d,
                to,
                dst,
                d,
                same_registry,
                stats,
            ))
            .await?;
        }
    }
    let mut blobs: Vec<(String, u64)> = Vec::new();
    for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().into_iter().flatten()) {
        if let Some(digest) = d["digest"].as_str() {
            blobs.push((digest.to_string(), d["size"].as_u64().unwrap_or(0)));
        }
    }
    for (blob, _size) in blobs {
        copy_blob(from, src, to, dst, &blob, same_registry, stats).await?;
    }
    let r = to
        .send(
            Method::PUT,
            dst,
            &format!("/v2/{dst}/manifests/{dst_reference}"),
            "pull,push",
            |rb| {
                rb.header(header::CONTENT_TYPE, &media_type)
                    .body(bytes.clone())
            },
        )
        .await?;
    if !r.status().is_success() {
        bail!("{}{dst}:{dst_reference}: {}", to.show(), explain(r).await);
    }
    if let Some(got) = r
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        && got != digest
    {
        bail!("the destination stored the manifest as {got}, not {digest}");
    }
    Ok(digest)
}

async fn copy_blob(
    from: &Registry,
    src: &str,
    to: &Registry,
    dst: &str,
    digest: &str,
    same_registry: bool,
    stats: &mut Stats,
) -> Result<()> {
    let head = to
        .send(
            Method::HEAD,
            dst,
            &format!("/v2/{dst}/blobs/{digest}"),
            "pull,push",
            |rb| rb,
        )
        .await?;
    if head.status().is_success() {
        stats.present += 1;
        return Ok(());
    }
    if same_registry {
        let r = to
            .send(
                Method::POST,
                &format!("{dst} {src}"),
                &format!("/v2/{dst}/blobs/uploads/?mount={digest}&from={src}"),
                "pull,push",
                |rb| rb,
            )
            .await?;
        if r.status() == StatusCode::CREATED {
            stats.mounted += 1;
            return Ok(());
        }
    }
    let r = from
        .send(
            Method::GET,
            src,
            &format!("/v2/{src}/blobs/{digest}"),
            "pull",
            |rb| rb,
        )
        .await?;
    if !r.status().is_success() {
        bail!("{}{src} blob {digest}: {}", from.show(), explain(r).await);
    }
    let len = r.content_length();
    let start = to
        .send(
            Method::POST,
            dst,
            &format!("/v2/{dst}/blobs/uploads/"),
            "pull,push",
            |rb| rb,
        )
        .await?;
    if start.status() != StatusCode::ACCEPTED {
        bail!(
            "{}{dst}: starting an upload: {}",
            to.show(),
            explain(start).await
        );
    }
    let location = start
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .context("the destination's upload has no Location")?
        .to_string();
    let url = if location.starts_with("http") {
        location
    } else {
        format!("{}{location}", to.base)
    };
    let url = format!(
        "{url}{}digest={digest}",
        if url.contains('?') { "&" } else { "?" }
    );
    let body = reqwest::Body::wrap_stream(r.bytes_stream());
    let mut rb = to.http.put(&url).body(body);
    if let Some(n) = len {
        rb = rb.header(header::CONTENT_LENGTH, n);
    }
    let rb = to.authorize(rb, dst, "pull,push").await?;
    let done = rb.send().await?;
    if done.status() != StatusCode::CREATED {
        bail!("{}{dst} blob {digest}: {}", to.show(), explain(done).await);
    }
    stats.copied += 1;
    stats.bytes += len.unwrap_or(0);
    Ok(())
}

async fn explain(r: reqwest::Response) -> String {
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            v["errors"][0]["message"]
                .as_str()
                .or(v["message"].as_str())
                .map(String::from)
        })
        .unwrap_or(text);
    format!("{status}: {msg}")
}

/// A registry spoken to over the Distribution API, with Docker's token flow.
struct Registry {
    base: String,
    http: reqwest::Client,
    creds: Option<(String, String)>,
    /// Tokens by scope; `None` value: the registry wants Basic credentials.
    tokens: Mutex<HashMap<String, Option<String>>>,
}

impl Registry {
    fn new(base: String, creds: Option<(String, String)>) -> Registry {
        Registry {
            base,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::limited(5))
                .build()
                .expect("an HTTP client"),
            creds,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn show(&self) -> String {
        format!("{}/", self.base.split_once("://").map_or("", |(_, h)| h))
    }

    fn basic(&self) -> Option<String> {
        self.creds.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        })
    }

    /// Adds what the registry wants for `repos` (space-separated names) and `actions`.
    async fn authorize(
        &self,
        rb: reqwest::RequestBuilder,
        repos: &str,
        actions: &str,
    ) -> Result<reqwest::RequestBuilder> {
        let key = format!("{repos}|{actions}");
        let known = self.tokens.lock().expect("tokens").get(&key).cloned();
        Ok(match known {
            Some(Some(t)) => rb.bearer_auth(t),
            Some(None) => match self.basic() {
                Some(b) => rb.header(header::AUTHORIZATION, b),
                None => rb,
            },
            None => rb,
        })
    }

    /// Sends a request, answering a 401 challenge once (a token for the scope, or Basic).
    async fn send(
        &self,
        method: Method,
        repos: &str,
        path: &str,
        actions: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let rb = self
            .authorize(
                build(self.http.request(method.clone(), &url)),
                repos,
                actions,
            )
            .await?;
        let r = rb
            .send()
            .await
            .with_context(|| format!("{} {url}", method))?;
        if r.status() != StatusCode::UNAUTHORIZED {
            return Ok(r);
        }
        let challenge = r
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let key = format!("{repos}|{actions}");
        if challenge.to_ascii_lowercase().starts_with("bearer") {
            let params = challenge_params(&challenge);
            let realm = params
                .get("realm")
                .context("a Bearer challenge without a realm")?;
            let mut q: Vec<(String, String)> = Vec::new();
            if let Some(s) = params.get("service") {
                q.push(("service".into(), s.clone()));
            }
            for repo in repos.split(' ') {
                q.push(("scope".into(), format!("repository:{repo}:{actions}")));
            }
            let url = reqwest::Url::parse_with_params(realm, &q)
                .with_context(|| format!("the token realm {realm}"))?;
            let mut tr = self.http.get(url);
            if let Some(b) = self.basic() {
                tr = tr.header(header::AUTHORIZATION, b);
            }
            let t = tr
                .send()
                .await
                .with_context(|| format!("asking {realm} for a token"))?;
            if !t.status().is_success() {
                bail!(
                    "{}: the token endpoint refused: {}",
                    self.show(),
                    explain(t).await
                );
            }
            let v: Value = t.json().await.context("the token endpoint's answer")?;
            let token = v["token"]
                .as_str()
                .or(v["access_token"].as_str())
                .context("the token endpoint sent no token")?
                .to_string();
            self.tokens.lock().expect("tokens").insert(key, Some(token));
        } else {
            if self.creds.is_none() {
                bail!(
                    "{}: credentials are needed (--src-creds-env / --dest-creds-env)",
                    self.show()
                );
            }
            self.tokens.lock().expect("tokens").insert(key, None);
        }
        let rb = self
            .authorize(build(self.http.request(method, &url)), repos, actions)
            .await?;
        Ok(rb.send().await?)
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
    fn references_split_like_docker() {
        let r = split("dev/app:1.4").unwrap();
        assert_eq!(
            (r.host, r.name.as_str(), r.reference.as_str()),
            (None, "dev/app", "1.4")
        );
        let r = split("127.0.0.1:5000/team/app@sha256:abc").unwrap();
        assert_eq!(r.host.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(
            (r.name.as_str(), r.reference.as_str()),
            ("team/app", "sha256:abc")
        );
        let r = split("localhost/app:x").unwrap();
        assert_eq!(r.host.as_deref(), Some("localhost"));
        assert!(split("dev/app").is_err());
    }

    #[test]
    fn challenges() {
        let p = challenge_params(
            r#"Bearer realm="http://h/v2/token",service="gantry-registry",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "http://h/v2/token");
        assert_eq!(p["service"], "gantry-registry");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
    }
}
