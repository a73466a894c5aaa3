//! `POST /v1/control`: moderation commands signed by the edge.

use super::auth::edge_service;
use super::error::HttpError;
use super::{ask, AppState};
use crate::driver::Command;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use homeroom_shared::media::{ControlCommand, ControlReply};
use homeroom_shared::protocol::ErrorCode;

/// The largest control body accepted (a command is a few hundred bytes).
pub(crate) const MAX_CONTROL_BYTES: usize = 64 * 1024;

pub(crate) async fn control(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ControlReply>, HttpError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return HttpError::new(
                ErrorCode::TooLarge,
                format!("control commands are limited to {MAX_CONTROL_BYTES} bytes"),
            );
        }
        HttpError::new(ErrorCode::BadRequest, format!("could not read the control body: {}", e.body_text()))
    })?;
    // The token first: it also says whether this is the body it was signed for.
    let decided_at = edge_service(&headers, &state.key, state.node_id.as_str(), &body)?;
    let command: ControlCommand = serde_json::from_slice(&body).map_err(|e| {
        HttpError::new(
            ErrorCode::BadRequest,
            format!("body must be a control command (type mute, kick, close_room or perms): {e}"),
        )
    })?;
    tracing::info!(?command, "control command");
    let sessions = ask(&state, |reply| Command::Control { command, decided_at, reply }).await?;
    Ok(Json(ControlReply { sessions }))
}
