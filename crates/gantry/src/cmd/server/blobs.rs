//! Where `gantry server` and `gantry registry` keep blobs (artifacts, caches, sources, the
//! registry's layers and manifests): a directory (`DATA_DIR/blobs`, the default), or
//! S3-compatible object storage with `--blob-store s3://BUCKET[/PREFIX]`.
//!
//! For S3 the endpoint, region and credentials come from the standard AWS variables
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`, and the role credentials of the environment), which
//! the `--s3-*` flags override. The secret key is read from the environment or a file
//! (`--s3-secret-access-key-file`), never from the command line (which other users of the
//! machine can read), and is never logged. The store is checked before the server listens:
//! a wrong endpoint, bucket or credential stops it with what to check.

use anyhow::{Context, Result, bail};
use gantry_store::blob::s3::{MIN_PART_SIZE, S3BlobStore, S3Settings};
use gantry_store::blob::{BlobStore, FsBlobStore};
use gantry_store::secrets::SecretString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct BlobArgs {
    /// Where blobs are kept: a directory, or S3-compatible object storage as
    /// `s3://BUCKET[/PREFIX]` (endpoint, region and credentials from AWS_ENDPOINT_URL,
    /// AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP, or the --s3-*
    /// flags) [default: DATA_DIR/blobs].
    #[arg(
        long,
        env = "GANTRY_BLOB_STORE",
        value_name = "DIR|s3://BUCKET[/PREFIX]"
    )]
    pub blob_store: Option<String>,
    /// The S3 endpoint, for storage other than AWS (MinIO, Ceph, Garage…) [default:
    /// AWS_ENDPOINT_URL, else AWS's endpoint of the region].
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// The S3 region [default: AWS_REGION, else us-east-1].
    #[arg(long)]
    pub s3_region: Option<String>,
    /// The S3 access key id [default: AWS_ACCESS_KEY_ID, else the environment's role].
    #[arg(long)]
    pub s3_access_key_id: Option<String>,
    /// A file holding the S3 secret access key (its first line) [default:
    /// AWS_SECRET_ACCESS_KEY].
    #[arg(long, value_name = "FILE")]
    pub s3_secret_access_key_file: Option<PathBuf>,
    /// Allow an http:// S3 endpoint (a test or a private network) [default: AWS_ALLOW_HTTP].
    #[arg(long)]
    pub s3_allow_http: bool,
    /// The size of multipart upload parts, in bytes (tests use S3's smallest, 5 MiB).
    #[arg(long, hide = true, default_value_t = gantry_store::blob::s3::DEFAULT_PART_SIZE)]
    pub s3_part_size: usize,
}

impl BlobArgs {
    /// Opens the blob store the flags name (checked: see the module's documentation), on
    /// this runtime; with where it is, for the start-up lines.
    pub async fn open(&self, data: &Path) -> Result<(Arc<dyn BlobStore>, String)> {
        let location = self.blob_store.as_deref().filter(|s| !s.is_empty());
        let Some(location) = location.filter(|l| l.contains("://")) else {
            if self.s3_options_given() {
                bail!(
                    "--s3-* options need --blob-store s3://BUCKET[/PREFIX]; without it blobs stay in a directory"
                );
            }
            let dir = location.map_or_else(|| data.join("blobs"), PathBuf::from);
            let store = FsBlobStore::open(&dir)
                .with_context(|| format!("opening the blob store {}", dir.display()))?;
            return Ok((Arc::new(store), dir.display().to_string()));
        };
        if !location.starts_with("s3://") {
            bail!(
                "--blob-store {location}: only s3://BUCKET[/PREFIX] (S3-compatible object storage) or a directory are supported"
            );
        }
        let mut settings = S3Settings::from_url(location)?;
        settings.endpoint = self.s3_endpoint.clone();
        settings.region = self.s3_region.clone();
        settings.access_key_id = self.s3_access_key_id.clone();
        if let Some(file) = &self.s3_secret_access_key_file {
            let text = std::fs::read_to_string(file).with_context(|| {
                format!("reading the S3 secret access key file {}", file.display())
            })?;
            let first = text.lines().next().unwrap_or_default().trim();
            if first.is_empty() {
                bail!(
                    "the S3 secret access key file {} is empty: its first line is the key",
                    file.display()
                );
            }
            settings.secret_access_key = Some(SecretString::from(first.to_string()));
        }
        if self.s3_allow_http {
            settings.allow_http = Some(true);
        }
        if self.s3_part_size < MIN_PART_SIZE {
            bail!("--s3-part-size must be at least {MIN_PART_SIZE} bytes (S3's smallest part)");
        }
        settings.part_size = self.s3_part_size;
        let store = S3BlobStore::connect(settings, tokio::runtime::Handle::current()).await?;
        let described = store.describe();
        Ok((Arc::new(store), described))
    }

    fn s3_options_given(&self) -> bool {
        self.s3_endpoint.is_some()
            || self.s3_region.is_some()
            || self.s3_access_key_id.is_some()
            || self.s3_secret_access_key_file.is_some()
            || self.s3_allow_http
    }
}
