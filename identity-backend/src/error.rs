//! The backend's one request error and its one HTTP mapping, shared by the HTTP layer
//! and the domain rules; storage errors become one here, in one place.
//!
//! Every error leaves as `{"error": "<code>", "error_description": "<text>"}` (RFC 6749
//! style); 429 and 503 carry `Retry-After`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use quantaid_protocol::wire::ErrorBody;

use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("{0}")]
    InvalidClient(&'static str),
    #[error("{0}")]
    InvalidGrant(&'static str),
    #[error("{0}")]
    UnsupportedGrantType(String),
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("too many failed attempts; try again later")]
    TooManyAttempts { retry_after_secs: u64 },
    /// Overload or a dependency fault: the client should retry, never treat it as a denial.
    #[error("{reason}")]
    Unavailable { reason: &'static str, retry_after_secs: u64 },
    /// A genuine fault of the backend (a bug or a broken invariant), never a client's
    /// mistake or an overload. Converted explicitly ([`ApiError::internal`]), so that no
    /// stray `?` turns an error into a 500.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn unavailable(reason: &'static str) -> Self {
        ApiError::Unavailable { reason, retry_after_secs: 1 }
    }

    /// A fault of the backend itself: `500 internal`, logged with its cause.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(cause.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) | ApiError::InvalidGrant(_) | ApiError::UnsupportedGrantType(_) | ApiError::InvalidScope(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidCredentials | ApiError::InvalidClient(_) | ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_)
            | ApiError::PayloadTooLarge(_)
            | ApiError::UnsupportedMediaType(_)
            | ApiError::MethodNotAllowed(_) => "invalid_request",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::InvalidClient(_) => "invalid_client",
            ApiError::InvalidGrant(_) => "invalid_grant",
            ApiError::UnsupportedGrantType(_) => "unsupported_grant_type",
            ApiError::InvalidScope(_) => "invalid_scope",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooManyAttempts { .. } => "too_many_attempts",
            ApiError::Unavailable { .. } => "temporarily_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

/// The one mapping of storage errors: an unavailable database is `503` with
/// `Retry-After` (invariant 7), a unique violation `409`, a NUL that got past the
/// extractors `400`, and anything else a fault.
impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(reason) => ApiError::unavailable(reason),
            StorageError::Conflict(constraint) => ApiError::Conflict(match constraint.as_str() {
                "idx_users_username" => "username is already taken",
                "idx_users_email" => "email is already registered",
                _ => "the resource already exists",
            }),
            StorageError::NulInText => ApiError::InvalidRequest("text must not contain NUL characters".into()),
            StorageError::Other(cause) => ApiError::Internal(cause),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(source) = &self {
            tracing::error!(error = format!("{source:#}"), "internal error");
        }
        let description = self.to_string();
        let body = ErrorBody { error: self.code(), error_description: &description };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::TooManyAttempts { retry_after_secs } | ApiError::Unavailable { retry_after_secs, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::InvalidClient(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"quantaid\""));
            }
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"quantaid\""));
            }
            _ => {}
        }
        if matches!(self, ApiError::Unavailable { .. } | ApiError::Internal(_)) || status == StatusCode::UNAUTHORIZED {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        response
    }
}
