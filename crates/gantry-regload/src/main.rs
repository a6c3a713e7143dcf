//! `registry-load`: a load client for OCI registries (OCI Distribution Spec 1.1), the driver of
//! `benches/registry`. It speaks the HTTP API itself (reqwest, HTTP/1.1 keep-alive, one
//! connection pool per simulated client) so the same binary measures Gantry's registry and a
//! peer (CNCF Distribution) side by side.
//!
//! Everything that is not the registry's work happens before the clock starts: the data is
//! generated from a seeded RNG, every digest is computed, a token is fetched for every
//! repository the run touches, and what earlier phases wrote is flushed to disk (`sync`). What is timed is HTTP requests and, on pulls, hashing what comes
//! back to verify it (a real client does that too).
//!
//! Authentication follows the Docker token flow, generically: `GET /v2/` answers 200 (no
//! auth), 401 with `WWW-Authenticate: Basic …` (the credentials on every request) or 401 with
//! `Bearer realm=…,service=…` (a token fetched from the realm with the credentials in Basic
//! auth and `scope=repository:NAME:pull,push`, cached per scope and fetched again when a
//! request answers 401).
//!
//! Scenarios (each with `--clients N` concurrent clients, each client its own connections):
//!
//! - `large`: each client pushes one layer of `--layer-mib` MiB and a manifest naming it, once
//!   with a monolithic upload (POST, then PUT with the body) and once as docker does (POST,
//!   one streaming PATCH with chunked transfer encoding, PUT to close), then pulls its layer
//!   back and verifies its digest. All layers differ: one shared random buffer with a random
//!   first MiB per client and mode, so memory stays near one layer whatever N is.
//! - `small`: `--images` small images (a ~1 KiB config, two layers of 2 and 6 KiB, an OCI
//!   manifest under a tag) split between the clients (client k pushes into repository
//!   `PREFIX…/small-cK`), pushed as docker does (per blob: HEAD, POST, PATCH, PUT; then PUT
//!   of the manifest), then pulled (GET manifest, GET each blob, digests verified).
//! - `sha256`: this machine's single-core SHA-256 speed (sha2 over a 256 MiB buffer).
//!
//! Output: one JSON object per line on stdout, per measured phase: `{"scenario", "clients",
//! "seconds", "bytes", "images", "requests", "server_cpu", "client_cpu"}` (CPU seconds, user +
//! system, of the server given by `--server-pid` and of this client over the phase; null when
//! unknown). Progress and errors go to stderr.

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use clap::Parser;
use futures_util::StreamExt;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// What a body is streamed in.
const CHUNK: usize = MIB;

#[derive(Parser, Debug)]
#[command(name = "registry-load", about = "A load client for OCI registries")]
struct Args {
    /// What to run: large, small, sha256 (several: comma-separated).
    #[arg(long, default_value = "large,small", value_delimiter = ',')]
    scenario: Vec<String>,
    /// The registry's base URL, e.g. http://127.0.0.1:5000.
    #[arg(long)]
    url: Option<String>,
    /// User name for Basic auth or the token realm.
    #[arg(long, env = "REGISTRY_LOAD_USER")]
    user: Option<String>,
    /// Password or personal access token.
    #[arg(long, env = "REGISTRY_LOAD_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Repository names start with this (for Gantry: `PROJECT/`).
    #[arg(long, default_value = "bench/")]
    prefix: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Size of each large layer, MiB.
    #[arg(long, default_value_t = 256)]
    layer_mib: usize,
    /// Number of small images (split between the clients).
    #[arg(long, default_value_t = 200)]
    images: usize,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Distinguishes this run's repositories from other runs' against the same registry.
    #[arg(long, default_value = "run")]
    run_id: String,
    /// The registry server's PID: its CPU time (user + system) over each timed phase is
    /// reported as `server_cpu`.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The large scenario's phases: push-put, push-patch, pull (several: comma-separated;
    /// the pull reads what push-put stored, which is pushed untimed when it is left out).
    #[arg(
        long,
        default_value = "push-put,push-patch,pull",
        value_delimiter = ','
    )]
    large_phases: Vec<String>,
}

/// `--server-pid`, for [`all_at_once`].
static SERVER_PID: OnceLock<u32> = OnceLock::new();
/// CPU seconds of the server and of this process over the last [`all_at_once`], for [`emit`].
static LAST_CPU: Mutex<(Option<f64>, Option<f64>)> = Mutex::new((None, None));

/// User + system CPU seconds of a process (`/proc/PID/stat`, in clock ticks of 1/100 s, which
/// Linux keeps at 100 on every architecture for user space).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.clients >= 1, "--clients must be at least 1");
    if let Some(pid) = args.server_pid {
        ensure!(
            cpu_seconds(&pid.to_string()).is_some(),
            "--server-pid {pid}: no such process"
        );
        let _ = SERVER_PID.set(pid);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    for scenario in &args.scenario {
        match scenario.as_str() {
            "sha256" => sha256_speed(),
            "large" => large(&args).await?,
            "small" => small(&args).await?,
            other => bail!("unknown scenario '{other}' (known: large, small, sha256)"),
        }
    }
    Ok(())
}

fn emit(scenario: &str, clients: usize, seconds: f64, bytes: u64, images: usize, requests: u64) {
    let (server_cpu, client_cpu) = std::mem::take(&mut *LAST_CPU.lock().unwrap());
    println!(
        "{}",
        json!({
            "scenario": scenario,
            "clients": clients,
            "seconds": seconds,
            "bytes": bytes,
            "images": images,
            "requests": requests,
            "server_cpu": server_cpu,
            "client_cpu": client_cpu,
        })
    );
}

// --- data -------------------------------------------------------------------------------------

/// xoshiro256**: fast, seeded, good enough to make data no compressor or deduplicator can
/// shrink.
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 to spread the seed over the state.
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A blob made of a head of its own and the shared tail (`shared[head.len()..]`).
#[derive(Clone)]
struct SplitBlob {
    head: Bytes,
    shared: Bytes,
    digest: String,
}

impl SplitBlob {
    fn new(head: Bytes, shared: Bytes) -> SplitBlob {
        let mut h = Sha256::new();
        h.update(&head);
        h.update(&shared[head.len()..]);
        let digest = format!("sha256:{}", hex::encode(h.finalize()));
        SplitBlob {
            head,
            shared,
            digest,
        }
    }

    fn len(&self) -> usize {
        self.shared.len()
    }

    /// The blob in chunks of at most [`CHUNK`], without copying.
    fn chunks(&self) -> Vec<Bytes> {
        let mut out = vec![self.head.clone()];
        let mut at = self.head.len();
        while at < self.shared.len() {
            let end = (at + CHUNK).min(self.shared.len());
            out.push(self.shared.slice(at..end));
            at = end;
        }
        out
    }

    fn body(&self) -> reqwest::Body {
        let chunks = self.chunks();
        reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks.into_iter().map(Ok::<Bytes, std::io::Error>),
        ))
    }
}

struct Image {
    repo: String,
    tag: String,
    /// (digest, data, media type), the config first.
    blobs: Vec<(String, Bytes, &'static str)>,
    manifest: Bytes,
    manifest_digest: String,
}

fn manifest_for(config: (&str, usize), layers: &[(&str, usize)]) -> Bytes {
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0, "size": config.1},
        "layers": layers.iter().map(|(d, s)| json!({"mediaType": OCI_LAYER, "digest": d, "size": s})).collect::<Vec<_>>(),
    });
    Bytes::from(serde_json::to_vec(&m).expect("a manifest serialises"))
}

fn config_json(rng: &mut Rng, layer_digests: &[&str]) -> Bytes {
    // ~1 KiB: a plausible image config with a random label so every config differs.
    let c = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"org.gantry.bench": hex::encode(rng.bytes(300))},
        },
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
        "history": [{"created_by": "registry-load", "comment": "generated"}],
    });
    Bytes::from(serde_json::to_vec(&c).expect("a config serialises"))
}

// --- HTTP and auth ----------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Mode {
    Anonymous,
    Basic,
    Bearer { realm: String, service: String },
}

/// One simulated client: its own connection pool, the auth mode learnt from `/v2/`, tokens per
/// scope.
struct Reg {
    http: Client,
    base: String,
    user: Option<String>,
    password: Option<String>,
    mode: Mode,
    tokens: Mutex<HashMap<String, String>>,
    requests: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Reg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reg")
            .field("base", &self.base)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// `key="value"` pairs of a `WWW-Authenticate` challenge's parameters.
fn challenge_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        rest = &rest[eq + 1..];
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            value = r[..end].to_string();
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.insert(key.to_ascii_lowercase(), value);
    }
    out
}

fn parse_mode(header: Option<&str>) -> Result<Mode> {
    let h = header.ok_or_else(|| anyhow!("401 without WWW-Authenticate"))?;
    let (scheme, params) = h.split_once(' ').unwrap_or((h, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Ok(Mode::Basic),
        "bearer" => {
            let p = challenge_params(params);
            Ok(Mode::Bearer {
                realm: p
                    .get("realm")
                    .cloned()
                    .ok_or_else(|| anyhow!("Bearer challenge without realm: {h}"))?,
                service: p.get("service").cloned().unwrap_or_default(),
            })
        }
        _ => bail!("unknown auth scheme: {h}"),
    }
}

fn scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

impl Reg {
    async fn connect(base: &str, user: Option<String>, password: Option<String>) -> Result<Reg> {
        let http = Client::builder()
            .http1_only()
            .no_proxy()
            .pool_max_idle_per_host(4)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(600))
            .build()?;
        let base = base.trim_end_matches('/').to_string();
        let r = http.get(format!("{base}/v2/")).send().await?;
        let mode = match r.status() {
            StatusCode::OK => Mode::Anonymous,
            StatusCode::UNAUTHORIZED => parse_mode(
                r.headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok()),
            )?,
            s => bail!("GET {base}/v2/ answered {s}"),
        };
        if !matches!(mode, Mode::Anonymous) && user.is_none() {
            bail!("{base} wants authentication ({mode:?}): give --user and --password");
        }
        Ok(Reg {
            http,
            base,
            user,
            password,
            mode,
            tokens: Mutex::new(HashMap::new()),
            requests: 0.into(),
        })
    }

    /// Fetches (and caches) the token for `repo` when the registry wants tokens.
    async fn prime(&self, repo: &str) -> Result<()> {
        let cached = self.tokens.lock().unwrap().contains_key(&scope(repo));
        if matches!(self.mode, Mode::Bearer { .. }) && !cached {
            self.fetch_token(&scope(repo)).await?;
        }
        Ok(())
    }

    async fn fetch_token(&self, scope: &str) -> Result<String> {
        let Mode::Bearer { realm, service } = &self.mode else {
            bail!("no token realm");
        };
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("service", service)
            .append_pair("scope", scope)
            .finish();
        let sep = if realm.contains('?') { '&' } else { '?' };
        let r = self
            .http
            .get(format!("{realm}{sep}{query}"))
            .basic_auth(self.user.as_deref().unwrap_or(""), self.password.as_deref())
            .send()
            .await?;
        let status = r.status();
        let text = r.bytes().await?;
        let body: Value = serde_json::from_slice(&text).with_context(|| {
            format!(
                "token from {realm}: {status} {}",
                String::from_utf8_lossy(&text)
            )
        })?;
        ensure!(status.is_success(), "token from {realm}: {status} {body}");
        let token = body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .ok_or_else(|| anyhow!("token response without token: {body}"))?
            .to_string();
        self.tokens
            .lock()
            .unwrap()
            .insert(scope.to_string(), token.clone());
        Ok(token)
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    fn authorize(&self, b: RequestBuilder, repo: &str) -> RequestBuilder {
        match &self.mode {
            Mode::Anonymous => b,
            Mode::Basic => {
                b.basic_auth(self.user.as_deref().unwrap_or(""), self.password.as_deref())
            }
            Mode::Bearer { .. } => match self.tokens.lock().unwrap().get(&scope(repo)) {
                Some(t) => b.header(AUTHORIZATION, format!("Bearer {t}")),
                None => b,
            },
        }
    }

    /// A request whose body can be made again (none, or small bytes): sent, and sent once
    /// more with a fresh token should it answer 401.
    async fn send(
        &self,
        method: Method,
        url: &str,
        repo: &str,
        headers: &[(&str, String)],
        body: Option<Bytes>,
    ) -> Result<Response> {
        for attempt in 0..2 {
            let mut b = self.http.request(method.clone(), self.url(url));
            for (k, v) in headers {
                b = b.header(*k, v);
            }
            if let Some(body) = &body {
                b = b.body(body.clone());
            }
            self.requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let r = self.authorize(b, repo).send().await?;
            if r.status() == StatusCode::UNAUTHORIZED
                && attempt == 0
                && matches!(self.mode, Mode::Bearer { .. })
            {
                self.fetch_token(&scope(repo)).await?;
                continue;
            }
            return Ok(r);
        }
        unreachable!("the loop returns")
    }

    /// A request with a streamed body (no retry: call [`Reg::prime`] first).
    async fn send_stream(
        &self,
        method: Method,
        url: &str,
        repo: &str,
        headers: &[(&str, String)],
        body: reqwest::Body,
    ) -> Result<Response> {
        let mut b = self.http.request(method, self.url(url)).body(body);
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.authorize(b, repo).send().await?)
    }

    fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }
}

async fn expect(r: Response, want: StatusCode, what: &str) -> Result<Response> {
    if r.status() != want {
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        bail!(
            "{what}: expected {want}, got {status}: {}",
            text.chars().take(400).collect::<String>()
        );
    }
    Ok(r)
}

fn location(r: &Response) -> Result<String> {
    r.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no Location header"))
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

async fn start_upload(reg: &Reg, repo: &str) -> Result<String> {
    let r = reg
        .send(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            repo,
            &[(CONTENT_LENGTH.as_str(), "0".into())],
            None,
        )
        .await?;
    let r = expect(r, StatusCode::ACCEPTED, "POST blobs/uploads").await?;
    location(&r)
}

/// POST, then PUT with the whole body (Content-Length set).
async fn push_monolithic(reg: &Reg, repo: &str, blob: &SplitBlob) -> Result<()> {
    let loc = start_upload(reg, repo).await?;
    let r = reg
        .send_stream(
            Method::PUT,
            &with_digest(&loc, &blob.digest),
            repo,
            &[
                (CONTENT_TYPE.as_str(), "application/octet-stream".into()),
                (CONTENT_LENGTH.as_str(), blob.len().to_string()),
            ],
            blob.body(),
        )
        .await?;
    expect(r, StatusCode::CREATED, "PUT blob (monolithic)").await?;
    Ok(())
}

/// As docker pushes a layer: POST, one PATCH streaming the body in chunked transfer encoding,
/// PUT with the digest and no body.
async fn push_chunked(reg: &Reg, repo: &str, blob: &SplitBlob) -> Result<()> {
    let loc = start_upload(reg, repo).await?;
    let r = reg
        .send_stream(
            Method::PATCH,
            &loc,
            repo,
            &[(CONTENT_TYPE.as_str(), "application/octet-stream".into())],
            blob.body(),
        )
        .await?;
    let r = expect(r, StatusCode::ACCEPTED, "PATCH blob").await?;
    let loc = location(&r)?;
    let r = reg
        .send(
            Method::PUT,
            &with_digest(&loc, &blob.digest),
            repo,
            &[(CONTENT_LENGTH.as_str(), "0".into())],
            None,
        )
        .await?;
    expect(r, StatusCode::CREATED, "PUT blob (close)").await?;
    Ok(())
}

/// A small blob as docker pushes it: HEAD (absent), POST, PATCH, PUT.
async fn push_small_blob(reg: &Reg, repo: &str, digest: &str, data: &Bytes) -> Result<()> {
    let r = reg
        .send(
            Method::HEAD,
            &format!("/v2/{repo}/blobs/{digest}"),
            repo,
            &[],
            None,
        )
        .await?;
    if r.status() == StatusCode::OK {
        return Ok(());
    }
    expect(r, StatusCode::NOT_FOUND, "HEAD blob").await?;
    let loc = start_upload(reg, repo).await?;
    let r = reg
        .send(
            Method::PATCH,
            &loc,
            repo,
            &[
                (CONTENT_TYPE.as_str(), "application/octet-stream".into()),
                (CONTENT_LENGTH.as_str(), data.len().to_string()),
            ],
            Some(data.clone()),
        )
        .await?;
    let r = expect(r, StatusCode::ACCEPTED, "PATCH blob").await?;
    let loc = location(&r)?;
    let r = reg
        .send(
            Method::PUT,
            &with_digest(&loc, digest),
            repo,
            &[(CONTENT_LENGTH.as_str(), "0".into())],
            None,
        )
        .await?;
    expect(r, StatusCode::CREATED, "PUT blob").await?;
    Ok(())
}

async fn put_manifest(reg: &Reg, repo: &str, reference: &str, manifest: &Bytes) -> Result<()> {
    let r = reg
        .send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            repo,
            &[(CONTENT_TYPE.as_str(), OCI_MANIFEST.into())],
            Some(manifest.clone()),
        )
        .await?;
    expect(r, StatusCode::CREATED, "PUT manifest").await?;
    Ok(())
}

/// GET a blob, hashing it as it streams in; fails unless it has `digest` and `size`.
async fn pull_blob(reg: &Reg, repo: &str, digest: &str, size: usize) -> Result<()> {
    let r = reg
        .send(
            Method::GET,
            &format!("/v2/{repo}/blobs/{digest}"),
            repo,
            &[],
            None,
        )
        .await?;
    let r = expect(r, StatusCode::OK, "GET blob").await?;
    let mut h = Sha256::new();
    let mut n = 0usize;
    let mut s = r.bytes_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk?;
        n += chunk.len();
        h.update(&chunk);
    }
    let got = format!("sha256:{}", hex::encode(h.finalize()));
    ensure!(
        got == digest && n == size,
        "GET blob {digest}: got {got}, {n} bytes (want {size})"
    );
    Ok(())
}

// --- scenarios --------------------------------------------------------------------------------

async fn clients(args: &Args) -> Result<Vec<Arc<Reg>>> {
    let url = args
        .url
        .as_deref()
        .ok_or_else(|| anyhow!("--url is needed"))?;
    let mut out = Vec::new();
    for _ in 0..args.clients {
        out.push(Arc::new(
            Reg::connect(url, args.user.clone(), args.password.clone()).await?,
        ));
    }
    Ok(out)
}

fn total_requests(regs: &[Arc<Reg>]) -> u64 {
    regs.iter().map(|r| r.requests()).sum()
}

/// Runs `f(client index)` on every client at once; the wall time of the slowest.
/// Writes the page cache's dirty pages to disk before a phase (`sync`), so that a phase does
/// not pay for the previous one's writeback: the kernel throttles writers once dirty pages
/// pass a share of memory, and a fast system would otherwise be billed for the gigabytes it
/// stored a moment before. Every system gets the same.
fn settle_page_cache() {
    if let Err(e) = std::process::Command::new("sync").status() {
        eprintln!("sync before a phase failed ({e}); phases may bill each other's writeback");
    }
}

async fn all_at_once<F, Fut>(n: usize, f: F) -> Result<f64>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    settle_page_cache();
    let server = SERVER_PID.get().map(u32::to_string);
    let cpu = || (server.as_deref().and_then(cpu_seconds), cpu_seconds("self"));
    let before = cpu();
    let start = Instant::now();
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let after = cpu();
    let diff = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    *LAST_CPU.lock().unwrap() = (diff(before.0, after.0), diff(before.1, after.1));
    Ok(secs)
}

async fn large(args: &Args) -> Result<()> {
    let n = args.clients;
    let size = args.layer_mib * MIB;
    ensure!(size > MIB, "--layer-mib must be at least 2");
    eprintln!(
        "large: generating a {} MiB layer and {} digests",
        args.layer_mib,
        2 * n
    );
    let mut rng = Rng::new(args.seed);
    let shared = Bytes::from(rng.bytes(size));
    let modes = ["put", "patch"];
    // blobs[mode][client]
    let blobs: Vec<Vec<SplitBlob>> = modes
        .iter()
        .enumerate()
        .map(|(m, _)| {
            (0..n)
                .map(|c| {
                    let mut r = Rng::new(args.seed ^ ((m as u64 + 1) << 32) ^ (c as u64 + 1));
                    SplitBlob::new(Bytes::from(r.bytes(MIB)), shared.clone())
                })
                .collect()
        })
        .collect();
    let regs = clients(args).await?;
    let repo = |c: usize| format!("{}{}-large-c{c}", args.prefix, args.run_id);
    let mut manifests = Vec::new();
    for (c, reg) in regs.iter().enumerate() {
        reg.prime(&repo(c)).await?;
        let config = config_json(&mut rng, &[]);
        let cd = digest_of(&config);
        // The config blob goes up before the clock starts: the scenario is the layer.
        let b = SplitBlob::new(config.clone(), config.clone());
        push_monolithic(reg, &repo(c), &b).await?;
        manifests.push(
            modes
                .iter()
                .enumerate()
                .map(|(m, _)| manifest_for((&cd, config.len()), &[(&blobs[m][c].digest, size)]))
                .collect::<Vec<_>>(),
        );
    }
    let manifests = Arc::new(manifests);
    let timed = |phase: &str| args.large_phases.iter().any(|p| p == phase);
    for (m, mode) in modes.iter().enumerate() {
        let phase = format!("push-{mode}");
        // push-put also stores what the pull reads.
        let needed = timed(&phase) || (m == 0 && timed("pull"));
        if !needed {
            continue;
        }
        let before = total_requests(&regs);
        let secs = all_at_once(n, |c| {
            let reg = regs[c].clone();
            let blob = blobs[m][c].clone();
            let repo = repo(c);
            let manifests = manifests.clone();
            let mode = *mode;
            async move {
                if mode == "put" {
                    push_monolithic(&reg, &repo, &blob).await?;
                } else {
                    push_chunked(&reg, &repo, &blob).await?;
                }
                put_manifest(&reg, &repo, mode, &manifests[c][m]).await
            }
        })
        .await?;
        if !timed(&phase) {
            continue;
        }
        emit(
            &format!("large-push-{mode}"),
            n,
            secs,
            (size * n) as u64,
            n,
            total_requests(&regs) - before,
        );
        eprintln!(
            "large-push-{mode}: {n} x {} MiB in {secs:.2}s",
            args.layer_mib
        );
    }
    if !timed("pull") {
        return Ok(());
    }
    let before = total_requests(&regs);
    let secs = all_at_once(n, |c| {
        let reg = regs[c].clone();
        let digest = blobs[0][c].digest.clone();
        let repo = repo(c);
        async move { pull_blob(&reg, &repo, &digest, size).await }
    })
    .await?;
    emit(
        "large-pull",
        n,
        secs,
        (size * n) as u64,
        n,
        total_requests(&regs) - before,
    );
    eprintln!("large-pull: {n} x {} MiB in {secs:.2}s", args.layer_mib);
    Ok(())
}

async fn small(args: &Args) -> Result<()> {
    let n = args.clients;
    let mut rng = Rng::new(args.seed.wrapping_add(0x5a11));
    let repo = |c: usize| format!("{}{}-small-c{c}", args.prefix, args.run_id);
    // images[client] = that client's share.
    let mut images: Vec<Vec<Image>> = (0..n).map(|_| Vec::new()).collect();
    let mut bytes = 0u64;
    for i in 0..args.images {
        let c = i % n;
        let l1 = Bytes::from(rng.bytes(2 * 1024));
        let l2 = Bytes::from(rng.bytes(6 * 1024));
        let (d1, d2) = (digest_of(&l1), digest_of(&l2));
        let config = config_json(&mut rng, &[&d1, &d2]);
        let cd = digest_of(&config);
        let manifest = manifest_for((&cd, config.len()), &[(&d1, l1.len()), (&d2, l2.len())]);
        bytes += (l1.len() + l2.len() + config.len() + manifest.len()) as u64;
        images[c].push(Image {
            repo: repo(c),
            tag: format!("i{i}"),
            manifest_digest: digest_of(&manifest),
            blobs: vec![
                (cd, config, OCI_CONFIG),
                (d1, l1, OCI_LAYER),
                (d2, l2, OCI_LAYER),
            ],
            manifest,
        });
    }
    let regs = clients(args).await?;
    for (c, reg) in regs.iter().enumerate() {
        reg.prime(&repo(c)).await?;
    }
    let images = Arc::new(images);
    let total = args.images;

    let before = total_requests(&regs);
    let secs = all_at_once(n, |c| {
        let reg = regs[c].clone();
        let images = images.clone();
        async move {
            for img in &images[c] {
                for (d, data, _) in &img.blobs {
                    push_small_blob(&reg, &img.repo, d, data).await?;
                }
                put_manifest(&reg, &img.repo, &img.tag, &img.manifest).await?;
            }
            Ok(())
        }
    })
    .await?;
    emit(
        "small-push",
        n,
        secs,
        bytes,
        total,
        total_requests(&regs) - before,
    );
    eprintln!("small-push: {total} images in {secs:.2}s");

    let before = total_requests(&regs);
    let secs = all_at_once(n, |c| {
        let reg = regs[c].clone();
        let images = images.clone();
        async move {
            for img in &images[c] {
                let r = reg
                    .send(
                        Method::GET,
                        &format!("/v2/{}/manifests/{}", img.repo, img.tag),
                        &img.repo,
                        &[("accept", format!("{OCI_MANIFEST}, {DOCKER_MANIFEST}"))],
                        None,
                    )
                    .await?;
                let r = expect(r, StatusCode::OK, "GET manifest").await?;
                let body = r.bytes().await?;
                ensure!(
                    digest_of(&body) == img.manifest_digest,
                    "GET manifest {}:{}: another manifest came back",
                    img.repo,
                    img.tag
                );
                for (d, data, _) in &img.blobs {
                    pull_blob(&reg, &img.repo, d, data.len()).await?;
                }
            }
            Ok(())
        }
    })
    .await?;
    emit(
        "small-pull",
        n,
        secs,
        bytes,
        total,
        total_requests(&regs) - before,
    );
    eprintln!("small-pull: {total} images in {secs:.2}s");
    Ok(())
}

/// Single-core SHA-256 over a 256 MiB buffer, best of three.
fn sha256_speed() {
    let data = Rng::new(7).bytes(256 * MIB);
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let d = Sha256::digest(&data);
        std::hint::black_box(d);
        best = best.min(start.elapsed().as_secs_f64());
    }
    emit("sha256", 1, best, data.len() as u64, 0, 0);
    eprintln!(
        "sha256: {:.0} MiB/s on one core",
        data.len() as f64 / MIB as f64 / best
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let m = parse_mode(Some(
            r#"Bearer realm="http://127.0.0.1:8080/v2/token",service="gantry",scope="repository:a/b:pull""#,
        ))
        .unwrap();
        match m {
            Mode::Bearer { realm, service } => {
                assert_eq!(realm, "http://127.0.0.1:8080/v2/token");
                assert_eq!(service, "gantry");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_mode(Some(r#"Basic realm="x""#)).unwrap(),
            Mode::Basic
        ));
        assert!(parse_mode(None).is_err());
    }

    #[test]
    fn split_blob_digest_is_the_whole_blob() {
        let shared = Bytes::from(Rng::new(1).bytes(3 * MIB + 5));
        let head = Bytes::from(Rng::new(2).bytes(MIB));
        let b = SplitBlob::new(head.clone(), shared.clone());
        let mut whole = head.to_vec();
        whole.extend_from_slice(&shared[MIB..]);
        assert_eq!(b.digest, digest_of(&whole));
        let joined: Vec<u8> = b.chunks().iter().flat_map(|c| c.to_vec()).collect();
        assert_eq!(joined, whole);
    }

    /// A registry that wants tokens: `GET /v2/` without one answers 401 `Bearer realm=…`;
    /// `/token` gives `tok-N` (as `access_token` only) for `u`/`p` in Basic auth; any other
    /// path answers 200 to the current token only. `expire()` makes the current token stale.
    struct FakeTokenRegistry {
        addr: String,
        state: Arc<Mutex<(u32, Vec<String>)>>, // (tokens issued, scopes asked)
    }

    impl FakeTokenRegistry {
        async fn start() -> FakeTokenRegistry {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let state = Arc::new(Mutex::new((0u32, Vec::new())));
            let (st, realm) = (state.clone(), format!("http://{addr}/token"));
            tokio::spawn(async move {
                loop {
                    let (mut sock, _) = listener.accept().await.unwrap();
                    let (st, realm) = (st.clone(), realm.clone());
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        loop {
                            let mut chunk = [0u8; 4096];
                            let n = match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            buf.extend_from_slice(&chunk[..n]);
                            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                                buf.drain(..end + 4);
                                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                                let auth = head
                                    .lines()
                                    .find_map(|l| {
                                        l.to_ascii_lowercase()
                                            .starts_with("authorization:")
                                            .then(|| l[14..].trim().to_string())
                                    })
                                    .unwrap_or_default();
                                let (status, extra, body) = {
                                    let mut s = st.lock().unwrap();
                                    if let Some(q) = path.strip_prefix("/token?") {
                                        if auth != "Basic dTpw" {
                                            ("401 Unauthorized", String::new(), String::new())
                                        } else {
                                            s.0 += 1;
                                            s.1.push(q.to_string());
                                            let t = format!("tok-{}", s.0);
                                            (
                                                "200 OK",
                                                String::new(),
                                                format!(
                                                    r#"{{"access_token":"{t}","expires_in":300}}"#
                                                ),
                                            )
                                        }
                                    } else if auth == format!("Bearer tok-{}", s.0) && s.0 > 0 {
                                        ("200 OK", String::new(), "{}".to_string())
                                    } else {
                                        (
                                            "401 Unauthorized",
                                            format!(
                                                "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"fake\"\r\n"
                                            ),
                                            String::new(),
                                        )
                                    }
                                };
                                let resp = format!(
                                    "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                                    body.len()
                                );
                                if sock.write_all(resp.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            });
            FakeTokenRegistry { addr, state }
        }

        /// The next token will be `tok-N+1`; `tok-N` stays refused until then.
        fn expire(&self) {
            self.state.lock().unwrap().0 += 1;
        }
    }

    #[tokio::test]
    async fn the_token_flow_fetches_per_scope_and_again_after_a_401() {
        let fake = FakeTokenRegistry::start().await;
        let url = format!("http://{}", fake.addr);
        let reg = Reg::connect(&url, Some("u".into()), Some("p".into()))
            .await
            .unwrap();
        assert!(matches!(&reg.mode, Mode::Bearer { service, .. } if service == "fake"));
        reg.prime("team/app").await.unwrap();
        reg.prime("team/app").await.unwrap(); // cached: no second fetch
        let get = |repo: &'static str| {
            let reg = &reg;
            async move {
                reg.send(
                    Method::GET,
                    &format!("/v2/{repo}/tags/list"),
                    repo,
                    &[],
                    None,
                )
                .await
                .unwrap()
                .status()
            }
        };
        assert_eq!(get("team/app").await, StatusCode::OK);
        fake.expire();
        // The cached token is refused now: one 401, a new token, the request again.
        assert_eq!(get("team/app").await, StatusCode::OK);
        let scopes = fake.state.lock().unwrap().1.clone();
        assert_eq!(
            scopes,
            vec![
                "service=fake&scope=repository%3Ateam%2Fapp%3Apull%2Cpush".to_string(),
                "service=fake&scope=repository%3Ateam%2Fapp%3Apull%2Cpush".to_string(),
            ]
        );
        let wrong = Reg::connect(&url, Some("u".into()), Some("nope".into()))
            .await
            .unwrap();
        let err = wrong.prime("team/app").await.unwrap_err();
        assert!(format!("{err:#}").contains("401"), "{err:#}");
        let anonymous = Reg::connect(&url, None, None).await.unwrap_err();
        assert!(format!("{anonymous:#}").contains("--user"), "{anonymous:#}");
    }

    #[test]
    fn upload_locations_get_the_digest() {
        assert_eq!(
            with_digest("/v2/a/u/1", "sha256:x"),
            "/v2/a/u/1?digest=sha256:x"
        );
        assert_eq!(
            with_digest("/v2/a/u/1?_state=s", "sha256:x"),
            "/v2/a/u/1?_state=s&digest=sha256:x"
        );
    }
}
