//! The objects frames carry: participants, chat messages, roles and permissions.

use crate::ids::UserId;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// A participant's role. Ordered by authority: `Student < Teacher < Admin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    Student,
    Teacher,
    Admin,
}

impl Role {
    /// The permissions a role has when nothing overrides them.
    pub const fn default_perms(self) -> Perms {
        match self {
            Role::Student => Perms { chat: true, stream: true, screen_share: false, moderate: false },
            Role::Teacher | Role::Admin => Perms { chat: true, stream: true, screen_share: true, moderate: true },
        }
    }

    /// The role's name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Student => "student",
            Role::Teacher => "teacher",
            Role::Admin => "admin",
        }
    }
}

/// What a participant may do. Enforced by the edge (chat, moderation) and by the media node (media).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Perms {
    pub chat: bool,
    pub stream: bool,
    pub screen_share: bool,
    pub moderate: bool,
}

impl Perms {
    /// These permissions with every field that `patch` sets replaced.
    pub fn with(self, patch: &PermsPatch) -> Perms {
        Perms {
            chat: patch.chat.unwrap_or(self.chat),
            stream: patch.stream.unwrap_or(self.stream),
            screen_share: patch.screen_share.unwrap_or(self.screen_share),
            moderate: patch.moderate.unwrap_or(self.moderate),
        }
    }
}

/// A partial set of permissions: the token's `perms` claim and `participant.update`'s `perms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct PermsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen_share: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderate: Option<bool>,
}

impl PermsPatch {
    /// `later` applied on top of `self`.
    pub fn merged(self, later: &PermsPatch) -> PermsPatch {
        PermsPatch {
            chat: later.chat.or(self.chat),
            stream: later.stream.or(self.stream),
            screen_share: later.screen_share.or(self.screen_share),
            moderate: later.moderate.or(self.moderate),
        }
    }
}

/// Presence status. `idle` is also set by the server after a period without activity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Active,
    Idle,
    Away,
}

/// The three media kinds a participant can publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Audio,
    Video,
    Screen,
}

impl MediaKind {
    /// The kind's name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            MediaKind::Screen => "screen",
        }
    }
}

/// One flag per media kind: what a participant publishes (`media`) or what a moderator muted (`muted`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct MediaFlags {
    pub audio: bool,
    pub video: bool,
    pub screen: bool,
}

impl MediaFlags {
    /// The flag of `kind`.
    pub const fn get(self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Audio => self.audio,
            MediaKind::Video => self.video,
            MediaKind::Screen => self.screen,
        }
    }

    /// Sets the flag of `kind`.
    pub fn set(&mut self, kind: MediaKind, on: bool) {
        match kind {
            MediaKind::Audio => self.audio = on,
            MediaKind::Video => self.video = on,
            MediaKind::Screen => self.screen = on,
        }
    }
}

/// A participant as every frame shows it. One per user, however many connections the user has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub id: UserId,
    pub name: String,
    pub role: Role,
    pub joined_at: Timestamp,
    pub perms: Perms,
    pub status: Status,
    pub last_seen: Timestamp,
    pub hand_raised: bool,
    /// What the participant says it publishes (`media.state`).
    pub media: MediaFlags,
    /// Kinds a moderator muted: the participant may not publish them (and the media node drops them).
    pub muted: MediaFlags,
    /// The highest chat `seq` this participant reported as read (`chat.read`), 0 if none.
    pub last_read: u64,
}

/// The author of a chat message, as carried by the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub id: UserId,
    pub name: String,
    pub role: Role,
}

/// A chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub id: String,
    pub seq: u64,
    pub from: Sender,
    pub text: String,
    pub reply_to: Option<String>,
    pub ts: Timestamp,
    pub edited_at: Option<Timestamp>,
}

/// Why a participant left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// Its last connection closed.
    Left,
    /// A moderator removed it.
    Kicked,
    /// Its token expired without `auth.refresh`.
    Expired,
    /// The room found it without a live connection (after a restart of the runtime).
    Disconnected,
    /// It was cut for abuse (rate limits, oversized frames).
    Policy,
}

/// The media node a room's media runs on, as handed to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub region: String,
    pub url: String,
}
