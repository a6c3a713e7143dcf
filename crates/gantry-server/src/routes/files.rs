//! Artifacts, caches and sources: tar archives streamed between agents and the blob store,
//! authorized by the job's token.

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiResult, HttpError};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use gantry_engine::Caller;
use gantry_store::db::JobRow;

/// The job `id`, if the caller may touch it: the administrator, the job itself, or (when
/// `same_pipeline`) another job of its pipeline.
async fn job_for(s: &AppState, caller: &Caller, id: i64, same_pipeline: bool) -> ApiResult<JobRow> {
    let job = s.engine.job_row(id).await?;
    match caller {
        c if c.is_admin() => Ok(job),
        // Artifacts only, after the route's role check (a reporter of the job's project).
        Caller::User(_) if same_pipeline => Ok(job),
        Caller::Job(me) if *me == id => Ok(job),
        Caller::Job(me) if same_pipeline => {
            let mine = s.engine.job_row(*me).await?;
            if mine.pipeline_id == job.pipeline_id {
                Ok(job)
            } else {
                Err(HttpError::forbidden(format!(
                    "job {me} may only read artifacts of its own pipeline"
                )))
            }
        }
        _ => Err(HttpError::forbidden(format!(
            "this token may not access job {id}"
        ))),
    }
}

/// Streams a request body into the blob store under `key`.
async fn store(s: &AppState, key: String, body: Body) -> ApiResult<u64> {
    let blobs = s.engine.blobs().clone();
    let stream = body
        .into_data_stream()
        .map_err(|e| std::io::Error::other(e.to_string()));
    let reader = tokio_util::io::StreamReader::new(stream);
    let mut sync = tokio_util::io::SyncIoBridge::new(reader);
    let size = tokio::task::spawn_blocking(move || blobs.put(&key, &mut sync))
        .await
        .map_err(|e| {
            HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    Ok(size)
}

/// Streams a blob as the response.
async fn serve_blob(s: &AppState, key: String) -> ApiResult<Response> {
    let blobs = s.engine.blobs().clone();
    // On a blocking thread: with object storage, a request.
    let (b, k) = (blobs.clone(), key.clone());
    let size = tokio::task::spawn_blocking(move || b.size(&k))
        .await
        .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??
        .ok_or_else(|| HttpError::not_found(format!("{key} is not stored")))?;
    let body = super::stream_reader(256 * 1024, move || {
        blobs
            .open(&key)
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        body,
    )
        .into_response())
}

pub async fn put_artifacts(
    Auth(caller): Auth,
    State(s): State<AppState>,
    Path(id): Path<i64>,
    body: Body,
) -> ApiResult<StatusCode> {
    job_for(&s, &caller, id, false).await?;
    store(&s, format!("artifacts/{id}.tar"), body).await?;
    Ok(StatusCode::CREATED)
}

/// `GET /api/v1/job`: the job of a job token.
pub async fn own_job(
    Auth(caller): Auth,
    State(s): State<AppState>,
) -> ApiResult<axum::Json<gantry_api::rest::Job>> {
    match caller {
        Caller::Job(id) => Ok(axum::Json(s.engine.job(id).await?)),
        _ => Err(HttpError::bad_request(
            "GET /api/v1/job answers a job's own CI_JOB_TOKEN; use GET /api/v1/jobs/ID",
        )),
    }
}

pub async fn get_artifacts(
    Auth(caller): Auth,
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    job_for(&s, &caller, id, true).await?;
    serve_blob(&s, format!("artifacts/{id}.tar")).await
}

/// A cache key as a file name: what is not `[A-Za-z0-9._-]` becomes `_`, plus a short hash
/// so that different keys never share a file.
fn cache_file(key: &str) -> String {
    let clean: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let hash = gantry_engine::token::hash_token(key);
    format!("{}-{}", clean.trim_start_matches('.'), &hash[..12])
}

pub async fn get_cache(
    Auth(caller): Auth,
    State(s): State<AppState>,
    Path((id, key)): Path<(i64, String)>,
) -> ApiResult<Response> {
    let job = job_for(&s, &caller, id, false).await?;
    serve_blob(
        &s,
        format!("caches/{}/{}.tar", job.project_id, cache_file(&key)),
    )
    .await
}

pub async fn put_cache(
    Auth(caller): Auth,
    State(s): State<AppState>,
    Path((id, key)): Path<(i64, String)>,
    body: Body,
) -> ApiResult<StatusCode> {
    let job = job_for(&s, &caller, id, false).await?;
    store(
        &s,
        format!("caches/{}/{}.tar", job.project_id, cache_file(&key)),
        body,
    )
    .await?;
    Ok(StatusCode::CREATED)
}

/// The job's commit as a tar (`git archive`), streamed from the project's mirror.
pub async fn source(
    Auth(caller): Auth,
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    let job = job_for(&s, &caller, id, false).await?;
    let pipeline = s.engine.db().pipeline(job.pipeline_id).await?;
    let sha = pipeline
        .ok_or_else(|| HttpError::not_found("pipeline"))?
        .sha;
    let mirror = s.engine.mirror(job.project_id).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter { tx: tx.clone() };
        if let Err(e) = mirror.archive(&sha, &mut w) {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}

struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::cache_file;

    #[test]
    fn cache_keys_become_safe_distinct_names() {
        let a = cache_file("../etc/passwd");
        assert!(!a.contains('/') && !a.starts_with('.'), "{a}");
        assert_ne!(cache_file("a/b"), cache_file("a_b"));
    }
}
