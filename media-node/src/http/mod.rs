//! The node's HTTP API (axum): sessions, control, health and metrics. Handlers verify tokens and shapes, then
//! ask the media loop ([`crate::driver`]) through a channel; they never touch the core directly.

mod auth;
mod control;
mod error;
mod open_limit;
pub(crate) use open_limit::OpenLimit;
mod ops;
mod serve;
pub(crate) use serve::{serve, Limits as ServeLimits};
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

/// The longest one request may take, its body upload included: a client that trickles an offer in (or never
/// finishes it) does not hold a connection and a handler open for longer.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

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
    /// Whether the node heartbeats to an edge (`--edge-url`).
    pub(crate) has_edge: bool,
    /// How often each participant may open sessions.
    pub(crate) opens: Arc<OpenLimit>,
}

/// The API's routes.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/sessions", post(sessions::create).layer(DefaultBodyLimit::max(sessions::MAX_OFFER_BYTES)))
        .route("/v1/sessions/{id}", delete(sessions::delete))
        .route("/v1/control", post(control::control).layer(DefaultBodyLimit::max(control::MAX_CONTROL_BYTES)))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn(time_limit))
        .layer(cors())
        .with_state(state)
}

/// Ends a request that takes longer than [`REQUEST_TIMEOUT`] with a JSON error, as every error of the API is.
async fn time_limit(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    within(REQUEST_TIMEOUT, next.run(request)).await
}

async fn within(
    limit: Duration,
    handling: impl std::future::Future<Output = axum::response::Response>,
) -> axum::response::Response {
    match tokio::time::timeout(limit, handling).await {
        Ok(response) => response,
        Err(_) => {
            let message = format!(
                "the request took longer than {} s (a stalled or very slow upload?); send it again",
                limit.as_secs()
            );
            axum::response::IntoResponse::into_response(error::HttpError::new(ErrorCode::BadRequest, message))
        }
    }
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
            "the media loop is not running (the node is stopping); media.join again in a few seconds",
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
        Err(_) => Err(HttpError::new(
            ErrorCode::Unavailable,
            "the media loop did not answer within 5 s (the node is overloaded); retry in a few seconds",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    #[tokio::test(start_paused = true)]
    async fn a_request_over_the_time_limit_gets_a_json_error() {
        let stalled = async {
            tokio::time::sleep(REQUEST_TIMEOUT * 2).await;
            "too late".into_response()
        };
        let response = within(REQUEST_TIMEOUT, stalled).await;
        assert_eq!(response.status().as_u16(), 400);
        assert_eq!(response.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes()), Some(&b"application/json"[..]));
        let prompt = within(REQUEST_TIMEOUT, async { "in time".into_response() }).await;
        assert_eq!(prompt.status().as_u16(), 200);
    }
}
