//! The SFU core: every participant session of the node, driven sans-IO.
//!
//! [`Sfu`] owns no socket, thread or clock. The driver hands it datagrams ([`Sfu::handle_datagram`]), timer
//! ticks ([`Sfu::handle_timeout`]) and API calls ([`Sfu::create_session`], [`Sfu::control`], …), each with the
//! current `Instant`, and takes back the datagrams to send ([`Sfu::take_transmits`]) and the instant it must
//! be called again ([`Sfu::next_deadline`]). Tests drive it on a simulated clock with in-memory peers.
//!
//! # Run loop
//!
//! Every entry point follows str0m's single-mutation discipline, per session:
//!
//! 1. mutate one `Rtc` (`handle_input`, `write_rtp`, `request_keyframe`, an SDP change, a channel write);
//! 2. drain its `poll_output` until `Output::Timeout`: transmits go to the outbox, the timeout to the
//!    per-session deadline set, events to a core-wide queue;
//! 3. only then touch another session.
//!
//! Events are handled from the queue after the drain that produced them (`Sfu::settle`), so handling an
//! event of session A (an RTP packet) can mutate sessions B, C… (write to their send streams, each drained in
//! turn) without ever holding two sessions at once. Settling then sends throttled keyframe requests to
//! publishers, reconciles subscriptions with what rooms publish, and starts renegotiations, until nothing is
//! left to do.
//!
//! # Invariants
//!
//! - A session only ever receives tracks of *other participants of its own room* (room = the token's tenant-
//!   scoped `room` claim). Subscriptions are derived from room membership in `Sfu::reconcile_room` and
//!   nowhere else.
//! - A packet of a kind its publisher may not publish (token perms, moderator mute) is dropped before fan-out.
//! - Each subscriber m-line carries one continuous RTP stream: sequence numbers, timestamps and VP8 picture ids
//!   are rewritten at layer switches (`rewrite`), and video only starts or switches at a keyframe
//!   ([`forward`]).
//! - A closed session leaves nothing behind: demux entries, deadlines, room membership and other sessions'
//!   subscriptions to its tracks all go in `Sfu::close_now`.

pub(crate) mod codecs;
pub mod demux;
pub mod forward;
pub mod ids;
pub mod layers;
pub mod moderation;
pub(crate) mod rewrite;
pub mod session;
pub(crate) mod throttle;
pub(crate) mod track;

use crate::metrics::{DropReason, KeyframeSource, Metrics};
use crate::signal::{
    signal_cost, ClientSignal, NodeSignal, MAX_SIGNAL_BYTES, SIGNAL_BURST, SIGNAL_RATE_PER_SEC, SIGNAL_UNIT_BYTES,
};
use demux::Demux;
use forward::{OutState, PacketView, Publisher, Subscription};
use homeroom_shared::auth::MediaPerms;
use homeroom_shared::media::{ControlCommand, MediaCaps, Quality};
use homeroom_shared::protocol::{ErrorCode, MediaFlags, MediaKind};
pub use ids::{SessionId, TrackKey};
pub use session::{CloseReason, SessionOwner};
use session::{Delivery, Outgoing, Session};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::channel::ChannelData;
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, Mid, Rid, Rids};
use str0m::net::{DatagramRecv, Protocol, Receive, Transmit};
use str0m::rtp::RtpPacket;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

/// How often the core re-selects layers, re-requests keyframes and reaps idle sessions.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(250);
/// How often capped publishers are reminded of their bitrate ceiling (REMB).
const REMB_INTERVAL: Duration = Duration::from_secs(1);
/// Bandwidth set aside per received audio track when splitting a subscriber's estimate among its videos.
const AUDIO_RESERVE_BPS: u64 = 64_000;
/// A node offer not answered within this long is sent again, unchanged ([`session::Session::resend_offer`]).
const OFFER_TIMEOUT: Duration = Duration::from_secs(10);
/// A session whose client answered none of this many sends of one offer is closed: its signalling is broken.
const MAX_OFFER_RESENDS: u32 = 3;

/// A session whose ICE and DTLS are not both up this long after its offer is closed: STUN alone (a client that
/// never finishes DTLS) must not hold a session slot.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Sessions one participant may have in one room at once (tabs, devices, reconnects not yet reaped).
pub const MAX_SESSIONS_PER_PARTICIPANT: usize = 4;

/// The most tracks of a kind one session publishes: a microphone plus a screen's sound, one camera (simulcast
/// layers are one track), one screen. Further m-lines are negotiated but never published, so one client
/// cannot make every other session of its room renegotiate hundreds of tracks; and a session without
/// `perms.screen` cannot pass a screen off as a second camera.
pub const fn max_published(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 2,
        MediaKind::Video | MediaKind::Screen => 1,
    }
}
/// Rounds of event handling one entry point may take before it stops (a safety net; one or two is normal).
const MAX_SETTLE_ROUNDS: usize = 64;

/// Settings of the core.
#[derive(Clone, Debug)]
pub struct SfuConfig {
    /// The address the shared UDP socket is bound to: the destination of every datagram it receives.
    pub local_addr: SocketAddr,
    /// The address announced to clients as the node's one ICE host candidate (public IP, same port).
    pub candidate_addr: SocketAddr,
    /// Most sessions at once.
    pub capacity: u32,
    /// A session that receives nothing (no STUN consent checks, no media) for this long is closed.
    pub idle_timeout: Duration,
    /// Shortest interval between two keyframe requests to the same publisher layer.
    pub keyframe_interval: Duration,
    /// Send-side bandwidth estimation towards subscribers, starting at this many kbit/s (`None`: off, and
    /// layer choice ignores bandwidth).
    pub bwe_initial_kbps: Option<u32>,
}

impl SfuConfig {
    /// Defaults around one socket address (announced as is).
    pub fn new(local_addr: SocketAddr) -> Self {
        SfuConfig {
            local_addr,
            candidate_addr: local_addr,
            capacity: 500,
            idle_timeout: Duration::from_secs(15),
            keyframe_interval: Duration::from_millis(500),
            bwe_initial_kbps: Some(2_000),
        }
    }
}

/// A verified request for a new session.
#[derive(Clone, Debug)]
pub struct NewSession {
    /// The participant (media token `sub`).
    pub participant: String,
    pub name: Option<String>,
    /// The tenant-scoped room (media token `room`).
    pub room: String,
    pub perms: MediaPerms,
    pub caps: MediaCaps,
    /// The client's SDP offer.
    pub offer_sdp: String,
    /// Mids of the offer that carry screen share.
    pub screen_mids: Vec<String>,
    /// Initial quality preference for received simulcast tracks.
    pub quality: Quality,
    /// When the media token was issued (`iat`, seconds since the epoch): decisions of moderators made at
    /// or after it apply to the session ([`moderation`]).
    pub issued_at: Option<u64>,
}

/// A session the core accepted.
#[derive(Clone, Debug)]
pub struct SessionCreated {
    pub id: SessionId,
    /// The SDP answer for the client.
    pub answer_sdp: String,
}

/// Why a session was not created.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error(
        "the node is draining for shutdown and takes no new sessions; media.join again: the edge places the \
         room on another node once this one has drained"
    )]
    Draining,
    #[error(
        "the node is at capacity ({capacity} sessions) and the room's media stays on it; retry in a few \
         seconds (operators: add capacity or nodes)"
    )]
    Full { capacity: u32 },
    #[error("the body is not an SDP offer: {0}")]
    BadOffer(String),
    #[error("the SDP offer cannot be accepted: {0}")]
    OfferRefused(String),
    #[error("this participant already has {limit} sessions in this room; DELETE one (or let it time out) first")]
    TooManySessions { limit: usize },
    #[error("the node's UDP address cannot be announced as an ICE candidate: {0}")]
    BadCandidate(String),
    #[error(
        "this participant was removed from the room (by a moderator, or for an expired token or abuse) after its \
         media token was issued; ask the edge again (media.join)"
    )]
    Kicked,
    #[error("the offer has {count} m-lines; at most {MAX_OFFER_MLINES} are accepted")]
    TooManyMlines { count: usize },
    #[error("the room was closed (cleared) after this media token was issued; ask the edge again (media.join)")]
    RoomClosed,
}

impl CreateError {
    /// The contract code for the HTTP reply.
    pub fn code(&self) -> ErrorCode {
        match self {
            CreateError::Draining | CreateError::Full { .. } => ErrorCode::Unavailable,
            CreateError::BadOffer(_) | CreateError::OfferRefused(_) | CreateError::TooManyMlines { .. } => {
                ErrorCode::BadRequest
            }
            CreateError::TooManySessions { .. } => ErrorCode::RateLimited,
            CreateError::BadCandidate(_) => ErrorCode::Internal,
            CreateError::Kicked | CreateError::RoomClosed => ErrorCode::Forbidden,
        }
    }
}

/// A snapshot of one session, for tests and diagnostics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: SessionId,
    pub participant: String,
    pub room: String,
    pub connected: bool,
    /// Kinds of the tracks it publishes.
    pub published: Vec<MediaKind>,
    /// Tracks it receives, negotiated and flowing.
    pub receiving: usize,
    /// Its copies of published tracks in any state: being offered, flowing, or being stopped.
    pub subscriptions: usize,
    /// Layer currently forwarded to it per received track (`None` inside: the only layer).
    pub layers: Vec<(TrackKey, Option<Option<String>>)>,
    /// The latest send-side bandwidth estimate towards it, kbit/s.
    pub bwe_kbps: Option<u64>,
}

/// A keyframe a subscriber (or the node) wants from a publisher layer.
#[derive(Clone, Copy, Debug)]
struct KeyframeWant {
    source: TrackKey,
    rid: Option<Rid>,
    kind: KeyframeRequestKind,
}

/// Outputs of drains, shared by all sessions (a separate struct so it can be borrowed next to one session).
#[derive(Debug)]
struct Io {
    /// The time of the entry point being handled (drains feed due pacer timeouts with it).
    now: Instant,
    outbox: Vec<Transmit>,
    events: VecDeque<(SessionId, Event)>,
    deadlines: deadlines::Deadlines,
    keyframe_wants: Vec<KeyframeWant>,
    closing: Vec<(SessionId, CloseReason)>,
    /// Sessions written to (forwarded packets) but not drained yet; see [`Sfu::flush`].
    dirty: Vec<SessionId>,
}

impl Io {
    fn new(now: Instant) -> Self {
        Io {
            now,
            outbox: Vec::new(),
            events: VecDeque::new(),
            deadlines: deadlines::Deadlines::default(),
            keyframe_wants: Vec::new(),
            closing: Vec::new(),
            dirty: Vec::new(),
        }
    }
}

mod deadlines;

/// The SFU core. See the module docs.
#[derive(Debug)]
pub struct Sfu {
    config: SfuConfig,
    metrics: Metrics,
    sessions: HashMap<SessionId, Session, ids::IdHasher>,
    rooms: HashMap<Arc<str>, Vec<SessionId>>,
    demux: Demux,
    io: Io,
    to_negotiate: BTreeSet<SessionId>,
    to_reconcile: BTreeSet<Arc<str>>,
    next_housekeeping: Instant,
    next_remb: Instant,
    draining: bool,
    id_counter: u64,
    moderation: moderation::ModerationMemo,
}

impl Sfu {
    pub fn new(config: SfuConfig, metrics: Metrics, now: Instant) -> Self {
        metrics.capacity.set(i64::from(config.capacity));
        Sfu {
            config,
            metrics,
            sessions: HashMap::default(),
            rooms: HashMap::new(),
            demux: Demux::default(),
            io: Io::new(now),
            to_negotiate: BTreeSet::new(),
            to_reconcile: BTreeSet::new(),
            next_housekeeping: now + HOUSEKEEPING_INTERVAL,
            next_remb: now + REMB_INTERVAL,
            draining: false,
            id_counter: 0,
            moderation: moderation::ModerationMemo::default(),
        }
    }

    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Stops (or resumes) taking new sessions.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
        self.metrics.draining.set(i64::from(draining));
    }

    /// Who owns session `id`.
    pub fn owner(&self, id: SessionId) -> Option<SessionOwner> {
        self.sessions.get(&id).map(Session::owner)
    }

    /// The ids of every session.
    pub fn session_ids(&self) -> Vec<SessionId> {
        self.sessions.keys().copied().collect()
    }

    /// A snapshot of session `id`.
    pub fn session_info(&self, id: SessionId) -> Option<SessionInfo> {
        let s = self.sessions.get(&id)?;
        let mut published: Vec<MediaKind> = s.published.values().map(|t| t.kind).collect();
        published.sort_by_key(|k| k.as_str());
        let mut layers: Vec<(TrackKey, Option<Option<String>>)> = s
            .subscriptions
            .values()
            .filter(|sub| matches!(sub.state, OutState::Open(_)))
            .map(|sub| (sub.source, sub.forwarder.current().map(|rid| rid.map(|r| r.to_string()))))
            .collect();
        layers.sort_by_key(|(key, _)| *key);
        Some(SessionInfo {
            id,
            participant: s.participant.clone(),
            room: s.room.to_string(),
            connected: s.connected_at.is_some(),
            published,
            receiving: layers.len(),
            subscriptions: s.subscriptions.len(),
            layers,
            bwe_kbps: s.bwe_estimate.map(|b| b.as_u64() / 1000),
        })
    }

    /// When the core next needs [`Sfu::handle_timeout`].
    pub fn next_deadline(&self) -> Instant {
        self.io.deadlines.next().map_or(self.next_housekeeping, |at| at.min(self.next_housekeeping))
    }

    /// The datagrams to send, in order. Each goes from the shared socket to `destination`.
    pub fn take_transmits(&mut self) -> Vec<Transmit> {
        std::mem::take(&mut self.io.outbox)
    }

    /// Moves the datagrams to send into `into` (keeping both buffers' capacity).
    pub fn drain_transmits_into(&mut self, into: &mut Vec<Transmit>) {
        into.append(&mut self.io.outbox);
    }

    /// Accepts a client's offer: a new `Rtc` (ICE-lite, RTP mode, the node's one host candidate), the answer,
    /// and subscriptions to what its room already publishes.
    pub fn create_session(&mut self, now: Instant, request: NewSession) -> Result<SessionCreated, CreateError> {
        self.io.now = now;
        if self.draining {
            return Err(CreateError::Draining);
        }
        if self.sessions.len() >= self.config.capacity as usize {
            return Err(CreateError::Full { capacity: self.config.capacity });
        }
        if self.sessions_of(&request.room, Some(&request.participant)).len() >= MAX_SESSIONS_PER_PARTICIPANT {
            return Err(CreateError::TooManySessions { limit: MAX_SESSIONS_PER_PARTICIPANT });
        }
        let (perms, muted) =
            match self.moderation.admission(&request.room, &request.participant, request.issued_at, request.perms) {
                moderation::Admission::AsIssued => (request.perms, MediaFlags::default()),
                moderation::Admission::Kicked => return Err(CreateError::Kicked),
                moderation::Admission::RoomClosed => return Err(CreateError::RoomClosed),
                moderation::Admission::Restricted { muted, perms } => (perms.unwrap_or(request.perms), muted),
            };
        let count = mline_count(&request.offer_sdp);
        if count > MAX_OFFER_MLINES {
            return Err(CreateError::TooManyMlines { count });
        }
        let offer = SdpOffer::from_sdp_string(&request.offer_sdp).map_err(|e| CreateError::BadOffer(e.to_string()))?;
        let mut rtc = self.build_rtc(now);
        let candidate =
            Candidate::host(self.config.candidate_addr, "udp").map_err(|e| CreateError::BadCandidate(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| CreateError::OfferRefused(e.to_string()))?;
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;

        let id = loop {
            self.id_counter += 1;
            let candidate = SessionId::random(self.id_counter);
            if !self.sessions.contains_key(&candidate) {
                break candidate;
            }
        };
        let screen_mids = screen_mids_of(&request.offer_sdp, &request.screen_mids).collect();
        let room: Arc<str> = Arc::from(request.room.as_str());
        let mut session = Session::new(
            id,
            request.participant,
            request.name,
            Arc::clone(&room),
            perms,
            request.caps,
            rtc,
            ufrag,
            screen_mids,
            request.quality,
            now,
        );
        session.muted = muted;
        session.issued_at = request.issued_at;
        self.demux.register(id, &session.ufrag);
        drain(&mut self.io, &mut session);
        tracing::info!(
            session = %id, participant = %session.participant, room = %session.room, "session created"
        );
        self.sessions.insert(id, session);
        self.rooms.entry(Arc::clone(&room)).or_default().push(id);
        self.to_reconcile.insert(room);
        self.metrics.sessions_created.inc();
        // str0m announces the offer's m-lines (MediaAdded) only once ICE and DTLS are up. Publishing them now
        // lets the other participants renegotiate while this one is still connecting, so media flows as soon
        // as it arrives.
        for mid in offered_mids(&request.offer_sdp) {
            let direction = self.sessions.get(&id).and_then(|s| s.rtc.media(mid)).map(|m| m.direction());
            if let Some(direction) = direction {
                self.on_media_changed(now, id, mid, direction);
            }
        }
        self.finish(now);
        self.update_gauges();
        Ok(SessionCreated { id, answer_sdp: answer.to_sdp_string() })
    }

    /// Closes session `id` (DELETE, shutdown). Returns whether it existed.
    pub fn close_session(&mut self, now: Instant, id: SessionId, reason: CloseReason) -> bool {
        if !self.sessions.contains_key(&id) {
            return false;
        }
        self.io.now = now;
        self.close_now(id, reason);
        self.finish(now);
        true
    }

    /// Closes every session (end of a drain).
    pub fn close_all(&mut self, now: Instant, reason: CloseReason) {
        self.io.now = now;
        for id in self.session_ids() {
            self.close_now(id, reason);
        }
        self.finish(now);
    }

    /// One datagram from `source` arrived on the shared socket.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) {
        self.io.now = now;
        self.receive(now, source, datagram);
        self.finish(now);
    }

    /// Several datagrams that arrived together (one `recvmmsg`): each is handled as by
    /// [`Sfu::handle_datagram`], but the packets they forward are written to each subscriber's send streams
    /// first and every subscriber is drained once at the end, so a video frame costs one drain per subscriber
    /// rather than one per packet.
    pub fn handle_datagrams<'a>(&mut self, now: Instant, datagrams: impl IntoIterator<Item = (SocketAddr, &'a [u8])>) {
        self.io.now = now;
        for (source, datagram) in datagrams {
            self.receive(now, source, datagram);
        }
        self.finish(now);
    }

    /// Routes one datagram to its session and settles what it caused, leaving forwarded packets undrained.
    fn receive(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) {
        self.metrics.datagrams_in.inc();
        self.metrics.udp_bytes_in.inc_by(datagram.len() as u64);
        let Some(id) = self.demux.route(source, datagram) else {
            self.metrics.unroutable.inc();
            return;
        };
        let Some(session) = self.sessions.get_mut(&id) else {
            self.metrics.unroutable.inc();
            return;
        };
        let Ok(contents) = DatagramRecv::try_from(datagram) else {
            return;
        };
        let is_stun = demux::is_stun(datagram);
        if is_stun && !session.admits_stun_from(source) {
            self.metrics.stun_refused.inc();
            return;
        }
        if session.needs_drain {
            // Packets written to it earlier in this batch go out before it takes new input.
            drain(&mut self.io, session);
        }
        let input = Input::Receive(
            now,
            Receive { proto: Protocol::Udp, source, destination: self.config.candidate_addr, contents },
        );
        let answers_from = self.io.outbox.len();
        if let Err(e) = session.rtc.handle_input(input) {
            tracing::debug!(session = %id, error = %e, "str0m refused a datagram");
        }
        drain(&mut self.io, session);
        // A binding request the session answered with success passed its integrity check: its source now
        // reaches this session (the demux learns addresses only this way).
        let verified = is_stun
            && self.io.outbox.get(answers_from..).is_some_and(|sent| {
                sent.iter().any(|t| t.destination == source && demux::is_binding_success(&t.contents))
            });
        if verified {
            self.demux.confirm(source, id, now);
            session.verified_stun_source(source);
        }
        // Only what passes a check keeps the session alive: a request with the session's integrity (a replay
        // of a captured one does too), or traffic from an address such a request taught the demux. A STUN
        // message that merely names the session's ufrag (sent in clear in every request) does not.
        if !is_stun || verified {
            session.last_rx = now;
        }
        self.settle(now);
    }

    /// Time passed: advances the sessions that are due and runs housekeeping when it is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.io.now = now;
        let mut due = Vec::new();
        self.io.deadlines.take_due(now, &mut due);
        for id in due {
            if let Some(session) = self.sessions.get_mut(&id) {
                if let Err(e) = session.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(session = %id, error = %e, "str0m timeout error");
                }
                drain(&mut self.io, session);
            }
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING_INTERVAL;
            self.housekeeping(now);
        }
        self.finish(now);
    }

    /// Applies an edge-signed moderation command, made at wall-clock second `unix_secs`, to the sessions
    /// and remembers it for sessions opened later with older tokens ([`moderation`]). Returns how many
    /// sessions it touched. Decisions keep their order whatever order they arrive in: a mute or perms decided
    /// before the one the node already has (a call the edge gave up on, arriving late) changes nothing, and
    /// none changes a session whose token was issued after it.
    pub fn control(&mut self, now: Instant, unix_secs: u64, command: &ControlCommand) -> u32 {
        self.io.now = now;
        let touched = match command {
            ControlCommand::Mute { room, participant, kind, muted } => {
                if self.moderation.muted(room, participant, *kind, *muted, now, unix_secs) {
                    self.set_muted(now, room, participant, *kind, *muted, unix_secs)
                } else {
                    0
                }
            }
            ControlCommand::Kick { room, participant } => {
                self.moderation.kicked(room, participant, now, unix_secs);
                let ids = self.sessions_of(room, Some(participant));
                for id in &ids {
                    self.close_now(*id, CloseReason::Kicked);
                }
                ids.len()
            }
            ControlCommand::CloseRoom { room } => {
                self.moderation.room_closed(room, now, unix_secs);
                let ids = self.sessions_of(room, None);
                for id in &ids {
                    self.close_now(*id, CloseReason::RoomClosed);
                }
                ids.len()
            }
            ControlCommand::Perms { room, participant, perms } => {
                if self.moderation.perms(room, participant, *perms, now, unix_secs) {
                    self.set_perms(now, room, participant, *perms, unix_secs)
                } else {
                    0
                }
            }
        };
        self.finish(now);
        u32::try_from(touched).unwrap_or(u32::MAX)
    }

    fn build_rtc(&self, now: Instant) -> Rtc {
        let mut config = codecs::sfu_codecs(RtcConfig::new())
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_sctp_max_message_size(MAX_SIGNAL_BYTES as u32)
            // The send buffer must take the largest message we announce (a big room's offer) with one more
            // still unacknowledged: str0m's default (128 KiB) refuses a larger message on every retry.
            .set_sctp_max_buffered_amount(2 * MAX_SIGNAL_BYTES);
        if let Some(kbps) = self.config.bwe_initial_kbps {
            config = config.enable_bwe(Some(Bitrate::kbps(u64::from(kbps))));
        }
        config.build(now)
    }

    fn sessions_of(&self, room: &str, participant: Option<&str>) -> Vec<SessionId> {
        let Some(members) = self.rooms.get(room) else {
            return Vec::new();
        };
        members
            .iter()
            .filter(|id| participant.is_none_or(|p| self.sessions.get(*id).is_some_and(|s| s.participant == p)))
            .copied()
            .collect()
    }

    /// Settles, then drains every session written to since the last flush, until nothing is left: the end of
    /// every entry point.
    fn finish(&mut self, now: Instant) {
        for _ in 0..MAX_SETTLE_ROUNDS {
            self.settle(now);
            if !self.flush() {
                return;
            }
        }
        tracing::warn!("the core did not finish within {MAX_SETTLE_ROUNDS} rounds; continuing on the next input");
    }

    /// Drains the sessions forwarded packets were written to ([`Io::dirty`]). Returns whether that produced
    /// events to settle.
    fn flush(&mut self) -> bool {
        for id in std::mem::take(&mut self.io.dirty) {
            if let Some(session) = self.sessions.get_mut(&id) {
                if session.needs_drain {
                    drain(&mut self.io, session);
                }
            }
        }
        !self.io.events.is_empty() || !self.io.closing.is_empty()
    }

    /// Handles queued events, keyframe wants, reconciliations, renegotiations and closes until none are left.
    fn settle(&mut self, now: Instant) {
        for _ in 0..MAX_SETTLE_ROUNDS {
            while let Some((id, event)) = self.io.events.pop_front() {
                self.on_event(now, id, event);
            }
            self.send_keyframe_requests(now);
            for (id, reason) in std::mem::take(&mut self.io.closing) {
                self.close_now(id, reason);
            }
            for room in std::mem::take(&mut self.to_reconcile) {
                self.reconcile_room(&room);
            }
            for id in std::mem::take(&mut self.to_negotiate) {
                if let Some(session) = self.sessions.get_mut(&id) {
                    if session.negotiate(now) {
                        drain(&mut self.io, session);
                    }
                }
            }
            if self.io.events.is_empty()
                && self.io.keyframe_wants.is_empty()
                && self.io.closing.is_empty()
                && self.to_reconcile.is_empty()
            {
                return;
            }
        }
        tracing::warn!("the core did not settle within {MAX_SETTLE_ROUNDS} rounds; continuing on the next input");
    }

    fn on_event(&mut self, now: Instant, id: SessionId, event: Event) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        match event {
            Event::Connected => {
                session.connected_at = Some(now);
                tracing::info!(
                    session = %id,
                    setup_ms = now.saturating_duration_since(session.created_at).as_millis() as u64,
                    "session connected (ICE + DTLS)"
                );
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.io.closing.push((id, CloseReason::Disconnected));
            }
            Event::MediaAdded(added) => self.on_media_changed(now, id, added.mid, added.direction),
            Event::MediaChanged(changed) => self.on_media_changed(now, id, changed.mid, changed.direction),
            Event::RtpPacket(packet) => self.on_rtp(now, id, packet),
            Event::KeyframeRequest(request) => {
                self.metrics.keyframe_wanted(KeyframeSource::Subscriber);
                if let Some(sub) = session.subscription_by_mid(request.mid) {
                    if let Some(rid) = sub.forwarder.current().or(sub.forwarder.target()) {
                        self.io.keyframe_wants.push(KeyframeWant { source: sub.source, rid, kind: request.kind });
                    }
                }
            }
            Event::ChannelOpen(channel, label) if session.channel.is_none() => {
                tracing::debug!(session = %id, %label, "signalling channel open");
                session.channel = Some(channel);
                self.to_negotiate.insert(id);
            }
            Event::ChannelData(data) => self.on_signal(now, id, data),
            Event::ChannelClose(channel) if session.channel == Some(channel) => session.channel = None,
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => session.bwe_estimate = Some(estimate),
            Event::Closed => self.io.closing.push((id, CloseReason::PeerClosed)),
            _ => {}
        }
    }

    /// A client m-line appeared or changed direction: (un)publish accordingly.
    fn on_media_changed(&mut self, now: Instant, id: SessionId, mid: Mid, direction: Direction) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let publishing = direction.is_receiving();
        let known = session.published.contains_key(&mid);
        if publishing && !known {
            let Some(media) = session.rtc.media(mid) else {
                return;
            };
            let kind = session.kind_of(mid, media.kind());
            let already = session.published.values().filter(|t| t.kind == kind).count();
            if already >= max_published(kind) {
                let limit = max_published(kind);
                tracing::warn!(
                    session = %id, participant = %session.participant, %mid, kind = kind.as_str(),
                    limit, "track not published: the session already publishes its limit of this kind"
                );
                // Tell the client, whose answer accepted the line (before its data channel opens, during the
                // first offer, there is nobody to tell: that offer had more tracks than a client publishes).
                let message = format!(
                    "the {} track on mid {mid} is not published: a session publishes at most {limit} {} track{} \
                     at a time; stop one before starting another",
                    kind.as_str(),
                    kind.as_str(),
                    if limit == 1 { "" } else { "s" }
                );
                let error = NodeSignal::Error { code: ErrorCode::Forbidden, message, refused: None };
                if session.channel.is_some() && session.send_signal(&error).is_ok() {
                    drain(&mut self.io, session);
                }
                return;
            }
            let rids: Vec<Rid> = match media.rids_rx() {
                Rids::Specific(rids) => rids.clone(),
                Rids::None | Rids::Any => Vec::new(),
            };
            let mut track =
                track::PublishedTrack::new(TrackKey { session: id, mid }, kind, &rids, self.config.keyframe_interval);
            track.refresh_allowed(now, &session.caps);
            tracing::info!(
                session = %id, participant = %session.participant, %mid, kind = kind.as_str(),
                layers = rids.len(), "track published"
            );
            session.published.insert(mid, track);
            self.to_reconcile.insert(Arc::clone(&session.room));
        } else if !publishing && known {
            session.published.remove(&mid);
            session.forget_routes(mid);
            tracing::info!(session = %id, %mid, "track unpublished");
            self.to_reconcile.insert(Arc::clone(&session.room));
        }
        self.update_gauges();
    }

    /// One RTP packet from a publisher: check it, measure it, fan it out to the room.
    fn on_rtp(&mut self, now: Instant, id: SessionId, packet: RtpPacket) {
        let Some(publisher) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some((mid, rid)) = publisher.stream_route(packet.header.ssrc, &packet.header.ext_vals) else {
            self.metrics.dropped(DropReason::UnknownTrack);
            return;
        };
        let Some(kind) = publisher.published.get(&mid).map(|t| t.kind) else {
            self.metrics.dropped(DropReason::UnknownTrack);
            return;
        };
        let (may_publish, permits) = (publisher.may_publish(kind), publisher.permits(kind));
        let Some(track) = publisher.published.get_mut(&mid) else {
            return;
        };
        self.metrics.packets_in.inc_by(kind, 1);
        self.metrics.bytes_in.inc_by(kind, packet.payload.len() as u64);
        let Some(became_active) = track.record(now, rid, packet.payload.len()) else {
            self.metrics.dropped(DropReason::TooManyLayers);
            return;
        };
        if !may_publish {
            self.metrics.dropped(if permits { DropReason::Muted } else { DropReason::NotPermitted });
            return;
        }
        if !track.layer_allowed(rid) {
            self.metrics.dropped(DropReason::OverCap);
            return;
        }
        let Some(codec) = track.codec(packet.header.payload_type, &publisher.rtc) else {
            self.metrics.forwarding_errors.inc();
            return;
        };
        let source = track.key;
        if became_active && track.is_video() {
            // A layer (re)appeared: subscribers waiting for one can take it from this very packet.
            self.select_layers(now, None);
        }
        self.fan_out(now, id, source, kind, rid, codec, &packet);
    }

    /// Forwards one checked packet of `source` to every subscriber in the publisher's room.
    #[allow(clippy::too_many_arguments)]
    fn fan_out(
        &mut self,
        now: Instant,
        publisher: SessionId,
        source: TrackKey,
        kind: MediaKind,
        rid: Option<Rid>,
        codec: track::CodecInfo,
        packet: &RtpPacket,
    ) {
        let view = PacketView {
            rid,
            ssrc: *packet.header.ssrc,
            seq: *packet.seq_no,
            timestamp: packet.header.timestamp,
            starts_keyframe: codec.starts_keyframe(&packet.payload),
            clock_rate: codec.clock_rate,
            vp8: codec.codec == Codec::Vp8,
            payload: &packet.payload,
            now,
        };
        let outgoing = Outgoing {
            view,
            params: codec.params,
            marker: packet.header.marker,
            ext_vals: &packet.header.ext_vals,
            payload: &packet.payload,
            wallclock: packet.timestamp,
        };
        let Some(room) = self.sessions.get(&publisher).map(|s| Arc::clone(&s.room)) else {
            return;
        };
        let Some(members) = self.rooms.get(&room) else {
            return;
        };
        let (mut sent, mut switches, mut failed) = (0u64, 0u64, 0u64);
        for member in members {
            if *member == publisher {
                continue;
            }
            let Some(subscriber) = self.sessions.get_mut(member) else {
                continue;
            };
            match subscriber.forward(source, &outgoing) {
                Delivery::NotForThisSession => {}
                Delivery::Sent { switched } => {
                    sent += 1;
                    switches += u64::from(switched);
                    subscriber.first_forward_at.get_or_insert(now);
                    // Drained once the whole input batch is handled (`Sfu::flush`).
                    if !subscriber.needs_drain {
                        subscriber.needs_drain = true;
                        self.io.dirty.push(*member);
                    }
                }
                Delivery::Failed => failed += 1,
            }
        }
        // Counted once per packet rather than once per subscriber: the counters are shared atomics.
        if sent > 0 {
            self.metrics.packets_out.inc_by(kind, sent);
            self.metrics.bytes_out.inc_by(kind, sent * packet.payload.len() as u64);
        }
        if switches > 0 {
            self.metrics.layer_switches.inc_by(switches);
        }
        if failed > 0 {
            self.metrics.forwarding_errors.inc_by(failed);
        }
    }

    /// A signalling message from the client's data channel.
    fn on_signal(&mut self, now: Instant, id: SessionId, data: ChannelData) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        // Signalling is the first channel that opened; what the client sends on its other channels is its own
        // (the node answers on the first only, so it would never learn what became of a message sent there).
        if session.channel != Some(data.id) {
            tracing::debug!(session = %id, channel = ?data.id, "data on a channel other than signalling; ignored");
            return;
        }
        let reply_error = |session: &mut Session, refused: Option<&str>, message: String| {
            tracing::debug!(session = %session.id, %message, "bad signalling message");
            let refused = refused.map(str::to_owned);
            if let Err(reason) =
                session.send_signal(&NodeSignal::Error { code: ErrorCode::BadRequest, message, refused })
            {
                tracing::debug!(session = %session.id, %reason, "could not report it to the client");
            }
        };
        let since_created = now.saturating_duration_since(session.created_at).as_millis() as u64;
        if !session.signal_budget.try_take(1, since_created) {
            // Each message costs the node's one media loop (an offer is parsed, accepted and answered); a
            // client sending more than any real one does only gets told so.
            tracing::debug!(session = %session.id, "signalling message over the session's rate; dropped");
            let message = format!(
                "too many signalling messages: at most {SIGNAL_RATE_PER_SEC} per second with bursts of \
                 {SIGNAL_BURST}, an offer counting once per started {} KiB; this one was dropped",
                SIGNAL_UNIT_BYTES / 1024
            );
            // Not read, so of no known type: a client that waits for an answer times out (none does this).
            let error = NodeSignal::Error { code: ErrorCode::RateLimited, message, refused: None };
            if let Err(reason) = session.send_signal(&error) {
                tracing::debug!(session = %session.id, %reason, "could not report it to the client");
            }
            drain(&mut self.io, session);
            return;
        }
        if data.data.len() > MAX_SIGNAL_BYTES {
            reply_error(session, None, format!("signalling messages are limited to {MAX_SIGNAL_BYTES} bytes"));
            drain(&mut self.io, session);
            return;
        }
        let message: ClientSignal = match serde_json::from_slice(&data.data) {
            Ok(message) => message,
            Err(e) => {
                reply_error(
                    session,
                    None,
                    format!("not a signalling message ({e}); expected offer, answer or quality"),
                );
                drain(&mut self.io, session);
                return;
            }
        };
        // An offer's work (parsing, applying and answering its SDP) grows with its size: it pays for the rest
        // of its 8 KiB units. An answer needs an offer of the node's, which the node sends one at a time.
        let extra = signal_cost(data.data.len()).saturating_sub(1);
        if matches!(message, ClientSignal::Offer { .. }) && !session.signal_budget.try_take(extra, since_created) {
            let message = format!(
                "too many signalling messages: at most {SIGNAL_RATE_PER_SEC} per second with bursts of \
                 {SIGNAL_BURST}, an offer counting once per started {} KiB (this one: {}); it was dropped",
                SIGNAL_UNIT_BYTES / 1024,
                extra + 1
            );
            let error = NodeSignal::Error { code: ErrorCode::RateLimited, message, refused: Some("offer".into()) };
            if let Err(reason) = session.send_signal(&error) {
                tracing::debug!(session = %session.id, %reason, "could not report it to the client");
            }
            drain(&mut self.io, session);
            return;
        }
        match message {
            ClientSignal::Offer { sdp, screen } => {
                let count = mline_count(&sdp);
                if count > MAX_OFFER_MLINES {
                    let message = format!("offer: {count} m-lines; at most {MAX_OFFER_MLINES} are accepted");
                    reply_error(session, Some("offer"), message);
                    drain(&mut self.io, session);
                    return;
                }
                let offer = match SdpOffer::from_sdp_string(&sdp) {
                    Ok(offer) => offer,
                    Err(e) => {
                        reply_error(session, Some("offer"), format!("offer: not SDP: {e}"));
                        drain(&mut self.io, session);
                        return;
                    }
                };
                let screen_mids: Vec<Mid> = screen_mids_of(&sdp, &screen).collect();
                for mid in screen_mids {
                    if session.screen_mids.len() >= MAX_SCREEN_MIDS {
                        break;
                    }
                    session.screen_mids.insert(mid);
                }
                if session.pending_offer.take().is_some() {
                    // Glare: the client's offer wins; ours is offered again afterwards.
                    session.rollback_negotiation();
                }
                match session.rtc.sdp_api().accept_offer(offer) {
                    Ok(answer) => {
                        session.decline_rejected_lines();
                        let tracks = session.track_infos();
                        let answer = NodeSignal::Answer { sdp: answer.to_sdp_string(), tracks };
                        if let Err(reason) = session.send_signal(&answer) {
                            tracing::warn!(
                                session = %id, %reason,
                                "could not send the answer to the client's offer; the client's change is lost"
                            );
                        }
                    }
                    Err(e) => reply_error(session, Some("offer"), format!("offer refused: {e}")),
                }
                drain(&mut self.io, session);
                self.to_negotiate.insert(id);
            }
            ClientSignal::Answer { sdp } => {
                // Without an offer outstanding there is nothing to parse the SDP for.
                let result = if session.pending_offer.is_none() {
                    Err("there is no node offer outstanding to answer".to_owned())
                } else {
                    SdpAnswer::from_sdp_string(&sdp)
                        .map_err(|e| format!("answer: not SDP: {e}"))
                        .and_then(|answer| session.accept_answer(answer))
                };
                match result {
                    Ok(_) => {
                        drain(&mut self.io, session);
                        self.to_reconcile.insert(Arc::clone(&session.room));
                        self.to_negotiate.insert(id);
                        self.select_layers(now, Some(id));
                    }
                    Err(message) => {
                        // A good answer comes once per offer of the node's, so it costs one unit, whatever its
                        // size; one that fails pays for its size after the fact, or a client could have large
                        // answers parsed at the one-unit rate while an offer is outstanding.
                        session.signal_budget.take_up_to(extra, since_created);
                        // The refused answer sends the node's changes back to be offered again; building that
                        // offer (up to 256 KiB in a large room) waits a moment, so bad answers cannot have the
                        // loop build one per message.
                        session.defer_next_offer(now);
                        reply_error(session, Some("answer"), message);
                        drain(&mut self.io, session);
                        self.to_negotiate.insert(id);
                    }
                }
            }
            ClientSignal::Quality { quality, mid } => {
                match mid {
                    None => session.quality = quality,
                    Some(mid) => match session.subscription_by_mid(Mid::from(mid.as_str())) {
                        Some(sub) => sub.quality = Some(quality),
                        None => {
                            reply_error(session, Some("quality"), format!("quality: no received track has mid {mid}"));
                            drain(&mut self.io, session);
                            return;
                        }
                    },
                }
                self.select_layers(now, Some(id));
            }
        }
    }

    /// Makes every session of `room` subscribe to exactly the tracks it should receive: those published by
    /// other participants of the room, if it may subscribe.
    fn reconcile_room(&mut self, room: &str) {
        let Some(members) = self.rooms.get(room) else {
            return;
        };
        let tracks: Vec<(TrackKey, MediaKind, Publisher)> = members
            .iter()
            .filter_map(|m| self.sessions.get(m))
            .flat_map(|s| {
                let publisher = Publisher { participant: s.participant.clone(), name: s.name.clone() };
                s.published.values().map(move |t| (t.key, t.kind, publisher.clone()))
            })
            .collect();
        for member in members {
            let Some(session) = self.sessions.get_mut(member) else {
                continue;
            };
            let wanted: HashSet<TrackKey> = if session.perms.subscribe {
                tracks
                    .iter()
                    .filter(|(key, kind, publisher)| {
                        key.session != session.id
                            && publisher.participant != session.participant
                            && (session.declined.is_empty()
                                || !session.declined.contains(&(publisher.participant.clone(), *kind)))
                    })
                    .map(|(key, _, _)| *key)
                    .collect()
            } else {
                HashSet::new()
            };
            for (key, kind, publisher) in &tracks {
                if wanted.contains(key) && !session.subscriptions.contains_key(key) {
                    session.subscriptions.insert(*key, Subscription::new(*key, *kind, publisher.clone()));
                }
            }
            session.subscriptions.retain(|key, sub| {
                let want = wanted.contains(key);
                match sub.state {
                    OutState::ToOpen | OutState::Declined(_) => want,
                    OutState::Negotiating(_) => {
                        sub.source_gone = !want;
                        true
                    }
                    OutState::Open(mid) if !want => {
                        sub.state = OutState::ToStop(mid);
                        true
                    }
                    OutState::ToStop(mid) if want => {
                        sub.state = OutState::Open(mid);
                        sub.forwarder.pause();
                        true
                    }
                    _ => true,
                }
            });
            if session.has_pending_changes() {
                self.to_negotiate.insert(*member);
            }
        }
    }

    /// Chooses the layer every received video track of `only` (or of every session) should follow, and asks
    /// publishers for keyframes where a subscriber waits for one.
    fn select_layers(&mut self, now: Instant, only: Option<SessionId>) {
        // Tracks whose publisher may not publish them now (muted, not permitted) get no menu, so nobody asks
        // their publisher for keyframes that would be dropped anyway.
        // For one session (its `quality` message, its answer), only the menus of what it receives.
        let wanted: Option<HashSet<TrackKey>> = only
            .map(|id| self.sessions.get(&id).map(|s| s.subscriptions.values().map(|sub| sub.source).collect()))
            .map(Option::unwrap_or_default);
        let menus: HashMap<TrackKey, track::LayerMenu> = self
            .sessions
            .values()
            .flat_map(|s| {
                let wanted = wanted.as_ref();
                s.published
                    .values()
                    .filter(move |t| t.is_video() && s.may_publish(t.kind))
                    .filter(move |t| wanted.is_none_or(|w| w.contains(&t.key)))
                    .map(move |t| (t.key, t.menu(now, &s.caps)))
            })
            .collect();
        let bwe = self.config.bwe_initial_kbps.is_some();
        for session in self.sessions.values_mut() {
            if only.is_some_and(|id| id != session.id) {
                continue;
            }
            let open = |s: &&Subscription| matches!(s.state, OutState::Open(_));
            let videos = session.subscriptions.values().filter(open).filter(|s| s.kind != MediaKind::Audio).count();
            let audios = session.subscriptions.values().filter(open).filter(|s| s.kind == MediaKind::Audio).count();
            let budget = session.bwe_estimate.filter(|_| bwe).map(|estimate| {
                estimate.as_u64().saturating_sub(AUDIO_RESERVE_BPS * audios as u64) / videos.max(1) as u64
            });
            let (mut desired, mut minimum) = (AUDIO_RESERVE_BPS * audios as u64, 0);
            let receive_cap = session.caps.receive_quality.unwrap_or(Quality::High);
            for sub in session.subscriptions.values_mut().filter(|s| matches!(s.state, OutState::Open(_))) {
                if sub.kind == MediaKind::Audio {
                    sub.forwarder.set_target(Some(None));
                    continue;
                }
                let preference = sub.quality.unwrap_or(session.quality).min(receive_cap);
                let menu = menus.get(&sub.source);
                let target = menu.and_then(|menu| {
                    let pick = layers::select_layer(&menu.options, preference, budget)?;
                    let ideal = layers::select_layer(&menu.options, preference, None).unwrap_or(pick);
                    let rate = |i: usize| menu.options.get(i).and_then(|o| o.bitrate_bps).unwrap_or(0);
                    desired += rate(ideal);
                    // Below the preferred layer, sustain (with padding) the rate of the next layer up so the
                    // estimate can grow into it. At the preferred layer no padding is wanted.
                    let next_up =
                        (pick + 1..=ideal).find(|i| menu.options.get(*i).is_some_and(|o| o.active && o.allowed));
                    minimum += next_up.map_or(0, rate);
                    menu.rids.get(pick).copied()
                });
                sub.forwarder.set_target(target);
                if let Some(rid) = sub.forwarder.awaiting_keyframe() {
                    if sub.forwarder.count_wait() {
                        self.metrics.keyframe_wanted(KeyframeSource::Node);
                    }
                    self.io.keyframe_wants.push(KeyframeWant {
                        source: sub.source,
                        rid,
                        kind: KeyframeRequestKind::Pli,
                    });
                }
            }
            // Tell the bandwidth estimator what this subscriber would like to receive, so it probes for it.
            if bwe && desired > 0 {
                let changed = session.bwe_desired.is_none_or(|(d, m)| d.abs_diff(desired) * 10 > d || m != minimum);
                if changed {
                    session.bwe_desired = Some((desired, minimum));
                    session.rtc.bwe().set_bitrate(Bitrate::bps(minimum.min(desired)), Bitrate::bps(desired));
                    drain(&mut self.io, session);
                }
            }
        }
    }

    /// Sends the wanted keyframe requests that the per-layer throttle lets through.
    fn send_keyframe_requests(&mut self, now: Instant) {
        for want in std::mem::take(&mut self.io.keyframe_wants) {
            let Some(publisher) = self.sessions.get_mut(&want.source.session) else {
                continue;
            };
            let Some(track) = publisher.published.get_mut(&want.source.mid) else {
                continue;
            };
            if !track.is_video() || !track.allow_keyframe_request(want.rid, now) {
                continue;
            }
            let mut direct = publisher.rtc.direct_api();
            let Some(stream) = direct.stream_rx_by_mid(want.source.mid, want.rid) else {
                continue;
            };
            stream.request_keyframe(want.kind);
            self.metrics.keyframe_requests_sent.inc();
            drain(&mut self.io, publisher);
        }
    }

    /// The sessions of `participant` whose media tokens were issued at or before `decided_at` (a newer token
    /// carries the decision already, or a later one).
    fn sessions_decided_on(&self, room: &str, participant: &str, decided_at: u64) -> Vec<SessionId> {
        let mut ids = self.sessions_of(room, Some(participant));
        ids.retain(|id| self.sessions.get(id).is_some_and(|s| s.issued_at.is_none_or(|issued| issued <= decided_at)));
        ids
    }

    fn set_muted(
        &mut self,
        now: Instant,
        room: &str,
        participant: &str,
        kind: MediaKind,
        muted: bool,
        decided_at: u64,
    ) -> usize {
        let ids = self.sessions_decided_on(room, participant, decided_at);
        for id in &ids {
            if let Some(session) = self.sessions.get_mut(id) {
                session.muted.set(kind, muted);
                tracing::info!(session = %id, kind = kind.as_str(), muted, "mute changed by control");
            }
            self.pause_forwarding_of(room, *id, |k| k == kind);
        }
        self.select_layers(now, None);
        ids.len()
    }

    fn set_perms(&mut self, now: Instant, room: &str, participant: &str, perms: MediaPerms, decided_at: u64) -> usize {
        let ids = self.sessions_decided_on(room, participant, decided_at);
        for id in &ids {
            if let Some(session) = self.sessions.get_mut(id) {
                session.perms = perms;
                tracing::info!(session = %id, ?perms, "perms replaced by control");
            }
            self.pause_forwarding_of(room, *id, |_| true);
        }
        if let Some((key, _)) = self.rooms.get_key_value(room) {
            self.to_reconcile.insert(Arc::clone(key));
        }
        self.select_layers(now, None);
        ids.len()
    }

    /// Makes every subscriber of `publisher`'s tracks of the matching kinds wait for a fresh keyframe (audio:
    /// the next packet) before receiving more, so a resumed stream starts cleanly.
    fn pause_forwarding_of(&mut self, room: &str, publisher: SessionId, kinds: impl Fn(MediaKind) -> bool) {
        let Some(members) = self.rooms.get(room) else {
            return;
        };
        for member in members {
            if let Some(session) = self.sessions.get_mut(member) {
                for sub in session.subscriptions.values_mut() {
                    if sub.source.session == publisher && kinds(sub.kind) {
                        sub.forwarder.pause();
                    }
                }
            }
        }
    }

    /// Idle reaping, unanswered offers, caps, layer choice, REMB reminders and gauges.
    fn housekeeping(&mut self, now: Instant) {
        self.moderation.prune(now);
        for session in self.sessions.values_mut() {
            if now.saturating_duration_since(session.last_rx) > self.config.idle_timeout {
                self.io.closing.push((session.id, CloseReason::Idle));
            } else if session.connected_at.is_none()
                && now.saturating_duration_since(session.created_at) > CONNECT_TIMEOUT
            {
                tracing::info!(session = %session.id, "ICE + DTLS not up 30 s after the offer; closing the session");
                self.io.closing.push((session.id, CloseReason::ConnectTimeout));
            }
            if session.offered_at.is_some_and(|at| now.saturating_duration_since(at) > OFFER_TIMEOUT) {
                if session.offer_resends >= MAX_OFFER_RESENDS {
                    tracing::warn!(
                        session = %session.id, sends = session.offer_resends + 1,
                        "the client answered none of the sends of the node's offer; closing the session"
                    );
                    session.offered_at = None;
                    self.io.closing.push((session.id, CloseReason::Error));
                } else {
                    tracing::warn!(session = %session.id, "the client did not answer the node's offer; sending it again");
                    if let Err(reason) = session.resend_offer(now) {
                        tracing::debug!(session = %session.id, %reason, "could not send the offer again; will retry");
                    }
                    drain(&mut self.io, session);
                }
            }
            if session.pending_offer.is_none() && session.channel.is_some() && session.has_pending_changes() {
                // Retries an offer that could not be sent (full channel) or was dropped above.
                self.to_negotiate.insert(session.id);
            }
            for track in session.published.values_mut() {
                track.refresh_allowed(now, &session.caps);
            }
        }
        self.select_layers(now, None);
        if now >= self.next_remb {
            self.next_remb = now + REMB_INTERVAL;
            self.remind_bitrate_caps();
        }
        self.update_gauges();
    }

    /// Asks capped publishers (REMB) to keep their video under `caps.publish_kbps` per track. Browsers treat
    /// REMB as a ceiling on their whole send rate, hence the sum.
    fn remind_bitrate_caps(&mut self) {
        for session in self.sessions.values_mut() {
            let Some(kbps) = session.caps.publish_kbps else {
                continue;
            };
            let videos: Vec<(Mid, Option<Rid>)> = session
                .published
                .values()
                .filter(|t| t.is_video())
                .filter_map(|t| t.rids().next().map(|rid| (t.key.mid, rid)))
                .collect();
            let audios = session.published.values().filter(|t| !t.is_video()).count() as u64;
            let total = Bitrate::bps(u64::from(kbps) * 1000 * videos.len() as u64 + AUDIO_RESERVE_BPS * audios);
            let mut requested = false;
            for (mid, rid) in videos {
                if let Some(stream) = session.rtc.direct_api().stream_rx_by_mid(mid, rid) {
                    stream.request_remb(total);
                    requested = true;
                }
            }
            if requested {
                drain(&mut self.io, session);
            }
        }
    }

    /// Removes a session and everything that refers to it.
    fn close_now(&mut self, id: SessionId, reason: CloseReason) {
        let Some(mut session) = self.sessions.remove(&id) else {
            return;
        };
        if session.rtc.is_alive() && session.rtc.close().is_ok() {
            // Flush RTCP BYE and the DTLS close_notify so the client learns at once.
            drain_closing(&mut self.io, &mut session);
        }
        self.demux.remove(id, &session.ufrag);
        self.io.deadlines.remove(id);
        if let Some(members) = self.rooms.get_mut(&session.room) {
            members.retain(|m| *m != id);
            if members.is_empty() {
                self.rooms.remove(&session.room);
            } else {
                self.to_reconcile.insert(Arc::clone(&session.room));
            }
        }
        self.to_negotiate.remove(&id);
        self.metrics.session_closed(reason.as_str());
        tracing::info!(
            session = %id, participant = %session.participant, room = %session.room, reason = reason.as_str(),
            "session closed"
        );
        self.update_gauges();
    }

    fn update_gauges(&self) {
        self.metrics.sessions.set(self.sessions.len() as i64);
        self.metrics.rooms.set(self.rooms.len() as i64);
        for kind in [MediaKind::Audio, MediaKind::Video, MediaKind::Screen] {
            let count = self.sessions.values().flat_map(|s| s.published.values()).filter(|t| t.kind == kind).count();
            self.metrics.set_tracks(kind, count);
        }
    }
}

/// The mids (`a=mid:`) of an SDP.
/// The most m-lines a session may ever mark as screen shares (it publishes at most one at a time; the rest
/// leaves room for renegotiations that replace it).
const MAX_SCREEN_MIDS: usize = 8;

/// Most m-lines a client's offer may have. A session's SDP lists every m-line it ever had (its own and the
/// node's, which the node bounds by reusing them), and every offer, answer and `poll_output` of its `Rtc`
/// walks them: a client offering thousands of `recvonly` lines would make its session a weight on the media
/// loop every other session shares. A client in a room of 75 cameras with their microphones has ≈ 150.
pub const MAX_OFFER_MLINES: usize = 512;

/// How many m-lines `sdp` has (counted before parsing it).
fn mline_count(sdp: &str) -> usize {
    sdp.lines().filter(|line| line.starts_with("m=")).count()
}

/// The mids of `claimed` that `sdp` really offers, without repeats, at most [`MAX_SCREEN_MIDS`]: the client's
/// list of screen m-lines must not hold the node's memory beyond the m-lines it has.
fn screen_mids_of<'a>(sdp: &str, claimed: &'a [String]) -> impl Iterator<Item = Mid> + 'a {
    let offered: HashSet<Mid> = offered_mids(sdp).into_iter().collect();
    let mut seen = HashSet::new();
    claimed
        .iter()
        .map(|m| Mid::from(m.as_str()))
        .filter(move |m| offered.contains(m) && seen.insert(*m))
        .take(MAX_SCREEN_MIDS)
}

fn offered_mids(sdp: &str) -> Vec<Mid> {
    sdp.lines().filter_map(|line| line.trim().strip_prefix("a=mid:")).map(|mid| Mid::from(mid.trim())).collect()
}

/// How far ahead of the entry point's time a drain feeds a timeout itself rather than scheduling it. str0m's
/// pacer (on when bandwidth estimation is) releases one packet per `Input::Timeout` and asks for the next one a
/// microsecond later; handling those in the drain saves a turn of the run loop per paced packet. Deadlines
/// further away (real pacing delays, RTCP, ICE) are scheduled as usual.
const INLINE_TIMEOUT_WINDOW: Duration = Duration::from_micros(200);
/// Most timeouts one drain feeds inline (a burst of paced packets), so one session cannot hog a turn.
const MAX_INLINE_TIMEOUTS: usize = 64;

/// Drains one session's `Rtc` until `Output::Timeout` (step 2 of the run loop). A timeout due within
/// [`INLINE_TIMEOUT_WINDOW`] of `io.now` is fed at once and the drain goes on; the final one goes to the
/// deadline set.
fn drain(io: &mut Io, session: &mut Session) {
    session.needs_drain = false;
    let mut inline = 0;
    let mut last_fed: Option<Instant> = None;
    loop {
        if !session.rtc.is_alive() {
            io.deadlines.remove(session.id);
            io.closing.push((session.id, session.close_reason.unwrap_or(CloseReason::PeerClosed)));
            return;
        }
        match session.rtc.poll_output() {
            Ok(Output::Timeout(at)) => {
                // Only ever forward in time, so a timer str0m keeps re-arming cannot spin here.
                let advances = last_fed.is_none_or(|fed| at > fed);
                if inline < MAX_INLINE_TIMEOUTS && advances && at <= io.now + INLINE_TIMEOUT_WINDOW {
                    inline += 1;
                    let feed = at.max(io.now);
                    last_fed = Some(feed);
                    if session.rtc.handle_input(Input::Timeout(feed)).is_ok() {
                        continue;
                    }
                }
                io.deadlines.set(session.id, at);
                return;
            }
            Ok(Output::Transmit(transmit)) => io.outbox.push(transmit),
            Ok(Output::Event(event)) => io.events.push_back((session.id, event)),
            Err(e) => {
                tracing::warn!(session = %session.id, error = %e, "str0m failed; closing the session");
                session.close_reason = Some(CloseReason::Error);
                session.rtc.disconnect();
            }
        }
    }
}

/// Drains a closing `Rtc` for its last datagrams, discarding its events.
fn drain_closing(io: &mut Io, session: &mut Session) {
    for _ in 0..1024 {
        if !session.rtc.is_alive() {
            return;
        }
        match session.rtc.poll_output() {
            Ok(Output::Transmit(transmit)) => io.outbox.push(transmit),
            Ok(Output::Event(_)) => {}
            Ok(Output::Timeout(_)) | Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_screen_list_keeps_only_offered_mids_and_is_bounded() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\n";
        let claimed: Vec<String> = ["2", "2", "7", "0"].iter().map(|m| m.to_string()).collect();
        let kept: Vec<Mid> = screen_mids_of(sdp, &claimed).collect();
        assert_eq!(kept, [Mid::from("2"), Mid::from("0")], "offered, once each; 7 is not in the offer");

        // A hostile list of 50,000 mids against an offer with 100 m-lines: at most the cap is kept.
        let big_sdp: String = (0..100).map(|i| format!("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:{i}\r\n")).collect();
        let hostile: Vec<String> = (0..50_000).map(|i| (i % 200).to_string()).collect();
        assert_eq!(screen_mids_of(&big_sdp, &hostile).count(), MAX_SCREEN_MIDS);
    }
}
