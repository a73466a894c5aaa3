//! The room's durable state, behind a synchronous port.
//!
//! A Durable Object's SQLite storage is synchronous and transactional within one event, so the room core
//! calls it directly through [`RoomStore`] instead of round-tripping effects. `edge` implements it on the DO's
//! SQLite; [`MemoryStore`] implements it for native tests, and survives a dropped [`Room`](super::Room) the way
//! SQLite survives hibernation.

use crate::ids::UserId;
use crate::protocol::{ChatMessage, MediaFlags, NodeInfo, Participant, PermsPatch, Role};
use crate::room::config::RoomSettings;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// A storage failure, with the backend's description.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("room storage failed: {0}")]
pub struct StoreError(pub String);

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// The room's scalar state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// `{tenant}/{room}`, for frames and logs.
    pub address: String,
    pub epoch: String,
    /// The latest `seq` handed out in this epoch.
    pub seq: u64,
    /// The next connection number.
    pub next_conn: u64,
    /// Since when nobody has been connected (drives idle-room cleanup).
    pub empty_since: Option<Timestamp>,
    pub settings: RoomSettings,
    /// The media node the room is placed on (as last told by the registry).
    #[serde(default)]
    pub media: Option<NodeInfo>,
    /// The latest end of a ban or abuse cooldown the room has imposed: an empty room's idle wipe waits for it,
    /// so that a ban longer than the idle period is not ended by wiping the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bans_until: Option<Timestamp>,
    /// Participants who left while holding a media token, and when their media is ended on the node unless
    /// they are back by then (stored, so that the deadline outlives a hibernation).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub media_leavers: BTreeMap<UserId, Timestamp>,
}

/// What a participant's token granted: kept so moderation changes can be recomputed on top of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub role: Role,
    pub perms: PermsPatch,
}

/// A participant as stored: the public object plus what the room needs to rebuild its deadlines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantRecord {
    pub participant: Participant,
    /// From the participant's latest connection's token.
    pub grant: Grant,
    /// When `typing` expires, if typing.
    pub typing_until: Option<Timestamp>,
    /// The server set `idle` for inactivity (activity turns it back to `active`).
    pub auto_idle: bool,
    /// The node of the media token the participant was last handed in this stay (none yet: `None`). Its media
    /// may outlive its connections, so its leaving starts
    /// [`crate::room::config::Limits::media_leave_grace_ms`]; and asking again for the same node is not another
    /// session for the registry to count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_node: Option<String>,
}

/// A moderator's decisions about a user, kept while the room lives (also across the user's reconnects).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModerationRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default)]
    pub perms: PermsPatch,
    #[serde(default)]
    pub muted: MediaFlags,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banned_until: Option<Timestamp>,
    /// Cut for abuse (4008/4009): reconnects are refused until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_until: Option<Timestamp>,
    /// The highest role among the moderators whose role, permission and mute decisions are in force here. A
    /// moderator below it may add to them but not lift them: a teacher cannot unmute a teacher an admin muted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Role>,
}

impl ModerationRecord {
    /// Whether a decision that could be lifted is in force on a participant whose token grants `granted`: a
    /// demotion below it, a permission taken away, a mute (bans and cooldowns aside; a promotion or a
    /// permission granted back restricts nothing).
    pub fn restricts(&self, granted: Role) -> bool {
        let p = &self.perms;
        let taken = [p.chat, p.stream, p.screen_share, p.moderate].contains(&Some(false));
        self.role.is_some_and(|role| role < granted) || taken || self.muted != MediaFlags::default()
    }

    /// Records that `role` made a decision here (on a participant whose token grants `granted`); forgets the
    /// decider once nothing is restricted any more.
    pub fn decided(&mut self, role: Role, granted: Role) {
        self.decided_by = self.restricts(granted).then(|| self.decided_by.map_or(role, |before| before.max(role)));
    }
}

/// The room's durable state. Every method is one synchronous storage operation.
pub trait RoomStore {
    fn load_meta(&self) -> StoreResult<Option<Meta>>;
    fn save_meta(&mut self, meta: &Meta) -> StoreResult<()>;
    /// Forgets the meta row (an idle room without settings leaves no storage behind).
    fn delete_meta(&mut self) -> StoreResult<()>;

    /// Appends a logged event, as the exact JSON text sent to clients.
    fn append_event(&mut self, seq: u64, frame: &str) -> StoreResult<()>;
    /// Every logged event with `seq > since`, oldest first.
    fn events_after(&self, since: u64) -> StoreResult<Vec<String>>;
    /// The oldest `seq` still in the log.
    fn first_event_seq(&self) -> StoreResult<Option<u64>>;
    /// Drops logged events with `seq < below`.
    fn trim_events(&mut self, below: u64) -> StoreResult<()>;

    /// Inserts or replaces a message (by id).
    fn put_message(&mut self, message: &ChatMessage) -> StoreResult<()>;
    fn message(&self, id: &str) -> StoreResult<Option<ChatMessage>>;
    fn delete_message(&mut self, id: &str) -> StoreResult<()>;
    /// The newest `limit` messages with `seq < before` (all if `None`), oldest first.
    fn messages_before(&self, before: Option<u64>, limit: u32) -> StoreResult<Vec<ChatMessage>>;
    /// Keeps only the newest `keep` messages.
    fn trim_messages(&mut self, keep: u32) -> StoreResult<()>;

    /// The stored reply to `(user, rid)`.
    fn reply(&self, user: &UserId, rid: &str) -> StoreResult<Option<String>>;
    fn put_reply(&mut self, user: &UserId, rid: &str, reply: &str) -> StoreResult<()>;
    /// Keeps only the newest `keep` replies.
    fn trim_replies(&mut self, keep: u32) -> StoreResult<()>;

    fn participants(&self) -> StoreResult<Vec<ParticipantRecord>>;
    fn put_participant(&mut self, record: &ParticipantRecord) -> StoreResult<()>;
    fn remove_participant(&mut self, id: &UserId) -> StoreResult<()>;

    fn moderation(&self, user: &UserId) -> StoreResult<Option<ModerationRecord>>;
    fn put_moderation(&mut self, user: &UserId, record: &ModerationRecord) -> StoreResult<()>;

    /// Deletes everything but the meta row: log, messages, replies, participants, and the moderation
    /// decisions unless `keep_moderation`.
    fn wipe(&mut self, keep_moderation: bool) -> StoreResult<()>;
}

/// An in-memory [`RoomStore`] for tests and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    meta: Option<Meta>,
    events: BTreeMap<u64, String>,
    messages: BTreeMap<u64, ChatMessage>,
    message_seqs: BTreeMap<String, u64>,
    replies: BTreeMap<(UserId, String), String>,
    reply_order: VecDeque<(UserId, String)>,
    participants: BTreeMap<UserId, ParticipantRecord>,
    moderation: BTreeMap<UserId, ModerationRecord>,
    /// Counts writes, for tests that check what an operation costs.
    pub writes: u64,
    /// Makes every write fail (tests of the storage-failure paths).
    pub fail_writes: bool,
    /// Makes every write fail once this many more have succeeded (a failure in the middle of an operation).
    pub fail_after_writes: Option<u64>,
}

impl MemoryStore {
    /// Counts a write, or fails it when [`MemoryStore::fail_writes`] is set.
    fn write(&mut self) -> StoreResult<()> {
        if self.fail_writes {
            return Err(StoreError("writes fail (MemoryStore::fail_writes)".into()));
        }
        if let Some(left) = self.fail_after_writes.as_mut() {
            if *left == 0 {
                return Err(StoreError("writes fail (MemoryStore::fail_after_writes)".into()));
            }
            *left -= 1;
        }
        self.writes += 1;
        Ok(())
    }

    /// How many request replies are stored (tests check that the table stays bounded).
    pub fn reply_count(&self) -> usize {
        self.replies.len()
    }
}

impl RoomStore for MemoryStore {
    fn load_meta(&self) -> StoreResult<Option<Meta>> {
        Ok(self.meta.clone())
    }
    fn save_meta(&mut self, meta: &Meta) -> StoreResult<()> {
        self.write()?;
        self.meta = Some(meta.clone());
        Ok(())
    }
    fn delete_meta(&mut self) -> StoreResult<()> {
        self.write()?;
        self.meta = None;
        Ok(())
    }
    fn append_event(&mut self, seq: u64, frame: &str) -> StoreResult<()> {
        self.write()?;
        self.events.insert(seq, frame.to_owned());
        Ok(())
    }
    fn events_after(&self, since: u64) -> StoreResult<Vec<String>> {
        Ok(self.events.range(since.saturating_add(1)..).map(|(_, f)| f.clone()).collect())
    }
    fn first_event_seq(&self) -> StoreResult<Option<u64>> {
        Ok(self.events.keys().next().copied())
    }
    fn trim_events(&mut self, below: u64) -> StoreResult<()> {
        self.events = self.events.split_off(&below);
        Ok(())
    }
    fn put_message(&mut self, message: &ChatMessage) -> StoreResult<()> {
        self.write()?;
        self.message_seqs.insert(message.id.clone(), message.seq);
        self.messages.insert(message.seq, message.clone());
        Ok(())
    }
    fn message(&self, id: &str) -> StoreResult<Option<ChatMessage>> {
        Ok(self.message_seqs.get(id).and_then(|seq| self.messages.get(seq)).cloned())
    }
    fn delete_message(&mut self, id: &str) -> StoreResult<()> {
        self.write()?;
        if let Some(seq) = self.message_seqs.remove(id) {
            self.messages.remove(&seq);
        }
        Ok(())
    }
    fn messages_before(&self, before: Option<u64>, limit: u32) -> StoreResult<Vec<ChatMessage>> {
        let end = before.unwrap_or(u64::MAX);
        let mut page: Vec<ChatMessage> =
            self.messages.range(..end).rev().take(limit as usize).map(|(_, m)| m.clone()).collect();
        page.reverse();
        Ok(page)
    }
    fn trim_messages(&mut self, keep: u32) -> StoreResult<()> {
        while self.messages.len() > keep as usize {
            if let Some((_, m)) = self.messages.pop_first() {
                self.message_seqs.remove(&m.id);
            }
        }
        Ok(())
    }
    fn reply(&self, user: &UserId, rid: &str) -> StoreResult<Option<String>> {
        Ok(self.replies.get(&(user.clone(), rid.to_owned())).cloned())
    }
    fn put_reply(&mut self, user: &UserId, rid: &str, reply: &str) -> StoreResult<()> {
        self.write()?;
        let key = (user.clone(), rid.to_owned());
        if self.replies.insert(key.clone(), reply.to_owned()).is_none() {
            self.reply_order.push_back(key);
        }
        Ok(())
    }
    fn trim_replies(&mut self, keep: u32) -> StoreResult<()> {
        while self.reply_order.len() > keep as usize {
            if let Some(key) = self.reply_order.pop_front() {
                self.replies.remove(&key);
            }
        }
        Ok(())
    }
    fn participants(&self) -> StoreResult<Vec<ParticipantRecord>> {
        Ok(self.participants.values().cloned().collect())
    }
    fn put_participant(&mut self, record: &ParticipantRecord) -> StoreResult<()> {
        self.write()?;
        self.participants.insert(record.participant.id.clone(), record.clone());
        Ok(())
    }
    fn remove_participant(&mut self, id: &UserId) -> StoreResult<()> {
        self.write()?;
        self.participants.remove(id);
        Ok(())
    }
    fn moderation(&self, user: &UserId) -> StoreResult<Option<ModerationRecord>> {
        Ok(self.moderation.get(user).cloned())
    }
    fn put_moderation(&mut self, user: &UserId, record: &ModerationRecord) -> StoreResult<()> {
        self.write()?;
        self.moderation.insert(user.clone(), record.clone());
        Ok(())
    }
    fn wipe(&mut self, keep_moderation: bool) -> StoreResult<()> {
        self.write()?;
        self.events.clear();
        self.messages.clear();
        self.message_seqs.clear();
        self.replies.clear();
        self.reply_order.clear();
        self.participants.clear();
        if !keep_moderation {
            self.moderation.clear();
        }
        Ok(())
    }
}
