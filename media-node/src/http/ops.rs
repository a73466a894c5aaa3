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
    })
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
        .into_response()
}
