//! One participant session: its `Rtc`, what it publishes, what it receives, and its signalling channel.
//!
//! Methods here touch only this session. Everything that spans sessions (fan-out, rooms, keyframe requests
//! to publishers) lives in [`super::Sfu`]. After any method that mutates `rtc`, the caller drains it
//! ([`super::Sfu`] does so before touching another session).

use super::forward::{OutState, PacketView, Subscription, Verdict};
use super::ids::{SessionId, TrackKey};
use super::track::PublishedTrack;
use crate::signal::{NodeSignal, TrackInfo, MAX_SIGNAL_BYTES, SIGNAL_BURST, SIGNAL_RATE_PER_SEC};
use homeroom_shared::auth::MediaPerms;
use homeroom_shared::media::{MediaCaps, Quality};
use homeroom_shared::protocol::{MediaFlags, MediaKind};
use homeroom_shared::room::rate::TokenBucket;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::bwe::Bitrate;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::PayloadParams;
use str0m::media::{Direction, Mid, Rid};
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc};
use str0m::Rtc;

/// Why a session ended (the `reason` label of `homeroom_media_sessions_closed_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// `DELETE /v1/sessions/{id}`.
    Deleted,
    /// The `POST` that asked for the session gave up (disconnected, timed out) before its answer: nobody knows
    /// the session's id.
    Abandoned,
    /// `POST /v1/control` `kick`.
    Kicked,
    /// `POST /v1/control` `close_room`.
    RoomClosed,
    /// No packets for the idle timeout.
    Idle,
    /// ICE and DTLS were not up within [`super::CONNECT_TIMEOUT`] of the offer.
    ConnectTimeout,
    /// ICE connectivity was lost.
    Disconnected,
    /// The client closed DTLS / the peer connection.
    PeerClosed,
    /// str0m reported an error for this session.
    Error,
    /// The node shut down.
    Shutdown,
}

impl CloseReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            CloseReason::Deleted => "deleted",
            CloseReason::Abandoned => "abandoned",
            CloseReason::Kicked => "kicked",
            CloseReason::RoomClosed => "room_closed",
            CloseReason::Idle => "idle",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::Disconnected => "disconnected",
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Error => "error",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// A packet on its way from a publisher to subscribers.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing<'a> {
    pub(crate) view: PacketView<'a>,
    pub(crate) params: PayloadParams,
    pub(crate) marker: bool,
    pub(crate) ext_vals: &'a ExtensionValues,
    pub(crate) payload: &'a Arc<[u8]>,
    pub(crate) wallclock: Instant,
}

/// What forwarding one packet to one subscriber did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Not subscribed, not negotiated yet, other layer: nothing to do.
    NotForThisSession,
    /// Written to the subscriber's stream.
    Sent { switched: bool },
    /// The subscriber has no send stream or codec for it.
    Failed,
}

/// SSRC routes a session caches. A real publisher has a few dozen streams at most (its m-lines × up to 4
/// simulcast layers, each with its RTX), so the cache never reaches this; a client sending RTP under ever new
/// SSRCs would otherwise grow it for as long as its session lives.
pub(crate) const MAX_CACHED_ROUTES: usize = 64;

/// Source addresses a session's STUN may come from over its life. Each new one becomes a remote candidate in
/// str0m's ICE agent, which keeps them all and scans them on every request: a client signing requests with
/// its own credentials from ever new ports would grow that list, and the work per request, without end. A
/// real client has a few candidates and a NAT rebinding now and then; one that moves networks more often than
/// this opens a new session.
pub const MAX_STUN_SOURCES: usize = 64;

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: SessionId,
    pub(crate) participant: String,
    pub(crate) name: Option<String>,
    pub(crate) room: Arc<str>,
    pub(crate) perms: MediaPerms,
    pub(crate) muted: MediaFlags,
    /// When the session's media token was issued (`iat`, the edge's clock): a control command decided before
    /// that second is already in the token, and does not override it.
    pub(crate) issued_at: Option<u64>,
    pub(crate) caps: MediaCaps,
    pub(crate) rtc: Rtc,
    pub(crate) ufrag: String,
    pub(crate) channel: Option<ChannelId>,
    pub(crate) published: HashMap<Mid, PublishedTrack>,
    stream_routes: HashMap<Ssrc, (Mid, Option<Rid>)>,
    /// Every source address a verified STUN request of this session came from (at most [`MAX_STUN_SOURCES`]).
    stun_sources: HashSet<SocketAddr>,
    pub(crate) subscriptions: HashMap<TrackKey, Subscription>,
    /// Receiving m-lines of tracks that went away, made `inactive` and free to carry the next track of their
    /// kind ([`FreeMid`]).
    free_mids: Vec<FreeMid>,
    /// Publishers' tracks of a kind whose m-line the client rejected (participant, kind): not offered to this
    /// session again, whatever track of theirs comes next (else every camera toggle would add a dead m-line).
    pub(crate) declined: HashSet<(String, MediaKind)>,
    /// Mids the client declared as screen share (`?screen=` or `screen` in its offers).
    pub(crate) screen_mids: HashSet<Mid>,
    /// Session-wide quality preference for received simulcast tracks.
    pub(crate) quality: Quality,
    pub(crate) pending_offer: Option<SdpPendingOffer>,
    /// When the outstanding node offer (last) went out.
    pub(crate) offered_at: Option<Instant>,
    /// The outstanding node offer's SDP, sent again as it is while unanswered ([`Session::resend_offer`]).
    offered_sdp: Option<String>,
    /// How often the outstanding offer was sent again.
    pub(crate) offer_resends: u32,
    /// Renegotiation offers that could not be sent in a row (for the log and the backoff).
    pub(crate) offer_failures: u32,
    /// After a failed offer, none is built again before this (the failure repeats: a full buffer drains in
    /// moments, an offer over the message limit stays over it, and building one costs the node's loop).
    next_offer_at: Option<Instant>,
    pub(crate) bwe_estimate: Option<Bitrate>,
    pub(crate) bwe_desired: Option<(u64, u64)>,
    pub(crate) created_at: Instant,
    pub(crate) last_rx: Instant,
    pub(crate) connected_at: Option<Instant>,
    pub(crate) first_forward_at: Option<Instant>,
    pub(crate) close_reason: Option<CloseReason>,
    /// Forwarded packets were written to `rtc` and it has not been drained since (see `Sfu::flush`).
    pub(crate) needs_drain: bool,
    /// Signalling messages the client may still send, in milliseconds since `created_at`.
    pub(crate) signal_budget: TokenBucket,
}

/// A receiving m-line whose track went away. str0m never reuses a stopped m-line: each stays in every later
/// offer (about 1–2.3 KB with its codecs), so a member of a long class in which people come and go would
/// outgrow the signalling limit (256 KiB) after a few dozen departures and never be offered a track again.
/// Instead the m-line goes `inactive` and the next track of its kind takes it over (`sendonly` again, with the
/// same SSRC): the client's m-line count is the most tracks it ever received at once. The forwarder comes
/// along, so the stream's sequence numbers and timestamps continue as across a simulcast switch.
#[derive(Debug)]
struct FreeMid {
    video: bool,
    mid: Mid,
    forwarder: super::forward::Forwarder,
}

/// How long a session waits before building an offer again after `failures` failed ones in a row: 250 ms,
/// doubling, at most 10 s.
fn offer_backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(6);
    (Duration::from_millis(250) * (1u32 << doublings)).min(Duration::from_secs(10))
}

/// Who a session belongs to, for authorising `DELETE` and for control commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionOwner {
    pub participant: String,
    pub room: String,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: SessionId,
        participant: String,
        name: Option<String>,
        room: Arc<str>,
        perms: MediaPerms,
        caps: MediaCaps,
        rtc: Rtc,
        ufrag: String,
        screen_mids: HashSet<Mid>,
        quality: Quality,
        now: Instant,
    ) -> Self {
        Session {
            id,
            participant,
            name,
            room,
            perms,
            muted: MediaFlags::default(),
            issued_at: None,
            caps,
            rtc,
            ufrag,
            channel: None,
            published: HashMap::new(),
            stream_routes: HashMap::new(),
            stun_sources: HashSet::new(),
            subscriptions: HashMap::new(),
            free_mids: Vec::new(),
            declined: HashSet::new(),
            screen_mids,
            quality,
            pending_offer: None,
            offered_at: None,
            offered_sdp: None,
            offer_resends: 0,
            offer_failures: 0,
            next_offer_at: None,
            bwe_estimate: None,
            bwe_desired: None,
            created_at: now,
            last_rx: now,
            connected_at: None,
            first_forward_at: None,
            close_reason: None,
            needs_drain: false,
            signal_budget: TokenBucket::full(SIGNAL_BURST, SIGNAL_RATE_PER_SEC, 0),
        }
    }

    pub(crate) fn owner(&self) -> SessionOwner {
        SessionOwner { participant: self.participant.clone(), room: self.room.to_string() }
    }

    /// Whether the token (and moderation) let this session publish `kind` right now.
    pub(crate) fn may_publish(&self, kind: MediaKind) -> bool {
        self.perms.permits(kind) && !self.muted.get(kind)
    }

    /// Whether the session's permission (not a mute) allows publishing `kind`.
    pub(crate) fn permits(&self, kind: MediaKind) -> bool {
        self.perms.permits(kind)
    }

    /// The kind a newly published m-line carries.
    pub(crate) fn kind_of(&self, mid: Mid, media: str0m::media::MediaKind) -> MediaKind {
        if media.is_audio() {
            MediaKind::Audio
        } else if self.screen_mids.contains(&mid) {
            MediaKind::Screen
        } else {
            MediaKind::Video
        }
    }

    /// The (mid, rid) an incoming RTP stream belongs to, from the header extensions or, once browsers stop
    /// sending those, from str0m's SSRC mapping; cached per SSRC, at most [`MAX_CACHED_ROUTES`] of them.
    pub(crate) fn stream_route(&mut self, ssrc: Ssrc, ext: &ExtensionValues) -> Option<(Mid, Option<Rid>)> {
        if let Some(route) = self.stream_routes.get(&ssrc) {
            return Some(*route);
        }
        let route = match self.rtc.direct_api().stream_rx(&ssrc) {
            Some(stream) => (stream.mid(), stream.rid()),
            None => (ext.mid?, ext.rid),
        };
        if self.stream_routes.len() >= MAX_CACHED_ROUTES {
            // Only a client inventing SSRCs gets here; the live streams' routes come back on their next packet.
            self.stream_routes.clear();
        }
        self.stream_routes.insert(ssrc, route);
        Some(route)
    }

    /// Whether a STUN request from `source` may reach this session's ICE agent: a source already verified, or
    /// any while fewer than [`MAX_STUN_SOURCES`] have been (only a request that passes its integrity check
    /// becomes a candidate, so only those count: see [`Session::verified_stun_source`]).
    pub(crate) fn admits_stun_from(&self, source: SocketAddr) -> bool {
        self.stun_sources.len() < MAX_STUN_SOURCES || self.stun_sources.contains(&source)
    }

    /// A request from `source` passed its integrity check: the ICE agent keeps it as a candidate.
    pub(crate) fn verified_stun_source(&mut self, source: SocketAddr) {
        if self.stun_sources.len() < MAX_STUN_SOURCES {
            self.stun_sources.insert(source);
        }
    }

    /// Forgets cached SSRC routes of `mid` (its track was unpublished).
    pub(crate) fn forget_routes(&mut self, mid: Mid) {
        self.stream_routes.retain(|_, (m, _)| *m != mid);
    }

    /// Forwards one packet of `source` if this session subscribes to it. Caller drains `rtc` afterwards.
    pub(crate) fn forward(&mut self, source: TrackKey, packet: &Outgoing<'_>) -> Delivery {
        if !self.perms.subscribe {
            return Delivery::NotForThisSession;
        }
        let Some(sub) = self.subscriptions.get_mut(&source) else {
            return Delivery::NotForThisSession;
        };
        let OutState::Open(mid) = sub.state else {
            return Delivery::NotForThisSession;
        };
        let pt_in = packet.params.pt();
        let pt_out = match sub.mapped_pt(pt_in) {
            Some(mapped) => mapped,
            None => {
                let mapped = self
                    .rtc
                    .codec_config()
                    .match_params(packet.params)
                    .map(|p| p.pt())
                    .filter(|pt| self.rtc.media(mid).is_some_and(|m| m.remote_pts().contains(pt)));
                sub.remember_pt(pt_in, mapped);
                mapped
            }
        };
        let Some(pt_out) = pt_out else {
            return Delivery::Failed;
        };
        let Verdict::Forward { seq, timestamp, vp8, switched } = sub.forwarder.on_packet(&packet.view) else {
            return Delivery::NotForThisSession;
        };
        let kind = sub.kind;
        let mut direct = self.rtc.direct_api();
        // The send stream by its cached SSRC (a hash lookup) rather than by mid (a scan of every send stream).
        let cached = sub.ssrc_out.filter(|ssrc| direct.stream_tx(ssrc).is_some_and(|s| s.mid() == mid));
        let stream = match cached {
            Some(ssrc) => direct.stream_tx(&ssrc),
            None => {
                let stream = direct.stream_tx_by_mid(mid, None);
                sub.ssrc_out = stream.as_ref().map(|s| s.ssrc());
                stream
            }
        };
        let Some(stream) = stream else {
            return Delivery::Failed;
        };
        let ext_vals = ExtensionValues {
            audio_level: packet.ext_vals.audio_level,
            voice_activity: packet.ext_vals.voice_activity,
            video_orientation: packet.ext_vals.video_orientation,
            ..ExtensionValues::default()
        };
        let mut write = RtpWrite::new(pt_out, seq.into(), timestamp, packet.wallclock, Arc::clone(packet.payload))
            .marker(packet.marker)
            .ext_vals(ext_vals)
            .nackable(kind != MediaKind::Audio);
        if let Some(patch) = vp8 {
            write = write.vp8_patch(patch);
        }
        stream.write_rtp(write);
        Delivery::Sent { switched }
    }

    /// The client's receiving m-lines and what they carry.
    pub(crate) fn track_infos(&self) -> Vec<TrackInfo> {
        let mut tracks: Vec<TrackInfo> = self
            .subscriptions
            .values()
            .filter(|s| !s.source_gone && matches!(s.state, OutState::Negotiating(_) | OutState::Open(_)))
            .filter_map(|s| {
                Some(TrackInfo {
                    mid: s.state.mid()?.to_string(),
                    participant: s.publisher.participant.clone(),
                    name: s.publisher.name.clone(),
                    kind: s.kind,
                    source: s.source.to_string(),
                })
            })
            .collect();
        tracks.sort_by(|a, b| a.mid.cmp(&b.mid));
        tracks
    }

    /// Sends a signalling message on the data channel; `false` if there is none or it is full.
    pub(crate) fn send_signal(&mut self, message: &NodeSignal) -> Result<(), String> {
        let Some(id) = self.channel else {
            return Err("the data channel is not open yet".into());
        };
        let text = serde_json::to_string(message).map_err(|e| format!("cannot encode the message: {e}"))?;
        if text.len() > MAX_SIGNAL_BYTES {
            return Err(format!("the message is {} bytes, over the channel's {MAX_SIGNAL_BYTES}", text.len()));
        }
        let Some(mut channel) = self.rtc.channel(id) else {
            return Err("the data channel is gone".into());
        };
        match channel.write(false, text.as_bytes()) {
            Ok(true) => Ok(()),
            Ok(false) => Err("the data channel's send buffer is full".into()),
            Err(e) => Err(format!("the data channel refused the message: {e}")),
        }
    }

    /// Offers the pending subscription changes (new m-lines, stopped m-lines) if the channel is open and no
    /// offer is outstanding. Returns whether an offer went out. Caller drains `rtc` afterwards.
    pub(crate) fn negotiate(&mut self, now: Instant) -> bool {
        if self.channel.is_none() || self.pending_offer.is_some() || !self.rtc.is_alive() {
            return false;
        }
        if self.next_offer_at.is_some_and(|at| now < at) {
            return false;
        }
        self.settle_unofferable_stops();
        let mut change = self.rtc.sdp_api();
        for (key, sub) in self.subscriptions.iter_mut() {
            match sub.state {
                OutState::ToOpen => {
                    let video = sub.kind != MediaKind::Audio;
                    let mid = match self.free_mids.iter().position(|free| free.video == video) {
                        Some(at) => {
                            let free = self.free_mids.swap_remove(at);
                            change.set_direction(free.mid, Direction::SendOnly);
                            sub.forwarder = free.forwarder;
                            free.mid
                        }
                        None => {
                            let media_kind =
                                if video { str0m::media::MediaKind::Video } else { str0m::media::MediaKind::Audio };
                            let track_id = format!("{}-{}-{}", sub.kind.as_str(), key.session, key.mid);
                            change.add_media(
                                media_kind,
                                Direction::SendOnly,
                                Some(sub.publisher.participant.clone()),
                                Some(track_id),
                                None,
                            )
                        }
                    };
                    sub.state = OutState::Negotiating(mid);
                }
                OutState::ToStop(mid) => {
                    change.set_direction(mid, Direction::Inactive);
                    sub.state = OutState::NegotiatingStop(mid);
                }
                _ => {}
            }
        }
        if !change.has_changes() {
            return false;
        }
        let Some((offer, pending)) = change.apply() else {
            return false;
        };
        self.pending_offer = Some(pending);
        self.offered_at = Some(now);
        self.offer_resends = 0;
        let sdp = offer.to_sdp_string();
        let message = NodeSignal::Offer { sdp: sdp.clone(), tracks: self.track_infos() };
        if let Err(reason) = self.send_signal(&message) {
            self.offer_failures = self.offer_failures.saturating_add(1);
            let backoff = offer_backoff(self.offer_failures);
            self.next_offer_at = Some(now + backoff);
            // Log the first failure and then ever more rarely.
            if self.offer_failures.is_power_of_two() {
                tracing::warn!(
                    session = %self.id, participant = %self.participant, %reason, attempts = self.offer_failures,
                    retry_in_ms = backoff.as_millis() as u64, "could not send the renegotiation offer; will retry"
                );
            }
            self.pending_offer = None;
            self.rollback_negotiation();
            return false;
        }
        self.offered_sdp = Some(sdp);
        self.offer_failures = 0;
        self.next_offer_at = None;
        true
    }

    /// Holds the next offer back for the shortest backoff (after the client refused one).
    pub(crate) fn defer_next_offer(&mut self, now: Instant) {
        self.next_offer_at = Some(now + offer_backoff(1));
    }

    /// Ends the stops no offer would carry: an m-line the client already made `inactive` (setting it inactive
    /// again changes nothing, so no offer would go out and the stop would wait for ever) is free at once; one
    /// the client rejected or stopped cannot carry anything again and is forgotten. Free m-lines that were
    /// stopped meanwhile leave the pool.
    fn settle_unofferable_stops(&mut self) {
        let mut settled = Vec::new();
        for (key, sub) in &self.subscriptions {
            if let OutState::ToStop(mid) = sub.state {
                match self.rtc.media(mid) {
                    Some(media) if !media.disabled() && media.direction() != Direction::Inactive => {}
                    Some(media) if !media.disabled() => settled.push((*key, Some(mid))),
                    _ => settled.push((*key, None)),
                }
            }
        }
        for (key, reusable) in settled {
            if let Some(mut sub) = self.subscriptions.remove(&key) {
                if let Some(mid) = reusable {
                    let video = sub.kind != MediaKind::Audio;
                    self.free_mids.push(FreeMid { video, mid, forwarder: std::mem::take(&mut sub.forwarder) });
                }
            }
        }
        let rtc = &self.rtc;
        self.free_mids.retain(|free| rtc.media(free.mid).is_some_and(|media| !media.disabled()));
    }

    /// Sends the outstanding node offer again, unchanged: the client may have lost it, or may be answering it
    /// late. A *different* offer would not do: a client that applied the first one would find the second's
    /// m-lines out of order and refuse every offer after it. A client that answers both gets an error for the
    /// second answer, which changes nothing. Caller drains `rtc` afterwards.
    pub(crate) fn resend_offer(&mut self, now: Instant) -> Result<(), String> {
        let Some(sdp) = self.offered_sdp.clone().filter(|_| self.pending_offer.is_some()) else {
            return Err("no node offer outstanding".into());
        };
        self.offered_at = Some(now);
        self.offer_resends = self.offer_resends.saturating_add(1);
        self.send_signal(&NodeSignal::Offer { sdp, tracks: self.track_infos() })
    }

    /// Returns subscriptions of a dropped node offer to their "to do" states.
    pub(crate) fn rollback_negotiation(&mut self) {
        self.offered_at = None;
        self.offered_sdp = None;
        // str0m sets an m-line's direction on the session at once (not when the answer comes), and a direction
        // set again to what it is is no change to offer: put back what the dropped offer changed, so that the
        // next offer carries it again.
        let mut to_inactive = Vec::new();
        let mut to_sendonly = Vec::new();
        for sub in self.subscriptions.values_mut() {
            match sub.state {
                OutState::Negotiating(mid) => {
                    sub.state = OutState::ToOpen;
                    // A reused m-line exists on the session already; a new one only in the dropped offer.
                    if self.rtc.media(mid).is_some() {
                        to_inactive.push(mid);
                        let video = sub.kind != MediaKind::Audio;
                        let forwarder = std::mem::take(&mut sub.forwarder);
                        self.free_mids.push(FreeMid { video, mid, forwarder });
                    }
                }
                OutState::NegotiatingStop(mid) => {
                    sub.state = OutState::ToStop(mid);
                    to_sendonly.push(mid);
                }
                _ => {}
            }
        }
        let mut undo = self.rtc.sdp_api();
        for mid in to_inactive {
            undo.set_direction(mid, Direction::Inactive);
        }
        for mid in to_sendonly {
            undo.set_direction(mid, Direction::SendOnly);
        }
    }

    /// Applies the client's answer to the outstanding node offer. Returns the subscriptions that opened.
    pub(crate) fn accept_answer(&mut self, answer: SdpAnswer) -> Result<Vec<TrackKey>, String> {
        let Some(pending) = self.pending_offer.take() else {
            return Err("there is no node offer outstanding to answer".into());
        };
        self.offered_at = None;
        self.offered_sdp = None;
        if let Err(e) = self.rtc.sdp_api().accept_answer(pending, answer) {
            self.rollback_negotiation();
            return Err(format!("the answer does not fit the node's offer: {e}"));
        }
        let mut opened = Vec::new();
        let rtc = &self.rtc;
        for (key, sub) in self.subscriptions.iter_mut() {
            if let OutState::Negotiating(mid) = sub.state {
                if rtc.media(mid).is_none_or(|media| media.disabled()) {
                    sub.state = OutState::Declined(mid);
                    self.declined.insert((sub.publisher.participant.clone(), sub.kind));
                } else if sub.source_gone {
                    sub.state = OutState::ToStop(mid);
                } else {
                    sub.state = OutState::Open(mid);
                    sub.forwarder.pause();
                    opened.push(*key);
                }
            }
        }
        let free_mids = &mut self.free_mids;
        self.subscriptions.retain(|_, sub| match sub.state {
            OutState::NegotiatingStop(mid) => {
                let video = sub.kind != MediaKind::Audio;
                free_mids.push(FreeMid { video, mid, forwarder: std::mem::take(&mut sub.forwarder) });
                false
            }
            // Declined after its track went: nothing is left to keep out.
            OutState::Declined(_) => !sub.source_gone,
            _ => true,
        });
        Ok(opened)
    }

    /// Marks the open copies whose m-line the client's own offer rejected (port 0) as declined: str0m stopped
    /// the line, so nothing could flow on it, and the track is not offered again while it is published.
    pub(crate) fn decline_rejected_lines(&mut self) {
        let rtc = &self.rtc;
        for sub in self.subscriptions.values_mut() {
            if let OutState::Open(mid) = sub.state {
                if rtc.media(mid).is_none_or(|media| media.disabled()) {
                    sub.state = OutState::Declined(mid);
                    self.declined.insert((sub.publisher.participant.clone(), sub.kind));
                }
            }
        }
    }

    /// Whether subscription changes wait for an offer.
    pub(crate) fn has_pending_changes(&self) -> bool {
        self.subscriptions.values().any(|s| matches!(s.state, OutState::ToOpen | OutState::ToStop(_)))
    }

    /// The subscription whose subscriber-side m-line is `mid`.
    pub(crate) fn subscription_by_mid(&mut self, mid: Mid) -> Option<&mut Subscription> {
        self.subscriptions.values_mut().find(|s| s.state.mid() == Some(mid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        let now = Instant::now();
        Session::new(
            SessionId::from_u64(1),
            "alice".into(),
            None,
            Arc::from("room"),
            MediaPerms { audio: true, video: true, screen: false, subscribe: true },
            MediaCaps::default(),
            Rtc::new(now),
            "ufrag".into(),
            HashSet::new(),
            Quality::default(),
            now,
        )
    }

    #[test]
    fn failed_offers_back_off_from_250_ms_to_10_s() {
        let ms = |failures| offer_backoff(failures).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(5), ms(6), ms(7), ms(u32::MAX)],
            [250, 500, 1_000, 4_000, 8_000, 10_000, 10_000]
        );
    }

    #[test]
    fn a_client_inventing_ssrcs_cannot_grow_the_route_cache() {
        let mut s = session();
        let ext = ExtensionValues { mid: Some(Mid::from("1")), ..Default::default() };
        for ssrc in 0..10_000u32 {
            assert_eq!(s.stream_route(Ssrc::from(ssrc), &ext), Some((Mid::from("1"), None)));
            assert!(s.stream_routes.len() <= MAX_CACHED_ROUTES);
        }
        // A route is still found (and cached again) after the cache started over.
        assert_eq!(s.stream_route(Ssrc::from(7), &ext), Some((Mid::from("1"), None)));
        assert!(s.stream_routes.contains_key(&Ssrc::from(7)));
        // No mid in the header and no str0m stream: no route, nothing cached.
        let before = s.stream_routes.len();
        assert_eq!(s.stream_route(Ssrc::from(99_999), &ExtensionValues::default()), None);
        assert_eq!(s.stream_routes.len(), before);
    }
}
