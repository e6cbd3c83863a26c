//! [`AppError`]: every HTTP error of the server, converted to a response in one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::collector::AppendError;

/// An HTTP error. The response is the status below with the JSON body
/// `{"error": "<the message>"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// 400: the request is malformed; the client must change it.
    #[error("{0}")]
    BadRequest(String),
    /// 403: the client may not do this (job control from another machine); the message says
    /// why.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such stream or resource.
    #[error("{0}")]
    NotFound(String),
    /// 413: the body or the number of events is over the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the content type is not one the endpoint accepts.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503 with `Retry-After: 1`: storage is failing or closed; retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a server-side fault that retrying will not fix.
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<AppendError> for AppError {
    fn from(e: AppendError) -> Self {
        if e.is_retryable() {
            AppError::Unavailable(e.to_string())
        } else {
            AppError::Internal(e.to_string())
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry = matches!(self, AppError::Unavailable(_));
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_append_errors_are_503_and_others_500() {
        let e = AppError::from(AppendError::Unavailable("closed".into()));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let r = e.into_response();
        assert_eq!(
            r.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("1"))
        );
        let e = AppError::from(AppendError::Rejected("too big".into()));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
