//! The live parts of pages, as server-sent events. Each stream listens to the store's
//! change broadcast ([`gantry_store::db::Change`]), keeps only what its page shows, waits a
//! moment for a burst of changes to settle, and sends `replace` events: `{"id": …,
//! "html": …}`, the new HTML of one element, which the page's script swaps in. A listener
//! that fell behind (the broadcast lagged) renders everything again. While something runs,
//! the page is rendered again every few seconds anyway (durations grow).

use super::pipelines::{RowTpl, pipeline_view, render};
use super::{Error, Viewer, at_least};
use crate::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use gantry_api::Role;
use gantry_store::db::Change;
use serde::Deserialize;
use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

/// How long a burst of changes may take before the page is rendered again.
const SETTLE: Duration = Duration::from_millis(120);
/// Renders again this often while something runs, changed or not.
const TICK: Duration = Duration::from_secs(5);

type Events = axum::response::Response;

fn replace(id: &str, html: &str) -> Event {
    Event::default()
        .event("replace")
        .data(serde_json::json!({"id": id, "html": html}).to_string())
}

fn sse(events: impl Stream<Item = Event> + Send + 'static) -> Events {
    use futures_util::StreamExt;
    let s: Box<dyn Stream<Item = Result<Event, Infallible>> + Send + Unpin> =
        Box::new(Box::pin(events.map(Ok)));
    use axum::response::IntoResponse;
    Sse::new(s)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Waits for a change `wanted` accepts (or a lag, or the tick when `ticking`), then lets the
/// burst settle. `None` when the broadcast closed.
async fn next_change(
    rx: &mut Receiver<Change>,
    ticking: bool,
    mut wanted: impl FnMut(Change) -> bool,
) -> Option<Vec<Change>> {
    let mut got = Vec::new();
    loop {
        let r = if ticking {
            match tokio::time::timeout(TICK, rx.recv()).await {
                Ok(r) => r,
                Err(_) => return Some(got),
            }
        } else {
            rx.recv().await
        };
        match r {
            Ok(c) if wanted(c) => {
                got.push(c);
                break;
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => break,
            Err(RecvError::Closed) => return None,
        }
    }
    tokio::time::sleep(SETTLE).await;
    loop {
        match rx.try_recv() {
            Ok(c) if wanted(c) => got.push(c),
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    Some(got)
}

// ---- the pipeline page ---------------------------------------------------------------------

pub async fn pipeline_stream(
    State(s): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
) -> Result<Events, Error> {
    let project = s.engine.project_of_pipeline(id).await?;
    let act = at_least(v.role(&s, project).await?, Role::Developer);
    let csrf = v.chrome.csrf.clone();
    let rx = s.engine.db().subscribe();
    struct St {
        s: AppState,
        id: i64,
        act: bool,
        csrf: String,
        rx: Receiver<Change>,
        pipelines: HashSet<i64>,
        jobs: HashSet<i64>,
        running: bool,
        first: bool,
        queued: Vec<Event>,
    }
    let st = St {
        s,
        id,
        act,
        csrf,
        rx,
        pipelines: HashSet::new(),
        jobs: HashSet::new(),
        running: true,
        first: true,
        queued: Vec::new(),
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if let Some(e) = st.queued.pop() {
            return Some((e, st));
        }
        if !st.first {
            let (p, j) = (st.pipelines.clone(), st.jobs.clone());
            next_change(&mut st.rx, st.running, |c| match c {
                Change::Pipeline(x) => p.contains(&x),
                Change::Job(x) => j.contains(&x),
            })
            .await?;
        }
        st.first = false;
        let r = match render(&st.s, st.id, st.act, &st.csrf).await {
            Ok(r) => r,
            Err(e) => {
                let ev = Event::default().event("gone").data(e.0.message);
                return Some((ev, st));
            }
        };
        st.running = r.head.contains("s-running") || r.graph.contains("s-running");
        st.pipelines = r.pipelines.into_iter().collect();
        st.jobs = r.jobs.into_iter().collect();
        st.queued.push(replace("graph", &r.graph));
        Some((replace("pipeline-head", &r.head), st))
    });
    Ok(sse(stream))
}

// ---- the job page --------------------------------------------------------------------------

pub async fn job_stream(
    State(s): State<AppState>,
    v: Viewer,
    Path(id): Path<i64>,
) -> Result<Events, Error> {
    let project = s.engine.project_of_job(id).await?;
    let act = at_least(v.role(&s, project).await?, Role::Developer);
    let csrf = v.chrome.csrf.clone();
    let rx = s.engine.db().subscribe();
    let st = (s, rx, true, true);
    let stream = futures_util::stream::unfold(st, move |(s, mut rx, first, running)| {
        let csrf = csrf.clone();
        async move {
            if !first {
                next_change(&mut rx, running, |c| c == Change::Job(id)).await?;
            }
            let html = match super::jobs::render_head(&s, id, act, &csrf).await {
                Ok(h) => h,
                Err(e) => {
                    return Some((
                        Event::default().event("gone").data(e.0.message),
                        (s, rx, false, false),
                    ));
                }
            };
            let running = html.contains("data-status=\"running\"")
                || html.contains("data-status=\"pending\"");
            Some((replace("job-head", &html), (s, rx, false, running)))
        }
    });
    Ok(sse(stream))
}

// ---- the pipelines list --------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct ListStreamQuery {
    #[serde(default)]
    ids: String,
    #[serde(default)]
    new: Option<u8>,
}

pub async fn pipelines_stream(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<ListStreamQuery>,
) -> Result<Events, Error> {
    let project = s.engine.find_project(&key).await?;
    let ids: HashSet<i64> = q
        .ids
        .split(',')
        .filter_map(|i| i.trim().parse().ok())
        .take(200)
        .collect();
    let newest = ids.iter().copied().max().unwrap_or(0);
    let watch_new = q.new == Some(1);
    let rx = s.engine.db().subscribe();
    struct St {
        s: AppState,
        project: i64,
        ids: HashSet<i64>,
        newest: i64,
        watch_new: bool,
        told_new: bool,
        rx: Receiver<Change>,
        queued: Vec<Event>,
    }
    let st = St {
        s,
        project,
        ids,
        newest,
        watch_new,
        told_new: false,
        rx,
        queued: Vec::new(),
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(e) = st.queued.pop() {
                return Some((e, st));
            }
            let (ids, newest, watch_new) =
                (st.ids.clone(), st.newest, st.watch_new && !st.told_new);
            let changes = next_change(&mut st.rx, false, |c| match c {
                Change::Pipeline(x) => ids.contains(&x) || (watch_new && x > newest),
                Change::Job(_) => false,
            })
            .await?;
            let mut seen = HashSet::new();
            for c in changes {
                let Change::Pipeline(x) = c else { continue };
                if !seen.insert(x) {
                    continue;
                }
                let Ok(Some(row)) = st.s.engine.db().pipeline(x).await else {
                    continue;
                };
                if row.project_id != st.project {
                    continue;
                }
                if st.ids.contains(&x) {
                    let view = pipeline_view(&row);
                    if let Ok(html) = (RowTpl { p: &view }).render() {
                        st.queued.push(replace(&format!("p-{x}"), &html));
                    }
                } else if !st.told_new {
                    st.told_new = true;
                    st.queued
                        .push(Event::default().event("show").data("new-pipelines"));
                }
            }
        }
    });
    Ok(sse(stream))
}
