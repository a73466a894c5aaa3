//! Prometheus metrics of the node (`GET /metrics`, OpenMetrics text).
//!
//! The handles are cheap clones of atomics: the core counts on its hot path without locks or label lookups
//! (every labelled series it touches is resolved once, here).

use homeroom_shared::protocol::MediaKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

/// Why the node did not forward a packet it received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A moderator muted the publisher's kind (`POST /v1/control` `mute`).
    Muted,
    /// The publisher's token does not allow publishing this kind.
    NotPermitted,
    /// The packet arrived on an m-line the node does not know as published.
    UnknownTrack,
    /// Above the publisher's quality cap.
    OverCap,
    /// A layer (`rid`) beyond the most one track may have: a client inventing layers.
    TooManyLayers,
}

impl DropReason {
    const ALL: [DropReason; 5] = [
        DropReason::Muted,
        DropReason::NotPermitted,
        DropReason::UnknownTrack,
        DropReason::OverCap,
        DropReason::TooManyLayers,
    ];

    const fn as_str(self) -> &'static str {
        match self {
            DropReason::Muted => "muted",
            DropReason::NotPermitted => "not_permitted",
            DropReason::UnknownTrack => "unknown_track",
            DropReason::OverCap => "over_cap",
            DropReason::TooManyLayers => "too_many_layers",
        }
    }

    const fn index(self) -> usize {
        match self {
            DropReason::Muted => 0,
            DropReason::NotPermitted => 1,
            DropReason::UnknownTrack => 2,
            DropReason::OverCap => 3,
            DropReason::TooManyLayers => 4,
        }
    }
}

/// Where a keyframe request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyframeSource {
    /// A subscriber sent PLI or FIR.
    Subscriber,
    /// The node needs one: a new subscriber, a layer switch, an unmute.
    Node,
}

/// Per-kind counter handles, indexed by [`kind_index`].
#[derive(Clone, Debug, Default)]
pub(crate) struct PerKind {
    counters: [Counter; 3],
}

impl PerKind {
    fn new(family: &Family<KindLabel, Counter>) -> Self {
        PerKind { counters: KINDS.map(|kind| family.get_or_create(&KindLabel { kind: kind.as_str() }).clone()) }
    }

    pub(crate) fn inc_by(&self, kind: MediaKind, n: u64) {
        if let Some(counter) = self.counters.get(kind_index(kind)) {
            counter.inc_by(n);
        }
    }

    pub(crate) fn get(&self, kind: MediaKind) -> u64 {
        self.counters.get(kind_index(kind)).map_or(0, Counter::get)
    }
}

const KINDS: [MediaKind; 3] = [MediaKind::Audio, MediaKind::Video, MediaKind::Screen];

const fn kind_index(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
        MediaKind::Screen => 2,
    }
}

/// Every metric of a node. Clones share the same series.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub(crate) sessions: Gauge,
    pub(crate) rooms: Gauge,
    tracks: [Gauge; 3],
    pub(crate) capacity: Gauge,
    pub(crate) draining: Gauge,
    pub(crate) registered: Gauge,
    pub(crate) heartbeat_failures: Counter,
    pub(crate) sessions_created: Counter,
    sessions_closed: Family<ReasonLabel, Counter>,
    pub(crate) packets_in: PerKind,
    pub(crate) bytes_in: PerKind,
    pub(crate) packets_out: PerKind,
    pub(crate) bytes_out: PerKind,
    dropped: [Counter; DropReason::ALL.len()],
    keyframe_requests: [Counter; 2],
    pub(crate) keyframe_requests_sent: Counter,
    pub(crate) layer_switches: Counter,
    pub(crate) forwarding_errors: Counter,
    pub(crate) datagrams_in: Counter,
    pub(crate) datagrams_out: Counter,
    pub(crate) datagrams_out_gso: Counter,
    pub(crate) udp_bytes_in: Counter,
    pub(crate) udp_bytes_out: Counter,
    pub(crate) unroutable: Counter,
    pub(crate) stun_refused: Counter,
    pub(crate) send_errors: Counter,
    pub(crate) run_loop_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics in its own registry (prefix `homeroom_media_`).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("homeroom_media");
        let sessions = Gauge::default();
        registry.register("sessions", "Participant sessions on the node", sessions.clone());
        let rooms = Gauge::default();
        registry.register("rooms", "Rooms with at least one session", rooms.clone());
        let tracks_family = Family::<KindLabel, Gauge>::default();
        registry.register("tracks", "Published tracks by kind (audio, video, screen)", tracks_family.clone());
        let tracks = KINDS.map(|kind| tracks_family.get_or_create(&KindLabel { kind: kind.as_str() }).clone());
        let capacity = Gauge::default();
        registry.register("capacity", "Most sessions the node takes", capacity.clone());
        let draining = Gauge::default();
        registry.register("draining", "1 while the node drains for shutdown", draining.clone());
        let registered = Gauge::default();
        registry.register("registered", "1 while the edge accepts the node's heartbeats", registered.clone());
        let heartbeat_failures = Counter::default();
        registry.register(
            "heartbeat_failures",
            "Heartbeats to the edge that failed or were refused (the log says why)",
            heartbeat_failures.clone(),
        );
        let sessions_created = Counter::default();
        registry.register("sessions_created", "Sessions created", sessions_created.clone());
        let sessions_closed = Family::<ReasonLabel, Counter>::default();
        registry.register("sessions_closed", "Sessions closed, by reason", sessions_closed.clone());

        let per_kind = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<KindLabel, Counter>::default();
            registry.register(name, help, family.clone());
            PerKind::new(&family)
        };
        let packets_in = per_kind(&mut registry, "packets_in", "RTP packets received from publishers, by kind");
        let bytes_in = per_kind(&mut registry, "bytes_in", "RTP payload bytes received from publishers, by kind");
        let packets_out = per_kind(&mut registry, "packets_out", "RTP packets forwarded to subscribers, by kind");
        let bytes_out = per_kind(&mut registry, "bytes_out", "RTP payload bytes forwarded to subscribers, by kind");

        let dropped_family = Family::<ReasonLabel, Counter>::default();
        registry.register("packets_dropped", "Received RTP packets not forwarded, by reason", dropped_family.clone());
        let dropped = DropReason::ALL
            .map(|reason| dropped_family.get_or_create(&ReasonLabel { reason: reason.as_str() }).clone());
        let keyframe_family = Family::<SourceLabel, Counter>::default();
        registry.register(
            "keyframe_requests",
            "Keyframe requests wanted, by source (subscriber PLI/FIR or the node itself)",
            keyframe_family.clone(),
        );
        let keyframe_requests =
            ["subscriber", "node"].map(|source| keyframe_family.get_or_create(&SourceLabel { source }).clone());
        let keyframe_requests_sent = Counter::default();
        registry.register(
            "keyframe_requests_sent",
            "Keyframe requests sent to publishers after throttling",
            keyframe_requests_sent.clone(),
        );
        let layer_switches = Counter::default();
        registry.register("layer_switches", "Simulcast layer switches for subscribers", layer_switches.clone());
        let forwarding_errors = Counter::default();
        registry.register(
            "forwarding_errors",
            "Packets that could not be forwarded (no send stream, no matching codec, str0m errors)",
            forwarding_errors.clone(),
        );
        let datagrams_in = Counter::default();
        registry.register("udp_datagrams_in", "UDP datagrams received", datagrams_in.clone());
        let datagrams_out = Counter::default();
        registry.register("udp_datagrams_out", "UDP datagrams sent", datagrams_out.clone());
        let datagrams_out_gso = Counter::default();
        registry.register(
            "udp_datagrams_out_gso",
            "UDP datagrams sent in runs of one GSO call (part of udp_datagrams_out)",
            datagrams_out_gso.clone(),
        );
        let udp_bytes_in = Counter::default();
        registry.register("udp_bytes_in", "UDP bytes received", udp_bytes_in.clone());
        let udp_bytes_out = Counter::default();
        registry.register("udp_bytes_out", "UDP bytes sent", udp_bytes_out.clone());
        let unroutable = Counter::default();
        registry.register("udp_unroutable", "UDP datagrams that matched no session", unroutable.clone());
        let stun_refused = Counter::default();
        registry.register(
            "stun_refused",
            "STUN requests dropped: from a new source address of a session that has had too many",
            stun_refused.clone(),
        );
        let send_errors = Counter::default();
        registry.register("udp_send_errors", "UDP datagrams the socket refused to send", send_errors.clone());
        let run_loop_seconds = Histogram::new(exponential_buckets(0.000_005, 2.0, 18));
        registry.register(
            "run_loop_seconds",
            "Time the SFU core spends per run-loop turn (one datagram batch, timer tick or command)",
            run_loop_seconds.clone(),
        );

        Metrics {
            registry: Arc::new(registry),
            sessions,
            rooms,
            tracks,
            capacity,
            draining,
            registered,
            heartbeat_failures,
            sessions_created,
            sessions_closed,
            packets_in,
            bytes_in,
            packets_out,
            bytes_out,
            dropped,
            keyframe_requests,
            keyframe_requests_sent,
            layer_switches,
            forwarding_errors,
            datagrams_in,
            datagrams_out,
            datagrams_out_gso,
            udp_bytes_in,
            udp_bytes_out,
            unroutable,
            stun_refused,
            send_errors,
            run_loop_seconds,
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    pub(crate) fn dropped(&self, reason: DropReason) {
        if let Some(counter) = self.dropped.get(reason.index()) {
            counter.inc();
        }
    }

    pub(crate) fn keyframe_wanted(&self, source: KeyframeSource) {
        let index = match source {
            KeyframeSource::Subscriber => 0,
            KeyframeSource::Node => 1,
        };
        if let Some(counter) = self.keyframe_requests.get(index) {
            counter.inc();
        }
    }

    pub(crate) fn session_closed(&self, reason: &'static str) {
        self.sessions_closed.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub(crate) fn set_tracks(&self, kind: MediaKind, count: usize) {
        if let Some(gauge) = self.tracks.get(kind_index(kind)) {
            gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Packets forwarded to subscribers so far, by kind (tests and load tools).
    pub fn packets_out(&self, kind: MediaKind) -> u64 {
        self.packets_out.get(kind)
    }

    /// Packets received from publishers so far, by kind.
    pub fn packets_in(&self, kind: MediaKind) -> u64 {
        self.packets_in.get(kind)
    }
}
