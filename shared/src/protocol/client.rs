//! Frames from clients to the room: one JSON object per text frame, `{"type": ..., "rid"?: ..., ...}`.
//!
//! Parsing never panics and never closes the connection: anything malformed becomes a [`FrameError`] that
//! the room answers with a `bad_request` error frame, echoing the `rid` when one could be read.

use super::codes::{ApiError, ErrorCode};
use super::model::{MediaKind, PermsPatch, Role, Status};
use crate::ids::UserId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The longest `rid` the contract accepts, in characters.
pub const MAX_RID_CHARS: usize = 64;

/// Everything a client can ask of a room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClientRequest {
    /// Post a chat message → `ack {seq, id}` and `chat.message` to the room.
    #[serde(rename = "chat.send")]
    ChatSend {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<String>,
    },
    /// Edit one of your messages (moderators: any) → `chat.edited`.
    #[serde(rename = "chat.edit")]
    ChatEdit { id: String, text: String },
    /// Delete one of your messages (moderators: any) → `chat.deleted`.
    #[serde(rename = "chat.delete")]
    ChatDelete { id: String },
    /// Report the highest `seq` you have read → ephemeral `read {id, seq}`.
    #[serde(rename = "chat.read")]
    ChatRead { seq: u64 },
    /// Start or refresh (`true`) or stop (`false`) typing → ephemeral `typing`.
    #[serde(rename = "typing")]
    Typing { active: bool },
    /// Set your presence status → ephemeral `presence`.
    #[serde(rename = "presence")]
    Presence { status: Status },
    /// Raise or lower your hand → `participant.updated`.
    #[serde(rename = "hand")]
    Hand { raised: bool },
    /// Send a reaction → ephemeral `reaction`.
    #[serde(rename = "reaction")]
    Reaction { emoji: String },
    /// Move your cursor → ephemeral, throttled `cursor`.
    #[serde(rename = "cursor")]
    Cursor { line: u32, column: u32 },
    /// Page through chat history → `history {messages, has_more}`.
    #[serde(rename = "history")]
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Ask for a media node → `media.assigned {node, token}`.
    #[serde(rename = "media.join")]
    MediaJoin {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
    },
    /// Report what you publish → `participant.updated`.
    #[serde(rename = "media.state")]
    MediaState { audio: bool, video: bool, screen: bool },
    /// Replace the connection's token before it expires → `ack {exp}`.
    #[serde(rename = "auth.refresh")]
    AuthRefresh { token: String },
    /// Moderators: wipe the room's log and history, start a new epoch, close everyone with 4004.
    #[serde(rename = "room.clear")]
    RoomClear,
    /// Moderators: remove a participant (close 4003) and keep it out for a while.
    #[serde(rename = "participant.kick")]
    ParticipantKick { id: UserId },
    /// Moderators: change a participant's role and/or permissions.
    #[serde(rename = "participant.update")]
    ParticipantUpdate {
        id: UserId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<Role>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        perms: Option<PermsPatch>,
    },
    /// Moderators: mute (or with `muted: false`, unmute) one media kind of a participant.
    #[serde(rename = "participant.mute")]
    ParticipantMute {
        id: UserId,
        kind: MediaKind,
        #[serde(default = "yes")]
        muted: bool,
    },
}

fn yes() -> bool {
    true
}

impl ClientRequest {
    /// The frame's `type` on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientRequest::ChatSend { .. } => "chat.send",
            ClientRequest::ChatEdit { .. } => "chat.edit",
            ClientRequest::ChatDelete { .. } => "chat.delete",
            ClientRequest::ChatRead { .. } => "chat.read",
            ClientRequest::Typing { .. } => "typing",
            ClientRequest::Presence { .. } => "presence",
            ClientRequest::Hand { .. } => "hand",
            ClientRequest::Reaction { .. } => "reaction",
            ClientRequest::Cursor { .. } => "cursor",
            ClientRequest::History { .. } => "history",
            ClientRequest::MediaJoin { .. } => "media.join",
            ClientRequest::MediaState { .. } => "media.state",
            ClientRequest::AuthRefresh { .. } => "auth.refresh",
            ClientRequest::RoomClear => "room.clear",
            ClientRequest::ParticipantKick { .. } => "participant.kick",
            ClientRequest::ParticipantUpdate { .. } => "participant.update",
            ClientRequest::ParticipantMute { .. } => "participant.mute",
        }
    }
}

/// A parsed client frame: the request and its optional request id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFrame {
    pub rid: Option<String>,
    pub request: ClientRequest,
}

impl ClientFrame {
    /// A frame with a request id.
    pub fn with_rid(rid: impl Into<String>, request: ClientRequest) -> Self {
        ClientFrame { rid: Some(rid.into()), request }
    }

    /// The frame as JSON text, `rid` included (used by clients and tests).
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(&self.request).unwrap_or(Value::Null);
        if let (Value::Object(map), Some(rid)) = (&mut value, &self.rid) {
            map.insert("rid".to_owned(), Value::String(rid.clone()));
        }
        value.to_string()
    }
}

/// Why a frame could not be parsed. `rid` is the request id when it could be read, to echo in the error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct FrameError {
    pub rid: Option<String>,
    pub error: ApiError,
}

fn bad(rid: Option<String>, message: impl Into<String>) -> FrameError {
    FrameError { rid, error: ApiError::new(ErrorCode::BadRequest, message) }
}

/// Parses one client text frame.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| bad(None, format!("frame is not valid JSON ({e}); send one JSON object per text frame")))?;
    let Value::Object(map) = value else {
        return Err(bad(None, "frame must be a JSON object with a \"type\" field"));
    };
    let rid = read_rid(&map)?;
    let kind = match map.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => return Err(bad(rid, "\"type\" must be a string")),
        None => return Err(bad(rid, "frame has no \"type\" field")),
    };
    match ClientRequest::deserialize(Value::Object(map)) {
        Ok(request) => Ok(ClientFrame { rid, request }),
        Err(e) => {
            let msg = e.to_string();
            if msg.starts_with("unknown variant") {
                Err(bad(rid, format!("unknown frame type \"{kind}\"")))
            } else {
                Err(bad(rid, format!("invalid \"{kind}\" frame: {msg}")))
            }
        }
    }
}

/// The `rid` of a frame refused before it is parsed (too large, over the rate limit), so that the refusal
/// answers the request it refuses. Reads nothing else of the frame; `None` when the frame is not a JSON
/// object or its `rid` is missing or not a valid one.
pub fn peek_rid(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct RidOnly {
        rid: Option<String>,
    }
    // A derived struct would also read a JSON array (`["r1"]`) by position.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let rid = serde_json::from_str::<RidOnly>(text).ok()?.rid?;
    (!rid.is_empty() && rid.chars().count() <= MAX_RID_CHARS).then_some(rid)
}

fn read_rid(map: &Map<String, Value>) -> Result<Option<String>, FrameError> {
    match map.get("rid") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(rid)) if rid.is_empty() => Err(bad(None, "\"rid\" must not be empty")),
        Some(Value::String(rid)) if rid.chars().count() > MAX_RID_CHARS => {
            Err(bad(None, format!("\"rid\" is longer than {MAX_RID_CHARS} characters")))
        }
        Some(Value::String(rid)) => Ok(Some(rid.clone())),
        Some(_) => Err(bad(None, "\"rid\" must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_chat_send_with_rid() {
        let frame = parse_client_frame(r#"{"type":"chat.send","rid":"r1","text":"hi","reply_to":"m1"}"#).unwrap();
        assert_eq!(frame.rid.as_deref(), Some("r1"));
        assert_eq!(frame.request, ClientRequest::ChatSend { text: "hi".into(), reply_to: Some("m1".into()) });
    }

    #[test]
    fn unit_and_defaulted_requests_parse() {
        assert_eq!(parse_client_frame(r#"{"type":"room.clear"}"#).unwrap().request, ClientRequest::RoomClear);
        let mute = parse_client_frame(r#"{"type":"participant.mute","id":"u1","kind":"audio"}"#).unwrap();
        assert!(matches!(mute.request, ClientRequest::ParticipantMute { muted: true, .. }));
    }

    #[test]
    fn malformed_frames_are_bad_requests_that_keep_the_rid() {
        let err = parse_client_frame("{nope").unwrap_err();
        assert_eq!(err.error.code, ErrorCode::BadRequest);
        assert_eq!(err.rid, None);

        let err = parse_client_frame(r#"{"type":"warp.drive","rid":"x"}"#).unwrap_err();
        assert_eq!(err.rid.as_deref(), Some("x"));
        assert!(err.error.message.contains("unknown frame type \"warp.drive\""), "{}", err.error.message);

        let err = parse_client_frame(r#"{"type":"chat.send","rid":"y"}"#).unwrap_err();
        assert_eq!(err.rid.as_deref(), Some("y"));
        assert!(err.error.message.contains("missing field `text`"), "{}", err.error.message);

        assert!(parse_client_frame("[1,2]").is_err());
        assert!(parse_client_frame(r#"{"type":7}"#).is_err());
        assert!(parse_client_frame(r#"{"rid":"z"}"#).is_err());
    }

    #[test]
    fn rids_are_bounded() {
        let long = "r".repeat(MAX_RID_CHARS + 1);
        let err = parse_client_frame(&format!(r#"{{"type":"typing","active":true,"rid":"{long}"}}"#)).unwrap_err();
        assert!(err.error.message.contains("longer than 64"));
        assert!(parse_client_frame(r#"{"type":"typing","active":true,"rid":5}"#).is_err());
        assert!(parse_client_frame(r#"{"type":"typing","active":true,"rid":""}"#).is_err());
    }

    #[test]
    fn a_refused_frame_still_names_its_rid() {
        assert_eq!(peek_rid(r#"{"type":"chat.send","rid":"r7","text":"hi"}"#).as_deref(), Some("r7"));
        assert_eq!(peek_rid(r#"{"text":"x","rid":"late"}"#).as_deref(), Some("late"), "anywhere in the object");
        assert_eq!(peek_rid(r#"{"type":"typing","active":true}"#), None);
        assert_eq!(peek_rid(r#"{"rid":5}"#), None);
        assert_eq!(peek_rid(r#"{"rid":""}"#), None);
        assert_eq!(peek_rid(&format!(r#"{{"rid":"{}"}}"#, "r".repeat(MAX_RID_CHARS + 1))), None);
        assert_eq!(peek_rid("not json"), None);
        assert_eq!(peek_rid(r#"["rid"]"#), None);
    }

    #[test]
    fn frames_round_trip_through_to_json() {
        let frame = ClientFrame::with_rid("a", ClientRequest::Cursor { line: 3, column: 9 });
        assert_eq!(frame.to_json(), r#"{"column":9,"line":3,"rid":"a","type":"cursor"}"#);
        assert_eq!(parse_client_frame(&frame.to_json()).unwrap(), frame);
    }
}
