//! The contract between the edge and media nodes: heartbeats (node → edge) and control (edge → node).
//!
//! Both directions authenticate with HS256 JWTs signed with `NODE_SECRET` ([`crate::auth::ServiceClaims`]):
//! a node's heartbeat token has `sub` = its node id; the edge's control token has `sub` = [`EDGE_SUBJECT`].
//! Clients reach a node with a media token ([`crate::auth::MediaClaims`]) that the edge signs with the same
//! secret.

use crate::auth::MediaPerms;
use crate::protocol::{MediaKind, Role};
use serde::{Deserialize, Serialize};

/// The `sub` of the edge's control tokens.
pub const EDGE_SUBJECT: &str = "edge";

/// `POST /v1/nodes/heartbeat` body: a node announcing itself and its load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHeartbeat {
    /// Must equal the heartbeat token's `sub`.
    pub id: String,
    pub region: String,
    /// Base URL of the node's HTTP API as clients reach it (e.g. `https://media-eu1.example.com`).
    pub url: String,
    /// Most participant sessions the node takes.
    pub capacity: u32,
    /// Participant sessions it has now.
    pub load: u32,
    /// A draining node keeps its rooms but gets no new ones.
    pub draining: bool,
}

/// Reply to a heartbeat: renew before `ttl_ms` passes or lose the lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub ttl_ms: u64,
}

/// `POST /v1/control` body: an edge-signed moderation command for a room on the node.
/// `room` is the tenant-scoped room (`{tenant}/{room}`), as in media tokens; `participant` a user id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlCommand {
    /// Drop (or stop dropping) one kind of a participant's media.
    Mute { room: String, participant: String, kind: MediaKind, muted: bool },
    /// Close the participant's session(s).
    Kick { room: String, participant: String },
    /// Close every session of the room.
    CloseRoom { room: String },
    /// Replace what the participant may publish and receive.
    Perms { room: String, participant: String, perms: MediaPerms },
}

/// Delays before the second and the third try of a control command whose try failed transiently
/// ([`ControlFailure::is_transient`]): a node that restarts or is overloaded for a moment still gets the
/// moderator's decision, and a node that stays down holds the room's IO for only a few seconds.
pub const CONTROL_RETRY_DELAYS_MS: [u64; 2] = [250, 1_000];

/// Why a control command did not take effect on its node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlFailure {
    /// The call could not be made here (signing, building the request): trying again changes nothing.
    #[error("could not send it: {0}")]
    Local(String),
    /// No answer: the node is down, unreachable or too slow.
    #[error("{0}")]
    Unreachable(String),
    /// The node answered with an error status.
    #[error("node answered HTTP {status}: {body}{hint}", hint = refusal_hint(*status))]
    Refused { status: u16, body: String },
}

impl ControlFailure {
    /// Whether another try may succeed: no answer, `429`, or a `5xx` (the node's loop overloaded, a proxy in
    /// front of a restarting node). A `4xx` refusal (a wrong secret or clock, a command the node does not know)
    /// is answered the same way again.
    pub fn is_transient(&self) -> bool {
        match self {
            ControlFailure::Local(_) => false,
            ControlFailure::Unreachable(_) => true,
            ControlFailure::Refused { status, .. } => *status == 429 || *status >= 500,
        }
    }
}

fn refusal_hint(status: u16) -> &'static str {
    match status {
        401 => " (is NODE_SECRET the same on the edge and the node? is the node's clock in sync, NTP?)",
        _ => "",
    }
}

/// Reply to a control command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    /// Sessions the command touched.
    pub sessions: u32,
}

/// A simulcast quality level, lowest first: what a subscriber asks the node for, and the caps the edge puts in
/// media tokens. With three layers `low`, `medium` and `high` pick the lowest, middle and highest; with two,
/// `low` and `medium` pick the lower one; with one, every level picks it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Low,
    Medium,
    #[default]
    High,
}

impl Quality {
    /// The level's name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Quality::Low => "low",
            Quality::Medium => "medium",
            Quality::High => "high",
        }
    }

    /// Parses `low`, `medium` or `high`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "low" => Some(Quality::Low),
            "medium" => Some(Quality::Medium),
            "high" => Some(Quality::High),
            _ => None,
        }
    }
}

/// Limits a media node enforces for one participant, carried in its media token
/// ([`crate::auth::MediaClaims::caps`]). Every absent field means "no limit".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MediaCaps {
    /// The highest simulcast layer of the participant's camera and screen share that the node forwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_quality: Option<Quality>,
    /// Bitrate ceiling in kbit/s for each camera or screen-share track the participant publishes: the node asks
    /// the publisher to stay below it (REMB) and does not forward simulcast layers measured above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_kbps: Option<u32>,
    /// The highest layer the participant receives, whatever quality it asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_quality: Option<Quality>,
}

impl MediaCaps {
    /// Suggested caps per role: teachers and admins are not limited; students publish at most the `medium`
    /// layer and 800 kbit/s per video track.
    pub const fn for_role(role: Role) -> Self {
        match role {
            Role::Student => {
                MediaCaps { publish_quality: Some(Quality::Medium), publish_kbps: Some(800), receive_quality: None }
            }
            Role::Teacher | Role::Admin => {
                MediaCaps { publish_quality: None, publish_kbps: None, receive_quality: None }
            }
        }
    }

    /// Whether no field limits anything.
    pub const fn is_unlimited(&self) -> bool {
        self.publish_quality.is_none() && self.publish_kbps.is_none() && self.receive_quality.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_another_try_may_mend_are_retried() {
        let refused = |status| ControlFailure::Refused { status, body: String::new() };
        assert!(ControlFailure::Unreachable("connection refused".into()).is_transient());
        assert!(refused(503).is_transient() && refused(500).is_transient() && refused(429).is_transient());
        assert!(!refused(401).is_transient() && !refused(400).is_transient() && !refused(403).is_transient());
        assert!(!ControlFailure::Local("no secret".into()).is_transient());
        assert!(refused(401).to_string().contains("NODE_SECRET"), "{}", refused(401));
    }

    #[test]
    fn quality_is_ordered_and_snake_case() {
        assert!(Quality::Low < Quality::Medium && Quality::Medium < Quality::High);
        assert_eq!(serde_json::to_string(&Quality::Medium).unwrap(), r#""medium""#);
        assert_eq!(Quality::parse("low"), Some(Quality::Low));
        assert_eq!(Quality::parse("ultra"), None);
    }

    #[test]
    fn caps_are_optional_in_json() {
        assert_eq!(serde_json::from_str::<MediaCaps>("{}").unwrap(), MediaCaps::default());
        assert_eq!(serde_json::to_string(&MediaCaps::default()).unwrap(), "{}");
        let student = MediaCaps::for_role(Role::Student);
        assert_eq!(serde_json::to_string(&student).unwrap(), r#"{"publish_quality":"medium","publish_kbps":800}"#);
        assert!(MediaCaps::for_role(Role::Teacher).is_unlimited());
    }
}
