//! `POST /v1/control`: moderation commands signed by the edge.

use super::auth::edge_service;
use super::error::HttpError;
use super::{ask, AppState};
use crate::driver::Command;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use homeroom_shared::media::{ControlCommand, ControlReply};
use homeroom_shared::protocol::ErrorCode;

pub(crate) async fn control(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ControlCommand>, JsonRejection>,
) -> Result<Json<ControlReply>, HttpError> {
    let decided_at = edge_service(&headers, &state.key)?;
    let Json(command) = body.map_err(|e| {
        HttpError::new(
            ErrorCode::BadRequest,
            format!("body must be a control command (type mute, kick, close_room or perms): {}", e.body_text()),
        )
    })?;
    tracing::info!(?command, "control command");
    let sessions = ask(&state, |reply| Command::Control { command, decided_at, reply }).await?;
    Ok(Json(ControlReply { sessions }))
}
