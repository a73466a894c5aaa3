//! The contract between the edge and media nodes: heartbeats (node → edge) and control (edge → node).
//!
//! Both directions authenticate with HS256 JWTs signed with `NODE_SECRET` ([`crate::auth::ServiceClaims`]):
//! a node's heartbeat token has `sub` = its node id; the edge's control token has `sub` = [`EDGE_SUBJECT`].
//! Clients reach a node with a media token ([`crate::auth::MediaClaims`]) that the edge signs with the same
//! secret.

use crate::auth::MediaPerms;
use crate::protocol::MediaKind;
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

/// Reply to a control command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    /// Sessions the command touched.
    pub sessions: u32,
}
