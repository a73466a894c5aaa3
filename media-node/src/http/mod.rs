//! The node's HTTP API (axum): sessions, control, health and metrics. Handlers verify tokens and shapes, then
//! ask the media loop ([`crate::driver`]) through a channel; they never touch the core directly.

mod auth;
mod control;
mod error;
mod ops;
mod sessions;

use crate::driver::{Command, Status};
use crate::metrics::Metrics;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, Method};
use axum::routing::{delete, get, post};
use axum::Router;
pub(crate) use error::HttpError;
use homeroom_shared::auth::TokenKey;
use homeroom_shared::protocol::ErrorCode;
use homeroom_shared::{NodeId, Region};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tower_http::cors::{Any, CorsLayer};

/// How long a handler waits for the media loop before giving up.
const CORE_TIMEOUT: Duration = Duration::from_secs(5);

/// What handlers share.
#[derive(Clone, Debug)]
pub(crate) struct AppState {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) key: TokenKey,
    pub(crate) node_id: NodeId,
    pub(crate) region: Region,
    pub(crate) capacity: u32,
    pub(crate) status: Arc<Status>,
    pub(crate) metrics: Metrics,
}

/// The API's routes.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/sessions", post(sessions::create).layer(DefaultBodyLimit::max(sessions::MAX_OFFER_BYTES)))
        .route("/v1/sessions/{id}", delete(sessions::delete))
        .route("/v1/control", post(control::control).layer(DefaultBodyLimit::max(64 * 1024)))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(cors())
        .with_state(state)
}

/// Browsers call the node from the edge's origin. Credentials travel in `Authorization`, never in cookies, so
/// any origin may call; `Location` is exposed so a page can learn its session URL.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::LOCATION])
        .max_age(Duration::from_secs(600))
}

/// Sends a command to the media loop and waits for its reply.
pub(crate) async fn ask<T>(
    state: &AppState,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, HttpError> {
    let unavailable = || {
        HttpError::new(
            ErrorCode::Unavailable,
            "the media loop is not running (the node is stopping); ask the edge for another node",
        )
    };
    let (reply, answer) = oneshot::channel();
    match tokio::time::timeout(CORE_TIMEOUT, state.commands.send(command(reply))).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(unavailable()),
        Err(_) => {
            return Err(HttpError::new(
                ErrorCode::Unavailable,
                "the media loop is overloaded (its command queue stayed full for 5 s); retry later",
            ))
        }
    }
    match tokio::time::timeout(CORE_TIMEOUT, answer).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(unavailable()),
        Err(_) => Err(HttpError::new(ErrorCode::Internal, "the media loop did not answer within 5 s")),
    }
}
