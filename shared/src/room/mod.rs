//! The room: a deterministic state machine for one room of one tenant.
//!
//! # Run loop
//! The adapter (the Room Durable Object, or a test harness) owns the sockets, the clock and the alarm. For
//! every event it calls one entry point with the current time:
//!
//! | event                          | entry point                      |
//! |--------------------------------|----------------------------------|
//! | upgrade request (before 101)   | [`Room::connect`] → accept or HTTP error |
//! | text frame from a connection   | [`Room::receive`]                |
//! | connection closed or errored   | [`Room::disconnect`]             |
//! | alarm                          | [`Room::tick`]                   |
//! | admin HTTP request             | [`Room::info`], [`Room::clear`], [`Room::kick`], [`Room::announce`], … |
//!
//! then drains [`Room::poll_output`] (send text to connections, close connections, rewrite a connection's
//! attachment) and sets its alarm to [`Room::next_deadline`]. Every entry point first runs the deadlines that
//! are due, so a late alarm changes nothing.
//!
//! # State and hibernation
//! Durable state lives in the [`RoomStore`] (SQLite in the DO), per-connection state in each connection's
//! [`ConnRecord`] (the WebSocket attachment). Memory is a cache: [`Room::restore`] rebuilds an identical room
//! from the store and the live connections' records. Only rate-limit buckets and a pending throttled cursor
//! live in memory alone; both are meaningless after the ≥ 10 s of silence that hibernation needs.
//!
//! # Invariants
//! - A participant exists exactly while at least one of its connections is open.
//! - Logged events get `seq = previous + 1` within an epoch and are sent to every open connection, stored
//!   verbatim, and replayed verbatim on resume.
//! - Nothing is sent to a connection after it was closed or disconnected.
//! - A request with a `rid` that already succeeded for the same user is answered with the stored reply and
//!   has no second effect.

mod admin;
mod coalesce;
use coalesce::Urgency;
pub mod config;
mod handlers;
mod media;
pub mod rate;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod store;
mod timers;

use crate::auth::{Identity, TokenKey};
use crate::ids::{ConnId, RoomId, TenantId, UserId};
use crate::media::ControlCommand;
use crate::placement::{ClientLocation, Geo};
use crate::protocol::{
    close, ApiError, ClientConfig, ErrorCode, ErrorFrame, LeaveReason, MediaFlags, NodeInfo, Participant, Perms,
    PermsPatch, Role, ServerFrame, Status, Welcome, PROTOCOL_VERSION,
};
use crate::time::Timestamp;
use config::{Effective, Limits, RoomSettings};
use rate::{JoinBucket, TokenBucket};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use store::{Grant, Meta, ModerationRecord, ParticipantRecord, RoomStore, StoreError};
use timers::{TimerKey, Timers};

pub use admin::RoomInfo;

/// What the adapter must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `text` to each connection in `to`, in this order relative to other outputs.
    Send { to: Vec<ConnId>, text: Arc<str> },
    /// Close a connection. The room has already forgotten it.
    Close { conn: ConnId, code: u16, reason: String },
    /// Store `record` as the connection's attachment (it changed).
    Attach { record: ConnRecord },
    /// Ask the registry for the room's media node, then call [`Room::media_placed`] with the answer.
    /// `new_session`: the join may add a session the node does not count yet (the registry holds it as
    /// pending until the node's next heartbeat); false for a participant already handed a media token in this
    /// stay, so that asking again and again does not make the node look full.
    PlaceMedia { conn: ConnId, rid: Option<String>, location: ClientLocation, new_session: bool },
    /// Send an edge-signed control command to the room's media node at `node.url`. `decided_at`: the second
    /// to sign as the decision's (the control token's `iat`; the node applies a decision to media tokens
    /// issued in or before it); `None`: when it is sent.
    MediaControl { node: NodeInfo, command: ControlCommand, decided_at: Option<u64> },
    /// The room ended (cleared or wiped): tell the registry to forget its placement.
    ReleaseMedia,
}

/// Per-connection state that must survive hibernation: the WebSocket attachment (well under 16 KiB).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRecord {
    pub conn: ConnId,
    pub user: UserId,
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub perms: crate::protocol::PermsPatch,
    /// Token expiry, seconds since the epoch.
    pub exp: u64,
    /// `auth.expiring` was sent for this `exp`.
    #[serde(default)]
    pub warned: bool,
    pub opened_at: Timestamp,
    /// Where the client connected from (Cloudflare request metadata), for media placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<Geo>,
    /// The client accepts batches (a JSON array of frames in one text frame; `?batch=1`).
    #[serde(default)]
    pub batch: bool,
}

/// The keys a room signs and verifies with.
#[derive(Clone, Debug)]
pub struct RoomKeys {
    /// Verifies user tokens (`auth.refresh`): `JWT_SECRET`.
    pub user: TokenKey,
    /// Signs media tokens: `NODE_SECRET`.
    pub media: TokenKey,
}

/// What the adapter knows of a connecting client besides its token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// Coordinates from the request metadata (media placement).
    pub geo: Option<Geo>,
    /// The client accepts batched frames (`?batch=1`).
    pub batch: bool,
}

/// Where a reconnecting client left off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    pub epoch: String,
    pub since: u64,
}

/// An accepted connection: the adapter accepts the WebSocket, stores `record` as its attachment, then drains
/// the outputs (the `welcome` comes first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    pub conn: ConnId,
    pub record: ConnRecord,
}

#[derive(Debug)]
struct Conn {
    record: ConnRecord,
    bucket: TokenBucket,
    strikes: TokenBucket,
}

/// The emptiest rate and strike buckets among a user's recently closed connections, which every new
/// connection of that user starts from: a client cannot refill its buckets by reconnecting, one socket or
/// several at once. Kept until they have refilled, for at most [`MAX_CARRIED_BUCKETS`] users.
#[derive(Clone, Debug)]
struct CarriedBuckets {
    bucket: TokenBucket,
    strikes: TokenBucket,
}

const MAX_CARRIED_BUCKETS: usize = 4096;

#[derive(Debug, Default)]
struct CursorSlot {
    last_sent: Option<Timestamp>,
    /// The latest throttled position and the connection it came from.
    pending: Option<(ConnId, u32, u32)>,
}

#[derive(Debug)]
struct Member {
    record: ParticipantRecord,
    conns: BTreeSet<ConnId>,
    cursor: CursorSlot,
    /// `media.join`s: each asks the one registry of the deployment, so a participant gets a few in a row and
    /// then one a second (a client asks once per stay, after `media.moved` and when its token runs out).
    media_joins: TokenBucket,
}

/// `media.join`s one participant may send in a row, and how many a second after that.
const MEDIA_JOIN_BURST: u32 = 5;
const MEDIA_JOINS_PER_SEC: u32 = 1;

impl Member {
    fn new(record: ParticipantRecord, conns: BTreeSet<ConnId>, now: Timestamp) -> Self {
        Member {
            record,
            conns,
            cursor: CursorSlot::default(),
            media_joins: TokenBucket::full(MEDIA_JOIN_BURST, MEDIA_JOINS_PER_SEC, now.as_millis()),
        }
    }
}

/// One room's state machine. See the module docs for the run loop.
#[derive(Debug)]
pub struct Room<S: RoomStore> {
    store: S,
    limits: Limits,
    keys: RoomKeys,
    tenant: Option<TenantId>,
    room_id: Option<RoomId>,
    meta: Meta,
    members: BTreeMap<UserId, Member>,
    conns: BTreeMap<ConnId, Conn>,
    timers: Timers,
    outbox: VecDeque<Output>,
    coalescer: coalesce::Coalescer,
    /// The time of the event being handled (entry points set it).
    clock: Timestamp,
    poisoned: bool,
    /// Buckets of recently closed connections, by user ([`CarriedBuckets`]).
    carried: BTreeMap<UserId, CarriedBuckets>,
    /// Connect buckets of users who connected lately, until they refill (at most [`MAX_CARRIED_BUCKETS`]):
    /// a client reconnecting in a loop costs everyone a joined and a left, and itself a welcome, each time.
    joins: BTreeMap<UserId, JoinBucket>,
    /// Replies stored since the room was loaded; every 64th trims the table (requests that log nothing,
    /// such as a `hand` that changes nothing, store replies without moving `seq`).
    replies_stored: u64,
}

/// How soon `frame` must reach the room: membership churn may wait for a lazier flush
/// ([`coalesce::Urgency`]); everything else goes out at the end of its window.
fn urgency(frame: &ServerFrame) -> Urgency {
    match frame {
        ServerFrame::ParticipantJoined { .. }
        | ServerFrame::ParticipantLeft { .. }
        | ServerFrame::Presence { .. }
        | ServerFrame::Read { .. } => Urgency::Lazy,
        _ => Urgency::Prompt,
    }
}

/// Logged events between trims of the log, history and stored replies: a room keeps at most this many
/// beyond each limit for a moment.
const TRIM_EVERY: u64 = 64;

fn internal(e: StoreError) -> ApiError {
    ApiError::new(ErrorCode::Internal, e.to_string())
}

/// `retry_after` of the per-user connection limit: a closed connection frees a slot at once, so a client
/// that closed one may come back after a second (the edge may answer from its refusal memo meanwhile).
pub const CONNECTION_LIMIT_RETRY_S: u64 = 1;

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn to_base36(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        let d = BASE36.get((n % 36) as usize).copied().unwrap_or(b'0');
        digits.push(d);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

fn from_base36(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 36).ok()
}

/// A new epoch for a room at `now`: the time in base 36, strictly after the previous epoch.
fn next_epoch(previous: Option<&str>, now: Timestamp) -> String {
    let mut n = now.as_millis();
    if let Some(prev) = previous.and_then(from_base36) {
        n = n.max(prev.saturating_add(1));
    }
    to_base36(n)
}

/// A role and permissions from a token grant with a moderator's decisions on top. A moderator's demotion
/// (a role below the token's) also sets aside what the token's `perms` grant: they were granted to the higher
/// role, and a teacher demoted to student must not keep the `moderate` their token restated. What the token
/// withholds stays withheld.
fn effective(grant: &Grant, moderation: &ModerationRecord) -> (Role, Perms) {
    match moderation.role {
        Some(role) if role < grant.role => {
            // The token's grants go; its restrictions stay (a demotion is not a way out of them).
            let restrictions = PermsPatch {
                chat: grant.perms.chat.filter(|allowed| !allowed),
                stream: grant.perms.stream.filter(|allowed| !allowed),
                screen_share: grant.perms.screen_share.filter(|allowed| !allowed),
                moderate: grant.perms.moderate.filter(|allowed| !allowed),
            };
            (role, role.default_perms().with(&restrictions).with(&moderation.perms))
        }
        decided => {
            let role = decided.unwrap_or(grant.role);
            (role, role.default_perms().with(&grant.perms).with(&moderation.perms))
        }
    }
}

impl<S: RoomStore> Room<S> {
    /// Builds the room from its store and the records of its live connections (after a cold start or
    /// hibernation). `address` is `{tenant}/{room}`, used when the store is empty. Participants without a live
    /// connection are removed (logged as `participant.left` with reason `disconnected`).
    pub fn restore(
        store: S,
        limits: Limits,
        keys: RoomKeys,
        address: Option<&str>,
        live: Vec<ConnRecord>,
        now: Timestamp,
    ) -> Result<Self, StoreError> {
        let mut store = store;
        let loaded = store.load_meta()?;
        // Whether the room has a meta row (saving one for a room woken without its address would leave a row
        // that names no room).
        let stored = loaded.is_some() || address.is_some();
        let meta = match loaded {
            Some(mut meta) => {
                if let Some(address) = address.filter(|_| meta.address.is_empty()) {
                    meta.address = address.to_owned();
                    store.save_meta(&meta)?;
                }
                meta
            }
            None => {
                let meta = Meta {
                    address: address.unwrap_or_default().to_owned(),
                    epoch: next_epoch(None, now),
                    seq: 0,
                    next_conn: 1,
                    // A new room starts empty: it is cleaned up if nobody comes.
                    empty_since: Some(now),
                    settings: RoomSettings::default(),
                    media: None,
                    bans_until: None,
                    media_leavers: BTreeMap::new(),
                };
                // Stored only with its address: an event without one (an alarm, a registry notice after the
                // room was wiped) must not leave a row that names no room.
                if address.is_some() {
                    store.save_meta(&meta)?;
                }
                meta
            }
        };
        let coalescer = coalesce::Coalescer::new(
            limits.coalesce_ms,
            limits.coalesce_min_conns as usize,
            u64::from(limits.coalesce_frames_per_sec),
            u64::from(limits.coalesce_lazy_frames_per_sec),
        )
        .with_measured_budget(u64::from(limits.coalesce_flush_duty_pct))
        .with_sweep(limits.coalesce_sweep_conns as usize);
        let (tenant, room_id) = match meta.address.split_once('/') {
            Some((t, r)) => (TenantId::parse(t).ok(), RoomId::parse(r).ok()),
            None => (None, None),
        };
        let mut room = Room {
            store,
            limits,
            keys,
            tenant,
            room_id,
            meta,
            members: BTreeMap::new(),
            conns: BTreeMap::new(),
            timers: Timers::default(),
            outbox: VecDeque::new(),
            coalescer,
            clock: now,
            poisoned: false,
            replies_stored: 0,
            carried: BTreeMap::new(),
            joins: BTreeMap::new(),
        };
        for record in room.store.participants()? {
            room.members.insert(record.participant.id.clone(), Member::new(record, BTreeSet::new(), now));
        }
        for record in live {
            room.meta.next_conn = room.meta.next_conn.max(record.conn.0 + 1);
            let conn = record.conn;
            let user = record.user.clone();
            room.schedule_token(&record);
            let c = room.new_conn(record, now);
            room.conns.insert(conn, c);
            match room.members.get_mut(&user) {
                Some(member) => {
                    member.conns.insert(conn);
                }
                None => {
                    // A live connection without a stored participant (its join was never persisted):
                    // close it rather than invent a participant.
                    room.conns.remove(&conn);
                    room.outbox.push_back(Output::Close {
                        conn,
                        code: close::INTERNAL,
                        reason: "room state was lost; reconnect".to_owned(),
                    });
                }
            }
        }
        let orphans: Vec<UserId> =
            room.members.iter().filter(|(_, m)| m.conns.is_empty()).map(|(id, _)| id.clone()).collect();
        for id in orphans {
            room.remove_member(&id, LeaveReason::Disconnected, now).map_err(|e| StoreError(e.message))?;
        }
        // The media graces that ran when the room went to sleep (or that ended meanwhile: due at once).
        let leavers: Vec<(UserId, Timestamp)> = room.meta.media_leavers.iter().map(|(u, t)| (u.clone(), *t)).collect();
        for (user, until) in leavers {
            room.timers.set(TimerKey::MediaLeave(user), until);
        }
        let users: Vec<UserId> = room.members.keys().cloned().collect();
        for id in users {
            room.schedule_member(&id);
        }
        if room.conns.is_empty() {
            let since = match room.meta.empty_since {
                Some(since) => since,
                None => {
                    // The room emptied without a close event (its sockets died with the runtime). Its idle
                    // period starts now and is stored: otherwise every later wake would start it anew and the
                    // room would never be wiped.
                    room.meta.empty_since = Some(now);
                    if stored {
                        room.store.save_meta(&room.meta)?;
                    }
                    now
                }
            };
            room.timers.set(TimerKey::RoomCleanup, since.plus_ms(room.limits.idle_room_ttl_ms));
        }
        Ok(room)
    }

    fn new_conn(&mut self, record: ConnRecord, now: Timestamp) -> Conn {
        if let Some(carried) = self.carried.get(&record.user) {
            let carried = carried.clone();
            return Conn { record, bucket: carried.bucket, strikes: carried.strikes };
        }
        let l = &self.limits;
        Conn {
            record,
            bucket: TokenBucket::full(l.rate_burst, l.rate_per_sec, now.as_millis()),
            strikes: TokenBucket::full(l.abuse_strikes, l.strike_refill_per_sec, now.as_millis()),
        }
    }

    /// Counts a connect of `user` (admission has checked that one is left).
    fn take_join(&mut self, user: &UserId, now: Timestamp) {
        let now = now.as_millis();
        if !self.joins.contains_key(user) && self.joins.len() >= MAX_CARRIED_BUCKETS {
            self.joins.retain(|_, joins| !joins.is_full(now));
            if self.joins.len() >= MAX_CARRIED_BUCKETS {
                self.joins.pop_first();
            }
        }
        let (burst, refill_secs) = (self.limits.join_burst, self.limits.join_refill_secs);
        let joins = self.joins.entry(user.clone()).or_insert_with(|| JoinBucket::full(burst, refill_secs, now));
        joins.try_take(now);
    }

    /// Keeps a closing connection's buckets for its user's next connection, unless they are full anyway.
    fn carry_buckets(&mut self, user: UserId, mut bucket: TokenBucket, mut strikes: TokenBucket, now: Timestamp) {
        let now = now.as_millis();
        if bucket.is_full(now) && strikes.is_full(now) {
            return;
        }
        if let Some(kept) = self.carried.get_mut(&user) {
            // Several connections closed: keep the emptier of each bucket.
            if bucket.level(now) < kept.bucket.level(now) {
                kept.bucket = bucket;
            }
            if strikes.level(now) < kept.strikes.level(now) {
                kept.strikes = strikes;
            }
            return;
        }
        if self.carried.len() >= MAX_CARRIED_BUCKETS {
            self.carried.retain(|_, c| !(c.bucket.is_full(now) && c.strikes.is_full(now)));
            if self.carried.len() >= MAX_CARRIED_BUCKETS {
                self.carried.pop_first();
            }
        }
        self.carried.insert(user, CarriedBuckets { bucket, strikes });
    }

    /// The next output for the adapter, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outbox.pop_front()
    }

    /// When the adapter must call [`Room::tick`] next.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.timers.next()
    }

    /// `true` after a storage failure: the cache may disagree with storage, so the adapter should drop this
    /// room and [`Room::restore`] it on the next event.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Takes `address` (`{tenant}/{room}`) as the room's own if it does not know one yet (it was loaded by an
    /// event that carried none). Cheap when the address is known.
    pub fn adopt_address(&mut self, address: &str) -> Result<(), StoreError> {
        if !self.meta.address.is_empty() || address.is_empty() {
            return Ok(());
        }
        self.meta.address = address.to_owned();
        if let Some((t, r)) = address.split_once('/') {
            self.tenant = TenantId::parse(t).ok();
            self.room_id = RoomId::parse(r).ok();
        }
        self.store.save_meta(&self.meta)
    }

    /// The store (for tests and the adapter's diagnostics).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably (tests inject storage failures through it).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Consumes the room, returning its store (tests use this to simulate hibernation).
    pub fn into_store(self) -> S {
        self.store
    }

    /// The records of every open connection, as the adapter holds them in attachments.
    pub fn conn_records(&self) -> Vec<ConnRecord> {
        self.conns.values().map(|c| c.record.clone()).collect()
    }

    /// The room's `{tenant}/{room}` address.
    pub fn address(&self) -> &str {
        &self.meta.address
    }

    /// The current epoch and latest `seq`.
    pub fn position(&self) -> (&str, u64) {
        (&self.meta.epoch, self.meta.seq)
    }

    /// The open connections.
    pub fn connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.conns.keys().copied()
    }

    /// The participants, ordered by id.
    pub fn participants(&self) -> Vec<Participant> {
        self.members.values().map(|m| m.record.participant.clone()).collect()
    }

    fn effective_settings(&self) -> Effective {
        Effective::of(&self.limits, &self.meta.settings)
    }

    fn client_config(&self) -> ClientConfig {
        let l = &self.limits;
        let e = self.effective_settings();
        ClientConfig {
            capacity: e.capacity,
            max_frame_bytes: l.max_frame_bytes,
            max_chat_chars: l.max_chat_chars,
            max_rid_chars: crate::protocol::MAX_RID_CHARS as u32,
            rate_burst: l.rate_burst,
            rate_per_sec: l.rate_per_sec,
            typing_ttl_ms: l.typing_ttl_ms,
            cursor_interval_ms: l.cursor_interval_ms,
            idle_after_ms: l.idle_after_ms,
            history_limit: e.history_limit,
            persist_messages: e.persist_messages,
            ping_interval_ms: l.ping_interval_ms,
        }
    }

    // ----- connecting ------------------------------------------------------------------------------------

    /// Admits a connection (before the WebSocket upgrade) or says why not. On success the outputs hold the
    /// `welcome`, the replayed events when resuming, and the `participant.joined` for everyone else.
    pub fn connect(
        &mut self,
        identity: &Identity,
        resume: Option<Resume>,
        client: ClientInfo,
        now: Timestamp,
    ) -> Result<Admitted, ApiError> {
        self.run_timers(now);
        let result = self.connect_inner(identity, resume, client, now);
        if matches!(&result, Err(e) if e.code == ErrorCode::Internal) {
            self.poisoned = true;
        }
        result
    }

    /// Would `identity` be admitted now? The checks of [`Room::connect`] without joining: for clients that
    /// cannot read an upgrade's HTTP refusal (browsers) and ask again with a plain request.
    pub fn check_admission(&mut self, identity: &Identity, now: Timestamp) -> Result<(), ApiError> {
        self.run_timers(now);
        self.admission(identity, now).map(|_| ())
    }

    /// The admission checks: ban, abuse cooldown, connects in a row, capacity (moderators exempt),
    /// connections per user.
    fn admission(
        &self,
        identity: &Identity,
        now: Timestamp,
    ) -> Result<(ModerationRecord, Grant, Role, Perms), ApiError> {
        let user = &identity.user;
        let moderation = self.store.moderation(user).map_err(internal)?.unwrap_or_default();
        if let Some(until) = moderation.banned_until.filter(|until| *until > now) {
            let wait = until.since(now).div_ceil(1000);
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("you were removed from this room by a moderator; you may rejoin in {wait} s"),
            )
            .retry_after(wait));
        }
        if let Some(until) = moderation.cooldown_until.filter(|until| *until > now) {
            let wait = until.since(now).div_ceil(1000);
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!("this user was cut for too many refused frames; reconnect in {wait} s, more slowly"),
            )
            .retry_after(wait));
        }
        let wait = self.joins.get(user).map_or(0, |joins| joins.wait_secs(now.as_millis()));
        if wait > 0 {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "this user connected {} times in a short while (one more is allowed every {} s); \
                     reconnect in {wait} s, and back off between attempts",
                    self.limits.join_burst, self.limits.join_refill_secs
                ),
            )
            .retry_after(wait));
        }
        let grant = Grant { role: identity.role, perms: identity.perms };
        let (role, perms) = effective(&grant, &moderation);
        match self.members.get(user) {
            None => {
                let capacity = self.effective_settings().capacity as usize;
                if self.members.len() >= capacity && !perms.moderate {
                    return Err(ApiError::new(
                        ErrorCode::RoomFull,
                        format!("the room is full ({capacity} participants); try again later"),
                    ));
                }
            }
            Some(member) if member.conns.len() >= self.limits.max_conns_per_user as usize => {
                return Err(ApiError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "you already have {} connections to this room (the limit); close one first",
                        member.conns.len()
                    ),
                )
                .retry_after(CONNECTION_LIMIT_RETRY_S));
            }
            Some(_) => {}
        }
        Ok((moderation, grant, role, perms))
    }

    fn connect_inner(
        &mut self,
        identity: &Identity,
        resume: Option<Resume>,
        client: ClientInfo,
        now: Timestamp,
    ) -> Result<Admitted, ApiError> {
        let user = &identity.user;
        let (moderation, grant, role, perms) = self.admission(identity, now)?;
        self.take_join(user, now);

        let conn = ConnId(self.meta.next_conn);
        self.meta.next_conn += 1;
        self.meta.empty_since = None;
        self.timers.cancel(&TimerKey::RoomCleanup);
        self.store.save_meta(&self.meta).map_err(internal)?;

        let record = ConnRecord {
            conn,
            user: user.clone(),
            name: identity.name.clone(),
            role: identity.role,
            perms: identity.perms,
            exp: identity.exp,
            warned: false,
            opened_at: now,
            geo: client.geo,
            batch: client.batch,
        };
        let c = self.new_conn(record.clone(), now);
        self.conns.insert(conn, c);
        self.schedule_token(&record);

        match self.members.get_mut(user) {
            Some(member) => {
                member.conns.insert(conn);
                let p = &member.record.participant;
                let changed = p.name != identity.name || p.role != role || p.perms != perms;
                let grant_changed = member.record.grant != grant;
                member.record.grant = grant;
                if grant_changed && !changed {
                    // Nothing anyone sees changed (moderation overrides what differs), but the grant is what
                    // later moderation is computed on: it must outlive this object's memory.
                    self.store.put_participant(&member.record).map_err(internal)?;
                }
                if changed {
                    let perms_changed = p.perms != perms;
                    let mut updated = member.record.clone();
                    let p = &mut updated.participant;
                    p.name = identity.name.clone();
                    p.role = role;
                    p.perms = perms;
                    // As for a token refresh: whatever the new grant does not allow stops being published.
                    p.media.audio &= perms.stream && !p.muted.audio;
                    p.media.video &= perms.stream && !p.muted.video;
                    p.media.screen &= perms.screen_share && !p.muted.screen;
                    self.save_member_record(updated)?;
                    let participant = self.participant(user)?;
                    self.log_event(Some(conn), now, |seq, ts| ServerFrame::ParticipantUpdated {
                        seq,
                        ts,
                        participant,
                    })?;
                    if perms_changed {
                        self.control_perms(user);
                    }
                }
            }
            None => {
                let participant = Participant {
                    id: user.clone(),
                    name: identity.name.clone(),
                    role,
                    joined_at: now,
                    perms,
                    status: Status::Active,
                    last_seen: now.floor_to_second(),
                    hand_raised: false,
                    media: MediaFlags::default(),
                    muted: moderation.muted,
                    last_read: 0,
                };
                // Back within its grace: the media it kept is this stay's again.
                let returned = self.meta.media_leavers.remove(user).is_some();
                if returned {
                    self.timers.cancel(&TimerKey::MediaLeave(user.clone()));
                }
                let media_node = self.meta.media.as_ref().filter(|_| returned).map(|node| node.id.clone());
                let record = ParticipantRecord { participant, grant, typing_until: None, auto_idle: false, media_node };
                self.store.put_participant(&record).map_err(internal)?;
                self.members.insert(user.clone(), Member::new(record, BTreeSet::from([conn]), now));
                let participant = self.participant(user)?;
                self.log_event(Some(conn), now, |seq, ts| ServerFrame::ParticipantJoined { seq, ts, participant })?;
            }
        }
        self.schedule_member(user);
        self.welcome(conn, user, resume)?;
        Ok(Admitted { conn, record })
    }

    fn welcome(&mut self, conn: ConnId, user: &UserId, resume: Option<Resume>) -> Result<(), ApiError> {
        let seq = self.meta.seq;
        let replay = match resume {
            Some(r) if r.epoch == self.meta.epoch && r.since <= seq => {
                if r.since == seq {
                    Some(Vec::new())
                } else {
                    let first = self.store.first_event_seq().map_err(internal)?;
                    match first {
                        Some(first) if first <= r.since + 1 => {
                            Some(self.store.events_after(r.since).map_err(internal)?)
                        }
                        _ => None,
                    }
                }
            }
            _ => None,
        };
        let (history, history_more) = if replay.is_some() || !self.effective_settings().persist_messages {
            (Vec::new(), false)
        } else {
            let limit = self.limits.welcome_history;
            let mut page = self.store.messages_before(None, limit.saturating_add(1)).map_err(internal)?;
            let more = page.len() > limit as usize;
            if more {
                page.remove(0);
            }
            (page, more)
        };
        let welcome = Welcome {
            protocol: PROTOCOL_VERSION,
            room: self.room_id.as_ref().map(|r| r.to_string()).unwrap_or_else(|| self.meta.address.clone()),
            epoch: self.meta.epoch.clone(),
            seq,
            resumed: replay.is_some(),
            you: self.participant(user)?,
            participants: self.participants(),
            history,
            history_more,
            config: self.client_config(),
        };
        // The welcome and the replay go out at once: nothing is queued for a new connection yet, and
        // everything queued later for it follows them.
        let welcome = ServerFrame::Welcome(Box::new(welcome)).to_json();
        self.outbox.push_back(Output::Send { to: vec![conn], text: Arc::from(welcome) });
        for text in replay.unwrap_or_default() {
            self.outbox.push_back(Output::Send { to: vec![conn], text: Arc::from(text) });
        }
        Ok(())
    }

    /// A connection closed or errored (client side). Unknown connections are ignored.
    pub fn disconnect(&mut self, conn: ConnId, now: Timestamp) {
        self.clock = self.clock.max(now);
        // Forget the connection first: deadlines that are due must not address it any more.
        if let Err(e) = self.drop_conn(conn, LeaveReason::Left, now) {
            self.poisoned |= e.code == ErrorCode::Internal;
        }
        self.run_timers(now);
    }

    /// Forgets `conn`; when it was its user's last connection, the participant leaves with `reason`.
    fn drop_conn(&mut self, conn: ConnId, reason: LeaveReason, now: Timestamp) -> Result<(), ApiError> {
        let Some(c) = self.conns.remove(&conn) else { return Ok(()) };
        self.carry_buckets(c.record.user.clone(), c.bucket, c.strikes, now);
        self.coalescer.forget(conn);
        self.timers.cancel(&TimerKey::TokenWarning(conn));
        self.timers.cancel(&TimerKey::TokenExpiry(conn));
        let user = c.record.user;
        let last = match self.members.get_mut(&user) {
            Some(member) => {
                member.conns.remove(&conn);
                member.conns.is_empty()
            }
            None => false,
        };
        if last {
            self.remove_member(&user, reason, now)?;
        }
        if self.conns.is_empty() {
            self.meta.empty_since = Some(now);
            self.store.save_meta(&self.meta).map_err(internal)?;
            self.timers.set(TimerKey::RoomCleanup, now.plus_ms(self.limits.idle_room_ttl_ms));
        }
        Ok(())
    }

    /// Closes `conn` from the server side with `code`.
    fn close_conn(&mut self, conn: ConnId, code: u16, reason: &str, leave: LeaveReason, now: Timestamp) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let conns = &self.conns;
        self.coalescer.flush_conn(&mut self.outbox, conn, |c| conns.get(&c).is_some_and(|c| c.record.batch));
        self.outbox.push_back(Output::Close { conn, code, reason: reason.to_owned() });
        if leave == LeaveReason::Policy {
            // An abuser that reconnects at once would only repeat: keep it out for a while.
            if let Some(user) = self.conns.get(&conn).map(|c| c.record.user.clone()) {
                if let Err(e) = self.cool_down(&user, now) {
                    self.poisoned |= e.code == ErrorCode::Internal;
                }
            }
        }
        let user = self.conns.get(&conn).map(|c| c.record.user.clone());
        if let Err(e) = self.drop_conn(conn, leave, now) {
            self.poisoned |= e.code == ErrorCode::Internal;
        }
        // The room removed this user (its token ran out, or it was cut for abuse) and everyone was told it
        // left: its media must not go on unseen. A kick on the node ends its sessions and refuses its media
        // tokens issued before now; a client that comes back with a fresh token joins media again.
        let removed = matches!(leave, LeaveReason::Expired | LeaveReason::Policy);
        if let Some(user) = user.filter(|user| removed && !self.members.contains_key(user)) {
            if leave == LeaveReason::Expired {
                // Signed as decided a second earlier: no ban follows an expiry, and the node refuses media
                // tokens issued in the decision's second, which a client back at once with a fresh token may
                // well hold.
                self.control_kick_decided_at(&user, Some(now.as_secs().saturating_sub(1)));
            } else {
                // Cut for abuse: the cooldown keeps it from a fresh token, so any token of this second is
                // one it held when it was cut.
                self.control_kick(&user);
            }
        }
    }

    fn cool_down(&mut self, user: &UserId, now: Timestamp) -> Result<(), ApiError> {
        if self.limits.abuse_cooldown_ms == 0 {
            return Ok(());
        }
        let mut moderation = self.store.moderation(user).map_err(internal)?.unwrap_or_default();
        let until = now.plus_ms(self.limits.abuse_cooldown_ms);
        moderation.cooldown_until = Some(until);
        self.store.put_moderation(user, &moderation).map_err(internal)?;
        self.keep_until(until)
    }

    /// Records that a ban or cooldown lasts until `until`, which the idle wipe waits for.
    pub(super) fn keep_until(&mut self, until: Timestamp) -> Result<(), ApiError> {
        if self.meta.bans_until.is_some_and(|kept| kept >= until) {
            return Ok(());
        }
        self.meta.bans_until = Some(until);
        self.store.save_meta(&self.meta).map_err(internal)
    }

    fn remove_member(&mut self, user: &UserId, reason: LeaveReason, now: Timestamp) -> Result<(), ApiError> {
        let Some(member) = self.members.remove(user) else {
            return Ok(());
        };
        // Its media goes on for the grace (the other reasons end it at once, see `close_conn` and the kick).
        let left = matches!(reason, LeaveReason::Left | LeaveReason::Disconnected);
        if left && member.record.media_node.is_some() && self.meta.media.is_some() {
            self.media_leaves(user, now);
        }
        for key in [TimerKey::Typing(user.clone()), TimerKey::CursorFlush(user.clone()), TimerKey::Idle(user.clone())] {
            self.timers.cancel(&key);
        }
        self.store.remove_participant(user).map_err(internal)?;
        let id = user.clone();
        self.log_event(None, now, |seq, ts| ServerFrame::ParticipantLeft { seq, ts, id, reason })?;
        Ok(())
    }

    // ----- deadlines -------------------------------------------------------------------------------------

    /// The alarm fired (or any time): runs every deadline that is due at `now`.
    pub fn tick(&mut self, now: Timestamp) {
        self.run_timers(now);
    }

    fn run_timers(&mut self, now: Timestamp) {
        self.clock = self.clock.max(now);
        self.flush(now);
        while let Some(key) = self.timers.pop_due(now) {
            let result = match key {
                TimerKey::RoomCleanup => self.cleanup_if_empty(now),
                TimerKey::TokenWarning(conn) => {
                    self.warn_token(conn);
                    Ok(())
                }
                TimerKey::TokenExpiry(conn) => {
                    self.close_conn(conn, close::TOKEN_INVALID, "token expired", LeaveReason::Expired, now);
                    Ok(())
                }
                TimerKey::Typing(user) => self.stop_typing(&user, None),
                TimerKey::CursorFlush(user) => {
                    self.flush_cursor(&user, now);
                    Ok(())
                }
                TimerKey::Idle(user) => self.auto_idle(&user),
                TimerKey::MediaLeave(user) => self.end_leavers_media(&user, now),
            };
            if let Err(e) = result {
                self.poisoned |= e.code == ErrorCode::Internal;
            }
        }
    }

    fn schedule_token(&mut self, record: &ConnRecord) {
        let expiry = Timestamp::from_secs(record.exp);
        self.timers.set(TimerKey::TokenExpiry(record.conn), expiry);
        if record.warned {
            self.timers.cancel(&TimerKey::TokenWarning(record.conn));
        } else {
            let at = Timestamp(expiry.as_millis().saturating_sub(self.limits.token_warning_ms));
            self.timers.set(TimerKey::TokenWarning(record.conn), at);
        }
    }

    fn schedule_member(&mut self, user: &UserId) {
        let Some(member) = self.members.get(user) else { return };
        let record = &member.record;
        let typing = record.typing_until;
        let idle_at = (!record.auto_idle && record.participant.status == Status::Active)
            .then(|| record.participant.last_seen.plus_ms(self.limits.idle_after_ms));
        match typing {
            Some(at) => self.timers.set(TimerKey::Typing(user.clone()), at),
            None => self.timers.cancel(&TimerKey::Typing(user.clone())),
        }
        match idle_at {
            Some(at) => self.timers.set(TimerKey::Idle(user.clone()), at),
            None => self.timers.cancel(&TimerKey::Idle(user.clone())),
        }
    }

    fn warn_token(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.record.warned {
            return;
        }
        c.record.warned = true;
        let record = c.record.clone();
        self.send(conn, &ServerFrame::AuthExpiring { exp: record.exp });
        self.outbox.push_back(Output::Attach { record });
    }

    fn cleanup_if_empty(&mut self, now: Timestamp) -> Result<(), ApiError> {
        if !self.conns.is_empty() {
            return Ok(());
        }
        if let Some(until) = self.meta.bans_until.filter(|until| *until > now) {
            // A ban (or cooldown) still runs: wiping the room would end it. Wipe when it is over.
            self.timers.set(TimerKey::RoomCleanup, until);
            return Ok(());
        }
        self.store.wipe(false).map_err(internal)?;
        self.meta.bans_until = None;
        self.members.clear();
        self.end_media();
        self.meta.epoch = next_epoch(Some(&self.meta.epoch), now);
        self.meta.seq = 0;
        self.meta.empty_since = None;
        if self.meta.settings == RoomSettings::default() {
            // Nothing of this room is worth keeping: no rows are left, so a room that was only probed or
            // visited once costs no storage. A later event starts it afresh, with an epoch from its own time.
            self.store.delete_meta().map_err(internal)?;
        } else {
            // The admin's settings outlive the room's idle periods.
            self.store.save_meta(&self.meta).map_err(internal)?;
        }
        Ok(())
    }

    /// Most participants whose media grace runs at once; a class of more leaving together has the rest of
    /// its media ended at once (a bound on the stored meta row).
    const MAX_MEDIA_LEAVERS: usize = 1_000;

    /// `user` left holding a media token: its media ends after the grace unless it is back (stored with the
    /// `participant.left` that follows, in the same meta row).
    fn media_leaves(&mut self, user: &UserId, now: Timestamp) {
        let grace = self.limits.media_leave_grace_ms;
        if grace == 0 || self.meta.media_leavers.len() >= Self::MAX_MEDIA_LEAVERS {
            self.control_kick(user);
            return;
        }
        let until = now.plus_ms(grace);
        self.meta.media_leavers.insert(user.clone(), until);
        self.timers.set(TimerKey::MediaLeave(user.clone()), until);
    }

    /// The grace of `user`, who left holding a media token, is over: if it has not come back, its sessions on
    /// the node end (a kick, so its media tokens from before now open none; a fresh one, after a rejoin,
    /// does).
    fn end_leavers_media(&mut self, user: &UserId, now: Timestamp) -> Result<(), ApiError> {
        let Some(until) = self.meta.media_leavers.get(user).copied() else { return Ok(()) };
        if until > now {
            self.timers.set(TimerKey::MediaLeave(user.clone()), until);
            return Ok(());
        }
        self.meta.media_leavers.remove(user);
        self.store.save_meta(&self.meta).map_err(internal)?;
        if !self.members.contains_key(user) {
            // Dated a second early: the node refuses media tokens of the kick's second, and one who comes back
            // right now gets a token of this second. Gone for the whole grace, it holds none that new.
            self.control_kick_decided_at(user, Some(now.as_secs().saturating_sub(1)));
        }
        Ok(())
    }

    /// Starts the idle period of a room nobody is connected to that has none running: the admin API can write
    /// to a room just after its idle wipe (an announcement), and without a period those rows would never be
    /// wiped.
    fn start_idle_period_if_empty(&mut self, now: Timestamp) -> Result<(), ApiError> {
        if !self.conns.is_empty() || self.meta.empty_since.is_some() {
            return Ok(());
        }
        self.meta.empty_since = Some(now);
        self.store.save_meta(&self.meta).map_err(internal)?;
        self.timers.set(TimerKey::RoomCleanup, now.plus_ms(self.limits.idle_room_ttl_ms));
        Ok(())
    }

    fn auto_idle(&mut self, user: &UserId) -> Result<(), ApiError> {
        let Some(member) = self.members.get(user) else { return Ok(()) };
        if member.record.participant.status != Status::Active {
            return Ok(());
        }
        let mut record = member.record.clone();
        record.participant.status = Status::Idle;
        record.auto_idle = true;
        let frame =
            ServerFrame::Presence { id: user.clone(), status: Status::Idle, last_seen: record.participant.last_seen };
        self.save_member_record(record)?;
        self.broadcast(None, &frame);
        Ok(())
    }

    /// Ends `user`'s typing and tells the room (all of it but `except`: the connection that said so itself).
    fn stop_typing(&mut self, user: &UserId, except: Option<ConnId>) -> Result<(), ApiError> {
        let Some(member) = self.members.get(user) else { return Ok(()) };
        if member.record.typing_until.is_none() {
            return Ok(());
        }
        let mut record = member.record.clone();
        record.typing_until = None;
        self.save_member_record(record)?;
        self.timers.cancel(&TimerKey::Typing(user.clone()));
        self.broadcast(except, &ServerFrame::Typing { id: user.clone(), active: false });
        Ok(())
    }

    fn flush_cursor(&mut self, user: &UserId, now: Timestamp) {
        let Some(member) = self.members.get_mut(user) else { return };
        let Some((origin, line, column)) = member.cursor.pending.take() else { return };
        member.cursor.last_sent = Some(now);
        self.broadcast(Some(origin), &ServerFrame::Cursor { id: user.clone(), line, column });
    }

    // ----- sending and logging ---------------------------------------------------------------------------

    fn send(&mut self, conn: ConnId, frame: &ServerFrame) {
        self.emit(vec![conn], Arc::from(frame.to_json()), Urgency::Prompt);
    }

    /// Sends (or, in a busy room, queues) `text` for `to`.
    fn emit(&mut self, to: Vec<ConnId>, text: Arc<str>, urgency: Urgency) {
        let conns = &self.conns;
        let batch = |c: ConnId| conns.get(&c).is_some_and(|c| c.record.batch);
        self.coalescer.emit(&mut self.outbox, to, text, urgency, conns.len(), batch, self.clock);
    }

    /// When queued frames must be flushed ([`Room::flush`]); sooner than [`Room::next_deadline`], so the
    /// adapter uses a short timer rather than the alarm.
    pub fn next_flush(&self) -> Option<Timestamp> {
        self.coalescer.next_flush()
    }

    /// When the current flush window ends, whether or not anything is queued yet; [`Room::flush`] at that time
    /// either flushes (and a new window opens) or closes the window. A pump that waits for this, rather than
    /// for [`Room::next_flush`], lives as long as the room is busy instead of stopping after every flush.
    pub fn window_end(&self) -> Option<Timestamp> {
        self.coalescer.window_end()
    }

    /// The adapter wrote a flush of `frames` socket sends in `elapsed_ms` of the runtime's clock (from its
    /// first chunk to its last): with a measured frame budget (`COALESCE_FLUSH_DUTY_PCT`), this is what sets
    /// it ([`coalesce::Coalescer::observe_flush`]).
    pub fn observe_flush(&mut self, frames: u64, elapsed_ms: u64) {
        self.coalescer.observe_flush(frames, elapsed_ms);
    }

    /// Whether a flush is going out as a sweep ([`Limits::coalesce_sweep_conns`]): each [`Room::flush`]
    /// writes its next step, with whatever was queued meanwhile for the connections it reaches. The adapter
    /// calls it again once the previous step's frames are written.
    pub fn is_sweeping(&self) -> bool {
        self.coalescer.sweeping()
    }

    /// Whether a flush window is open (frames would be queued now).
    pub fn is_coalescing(&self) -> bool {
        self.coalescer.window_open(self.clock)
    }

    /// Flushes queued frames whose window is over.
    pub fn flush(&mut self, now: Timestamp) {
        self.clock = self.clock.max(now);
        let conns = &self.conns;
        let room_conns = conns.len();
        self.coalescer.flush_due(&mut self.outbox, |c| conns.get(&c).is_some_and(|c| c.record.batch), room_conns, now);
    }

    /// Flushes every queued frame now, window or not: the adapter calls it before dropping a poisoned room, so
    /// that what was queued is not lost with the cache.
    pub fn flush_now(&mut self) {
        self.flush_all();
    }

    /// Flushes everything queued (before clearing the room).
    fn flush_all(&mut self) {
        let conns = &self.conns;
        self.coalescer.flush_all(&mut self.outbox, |c| conns.get(&c).is_some_and(|c| c.record.batch));
    }

    fn send_error(&mut self, conn: ConnId, rid: Option<String>, error: ApiError) {
        self.send(conn, &ServerFrame::Error(ErrorFrame { rid, code: error.code, message: error.message }));
    }

    /// Sends `frame` to every open connection except `except`.
    fn broadcast(&mut self, except: Option<ConnId>, frame: &ServerFrame) {
        let to: Vec<ConnId> = self.conns.keys().copied().filter(|c| Some(*c) != except).collect();
        if !to.is_empty() {
            self.emit(to, Arc::from(frame.to_json()), urgency(frame));
        }
    }

    /// Logs an event: the next `seq`, stored verbatim, sent to every open connection but `skip` (a
    /// connection whose `welcome` already covers it).
    fn log_event(
        &mut self,
        skip: Option<ConnId>,
        now: Timestamp,
        make: impl FnOnce(u64, Timestamp) -> ServerFrame,
    ) -> Result<u64, ApiError> {
        let seq = self.meta.seq + 1;
        let frame = make(seq, now);
        let text = frame.to_json();
        self.store.append_event(seq, &text).map_err(internal)?;
        self.meta.seq = seq;
        self.store.save_meta(&self.meta).map_err(internal)?;
        let to: Vec<ConnId> = self.conns.keys().copied().filter(|c| Some(*c) != skip).collect();
        if !to.is_empty() {
            self.emit(to, Arc::from(text), urgency(&frame));
        }
        // Trimming is amortized over 64 events. The event is stored and sent by now, so a trim that storage
        // refused must not fail the request (a retry would log it twice): the room rebuilds from storage.
        if seq.is_multiple_of(TRIM_EVERY) && self.trim(seq).is_err() {
            self.poisoned = true;
        }
        Ok(seq)
    }

    fn trim(&mut self, seq: u64) -> Result<(), ApiError> {
        let keep_events = u64::from(self.limits.log_limit);
        if seq > keep_events {
            self.store.trim_events(seq - keep_events + 1).map_err(internal)?;
        }
        let history_limit = self.effective_settings().history_limit;
        self.store.trim_messages(history_limit).map_err(internal)?;
        self.store.trim_replies(self.limits.reply_limit).map_err(internal)?;
        Ok(())
    }

    fn participant(&self, user: &UserId) -> Result<Participant, ApiError> {
        self.members
            .get(user)
            .map(|m| m.record.participant.clone())
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no participant \"{user}\" in this room")))
    }

    /// Persists a participant record and puts it in the cache.
    fn save_member_record(&mut self, record: ParticipantRecord) -> Result<(), ApiError> {
        self.store.put_participant(&record).map_err(internal)?;
        if let Some(member) = self.members.get_mut(&record.participant.id) {
            member.record = record;
        }
        Ok(())
    }

    /// Logs `participant.updated` for `user` with its current object.
    fn log_participant_updated(&mut self, user: &UserId, now: Timestamp) -> Result<u64, ApiError> {
        let participant = self.participant(user)?;
        self.log_event(None, now, |seq, ts| ServerFrame::ParticipantUpdated { seq, ts, participant })
    }

    fn message_id(&self, seq: u64) -> String {
        format!("{}-{}", self.meta.epoch, seq)
    }
}

/// Outputs reduced to what each connection receives, for tests: `(conn, text)` pairs in order, plus closes.
pub fn flatten_outputs(outputs: impl IntoIterator<Item = Output>) -> Vec<(ConnId, String)> {
    let mut flat = Vec::new();
    for output in outputs {
        match output {
            Output::Send { to, text } => flat.extend(to.into_iter().map(|c| (c, text.to_string()))),
            Output::Close { conn, code, reason } => flat.push((conn, format!("<close {code} {reason}>"))),
            Output::Attach { .. } | Output::PlaceMedia { .. } | Output::MediaControl { .. } | Output::ReleaseMedia => {}
        }
    }
    flat
}
