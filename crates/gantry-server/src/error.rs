//! Errors as the API returns them: a status and `{"code": …, "message": …}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gantry_api::rest::ApiError;
use gantry_engine::EngineError;

#[derive(Debug, Clone)]
pub struct HttpError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn unauthorized() -> HttpError {
        HttpError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid token is required: send 'Authorization: Bearer <token>' (the administrator's token is in the server's data directory, file admin-token)",
        )
    }

    pub fn forbidden(what: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::FORBIDDEN, "forbidden", what)
    }

    pub fn bad_request(what: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, "bad_request", what)
    }

    pub fn not_found(what: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, "not_found", what)
    }
}

impl From<EngineError> for HttpError {
    fn from(e: EngineError) -> HttpError {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("{e}");
        }
        HttpError::new(status, e.code(), e.to_string())
    }
}

impl From<gantry_store::StoreError> for HttpError {
    fn from(e: gantry_store::StoreError) -> HttpError {
        HttpError::from(EngineError::from(e))
    }
}

impl From<gantry_registry::error::RegistryError> for HttpError {
    fn from(e: gantry_registry::error::RegistryError) -> HttpError {
        use gantry_registry::error::Code;
        match e.code {
            Code::NameUnknown | Code::ManifestUnknown | Code::BlobUnknown => {
                HttpError::not_found(e.message)
            }
            Code::Denied => HttpError::forbidden(e.message),
            Code::Unavailable => {
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.message)
            }
            _ => HttpError::bad_request(e.message),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ApiError {
                code: self.code,
                message: self.message,
            }),
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, HttpError>;
