//! `POST /v1/control`: moderation commands signed by the edge.

use super::auth::edge_service;
use super::error::HttpError;
use super::{ask, AppState};
use crate::driver::Command;
use axum::extract::rejection::JsonRejection;
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
    body: Result<Json<ControlCommand>, JsonRejection>,
) -> Result<Json<ControlReply>, HttpError> {
    let decided_at = edge_service(&headers, &state.key)?;
    let Json(command) = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return HttpError::new(
                ErrorCode::TooLarge,
                format!("control commands are limited to {MAX_CONTROL_BYTES} bytes"),
            );
        }
        HttpError::new(
            ErrorCode::BadRequest,
            format!("body must be a control command (type mute, kick, close_room or perms): {}", e.body_text()),
        )
    })?;
    tracing::info!(?command, "control command");
    let sessions = ask(&state, |reply| Command::Control { command, decided_at, reply }).await?;
    Ok(Json(ControlReply { sessions }))
}
