//! An agent job's inputs and outputs over HTTP, with the job's token
//! (`Authorization: Bearer <job token>`): the commit's files, dependencies' artifacts,
//! caches shared between agents (with a local copy, used alone when the server has none or
//! does not keep caches), and the artifacts upload. Archives are plain tar, streamed through
//! a file in the job's directory, and unpacked defensively ([`crate::tarball`]).

use super::Out;
use crate::artifacts::Stored;
use crate::cache;
use crate::fsutil::list_files;
use crate::job::JobIo;
use crate::log::LogSink;
use crate::tarball;
use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use futures_util::StreamExt;
use gantry_api::agent::Dependency;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::UnboundedSender;

pub(crate) struct HttpIo {
    pub client: reqwest::Client,
    pub server: String,
    pub job_id: i64,
    pub token: String,
    pub dependencies: Vec<Dependency>,
    /// Where downloads and uploads are staged.
    pub tmp: PathBuf,
    pub events: UnboundedSender<Out>,
}

impl HttpIo {
    fn url(&self, job: i64, tail: &[&str]) -> Result<reqwest::Url> {
        let mut url = reqwest::Url::parse(&self.server)
            .with_context(|| format!("the server URL '{}'", self.server))?;
        {
            let mut seg = url
                .path_segments_mut()
                .map_err(|_| anyhow::anyhow!("the server URL '{}' has no path", self.server))?;
            seg.pop_if_empty();
            seg.extend(["api", "v1", "jobs", &job.to_string()]);
            seg.extend(tail);
        }
        Ok(url)
    }

    fn staging(&self, what: &str) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.tmp)?;
        Ok(self.tmp.join(cache::temp_name(what, "part")))
    }

    /// Downloads a tar and unpacks it into `dest`; `None` when the server answers 404.
    async fn get_tar(&self, url: reqwest::Url, dest: &Path) -> Result<Option<Vec<PathBuf>>> {
        let resp = self
            .client
            .get(url.clone())
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            bail!("GET {url}: {status} {}", body.trim());
        }
        let part = self.staging("download")?;
        let mut file = tokio::fs::File::create(&part).await?;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| format!("GET {url}"))?;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        drop(file);
        let dest = dest.to_path_buf();
        let p2 = part.clone();
        let files = tokio::task::spawn_blocking(move || {
            let f = std::fs::File::open(&p2)?;
            tarball::unpack(std::io::BufReader::new(f), &dest)
        })
        .await
        .context("unpacking")?;
        let _ = tokio::fs::remove_file(&part).await;
        files.map(Some)
    }

    /// Packs `files` below `root` and uploads them; `false` when the server answers 404.
    async fn put_tar(&self, url: reqwest::Url, root: &Path, files: Vec<PathBuf>) -> Result<bool> {
        let part = self.staging("upload")?;
        let (root, p2) = (root.to_path_buf(), part.clone());
        tokio::task::spawn_blocking(move || -> Result<()> {
            let f = std::fs::File::create(&p2)?;
            let w = tarball::pack(&root, &files, std::io::BufWriter::new(f))?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            Ok(())
        })
        .await
        .context("packing")??;
        let file = tokio::fs::File::open(&part).await?;
        let len = file.metadata().await?.len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let resp = self
            .client
            .put(url.clone())
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await;
        let _ = tokio::fs::remove_file(&part).await;
        let resp = resp.with_context(|| format!("PUT {url}"))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(false);
        }
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            bail!("PUT {url}: {status} {}", body.trim());
        }
        Ok(true)
    }
}

#[async_trait]
impl JobIo for HttpIo {
    async fn checkout(
        &self,
        workspace: &Path,
        git_strategy: Option<&str>,
        log: &LogSink,
    ) -> Result<Vec<PathBuf>> {
        if git_strategy == Some("none") {
            log.info("Skipping the project's files (GIT_STRATEGY: none)");
            return Ok(Vec::new());
        }
        let url = self.url(self.job_id, &["source"])?;
        match self.get_tar(url, workspace).await? {
            Some(files) => Ok(files),
            None => bail!("the server has no source files for job {}", self.job_id),
        }
    }

    async fn restore_dependencies(
        &self,
        workspace: &Path,
        log: &LogSink,
    ) -> Result<Vec<(String, String)>> {
        let mut dotenv = Vec::new();
        for dep in &self.dependencies {
            if dep.artifacts {
                let url = self.url(dep.job_id, &["artifacts"])?;
                match self
                    .get_tar(url, workspace)
                    .await
                    .with_context(|| format!("downloading artifacts of '{}'", dep.name))?
                {
                    Some(files) => log.info(&format!(
                        "Restored artifacts of {} ({} files)",
                        dep.name,
                        files.len()
                    )),
                    None => bail!(
                        "the artifacts of '{}' (job {}) are not on the server",
                        dep.name,
                        dep.job_id
                    ),
                }
            }
            dotenv.extend(dep.dotenv.iter().cloned());
        }
        Ok(dotenv)
    }

    async fn fetch_cache(&self, key: &str, root: &Path, _log: &LogSink) -> Result<()> {
        let url = self.url(self.job_id, &["cache", key])?;
        std::fs::create_dir_all(root)?;
        let tmp = root.join(cache::temp_name(key, "download"));
        let got = self.get_tar(url, &tmp).await;
        match got {
            Ok(Some(_)) => {
                let dir = root.join(key);
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::rename(&tmp, &dir)?;
                Ok(())
            }
            Ok(None) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(e)
            }
        }
    }

    async fn push_cache(&self, key: &str, root: &Path, _log: &LogSink) -> Result<()> {
        let url = self.url(self.job_id, &["cache", key])?;
        let dir = root.join(key);
        // 404: the server keeps no caches; the local copy serves this agent alone.
        self.put_tar(url, &dir, list_files(&dir)).await.map(|_| ())
    }

    async fn store_artifacts(&self, stored: &Stored, _log: &LogSink) -> Result<()> {
        let url = self.url(self.job_id, &["artifacts"])?;
        if !self.put_tar(url, &stored.dir, stored.files.clone()).await? {
            bail!("the server does not know job {}", self.job_id);
        }
        Ok(())
    }

    fn script_starting(&self) {
        let _ = self.events.send(Out::Started(self.job_id));
    }
}
