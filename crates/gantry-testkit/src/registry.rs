//! Registry test support: OCI images made locally (no pulls), the real clients users push and
//! pull with (skopeo, buildah, the docker CLI, umoci) and a private peer registry (CNCF
//! Distribution, Debian's `docker-registry`) to check them against.
//!
//! Everything here is synchronous (`std::process::Command`): the clients are command-line
//! tools. The same calls work against Gantry's registry; only the address and the credentials
//! change.
//!
//! | item | what it does |
//! | --- | --- |
//! | [`tools_for_test`] | `Ok(true)` when the named tools are on `PATH`; `Ok(false)` (skip, with a note on stderr) when not, or an error when `GANTRY_REQUIRE_REGISTRY_TOOLS=1` ([`REQUIRE_TOOLS_ENV`]) |
//! | [`write_oci_layout`] | an OCI image layout directory written by hand, deterministically: N gzip'd tar layers of given sizes, a config, a manifest, `index.json` with a tag |
//! | [`layout_manifest_digest`] | the manifest digest a layout's `index.json` gives a tag |
//! | [`PeerRegistry`] | `docker-registry serve` on 127.0.0.1, filesystem storage in a temp dir, deletes on, no auth or HTTP Basic ([`PeerRegistry::start_with_auth`]); killed on drop |
//! | [`Skopeo`] | `skopeo copy` (oci: ⇄ docker://, digests kept), `skopeo inspect --raw`, with an auth file of its own |
//! | [`Buildah`] | an image built from scratch in a private storage (vfs) and `buildah push`ed |
//! | [`DockerCli`] | `docker login/tag/push/pull/rmi` on the engine of `DOCKER_HOST`, with a config dir of its own |
//! | [`umoci_stat`] | `umoci stat`: a layout is valid as umoci reads it |
//! | [`Oras`], [`oras_for_test`] | PyPI's oras (ORAS's Python SDK, in the venv `scripts/test` makes): files pushed as an OCI artifact and pulled back |
//! | [`Target`] | a registry under test: `HOST:PORT`, credentials, the repository prefix (Gantry: `PROJECT/`) |
//! | [`check_skopeo_round_trip`], [`check_buildah_push`], [`check_docker_push_pull`], [`check_docker_pulls_oci_image`], [`check_oras_push_pull`], [`check_anonymous_push_refused`] | whole client scenarios against a [`Target`], each an `Err` with the tool's output when something is wrong |
//!
//! Image references: `oci:DIR:TAG` for a layout, `docker://HOST:PORT/NAME:TAG` for a registry
//! (skopeo and buildah); `HOST:PORT/NAME:TAG` for docker. Gantry's repositories are
//! `PROJECT/REPO`. None of the registries here has TLS: skopeo and buildah are told
//! `--tls-verify=false`; docker treats registries on 127.0.0.0/8 as insecure by itself.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// When this variable is `1` (or `true`), [`tools_for_test`] fails instead of skipping.
pub const REQUIRE_TOOLS_ENV: &str = "GANTRY_REQUIRE_REGISTRY_TOOLS";

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// User name and password (or personal access token) for a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub user: String,
    pub password: String,
}

impl Creds {
    pub fn new(user: &str, password: &str) -> Creds {
        Creds {
            user: user.into(),
            password: password.into(),
        }
    }

    fn arg(&self) -> String {
        format!("{}:{}", self.user, self.password)
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let p = dir.join(tool);
            p.is_file()
                && fs::metadata(&p).is_ok_and(|m| {
                    use std::os::unix::fs::PermissionsExt;
                    m.permissions().mode() & 0o111 != 0
                })
        })
    })
}

/// Whether a test may use `tools` (e.g. `["skopeo", "docker-registry"]`): `Ok(true)` when all
/// are on `PATH`; when some are missing, `Ok(false)` after a note on stderr, or an error when
/// [`REQUIRE_TOOLS_ENV`] is set (`scripts/test` sets it, after installing them).
pub fn tools_for_test(test: &str, tools: &[&str]) -> Result<bool> {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return Ok(true);
    }
    let required = matches!(
        std::env::var(REQUIRE_TOOLS_ENV).as_deref(),
        Ok("1") | Ok("true")
    );
    let why = format!(
        "{} not found on PATH (Debian's skopeo, buildah, umoci, docker-registry: `scripts/registry install`)",
        missing.join(", ")
    );
    if required {
        bail!("{test}: {why}, and {REQUIRE_TOOLS_ENV}=1");
    }
    eprintln!("skipping {test}: {why}");
    Ok(false)
}

// --- OCI image layouts ------------------------------------------------------------------------

/// What [`write_oci_layout`] wrote.
#[derive(Debug, Clone)]
pub struct OciImage {
    /// `sha256:…` of the manifest: what a registry must keep when the image is copied as is.
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub config_digest: String,
    /// The compressed layers' digests and sizes, in order.
    pub layers: Vec<(String, u64)>,
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic bytes that do not compress (splitmix64 of a seed).
pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn put_blob(dir: &Path, data: &[u8]) -> Result<String> {
    let hex = sha256_hex(data);
    let path = dir.join("blobs/sha256").join(&hex);
    fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    Ok(format!("sha256:{hex}"))
}

/// A tar with one regular file `name` holding `data` (mode 0644, owner 0, mtime 0).
fn layer_tar(name: &str, data: &[u8]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data)?;
    Ok(b.into_inner()?)
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    // No name and mtime 0 in the header: the same input gives the same bytes.
    let mut e = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::fast());
    e.write_all(data)?;
    Ok(e.finish()?)
}

/// Writes an OCI image layout into `dir` (created if needed; other tags already there are
/// kept): one layer per entry of `layer_sizes`, each a gzip'd tar holding `/layerN.bin` of that
/// many bytes generated from `seed`, an image config (linux/amd64, `rootfs.diff_ids`
/// right), an OCI manifest and `index.json` naming it `tag`. The same arguments always give
/// the same digests; another `seed` gives other layers.
pub fn write_oci_layout(
    dir: &Path,
    tag: &str,
    layer_sizes: &[usize],
    seed: u64,
) -> Result<OciImage> {
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, &size) in layer_sizes.iter().enumerate() {
        let data = seeded_bytes(seed.wrapping_mul(1_000_003).wrapping_add(i as u64), size);
        let tar = layer_tar(&format!("layer{i}.bin"), &data)?;
        diff_ids.push(format!("sha256:{}", sha256_hex(&tar)));
        let gz = gzip(&tar)?;
        let d = put_blob(dir, &gz)?;
        layers.push((d, gz.len() as u64));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Labels": {"org.gantry.testkit.seed": seed.to_string()},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": layer_sizes.iter().map(|s| json!({
            "created": "1970-01-01T00:00:00Z",
            "created_by": format!("gantry-testkit: a layer of {s} bytes"),
        })).collect::<Vec<_>>(),
    }))?;
    let config_digest = put_blob(dir, &config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|(d, s)| json!({
            "mediaType": OCI_LAYER_GZIP, "digest": d, "size": s,
        })).collect::<Vec<_>>(),
    }))?;
    let manifest_digest = put_blob(dir, &manifest)?;
    // index.json: keep the other tags' entries, replace this tag's.
    let index_path = dir.join("index.json");
    let mut manifests: Vec<Value> = match fs::read(&index_path) {
        Ok(b) => serde_json::from_slice::<Value>(&b)?["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    manifests.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
    manifests.push(json!({
        "mediaType": OCI_MANIFEST,
        "digest": manifest_digest,
        "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }));
    fs::write(
        &index_path,
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        }))?,
    )?;
    Ok(OciImage {
        manifest_digest,
        manifest,
        config_digest,
        layers,
    })
}

/// The digest `index.json` of the layout in `dir` gives `tag` (e.g. after `skopeo copy` into
/// it).
pub fn layout_manifest_digest(dir: &Path, tag: &str) -> Result<String> {
    let index: Value = serde_json::from_slice(
        &fs::read(dir.join("index.json"))
            .with_context(|| format!("reading {}/index.json", dir.display()))?,
    )?;
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{}/index.json has no tag {tag}", dir.display()))
}

/// The `sha256:…` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

// --- running the tools ------------------------------------------------------------------------

/// Runs `cmd`; its stdout when it exits 0, else an error with both outputs.
pub fn run_tool(cmd: &mut Command) -> Result<String> {
    let what = format!("{cmd:?}");
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `umoci stat --json --image DIR:TAG`: fails unless umoci reads the image.
pub fn umoci_stat(dir: &Path, tag: &str) -> Result<Value> {
    let out = run_tool(
        Command::new("umoci")
            .arg("stat")
            .arg("--json")
            .arg("--image")
            .arg(format!("{}:{tag}", dir.display())),
    )?;
    Ok(serde_json::from_str(&out)?)
}

/// skopeo with an auth file of its own (never the user's) and no signature policy checks.
#[derive(Debug)]
pub struct Skopeo {
    tmp: tempfile::TempDir,
}

impl Skopeo {
    pub fn new() -> Result<Skopeo> {
        let tmp = tempfile::tempdir()?;
        fs::write(tmp.path().join("auth.json"), "{}")?;
        Ok(Skopeo { tmp })
    }

    fn command(&self) -> Command {
        let mut c = Command::new("skopeo");
        c.env("REGISTRY_AUTH_FILE", self.tmp.path().join("auth.json"))
            .env("XDG_RUNTIME_DIR", self.tmp.path())
            .arg("--insecure-policy");
        c
    }

    /// `skopeo copy --preserve-digests SRC DST`, e.g. `oci:/dir:v1` →
    /// `docker://127.0.0.1:5000/team/app:v1` or back; `creds` for whichever side is a registry
    /// (both, when both are). Returns the digest skopeo reports for what it wrote.
    pub fn copy(&self, src: &str, dst: &str, creds: Option<&Creds>) -> Result<String> {
        let digestfile = self.tmp.path().join("digest");
        let _ = fs::remove_file(&digestfile);
        let mut c = self.command();
        c.args([
            "copy",
            "--quiet",
            "--retry-times",
            "0",
            "--preserve-digests",
        ])
        .args(["--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg("--digestfile")
        .arg(&digestfile);
        if let Some(creds) = creds {
            if src.starts_with("docker://") {
                c.arg("--src-creds").arg(creds.arg());
            }
            if dst.starts_with("docker://") {
                c.arg("--dest-creds").arg(creds.arg());
            }
        }
        run_tool(c.arg(src).arg(dst))?;
        Ok(fs::read_to_string(&digestfile)
            .with_context(|| format!("skopeo copy {src} {dst} wrote no digest file"))?
            .trim()
            .to_string())
    }

    /// `skopeo inspect --raw IMAGE`: the manifest's bytes as the registry serves them.
    pub fn inspect_raw(&self, image: &str, creds: Option<&Creds>) -> Result<Vec<u8>> {
        let mut c = self.command();
        c.args([
            "inspect",
            "--raw",
            "--retry-times",
            "0",
            "--tls-verify=false",
        ]);
        if let Some(creds) = creds {
            c.arg("--creds").arg(creds.arg());
        }
        Ok(run_tool(c.arg(image))?.into_bytes())
    }

    /// `skopeo delete IMAGE` (a registry's manifest, by tag or digest).
    pub fn delete(&self, image: &str, creds: Option<&Creds>) -> Result<()> {
        let mut c = self.command();
        c.args(["delete", "--retry-times", "0", "--tls-verify=false"]);
        if let Some(creds) = creds {
            c.arg("--creds").arg(creds.arg());
        }
        run_tool(c.arg(image)).map(drop)
    }
}

/// buildah with a private storage (vfs driver: works inside containers without overlay) under a
/// temporary directory, and an auth file of its own.
#[derive(Debug)]
pub struct Buildah {
    tmp: tempfile::TempDir,
}

impl Buildah {
    pub fn new() -> Result<Buildah> {
        let tmp = tempfile::tempdir()?;
        fs::write(tmp.path().join("auth.json"), "{}")?;
        Ok(Buildah { tmp })
    }

    fn command(&self) -> Command {
        let mut c = Command::new("buildah");
        c.env("REGISTRY_AUTH_FILE", self.tmp.path().join("auth.json"))
            .env("XDG_RUNTIME_DIR", self.tmp.path())
            .env("BUILDAH_ISOLATION", "chroot")
            .arg("--root")
            .arg(self.tmp.path().join("root"))
            .arg("--runroot")
            .arg(self.tmp.path().join("run"))
            .args(["--storage-driver", "vfs"]);
        c
    }

    /// Builds `name` (a local image) from scratch with one file, `/hello.txt` = `content`:
    /// `buildah from scratch`, `buildah copy`, `buildah commit`. Nothing is pulled.
    pub fn build_scratch(&self, name: &str, content: &str) -> Result<()> {
        let ctr = run_tool(self.command().args(["from", "--quiet", "scratch"]))?
            .trim()
            .to_string();
        let file = self.tmp.path().join("hello.txt");
        fs::write(&file, content)?;
        run_tool(
            self.command()
                .args(["copy", &ctr])
                .arg(&file)
                .arg("/hello.txt"),
        )?;
        run_tool(self.command().args(["config", "--cmd", "/hello.txt", &ctr]))?;
        run_tool(self.command().args(["commit", "--quiet", &ctr, name]))?;
        run_tool(self.command().args(["rm", &ctr]))?;
        Ok(())
    }

    /// `buildah push IMAGE docker://DEST` (DEST as `HOST:PORT/NAME:TAG`); the pushed
    /// manifest's digest.
    pub fn push(&self, image: &str, dest: &str, creds: Option<&Creds>) -> Result<String> {
        let digestfile = self.tmp.path().join("digest");
        let _ = fs::remove_file(&digestfile);
        let mut c = self.command();
        c.args(["push", "--quiet", "--tls-verify=false", "--digestfile"])
            .arg(&digestfile);
        if let Some(creds) = creds {
            c.arg("--creds").arg(creds.arg());
        }
        run_tool(c.arg(image).arg(format!("docker://{dest}")))?;
        Ok(fs::read_to_string(&digestfile)
            .context("buildah push wrote no digest file")?
            .trim()
            .to_string())
    }

    /// `buildah pull docker://SRC` into the private storage; the image id.
    pub fn pull(&self, src: &str, creds: Option<&Creds>) -> Result<String> {
        let mut c = self.command();
        c.args(["pull", "--quiet", "--tls-verify=false"]);
        if let Some(creds) = creds {
            c.arg("--creds").arg(creds.arg());
        }
        Ok(run_tool(c.arg(format!("docker://{src}")))?
            .trim()
            .to_string())
    }
}

/// The docker CLI on the engine of `DOCKER_HOST` (the private dockerd of `scripts/dockerd`),
/// with a config directory of its own, so logins never touch the user's `~/.docker`.
#[derive(Debug)]
pub struct DockerCli {
    config: tempfile::TempDir,
}

impl DockerCli {
    pub fn new() -> Result<DockerCli> {
        Ok(DockerCli {
            config: tempfile::tempdir()?,
        })
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_CONFIG", self.config.path());
        if std::env::var_os("DOCKER_HOST").is_none() {
            c.env("DOCKER_HOST", crate::docker_host());
        }
        c
    }

    /// `docker login REGISTRY -u USER --password-stdin`.
    pub fn login(&self, registry: &str, creds: &Creds) -> Result<()> {
        let mut child = self
            .command()
            .args(["login", registry, "-u", &creds.user, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting docker login")?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(creds.password.as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "docker login {registry} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    pub fn tag(&self, src: &str, dst: &str) -> Result<()> {
        run_tool(self.command().args(["tag", src, dst])).map(drop)
    }

    /// `docker push REF`; the digest it reports (`…: digest: sha256:… size: N`).
    pub fn push(&self, reference: &str) -> Result<String> {
        let out = run_tool(self.command().args(["push", reference]))?;
        out.split_whitespace()
            .skip_while(|w| *w != "digest:")
            .nth(1)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("docker push {reference} printed no digest:\n{out}"))
    }

    /// `docker pull REF`; the digest it reports (`Digest: sha256:…`).
    pub fn pull(&self, reference: &str) -> Result<String> {
        let out = run_tool(self.command().args(["pull", reference]))?;
        out.lines()
            .find_map(|l| l.strip_prefix("Digest: "))
            .map(|d| d.trim().to_string())
            .ok_or_else(|| anyhow!("docker pull {reference} printed no digest:\n{out}"))
    }

    /// `docker rmi --force REF` (missing is fine).
    pub fn rmi(&self, reference: &str) -> Result<()> {
        let out = self
            .command()
            .args(["rmi", "--force", reference])
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() || err.contains("No such image"),
            "docker rmi {reference}: {err}"
        );
        Ok(())
    }

    /// `docker image inspect --format '{{.Id}}' REF`.
    pub fn image_id(&self, reference: &str) -> Result<String> {
        Ok(run_tool(
            self.command()
                .args(["image", "inspect", "--format", "{{.Id}}", reference]),
        )?
        .trim()
        .to_string())
    }
}

/// The environment variable naming the python that has PyPI's `oras` (`scripts/test` sets it).
pub const ORAS_PYTHON_ENV: &str = "GANTRY_TEST_ORAS_PYTHON";

/// The python with `oras` installed: [`ORAS_PYTHON_ENV`], else the venv `scripts/test` makes
/// (`$XDG_CACHE_HOME/gantry/oras-venv`), when it can import `oras.client`.
pub fn oras_python() -> Option<PathBuf> {
    venv_python(ORAS_PYTHON_ENV, "oras-venv", "import oras.client")
}

/// The python named by the environment variable `env`, else the venv `venv` that
/// `scripts/test` makes under `$XDG_CACHE_HOME/gantry/`, when it runs `check` (Python code
/// that imports what the test needs).
pub fn venv_python(env: &str, venv: &str, check: &str) -> Option<PathBuf> {
    let candidate = std::env::var_os(env).map(PathBuf::from).or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(cache.join("gantry").join(venv).join("bin/python"))
    })?;
    Command::new(&candidate)
        .args(["-c", check])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?
        .success()
        .then_some(candidate)
}

/// [`Oras`] for a test: `Ok(None)` (skip, with a note) when no python has `oras`, or an error
/// when [`REQUIRE_TOOLS_ENV`] is set.
pub fn oras_for_test(test: &str) -> Result<Option<Oras>> {
    match oras_python() {
        Some(python) => Ok(Some(Oras::new(python)?)),
        None => {
            let why = format!(
                "no python with PyPI's oras ({ORAS_PYTHON_ENV}, or the venv of `scripts/test`)"
            );
            if matches!(
                std::env::var(REQUIRE_TOOLS_ENV).as_deref(),
                Ok("1") | Ok("true")
            ) {
                bail!("{test}: {why}, and {REQUIRE_TOOLS_ENV}=1");
            }
            eprintln!("skipping {test}: {why}");
            Ok(None)
        }
    }
}

/// The driver [`Oras`] runs: `push HOST REF DIR FILE...` prints the manifest digest, `pull
/// HOST REF DIR` the files written; credentials and the subject come in the environment.
const ORAS_DRIVER: &str = r#"
import json, os, sys
import oras.client, requests
op, host, ref, workdir = sys.argv[1:5]
# oras's "token" backend takes a Basic challenge's realm for a token URL: pick the backend
# from what /v2/ asks for.
challenge = requests.get(f"http://{host}/v2/", timeout=30).headers.get("WWW-Authenticate", "")
backend = "basic" if challenge.lower().startswith("basic") else "token"
c = oras.client.OrasClient(hostname=host, insecure=True, auth_backend=backend)
if os.environ.get("ORAS_USER"):
    c.login(username=os.environ["ORAS_USER"], password=os.environ["ORAS_PASSWORD"],
            hostname=host, tls_verify=False)
if op == "push":
    os.chdir(workdir)
    r = c.push(target=ref, files=sys.argv[5:], subject=os.environ.get("ORAS_SUBJECT") or None,
               quiet=True)
    if r.status_code != 201:
        sys.exit(f"push {ref}: {r.status_code} {r.text}")
    print(r.headers.get("Docker-Content-Digest", ""))
elif op == "pull":
    print(json.dumps(c.pull(target=ref, outdir=workdir)))
else:
    sys.exit(f"unknown op {op}")
"#;

/// PyPI's oras (ORAS's Python SDK) through a small driver script, with a home directory of its
/// own (its logins never touch the user's).
#[derive(Debug)]
pub struct Oras {
    python: PathBuf,
    tmp: tempfile::TempDir,
}

impl Oras {
    pub fn new(python: PathBuf) -> Result<Oras> {
        let tmp = tempfile::tempdir()?;
        fs::write(tmp.path().join("driver.py"), ORAS_DRIVER)?;
        Ok(Oras { python, tmp })
    }

    fn command(&self, op: &str, reference: &str, dir: &Path, creds: Option<&Creds>) -> Command {
        let host = reference.split('/').next().unwrap_or(reference);
        let mut c = Command::new(&self.python);
        c.arg(self.tmp.path().join("driver.py"))
            .arg(op)
            .arg(host)
            .arg(reference)
            .arg(dir)
            .env("HOME", self.tmp.path())
            .env("DOCKER_CONFIG", self.tmp.path())
            .env("PYTHONWARNINGS", "ignore");
        if let Some(creds) = creds {
            c.env("ORAS_USER", &creds.user)
                .env("ORAS_PASSWORD", &creds.password);
        }
        c
    }

    /// Pushes `files` (name, content) as an OCI artifact to `HOST:PORT/NAME:TAG`, with
    /// `subject` (`HOST:PORT/NAME@sha256:…`, OCI 1.1 referrers) when given; the manifest
    /// digest the registry answered.
    pub fn push(
        &self,
        reference: &str,
        files: &[(&str, &[u8])],
        subject: Option<&str>,
        creds: Option<&Creds>,
    ) -> Result<String> {
        let dir = tempfile::tempdir()?;
        for (name, data) in files {
            fs::write(dir.path().join(name), data)?;
        }
        let mut c = self.command("push", reference, dir.path(), creds);
        c.args(files.iter().map(|(n, _)| *n));
        if let Some(s) = subject {
            c.env("ORAS_SUBJECT", s);
        }
        Ok(run_tool(&mut c)?.trim().to_string())
    }

    /// Pulls the artifact `HOST:PORT/NAME:TAG`: its files (name, content), sorted by name.
    pub fn pull(&self, reference: &str, creds: Option<&Creds>) -> Result<Vec<(String, Vec<u8>)>> {
        let dir = tempfile::tempdir()?;
        let out = run_tool(&mut self.command("pull", reference, dir.path(), creds))?;
        let paths: Vec<String> =
            serde_json::from_str(out.trim()).with_context(|| format!("oras pull printed {out}"))?;
        let mut files = Vec::new();
        for p in paths {
            let name = Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((name, fs::read(&p)?));
        }
        files.sort();
        Ok(files)
    }
}

/// oras: two files pushed as an OCI artifact to `TARGET/PREFIXname:v1` (an OCI manifest whose
/// config is not an image's), pulled back the same. Returns the manifest digest.
pub fn check_oras_push_pull(oras: &Oras, target: &Target, name: &str) -> Result<String> {
    let a = b"hello from oras\n".to_vec();
    let b = seeded_bytes(99, 20_000);
    let reference = target.reference(name, "v1");
    let digest = oras.push(
        &reference,
        &[("a.txt", &a), ("b.bin", &b)],
        None,
        target.creds.as_ref(),
    )?;
    ensure!(
        digest.starts_with("sha256:"),
        "oras push answered digest '{digest}'"
    );
    let files = oras.pull(&reference, target.creds.as_ref())?;
    ensure!(
        files == vec![("a.txt".to_string(), a), ("b.bin".to_string(), b)],
        "oras pulled other files: {:?}",
        files.iter().map(|(n, d)| (n, d.len())).collect::<Vec<_>>()
    );
    Ok(digest)
}

// --- the peer registry ------------------------------------------------------------------------

/// A private CNCF Distribution registry (`docker-registry serve`) for one test: 127.0.0.1 on a
/// free port, filesystem storage in a temporary directory, no auth, deletes enabled. Killed and
/// removed on drop. `scripts/registry` starts the same for benches and by hand.
#[derive(Debug)]
pub struct PeerRegistry {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
}

impl PeerRegistry {
    /// Starts it without authentication and waits (up to 20 s) until `GET /v2/` answers.
    pub fn start() -> Result<PeerRegistry> {
        Self::start_with_auth(None)
    }

    /// Starts it, with HTTP Basic authentication of one user (`auth: htpasswd`: `GET /v2/`
    /// answers 401 `WWW-Authenticate: Basic`) when `creds` is given, and waits (up to 20 s)
    /// until `GET /v2/` answers.
    pub fn start_with_auth(creds: Option<&Creds>) -> Result<PeerRegistry> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut auth = String::new();
        if let Some(c) = creds {
            let htpasswd = dir.path().join("htpasswd");
            // Cost 5: the lowest Distribution accepts quickly; this is a test registry.
            let hash = bcrypt::hash(&c.password, 5).context("bcrypt")?;
            fs::write(&htpasswd, format!("{}:{hash}\n", c.user))?;
            auth = format!(
                "auth:\n  htpasswd:\n    realm: gantry-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
                 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: {addr}\n{auth}",
                dir.path().join("data").display()
            ),
        )?;
        let ready = if creds.is_some() { 401 } else { 200 };
        let log = fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry (Debian's docker-registry)")?;
        let mut reg = PeerRegistry { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = reg.child.try_wait()? {
                bail!("docker-registry exited ({st}):\n{}", reg.log());
            }
            if http_status(&reg.addr, "/v2/").ok() == Some(ready) {
                return Ok(reg);
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry did not answer on {}:\n{}",
                    reg.addr,
                    reg.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`, what image references start with.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The storage root (`docker/registry/v2/...` under it).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for PeerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of a plain `GET PATH` on `HOST:PORT` (HTTP/1.0 by hand: no client library).
pub fn http_status(addr: &str, path: &str) -> Result<u16> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let line = String::from_utf8_lossy(&head);
    line.get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP answer from {addr}: {line}"))
}

// --- whole checks, for any registry -------------------------------------------------------------

/// A registry under test: its address, the credentials clients log in with (`None`: anonymous)
/// and the repository prefix they push under (for Gantry `PROJECT/`, for the peer anything).
#[derive(Debug, Clone)]
pub struct Target {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    pub creds: Option<Creds>,
    /// Repository names start with this, e.g. `team/`.
    pub prefix: String,
}

impl Target {
    /// `ADDR/PREFIXNAME:TAG`, as docker names it.
    pub fn reference(&self, name: &str, tag: &str) -> String {
        format!("{}/{}{name}:{tag}", self.addr, self.prefix)
    }

    /// `docker://ADDR/PREFIXNAME:TAG`, as skopeo and buildah name it.
    pub fn docker_ref(&self, name: &str, tag: &str) -> String {
        format!("docker://{}", self.reference(name, tag))
    }
}

/// skopeo, both ways: a layout written by [`write_oci_layout`] (three layers: 1 KiB, 64 KiB,
/// 1 MiB; `umoci stat` reads it) is copied to `TARGET/PREFIXname:v1`; the registry serves the
/// very manifest (same digest, same bytes); copied back into a new layout, the tag has the
/// same digest and every blob is the same. Returns the manifest digest.
pub fn check_skopeo_round_trip(target: &Target, name: &str) -> Result<String> {
    let work = tempfile::tempdir()?;
    let src = work.path().join("src");
    let image = write_oci_layout(&src, "v1", &[1024, 64 * 1024, 1024 * 1024], 42)?;
    umoci_stat(&src, "v1").context("umoci reads the layout written by hand")?;
    let skopeo = Skopeo::new()?;
    let remote = target.docker_ref(name, "v1");
    let pushed = skopeo.copy(
        &format!("oci:{}:v1", src.display()),
        &remote,
        target.creds.as_ref(),
    )?;
    ensure!(
        pushed == image.manifest_digest,
        "skopeo pushed {pushed}, the layout's manifest is {}",
        image.manifest_digest
    );
    let served = skopeo.inspect_raw(&remote, target.creds.as_ref())?;
    ensure!(
        served == image.manifest,
        "the registry serves another manifest than was pushed:\n{}",
        String::from_utf8_lossy(&served)
    );
    let back = work.path().join("back");
    let pulled = skopeo.copy(
        &remote,
        &format!("oci:{}:v1", back.display()),
        target.creds.as_ref(),
    )?;
    ensure!(pulled == image.manifest_digest, "skopeo pulled {pulled}");
    let digest = layout_manifest_digest(&back, "v1")?;
    ensure!(
        digest == image.manifest_digest,
        "the copy back names {digest}"
    );
    for d in image
        .layers
        .iter()
        .map(|(d, _)| d)
        .chain([&image.config_digest, &image.manifest_digest])
    {
        let rel = format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
        ensure!(
            fs::read(src.join(&rel))?
                == fs::read(back.join(&rel)).with_context(|| format!("{rel} came back"))?,
            "{rel} differs after the round trip"
        );
    }
    umoci_stat(&back, "v1").context("umoci reads the layout copied back")?;
    Ok(image.manifest_digest)
}

/// buildah: an image built from scratch (one file) is pushed to `TARGET/PREFIXname:v1`; the
/// registry serves a manifest with the digest buildah reported; a fresh buildah storage pulls
/// it back. Returns the digest.
pub fn check_buildah_push(target: &Target, name: &str) -> Result<String> {
    let buildah = Buildah::new()?;
    buildah.build_scratch(
        "localhost/gantry-testkit:built",
        &format!("hello from {name}\n"),
    )?;
    let dest = target.reference(name, "v1");
    let digest = buildah.push(
        "localhost/gantry-testkit:built",
        &dest,
        target.creds.as_ref(),
    )?;
    ensure!(
        digest.starts_with("sha256:"),
        "buildah reported digest {digest}"
    );
    let served = Skopeo::new()?.inspect_raw(&format!("docker://{dest}"), target.creds.as_ref())?;
    ensure!(
        digest_of(&served) == digest,
        "buildah pushed {digest}, the registry serves {}",
        digest_of(&served)
    );
    Buildah::new()?.pull(&dest, target.creds.as_ref())?;
    Ok(digest)
}

/// docker: `docker login` (when the target has credentials), the locally built
/// [`crate::BUSYBOX_IMAGE`] tagged and pushed to `TARGET/PREFIXname:v1` (the engine must have
/// it: [`crate::ensure_busybox_image`]); then an image imported on the spot from a tar with a
/// unique file is pushed, removed from the engine and pulled back (same digest, same image
/// id). Needs `DOCKER_HOST`'s engine on this machine (it reaches 127.0.0.1). Returns the
/// digests pushed (busybox, imported).
pub fn check_docker_push_pull(target: &Target, name: &str) -> Result<(String, String)> {
    let docker = DockerCli::new()?;
    if let Some(creds) = &target.creds {
        docker.login(&target.addr, creds)?;
    }
    let busybox = target.reference(name, "v1");
    docker.tag(crate::BUSYBOX_IMAGE, &busybox)?;
    let result = (|| {
        let pushed = docker.push(&busybox)?;
        // An image of its own: a one-file tar, imported (docker import makes its only layer).
        let work = tempfile::tempdir()?;
        let tar_path = work.path().join("rootfs.tar");
        let unique = format!("{name} {}\n", crate::unique_name("docker-check"));
        fs::write(&tar_path, layer_tar("hello.txt", unique.as_bytes())?)?;
        let imported = target.reference(name, "imported");
        run_tool(docker.command().arg("import").arg(&tar_path).arg(&imported))?;
        let id = docker.image_id(&imported)?;
        let pushed2 = docker.push(&imported)?;
        docker.rmi(&imported)?;
        let pulled = docker.pull(&imported)?;
        ensure!(
            pulled == pushed2,
            "docker pushed {pushed2}, pulled {pulled}"
        );
        let id2 = docker.image_id(&imported)?;
        ensure!(id == id2, "the pulled image is {id2}, the pushed one {id}");
        docker.rmi(&imported)?;
        Ok((pushed, pushed2))
    })();
    // Only the tag goes: the busybox image itself stays for the other tests.
    let _ = docker.rmi(&busybox);
    result
}

/// Without credentials, pushing to the target is refused: `skopeo copy` of a small layout
/// fails with an authentication error (for registries that have credentials).
pub fn check_anonymous_push_refused(target: &Target, name: &str) -> Result<()> {
    let work = tempfile::tempdir()?;
    write_oci_layout(work.path(), "v1", &[512], 7)?;
    let err = Skopeo::new()?
        .copy(
            &format!("oci:{}:v1", work.path().display()),
            &target.docker_ref(name, "anonymous"),
            None,
        )
        .err()
        .ok_or_else(|| anyhow!("an anonymous push to {} succeeded", target.addr))?;
    let text = format!("{err:#}").to_ascii_lowercase();
    ensure!(
        text.contains("unauthorized")
            || text.contains("authentication required")
            || text.contains("401"),
        "the anonymous push failed, but not for want of credentials: {err:#}"
    );
    Ok(())
}

/// docker pulls an OCI image it did not push: a layout from [`write_oci_layout`] copied to
/// `TARGET/PREFIXname:oci` by skopeo (an OCI manifest, gzip layers) is pulled by the docker
/// CLI with the same digest. Returns it.
pub fn check_docker_pulls_oci_image(target: &Target, name: &str) -> Result<String> {
    let work = tempfile::tempdir()?;
    let image = write_oci_layout(work.path(), "oci", &[4096, 32 * 1024], 1234)?;
    Skopeo::new()?.copy(
        &format!("oci:{}:oci", work.path().display()),
        &target.docker_ref(name, "oci"),
        target.creds.as_ref(),
    )?;
    let docker = DockerCli::new()?;
    if let Some(creds) = &target.creds {
        docker.login(&target.addr, creds)?;
    }
    let reference = target.reference(name, "oci");
    let pulled = docker.pull(&reference);
    let _ = docker.rmi(&reference);
    let pulled = pulled?;
    ensure!(
        pulled == image.manifest_digest,
        "docker pulled {pulled}, skopeo pushed {}",
        image.manifest_digest
    );
    Ok(pulled)
}
