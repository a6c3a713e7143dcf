//! S3-compatible object storage for tests: PyPI's moto (`python -m moto.server`, in the venv
//! `scripts/test` makes) on 127.0.0.1, with request signing checked.
//!
//! | item | what it does |
//! | --- | --- |
//! | [`moto_python`] | the python that has moto and boto3: [`MOTO_PYTHON_ENV`], else the venv of `scripts/test` |
//! | [`moto_for_test`] | a started [`Moto`], `Ok(None)` (skip, with a note) when moto is missing, or an error when `GANTRY_REQUIRE_REGISTRY_TOOLS=1` |
//! | [`Moto`] | one moto server for one test: a free port, a bucket, IAM on (a user's access key that may do everything; any other key or secret is refused), killed on drop |
//!
//! moto checks signatures only once IAM is on: the server starts with
//! `INITIAL_NO_AUTH_ACTION_COUNT=4`, the four requests that make the bucket, the user, its
//! policy and its access key pass without credentials, and every later request must be
//! signed with that key. What the tests read back (the objects in a bucket, unfinished
//! multipart uploads) comes from boto3, not from the code under test.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::registry::{REQUIRE_TOOLS_ENV, run_tool, venv_python};

/// The environment variable naming the python that has PyPI's `moto[server]` (`scripts/test`
/// sets it).
pub const MOTO_PYTHON_ENV: &str = "GANTRY_TEST_MOTO_PYTHON";

/// The region every test uses.
pub const REGION: &str = "us-east-1";

/// The python with moto's server and boto3: [`MOTO_PYTHON_ENV`], else the venv `scripts/test`
/// makes (`$XDG_CACHE_HOME/gantry/moto-venv`), when it can import both.
pub fn moto_python() -> Option<PathBuf> {
    venv_python(MOTO_PYTHON_ENV, "moto-venv", "import moto.server, boto3")
}

/// A started [`Moto`] for a test: `Ok(None)` (skip, with a note on stderr) when no python has
/// moto, or an error when [`REQUIRE_TOOLS_ENV`] is set.
pub fn moto_for_test(test: &str) -> Result<Option<Moto>> {
    match moto_python() {
        Some(python) => Ok(Some(Moto::start(&python)?)),
        None => {
            let why = format!(
                "no python with PyPI's moto[server] ({MOTO_PYTHON_ENV}, or the venv of `scripts/test`)"
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

/// boto3 on the moto server: `setup BUCKET` (the bucket, an IAM user allowed everything and
/// its access key, printed as JSON), `bucket NAME`, `list BUCKET PREFIX` (keys and sizes),
/// `uploads BUCKET` (unfinished multipart uploads). Endpoint and credentials come in the
/// environment.
const DRIVER: &str = r#"
import json, os, sys
import boto3
op = sys.argv[1]
kw = dict(endpoint_url=os.environ["MOTO_ENDPOINT"], region_name=os.environ["MOTO_REGION"],
          aws_access_key_id=os.environ.get("MOTO_KEY_ID", "bootstrap"),
          aws_secret_access_key=os.environ.get("MOTO_SECRET", "bootstrap"))
s3 = boto3.client("s3", **kw)
if op == "setup":
    s3.create_bucket(Bucket=sys.argv[2])
    iam = boto3.client("iam", **kw)
    iam.create_user(UserName="gantry")
    iam.put_user_policy(UserName="gantry", PolicyName="everything", PolicyDocument=json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="gantry")["AccessKey"]
    print(json.dumps({"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))
elif op == "bucket":
    s3.create_bucket(Bucket=sys.argv[2])
elif op == "list":
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[2], Prefix=sys.argv[3]):
        out += [[o["Key"], o["Size"]] for o in page.get("Contents", [])]
    print(json.dumps(out))
elif op == "uploads":
    r = s3.list_multipart_uploads(Bucket=sys.argv[2])
    print(json.dumps([u["Key"] for u in r.get("Uploads", [])]))
else:
    sys.exit(f"unknown op {op}")
"#;

/// A moto server for one test (see the module's documentation); killed on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    dir: tempfile::TempDir,
    python: PathBuf,
    endpoint: String,
    bucket: String,
    access_key_id: String,
    secret_access_key: String,
}

impl Moto {
    /// Starts moto on a free port, waits (up to 60 s) until it listens, and makes the bucket
    /// [`Moto::bucket`] and the access key.
    pub fn start(python: &Path) -> Result<Moto> {
        let dir = tempfile::tempdir()?;
        fs::write(dir.path().join("driver.py"), DRIVER)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = fs::File::create(dir.path().join("moto.log"))?;
        let child = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "4")
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} -m moto.server", python.display()))?;
        let mut moto = Moto {
            child,
            dir,
            python: python.to_path_buf(),
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: "gantry-test".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        // A connection only: every HTTP request would count against the four free ones.
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(st) = moto.child.try_wait()? {
                bail!("moto exited ({st}):\n{}", moto.log());
            }
            if Instant::now() > deadline {
                bail!("moto did not listen on port {port}:\n{}", moto.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let bucket = moto.bucket.clone();
        let out = moto
            .driver(&["setup", &bucket], false)
            .with_context(|| format!("setting moto up; its log:\n{}", moto.log()))?;
        let key: Value =
            serde_json::from_str(out.trim()).with_context(|| format!("the setup printed {out}"))?;
        moto.access_key_id = key["id"].as_str().unwrap_or_default().to_string();
        moto.secret_access_key = key["secret"].as_str().unwrap_or_default().to_string();
        Ok(moto)
    }

    fn driver(&self, args: &[&str], signed: bool) -> Result<String> {
        let mut c = Command::new(&self.python);
        c.arg(self.dir.path().join("driver.py"))
            .args(args)
            .env("MOTO_ENDPOINT", &self.endpoint)
            .env("MOTO_REGION", REGION)
            .env("PYTHONWARNINGS", "ignore")
            .env("HOME", self.dir.path());
        if signed {
            c.env("MOTO_KEY_ID", &self.access_key_id)
                .env("MOTO_SECRET", &self.secret_access_key);
        }
        run_tool(&mut c)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bucket made at start.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The access key id that moto accepts.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// Its secret.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The standard AWS variables that point a client at this server with the key:
    /// `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_ALLOW_HTTP`.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", &self.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", &self.secret_access_key),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Makes another bucket.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        self.driver(&["bucket", name], true).map(drop)
    }

    /// The objects of `bucket` whose keys start with `prefix`: key and size, in key order.
    pub fn objects(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, u64)>> {
        let out = self.driver(&["list", bucket, prefix], true)?;
        serde_json::from_str(out.trim()).with_context(|| format!("the list printed {out}"))
    }

    /// The keys of the multipart uploads started in `bucket` and neither completed nor aborted.
    pub fn unfinished_uploads(&self, bucket: &str) -> Result<Vec<String>> {
        let out = self.driver(&["uploads", bucket], true)?;
        serde_json::from_str(out.trim()).with_context(|| format!("the list printed {out}"))
    }

    /// What moto printed (one line per request).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
