//! The test peer's sans-IO half: a str0m client (RTP mode) that publishes synthetic media, answers the node's
//! renegotiations and counts what it receives. [`super::TestPeer`] drives it over UDP; [`crate::sim`] drives it
//! in memory on a simulated clock.

use super::media::{latency_since, stamp_of, tag_of, SyntheticStream};
use crate::signal::{ClientSignal, NodeSignal, TrackInfo};
use homeroom_shared::media::Quality;
use homeroom_shared::protocol::MediaKind;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::{detect_vp8_keyframe, Codec};
use str0m::media::{Direction, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{DatagramRecv, Protocol, Receive, Transmit};
use str0m::rtp::{RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

/// The rids of a simulcast camera, lowest first, with their share of `video_kbps` and their size.
pub const SIMULCAST_LAYERS: [(&str, u32, (u16, u16)); 3] =
    [("l", 6, (320, 180)), ("m", 3, (640, 360)), ("h", 1, (1280, 720))];

/// What a test peer publishes and how.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    pub audio: bool,
    /// A camera track.
    pub video: bool,
    /// A screen-share track (declared with `?screen=`).
    pub screen: bool,
    /// Send the camera as three simulcast layers `l`, `m`, `h` (a sixth, a third and all of `video_kbps`).
    pub simulcast: bool,
    /// Camera bitrate (the top layer's, with simulcast).
    pub video_kbps: u32,
    /// Quality to ask for once the data channel opens.
    pub quality: Option<Quality>,
    /// Send a keyframe this often besides the ones asked for (`None`: only on request, as browsers do).
    pub keyframe_every: Option<Duration>,
    /// Keep the send stamp and latency of every media frame received from a peer of this process (audio
    /// packets and the last packet of each video frame: a frame is there when its last packet is), and the
    /// stamp of every frame sent, for [`PeerCore::take_arrivals`] and [`PeerCore::take_sent_stamps`]. Load
    /// tools turn it on.
    pub record_latency: bool,
    /// The signalling the SFU speaks on the data channel.
    pub dialect: Dialect,
    /// How often [`super::TestPeer`]'s driver refreshes the [`PeerStats`] snapshot it shares (a clone of the
    /// stats each time: load tools running hundreds of peers make it rare).
    pub snapshot_every: Duration,
    /// Turn on UDP GRO on the peer's socket, so that a GSO run from the node is read whole (see
    /// `peer::gro`: on loopback the node's send otherwise pays for cutting it at this socket). Off by default.
    pub gro: bool,
}

/// The signalling an SFU speaks with its peers over the data channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    /// Homeroom's media node: JSON messages (`offer`/`answer` with track lists, `quality`, `error`).
    #[default]
    Homeroom,
    /// str0m's `chat` example: bare str0m `SdpOffer`/`SdpAnswer` JSON, nothing else (the baseline SFU of the
    /// benchmarks).
    Str0mChat,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            audio: true,
            video: true,
            screen: false,
            simulcast: false,
            video_kbps: 300,
            quality: None,
            keyframe_every: None,
            record_latency: false,
            snapshot_every: Duration::from_millis(5),
            dialect: Dialect::Homeroom,
            gro: false,
        }
    }
}

impl PeerOptions {
    /// Publishes audio and camera video.
    pub fn publisher() -> Self {
        PeerOptions::default()
    }

    /// Publishes nothing; only receives.
    pub fn subscriber() -> Self {
        PeerOptions { audio: false, video: false, ..PeerOptions::default() }
    }

    /// Publishes audio and a three-layer simulcast camera.
    pub fn simulcast_publisher() -> Self {
        PeerOptions { simulcast: true, video_kbps: 600, ..PeerOptions::default() }
    }
}

/// What the peer received on one of its receiving m-lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceivedTrack {
    /// The peer-side m-line.
    pub mid: String,
    /// The publisher, from the node's track list.
    pub participant: Option<String>,
    pub kind: Option<MediaKind>,
    pub packets: u64,
    pub bytes: u64,
    /// Packets that start a VP8 keyframe.
    pub keyframes: u64,
    /// Packets per stream tag (`l`/`m`/`h` simulcast layers, `v` camera, `s` screen, `a` audio).
    pub tags: BTreeMap<String, u64>,
    /// The tag of the last packet received.
    pub last_tag: Option<String>,
    pub first_packet_at: Option<Instant>,
}

/// One media frame received from a peer of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameArrival {
    /// Its send stamp: when it was due at the sender, µs since the stamp epoch.
    pub sent_us: u64,
    /// Arrival minus send stamp, µs.
    pub latency_us: u32,
}

/// Everything the peer observed so far.
#[derive(Clone, Debug)]
pub struct PeerStats {
    /// When the peer was created (before its offer went to the node).
    pub created_at: Instant,
    /// When ICE and DTLS completed.
    pub connected_at: Option<Instant>,
    pub channel_open: bool,
    /// The node closed the session, or the connection was lost.
    pub closed: bool,
    /// Packets sent per stream tag.
    pub sent: BTreeMap<String, u64>,
    /// Media frames sent (a video frame is several packets, an audio frame one).
    pub frames_sent: u64,
    /// Media frames received: audio packets and the last packet (marker bit) of each video frame.
    pub frames_received: u64,
    /// Keyframe requests (PLI/FIR) the node sent to this peer.
    pub keyframe_requests: u64,
    /// Node offers received (answered, held or ignored).
    pub node_offers: u64,
    /// Node offers answered.
    pub renegotiations: u64,
    /// Node offers ignored because the peer's own offer was outstanding (glare; the node offers again).
    pub ignored_offers: u64,
    /// The peer's own re-offers the node answered.
    pub own_offers_answered: u64,
    /// Received tracks by peer-side mid.
    pub tracks: BTreeMap<String, ReceivedTrack>,
    /// `error` messages from the node.
    pub errors: Vec<String>,
    /// The largest message the node sent over the data channel (a big room's offer), in bytes.
    pub largest_signal_bytes: usize,
}

impl PeerStats {
    fn new(now: Instant) -> Self {
        PeerStats {
            created_at: now,
            connected_at: None,
            channel_open: false,
            closed: false,
            sent: BTreeMap::new(),
            frames_sent: 0,
            frames_received: 0,
            keyframe_requests: 0,
            node_offers: 0,
            renegotiations: 0,
            ignored_offers: 0,
            own_offers_answered: 0,
            tracks: BTreeMap::new(),
            errors: Vec::new(),
            largest_signal_bytes: 0,
        }
    }

    /// Packets received from `participant`'s tracks of `kind`.
    pub fn packets_from(&self, participant: &str, kind: MediaKind) -> u64 {
        self.tracks
            .values()
            .filter(|t| t.participant.as_deref() == Some(participant) && t.kind == Some(kind))
            .map(|t| t.packets)
            .sum()
    }

    /// Packets received of `kind`, from anyone.
    pub fn packets_of(&self, kind: MediaKind) -> u64 {
        self.tracks.values().filter(|t| t.kind == Some(kind)).map(|t| t.packets).sum()
    }

    /// Packets received in total.
    pub fn packets(&self) -> u64 {
        self.tracks.values().map(|t| t.packets).sum()
    }

    /// The track received from `participant` of `kind`, if any.
    pub fn track(&self, participant: &str, kind: MediaKind) -> Option<&ReceivedTrack> {
        self.tracks.values().find(|t| t.participant.as_deref() == Some(participant) && t.kind == Some(kind))
    }

    /// The earliest first packet over all received tracks.
    pub fn first_packet_at(&self) -> Option<Instant> {
        self.tracks.values().filter_map(|t| t.first_packet_at).min()
    }
}

/// Why the peer could not use the node's answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerCoreError {
    #[error("the node's answer is not SDP: {0}")]
    BadAnswer(String),
    #[error("the node's answer does not fit the offer: {0}")]
    AnswerRefused(String),
    #[error("there is no offer waiting for an answer")]
    NoPendingOffer,
    #[error("the peer's address cannot be an ICE candidate: {0}")]
    BadCandidate(String),
}

/// The str0m side of a test peer.
#[derive(Debug)]
pub struct PeerCore {
    rtc: Rtc,
    local_addr: SocketAddr,
    pending: Option<SdpPendingOffer>,
    channel: Option<ChannelId>,
    streams: Vec<SyntheticStream>,
    queued: Vec<ClientSignal>,
    outbox: Vec<Transmit>,
    stats: PeerStats,
    /// The latest time fed in (str0m events carry none).
    last_now: Instant,
    /// Frames received and send stamps of frames sent, when the options ask for them.
    arrivals: Option<Vec<FrameArrival>>,
    sent_stamps: Option<Vec<u64>>,
    dialect: Dialect,
    /// How long the peer takes to answer a node offer (a slow `setRemoteDescription`; zero: at once).
    answer_delay: Duration,
    /// Node offers waiting for their answer: when it is due, the SDP and the track list.
    held_offers: Vec<(Instant, String, Vec<TrackInfo>)>,
    /// Tracks whose m-lines this peer's answers reject (port 0), as a client without that codec would.
    declined: Vec<(String, MediaKind)>,
}

/// A peer's first offer, for `POST /v1/sessions`.
#[derive(Clone, Debug)]
pub struct PeerOffer {
    pub sdp: String,
    /// Mids carrying screen share (the `screen` query parameter).
    pub screen_mids: Vec<String>,
}

/// What the peer's data channel buffers for sending, like a browser's (Chromium closes a channel beyond 16 MiB).
const BROWSER_SEND_BUFFER: usize = 4 * 1024 * 1024;

impl PeerCore {
    /// A peer bound (logically) to `local_addr`, with its first offer.
    pub fn new(
        options: &PeerOptions,
        local_addr: SocketAddr,
        now: Instant,
    ) -> Result<(Self, PeerOffer), PeerCoreError> {
        // A browser's data channel buffers megabytes before refusing a send (Chromium: 16 MiB); str0m's
        // default of 128 KiB would refuse the answer to a big room's offer, which no browser does.
        let mut rtc = RtcConfig::new().set_rtp_mode(true).set_sctp_max_buffered_amount(BROWSER_SEND_BUFFER).build(now);
        let candidate = Candidate::host(local_addr, "udp").map_err(|e| PeerCoreError::BadCandidate(e.to_string()))?;
        rtc.add_local_candidate(candidate);

        let mut change = rtc.sdp_api();
        let mut streams = Vec::new();
        let mut screen_mids = Vec::new();
        if options.audio {
            let mid = change.add_media(str0m::media::MediaKind::Audio, Direction::SendOnly, None, None, None);
            streams.push(SyntheticStream::audio(mid));
        }
        if options.video {
            if options.simulcast {
                let mut simulcast = Simulcast::new();
                for (rid, _, _) in SIMULCAST_LAYERS {
                    simulcast.add_send_layer(SimulcastLayer::new(rid));
                }
                let mid =
                    change.add_media(str0m::media::MediaKind::Video, Direction::SendOnly, None, None, Some(simulcast));
                for (rid, divisor, size) in SIMULCAST_LAYERS {
                    let kbps = (options.video_kbps / divisor).max(20);
                    let rid: Rid = rid.into();
                    streams.push(SyntheticStream::video(
                        mid,
                        Some(rid),
                        MediaKind::Video,
                        kbps,
                        30,
                        size,
                        options.keyframe_every,
                    ));
                }
            } else {
                let mid = change.add_media(str0m::media::MediaKind::Video, Direction::SendOnly, None, None, None);
                streams.push(SyntheticStream::video(
                    mid,
                    None,
                    MediaKind::Video,
                    options.video_kbps,
                    30,
                    (640, 360),
                    options.keyframe_every,
                ));
            }
        }
        if options.screen {
            let mid = change.add_media(str0m::media::MediaKind::Video, Direction::SendOnly, None, None, None);
            screen_mids.push(mid.to_string());
            streams.push(SyntheticStream::video(
                mid,
                None,
                MediaKind::Screen,
                (options.video_kbps / 2).max(50),
                10,
                (1920, 1080),
                options.keyframe_every,
            ));
        }
        change.add_channel("homeroom".into());
        let Some((offer, pending)) = change.apply() else {
            // A data channel is always a change, so this does not happen; keep the type honest anyway.
            return Err(PeerCoreError::NoPendingOffer);
        };
        let mut queued = Vec::new();
        if let Some(quality) = options.quality {
            queued.push(ClientSignal::Quality { quality, mid: None });
        }
        let core = PeerCore {
            rtc,
            local_addr,
            pending: Some(pending),
            channel: None,
            streams,
            queued,
            outbox: Vec::new(),
            stats: PeerStats::new(now),
            last_now: now,
            arrivals: options.record_latency.then(Vec::new),
            sent_stamps: options.record_latency.then(Vec::new),
            dialect: options.dialect,
            answer_delay: Duration::ZERO,
            held_offers: Vec::new(),
            declined: Vec::new(),
        };
        Ok((core, PeerOffer { sdp: offer.to_sdp_string(), screen_mids }))
    }

    /// Applies the node's answer to the first offer.
    pub fn accept_answer(&mut self, answer_sdp: &str) -> Result<(), PeerCoreError> {
        let answer = SdpAnswer::from_sdp_string(answer_sdp).map_err(|e| PeerCoreError::BadAnswer(e.to_string()))?;
        let pending = self.pending.take().ok_or(PeerCoreError::NoPendingOffer)?;
        self.rtc.sdp_api().accept_answer(pending, answer).map_err(|e| PeerCoreError::AnswerRefused(e.to_string()))?;
        self.drain();
        Ok(())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> &PeerStats {
        &self.stats
    }

    pub fn is_alive(&self) -> bool {
        self.rtc.is_alive() && !self.stats.closed
    }

    /// Asks the node for `quality` (for one received m-line, or all).
    pub fn set_quality(&mut self, quality: Quality, mid: Option<String>) {
        self.queued.push(ClientSignal::Quality { quality, mid });
        self.flush_signals();
    }

    /// Sends `message` over the signalling channel, whatever it holds (tests of the node's limits: the peer's
    /// own state does not change, so the node's answer or error is only recorded).
    pub fn send_raw_signal(&mut self, message: ClientSignal) {
        self.queued.push(message);
        self.flush_signals();
    }

    /// Starts publishing a screen share: a new m-line offered over the signalling channel (declared in
    /// `screen`). Returns `false` when the channel is not open or an offer is already outstanding.
    pub fn start_screen_share(&mut self, kbps: u32) -> bool {
        if self.channel.is_none() || self.pending.is_some() {
            return false;
        }
        let mut change = self.rtc.sdp_api();
        let mid = change.add_media(str0m::media::MediaKind::Video, Direction::SendOnly, None, None, None);
        let Some((offer, pending)) = change.apply() else {
            return false;
        };
        self.pending = Some(pending);
        self.streams.push(SyntheticStream::video(mid, None, MediaKind::Screen, kbps, 10, (1920, 1080), None));
        self.queued.push(ClientSignal::Offer { sdp: offer.to_sdp_string(), screen: vec![mid.to_string()] });
        self.flush_signals();
        true
    }

    /// Stops publishing every track of `kind`: their m-lines become `inactive` in a new offer.
    pub fn stop_publishing(&mut self, kind: MediaKind) -> bool {
        if self.channel.is_none() || self.pending.is_some() {
            return false;
        }
        let mids: Vec<Mid> = self.streams.iter().filter(|s| s.kind == kind).map(|s| s.mid).collect();
        self.streams.retain(|s| s.kind != kind);
        self.offer_inactive(&mids)
    }

    /// Stops receiving on `mid` (an m-line the node sends on): it becomes `inactive` in a new offer of ours, as a
    /// browser's `transceiver.direction = "inactive"` does. Returns `false` when no offer could be made.
    pub fn stop_receiving(&mut self, mid: &str) -> bool {
        if self.channel.is_none() || self.pending.is_some() {
            return false;
        }
        self.offer_inactive(&[Mid::from(mid)])
    }

    /// Offers the node `mids` as `inactive`; `false` when that changes nothing.
    fn offer_inactive(&mut self, mids: &[Mid]) -> bool {
        let mut change = self.rtc.sdp_api();
        for mid in mids {
            change.set_direction(*mid, Direction::Inactive);
        }
        let Some((offer, pending)) = change.apply() else {
            return false;
        };
        self.pending = Some(pending);
        self.queued.push(ClientSignal::Offer { sdp: offer.to_sdp_string(), screen: Vec::new() });
        self.flush_signals();
        true
    }

    /// Sends a keyframe request (PLI) for the received track on `mid`, as a decoder that lost its picture would.
    pub fn request_keyframe(&mut self, mid: &str) -> bool {
        let mid = Mid::from(mid);
        let mut direct = self.rtc.direct_api();
        let Some(stream) = direct.stream_rx_by_mid(mid, None) else {
            return false;
        };
        stream.request_keyframe(str0m::media::KeyframeRequestKind::Pli);
        self.drain();
        true
    }

    /// The media frames received since the last call; empty unless [`PeerOptions::record_latency`].
    pub fn take_arrivals(&mut self) -> Vec<FrameArrival> {
        self.arrivals.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The send stamps (µs since the stamp epoch) of the frames sent since the last call; empty unless
    /// [`PeerOptions::record_latency`].
    pub fn take_sent_stamps(&mut self) -> Vec<u64> {
        self.sent_stamps.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The datagrams to send.
    pub fn take_transmits(&mut self) -> Vec<Transmit> {
        std::mem::take(&mut self.outbox)
    }

    /// When the peer next needs [`PeerCore::handle_timeout`].
    pub fn next_deadline(&mut self) -> Instant {
        let rtc_deadline = self.drain();
        let media = if self.stats.connected_at.is_some() {
            // A stream that has not sent yet is due now.
            self.streams.iter().map(|s| s.next_frame_at.unwrap_or(self.last_now)).min()
        } else {
            None
        };
        let held = self.held_offers.iter().map(|(due, _, _)| *due).min();
        [media, held].into_iter().flatten().fold(rtc_deadline, Instant::min)
    }

    /// Answers node offers `delay` after they arrive, like a browser busy applying a large description.
    pub fn set_answer_delay(&mut self, delay: Duration) {
        self.answer_delay = delay;
    }

    /// Rejects, in every later answer to a node offer, the m-line of `participant`'s `kind` (port 0, outside
    /// the BUNDLE group: RFC 8843's rejection), as a client that cannot or will not receive it does.
    pub fn decline_track_of(&mut self, participant: &str, kind: MediaKind) {
        self.declined.push((participant.to_owned(), kind));
    }

    /// A datagram arrived from `source`.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) {
        self.last_now = self.last_now.max(now);
        let Ok(contents) = DatagramRecv::try_from(datagram) else {
            return;
        };
        let input =
            Input::Receive(now, Receive { proto: Protocol::Udp, source, destination: self.local_addr, contents });
        if self.rtc.handle_input(input).is_ok() {
            self.drain();
        }
    }

    /// Time passed: advances str0m and sends the frames that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        if self.rtc.handle_input(Input::Timeout(now)).is_ok() {
            self.drain();
        }
        if self.held_offers.iter().any(|(due, _, _)| *due <= now) {
            let (due, later) = std::mem::take(&mut self.held_offers).into_iter().partition(|(due, _, _)| *due <= now);
            self.held_offers = later;
            for (_, sdp, tracks) in due {
                self.answer_node_offer(&sdp, tracks);
            }
            self.drain();
        }
        if self.stats.connected_at.is_some() && self.rtc.is_alive() {
            self.send_due_frames(now);
        }
    }

    /// Closes the connection (DTLS close_notify).
    pub fn close(&mut self) {
        if self.rtc.is_alive() && self.rtc.close().is_ok() {
            self.drain();
        }
        self.stats.closed = true;
    }

    fn send_due_frames(&mut self, now: Instant) {
        for index in 0..self.streams.len() {
            let Some(stream) = self.streams.get_mut(index) else {
                continue;
            };
            if !stream.due(now) {
                continue;
            }
            let (mid, rid, kind) = (stream.mid, stream.rid, stream.kind);
            let pt = match stream.pt {
                Some(pt) => Some(pt),
                None => {
                    let codec = if kind == MediaKind::Audio { Codec::Opus } else { Codec::Vp8 };
                    let remote = self.rtc.media(mid).map(|m| m.remote_pts().to_vec()).unwrap_or_default();
                    let pt = self
                        .rtc
                        .codec_config()
                        .find(|p| p.spec().codec == codec && remote.contains(&p.pt()))
                        .map(|p| p.pt());
                    stream.pt = pt;
                    pt
                }
            };
            let packets = stream.next_frame(now);
            let Some(pt) = pt else {
                continue;
            };
            let stamp = packets.first().and_then(|p| stamp_of(&p.payload));
            let tag = packets.first().and_then(|p| tag_of(&p.payload)).unwrap_or_default();
            let mut written = 0;
            for packet in packets {
                let mut direct = self.rtc.direct_api();
                let Some(tx) = direct.stream_tx_by_mid(mid, rid) else {
                    break;
                };
                let write = RtpWrite::new(pt, packet.seq.into(), packet.rtp_time, now, packet.payload)
                    .marker(packet.marker)
                    .nackable(kind != MediaKind::Audio);
                tx.write_rtp(write);
                written += 1;
                self.drain();
            }
            *self.stats.sent.entry(tag).or_default() += written;
            if written > 0 {
                self.stats.frames_sent += 1;
                if let (Some(stamps), Some(stamp)) = (self.sent_stamps.as_mut(), stamp) {
                    stamps.push(stamp);
                }
            }
        }
    }

    /// Drains str0m until its next timeout, handling events; returns that timeout.
    fn drain(&mut self) -> Instant {
        loop {
            if !self.rtc.is_alive() {
                self.stats.closed = true;
                return self.last_now + Duration::from_secs(3600);
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => return at,
                Ok(Output::Transmit(transmit)) => self.outbox.push(transmit),
                Ok(Output::Event(event)) => self.on_event(event),
                Err(_) => {
                    self.stats.closed = true;
                    self.rtc.disconnect();
                }
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                self.stats.connected_at = Some(self.last_now);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) | Event::Closed => {
                self.stats.closed = true;
            }
            Event::ChannelOpen(id, _) => {
                self.channel = Some(id);
                self.stats.channel_open = true;
                self.flush_signals();
            }
            Event::ChannelData(data) if self.dialect == Dialect::Str0mChat => self.on_chat_signal(&data.data),
            Event::ChannelData(data) => {
                self.stats.largest_signal_bytes = self.stats.largest_signal_bytes.max(data.data.len());
                match serde_json::from_slice::<NodeSignal>(&data.data) {
                    Ok(NodeSignal::Offer { sdp, tracks }) => self.on_node_offer(&sdp, tracks),
                    Ok(NodeSignal::Answer { sdp, tracks }) => self.on_node_answer(&sdp, tracks),
                    Ok(NodeSignal::Error { code, message, .. }) => self.stats.errors.push(format!("{code}: {message}")),
                    Err(e) => self.stats.errors.push(format!("unreadable node message: {e}")),
                }
            }
            Event::RtpPacket(packet) => self.on_rtp(packet),
            Event::KeyframeRequest(request) => {
                self.stats.keyframe_requests += 1;
                for stream in self.streams.iter_mut().filter(|s| s.mid == request.mid) {
                    if request.rid.is_none() || stream.rid == request.rid {
                        stream.want_keyframe = true;
                    }
                }
            }
            _ => {}
        }
    }

    /// str0m's `chat` example renegotiates with bare `SdpOffer` JSON and expects a bare `SdpAnswer` back.
    fn on_chat_signal(&mut self, data: &[u8]) {
        let Ok(offer) = serde_json::from_slice::<SdpOffer>(data) else {
            self.stats.errors.push(format!("unreadable chat message: {}", String::from_utf8_lossy(data)));
            return;
        };
        match self.rtc.sdp_api().accept_offer(offer) {
            Ok(answer) => {
                self.stats.renegotiations += 1;
                if let (Some(id), Ok(json)) = (self.channel, serde_json::to_string(&answer)) {
                    if let Some(mut channel) = self.rtc.channel(id) {
                        let _ = channel.write(false, json.as_bytes());
                    }
                }
                self.drain();
            }
            Err(e) => self.stats.errors.push(format!("could not accept the chat SFU's offer: {e}")),
        }
    }

    fn on_node_offer(&mut self, sdp: &str, tracks: Vec<TrackInfo>) {
        self.stats.node_offers += 1;
        if self.pending.is_some() {
            // Glare: the client is the impolite peer; the node answers our offer and offers again.
            self.stats.ignored_offers += 1;
            return;
        }
        if !self.answer_delay.is_zero() {
            self.held_offers.push((self.last_now + self.answer_delay, sdp.to_owned(), tracks));
            return;
        }
        self.answer_node_offer(sdp, tracks);
    }

    fn answer_node_offer(&mut self, sdp: &str, tracks: Vec<TrackInfo>) {
        let answer = SdpOffer::from_sdp_string(sdp)
            .map_err(|e| e.to_string())
            .and_then(|offer| self.rtc.sdp_api().accept_offer(offer).map_err(|e| e.to_string()));
        match answer {
            Ok(answer) => {
                self.stats.renegotiations += 1;
                let declined: Vec<&str> = tracks
                    .iter()
                    .filter(|t| self.declined.iter().any(|(who, kind)| *who == t.participant && *kind == t.kind))
                    .map(|t| t.mid.as_str())
                    .collect();
                let sdp = declined.iter().fold(answer.to_sdp_string(), |sdp, mid| reject_mline(&sdp, mid));
                self.learn_tracks(tracks);
                self.queued.push(ClientSignal::Answer { sdp });
                self.flush_signals();
            }
            Err(e) => self.stats.errors.push(format!("could not accept the node's offer: {e}")),
        }
    }

    fn on_node_answer(&mut self, sdp: &str, tracks: Vec<TrackInfo>) {
        let Some(pending) = self.pending.take() else {
            self.stats.errors.push("an answer from the node without an offer of ours".into());
            return;
        };
        let applied = SdpAnswer::from_sdp_string(sdp)
            .map_err(|e| e.to_string())
            .and_then(|answer| self.rtc.sdp_api().accept_answer(pending, answer).map_err(|e| e.to_string()));
        match applied {
            Ok(()) => {
                self.stats.own_offers_answered += 1;
                self.learn_tracks(tracks);
            }
            Err(e) => self.stats.errors.push(format!("could not apply the node's answer: {e}")),
        }
    }

    fn learn_tracks(&mut self, tracks: Vec<TrackInfo>) {
        for info in tracks {
            let entry = self.stats.tracks.entry(info.mid.clone()).or_default();
            if entry.participant.as_ref().is_some_and(|p| *p != info.participant) {
                // The node reuses a receiving m-line of a track that went away for the next one: a new track.
                *entry = ReceivedTrack::default();
            }
            entry.mid = info.mid;
            entry.participant = Some(info.participant);
            entry.kind = Some(info.kind);
        }
    }

    fn on_rtp(&mut self, packet: RtpPacket) {
        let mid: Option<Mid> = match self.rtc.direct_api().stream_rx(&packet.header.ssrc) {
            Some(stream) => Some(stream.mid()),
            None => packet.header.ext_vals.mid,
        };
        let Some(mid) = mid else {
            return;
        };
        let entry = self.stats.tracks.entry(mid.to_string()).or_default();
        if entry.mid.is_empty() {
            entry.mid = mid.to_string();
        }
        entry.packets += 1;
        entry.bytes += packet.payload.len() as u64;
        let audio = match entry.kind {
            Some(kind) => kind == MediaKind::Audio,
            None => self.rtc.media(mid).is_some_and(|m| m.kind() == str0m::media::MediaKind::Audio),
        };
        if audio || packet.header.marker {
            self.stats.frames_received += 1;
            let stamped = stamp_of(&packet.payload).and_then(|s| Some((s, latency_since(s, packet.timestamp)?)));
            if let (Some(arrivals), Some((sent_us, latency))) = (self.arrivals.as_mut(), stamped) {
                let latency_us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
                arrivals.push(FrameArrival { sent_us, latency_us });
            }
        }
        entry.first_packet_at.get_or_insert(packet.timestamp);
        if entry.kind != Some(MediaKind::Audio) && detect_vp8_keyframe(&packet.payload) {
            entry.keyframes += 1;
        }
        if let Some(tag) = tag_of(&packet.payload) {
            *entry.tags.entry(tag.clone()).or_default() += 1;
            entry.last_tag = Some(tag);
        }
    }

    fn flush_signals(&mut self) {
        let Some(id) = self.channel else {
            return;
        };
        for message in std::mem::take(&mut self.queued) {
            let Ok(text) = serde_json::to_string(&message) else {
                continue;
            };
            if let Some(mut channel) = self.rtc.channel(id) {
                let _ = channel.write(false, text.as_bytes());
            }
            self.drain();
        }
    }
}

/// `sdp` with the m-line whose `a=mid` is `mid` rejected: its port 0 and its mid out of the BUNDLE group (a
/// bundled line also has port 0 under max-bundle, so the group decides).
fn reject_mline(sdp: &str, mid: &str) -> String {
    let mid_line = format!("a=mid:{mid}");
    let mut lines: Vec<String> = Vec::new();
    let (mut section, mut target) = (None, None);
    for line in sdp.split("\r\n") {
        if line.starts_with("m=") {
            section = Some(lines.len());
        } else if line == mid_line {
            target = section;
        }
        match line.strip_prefix("a=group:BUNDLE") {
            Some(group) => {
                let kept: Vec<&str> = group.split_whitespace().filter(|m| *m != mid).collect();
                lines.push(format!("a=group:BUNDLE {}", kept.join(" ")));
            }
            None => lines.push(line.to_owned()),
        }
    }
    // "m=video 9 UDP/TLS/RTP/SAVPF 96" → "m=video 0 UDP/TLS/RTP/SAVPF 96"
    if let Some(mline) = target.and_then(|at| lines.get_mut(at)) {
        let mut fields: Vec<&str> = mline.split(' ').collect();
        if let Some(port) = fields.get_mut(1) {
            *port = "0";
        }
        *mline = fields.join(" ");
    }
    lines.join("\r\n")
}

#[cfg(test)]
mod tests {
    use super::reject_mline;

    #[test]
    fn a_rejected_mline_gets_port_0_and_leaves_the_bundle() {
        let sdp = "v=0\r\na=group:BUNDLE 0 1 2\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\n";
        let rejected = reject_mline(sdp, "1");
        assert_eq!(
            rejected,
            "v=0\r\na=group:BUNDLE 0 2\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
             m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\n"
        );
        assert_eq!(reject_mline(sdp, "7"), sdp, "no such mid: unchanged");
    }
}
