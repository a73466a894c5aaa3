//! `GET /healthz` and `GET /metrics`.

use super::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// The body of `GET /healthz`.
#[derive(Debug, Serialize)]
pub(crate) struct Health {
    status: &'static str,
    node: String,
    region: String,
    sessions: u32,
    rooms: u32,
    capacity: u32,
    draining: bool,
    /// `standalone` (no `--edge-url`), `registered` (the edge accepted the last heartbeat) or `unregistered`
    /// (not yet, or the last heartbeat failed: rooms are not placed here; the log says why).
    edge: &'static str,
    /// Heartbeats failed in a row.
    heartbeat_failures: u32,
}

pub(crate) async fn healthz(State(state): State<AppState>) -> Json<Health> {
    let draining = state.status.draining();
    Json(Health {
        status: if draining { "draining" } else { "ok" },
        node: state.node_id.to_string(),
        region: state.region.to_string(),
        sessions: state.status.sessions(),
        rooms: state.status.rooms(),
        capacity: state.capacity,
        draining,
        edge: match (state.has_edge, state.status.registered()) {
            (false, _) => "standalone",
            (true, true) => "registered",
            (true, false) => "unregistered",
        },
        heartbeat_failures: state.status.heartbeat_failures(),
    })
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
        .into_response()
}
