//! Heartbeats to the edge: `POST {edge}/v1/nodes/heartbeat` with a `ServiceClaims { sub: node id }` token
//! signed with `NODE_SECRET`, body [`NodeHeartbeat`], reply [`HeartbeatReply`] `{ttl_ms}`.
//!
//! The node renews every `heartbeat_interval`, or every third of the lease the edge grants if that is
//! shorter, so two heartbeats can be lost before the lease runs out. A failed heartbeat is logged and retried
//! after 0.5 s, 1 s, 2 s … (never later than the regular period). A change of phase (drain started, node
//! stopping) sends one at once, so the edge stops placing rooms here without waiting for the next period.

use crate::clock;
use crate::driver::Status;
use crate::metrics::Metrics;
use crate::node::Phase;
use homeroom_shared::auth::{body_digest, ServiceClaims, TokenKey};
use homeroom_shared::media::{HeartbeatReply, NodeHeartbeat, EDGE_SUBJECT};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Lifetime of each heartbeat token, seconds.
const TOKEN_LIFETIME_SECS: u64 = 120;
/// First retry delay after a failure.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// How often the node's last heartbeat (its stop) is tried again when it fails at once (an edge that is slow
/// to answer uses the whole of the stop's budget on the first try).
const LAST_HEARTBEAT_RETRIES: u32 = 2;
/// Timeout of one heartbeat request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the heartbeat loop needs.
#[derive(Clone, Debug)]
pub(crate) struct Heartbeat {
    pub(crate) endpoint: String,
    pub(crate) node_id: String,
    pub(crate) region: String,
    pub(crate) public_url: String,
    pub(crate) capacity: u32,
    pub(crate) interval: Duration,
    pub(crate) key: TokenKey,
    pub(crate) metrics: Metrics,
}

/// Why one heartbeat failed.
#[derive(Debug, thiserror::Error)]
enum HeartbeatError {
    #[error("could not sign the heartbeat token: {0}")]
    Sign(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("the edge answered HTTP {status}: {body}{}", hint(*status))]
    Refused { status: u16, body: String },
    #[error("the edge's reply is not {{\"ttl_ms\": n}}: {0}")]
    BadReply(String),
}

/// What an operator should check for a refusal.
fn hint(status: u16) -> &'static str {
    match status {
        401 => {
            " (check that this node's NODE_SECRET is the edge's: `wrangler secret put NODE_SECRET`; a token \
             is also refused as expired, or as valid for too long (over 600 s), when this host's clock is off: \
             keep it in sync with NTP)"
        }
        403 => " (the edge refuses this node id or token kind)",
        404 => " (is --edge-url the edge's base URL, without a path?)",
        409 => {
            " (another node heartbeats with this id from another URL: give each node its own --node-id; or, \
             after a drain, a heartbeat issued before it arrived late and was ignored)"
        }
        _ => "",
    }
}

/// An error with its sources: reqwest's own message ("error sending request for url …") leaves out the
/// cause an operator needs (connection refused, DNS, TLS).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl Heartbeat {
    /// The heartbeat endpoint under the edge's base URL.
    pub(crate) fn endpoint_for(edge_url: &str) -> String {
        format!("{}/v1/nodes/heartbeat", edge_url.trim_end_matches('/'))
    }

    /// Records whether the edge accepts the node, for `/healthz` and the metrics.
    fn record(&self, status: &Status, registered: bool, failures: u32) {
        status.registered.store(registered, Ordering::Relaxed);
        status.heartbeat_failures.store(failures, Ordering::Relaxed);
        self.metrics.registered.set(i64::from(registered));
    }

    /// Sends heartbeats until the phase becomes [`Phase::Stopped`] (which sends a last one).
    pub(crate) async fn run(self, status: Arc<Status>, mut phase: watch::Receiver<Phase>) {
        let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the heartbeat HTTP client; heartbeats are off");
                return;
            }
        };
        let mut period = self.interval;
        let mut failures: u32 = 0;
        loop {
            let current = *phase.borrow_and_update();
            let draining = current != Phase::Running;
            let load = if current == Phase::Stopped { 0 } else { status.sessions() };
            // A drain starting while a "running" heartbeat is in flight (the edge slow to answer) abandons it and
            // sends `draining` at once: the edge orders heartbeats by `iat` after a drain, so the abandoned one
            // cannot undo it if it arrives. A draining heartbeat is not abandoned: one of the drain's own second
            // arriving after the last (load 0) would be taken, and renew the lease of a stopped node.
            let sent = tokio::select! {
                sent = self.send_last_with_retries(&client, load, draining, current) => Some(sent),
                changed = phase.changed(), if current == Phase::Running => {
                    if changed.is_err() {
                        return;
                    }
                    None
                }
            };
            let Some(sent) = sent else {
                tracing::debug!("phase changed while a heartbeat was in flight; sending the new phase");
                continue;
            };
            match sent {
                Ok(reply) => {
                    self.record(&status, true, 0);
                    if failures > 0 {
                        tracing::info!(after_failures = failures, "heartbeats to the edge recovered");
                    }
                    failures = 0;
                    period = self.interval.min(Duration::from_millis(reply.ttl_ms / 3).max(Duration::from_millis(100)));
                    tracing::debug!(load, draining, ttl_ms = reply.ttl_ms, "heartbeat accepted");
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.record(&status, false, failures);
                    self.metrics.heartbeat_failures.inc();
                    tracing::warn!(endpoint = %self.endpoint, failures, error = %e, "heartbeat failed; retrying");
                }
            }
            if current == Phase::Stopped {
                // The last heartbeat (draining, load 0) ended the lease: the node is no longer registered.
                self.record(&status, false, failures);
                return;
            }
            let wait = if failures == 0 {
                period
            } else {
                FIRST_RETRY.saturating_mul(1 << failures.min(10).saturating_sub(1)).min(period)
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = phase.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Sends one heartbeat; the node's last one (`phase` stopped), the only report of a stop, is tried again
    /// after [`FIRST_RETRY`] and twice that if it fails (within the stop's 6 s budget for the heartbeats).
    async fn send_last_with_retries(
        &self,
        client: &reqwest::Client,
        load: u32,
        draining: bool,
        phase: Phase,
    ) -> Result<HeartbeatReply, HeartbeatError> {
        let mut result = self.send(client, load, draining).await;
        if phase != Phase::Stopped {
            return result;
        }
        for attempt in 1..=LAST_HEARTBEAT_RETRIES {
            let Err(e) = &result else { break };
            tracing::warn!(endpoint = %self.endpoint, error = %e, attempt, "the last heartbeat failed; trying again");
            tokio::time::sleep(FIRST_RETRY.saturating_mul(attempt)).await;
            result = self.send(client, load, draining).await;
        }
        result
    }

    async fn send(
        &self,
        client: &reqwest::Client,
        load: u32,
        draining: bool,
    ) -> Result<HeartbeatReply, HeartbeatError> {
        let now = clock::now().as_secs();
        let body = NodeHeartbeat {
            id: self.node_id.clone(),
            region: self.region.clone(),
            url: self.public_url.clone(),
            capacity: self.capacity,
            load,
            draining,
        };
        let body = serde_json::to_string(&body).map_err(|e| HeartbeatError::Sign(e.to_string()))?;
        // The token names this body: one seen in transit cannot say something else (a drain, another URL).
        let claims = ServiceClaims {
            sub: self.node_id.clone(),
            exp: now + TOKEN_LIFETIME_SECS,
            iat: Some(now),
            body_sha256: Some(body_digest(body.as_bytes())),
            aud: Some(EDGE_SUBJECT.to_owned()),
        };
        let token = self.key.sign(&claims).map_err(|e| HeartbeatError::Sign(e.to_string()))?;
        let response = client
            .post(&self.endpoint)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| HeartbeatError::Request(error_chain(&e)))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| HeartbeatError::Request(error_chain(&e)))?;
        if !(200..300).contains(&status) {
            return Err(HeartbeatError::Refused { status, body: text.chars().take(300).collect() });
        }
        serde_json::from_str(&text)
            .map_err(|e| HeartbeatError::BadReply(format!("{e}: {}", text.chars().take(200).collect::<String>())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_request_names_its_cause() {
        // Nothing listens on port 1 of loopback: the connect is refused at once.
        let client = reqwest::Client::new();
        let err = client.post("http://127.0.0.1:1/v1/nodes/heartbeat").send().await.unwrap_err();
        let text = error_chain(&err);
        assert!(text.to_lowercase().contains("refused"), "the cause is in the message: {text}");
    }

    #[test]
    fn refusals_say_what_to_check() {
        assert!(hint(401).contains("NODE_SECRET") && hint(401).contains("clock"));
        assert!(hint(409).contains("--node-id"));
        assert_eq!(hint(500), "");
    }
}
