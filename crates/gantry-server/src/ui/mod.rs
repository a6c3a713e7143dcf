//! The web UI: server-rendered HTML pages (askama templates under `templates/`), one CSS
//! file and one small script (`assets/`, embedded in the binary and served with a content
//! hash in their URL and a year-long cache), and server-sent events for what changes live.
//!
//! Pages are routes of the same table as the API ([`crate::routes::ROUTES`]) with an
//! [`crate::routes::Access::Page`] access: [`crate::auth`] checks them as it checks the API,
//! but a signed-out visitor is sent to `/login?next=…`, a refusal is a page (404 for
//! non-members, as the API), and a form carries the session's CSRF token in its `_csrf`
//! field. Handlers call the [`gantry_engine::Engine`] directly.
//!
//! - [`session`]: sign in and out.
//! - [`projects`]: the projects list, a project's page (its refs and their last pipelines).
//! - [`pipelines`]: a project's pipelines (filtered, paginated, live), running one, the
//!   pipeline graph (live), and the pipeline actions.
//! - [`jobs`]: the job page (live log, metadata, artifacts), the job actions, the manual
//!   job's confirmation.
//! - [`junit`]: a job's JUnit results, from its artifacts.
//! - [`lint`]: the lint page (diagnostics at their lines, the planned graph).
//! - [`admin`]: agents and the audit log; [`settings`]: a project's settings.
//! - [`registry`]: a project's registry: repositories, tags, an image (layers, platforms,
//!   referrers; delete a tag, promote), robot accounts, settings, history.
//!
//! Live parts: [`live`] turns the store's change broadcast ([`gantry_store::db::Change`])
//! into `replace` events, each the new HTML of one element of the page, which the script
//! swaps in.

pub mod admin;
pub mod jobs;
pub mod junit;
pub mod lint;
pub mod live;
pub mod pipelines;
pub mod projects;
pub mod registry;
pub mod session;
pub mod settings;

use crate::AppState;
use crate::error::HttpError;
use askama::Template;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use gantry_api::{JobStatus, PipelineStatus, Role};
use gantry_engine::Caller;

/// The stylesheet and the script, as embedded.
pub const CSS: &str = include_str!("../../assets/gantry.css");
pub const JS: &str = include_str!("../../assets/gantry.js");

/// A short content hash for asset URLs (FNV-1a: no cryptography needed, only change).
fn fnv(s: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:012x}", h & 0xffff_ffff_ffff)
}

pub fn css_url() -> &'static str {
    static U: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    U.get_or_init(|| format!("/static/gantry.css?v={}", fnv(CSS)))
}

pub fn js_url() -> &'static str {
    static U: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    U.get_or_init(|| format!("/static/gantry.js?v={}", fnv(JS)))
}

/// `GET /static/{file}`.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "gantry.css" => (CSS, "text/css; charset=utf-8"),
        "gantry.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

/// What the header of every page shows: who is signed in, and the CSRF token forms carry.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub user: String,
    pub admin: bool,
    /// A browser session's CSRF token; empty for a token (which needs none).
    pub csrf: String,
    pub signed_in: bool,
    /// A session (not a token): it can sign out.
    pub session: bool,
}

impl Chrome {
    pub fn of(caller: &Caller) -> Chrome {
        let (csrf, session) = match caller {
            Caller::User(u) => (u.csrf.clone().unwrap_or_default(), u.csrf.is_some()),
            _ => (String::new(), false),
        };
        Chrome {
            user: caller.name(),
            admin: caller.is_admin(),
            csrf,
            signed_in: true,
            session,
        }
    }

    pub fn anonymous() -> Chrome {
        Chrome {
            user: String::new(),
            admin: false,
            csrf: String::new(),
            signed_in: false,
            session: false,
        }
    }

    pub fn css(&self) -> &'static str {
        css_url()
    }

    pub fn js(&self) -> &'static str {
        js_url()
    }
}

/// The caller of a page (the auth layer put it there).
#[derive(Debug, Clone)]
pub struct Viewer {
    pub caller: Caller,
    pub chrome: Chrome,
}

impl Viewer {
    /// The viewer's role in a project (`Owner` for administrators).
    pub async fn role(&self, s: &AppState, project: i64) -> Result<Option<Role>, Error> {
        Ok(s.engine.role_in(&self.caller, project).await?)
    }

    /// Who acts, for records (a pipeline's user, who played a job).
    pub fn name(&self) -> String {
        match &self.caller {
            Caller::User(u) => u.username.clone(),
            _ => "admin".into(),
        }
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Error> {
        let caller = parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Error(HttpError::unauthorized()))?;
        Ok(Viewer {
            chrome: Chrome::of(&caller),
            caller,
        })
    }
}

/// An error as a page.
#[derive(Debug)]
pub struct Error(pub HttpError);

impl<E: Into<HttpError>> From<E> for Error {
    fn from(e: E) -> Error {
        Error(e.into())
    }
}

#[derive(Debug, Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    chrome: Chrome,
    title: String,
    status: u16,
    message: &'a str,
}

/// Marks the response of a page that failed, so that the auth layer renders it again with
/// the caller's header.
#[derive(Debug, Clone)]
pub struct Failed(pub HttpError);

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut resp = error_page(self.0.clone(), Chrome::anonymous());
        resp.extensions_mut().insert(Failed(self.0));
        resp
    }
}

pub fn error_page(e: HttpError, chrome: Chrome) -> Response {
    let title = match e.status.as_u16() {
        403 => "Not allowed".to_string(),
        404 => "Not found".to_string(),
        400 | 422 => "Cannot do that".to_string(),
        409 => "Conflict".to_string(),
        n => format!("Error {n}"),
    };
    let page = ErrorPage {
        chrome,
        title,
        status: e.status.as_u16(),
        message: &e.message,
    };
    (e.status, html(&page)).into_response()
}

/// A refusal of the auth layer for a page: sign in first (303 to `/login?next=`), or a page
/// saying why.
pub fn refusal(e: HttpError, method: &axum::http::Method, uri: &axum::http::Uri) -> Response {
    if e.status == StatusCode::UNAUTHORIZED {
        let next = if method == axum::http::Method::GET {
            uri.path_and_query().map_or("/", |p| p.as_str())
        } else {
            "/"
        };
        let to = format!("/login?next={}", urlencode(next));
        return Redirect::to(&to).into_response();
    }
    error_page(e, Chrome::anonymous())
}

/// A rendered template as an HTML response (a template that fails to render is a 500 page).
pub fn html<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(body) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("a template failed: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "a page failed to render").into_response()
        }
    }
}

pub type PageResult = Result<Response, Error>;

/// After a form: back to a page (303, so a reload does not post again).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

pub fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A form field of an `application/x-www-form-urlencoded` body.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A GitLab-style link to a pipeline or a job (`/group/app/-/pipelines/7`, `/app/-/jobs/9`):
/// the UI's page for it.
pub fn gitlab_link(path: &str) -> Option<String> {
    let (project, rest) = path.split_once("/-/")?;
    if project.len() < 2 {
        return None;
    }
    let (kind, id) = rest.trim_end_matches('/').split_once('/')?;
    let id: i64 = id.parse().ok()?;
    match kind {
        "pipelines" => Some(format!("/pipelines/{id}")),
        "jobs" => Some(format!("/jobs/{id}")),
        _ => None,
    }
}

// ---- how things look -----------------------------------------------------------------------

/// The glyph of a state (with the state's name as text beside it, never alone).
pub fn icon(status: &str) -> &'static str {
    match status {
        "success" => "✓",
        "failed" => "✗",
        "running" => "●",
        "pending" => "◔",
        "created" => "○",
        "manual" => "▶",
        "scheduled" => "◷",
        "canceled" => "⊘",
        "skipped" => "»",
        _ => "?",
    }
}

/// A state badge's HTML (for templates: `{{ x|safe }}`).
pub fn badge(status: &str) -> String {
    format!(
        "<span class=\"badge s-{status}\"><span class=\"ic\" aria-hidden=\"true\">{}</span> {status}</span>",
        icon(status)
    )
}

pub fn job_badge(s: JobStatus) -> String {
    badge(s.as_str())
}

pub fn pipeline_badge(s: PipelineStatus) -> String {
    badge(s.as_str())
}

/// `1h 02m`, `3m 07s`, `12s`, `0.4s`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else if s >= 10 {
        format!("{s}s")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// How long something ran: finished − started, or now − started while it runs.
pub fn ran(started: Option<i64>, finished: Option<i64>) -> String {
    match (started, finished) {
        (Some(a), Some(b)) => duration(b - a),
        (Some(a), None) => duration(gantry_store::db::now_ms() - a),
        _ => String::new(),
    }
}

/// A time as `2026-12-06 23:40:12 UTC`.
pub fn when(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

pub fn when_opt(ms: Option<i64>) -> String {
    ms.map(when).unwrap_or_default()
}

/// `role ≥ needed`.
pub fn at_least(role: Option<Role>, needed: Role) -> bool {
    role.is_some_and(|r| r >= needed)
}

/// A page's number links: `?…&page=N` keeping the other parameters.
#[derive(Debug, Clone, Default)]
pub struct Pager {
    pub page: u32,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    pub fn new(base: &str, query: &[(&str, String)], page: u32, has_next: bool) -> Pager {
        let link = |n: u32| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in query.iter().filter(|(_, v)| !v.is_empty()) {
                q.append_pair(k, v);
            }
            q.append_pair("page", &n.to_string());
            format!("{base}?{}", q.finish())
        };
        Pager {
            page,
            prev: (page > 1).then(|| link(page - 1)),
            next: has_next.then(|| link(page + 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_well() {
        assert_eq!(when(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(when(1_796_600_412_000), "2026-12-06 23:40:12 UTC");
        assert_eq!(duration(400), "0.4s");
        assert_eq!(duration(12_000), "12s");
        assert_eq!(duration(187_000), "3m 07s");
        assert_eq!(duration(3_720_000), "1h 02m");
    }

    #[test]
    fn gitlab_links_lead_to_pages() {
        assert_eq!(
            gitlab_link("/team/app/-/pipelines/7").as_deref(),
            Some("/pipelines/7")
        );
        assert_eq!(gitlab_link("/app/-/jobs/9/").as_deref(), Some("/jobs/9"));
        assert_eq!(gitlab_link("/app/-/pipelines/x"), None);
        assert_eq!(gitlab_link("/api/v1/nothing"), None);
    }

    #[test]
    fn asset_urls_change_with_their_content() {
        assert!(css_url().starts_with("/static/gantry.css?v="));
        assert_ne!(fnv("a"), fnv("b"));
    }
}
