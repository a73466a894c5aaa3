//! Error codes and WebSocket close codes of the contract.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The error codes clients ever see, in error frames and HTTP error bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    RoomFull,
    RateLimited,
    TooLarge,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The HTTP status that goes with the code in HTTP responses.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict | ErrorCode::RoomFull => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// The code's name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as clients see it: a contract code and a message a person can act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds after which the same request may succeed (a refusal that lasts: a connection limit, a
    /// cooldown, a timed ban). HTTP responses carry it as `Retry-After` too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), retry_after: None }
    }

    /// The same error, saying when to try again.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The JSON body of an HTTP error response: `{"code","message"}`, plus `retry_after` when set.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"code\":\"internal\",\"message\":\"\"}"))
    }
}

/// WebSocket close codes of the contract.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The token is invalid or expired.
    pub const TOKEN_INVALID: u16 = 4001;
    /// A moderator removed the participant.
    pub const KICKED: u16 = 4003;
    /// The room was cleared; reconnect for a fresh room.
    pub const ROOM_CLEARED: u16 = 4004;
    /// Policy: sustained rate-limit violations or abuse.
    pub const POLICY: u16 = 4008;
    /// A frame far beyond the size limit.
    pub const TOO_LARGE: u16 = 4009;
    /// An internal error.
    pub const INTERNAL: u16 = 1011;
}
