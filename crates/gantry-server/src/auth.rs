//! Who is calling, and whether they may: every route of the table ([`crate::routes::ROUTES`])
//! goes through [`authorize`] with the [`Access`] it declares, before its handler runs, so an
//! endpoint cannot forget to check.
//!
//! Credentials: `Authorization: Bearer <token>` (or GitLab's `PRIVATE-TOKEN` and `JOB-TOKEN`
//! headers) with the administrator's token, a personal access token, an agent's or a running
//! job's token; or the `gantry_session` cookie of a browser session, whose changes (anything
//! but GET and HEAD) must carry the session's `X-CSRF-Token`.
//!
//! Refusals: 401 without a credential (or with an expired or revoked one, which says so); 403
//! for a credential that may not do this (a role too low, a token's scopes, not an
//! administrator); 404 for a project the caller is not a member of, as for one that does not
//! exist, so that names of private projects do not leak.

use crate::AppState;
use crate::error::HttpError;
use crate::routes::{Access, Route};
use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::Method;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gantry_api::{Role, Scope};
use gantry_engine::Caller;
use gantry_engine::token::constant_time_eq;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "gantry_session";

/// The caller [`authorize`] found, for handlers that need it (who created a pipeline, who
/// played a job).
#[derive(Debug, Clone)]
pub struct Auth(pub Caller);

pub fn bearer(parts: &Parts) -> Option<String> {
    let h = &parts.headers;
    if let Some(v) = h
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    {
        return Some(t.trim().to_string());
    }
    for name in ["private-token", "job-token"] {
        if let Some(v) = h.get(name).and_then(|v| v.to_str().ok()) {
            return Some(v.trim().to_string());
        }
    }
    None
}

/// The session cookie's value, if the request has one.
pub fn session_cookie(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The caller of a request: its token, else its session cookie; `None` when it has neither.
async fn caller_of(parts: &Parts, s: &AppState) -> Result<Option<Caller>, HttpError> {
    if let Some(token) = bearer(parts) {
        return match s.engine.authenticate(&token).await? {
            Some(c) => Ok(Some(c)),
            None => Err(HttpError::unauthorized()),
        };
    }
    if let Some(cookie) = session_cookie(parts) {
        return Ok(s.engine.authenticate_session(&cookie).await?);
    }
    Ok(None)
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(Auth(c.clone()));
        }
        match caller_of(parts, state).await? {
            Some(c) => Ok(Auth(c)),
            None => Err(HttpError::unauthorized()),
        }
    }
}

/// The layer every route of the table runs behind: checks `route.access` and leaves the
/// [`Caller`] in the request's extensions.
pub async fn authorize(
    State(s): State<AppState>,
    route: &'static Route,
    req: Request,
    next: Next,
) -> Response {
    let page = matches!(route.access, Access::Page(_));
    let (method, uri) = (req.method().clone(), req.uri().clone());
    match check(&s, route, req).await {
        Ok(req) if page => {
            // A page that failed is rendered again with its header (who is signed in).
            let caller = req.extensions().get::<Caller>().cloned();
            let resp = next.run(req).await;
            match (resp.extensions().get::<crate::ui::Failed>(), caller) {
                (Some(f), Some(c)) => crate::ui::error_page(f.0.clone(), crate::ui::Chrome::of(&c)),
                _ => resp,
            }
        }
        Ok(req) => next.run(req).await,
        Err(e) if page => crate::ui::refusal(e, &method, &uri),
        Err(e) => e.into_response(),
    }
}

/// The largest form a page takes (the lint page's pipeline file is the largest).
pub const FORM_LIMIT: usize = 4 << 20;

async fn check(s: &AppState, route: &Route, req: Request) -> Result<Request, HttpError> {
    use Access::*;
    if matches!(
        route.access,
        Public | Registration | Webhook | TriggerToken | Agent
    ) {
        // These authenticate by what the request carries (a signature, a token in the body,
        // the agent's own token on its WebSocket), in their handlers.
        return Ok(req);
    }
    let page = matches!(route.access, Page(_));
    let access = match route.access {
        Page(p) => p.api(),
        a => a,
    };
    let (mut parts, mut body) = req.into_parts();
    let caller = caller_of(&parts, s)
        .await?
        .ok_or_else(HttpError::unauthorized)?;
    if let Caller::User(u) = &caller {
        let reading = matches!(parts.method, Method::GET | Method::HEAD);
        match (&u.scopes, &u.csrf) {
            (Some(scopes), _) => {
                let ok =
                    scopes.contains(&Scope::Api) || (reading && scopes.contains(&Scope::ReadApi));
                if !ok {
                    let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
                    return Err(HttpError::forbidden(format!(
                        "this token's scopes ({}) do not allow {} {}: it needs {}",
                        names.join(", "),
                        parts.method,
                        route.path,
                        if reading { "read_api or api" } else { "api" }
                    )));
                }
            }
            (None, Some(csrf)) if !reading => {
                let mut sent = parts
                    .headers
                    .get("x-csrf-token")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                // A page's form carries it in its `_csrf` field.
                if sent.is_empty() && page {
                    let bytes = axum::body::to_bytes(body, FORM_LIMIT)
                        .await
                        .map_err(|_| HttpError::bad_request("the form is too large"))?;
                    sent = crate::ui::form_field(&bytes, "_csrf").unwrap_or_default();
                    body = axum::body::Body::from(bytes);
                }
                if !constant_time_eq(&sent, csrf) {
                    return Err(HttpError::forbidden(
                        "a change made with a session must send its CSRF token in the \
                         X-CSRF-Token header (reload the page)",
                    ));
                }
            }
            _ => {}
        }
    }
    match access {
        Admin if !caller.is_admin() => {
            return Err(HttpError::forbidden(
                "this endpoint is for instance administrators",
            ));
        }
        Signed if !matches!(caller, Caller::Admin | Caller::User(_)) => {
            return Err(HttpError::forbidden(
                "this endpoint needs a user (a session or a personal access token) or the \
                 administrator's token",
            ));
        }
        User if !matches!(caller, Caller::User(_)) => {
            return Err(HttpError::forbidden(
                "this endpoint is a user's own: sign in, or use a personal access token",
            ));
        }
        Job if !matches!(caller, Caller::Admin | Caller::Job(_)) && !caller.is_admin() => {
            return Err(HttpError::forbidden(
                "this endpoint is for running jobs (their CI_JOB_TOKEN) and administrators",
            ));
        }
        Project(needed) => {
            let (project, what) = project_of(s, route, &mut parts).await?;
            let role = s.engine.role_in(&caller, project).await?;
            allowed(role, needed, route, &what)?;
        }
        // A job token's reach is checked by the handler (its own pipeline).
        JobOr(needed) if !matches!(caller, Caller::Job(_)) => {
            let (project, what) = project_of(s, route, &mut parts).await?;
            let role = s.engine.role_in(&caller, project).await?;
            allowed(role, needed, route, &what)?;
        }
        _ => {}
    }
    parts.extensions.insert(caller);
    Ok(Request::from_parts(parts, body))
}

/// A role is enough, or the refusal: 404 for no role (as for a project that does not exist),
/// 403 for one too low.
fn allowed(role: Option<Role>, needed: Role, route: &Route, what: &str) -> Result<(), HttpError> {
    match role {
        None => Err(not_yours(what)),
        Some(r) if r < needed => Err(HttpError::forbidden(format!(
            "{} {} needs the {needed} role in the project; you are {r}",
            route.method, route.path
        ))),
        Some(_) => Ok(()),
    }
}

fn not_yours(what: &str) -> HttpError {
    HttpError::not_found(format!(
        "{what} not found, or you are not a member of its project"
    ))
}

/// The project a route's path names (`{project}` itself, or the project of the pipeline or
/// job `{id}`), and how to name what the path names.
async fn project_of(
    s: &AppState,
    route: &Route,
    parts: &mut Parts,
) -> Result<(i64, String), HttpError> {
    let params = RawPathParams::from_request_parts(parts, s)
        .await
        .map_err(|e| HttpError::bad_request(format!("the path: {e}")))?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    if let Some(key) = get("project") {
        let what = format!("project {key}");
        return match s.engine.find_project(&key).await {
            Ok(id) => Ok((id, what)),
            Err(_) => Err(not_yours(&what)),
        };
    }
    let id: i64 = get("id")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| HttpError::bad_request("the id in the path is not a number"))?;
    let (found, what) =
        if route.path.starts_with("/api/v1/pipelines/") || route.path.starts_with("/pipelines/") {
            (
                s.engine.project_of_pipeline(id).await,
                format!("pipeline {id}"),
            )
        } else if route.path.starts_with("/api/v1/jobs/") || route.path.starts_with("/jobs/") {
            (s.engine.project_of_job(id).await, format!("job {id}"))
        } else {
            unreachable!("a project route names its project: {}", route.path)
        };
    match found {
        Ok(p) => Ok((p, what)),
        Err(_) => Err(not_yours(&what)),
    }
}
