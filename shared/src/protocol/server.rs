//! Frames from the room to clients. Logged events carry `seq` and `ts`; ephemeral ones do not.

use super::codes::ErrorCode;
use super::model::{ChatMessage, LeaveReason, NodeInfo, Participant, Status};
use crate::ids::UserId;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The limits and settings a client should know, sent in `welcome.config`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    /// Most participants the room admits (moderators may exceed it).
    pub capacity: u32,
    /// Largest accepted text frame, in bytes.
    pub max_frame_bytes: u32,
    /// Longest chat message, in characters.
    pub max_chat_chars: u32,
    /// Longest `rid`, in characters.
    pub max_rid_chars: u32,
    /// Token bucket per connection: burst size and refill per second.
    pub rate_burst: u32,
    pub rate_per_sec: u32,
    /// `typing` expires this long after the last refresh.
    pub typing_ttl_ms: u64,
    /// `cursor` events are forwarded at most once per this interval per participant.
    pub cursor_interval_ms: u64,
    /// A participant without activity for this long is shown `idle`.
    pub idle_after_ms: u64,
    /// How many chat messages the room keeps.
    pub history_limit: u32,
    /// Whether chat messages are kept as history at all.
    pub persist_messages: bool,
    /// Send the text frame `ping` at least this often; the answer is `pong`.
    pub ping_interval_ms: u64,
}

/// The first frame on every connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol: u32,
    pub room: String,
    pub epoch: String,
    /// The room's latest `seq` at the moment of the welcome.
    pub seq: u64,
    /// `true`: the events in `(since, seq]` follow, exactly as first sent. `false`: a fresh snapshot.
    pub resumed: bool,
    pub you: Participant,
    pub participants: Vec<Participant>,
    /// Recent chat history, oldest first (empty when resumed).
    pub history: Vec<ChatMessage>,
    /// Older messages exist (page them with `history {before}`).
    #[serde(default)]
    pub history_more: bool,
    pub config: ClientConfig,
}

/// A successful reply to a request that carried a `rid`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub rid: String,
    /// The `seq` of the logged event the request produced, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The id of the message the request created or changed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `auth.refresh`: the new expiry of the connection, in seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

/// A failed request or a refused frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    pub code: ErrorCode,
    pub message: String,
}

/// Everything the room sends to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerFrame {
    #[serde(rename = "welcome")]
    Welcome(Box<Welcome>),
    #[serde(rename = "ack")]
    Ack(Ack),
    #[serde(rename = "error")]
    Error(ErrorFrame),

    // Logged events: `seq` strictly increasing within an epoch, replayed on resume.
    #[serde(rename = "participant.joined")]
    ParticipantJoined { seq: u64, ts: Timestamp, participant: Participant },
    #[serde(rename = "participant.left")]
    ParticipantLeft { seq: u64, ts: Timestamp, id: UserId, reason: LeaveReason },
    #[serde(rename = "participant.updated")]
    ParticipantUpdated { seq: u64, ts: Timestamp, participant: Participant },
    #[serde(rename = "chat.message")]
    ChatMessage { seq: u64, ts: Timestamp, message: ChatMessage },
    #[serde(rename = "chat.edited")]
    ChatEdited { seq: u64, ts: Timestamp, message: ChatMessage },
    #[serde(rename = "chat.deleted")]
    ChatDeleted { seq: u64, ts: Timestamp, id: String },

    // Ephemeral events: no `seq`, never replayed.
    #[serde(rename = "typing")]
    Typing { id: UserId, active: bool },
    #[serde(rename = "presence")]
    Presence { id: UserId, status: Status, last_seen: Timestamp },
    #[serde(rename = "reaction")]
    Reaction { id: UserId, emoji: String },
    #[serde(rename = "cursor")]
    Cursor { id: UserId, line: u32, column: u32 },
    #[serde(rename = "read")]
    Read { id: UserId, seq: u64 },

    // Replies and notices.
    #[serde(rename = "history")]
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<String>,
        messages: Vec<ChatMessage>,
        has_more: bool,
    },
    #[serde(rename = "media.assigned")]
    MediaAssigned {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<String>,
        node: NodeInfo,
        token: String,
        /// Expiry of the media token, seconds since the epoch.
        expires_at: u64,
    },
    /// The room's media moved to another node (its node was lost or drained): ask `media.join` again.
    #[serde(rename = "media.moved")]
    MediaMoved { reason: String },
    /// The connection's token expires at `exp` (seconds): send `auth.refresh` before then or be closed 4001.
    #[serde(rename = "auth.expiring")]
    AuthExpiring { exp: u64 },
    /// The room was cleared; the connection closes with 4004. Reconnect for the new `epoch`.
    #[serde(rename = "room.cleared")]
    RoomCleared { epoch: String },
}

impl ServerFrame {
    /// The `seq` of a logged event, `None` for everything else.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ServerFrame::ParticipantJoined { seq, .. }
            | ServerFrame::ParticipantLeft { seq, .. }
            | ServerFrame::ParticipantUpdated { seq, .. }
            | ServerFrame::ChatMessage { seq, .. }
            | ServerFrame::ChatEdited { seq, .. }
            | ServerFrame::ChatDeleted { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every map key is a string and no custom Serialize can error.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"type":"error","code":"internal","message":"could not encode a frame: {e}"}}"#)
        })
    }
}
