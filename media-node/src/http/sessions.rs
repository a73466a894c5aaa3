//! `POST /v1/sessions` (WHIP-style: SDP offer in, SDP answer out) and `DELETE /v1/sessions/{id}`.

use super::auth::{media_claims, Use};
use super::error::HttpError;
use super::open_limit::{OPEN_BURST, OPEN_REFILL_SECS};
use super::{ask, AppState};
use crate::core::{NewSession, SessionId, SessionOwner};
use crate::driver::{Command, DeleteError};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use homeroom_shared::media::{MediaCaps, Quality};
use homeroom_shared::protocol::{ApiError, ErrorCode};
use serde::Deserialize;

/// Largest SDP offer accepted, in bytes.
pub(crate) const MAX_OFFER_BYTES: usize = 64 * 1024;

/// Query parameters of `POST /v1/sessions`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CreateQuery {
    /// Comma-separated mids of the offer that carry screen share.
    #[serde(default)]
    screen: Option<String>,
    /// Initial quality for received simulcast video: `low`, `medium` or `high` (default).
    #[serde(default)]
    quality: Option<String>,
}

pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<CreateQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    if state.status.draining() {
        return Err(HttpError::new(
            ErrorCode::Unavailable,
            "the node is draining for shutdown and takes no new sessions; media.join again: the edge places the \
             room on another node once this one has drained",
        ));
    }
    let claims = media_claims(&headers, &state.key, state.node_id.as_str(), Use::Open)?;
    state.opens.take(&claims.room, &claims.sub, std::time::Instant::now()).map_err(|wait| {
        let message = format!(
            "this participant opened {OPEN_BURST} sessions in this room in a short while (one more is allowed \
             every {OPEN_REFILL_SECS} s); retry in {wait} s, and back off between attempts"
        );
        HttpError(ApiError::new(ErrorCode::RateLimited, message).retry_after(wait))
    })?;
    let Query(query) = query.map_err(|e| HttpError::new(ErrorCode::BadRequest, e.body_text()))?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.trim().to_ascii_lowercase().starts_with("application/sdp") {
        return Err(HttpError::new(
            ErrorCode::BadRequest,
            format!("Content-Type must be application/sdp (the SDP offer as the body), got {content_type:?}"),
        ));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::new(ErrorCode::TooLarge, format!("SDP offers are limited to {MAX_OFFER_BYTES} bytes"))
        } else {
            HttpError::new(ErrorCode::BadRequest, e.body_text())
        }
    })?;
    let offer_sdp = String::from_utf8(body.to_vec())
        .map_err(|_| HttpError::new(ErrorCode::BadRequest, "the SDP offer is not UTF-8 text"))?;
    let quality = match query.quality.as_deref() {
        None => Quality::High,
        Some(text) => Quality::parse(text).ok_or_else(|| {
            HttpError::new(ErrorCode::BadRequest, format!("quality must be low, medium or high, got {text:?}"))
        })?,
    };
    let screen_mids: Vec<String> = query
        .screen
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect();
    let request = NewSession {
        participant: claims.sub,
        name: claims.name,
        room: claims.room,
        perms: claims.perms,
        caps: claims.caps.unwrap_or(MediaCaps::default()),
        offer_sdp,
        screen_mids,
        quality,
        issued_at: claims.iat,
    };
    let created = ask(&state, |reply| Command::Create { request, reply })
        .await?
        .map_err(|e| HttpError::new(e.code(), e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_owned()),
            (header::LOCATION, format!("/v1/sessions/{}", created.id)),
        ],
        created.answer_sdp,
    )
        .into_response())
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, HttpError> {
    let claims = media_claims(&headers, &state.key, state.node_id.as_str(), Use::Release)?;
    let id = SessionId::parse(&id)
        .ok_or_else(|| HttpError::new(ErrorCode::NotFound, format!("no session {id:?} on this node")))?;
    let owner = SessionOwner { participant: claims.sub, room: claims.room };
    match ask(&state, |reply| Command::Delete { id, owner, reply }).await? {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(DeleteError::NotFound) => Err(HttpError::new(ErrorCode::NotFound, format!("no session {id} on this node"))),
        Err(DeleteError::NotOwner) => {
            Err(HttpError::new(ErrorCode::Forbidden, "the token's participant and room are not this session's"))
        }
    }
}
