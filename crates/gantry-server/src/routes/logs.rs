//! Job logs: whole, by byte range, and live as server-sent events.
//!
//! Memory stays bounded whatever the log's size: bytes are read from the log store in
//! 64 KiB pieces on a blocking thread and streamed, never collected.

use crate::AppState;
use crate::error::ApiResult;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use std::convert::Infallible;
use std::io::Read;
use std::time::Duration;

const PIECE: usize = 64 * 1024;

/// `Range: bytes=a-b`, `bytes=a-`, `bytes=-n` against a log of `len` bytes → [start, end).
fn parse_range(h: &str, len: u64) -> Option<(u64, u64)> {
    let spec = h.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (len.saturating_sub(n), len)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            len
        } else {
            b.parse::<u64>().ok()?.saturating_add(1).min(len)
        };
        (start, end)
    };
    (start < end || (start == 0 && len == 0)).then_some((start, end))
}

/// Streams bytes [start, end) of a job's log.
fn body(s: &AppState, job: i64, start: u64, end: u64) -> Body {
    let logs = s.engine.logs().clone();
    super::stream_reader(PIECE, move || {
        logs.read(job, start, Some(end))
            .map_err(|e| std::io::Error::other(e.to_string()))
    })
}

pub async fn whole(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    s.engine.job_row(id).await?;
    let len = s.engine.log_len(id);
    let text = "text/plain; charset=utf-8";
    if let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        let Some((start, end)) = parse_range(range, len) else {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response());
        };
        return Ok((
            StatusCode::PARTIAL_CONTENT,
            [
                (header::CONTENT_TYPE, text.to_string()),
                (
                    header::CONTENT_RANGE,
                    format!("bytes {start}-{}/{len}", end.saturating_sub(1)),
                ),
                (header::CONTENT_LENGTH, (end - start).to_string()),
                (header::ACCEPT_RANGES, "bytes".to_string()),
            ],
            body(&s, id, start, end),
        )
            .into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, text.to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::ACCEPT_RANGES, "bytes".to_string()),
        ],
        body(&s, id, 0, len),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    offset: Option<u64>,
}

/// Reads [start, end) into memory (at most one piece).
async fn piece(s: &AppState, job: i64, start: u64, end: u64) -> Result<Vec<u8>, String> {
    let logs = s.engine.logs().clone();
    tokio::task::spawn_blocking(move || {
        let mut r = logs
            .read(job, start, Some(end))
            .map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity((end - start) as usize);
        r.read_to_end(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The longest prefix of `bytes` that does not end inside a UTF-8 character (so that every
/// event's text is whole characters); all of it at the end of a finished log.
fn utf8_cut(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => bytes.len(),
    }
}

/// Server-sent events: `log` events whose `id` is the log offset after them and whose data
/// is `{"offset": N, "text": "…"}`, then one `end` event with the job's status. A client
/// that reconnects with `Last-Event-ID` (or `?offset=`) gets exactly the bytes after it.
pub async fn stream(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    s.engine.job_row(id).await?;
    let start = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(q.offset)
        .unwrap_or(0);
    let watch = s.engine.logs().subscribe(id)?;
    struct St {
        s: AppState,
        id: i64,
        offset: u64,
        watch: tokio::sync::watch::Receiver<gantry_store::logs::LogState>,
        done: bool,
        closed: bool,
    }
    let st = St {
        s,
        id,
        offset: start,
        watch,
        done: false,
        closed: false,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let state = *st.watch.borrow_and_update();
            let len = st.s.engine.log_len(st.id).max(state.len);
            if st.offset < len {
                let end = len.min(st.offset + PIECE as u64);
                let bytes = match piece(&st.s, st.id, st.offset, end).await {
                    Ok(b) => b,
                    Err(e) => {
                        st.done = true;
                        let ev = Event::default().event("error").data(e);
                        return Some((Ok(ev), st));
                    }
                };
                let last = end == len && state.finished;
                let n = if last { bytes.len() } else { utf8_cut(&bytes) };
                let n = if n == 0 { bytes.len() } else { n };
                let text = String::from_utf8_lossy(&bytes[..n]).into_owned();
                let from = st.offset;
                st.offset += n as u64;
                let data = serde_json::json!({"offset": from, "text": text}).to_string();
                let ev = Event::default()
                    .event("log")
                    .id(st.offset.to_string())
                    .data(data);
                return Some((Ok(ev), st));
            }
            if state.finished {
                // The engine records the job's end before it finishes the log, so the row
                // is final here.
                let status = match st.s.engine.job_row(st.id).await {
                    Ok(j) => j.status.as_str().to_string(),
                    Err(_) => "unknown".into(),
                };
                st.done = true;
                let data = serde_json::json!({"status": status, "offset": st.offset}).to_string();
                return Some((Ok(Event::default().event("end").data(data)), st));
            }
            if st.closed {
                // The store closed the channel without saying the log finished.
                return None;
            }
            // Wait for more bytes (or the end). A closed channel means the log finished:
            // look once more at its final state.
            if tokio::time::timeout(Duration::from_secs(30), st.watch.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                st.closed = true;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 100)));
        assert_eq!(parse_range("bytes=95-200", 100), Some((95, 100)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=a-b", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
    }

    #[test]
    fn utf8_boundaries() {
        let s = "héllo".as_bytes();
        assert_eq!(
            utf8_cut(&s[..2]),
            1,
            "a cut inside é waits for its second byte"
        );
        assert_eq!(utf8_cut(s), s.len());
        assert_eq!(
            utf8_cut(b"\xff\xfeabc"),
            5,
            "invalid bytes are not held back"
        );
    }
}
