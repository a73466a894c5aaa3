//! The media-node registry Durable Object (one per deployment): leases renewed by node heartbeats.

use crate::http;
use homeroom_shared::protocol::ErrorCode;
use worker::{durable_object, DurableObject, Env, Request, Response, State};

/// The registry Durable Object.
#[durable_object]
pub struct NodeRegistry {
    #[allow(dead_code)]
    state: State,
    #[allow(dead_code)]
    env: Env,
}

impl std::fmt::Debug for NodeRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeRegistry")
    }
}

impl DurableObject for NodeRegistry {
    fn new(state: State, env: Env) -> Self {
        NodeRegistry { state, env }
    }

    async fn fetch(&self, _req: Request) -> worker::Result<Response> {
        Ok(http::fail(ErrorCode::Unavailable, "the node registry is not enabled yet"))
    }
}

/// `GET /v1/nodes` (admin).
pub async fn list_nodes(req: Request, env: &Env) -> Response {
    if let Err(response) = crate::router::authenticate_admin(&req, env) {
        return response;
    }
    http::json(200, &serde_json::json!({ "nodes": [] }))
}

/// `POST /v1/nodes/heartbeat` (node token).
pub async fn heartbeat(_req: Request, _env: &Env) -> Response {
    http::fail(ErrorCode::Unavailable, "the node registry is not enabled yet")
}
