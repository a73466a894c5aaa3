//! HTTP errors: every failure leaves as `{"code","message"}` with the contract's code and its HTTP status.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use homeroom_shared::protocol::{ApiError, ErrorCode};

/// An error reply.
#[derive(Debug)]
pub(crate) struct HttpError(pub(crate) ApiError);

impl HttpError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HttpError(ApiError::new(code, message))
    }
}

impl From<ApiError> for HttpError {
    fn from(error: ApiError) -> Self {
        HttpError(error)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, [(header::CONTENT_TYPE, "application/json")], self.0.to_json()).into_response();
        if let Some(seconds) = self.0.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

/// Unknown routes.
pub(crate) async fn not_found() -> HttpError {
    HttpError::new(ErrorCode::NotFound, "no such endpoint; see docs/media-node.md for the node's HTTP API")
}

/// Known routes, wrong method.
pub(crate) async fn method_not_allowed() -> Response {
    let error = HttpError::new(ErrorCode::BadRequest, "method not allowed on this endpoint");
    let mut response = error.into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}
