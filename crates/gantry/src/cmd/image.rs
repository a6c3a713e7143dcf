//! `gantry image promote SRC DEST`: promotion by digest.
//!
//! Inside this server's registry (`dev/app:1.4` → `test/app:1.4-test`, no host, or the
//! server's own host) it is one API call: the destination gets the same manifest and links
//! to the same blobs, no byte moves, and the audit log says who promoted which digest.
//!
//! When either side is another registry (`harbor.example.com/team/app:1.4`, a Distribution
//! registry, any OCI registry) the image is copied over the Distribution API by
//! `gantry_registry::client` (the client replication uses too): each blob the destination
//! lacks is mounted (same registry) or streamed from the source, blobs it has are skipped,
//! and the manifest is put byte for byte, so the digest stays the same (checked). This
//! server's side goes with `--src-creds-env`/`--dest-creds-env`, or else the CLI's token.

use super::client::{self, ApiFailure, Client, Conn, Output};
use anyhow::{Result, anyhow, bail};
use gantry_api::rest::{ImagePromote, ImagePromoted};
use gantry_registry as registry;
use registry::client::{Copier, Credentials, RemoteOptions};
use serde_json::json;
use std::process::ExitCode;

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
    let creds = |var: &Option<String>| -> Result<Option<Credentials>, ApiFailure> {
        let Some(var) = var else { return Ok(None) };
        let v = std::env::var(var).map_err(|_| usage(anyhow!("{var} is not set")))?;
        let (u, p) = v
            .split_once(':')
            .ok_or_else(|| usage(anyhow!("{var} must hold user:password")))?;
        Ok(Some(Credentials {
            username: u.to_string(),
            password: p.to_string().into(),
        }))
    };
    let endpoint = |r: &Remote, c: Option<Credentials>| {
        let host = r.host.clone().unwrap_or_else(|| server_host.clone());
        let plain = a.plain_http
            || host.starts_with("127.")
            || host.starts_with("localhost")
            || host.starts_with("[::1]")
            || (r.host.is_none() && a.conn.server.starts_with("http://"));
        let url = format!("{}://{host}", if plain { "http" } else { "https" });
        registry::client::Remote::new(&url, c, RemoteOptions::default())
            .map_err(|e| usage(e.into()))
    };
    let src_creds = own_credentials(&a.conn, local(&src), creds(&a.src_creds_env)?).await?;
    let dst_creds = own_credentials(&a.conn, local(&dst), creds(&a.dest_creds_env)?).await?;
    let from = endpoint(&src, src_creds)?;
    let to = endpoint(&dst, dst_creds)?;
    let mut copier = Copier::new(&from, &to);
    let digest = copier
        .copy(&src.name, &src.reference, &dst.name, &dst.reference)
        .await
        .map_err(|e| ApiFailure {
            message: format!("{} → {}: {e}", a.source, a.destination),
            exit: 1,
            status: None,
        })?;
    let stats = copier.stats();
    if a.output.json() {
        client::print_json(&json!({
            "digest": digest, "source": a.source, "destination": a.destination,
            "blobs_copied": stats.blobs_copied, "blobs_mounted": stats.blobs_mounted,
            "blobs_present": stats.blobs_skipped, "bytes_copied": stats.bytes_copied,
            "manifests": stats.manifests, "already_there": stats.images_skipped == 1,
        }));
    } else if stats.images_skipped == 1 {
        println!("{} already names {digest}: nothing copied", a.destination);
    } else {
        println!(
            "copied {} → {} ({digest}): {} blob{} copied ({} bytes), {} mounted, {} already there",
            a.source,
            a.destination,
            stats.blobs_copied,
            if stats.blobs_copied == 1 { "" } else { "s" },
            stats.bytes_copied,
            stats.blobs_mounted,
            stats.blobs_skipped
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// This server's side without credentials: the CLI's own token (a personal access token as
/// its owner, the administrator's token as anyone).
async fn own_credentials(
    conn: &Conn,
    local: bool,
    given: Option<Credentials>,
) -> Result<Option<Credentials>, ApiFailure> {
    if given.is_some() || !local {
        return Ok(given);
    }
    let client = Client::new(conn).map_err(usage)?;
    let Some(token) = client.token().map(String::from) else {
        return Ok(None);
    };
    let username = match client.get("/api/v1/user").await {
        Ok(me) => me["username"].as_str().unwrap_or("admin").to_string(),
        Err(_) => "admin".to_string(),
    };
    Ok(Some(Credentials {
        username,
        password: token.into(),
    }))
}

fn usage(e: anyhow::Error) -> ApiFailure {
    ApiFailure {
        message: format!("{e:#}"),
        exit: 2,
        status: None,
    }
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
}
