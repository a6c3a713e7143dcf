//! Trigger tokens and the trigger endpoint: `POST /api/v1/projects/{project}/trigger` takes
//! the token, the ref and the variables as JSON, as a URL-encoded or multipart form (GitLab's
//! `token=…`, `ref=…`, `variables[KEY]=value`, what `curl -F` sends), or in the query string.

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiResult, HttpError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use gantry_api::rest::{Pipeline, TriggerRequest, TriggerToken, TriggerTokenCreate};

pub async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
    body: Option<Json<TriggerTokenCreate>>,
) -> ApiResult<(StatusCode, Json<TriggerToken>)> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let token = s
        .engine
        .create_trigger_token(&project, req, &caller)
        .await?;
    Ok((StatusCode::CREATED, Json(token)))
}

pub async fn list(
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<TriggerToken>>> {
    Ok(Json(s.engine.trigger_tokens(&project).await?))
}

pub async fn delete(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((project, id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    s.engine.delete_trigger_token(&project, id, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/projects/{project}/trigger`: authenticated by the trigger token it carries.
pub async fn trigger(
    State(s): State<AppState>,
    Path(project): Path<String>,
    request: Request,
) -> ApiResult<(StatusCode, Json<Pipeline>)> {
    let mut req = TriggerRequest::default();
    if let Some(query) = request.uri().query() {
        add_fields(&mut req, form_urlencoded::parse(query.as_bytes()))?;
    }
    let kind = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match kind.as_str() {
        "multipart/form-data" => {
            let mut form = Multipart::from_request(request, &s)
                .await
                .map_err(|e| HttpError::bad_request(format!("the multipart form: {e}")))?;
            let mut fields = Vec::new();
            while let Some(field) = form
                .next_field()
                .await
                .map_err(|e| HttpError::bad_request(format!("the multipart form: {e}")))?
            {
                let name = field.name().unwrap_or("").to_string();
                let value = field.text().await.map_err(|e| {
                    HttpError::bad_request(format!("the multipart field '{name}': {e}"))
                })?;
                fields.push((name, value));
            }
            add_fields(
                &mut req,
                fields
                    .iter()
                    .map(|(k, v)| (k.as_str().into(), v.as_str().into())),
            )?;
        }
        _ => {
            let body = Bytes::from_request(request, &s)
                .await
                .map_err(|e| HttpError::bad_request(format!("the request body: {e}")))?;
            if kind == "application/x-www-form-urlencoded" {
                add_fields(&mut req, form_urlencoded::parse(&body))?;
            } else if !body.iter().all(u8::is_ascii_whitespace) {
                let json: TriggerRequest = serde_json::from_slice(&body).map_err(|e| {
                    HttpError::bad_request(format!(
                        "the body is not a trigger request ({e}): send JSON {{\"token\": \
                         \"…\", \"ref\": \"main\", \"variables\": {{\"KEY\": \"value\"}}}} or \
                         a form with token, ref and variables[KEY]"
                    ))
                })?;
                if !json.token.is_empty() {
                    req.token = json.token;
                }
                req.git_ref = json.git_ref.or(req.git_ref);
                req.variables.extend(json.variables);
            }
        }
    }
    let p = s.engine.trigger_pipeline(&project, req).await?;
    Ok((StatusCode::CREATED, Json(p)))
}

/// Takes `token`, `ref` and `variables[KEY]` from form fields; refuses unknown ones, so that a
/// typo (`varables[X]`) is not silently dropped.
fn add_fields<'a>(
    req: &mut TriggerRequest,
    fields: impl Iterator<Item = (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
) -> ApiResult<()> {
    for (name, value) in fields {
        match name.as_ref() {
            "token" => req.token = value.into_owned(),
            "ref" => req.git_ref = Some(value.into_owned()),
            other => match other
                .strip_prefix("variables[")
                .and_then(|k| k.strip_suffix(']'))
            {
                Some(key) => {
                    req.variables.insert(key.to_string(), value.into_owned());
                }
                None => {
                    return Err(HttpError::bad_request(format!(
                        "unknown field '{other}': a trigger takes token, ref and \
                         variables[KEY]"
                    )));
                }
            },
        }
    }
    Ok(())
}
