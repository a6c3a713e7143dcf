//! The predefined variables of a pipeline and of a job, and GitLab's slug rules.
//!
//! Values and conditions follow GitLab's "Predefined CI/CD variables reference" and, where the
//! reference is silent, what GitLab itself does (`Gitlab::Ci::Variables::Builder` and the models
//! it reads). Things a [`Trigger`] does not carry (the pipeline's creation time, the registry, the
//! open merge requests of a branch, ...) come from a [`PipelineContext`]; a variable whose input
//! is unknown is left out rather than invented.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::{Phase, Var};
use crate::trigger::{MergeRequest, Source, Trigger};

/// What Gantry puts where GitLab puts its product name (`CI_SERVER_NAME`).
pub const SERVER_NAME: &str = "Gantry";
/// The all-zero SHA GitLab uses for "no commit" (`CI_COMMIT_BEFORE_SHA` outside pushes).
pub const NULL_SHA: &str = "0000000000000000000000000000000000000000";
/// `CI_CONFIG_PATH` when the project does not set another.
pub const DEFAULT_CONFIG_PATH: &str = ".gitlab-ci.yml";
/// `CI_BUILDS_DIR` when the job does not set another.
pub const DEFAULT_BUILDS_DIR: &str = "/builds";

/// `CI_MERGE_REQUEST_DESCRIPTION` is cut to this many characters.
const MR_DESCRIPTION_MAX_CHARS: usize = 2700;
/// `CI_RELEASE_DESCRIPTION` is cut to this many characters.
const RELEASE_DESCRIPTION_MAX_CHARS: usize = 1024;
/// `CI_OPEN_MERGE_REQUESTS` lists at most this many merge requests.
const OPEN_MERGE_REQUESTS_MAX: usize = 4;
/// GitLab's title (and description) of a commit whose message is blank.
const NO_COMMIT_MESSAGE: &str = "No commit message";
/// `CI_REGISTRY_USER` and the user of `CI_REPOSITORY_URL` in GitLab.
const CI_JOB_USER: &str = "gitlab-ci-token";

/// Pipeline-level facts that a [`Trigger`] does not carry. Every field is optional; the default
/// gives the variables GitLab would give with nothing extra configured.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineContext {
    /// When the pipeline was created, ISO 8601 (`CI_PIPELINE_CREATED_AT`; left out when unknown).
    pub created_at: Option<String>,
    /// The pipeline name from `workflow:name` (`CI_PIPELINE_NAME`; left out when unset).
    pub name: Option<String>,
    /// The configuration file (`CI_CONFIG_PATH`), [`DEFAULT_CONFIG_PATH`] when `None`.
    pub config_path: Option<String>,
    /// `CI_PROJECT_DESCRIPTION` (empty when `None`).
    pub project_description: Option<String>,
    /// `CI_PROJECT_NAMESPACE_ID` (left out when `None`).
    pub project_namespace_id: Option<u64>,
    /// The annotation of the tag in tag pipelines (`CI_COMMIT_TAG_MESSAGE`, empty when `None`).
    pub tag_message: Option<String>,
    /// The description of the release of the tag, in tag pipelines (`CI_RELEASE_DESCRIPTION`).
    pub release_description: Option<String>,
    /// References (`group/project!iid`) of the open merge requests whose source is the
    /// pipeline's branch, newest first (`CI_OPEN_MERGE_REQUESTS`, at most four are listed). For
    /// merge request pipelines the merge request itself is used when this is empty.
    pub open_merge_requests: Vec<String>,
    /// The description of the schedule, in scheduled pipelines (`CI_PIPELINE_SCHEDULE_DESCRIPTION`).
    pub schedule_description: Option<String>,
    /// The container registry, `host[:port]` (`CI_REGISTRY` and `CI_REGISTRY_IMAGE`; both left out
    /// when `None`, as GitLab does when the registry is disabled).
    pub registry: Option<String>,
    /// The server version (`CI_SERVER_VERSION*`), this crate's version when `None`.
    pub server_version: Option<String>,
    /// The server revision (`CI_SERVER_REVISION`, empty when `None`).
    pub server_revision: Option<String>,
    /// The SSH host and port for Git (`CI_SERVER_SHELL_SSH_HOST` / `_PORT`, left out when `None`).
    pub ssh_host: Option<String>,
    /// See `ssh_host`.
    pub ssh_port: Option<u16>,
    /// `CI_TEMPLATE_REGISTRY_HOST`, `registry.gitlab.com` when `None` (GitLab's CI templates pull
    /// their images from there).
    pub template_registry_host: Option<String>,
    /// The pipeline runs during a deploy freeze (`CI_DEPLOY_FREEZE=true`).
    pub deploy_freeze: bool,
}

/// `parallel` facts for one job instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parallel {
    /// 1-based index of this instance (`CI_NODE_INDEX`).
    pub index: u32,
    /// Number of instances (`CI_NODE_TOTAL`).
    pub total: u32,
}

/// The job's `environment`, after expansion.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JobEnvironment {
    pub name: String,
    /// `environment:url` (`CI_ENVIRONMENT_URL`, left out when `None`).
    pub url: Option<String>,
    /// `environment:action`: `start` (the default), `prepare`, `stop`, `verify`, `access`.
    pub action: Option<String>,
    /// `environment:deployment_tier`; guessed from the name when `None`, as GitLab does.
    pub tier: Option<String>,
}

/// The runner executing the job (`CI_RUNNER_*`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunnerInfo {
    pub id: u64,
    pub description: String,
    pub tags: Vec<String>,
    pub version: String,
    pub revision: String,
    /// `os/arch`, for example `linux/amd64`.
    pub executable_arch: String,
    pub short_token: String,
}

/// What [`job_variables`] needs to know about one job. Build it with [`JobContext::new`] and set
/// what is known; unknown optional inputs leave their variables out.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JobContext {
    /// The job name, with a `parallel` suffix such as `test 1/3` or `test: [a, b]` when it has one.
    pub name: String,
    pub stage: String,
    /// The job id (`CI_JOB_ID`).
    pub id: u64,
    pub parallel: Option<Parallel>,
    /// The image the job runs in (`CI_JOB_IMAGE`).
    pub image: Option<String>,
    pub environment: Option<JobEnvironment>,
    /// A `when: manual` job (`CI_JOB_MANUAL=true`).
    pub manual: bool,
    /// When the job started, ISO 8601 (`CI_JOB_STARTED_AT`).
    pub started_at: Option<String>,
    /// `CI_JOB_TIMEOUT`, in seconds.
    pub timeout_secs: Option<u64>,
    /// `CI_JOB_STATUS` (`success`, `failed`, `canceled`), set by the executor for `after_script`.
    pub status: Option<String>,
    /// The job token (`CI_JOB_TOKEN`, masked). Also gives `CI_REPOSITORY_URL`.
    pub token: Option<String>,
    /// The job's web page (`CI_JOB_URL`), `<project url>/-/jobs/<id>` when `None`.
    pub url: Option<String>,
    /// The pipeline's web page (`CI_PIPELINE_URL`), `<project url>/-/pipelines/<id>` when `None`.
    pub pipeline_url: Option<String>,
    /// `CI_BUILDS_DIR`, [`DEFAULT_BUILDS_DIR`] when `None`.
    pub builds_dir: Option<String>,
    /// `CI_PROJECT_DIR`; when `None`, the trigger's `project.dir`, else `<builds dir>/<project path>`.
    pub project_dir: Option<String>,
    /// Credentials for the container registry (`CI_REGISTRY_USER`, `CI_REGISTRY_PASSWORD`).
    /// GitLab uses `gitlab-ci-token` and the job token.
    pub registry_user: Option<String>,
    /// Masked, like `token`.
    pub registry_password: Option<String>,
    pub runner: Option<RunnerInfo>,
    /// `Some(true)` for an executor that throws its environment away after the job
    /// (`CI_DISPOSABLE_ENVIRONMENT=true`), `Some(false)` for a shared one such as `shell`
    /// (`CI_SHARED_ENVIRONMENT=true`).
    pub disposable: Option<bool>,
}

impl JobContext {
    pub fn new(name: impl Into<String>, stage: impl Into<String>, id: u64) -> JobContext {
        JobContext {
            name: name.into(),
            stage: stage.into(),
            id,
            ..JobContext::default()
        }
    }
}

/// The slug GitLab uses for `CI_COMMIT_REF_SLUG`, `CI_JOB_NAME_SLUG`, `CI_PROJECT_PATH_SLUG` and
/// `CI_PROJECT_NAMESPACE_SLUG` (GitLab's `Gitlab::Utils.slugify`): the string lowercased (full
/// Unicode lowercasing), every character other than `a-z` and `0-9` replaced by one `-` (so a
/// multi-byte character becomes a single `-`), cut to its first 63 characters (which are all
/// ASCII, so 63 bytes), then every leading and trailing `-` removed. Runs of `-` inside are kept:
/// `feature/ABC_12` gives `feature-abc-12`, `a//b` gives `a--b`.
pub fn ref_slug(s: &str) -> String {
    let cut: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    cut.trim_matches('-').to_string()
}

/// The slug GitLab uses for `CI_ENVIRONMENT_SLUG` (GitLab's `Gitlab::Slug::Environment`), at most
/// 24 characters and always starting with a letter:
///
/// 1. lowercase, every character other than `a-z` and `0-9` replaced by `-`;
/// 2. prefixed with `env-` unless it starts with a letter;
/// 3. runs of `-` squeezed to one;
/// 4. if that is longer than 24 characters, or differs in any way from the name as written (upper
///    case, a `/`, a squeezed dash, the prefix), it is cut to 17 characters, a `-` is appended
///    unless it already ends with one, and a 6-character suffix is appended: the last six base-36
///    digits of the SHA-256 of the original name read as one big number. The suffix looks random
///    but is deterministic, and keeps distinct names distinct;
/// 5. otherwise one trailing `-` is dropped.
///
/// So `production` stays `production`, `PRODUCTION` becomes `production-vl4voz` and
/// `review/1-foo` becomes `review-1-foo-9tdj0u`.
pub fn environment_slug(name: &str) -> String {
    let mut slug: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !slug.starts_with(|c: char| c.is_ascii_lowercase()) {
        slug.insert_str(0, "env-");
    }
    let mut squeezed = String::with_capacity(slug.len());
    for c in slug.chars() {
        if !(c == '-' && squeezed.ends_with('-')) {
            squeezed.push(c);
        }
    }
    if squeezed.len() > 24 || squeezed != name {
        let mut short: String = squeezed.chars().take(17).collect();
        if !short.ends_with('-') {
            short.push('-');
        }
        short.push_str(&environment_slug_suffix(&sha256(name.as_bytes())));
        short
    } else {
        squeezed
            .strip_suffix('-')
            .map(str::to_string)
            .unwrap_or(squeezed)
    }
}

/// The last six base-36 digits of `digest` read as a big-endian number.
fn environment_slug_suffix(digest: &[u8; 32]) -> String {
    const MODULUS: u64 = 36u64.pow(6);
    let mut rest = digest
        .iter()
        .fold(0u64, |acc, &b| (acc * 256 + u64::from(b)) % MODULUS);
    let mut digits = [b'0'; 6];
    for d in digits.iter_mut().rev() {
        *d = b"0123456789abcdefghijklmnopqrstuvwxyz"[(rest % 36) as usize];
        rest /= 36;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

/// SHA-256 (FIPS 180-4), for [`environment_slug`].
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// `CI_COMMIT_TITLE`: the whole first line of the message (up to the first `\n` or `\r`), or
/// `No commit message` when the message is blank.
pub fn commit_title(message: &str) -> String {
    if message.trim().is_empty() {
        return NO_COMMIT_MESSAGE.to_string();
    }
    message
        .split(['\r', '\n'])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `CI_COMMIT_DESCRIPTION`: the message without its first line (everything after the first
/// `\n`, less one trailing line break), so it usually starts with the blank line that separates
/// title and body. When the title is 100 characters or longer it is the whole message instead,
/// and `No commit message` when the message is blank (GitLab's `Commit#description`).
pub fn commit_description(message: &str) -> String {
    if commit_title(message).chars().count() >= 100 {
        return message.to_string();
    }
    if message.trim().is_empty() {
        return NO_COMMIT_MESSAGE.to_string();
    }
    match message.split_once('\n') {
        Some((_, rest)) => chomp(rest).to_string(),
        None => String::new(),
    }
}

/// Ruby's `String#chomp`: drops one trailing `\r\n`, `\n` or `\r`.
fn chomp(s: &str) -> &str {
    s.strip_suffix("\r\n")
        .or_else(|| s.strip_suffix('\n'))
        .or_else(|| s.strip_suffix('\r'))
        .unwrap_or(s)
}

/// `CI_JOB_GROUP_NAME`: the job name without the suffix `parallel` gives it (`build 1/3`,
/// `test: [ruby, 3.3]`) or that groups jobs by hand (`job 1:2`), as GitLab's `group_name`.
pub fn job_group_name(name: &str) -> String {
    static SUFFIX: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?:[\x08\t\n\x0B\x0C\r :]+(?:\[.*\]|[0-9]+[\t\n\x0B\x0C\r :/\\]+[0-9]+))+[\t\n\x0B\x0C\r ]*\z")
            .expect("valid regex")
    });
    SUFFIX
        .replace(name, "")
        .trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0' || c == '\x0B')
        .to_string()
}

/// The deployment tier GitLab guesses from an environment name when `deployment_tier` is not
/// set: `development`, `testing`, `staging`, `production` or `other`, first match wins.
pub fn environment_tier(name: &str) -> &'static str {
    static TIERS: LazyLock<[(Regex, &'static str); 4]> = LazyLock::new(|| {
        let re = |p: &str| Regex::new(p).expect("valid regex");
        [
            (re(r"(?i)(dev|review|trunk)"), "development"),
            (
                re(r"(?i)(test|tst|int|ac(ce|)pt|qa|qc|control|quality)"),
                "testing",
            ),
            (re(r"(?i)(st(a|)g|mod(e|)l|pre|demo|non)"), "staging"),
            (re(r"(?i)(pr(o|)d|live)"), "production"),
        ]
    });
    TIERS
        .iter()
        .find(|(re, _)| re.is_match(name))
        .map_or("other", |(_, tier)| tier)
}

/// Collects variables in order.
#[derive(Default)]
struct Out(Vec<Var>);

impl Out {
    fn add(&mut self, name: &str, value: impl Into<String>, phase: Phase) {
        self.0.push(Var::new(name, value, phase));
    }

    fn secret(&mut self, name: &str, value: impl Into<String>, phase: Phase) {
        self.0.push(Var::new(name, value, phase).with_masked(true));
    }
}

/// The parts of the server URL GitLab exposes.
struct ServerUrl {
    url: String,
    protocol: String,
    host: String,
    port: String,
    /// `host` plus `:port` when the URL names a port other than the protocol's default.
    fqdn: String,
    /// The URL without its protocol and user information: `host[:port][/path prefix]`.
    location: String,
}

impl ServerUrl {
    fn parse(url: &str) -> ServerUrl {
        let url = url.trim_end_matches('/');
        let (protocol, rest) = match url.split_once("://") {
            Some((p, r)) => (p.to_ascii_lowercase(), r),
            None => ("http".to_string(), url),
        };
        let with_user = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let authority = with_user.rsplit_once('@').map_or(with_user, |(_, a)| a);
        let location = format!("{authority}{}", &rest[with_user.len()..]);
        let (host, explicit_port) = match authority.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((addr, tail)) => (format!("[{addr}]"), tail.strip_prefix(':')),
                None => (authority.to_string(), None),
            },
            None => match authority.rsplit_once(':') {
                Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    (h.to_string(), Some(p))
                }
                _ => (authority.to_string(), None),
            },
        };
        let default_port = match protocol.as_str() {
            "https" => "443",
            "http" => "80",
            _ => "",
        };
        let port = explicit_port
            .filter(|p| !p.is_empty())
            .unwrap_or(default_port)
            .to_string();
        let fqdn = match explicit_port {
            Some(p) if p != default_port && !p.is_empty() => format!("{host}:{p}"),
            _ => host.clone(),
        };
        ServerUrl {
            url: url.to_string(),
            protocol,
            host,
            port,
            fqdn,
            location,
        }
    }
}

/// What kind of ref the pipeline runs for, in GitLab's sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefKind {
    Branch,
    Tag,
    MergeRequest,
}

fn ref_kind(trigger: &Trigger) -> RefKind {
    if trigger.source == Source::MergeRequestEvent {
        RefKind::MergeRequest
    } else if trigger.is_tag {
        RefKind::Tag
    } else {
        RefKind::Branch
    }
}

/// `CI_COMMIT_REF_NAME`: the source branch in merge request pipelines, the ref otherwise.
fn source_ref(trigger: &Trigger) -> &str {
    match (&trigger.merge_request, ref_kind(trigger)) {
        (Some(mr), RefKind::MergeRequest) => &mr.source_branch,
        _ => &trigger.ref_name,
    }
}

/// `(namespace, name)` of a `group/sub/project` path.
fn split_project_path(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// Ruby's `Array#to_sentence`: `a`, `a and b`, `a, b, and c`.
fn to_sentence(words: &[String]) -> String {
    match words {
        [] => String::new(),
        [one] => one.clone(),
        [a, b] => format!("{a} and {b}"),
        [init @ .., last] => format!("{}, and {last}", init.join(", ")),
    }
}

/// ActiveSupport's `String#truncate(n)`: strings longer than `n` characters become their first
/// `n - 3` characters followed by `...`.
fn truncate_with_omission(s: &str, n: usize) -> (String, bool) {
    if s.chars().count() > n {
        let mut cut: String = s.chars().take(n - 3).collect();
        cut.push_str("...");
        (cut, true)
    } else {
        (s.to_string(), false)
    }
}

/// Leading number of a version component (`"3-rc1"` gives `"3"`).
fn version_part(part: Option<&str>) -> String {
    let part = part.unwrap_or_default();
    let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        "0".to_string()
    } else {
        digits
    }
}

/// Every predefined variable known before and at pipeline creation for `trigger`
/// ([`Phase::PrePipeline`] and [`Phase::Pipeline`], except the job-specific ones), with the
/// trigger's own [`PipelineContext`]. See [`pipeline_variables_with`].
pub fn pipeline_variables(trigger: &Trigger) -> Vec<Var> {
    pipeline_variables_with(trigger, &trigger.context)
}

/// Every predefined variable known before and at pipeline creation, in GitLab's conditions:
///
/// - always: `CI`, `GITLAB_CI`, `CI_SERVER_*` (`CI_SERVER_NAME=Gantry`), `CI_PROJECT_*`,
///   `CI_DEFAULT_BRANCH`, `CI_CONFIG_PATH`, `CI_API_V4_URL`, `CI_API_GRAPHQL_URL`,
///   `CI_TEMPLATE_REGISTRY_HOST`, `CI_PIPELINE_IID`, `CI_PIPELINE_SOURCE`, `GITLAB_USER_*`;
/// - when the commit SHA is known: `CI_COMMIT_SHA`, `_SHORT_SHA`, `_BEFORE_SHA` (the trigger's
///   for pushes, all zeros for every other source), `_REF_NAME` (the source branch in merge
///   request pipelines), `_REF_SLUG`, `_REF_PROTECTED`, `_MESSAGE`, `_TITLE`, `_DESCRIPTION`,
///   `_TIMESTAMP`, `_AUTHOR`, and `CI_COMMIT_BRANCH` only in branch pipelines (not in tag or
///   merge request pipelines);
/// - tag pipelines: `CI_COMMIT_TAG`, `CI_COMMIT_TAG_MESSAGE`, `CI_RELEASE_DESCRIPTION` (if known);
/// - `merge_request_event` pipelines with merge request data: `CI_MERGE_REQUEST_*`;
///   `CI_MERGE_REQUEST_EVENT_TYPE` is `merged_result` when both branch SHAs are known and the
///   pipeline commit is not the source branch head, `detached` otherwise, and the two
///   `*_BRANCH_SHA` variables are empty in detached pipelines, as in GitLab;
/// - `external_pull_request_event` pipelines with merge request data: `CI_EXTERNAL_PULL_REQUEST_*`;
/// - branch and merge request pipelines with open merge requests: `CI_OPEN_MERGE_REQUESTS`;
/// - scheduled pipelines: `CI_PIPELINE_SCHEDULE_DESCRIPTION`; `trigger` pipelines:
///   `CI_PIPELINE_TRIGGERED=true`; the rest from the [`PipelineContext`] when it has them.
///
/// `CI_COMMIT_REF_PROTECTED` is the trigger's `protected` as given. In merge request pipelines
/// GitLab asks about the merge request ref, which is normally not protected, so a trigger for
/// such a pipeline should say `false` unless the project protects those refs.
pub fn pipeline_variables_with(trigger: &Trigger, ctx: &PipelineContext) -> Vec<Var> {
    use Phase::{Pipeline, PrePipeline};
    let mut out = Out::default();
    let project = &trigger.project;
    let server = ServerUrl::parse(&project.server_url);

    out.add("CI", "true", PrePipeline);
    out.add("GITLAB_CI", "true", PrePipeline);
    out.add("CI_SERVER_FQDN", &server.fqdn, PrePipeline);
    out.add("CI_SERVER_URL", &server.url, PrePipeline);
    out.add("CI_SERVER_HOST", &server.host, PrePipeline);
    out.add("CI_SERVER_PORT", &server.port, PrePipeline);
    out.add("CI_SERVER_PROTOCOL", &server.protocol, PrePipeline);
    if let Some(host) = &ctx.ssh_host {
        out.add("CI_SERVER_SHELL_SSH_HOST", host, PrePipeline);
    }
    if let Some(port) = ctx.ssh_port {
        out.add("CI_SERVER_SHELL_SSH_PORT", port.to_string(), PrePipeline);
    }
    out.add("CI_SERVER_NAME", SERVER_NAME, PrePipeline);
    let version = ctx
        .server_version
        .as_deref()
        .unwrap_or(env!("CARGO_PKG_VERSION"));
    let mut parts = version.split('.');
    out.add("CI_SERVER_VERSION", version, PrePipeline);
    out.add(
        "CI_SERVER_VERSION_MAJOR",
        version_part(parts.next()),
        PrePipeline,
    );
    out.add(
        "CI_SERVER_VERSION_MINOR",
        version_part(parts.next()),
        PrePipeline,
    );
    out.add(
        "CI_SERVER_VERSION_PATCH",
        version_part(parts.next()),
        PrePipeline,
    );
    out.add(
        "CI_SERVER_REVISION",
        ctx.server_revision.clone().unwrap_or_default(),
        PrePipeline,
    );

    let (namespace, name) = split_project_path(&project.path);
    out.add("CI_PROJECT_ID", project.id.to_string(), PrePipeline);
    out.add("CI_PROJECT_NAME", name, PrePipeline);
    out.add("CI_PROJECT_TITLE", &project.title, PrePipeline);
    out.add(
        "CI_PROJECT_DESCRIPTION",
        ctx.project_description.clone().unwrap_or_default(),
        PrePipeline,
    );
    out.add("CI_PROJECT_PATH", &project.path, PrePipeline);
    out.add("CI_PROJECT_PATH_SLUG", ref_slug(&project.path), PrePipeline);
    out.add("CI_PROJECT_NAMESPACE", namespace, PrePipeline);
    out.add(
        "CI_PROJECT_NAMESPACE_SLUG",
        ref_slug(namespace),
        PrePipeline,
    );
    if let Some(id) = ctx.project_namespace_id {
        out.add("CI_PROJECT_NAMESPACE_ID", id.to_string(), PrePipeline);
    }
    out.add(
        "CI_PROJECT_ROOT_NAMESPACE",
        namespace.split('/').next().unwrap_or_default(),
        PrePipeline,
    );
    out.add("CI_PROJECT_URL", &project.url, PrePipeline);
    out.add("CI_PROJECT_VISIBILITY", &project.visibility, PrePipeline);
    out.add("CI_DEFAULT_BRANCH", &project.default_branch, PrePipeline);
    out.add(
        "CI_CONFIG_PATH",
        ctx.config_path.as_deref().unwrap_or(DEFAULT_CONFIG_PATH),
        PrePipeline,
    );
    if let Some(registry) = &ctx.registry {
        out.add("CI_REGISTRY", registry, PrePipeline);
        out.add(
            "CI_REGISTRY_IMAGE",
            format!("{registry}/{}", project.path.to_lowercase()),
            PrePipeline,
        );
    }
    out.add(
        "CI_API_V4_URL",
        format!("{}/api/v4", server.url),
        PrePipeline,
    );
    out.add(
        "CI_API_GRAPHQL_URL",
        format!("{}/api/graphql", server.url),
        PrePipeline,
    );
    out.add(
        "CI_TEMPLATE_REGISTRY_HOST",
        ctx.template_registry_host
            .as_deref()
            .unwrap_or("registry.gitlab.com"),
        PrePipeline,
    );

    out.add(
        "CI_PIPELINE_IID",
        trigger.pipeline_iid.to_string(),
        Pipeline,
    );
    out.add("CI_PIPELINE_SOURCE", trigger.source.as_str(), PrePipeline);
    if let Some(created_at) = &ctx.created_at {
        out.add("CI_PIPELINE_CREATED_AT", created_at, PrePipeline);
    }
    if let Some(name) = &ctx.name {
        out.add("CI_PIPELINE_NAME", name, PrePipeline);
    }
    if trigger.source == Source::Schedule {
        out.add(
            "CI_PIPELINE_SCHEDULE_DESCRIPTION",
            ctx.schedule_description.clone().unwrap_or_default(),
            PrePipeline,
        );
    }

    let kind = ref_kind(trigger);
    let commit = &trigger.commit;
    if !commit.sha.is_empty() {
        let before = if trigger.source == Source::Push && !commit.before_sha.is_empty() {
            commit.before_sha.as_str()
        } else {
            NULL_SHA
        };
        let ref_name = source_ref(trigger);
        out.add("CI_COMMIT_SHA", &commit.sha, PrePipeline);
        out.add(
            "CI_COMMIT_SHORT_SHA",
            commit.sha.chars().take(8).collect::<String>(),
            PrePipeline,
        );
        out.add("CI_COMMIT_BEFORE_SHA", before, PrePipeline);
        out.add("CI_COMMIT_REF_NAME", ref_name, PrePipeline);
        out.add("CI_COMMIT_REF_SLUG", ref_slug(ref_name), PrePipeline);
        if kind == RefKind::Branch {
            out.add("CI_COMMIT_BRANCH", &trigger.ref_name, PrePipeline);
        }
        out.add("CI_COMMIT_MESSAGE", &commit.message, PrePipeline);
        out.add(
            "CI_COMMIT_TITLE",
            commit_title(&commit.message),
            PrePipeline,
        );
        out.add(
            "CI_COMMIT_DESCRIPTION",
            commit_description(&commit.message),
            PrePipeline,
        );
        out.add(
            "CI_COMMIT_REF_PROTECTED",
            trigger.protected.to_string(),
            PrePipeline,
        );
        out.add("CI_COMMIT_TIMESTAMP", &commit.timestamp, PrePipeline);
        let author = if commit.author_name.is_empty() && commit.author_email.is_empty() {
            String::new()
        } else {
            format!("{} <{}>", commit.author_name, commit.author_email)
        };
        out.add("CI_COMMIT_AUTHOR", author, PrePipeline);
    }
    if kind == RefKind::Tag {
        out.add("CI_COMMIT_TAG", &trigger.ref_name, PrePipeline);
        out.add(
            "CI_COMMIT_TAG_MESSAGE",
            ctx.tag_message.clone().unwrap_or_default(),
            PrePipeline,
        );
    }
    if let (RefKind::MergeRequest, Some(mr)) = (kind, &trigger.merge_request) {
        merge_request_variables(&mut out, trigger, mr, &server);
    }
    let open_refs: Vec<String> = match (kind, &trigger.merge_request) {
        (RefKind::Tag, _) => Vec::new(),
        (RefKind::MergeRequest, Some(mr)) if ctx.open_merge_requests.is_empty() => {
            vec![format!("{}!{}", project.path, mr.iid)]
        }
        _ => ctx.open_merge_requests.clone(),
    };
    if !open_refs.is_empty() {
        let listed: Vec<String> = open_refs
            .into_iter()
            .take(OPEN_MERGE_REQUESTS_MAX)
            .collect();
        out.add("CI_OPEN_MERGE_REQUESTS", listed.join(","), PrePipeline);
    }
    if ctx.deploy_freeze {
        out.add("CI_DEPLOY_FREEZE", "true", PrePipeline);
    }
    if let (Source::ExternalPullRequestEvent, Some(pr)) = (trigger.source, &trigger.merge_request) {
        let source_repo = if pr.source_project_path.is_empty() {
            &project.path
        } else {
            &pr.source_project_path
        };
        out.add(
            "CI_EXTERNAL_PULL_REQUEST_IID",
            pr.iid.to_string(),
            PrePipeline,
        );
        out.add(
            "CI_EXTERNAL_PULL_REQUEST_SOURCE_REPOSITORY",
            source_repo,
            PrePipeline,
        );
        out.add(
            "CI_EXTERNAL_PULL_REQUEST_TARGET_REPOSITORY",
            &project.path,
            PrePipeline,
        );
        out.add(
            "CI_EXTERNAL_PULL_REQUEST_SOURCE_BRANCH_NAME",
            &pr.source_branch,
            PrePipeline,
        );
        out.add(
            "CI_EXTERNAL_PULL_REQUEST_SOURCE_BRANCH_SHA",
            &pr.source_branch_sha,
            PrePipeline,
        );
        out.add(
            "CI_EXTERNAL_PULL_REQUEST_TARGET_BRANCH_NAME",
            &pr.target_branch,
            PrePipeline,
        );
        out.add(
            "CI_EXTERNAL_PULL_REQUEST_TARGET_BRANCH_SHA",
            &pr.target_branch_sha,
            PrePipeline,
        );
    }

    let user = &trigger.user;
    out.add("GITLAB_USER_ID", user.id.to_string(), Pipeline);
    out.add("GITLAB_USER_EMAIL", &user.email, Pipeline);
    out.add("GITLAB_USER_LOGIN", &user.login, Pipeline);
    out.add("GITLAB_USER_NAME", &user.name, Pipeline);
    if trigger.source == Source::Trigger {
        out.add("CI_PIPELINE_TRIGGERED", "true", Pipeline);
    }
    if let (RefKind::Tag, Some(description)) = (kind, &ctx.release_description) {
        let cut: String = description
            .chars()
            .take(RELEASE_DESCRIPTION_MAX_CHARS)
            .collect();
        out.add("CI_RELEASE_DESCRIPTION", cut, Pipeline);
    }
    out.0
}

/// `CI_MERGE_REQUEST_*` for a merge request pipeline.
fn merge_request_variables(
    out: &mut Out,
    trigger: &Trigger,
    mr: &MergeRequest,
    server: &ServerUrl,
) {
    use Phase::PrePipeline;
    let project = &trigger.project;
    let merged_result = !mr.source_branch_sha.is_empty()
        && !mr.target_branch_sha.is_empty()
        && trigger.commit.sha != mr.source_branch_sha;
    let (event_type, source_sha, target_sha) = if merged_result {
        (
            "merged_result",
            mr.source_branch_sha.as_str(),
            mr.target_branch_sha.as_str(),
        )
    } else {
        ("detached", "", "")
    };
    out.add("CI_MERGE_REQUEST_EVENT_TYPE", event_type, PrePipeline);
    out.add(
        "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA",
        source_sha,
        PrePipeline,
    );
    out.add(
        "CI_MERGE_REQUEST_TARGET_BRANCH_SHA",
        target_sha,
        PrePipeline,
    );
    if !mr.diff_base_sha.is_empty() {
        out.add(
            "CI_MERGE_REQUEST_DIFF_BASE_SHA",
            &mr.diff_base_sha,
            PrePipeline,
        );
    }
    out.add("CI_MERGE_REQUEST_ID", mr.id.to_string(), PrePipeline);
    out.add("CI_MERGE_REQUEST_IID", mr.iid.to_string(), PrePipeline);
    out.add(
        "CI_MERGE_REQUEST_REF_PATH",
        format!("refs/merge-requests/{}/head", mr.iid),
        PrePipeline,
    );
    out.add(
        "CI_MERGE_REQUEST_PROJECT_ID",
        project.id.to_string(),
        PrePipeline,
    );
    out.add("CI_MERGE_REQUEST_PROJECT_PATH", &project.path, PrePipeline);
    out.add("CI_MERGE_REQUEST_PROJECT_URL", &project.url, PrePipeline);
    out.add(
        "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
        &mr.target_branch,
        PrePipeline,
    );
    out.add("CI_MERGE_REQUEST_TITLE", &mr.title, PrePipeline);
    let (description, truncated) =
        truncate_with_omission(&mr.description, MR_DESCRIPTION_MAX_CHARS);
    out.add("CI_MERGE_REQUEST_DESCRIPTION", description, PrePipeline);
    out.add(
        "CI_MERGE_REQUEST_DESCRIPTION_IS_TRUNCATED",
        truncated.to_string(),
        PrePipeline,
    );
    if !mr.assignees.is_empty() {
        out.add(
            "CI_MERGE_REQUEST_ASSIGNEES",
            to_sentence(&mr.assignees),
            PrePipeline,
        );
    }
    if !mr.labels.is_empty() {
        let mut labels = mr.labels.clone();
        labels.sort();
        out.add("CI_MERGE_REQUEST_LABELS", labels.join(","), PrePipeline);
    }
    out.add("CI_MERGE_REQUEST_DRAFT", mr.draft.to_string(), PrePipeline);
    if mr.approved {
        out.add("CI_MERGE_REQUEST_APPROVED", "true", PrePipeline);
    }
    let same_project = mr.source_project_path.is_empty() || mr.source_project_path == project.path;
    let (source_id, source_path, source_url) = if same_project {
        let id = if mr.source_project_id == 0 {
            project.id
        } else {
            mr.source_project_id
        };
        (id, project.path.clone(), project.url.clone())
    } else {
        let url = format!("{}/{}", server.url, mr.source_project_path);
        (mr.source_project_id, mr.source_project_path.clone(), url)
    };
    out.add(
        "CI_MERGE_REQUEST_SOURCE_PROJECT_ID",
        source_id.to_string(),
        PrePipeline,
    );
    out.add(
        "CI_MERGE_REQUEST_SOURCE_PROJECT_PATH",
        source_path,
        PrePipeline,
    );
    out.add(
        "CI_MERGE_REQUEST_SOURCE_PROJECT_URL",
        source_url,
        PrePipeline,
    );
    out.add(
        "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME",
        &mr.source_branch,
        PrePipeline,
    );
}

/// JSON array of strings, as `CI_RUNNER_TAGS` shows them: `["a", "b"]`.
fn json_string_array(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| serde_json::Value::from(s.as_str()).to_string())
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// The job-specific predefined variables: the [`Phase::Pipeline`] ones GitLab computes per job
/// (`CI_JOB_NAME`, `CI_JOB_NAME_SLUG`, `CI_JOB_GROUP_NAME`, `CI_JOB_STAGE`, `CI_JOB_MANUAL`,
/// `CI_JOB_IMAGE`, `CI_NODE_INDEX` for `parallel` jobs, `CI_NODE_TOTAL` (`1` without `parallel`),
/// `CI_ENVIRONMENT_*` when the job has an environment) and every [`Phase::JobOnly`] one
/// (`CI_JOB_ID`, `CI_JOB_URL`, `CI_JOB_TOKEN`, `CI_JOB_STARTED_AT`, `CI_PIPELINE_ID`,
/// `CI_PIPELINE_URL`, `CI_BUILDS_DIR`, `CI_PROJECT_DIR`, `CI_SERVER=yes`, `CI_REGISTRY_USER`,
/// `CI_REGISTRY_PASSWORD`, `CI_REPOSITORY_URL`, `CI_RUNNER_*`, ...). No name here is also in
/// [`pipeline_variables`]: a job's predefined variables are both lists together.
pub fn job_variables(trigger: &Trigger, job: &JobContext) -> Vec<Var> {
    use Phase::{JobOnly, Pipeline};
    let mut out = Out::default();
    let project = &trigger.project;

    out.add("CI_JOB_NAME", &job.name, Pipeline);
    out.add("CI_JOB_NAME_SLUG", ref_slug(&job.name), Pipeline);
    out.add("CI_JOB_GROUP_NAME", job_group_name(&job.name), Pipeline);
    out.add("CI_JOB_STAGE", &job.stage, Pipeline);
    if job.manual {
        out.add("CI_JOB_MANUAL", "true", Pipeline);
    }
    if let Some(parallel) = job.parallel {
        out.add("CI_NODE_INDEX", parallel.index.to_string(), Pipeline);
    }
    let total = job.parallel.map_or(1, |p| p.total);
    out.add("CI_NODE_TOTAL", total.to_string(), Pipeline);
    if let Some(image) = &job.image {
        out.add("CI_JOB_IMAGE", image, Pipeline);
    }
    if let Some(env) = &job.environment {
        out.add("CI_ENVIRONMENT_NAME", &env.name, Pipeline);
        out.add("CI_ENVIRONMENT_SLUG", environment_slug(&env.name), Pipeline);
        out.add(
            "CI_ENVIRONMENT_ACTION",
            env.action.as_deref().unwrap_or("start"),
            Pipeline,
        );
        let tier = env
            .tier
            .as_deref()
            .unwrap_or_else(|| environment_tier(&env.name));
        out.add("CI_ENVIRONMENT_TIER", tier, Pipeline);
        if let Some(url) = &env.url {
            out.add("CI_ENVIRONMENT_URL", url, Pipeline);
        }
    }
    match job.disposable {
        Some(true) => out.add("CI_DISPOSABLE_ENVIRONMENT", "true", Pipeline),
        Some(false) => out.add("CI_SHARED_ENVIRONMENT", "true", Pipeline),
        None => {}
    }

    out.add("CI_SERVER", "yes", JobOnly);
    out.add("CI_JOB_ID", job.id.to_string(), JobOnly);
    let job_url = job
        .url
        .clone()
        .unwrap_or_else(|| format!("{}/-/jobs/{}", project.url, job.id));
    out.add("CI_JOB_URL", job_url, JobOnly);
    if let Some(token) = &job.token {
        out.secret("CI_JOB_TOKEN", token, JobOnly);
    }
    if let Some(started_at) = &job.started_at {
        out.add("CI_JOB_STARTED_AT", started_at, JobOnly);
    }
    if let Some(timeout) = job.timeout_secs {
        out.add("CI_JOB_TIMEOUT", timeout.to_string(), JobOnly);
    }
    if let Some(status) = &job.status {
        out.add("CI_JOB_STATUS", status, JobOnly);
    }
    out.add("CI_PIPELINE_ID", trigger.pipeline_id.to_string(), JobOnly);
    let pipeline_url = job
        .pipeline_url
        .clone()
        .unwrap_or_else(|| format!("{}/-/pipelines/{}", project.url, trigger.pipeline_id));
    out.add("CI_PIPELINE_URL", pipeline_url, JobOnly);
    if let Some(user) = &job.registry_user {
        out.add("CI_REGISTRY_USER", user, JobOnly);
    }
    if let Some(password) = &job.registry_password {
        out.secret("CI_REGISTRY_PASSWORD", password, JobOnly);
    }
    if let Some(token) = &job.token {
        let server = ServerUrl::parse(&project.server_url);
        let url = format!(
            "{}://{CI_JOB_USER}:{token}@{}/{}.git",
            server.protocol, server.location, project.path
        );
        out.add("CI_REPOSITORY_URL", url, JobOnly);
    }
    let builds_dir = job.builds_dir.as_deref().unwrap_or(DEFAULT_BUILDS_DIR);
    out.add("CI_BUILDS_DIR", builds_dir, JobOnly);
    let project_dir = match (&job.project_dir, project.dir.is_empty()) {
        (Some(dir), _) => dir.clone(),
        (None, false) => project.dir.clone(),
        (None, true) => format!("{}/{}", builds_dir.trim_end_matches('/'), project.path),
    };
    out.add("CI_PROJECT_DIR", project_dir, JobOnly);
    if let Some(runner) = &job.runner {
        out.add("CI_RUNNER_ID", runner.id.to_string(), JobOnly);
        out.add("CI_RUNNER_DESCRIPTION", &runner.description, JobOnly);
        out.add("CI_RUNNER_TAGS", json_string_array(&runner.tags), JobOnly);
        out.add("CI_RUNNER_VERSION", &runner.version, JobOnly);
        out.add("CI_RUNNER_REVISION", &runner.revision, JobOnly);
        out.add(
            "CI_RUNNER_EXECUTABLE_ARCH",
            &runner.executable_arch,
            JobOnly,
        );
        out.add("CI_RUNNER_SHORT_TOKEN", &runner.short_token, JobOnly);
    }
    out.0
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::trigger::{CommitInfo, ProjectInfo, UserInfo};

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
    const BEFORE: &str = "fedcba9876543210fedcba9876543210fedcba98";

    fn project() -> ProjectInfo {
        ProjectInfo {
            id: 42,
            path: "Group/Sub/My-Project".into(),
            title: "My Project".into(),
            url: "https://gantry.example.com/Group/Sub/My-Project".into(),
            default_branch: "main".into(),
            visibility: "internal".into(),
            dir: String::new(),
            server_url: "https://gantry.example.com".into(),
        }
    }

    fn branch() -> Trigger {
        Trigger {
            source: Source::Push,
            ref_name: "feature/ABC_12".into(),
            is_tag: false,
            protected: false,
            commit: CommitInfo {
                sha: SHA.into(),
                before_sha: BEFORE.into(),
                message: "Add feature\n\nLonger body\nsecond line\n".into(),
                author_name: "Jane Doe".into(),
                author_email: "jane@example.com".into(),
                timestamp: "2024-05-01T10:00:00+00:00".into(),
            },
            project: project(),
            merge_request: None,
            user: UserInfo {
                id: 7,
                login: "jane".into(),
                name: "Jane Doe".into(),
                email: "jane@example.com".into(),
            },
            pipeline_id: 1001,
            pipeline_iid: 17,
            variables: Vec::new(),
            changed_files: None,
            changed_since: Default::default(),
            files: None,
            context: PipelineContext::default(),
        }
    }

    fn tag() -> Trigger {
        Trigger {
            ref_name: "v1.2.0".into(),
            is_tag: true,
            protected: true,
            ..branch()
        }
    }

    fn merge_request() -> MergeRequest {
        MergeRequest {
            iid: 5,
            id: 9005,
            title: "Draft: Add feature".into(),
            description: "Implements the feature.".into(),
            source_branch: "feature/ABC_12".into(),
            source_branch_sha: SHA.into(),
            target_branch: "main".into(),
            target_branch_sha: "1111111111111111111111111111111111111111".into(),
            diff_base_sha: "2222222222222222222222222222222222222222".into(),
            labels: vec!["backend".into(), "Bug".into(), "api".into()],
            source_project_path: String::new(),
            source_project_id: 0,
            draft: true,
            assignees: vec!["alice".into(), "bob".into(), "carol".into()],
            approved: false,
        }
    }

    fn mr() -> Trigger {
        Trigger {
            source: Source::MergeRequestEvent,
            ref_name: "refs/merge-requests/5/head".into(),
            merge_request: Some(merge_request()),
            ..branch()
        }
    }

    fn schedule() -> Trigger {
        Trigger {
            source: Source::Schedule,
            ref_name: "main".into(),
            protected: true,
            ..branch()
        }
    }

    fn get<'a>(vars: &'a [Var], name: &str) -> Option<&'a str> {
        vars.iter()
            .find(|v| v.name == name)
            .map(|v| v.value.as_str())
    }

    fn names(vars: &[Var]) -> HashSet<&str> {
        vars.iter().map(|v| v.name.as_str()).collect()
    }

    // ---- slugs ----

    #[test]
    fn ref_slug_examples() {
        assert_eq!(ref_slug("feature/ABC_12"), "feature-abc-12");
        assert_eq!(ref_slug("main"), "main");
        assert_eq!(ref_slug("v1.2.0"), "v1-2-0");
        assert_eq!(ref_slug("Group/Sub/My-Project"), "group-sub-my-project");
        assert_eq!(ref_slug("a//b"), "a--b");
        assert_eq!(ref_slug(""), "");
    }

    #[test]
    fn ref_slug_trims_leading_and_trailing_dashes() {
        assert_eq!(ref_slug("--Hello--"), "hello");
        assert_eq!(ref_slug("_x_"), "x");
        assert_eq!(ref_slug("/feature/"), "feature");
        assert_eq!(ref_slug("///"), "");
        assert_eq!(ref_slug("rspec:test 1/3"), "rspec-test-1-3");
    }

    #[test]
    fn ref_slug_unicode_is_one_dash_per_character() {
        assert_eq!(ref_slug("Café/Über"), "caf---ber");
        assert_eq!(ref_slug("日本語-branch"), "branch");
        assert_eq!(ref_slug("emoji-🚀-x"), "emoji---x");
        // Full Unicode lowercasing: 'İ' lowercases to 'i' + a combining dot, the Kelvin sign to 'k'.
        assert_eq!(ref_slug("İx"), "i-x");
        assert_eq!(ref_slug("\u{212A}ey"), "key");
    }

    #[test]
    fn ref_slug_cuts_at_63_bytes_before_trimming() {
        let long = "a".repeat(70);
        assert_eq!(ref_slug(&long), "a".repeat(63));
        let with_dash_at_cut = format!("{}/b", "a".repeat(62));
        assert_eq!(ref_slug(&with_dash_at_cut), "a".repeat(62));
        let exact = "b".repeat(63);
        assert_eq!(ref_slug(&exact), exact);
        // Multi-byte characters count once each, before the cut.
        let mixed = format!("{}{}", "é".repeat(10), "z".repeat(60));
        assert_eq!(ref_slug(&mixed), "z".repeat(53));
        assert!(ref_slug(&"Ä".repeat(100)).is_empty());
        for s in ["x".repeat(200), format!("-{}-", "ab/".repeat(40))] {
            let slug = ref_slug(&s);
            assert!(slug.len() <= 63 && !slug.starts_with('-') && !slug.ends_with('-'));
        }
    }

    #[test]
    fn environment_slug_matches_gitlab() {
        // Expected values computed with GitLab's algorithm (SHA-256, base 36).
        assert_eq!(environment_slug("production"), "production");
        assert_eq!(environment_slug("PRODUCTION"), "production-vl4voz");
        assert_eq!(environment_slug("review/1-foo"), "review-1-foo-9tdj0u");
        assert_eq!(environment_slug("1-foo"), "env-1-foo-1k46wz");
        assert_eq!(environment_slug(""), "env-qhkd3p");
        assert_eq!(
            environment_slug("staging-12345678901234567"),
            "staging-123456789-s729ne"
        );
        assert_eq!(
            environment_slug("Review Apps/Feature ABC"),
            "review-apps-featu-bkz80p"
        );
        assert_eq!(
            environment_slug("review/feature-with-a-very-long-branch-name"),
            "review-feature-wi-bukhs3"
        );
    }

    #[test]
    fn environment_slug_without_suffix_drops_one_trailing_dash() {
        assert_eq!(environment_slug("foo-"), "foo");
        assert_eq!(environment_slug("staging-12345678-"), "staging-12345678");
        assert_eq!(
            environment_slug("staging-1234567890123456"),
            "staging-1234567890123456"
        );
    }

    #[test]
    fn environment_slug_shape() {
        for name in [
            "a",
            "Z",
            "9",
            "review/x",
            "ÄÖÜ",
            &"long-name".repeat(10),
            "-",
            "--x--",
        ] {
            let slug = environment_slug(name);
            assert!(slug.len() <= 24, "{name}: {slug}");
            assert!(
                slug.starts_with(|c: char| c.is_ascii_lowercase()),
                "{name}: {slug}"
            );
            assert!(!slug.ends_with('-'), "{name}: {slug}");
            assert!(!slug.contains("--"), "{name}: {slug}");
            assert!(
                slug.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            );
            assert_eq!(slug, environment_slug(name), "deterministic");
        }
        assert_ne!(environment_slug("Review/A"), environment_slug("review/a"));
    }

    #[test]
    fn environment_slug_suffix_of_gitlab_spec_digest() {
        // GitLab's own spec stubs the digest to 'a' * 64 and expects "q517sa".
        assert_eq!(environment_slug_suffix(&[0xaa; 32]), "q517sa");
    }

    #[test]
    fn sha256_known_answers() {
        let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(sha256(b"The quick brown fox jumps over the lazy dog")),
            "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592"
        );
        assert_eq!(
            hex(sha256(&[b'a'; 1000])),
            "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
        );
    }

    // ---- commit title and description ----

    #[test]
    fn commit_title_is_the_first_line() {
        assert_eq!(commit_title("Add feature\n\nbody"), "Add feature");
        assert_eq!(commit_title("Windows\r\nbody"), "Windows");
        assert_eq!(commit_title("single line"), "single line");
        assert_eq!(commit_title("\nafter blank"), "");
        assert_eq!(commit_title(""), "No commit message");
        assert_eq!(commit_title("  \n \t"), "No commit message");
        let long = "x".repeat(150);
        assert_eq!(
            commit_title(&long),
            long,
            "the full first line, never shortened"
        );
    }

    #[test]
    fn commit_description_is_the_rest() {
        assert_eq!(
            commit_description("Add feature\n\nbody\nmore\n"),
            "\nbody\nmore"
        );
        assert_eq!(commit_description("Title only"), "");
        assert_eq!(commit_description("Title only\n"), "");
        assert_eq!(commit_description("Title\r\nbody\r\n"), "body");
        assert_eq!(commit_description(""), "No commit message");
        let long_title = format!("{}\nbody", "t".repeat(100));
        assert_eq!(commit_description(&long_title), long_title);
        let short_title = format!("{}\nbody", "t".repeat(99));
        assert_eq!(commit_description(&short_title), "body");
    }

    // ---- pipeline variables by kind ----

    #[test]
    fn branch_pipeline() {
        let vars = pipeline_variables(&branch());
        assert_eq!(get(&vars, "CI_COMMIT_BRANCH"), Some("feature/ABC_12"));
        assert_eq!(get(&vars, "CI_COMMIT_REF_NAME"), Some("feature/ABC_12"));
        assert_eq!(get(&vars, "CI_COMMIT_REF_SLUG"), Some("feature-abc-12"));
        assert_eq!(get(&vars, "CI_COMMIT_SHA"), Some(SHA));
        assert_eq!(get(&vars, "CI_COMMIT_SHORT_SHA"), Some("01234567"));
        assert_eq!(get(&vars, "CI_COMMIT_BEFORE_SHA"), Some(BEFORE));
        assert_eq!(get(&vars, "CI_COMMIT_REF_PROTECTED"), Some("false"));
        assert_eq!(get(&vars, "CI_COMMIT_TITLE"), Some("Add feature"));
        assert_eq!(
            get(&vars, "CI_COMMIT_DESCRIPTION"),
            Some("\nLonger body\nsecond line")
        );
        assert_eq!(
            get(&vars, "CI_COMMIT_MESSAGE"),
            Some("Add feature\n\nLonger body\nsecond line\n")
        );
        assert_eq!(
            get(&vars, "CI_COMMIT_AUTHOR"),
            Some("Jane Doe <jane@example.com>")
        );
        assert_eq!(
            get(&vars, "CI_COMMIT_TIMESTAMP"),
            Some("2024-05-01T10:00:00+00:00")
        );
        assert_eq!(get(&vars, "CI_PIPELINE_SOURCE"), Some("push"));
        for absent in [
            "CI_COMMIT_TAG",
            "CI_COMMIT_TAG_MESSAGE",
            "CI_MERGE_REQUEST_IID",
            "CI_OPEN_MERGE_REQUESTS",
            "CI_PIPELINE_SCHEDULE_DESCRIPTION",
            "CI_PIPELINE_TRIGGERED",
            "CI_EXTERNAL_PULL_REQUEST_IID",
            "CI_RELEASE_DESCRIPTION",
            "CI_JOB_NAME",
            "CI_PIPELINE_ID",
        ] {
            assert_eq!(get(&vars, absent), None, "{absent}");
        }
        assert!(!vars.iter().any(|v| v.name.starts_with("CI_MERGE_REQUEST_")));
    }

    #[test]
    fn tag_pipeline() {
        let ctx = PipelineContext {
            tag_message: Some("Release 1.2.0".into()),
            release_description: Some("r".repeat(2000)),
            ..PipelineContext::default()
        };
        let vars = pipeline_variables_with(&tag(), &ctx);
        assert_eq!(get(&vars, "CI_COMMIT_TAG"), Some("v1.2.0"));
        assert_eq!(get(&vars, "CI_COMMIT_TAG_MESSAGE"), Some("Release 1.2.0"));
        assert_eq!(get(&vars, "CI_COMMIT_REF_NAME"), Some("v1.2.0"));
        assert_eq!(get(&vars, "CI_COMMIT_REF_SLUG"), Some("v1-2-0"));
        assert_eq!(get(&vars, "CI_COMMIT_REF_PROTECTED"), Some("true"));
        assert_eq!(get(&vars, "CI_COMMIT_BRANCH"), None);
        assert_eq!(get(&vars, "CI_OPEN_MERGE_REQUESTS"), None);
        assert_eq!(
            get(&vars, "CI_RELEASE_DESCRIPTION").map(str::len),
            Some(1024)
        );
        // Without a context the tag message is empty but present, as for lightweight tags.
        let plain = pipeline_variables(&tag());
        assert_eq!(get(&plain, "CI_COMMIT_TAG_MESSAGE"), Some(""));
        assert_eq!(get(&plain, "CI_RELEASE_DESCRIPTION"), None);
    }

    #[test]
    fn merge_request_pipeline() {
        let vars = pipeline_variables(&mr());
        assert_eq!(
            get(&vars, "CI_PIPELINE_SOURCE"),
            Some("merge_request_event")
        );
        assert_eq!(get(&vars, "CI_COMMIT_BRANCH"), None);
        assert_eq!(get(&vars, "CI_COMMIT_TAG"), None);
        assert_eq!(get(&vars, "CI_COMMIT_REF_NAME"), Some("feature/ABC_12"));
        assert_eq!(get(&vars, "CI_COMMIT_REF_SLUG"), Some("feature-abc-12"));
        assert_eq!(get(&vars, "CI_COMMIT_BEFORE_SHA"), Some(NULL_SHA));
        assert_eq!(get(&vars, "CI_MERGE_REQUEST_IID"), Some("5"));
        assert_eq!(get(&vars, "CI_MERGE_REQUEST_ID"), Some("9005"));
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_TITLE"),
            Some("Draft: Add feature")
        );
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_DESCRIPTION"),
            Some("Implements the feature.")
        );
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_DESCRIPTION_IS_TRUNCATED"),
            Some("false")
        );
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME"),
            Some("feature/ABC_12")
        );
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_TARGET_BRANCH_NAME"),
            Some("main")
        );
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_REF_PATH"),
            Some("refs/merge-requests/5/head")
        );
        assert_eq!(get(&vars, "CI_MERGE_REQUEST_PROJECT_ID"), Some("42"));
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_PROJECT_PATH"),
            Some("Group/Sub/My-Project")
        );
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_SOURCE_PROJECT_PATH"),
            Some("Group/Sub/My-Project")
        );
        assert_eq!(get(&vars, "CI_MERGE_REQUEST_SOURCE_PROJECT_ID"), Some("42"));
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_DIFF_BASE_SHA"),
            Some("2222222222222222222222222222222222222222")
        );
        assert_eq!(get(&vars, "CI_MERGE_REQUEST_DRAFT"), Some("true"));
        assert_eq!(get(&vars, "CI_MERGE_REQUEST_APPROVED"), None);
        assert_eq!(
            get(&vars, "CI_OPEN_MERGE_REQUESTS"),
            Some("Group/Sub/My-Project!5")
        );
    }

    #[test]
    fn merge_request_event_type_and_branch_shas() {
        // The pipeline runs on the source head: a detached pipeline, SHAs empty as in GitLab.
        let detached = pipeline_variables(&mr());
        assert_eq!(
            get(&detached, "CI_MERGE_REQUEST_EVENT_TYPE"),
            Some("detached")
        );
        assert_eq!(
            get(&detached, "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA"),
            Some("")
        );
        assert_eq!(
            get(&detached, "CI_MERGE_REQUEST_TARGET_BRANCH_SHA"),
            Some("")
        );
        // The pipeline runs on another commit (the merge result).
        let mut merged = mr();
        merged.commit.sha = "3333333333333333333333333333333333333333".into();
        let vars = pipeline_variables(&merged);
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_EVENT_TYPE"),
            Some("merged_result")
        );
        assert_eq!(get(&vars, "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA"), Some(SHA));
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_TARGET_BRANCH_SHA"),
            Some("1111111111111111111111111111111111111111")
        );
    }

    #[test]
    fn merge_request_lists() {
        let vars = pipeline_variables(&mr());
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_LABELS"),
            Some("Bug,api,backend")
        );
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_ASSIGNEES"),
            Some("alice, bob, and carol")
        );
        let mut two = mr();
        let m = two.merge_request.as_mut().unwrap();
        m.assignees = vec!["alice".into(), "bob".into()];
        m.labels.clear();
        m.approved = true;
        let vars = pipeline_variables(&two);
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_ASSIGNEES"),
            Some("alice and bob")
        );
        assert_eq!(get(&vars, "CI_MERGE_REQUEST_LABELS"), None);
        assert_eq!(get(&vars, "CI_MERGE_REQUEST_APPROVED"), Some("true"));
        two.merge_request.as_mut().unwrap().assignees = vec!["solo".into()];
        assert_eq!(
            get(&pipeline_variables(&two), "CI_MERGE_REQUEST_ASSIGNEES"),
            Some("solo")
        );
        two.merge_request.as_mut().unwrap().assignees.clear();
        assert_eq!(
            get(&pipeline_variables(&two), "CI_MERGE_REQUEST_ASSIGNEES"),
            None
        );
    }

    #[test]
    fn merge_request_description_is_truncated() {
        let mut t = mr();
        t.merge_request.as_mut().unwrap().description = "é".repeat(3000);
        let vars = pipeline_variables(&t);
        let description = get(&vars, "CI_MERGE_REQUEST_DESCRIPTION").unwrap();
        assert_eq!(description.chars().count(), 2700);
        assert!(description.ends_with("é..."));
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_DESCRIPTION_IS_TRUNCATED"),
            Some("true")
        );
    }

    #[test]
    fn merge_request_from_a_fork() {
        let mut t = mr();
        let m = t.merge_request.as_mut().unwrap();
        m.source_project_path = "contributor/My-Project".into();
        m.source_project_id = 77;
        let vars = pipeline_variables(&t);
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_SOURCE_PROJECT_PATH"),
            Some("contributor/My-Project")
        );
        assert_eq!(get(&vars, "CI_MERGE_REQUEST_SOURCE_PROJECT_ID"), Some("77"));
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_SOURCE_PROJECT_URL"),
            Some("https://gantry.example.com/contributor/My-Project")
        );
        assert_eq!(
            get(&vars, "CI_MERGE_REQUEST_PROJECT_PATH"),
            Some("Group/Sub/My-Project")
        );
    }

    #[test]
    fn merge_request_source_without_data_has_no_merge_request_variables() {
        let t = Trigger {
            merge_request: None,
            ..mr()
        };
        let vars = pipeline_variables(&t);
        assert!(!vars.iter().any(|v| v.name.starts_with("CI_MERGE_REQUEST_")));
        assert_eq!(get(&vars, "CI_COMMIT_BRANCH"), None);
        assert_eq!(
            get(&vars, "CI_COMMIT_REF_NAME"),
            Some("refs/merge-requests/5/head")
        );
    }

    #[test]
    fn merge_request_data_outside_merge_request_pipelines_is_ignored() {
        let t = Trigger {
            merge_request: Some(merge_request()),
            ..branch()
        };
        let vars = pipeline_variables(&t);
        assert!(!vars.iter().any(|v| v.name.starts_with("CI_MERGE_REQUEST_")));
        assert_eq!(get(&vars, "CI_COMMIT_BRANCH"), Some("feature/ABC_12"));
    }

    #[test]
    fn schedule_pipeline() {
        let ctx = PipelineContext {
            schedule_description: Some("nightly".into()),
            ..PipelineContext::default()
        };
        let vars = pipeline_variables_with(&schedule(), &ctx);
        assert_eq!(get(&vars, "CI_PIPELINE_SOURCE"), Some("schedule"));
        assert_eq!(
            get(&vars, "CI_PIPELINE_SCHEDULE_DESCRIPTION"),
            Some("nightly")
        );
        assert_eq!(get(&vars, "CI_COMMIT_BRANCH"), Some("main"));
        assert_eq!(get(&vars, "CI_COMMIT_BEFORE_SHA"), Some(NULL_SHA));
        assert_eq!(get(&vars, "CI_COMMIT_REF_PROTECTED"), Some("true"));
        assert_eq!(get(&vars, "CI_COMMIT_TAG"), None);
        assert!(!vars.iter().any(|v| v.name.starts_with("CI_MERGE_REQUEST_")));
        assert_eq!(
            get(
                &pipeline_variables(&schedule()),
                "CI_PIPELINE_SCHEDULE_DESCRIPTION"
            ),
            Some("")
        );
    }

    #[test]
    fn before_sha_only_for_pushes() {
        for source in Source::ALL {
            let t = Trigger {
                source: *source,
                ..branch()
            };
            let expected = if *source == Source::Push {
                BEFORE
            } else {
                NULL_SHA
            };
            assert_eq!(
                get(&pipeline_variables(&t), "CI_COMMIT_BEFORE_SHA"),
                Some(expected)
            );
        }
        let mut first_push = branch();
        first_push.commit.before_sha.clear();
        assert_eq!(
            get(&pipeline_variables(&first_push), "CI_COMMIT_BEFORE_SHA"),
            Some(NULL_SHA)
        );
    }

    #[test]
    fn unknown_commit_leaves_commit_variables_out() {
        let mut t = branch();
        t.commit.sha.clear();
        let vars = pipeline_variables(&t);
        assert!(!vars.iter().any(|v| v.name.starts_with("CI_COMMIT_")));
        assert_eq!(get(&vars, "CI_PIPELINE_SOURCE"), Some("push"));
    }

    #[test]
    fn open_merge_requests_for_branches() {
        let ctx = PipelineContext {
            open_merge_requests: (1..=6)
                .map(|i| format!("Group/Sub/My-Project!{i}"))
                .collect(),
            ..PipelineContext::default()
        };
        let vars = pipeline_variables_with(&branch(), &ctx);
        assert_eq!(
            get(&vars, "CI_OPEN_MERGE_REQUESTS"),
            Some(
                "Group/Sub/My-Project!1,Group/Sub/My-Project!2,Group/Sub/My-Project!3,Group/Sub/My-Project!4"
            )
        );
        assert_eq!(
            get(
                &pipeline_variables_with(&tag(), &ctx),
                "CI_OPEN_MERGE_REQUESTS"
            ),
            None
        );
    }

    #[test]
    fn trigger_and_external_pull_request_sources() {
        let triggered = Trigger {
            source: Source::Trigger,
            ..branch()
        };
        assert_eq!(
            get(&pipeline_variables(&triggered), "CI_PIPELINE_TRIGGERED"),
            Some("true")
        );
        let pr = Trigger {
            source: Source::ExternalPullRequestEvent,
            merge_request: Some(merge_request()),
            ..branch()
        };
        let vars = pipeline_variables(&pr);
        assert_eq!(get(&vars, "CI_EXTERNAL_PULL_REQUEST_IID"), Some("5"));
        assert_eq!(
            get(&vars, "CI_EXTERNAL_PULL_REQUEST_SOURCE_BRANCH_NAME"),
            Some("feature/ABC_12")
        );
        assert_eq!(
            get(&vars, "CI_EXTERNAL_PULL_REQUEST_TARGET_BRANCH_NAME"),
            Some("main")
        );
        assert_eq!(
            get(&vars, "CI_EXTERNAL_PULL_REQUEST_TARGET_REPOSITORY"),
            Some("Group/Sub/My-Project")
        );
        assert_eq!(get(&vars, "CI_COMMIT_BRANCH"), Some("feature/ABC_12"));
        assert!(!vars.iter().any(|v| v.name.starts_with("CI_MERGE_REQUEST_")));
    }

    #[test]
    fn server_and_project_variables() {
        let vars = pipeline_variables(&branch());
        assert_eq!(get(&vars, "CI"), Some("true"));
        assert_eq!(get(&vars, "GITLAB_CI"), Some("true"));
        assert_eq!(get(&vars, "CI_SERVER_NAME"), Some("Gantry"));
        assert_eq!(
            get(&vars, "CI_SERVER_URL"),
            Some("https://gantry.example.com")
        );
        assert_eq!(get(&vars, "CI_SERVER_HOST"), Some("gantry.example.com"));
        assert_eq!(get(&vars, "CI_SERVER_PORT"), Some("443"));
        assert_eq!(get(&vars, "CI_SERVER_PROTOCOL"), Some("https"));
        assert_eq!(get(&vars, "CI_SERVER_FQDN"), Some("gantry.example.com"));
        assert_eq!(
            get(&vars, "CI_API_V4_URL"),
            Some("https://gantry.example.com/api/v4")
        );
        assert_eq!(get(&vars, "CI_PROJECT_ID"), Some("42"));
        assert_eq!(get(&vars, "CI_PROJECT_NAME"), Some("My-Project"));
        assert_eq!(get(&vars, "CI_PROJECT_TITLE"), Some("My Project"));
        assert_eq!(get(&vars, "CI_PROJECT_PATH"), Some("Group/Sub/My-Project"));
        assert_eq!(
            get(&vars, "CI_PROJECT_PATH_SLUG"),
            Some("group-sub-my-project")
        );
        assert_eq!(get(&vars, "CI_PROJECT_NAMESPACE"), Some("Group/Sub"));
        assert_eq!(get(&vars, "CI_PROJECT_NAMESPACE_SLUG"), Some("group-sub"));
        assert_eq!(get(&vars, "CI_PROJECT_ROOT_NAMESPACE"), Some("Group"));
        assert_eq!(get(&vars, "CI_PROJECT_VISIBILITY"), Some("internal"));
        assert_eq!(
            get(&vars, "CI_PROJECT_URL"),
            Some("https://gantry.example.com/Group/Sub/My-Project")
        );
        assert_eq!(get(&vars, "CI_DEFAULT_BRANCH"), Some("main"));
        assert_eq!(get(&vars, "CI_CONFIG_PATH"), Some(".gitlab-ci.yml"));
        assert_eq!(get(&vars, "CI_PIPELINE_IID"), Some("17"));
        assert_eq!(get(&vars, "GITLAB_USER_ID"), Some("7"));
        assert_eq!(get(&vars, "GITLAB_USER_LOGIN"), Some("jane"));
        assert_eq!(get(&vars, "GITLAB_USER_NAME"), Some("Jane Doe"));
        assert_eq!(get(&vars, "GITLAB_USER_EMAIL"), Some("jane@example.com"));
        assert_eq!(get(&vars, "CI_REGISTRY"), None);
        assert_eq!(get(&vars, "CI_PIPELINE_CREATED_AT"), None);
    }

    #[test]
    fn server_url_forms() {
        let cases = [
            (
                "http://localhost:8080",
                "localhost",
                "8080",
                "http",
                "localhost:8080",
            ),
            (
                "http://localhost:8080/",
                "localhost",
                "8080",
                "http",
                "localhost:8080",
            ),
            (
                "https://ci.example.com:443",
                "ci.example.com",
                "443",
                "https",
                "ci.example.com",
            ),
            (
                "http://ci.example.com",
                "ci.example.com",
                "80",
                "http",
                "ci.example.com",
            ),
            (
                "https://[::1]:9443/prefix",
                "[::1]",
                "9443",
                "https",
                "[::1]:9443",
            ),
            (
                "HTTPS://user@host.example",
                "host.example",
                "443",
                "https",
                "host.example",
            ),
        ];
        for (url, host, port, protocol, fqdn) in cases {
            let s = ServerUrl::parse(url);
            assert_eq!((s.host.as_str(), s.port.as_str()), (host, port), "{url}");
            assert_eq!(
                (s.protocol.as_str(), s.fqdn.as_str()),
                (protocol, fqdn),
                "{url}"
            );
        }
    }

    #[test]
    fn pipeline_context_variables() {
        let ctx = PipelineContext {
            created_at: Some("2024-05-01T10:00:05Z".into()),
            name: Some("Nightly build".into()),
            config_path: Some("ci/pipeline.yml".into()),
            project_description: Some("A project".into()),
            project_namespace_id: Some(3),
            registry: Some("registry.example.com:5000".into()),
            server_version: Some("2.10.3-rc1".into()),
            server_revision: Some("abc123".into()),
            ssh_host: Some("git.example.com".into()),
            ssh_port: Some(2222),
            deploy_freeze: true,
            ..PipelineContext::default()
        };
        let vars = pipeline_variables_with(&branch(), &ctx);
        assert_eq!(
            get(&vars, "CI_PIPELINE_CREATED_AT"),
            Some("2024-05-01T10:00:05Z")
        );
        assert_eq!(get(&vars, "CI_PIPELINE_NAME"), Some("Nightly build"));
        assert_eq!(get(&vars, "CI_CONFIG_PATH"), Some("ci/pipeline.yml"));
        assert_eq!(get(&vars, "CI_PROJECT_DESCRIPTION"), Some("A project"));
        assert_eq!(get(&vars, "CI_PROJECT_NAMESPACE_ID"), Some("3"));
        assert_eq!(get(&vars, "CI_REGISTRY"), Some("registry.example.com:5000"));
        assert_eq!(
            get(&vars, "CI_REGISTRY_IMAGE"),
            Some("registry.example.com:5000/group/sub/my-project")
        );
        assert_eq!(get(&vars, "CI_SERVER_VERSION"), Some("2.10.3-rc1"));
        assert_eq!(get(&vars, "CI_SERVER_VERSION_MAJOR"), Some("2"));
        assert_eq!(get(&vars, "CI_SERVER_VERSION_MINOR"), Some("10"));
        assert_eq!(get(&vars, "CI_SERVER_VERSION_PATCH"), Some("3"));
        assert_eq!(get(&vars, "CI_SERVER_REVISION"), Some("abc123"));
        assert_eq!(
            get(&vars, "CI_SERVER_SHELL_SSH_HOST"),
            Some("git.example.com")
        );
        assert_eq!(get(&vars, "CI_SERVER_SHELL_SSH_PORT"), Some("2222"));
        assert_eq!(get(&vars, "CI_DEPLOY_FREEZE"), Some("true"));
    }

    #[test]
    fn pipeline_variables_are_unique_and_never_job_only() {
        for t in [branch(), tag(), mr(), schedule()] {
            let vars = pipeline_variables(&t);
            assert_eq!(
                names(&vars).len(),
                vars.len(),
                "duplicate names for {:?}",
                t.source
            );
            assert!(vars.iter().all(|v| v.phase != Phase::JobOnly));
            assert!(vars.iter().all(|v| !v.masked && !v.raw));
        }
    }

    #[test]
    fn phases_follow_the_reference() {
        let vars = pipeline_variables(&mr());
        let phase = |n: &str| vars.iter().find(|v| v.name == n).map(|v| v.phase);
        assert_eq!(phase("CI_COMMIT_SHA"), Some(Phase::PrePipeline));
        assert_eq!(phase("CI_MERGE_REQUEST_IID"), Some(Phase::PrePipeline));
        assert_eq!(phase("CI_PIPELINE_SOURCE"), Some(Phase::PrePipeline));
        assert_eq!(phase("CI_PIPELINE_IID"), Some(Phase::Pipeline));
        assert_eq!(phase("GITLAB_USER_LOGIN"), Some(Phase::Pipeline));
        let job = job_variables(&mr(), &JobContext::new("build", "build", 1));
        let phase = |n: &str| job.iter().find(|v| v.name == n).map(|v| v.phase);
        assert_eq!(phase("CI_JOB_NAME"), Some(Phase::Pipeline));
        assert_eq!(phase("CI_NODE_TOTAL"), Some(Phase::Pipeline));
        assert_eq!(phase("CI_JOB_ID"), Some(Phase::JobOnly));
        assert_eq!(phase("CI_PIPELINE_ID"), Some(Phase::JobOnly));
        assert_eq!(phase("CI_PROJECT_DIR"), Some(Phase::JobOnly));
    }

    // ---- job variables ----

    fn full_job() -> JobContext {
        JobContext {
            parallel: Some(Parallel { index: 2, total: 3 }),
            image: Some("rust:1.95".into()),
            environment: Some(JobEnvironment {
                name: "review/feature-x".into(),
                url: Some("https://feature-x.example.com".into()),
                action: None,
                tier: None,
            }),
            manual: true,
            started_at: Some("2024-05-01T10:01:00Z".into()),
            timeout_secs: Some(3600),
            status: Some("success".into()),
            token: Some("glcbt-secret".into()),
            registry_user: Some("gitlab-ci-token".into()),
            registry_password: Some("glcbt-secret".into()),
            runner: Some(RunnerInfo {
                id: 12,
                description: "local runner".into(),
                tags: vec!["docker".into(), "linux \"x\"".into()],
                version: "1.0.0".into(),
                revision: "deadbeef".into(),
                executable_arch: "linux/amd64".into(),
                short_token: "abc".into(),
            }),
            disposable: Some(true),
            ..JobContext::new("Test: [ruby, 3.3]", "test", 555)
        }
    }

    #[test]
    fn job_variables_basic() {
        let vars = job_variables(&branch(), &JobContext::new("Build Docs", "build", 99));
        assert_eq!(get(&vars, "CI_JOB_NAME"), Some("Build Docs"));
        assert_eq!(get(&vars, "CI_JOB_NAME_SLUG"), Some("build-docs"));
        assert_eq!(get(&vars, "CI_JOB_GROUP_NAME"), Some("Build Docs"));
        assert_eq!(get(&vars, "CI_JOB_STAGE"), Some("build"));
        assert_eq!(get(&vars, "CI_JOB_ID"), Some("99"));
        assert_eq!(get(&vars, "CI_NODE_TOTAL"), Some("1"));
        assert_eq!(get(&vars, "CI_NODE_INDEX"), None);
        assert_eq!(get(&vars, "CI_JOB_MANUAL"), None);
        assert_eq!(get(&vars, "CI_SERVER"), Some("yes"));
        assert_eq!(get(&vars, "CI_PIPELINE_ID"), Some("1001"));
        assert_eq!(
            get(&vars, "CI_PIPELINE_URL"),
            Some("https://gantry.example.com/Group/Sub/My-Project/-/pipelines/1001")
        );
        assert_eq!(
            get(&vars, "CI_JOB_URL"),
            Some("https://gantry.example.com/Group/Sub/My-Project/-/jobs/99")
        );
        assert_eq!(get(&vars, "CI_BUILDS_DIR"), Some("/builds"));
        assert_eq!(
            get(&vars, "CI_PROJECT_DIR"),
            Some("/builds/Group/Sub/My-Project")
        );
        for absent in [
            "CI_JOB_TOKEN",
            "CI_JOB_IMAGE",
            "CI_REPOSITORY_URL",
            "CI_REGISTRY_USER",
            "CI_JOB_STARTED_AT",
            "CI_RUNNER_ID",
            "CI_DISPOSABLE_ENVIRONMENT",
            "CI_SHARED_ENVIRONMENT",
        ] {
            assert_eq!(get(&vars, absent), None, "{absent}");
        }
        assert!(!vars.iter().any(|v| v.name.starts_with("CI_ENVIRONMENT_")));
    }

    #[test]
    fn job_variables_full() {
        let vars = job_variables(&branch(), &full_job());
        assert_eq!(get(&vars, "CI_JOB_NAME_SLUG"), Some("test---ruby--3-3"));
        assert_eq!(get(&vars, "CI_JOB_GROUP_NAME"), Some("Test"));
        assert_eq!(get(&vars, "CI_NODE_INDEX"), Some("2"));
        assert_eq!(get(&vars, "CI_NODE_TOTAL"), Some("3"));
        assert_eq!(get(&vars, "CI_JOB_MANUAL"), Some("true"));
        assert_eq!(get(&vars, "CI_JOB_IMAGE"), Some("rust:1.95"));
        assert_eq!(get(&vars, "CI_ENVIRONMENT_NAME"), Some("review/feature-x"));
        assert_eq!(
            get(&vars, "CI_ENVIRONMENT_SLUG"),
            Some(environment_slug("review/feature-x").as_str())
        );
        assert_eq!(get(&vars, "CI_ENVIRONMENT_ACTION"), Some("start"));
        assert_eq!(get(&vars, "CI_ENVIRONMENT_TIER"), Some("development"));
        assert_eq!(
            get(&vars, "CI_ENVIRONMENT_URL"),
            Some("https://feature-x.example.com")
        );
        assert_eq!(
            get(&vars, "CI_JOB_STARTED_AT"),
            Some("2024-05-01T10:01:00Z")
        );
        assert_eq!(get(&vars, "CI_JOB_TIMEOUT"), Some("3600"));
        assert_eq!(get(&vars, "CI_JOB_STATUS"), Some("success"));
        assert_eq!(
            get(&vars, "CI_REPOSITORY_URL"),
            Some(
                "https://gitlab-ci-token:glcbt-secret@gantry.example.com/Group/Sub/My-Project.git"
            )
        );
        assert_eq!(
            get(&vars, "CI_RUNNER_TAGS"),
            Some(r#"["docker", "linux \"x\""]"#)
        );
        assert_eq!(get(&vars, "CI_RUNNER_EXECUTABLE_ARCH"), Some("linux/amd64"));
        assert_eq!(get(&vars, "CI_DISPOSABLE_ENVIRONMENT"), Some("true"));
        let masked: Vec<&str> = vars
            .iter()
            .filter(|v| v.masked)
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(masked, ["CI_JOB_TOKEN", "CI_REGISTRY_PASSWORD"]);
    }

    #[test]
    fn job_and_pipeline_names_are_disjoint() {
        for t in [branch(), tag(), mr(), schedule()] {
            let pipeline = pipeline_variables(&t);
            let job = job_variables(&t, &full_job());
            assert_eq!(names(&job).len(), job.len());
            let (p, j) = (names(&pipeline), names(&job));
            let overlap: Vec<&str> = p.intersection(&j).copied().collect();
            assert!(overlap.is_empty(), "{overlap:?}");
        }
    }

    #[test]
    fn project_dir_choices() {
        let mut t = branch();
        let job = JobContext {
            builds_dir: Some("/tmp/b/".into()),
            ..JobContext::new("j", "s", 1)
        };
        assert_eq!(
            get(&job_variables(&t, &job), "CI_PROJECT_DIR"),
            Some("/tmp/b/Group/Sub/My-Project")
        );
        t.project.dir = "/work/checkout".into();
        assert_eq!(
            get(&job_variables(&t, &job), "CI_PROJECT_DIR"),
            Some("/work/checkout")
        );
        let explicit = JobContext {
            project_dir: Some("/x".into()),
            ..job
        };
        assert_eq!(
            get(&job_variables(&t, &explicit), "CI_PROJECT_DIR"),
            Some("/x")
        );
    }

    #[test]
    fn environment_defaults_and_overrides() {
        let env = |name: &str, tier: Option<&str>, action: Option<&str>| JobContext {
            environment: Some(JobEnvironment {
                name: name.into(),
                url: None,
                tier: tier.map(Into::into),
                action: action.map(Into::into),
            }),
            ..JobContext::new("deploy", "deploy", 3)
        };
        let vars = job_variables(&branch(), &env("production", None, Some("stop")));
        assert_eq!(get(&vars, "CI_ENVIRONMENT_TIER"), Some("production"));
        assert_eq!(get(&vars, "CI_ENVIRONMENT_ACTION"), Some("stop"));
        assert_eq!(get(&vars, "CI_ENVIRONMENT_URL"), None);
        let vars = job_variables(&branch(), &env("production", Some("staging"), None));
        assert_eq!(get(&vars, "CI_ENVIRONMENT_TIER"), Some("staging"));
    }

    #[test]
    fn environment_tier_guesses() {
        for (name, tier) in [
            ("review/feature", "development"),
            ("dev", "development"),
            ("QA", "testing"),
            ("acceptance", "testing"),
            ("integration", "testing"),
            ("staging", "staging"),
            ("pre-prod", "staging"),
            ("demo", "staging"),
            ("production", "production"),
            ("PRD", "production"),
            ("live", "production"),
            ("customer-a", "other"),
        ] {
            assert_eq!(environment_tier(name), tier, "{name}");
        }
    }

    #[test]
    fn job_group_names() {
        assert_eq!(job_group_name("rspec:test: [ruby, ubuntu]"), "rspec:test");
        assert_eq!(job_group_name("test 1/3"), "test");
        assert_eq!(job_group_name("test 1:3"), "test");
        assert_eq!(job_group_name("build linux 2/10"), "build linux");
        assert_eq!(job_group_name("deploy: [a] [b]"), "deploy");
        assert_eq!(job_group_name("plain"), "plain");
        assert_eq!(job_group_name("v1.2"), "v1.2");
        assert_eq!(job_group_name("  spaced  "), "spaced");
    }

    #[test]
    fn at_least_sixty_predefined_variables() {
        let ctx = PipelineContext {
            registry: Some("registry.example.com".into()),
            created_at: Some("2024-05-01T10:00:05Z".into()),
            name: Some("p".into()),
            ..PipelineContext::default()
        };
        let mut all: HashSet<String> = HashSet::new();
        for t in [branch(), tag(), mr(), schedule()] {
            all.extend(
                pipeline_variables_with(&t, &ctx)
                    .into_iter()
                    .map(|v| v.name),
            );
            all.extend(job_variables(&t, &full_job()).into_iter().map(|v| v.name));
        }
        assert!(all.len() >= 100, "{} variables", all.len());
        for name in all.iter() {
            assert!(
                name.starts_with("CI") || name.starts_with("GITLAB_"),
                "unexpected predefined name {name}"
            );
        }
    }
}
