//! Calls from the edge to a media node's control API (`POST {node}/v1/control`), signed with `NODE_SECRET`.

use crate::{clock, config};
use homeroom_shared::auth::{body_digest, ServiceClaims};
pub use homeroom_shared::media::ControlFailure as Failure;
use homeroom_shared::media::{ControlCommand, EDGE_SUBJECT};
use homeroom_shared::protocol::NodeInfo;
use worker::{Fetch, Headers, Method, Request, RequestInit};

/// Lifetime of the edge's control tokens.
const CONTROL_TOKEN_TTL_SECS: u64 = 60;

/// Sends `command` to `node`, dated `decided_at` (the token's `iat`, which the node takes as the decision's
/// second; now if `None`). Returns the node's answer status, or why the command did not take effect.
pub async fn send(
    env: &worker::Env,
    node: &NodeInfo,
    command: &ControlCommand,
    decided_at: Option<u64>,
) -> Result<u16, Failure> {
    let local = |e: &dyn std::fmt::Display| Failure::Local(e.to_string());
    let now = clock::now();
    let body = serde_json::to_string(command).map_err(|e| local(&e))?;
    // The token names this body and this node: one seen in transit cannot carry another command, or be
    // replayed to another node.
    let claims = ServiceClaims {
        sub: EDGE_SUBJECT.to_owned(),
        exp: now.as_secs() + CONTROL_TOKEN_TTL_SECS,
        iat: Some(decided_at.unwrap_or(now.as_secs()).min(now.as_secs())),
        body_sha256: Some(body_digest(body.as_bytes())),
        aud: Some(node.id.clone()),
    };
    let token = config::node_key(env).sign(&claims).map_err(|e| local(&e))?;
    let headers = Headers::new();
    headers.set("authorization", &format!("Bearer {token}")).map_err(|e| local(&e))?;
    headers.set("content-type", "application/json").map_err(|e| local(&e))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    let url = format!("{}/v1/control", node.url.trim_end_matches('/'));
    let request = Request::new_with_init(&url, &init).map_err(|e| local(&e))?;
    let mut response = Fetch::Request(request).send().await.map_err(|e| Failure::Unreachable(e.to_string()))?;
    let status = response.status_code();
    if (200..300).contains(&status) {
        return Ok(status);
    }
    let body: String = response.text().await.unwrap_or_default().chars().take(300).collect();
    Err(Failure::Refused { status, body })
}
