//! JSON responses: every error is `{"code","message"}` with the contract's code and a matching status.

use homeroom_shared::protocol::{ApiError, ErrorCode};
use serde::Serialize;
use worker::{Headers, Response};

fn with_json_headers(response: Response) -> Response {
    let headers = Headers::new();
    let _ = headers.set("content-type", "application/json; charset=utf-8");
    let _ = headers.set("cache-control", "no-store");
    response.with_headers(headers)
}

/// A JSON body with `status`.
pub fn json<T: Serialize>(status: u16, body: &T) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => text_response(status, text),
        Err(e) => error(&ApiError::new(ErrorCode::Internal, format!("could not encode the response: {e}"))),
    }
}

fn text_response(status: u16, text: String) -> Response {
    match Response::ok(text) {
        Ok(r) => with_json_headers(r.with_status(status)),
        Err(_) => Response::empty().map(|r| r.with_status(500)).unwrap_or_else(|_| fallback()),
    }
}

/// An error response: the code's status and `{"code","message"}`; a lasting refusal also gets `Retry-After`.
pub fn error(err: &ApiError) -> Response {
    refusal(err.code.http_status(), err.to_json(), err.retry_after)
}

/// A JSON error body with `status` and, when given, `Retry-After` in seconds.
pub fn refusal(status: u16, body: String, retry_after_s: Option<u64>) -> Response {
    let response = text_response(status, body);
    if let Some(seconds) = retry_after_s {
        let headers = response.headers().clone();
        let _ = headers.set("retry-after", &seconds.to_string());
        return response.with_headers(headers);
    }
    response
}

/// Shorthand for [`error`] from parts.
pub fn fail(code: ErrorCode, message: impl Into<String>) -> Response {
    error(&ApiError::new(code, message))
}

fn fallback() -> Response {
    // Response construction only fails if the JS runtime refuses a plain string body; there is nothing
    // better to return then.
    Response::builder().with_status(500).empty()
}
