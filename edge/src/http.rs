//! JSON responses: every error is `{"code","message"}` with the contract's code and a matching status.

use homeroom_shared::protocol::{ApiError, ErrorCode};
use serde::Serialize;
use worker::{Headers, Response};

/// The JSON headers plus `extra`, set once on the response.
fn with_json_headers(response: Response, extra: &[(&str, &str)]) -> Response {
    let headers = Headers::new();
    let _ = headers.set("content-type", "application/json; charset=utf-8");
    let _ = headers.set("cache-control", "no-store");
    for (name, value) in extra {
        let _ = headers.set(name, value);
    }
    response.with_headers(headers)
}

/// A JSON body with `status`.
pub fn json<T: Serialize>(status: u16, body: &T) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => text_response(status, text, &[]),
        Err(e) => error(&ApiError::new(ErrorCode::Internal, format!("could not encode the response: {e}"))),
    }
}

fn text_response(status: u16, text: String, extra_headers: &[(&str, &str)]) -> Response {
    match Response::ok(text) {
        Ok(r) => with_json_headers(r.with_status(status), extra_headers),
        Err(_) => Response::empty().map(|r| r.with_status(500)).unwrap_or_else(|_| fallback()),
    }
}

/// An error response: the code's status and `{"code","message"}`; a lasting refusal also gets `Retry-After`.
pub fn error(err: &ApiError) -> Response {
    match err.retry_after {
        Some(seconds) => refusal(err.code.http_status(), err.to_json(), seconds, &[]),
        None => text_response(err.code.http_status(), err.to_json(), &[]),
    }
}

/// A JSON error body with `status`, `Retry-After` in seconds and any `extra` headers.
pub fn refusal(status: u16, body: String, retry_after_s: u64, extra: &[(&str, &str)]) -> Response {
    let retry_after = retry_after_s.to_string();
    let mut headers = vec![("retry-after", retry_after.as_str())];
    headers.extend_from_slice(extra);
    text_response(status, body, &headers)
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

/// Reads a request body of at most `limit` bytes. A `Content-Length` over the limit is refused before anything
/// is read (the body is not buffered into the isolate's memory, which every room in it shares); a body without
/// one is checked once read.
pub async fn body_within(req: &mut worker::Request, limit: usize, what: &str) -> Result<String, Response> {
    let declared = req.headers().get("content-length").ok().flatten().and_then(|v| v.trim().parse::<u64>().ok());
    let too_large = || fail(ErrorCode::TooLarge, format!("{what} is larger than {} KiB", limit / 1024));
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match req.text().await {
        Ok(body) if body.len() <= limit => Ok(body),
        Ok(_) => Err(too_large()),
        Err(e) => Err(fail(ErrorCode::BadRequest, format!("unreadable body: {e}"))),
    }
}
