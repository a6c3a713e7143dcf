//! Test infrastructure for Gantry's Docker-backed tests: a real Docker Engine, reached the way
//! Gantry reaches it (bollard over `DOCKER_HOST`), and a tiny image built on the spot from the
//! host's `busybox-static`, so no test ever pulls from a registry.
//!
//! # Map
//!
//! | item | what it does |
//! | --- | --- |
//! | [`docker`], [`docker_at`] | connects to `DOCKER_HOST` (default `unix:///var/run/docker.sock`) and negotiates the Engine API version down to what the engine speaks |
//! | [`docker_available`] | `true` when an engine answers |
//! | [`docker_for_test`] | the connection a test should use: `Ok(None)` (skip, with a note on stderr) when no engine answers, or an error instead when `GANTRY_REQUIRE_DOCKER=1` ([`REQUIRE_DOCKER_ENV`]) |
//! | [`ensure_busybox_image`] | builds [`BUSYBOX_IMAGE`] through the Engine API import endpoint, only when it is missing or has an older [`BUSYBOX_LAYOUT`] |
//! | [`run_container`] | create, start, wait, read logs, remove: one command in a throwaway container |
//! | [`wait_exit_code`], [`container_logs`], [`force_remove_container`] | the pieces of [`run_container`] |
//! | [`unique_name`] | container and network names that collide neither between tests nor between runs |
//! | [`registry`] | OCI images made locally, the registry clients (skopeo, buildah, docker, umoci), a private peer registry, and whole client checks against any registry |
//! | [`s3`] | S3-compatible object storage: PyPI's moto server on a free port, with a bucket and a signed access key |
//!
//! `scripts/test` starts a private `dockerd` with `scripts/lib/dockerd.sh` (also usable as
//! `scripts/dockerd start|stop|status|env`), builds the same image with the same layout,
//! exports `DOCKER_HOST` and sets `GANTRY_REQUIRE_DOCKER=1`, so there a missing engine fails the
//! run instead of skipping tests. `tests/docker_engine.rs` shows both kinds of test: a command
//! in a container, and two containers reaching each other by alias on a user-defined network.
//!
//! # Writing a Docker test
//!
//! ```no_run
//! use bollard::models::ContainerCreateBody;
//!
//! # async fn example() -> anyhow::Result<()> {
//! let Some(docker) = gantry_testkit::docker_for_test("my_test").await? else {
//!     return Ok(()); // no engine, and GANTRY_REQUIRE_DOCKER is not set: skipped
//! };
//! let image = gantry_testkit::ensure_busybox_image(&docker).await?;
//! let config = ContainerCreateBody {
//!     image: Some(image),
//!     cmd: Some(vec!["echo".into(), "hi".into()]),
//!     ..Default::default()
//! };
//! let run = gantry_testkit::run_container(&docker, &gantry_testkit::unique_name("my-test"), config)
//!     .await?;
//! assert_eq!((run.exit_code, run.stdout.as_str()), (0, "hi\n"));
//! # Ok(())
//! # }
//! ```

use std::fs::{self, File, OpenOptions, Permissions};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bollard::errors::Error as BollardError;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, ClientVersion, Docker, body_full};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

pub use bollard;

pub mod registry;
pub mod s3;

/// The locally built test image: busybox from Debian's `busybox-static`, `CMD ["/bin/sh"]`.
pub const BUSYBOX_IMAGE: &str = "gantry-test/busybox:latest";
const BUSYBOX_REPO: &str = "gantry-test/busybox";
const BUSYBOX_TAG: &str = "latest";

/// Label on [`BUSYBOX_IMAGE`] holding its [`BUSYBOX_LAYOUT`].
pub const LAYOUT_LABEL: &str = "org.gantry.testkit.layout";

/// Version of the image layout; an image with another value is rebuilt. Keep it equal to
/// `GANTRY_TEST_IMAGE_LAYOUT` in `scripts/lib/dockerd.sh`, which builds the same image.
pub const BUSYBOX_LAYOUT: &str = "1";

/// When this variable is `1` (or `true`), [`docker_for_test`] fails instead of skipping.
pub const REQUIRE_DOCKER_ENV: &str = "GANTRY_REQUIRE_DOCKER";

const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// Seconds bollard waits on one request.
const REQUEST_TIMEOUT_SECS: u64 = 120;
const VERSION_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`run_container`] waits for the command to exit.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The engine address tests use: `DOCKER_HOST`, or the system socket when it is unset.
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_owned())
}

/// Whether `GANTRY_REQUIRE_DOCKER` asks for Docker tests to fail rather than skip.
pub fn docker_required() -> bool {
    std::env::var(REQUIRE_DOCKER_ENV)
        .map(|v| matches!(v.trim(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

/// Connects to the engine at [`docker_host`] (`unix://` or `tcp://`/`http://`), speaking the
/// highest Engine API version both bollard and the engine know.
///
/// bollard 0.21 defaults to API 1.53, which an older engine (Debian 12's docker.io 20.10 speaks
/// 1.41) rejects on every versioned path, including `/v1.53/version` that bollard's own
/// `negotiate_version` would use. So the engine's version is read from the unversioned
/// `/version` endpoint first, as the docker CLI does, and the client is built for
/// `min(engine, bollard)`.
pub async fn docker() -> Result<Docker> {
    docker_at(&docker_host()).await
}

/// [`docker`] for an explicit engine address (`unix:///path`, `tcp://host:port`).
pub async fn docker_at(host: &str) -> Result<Docker> {
    let engine = tokio::time::timeout(VERSION_PROBE_TIMEOUT, engine_api_version(host))
        .await
        .map_err(|_| anyhow!("no answer within {VERSION_PROBE_TIMEOUT:?}"))
        .and_then(|r| r)
        .with_context(|| format!("no Docker Engine answers at {host}"))?;
    let version = if engine < *API_DEFAULT_VERSION {
        engine
    } else {
        *API_DEFAULT_VERSION
    };
    let docker = if host.starts_with("unix://") {
        Docker::connect_with_unix(host, REQUEST_TIMEOUT_SECS, &version)
    } else {
        Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, &version)
    }
    .with_context(|| format!("connecting to {host}"))?;
    docker
        .ping()
        .await
        .with_context(|| format!("pinging the Docker Engine at {host} with API {version}"))?;
    Ok(docker)
}

/// `true` when a Docker Engine answers at [`docker_host`].
pub async fn docker_available() -> bool {
    docker().await.is_ok()
}

/// The connection a Docker-backed test should use.
///
/// `Ok(Some(docker))` when an engine answers. Otherwise `Ok(None)` after a note on stderr, so
/// the test can return early, unless `GANTRY_REQUIRE_DOCKER=1`: then the error is returned and
/// the test fails (`scripts/test` sets it, so a broken engine there is never a silent skip).
pub async fn docker_for_test(test: &str) -> Result<Option<Docker>> {
    docker_for_test_at(test, &docker_host(), docker_required()).await
}

async fn docker_for_test_at(test: &str, host: &str, required: bool) -> Result<Option<Docker>> {
    match docker_at(host).await {
        Ok(docker) => Ok(Some(docker)),
        Err(err) if required => Err(err.context(format!(
            "{test}: {REQUIRE_DOCKER_ENV}=1 but no Docker Engine is reachable \
             (start one with `scripts/dockerd start`, then `eval \"$(scripts/dockerd env)\"`)"
        ))),
        Err(err) => {
            eprintln!(
                "SKIPPED {test}: {err:#} (set {REQUIRE_DOCKER_ENV}=1 to make this a failure)"
            );
            Ok(None)
        }
    }
}

/// Reads `ApiVersion` from the engine's unversioned `GET /version`.
async fn engine_api_version(host: &str) -> Result<ClientVersion> {
    const REQUEST: &[u8] = b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n";
    let mut raw = Vec::new();
    if let Some(path) = host.strip_prefix("unix://") {
        let mut stream = tokio::net::UnixStream::connect(path)
            .await
            .with_context(|| format!("connecting to {path}"))?;
        stream.write_all(REQUEST).await?;
        stream.read_to_end(&mut raw).await?;
    } else if let Some(addr) = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"))
    {
        let mut stream = tokio::net::TcpStream::connect(addr.trim_end_matches('/'))
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.write_all(REQUEST).await?;
        stream.read_to_end(&mut raw).await?;
    } else {
        bail!("unsupported DOCKER_HOST {host:?} (expected unix:// or tcp://)");
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP answer to GET /version")?;
    let (head, body) = (String::from_utf8_lossy(&raw[..split]), &raw[split + 4..]);
    let status = head.lines().next().unwrap_or_default();
    ensure!(
        status.split_whitespace().nth(1) == Some("200"),
        "GET /version answered {status:?}: {}",
        String::from_utf8_lossy(body)
    );
    let json: serde_json::Value =
        serde_json::from_slice(body).context("GET /version: body is not JSON")?;
    let api = json
        .get("ApiVersion")
        .and_then(|v| v.as_str())
        .context("GET /version: no ApiVersion")?;
    parse_api_version(api)
}

fn parse_api_version(api: &str) -> Result<ClientVersion> {
    let (major, minor) = api
        .split_once('.')
        .with_context(|| format!("bad API version {api:?}"))?;
    Ok(ClientVersion {
        major_version: major
            .parse()
            .with_context(|| format!("bad API version {api:?}"))?,
        minor_version: minor
            .parse()
            .with_context(|| format!("bad API version {api:?}"))?,
    })
}

/// A name like `{prefix}-{pid}-{time}-{n}`: unique across tests, test processes and runs, so a
/// leftover from a killed run never collides. Valid for containers, networks and volumes.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{:x}-{}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// What [`run_container`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRun {
    /// The command's exit status.
    pub exit_code: i64,
    /// Everything it wrote to stdout (lossy UTF-8).
    pub stdout: String,
    /// Everything it wrote to stderr (lossy UTF-8).
    pub stderr: String,
}

/// Creates a container named `name` from `config`, starts it, waits (up to two minutes) for it
/// to exit, reads its logs and removes it, also when a step fails.
pub async fn run_container(
    docker: &Docker,
    name: &str,
    config: ContainerCreateBody,
) -> Result<ContainerRun> {
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(name).build()),
            config,
        )
        .await
        .with_context(|| format!("creating container {name}"))?;
    let id = created.id;
    let run: Result<ContainerRun> = async {
        docker
            .start_container(&id, None)
            .await
            .with_context(|| format!("starting container {name}"))?;
        let exit_code = wait_exit_code(docker, &id, RUN_TIMEOUT).await?;
        let (stdout, stderr) = container_logs(docker, &id).await?;
        Ok(ContainerRun {
            exit_code,
            stdout,
            stderr,
        })
    }
    .await;
    let removed = force_remove_container(docker, &id).await;
    let run = run?;
    removed?;
    Ok(run)
}

/// Waits for the container to stop and returns its exit status (a non-zero status is a value
/// here, not an error). Fails after `timeout`.
pub async fn wait_exit_code(docker: &Docker, id: &str, timeout: Duration) -> Result<i64> {
    let mut stream = docker.wait_container(id, None);
    let next = tokio::time::timeout(timeout, stream.next())
        .await
        .map_err(|_| anyhow!("container {id} still running after {timeout:?}"))?;
    match next {
        Some(Ok(response)) => Ok(response.status_code),
        Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(err)) => Err(anyhow!(err).context(format!("waiting for container {id}"))),
        None => bail!("waiting for container {id}: no status"),
    }
}

/// The container's stdout and stderr so far (lossy UTF-8; a TTY's output counts as stdout).
pub async fn container_logs(docker: &Docker, id: &str) -> Result<(String, String)> {
    let options = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
    let mut logs = docker.logs(id, Some(options));
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    while let Some(chunk) = logs.next().await {
        match chunk.with_context(|| format!("reading logs of container {id}"))? {
            bollard::container::LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
            bollard::container::LogOutput::StdOut { message }
            | bollard::container::LogOutput::Console { message } => {
                stdout.extend_from_slice(&message)
            }
            bollard::container::LogOutput::StdIn { .. } => {}
        }
    }
    Ok((
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    ))
}

/// Removes the container (killing it if it runs) and its anonymous volumes; a container that
/// is already gone is fine.
pub async fn force_remove_container(docker: &Docker, id: &str) -> Result<()> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(())
        | Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(err) => Err(anyhow!(err).context(format!("removing container {id}"))),
    }
}

/// Makes sure [`BUSYBOX_IMAGE`] exists with the current [`BUSYBOX_LAYOUT`], building it if
/// needed, and returns its reference.
///
/// The image is a root filesystem holding the host's statically linked busybox as
/// `/bin/busybox`, a symlink for every applet at its usual path (`/bin/sh`, `/bin/echo`,
/// `/usr/bin/wget`, `/usr/bin/nc`, ...), `/etc/passwd`, `/etc/group` and the usual empty
/// directories, imported with `POST /images/create?fromSrc=-` and `CMD ["/bin/sh"]`. It needs
/// no network, only `busybox-static` (or `GANTRY_BUSYBOX` pointing at a static busybox) and GNU
/// `tar`. Concurrent callers on one machine build it once (a lock file in the temp dir).
pub async fn ensure_busybox_image(docker: &Docker) -> Result<String> {
    if busybox_image_is_current(docker).await? {
        return Ok(BUSYBOX_IMAGE.to_owned());
    }
    let _lock = lock_file(std::env::temp_dir().join("gantry-testkit-busybox-image.lock")).await?;
    if !busybox_image_is_current(docker).await? {
        build_busybox_image(docker)
            .await
            .with_context(|| format!("building {BUSYBOX_IMAGE}"))?;
        ensure!(
            busybox_image_is_current(docker).await?,
            "{BUSYBOX_IMAGE} was imported but does not carry {LAYOUT_LABEL}={BUSYBOX_LAYOUT}"
        );
    }
    Ok(BUSYBOX_IMAGE.to_owned())
}

async fn busybox_image_is_current(docker: &Docker) -> Result<bool> {
    match docker.inspect_image(BUSYBOX_IMAGE).await {
        Ok(image) => Ok(image
            .config
            .and_then(|config| config.labels)
            .and_then(|labels| labels.get(LAYOUT_LABEL).cloned())
            .is_some_and(|layout| layout == BUSYBOX_LAYOUT)),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(err) => Err(anyhow!(err).context(format!("inspecting {BUSYBOX_IMAGE}"))),
    }
}

/// An exclusive lock on `path`, held until the returned file is dropped.
async fn lock_file(path: PathBuf) -> Result<File> {
    tokio::task::spawn_blocking(move || {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(file)
    })
    .await?
}

async fn build_busybox_image(docker: &Docker) -> Result<()> {
    let busybox = find_static_busybox()?;
    let listing = Command::new(&busybox)
        .arg("--list-full")
        .output()
        .await
        .with_context(|| format!("running {} --list-full", busybox.display()))?;
    ensure!(
        listing.status.success(),
        "{} --list-full failed: {}",
        busybox.display(),
        listing.status
    );
    let applets = String::from_utf8_lossy(&listing.stdout).into_owned();

    let dir = tempfile::tempdir()?;
    let root = dir.path().join("rootfs");
    write_rootfs(&root, &busybox, applets.lines())?;

    // GNU tar, with the same flags as scripts/lib/dockerd.sh: sorted, owned by root, mtime 0.
    let tar = Command::new("tar")
        .args([
            "--sort=name",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "--mtime=@0",
            "-C",
        ])
        .arg(&root)
        .args(["-cf", "-", "."])
        .output()
        .await
        .context("running tar")?;
    ensure!(
        tar.status.success(),
        "tar failed ({}): {}",
        tar.status,
        String::from_utf8_lossy(&tar.stderr)
    );

    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(BUSYBOX_REPO)
        .tag(BUSYBOX_TAG)
        .message("gantry test image from the host's busybox-static")
        .changes(vec![
            r#"CMD ["/bin/sh"]"#.to_owned(),
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            format!("LABEL {LAYOUT_LABEL}={BUSYBOX_LAYOUT}"),
        ])
        .build();
    let mut progress = docker.create_image(Some(options), Some(body_full(tar.stdout.into())), None);
    while let Some(item) = progress.next().await {
        item.context("POST /images/create?fromSrc=-")?;
    }
    Ok(())
}

/// Lays out the image's root filesystem under `root` (which must not exist).
fn write_rootfs<'a>(
    root: &Path,
    busybox: &Path,
    applets: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "proc", "sys", "dev", "var/tmp",
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    fs::set_permissions(root.join("tmp"), Permissions::from_mode(0o1777))?;
    fs::set_permissions(root.join("var/tmp"), Permissions::from_mode(0o1777))?;
    fs::set_permissions(root.join("root"), Permissions::from_mode(0o700))?;
    fs::copy(busybox, root.join("bin/busybox"))
        .with_context(|| format!("copying {}", busybox.display()))?;
    fs::set_permissions(root.join("bin/busybox"), Permissions::from_mode(0o755))?;
    for applet in applets {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet == "bin/busybox" || applet.contains("..") {
            continue;
        }
        let link = root.join(applet);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent)?;
        }
        symlink("/bin/busybox", &link).with_context(|| format!("linking {applet}"))?;
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

/// `GANTRY_BUSYBOX`, else `/bin/busybox` or `/usr/bin/busybox`, if statically linked: the
/// dynamic build from Debian's `busybox` package would not run in an image without libc.
fn find_static_busybox() -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = std::env::var_os("GANTRY_BUSYBOX") {
        candidates.push(path.into());
    }
    candidates.extend(["/bin/busybox", "/usr/bin/busybox"].map(PathBuf::from));
    let mut seen = Vec::new();
    for path in &candidates {
        let Ok(bytes) = fs::read(path) else { continue };
        match elf_is_static(&bytes) {
            Some(true) => return Ok(path.clone()),
            Some(false) => seen.push(format!("{} is dynamically linked", path.display())),
            None => seen.push(format!("{} is not an ELF executable", path.display())),
        }
    }
    bail!(
        "no statically linked busybox found ({}); install Debian's busybox-static \
         (`scripts/dockerd install` does) or set GANTRY_BUSYBOX",
        if seen.is_empty() {
            "none at /bin/busybox or /usr/bin/busybox".to_owned()
        } else {
            seen.join(", ")
        }
    )
}

/// `Some(true)` for an ELF file without a `PT_INTERP` program header (static, or static-pie),
/// `Some(false)` for a dynamically linked one, `None` when it is not a little-endian ELF.
fn elf_is_static(bytes: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    if bytes.get(..4)? != b"\x7fELF" || *bytes.get(5)? != 1 {
        return None;
    }
    let (phoff, phentsize, phnum) = match bytes.get(4)? {
        1 => (u64::from(u32_at(0x1c)?), u16_at(0x2a)?, u16_at(0x2c)?),
        2 => (u64_at(0x20)?, u16_at(0x36)?, u16_at(0x38)?),
        _ => return None,
    };
    let phoff = usize::try_from(phoff).ok()?;
    for i in 0..usize::from(phnum) {
        if u32_at(phoff + i * usize::from(phentsize))? == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_engine_skips_or_fails() {
        let host = "unix:///nonexistent/gantry-testkit/docker.sock";
        assert!(docker_at(host).await.is_err());
        assert!(
            docker_for_test_at("t", host, false)
                .await
                .unwrap()
                .is_none()
        );
        let err = docker_for_test_at("t", host, true).await.unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains(REQUIRE_DOCKER_ENV), "{message}");
        assert!(message.contains(host), "{message}");
        assert!(docker_at("ssh://somewhere").await.is_err());
    }

    #[test]
    fn parses_api_versions() {
        let v = parse_api_version("1.41").unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        assert!(parse_api_version("141").is_err());
        assert!(parse_api_version("1.x").is_err());
    }

    #[test]
    fn unique_names_differ() {
        let (a, b) = (unique_name("t"), unique_name("t"));
        assert_ne!(a, b);
        assert!(a.starts_with("t-"));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        );
    }

    #[test]
    fn elf_static_check() {
        assert_eq!(elf_is_static(b"#!/bin/sh\n"), None);
        // The test binary itself is dynamically linked against glibc.
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(elf_is_static(&me), Some(false));
        if let Ok(busybox) = find_static_busybox() {
            assert_eq!(elf_is_static(&fs::read(busybox).unwrap()), Some(true));
        }
    }

    #[test]
    fn rootfs_layout() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        let fake = dir.path().join("busybox");
        fs::write(&fake, b"\x7fELF").unwrap();
        write_rootfs(
            &root,
            &fake,
            ["bin/busybox", "bin/sh", "usr/bin/wget", "/bin/echo", "../x"],
        )
        .unwrap();
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert!(root.join("usr/bin/wget").symlink_metadata().is_ok());
        assert!(root.join("bin/echo").symlink_metadata().is_ok());
        assert!(!dir.path().join("x").exists());
        assert!(root.join("bin/busybox").is_file());
        let tmp_mode = fs::metadata(root.join("tmp")).unwrap().permissions().mode();
        assert_eq!(tmp_mode & 0o7777, 0o1777);
    }
}
