//! One subscriber's copy of one published track: its negotiation state and the forwarder that decides, packet
//! by packet, what the subscriber receives.
//!
//! The forwarder follows a *target* layer (chosen by [`super::layers::select_layer`]) but only moves to it at a
//! packet that starts a keyframe, since a decoder cannot start anywhere else. Until then it keeps forwarding the
//! *current* layer; with no current layer (a new subscriber, after a mute) it forwards nothing and the node asks
//! the publisher for a keyframe. Audio starts at any packet.

use super::ids::TrackKey;
use super::rewrite::{SeqRewriter, TsRewriter, Vp8Rewriter};
use homeroom_shared::media::Quality;
use homeroom_shared::protocol::MediaKind;
use std::time::Instant;
use str0m::media::{Mid, Pt, Rid};
use str0m::rtp::{Ssrc, Vp8Patch};

/// Where the subscriber's m-line for this track is in the offer/answer cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutState {
    /// Wanted; the next node offer adds an m-line.
    ToOpen,
    /// Added in the outstanding node offer.
    Negotiating(Mid),
    /// Negotiated: packets flow.
    Open(Mid),
    /// The source went away; the next node offer stops the m-line.
    ToStop(Mid),
    /// Stopped in the outstanding node offer.
    NegotiatingStop(Mid),
    /// The client rejected the m-line (port 0 in its answer): nothing flows, and the track is not offered to
    /// this session again while it is published (it would be rejected again). Forgotten when the track goes;
    /// the line is dead, so no offer stops it.
    Declined(Mid),
}

impl OutState {
    /// The subscriber-side mid, once there is one.
    pub(crate) fn mid(self) -> Option<Mid> {
        match self {
            OutState::ToOpen => None,
            OutState::Negotiating(m)
            | OutState::Open(m)
            | OutState::ToStop(m)
            | OutState::NegotiatingStop(m)
            | OutState::Declined(m) => Some(m),
        }
    }
}

/// Who publishes the source track (for the client's track list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Publisher {
    pub(crate) participant: String,
    pub(crate) name: Option<String>,
}

/// A subscriber's copy of a published track.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) source: TrackKey,
    pub(crate) kind: MediaKind,
    pub(crate) publisher: Publisher,
    pub(crate) state: OutState,
    /// The source was unpublished while its m-line was being added; stop it once the answer comes.
    pub(crate) source_gone: bool,
    /// The subscriber's quality choice for this track, overriding its session-wide one.
    pub(crate) quality: Option<Quality>,
    pub(crate) forwarder: Forwarder,
    /// Publisher payload type → subscriber payload type (`None`: the subscriber did not negotiate the codec).
    pt_map: Vec<(Pt, Option<Pt>)>,
    /// The SSRC of the subscriber-side send stream, once looked up (checked against the mid on every use).
    pub(crate) ssrc_out: Option<Ssrc>,
}

impl Subscription {
    pub(crate) fn new(source: TrackKey, kind: MediaKind, publisher: Publisher) -> Self {
        Subscription {
            source,
            kind,
            publisher,
            state: OutState::ToOpen,
            source_gone: false,
            quality: None,
            forwarder: Forwarder::default(),
            pt_map: Vec::new(),
            ssrc_out: None,
        }
    }

    /// The cached payload-type mapping for `pt_in`, if computed.
    pub(crate) fn mapped_pt(&self, pt_in: Pt) -> Option<Option<Pt>> {
        self.pt_map.iter().find(|(p, _)| *p == pt_in).map(|(_, out)| *out)
    }

    pub(crate) fn remember_pt(&mut self, pt_in: Pt, pt_out: Option<Pt>) {
        self.pt_map.push((pt_in, pt_out));
    }
}

/// What the forwarder needs to know about an incoming packet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PacketView<'a> {
    pub(crate) rid: Option<Rid>,
    /// The stream it came on: a publisher that restarts its encoder may send the same layer under a new SSRC.
    pub(crate) ssrc: u32,
    /// Extended sequence number.
    pub(crate) seq: u64,
    pub(crate) timestamp: u32,
    pub(crate) starts_keyframe: bool,
    pub(crate) clock_rate: u32,
    pub(crate) vp8: bool,
    pub(crate) payload: &'a [u8],
    pub(crate) now: Instant,
}

/// The forwarder's decision for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Send with these header values.
    Forward { seq: u64, timestamp: u32, vp8: Option<Vp8Patch>, switched: bool },
    /// Not for this subscriber (another layer, or from before a switch).
    Skip,
}

/// Layer following and header rewriting for one subscription.
#[derive(Clone, Debug, Default)]
pub(crate) struct Forwarder {
    /// The layer being forwarded (`Some(None)`: the only stream of a non-simulcast track).
    current: Option<Option<Rid>>,
    /// The SSRC the current layer comes on.
    current_ssrc: Option<u32>,
    /// The layer wanted.
    target: Option<Option<Rid>>,
    seq: SeqRewriter,
    ts: TsRewriter,
    vp8: Vp8Rewriter,
    /// Whether the current wait for a keyframe was counted already ([`Forwarder::count_wait`]).
    wait_counted: bool,
}

impl Forwarder {
    /// Sets the wanted layer; returns whether it changed.
    pub(crate) fn set_target(&mut self, target: Option<Option<Rid>>) -> bool {
        let changed = self.target != target;
        if changed {
            self.wait_counted = false;
        }
        self.target = target;
        changed
    }

    pub(crate) fn target(&self) -> Option<Option<Rid>> {
        self.target
    }

    pub(crate) fn current(&self) -> Option<Option<Rid>> {
        self.current
    }

    /// Stops forwarding until the target layer's next keyframe (mute, renegotiation).
    pub(crate) fn pause(&mut self) {
        self.current = None;
        self.wait_counted = false;
    }

    /// True once per wait for a keyframe (a new target, a pause): what `keyframe_requests_total{source="node"}`
    /// counts, however often the layer selection asks again while the keyframe has not come.
    pub(crate) fn count_wait(&mut self) -> bool {
        let new = self.awaiting_keyframe().is_some() && !self.wait_counted;
        self.wait_counted |= new;
        new
    }

    /// The layer a keyframe is needed from: the target, while it is not yet being forwarded.
    pub(crate) fn awaiting_keyframe(&self) -> Option<Option<Rid>> {
        match self.target {
            Some(target) if self.current != Some(target) => Some(target),
            _ => None,
        }
    }

    /// Decides about one packet of the source track.
    pub(crate) fn on_packet(&mut self, packet: &PacketView<'_>) -> Verdict {
        let layer = Some(packet.rid);
        let mut switched = false;
        if layer == self.current && self.current_ssrc != Some(packet.ssrc) {
            // The same layer on a new stream (a restarted encoder): its sequence numbers start anew, so it is
            // taken like a switch — from its next keyframe, which the node asks for, rebased.
            self.pause();
        }
        if layer != self.current {
            if layer != self.target || !packet.starts_keyframe {
                return Verdict::Skip;
            }
            self.current = layer;
            self.current_ssrc = Some(packet.ssrc);
            self.wait_counted = false;
            self.seq.rebase(packet.seq);
            self.ts.rebase(packet.timestamp, packet.now, packet.clock_rate);
            self.vp8.rebase();
            switched = true;
        }
        let Some(seq) = self.seq.rewrite(packet.seq) else {
            return Verdict::Skip;
        };
        let timestamp = self.ts.rewrite(packet.timestamp, packet.now);
        let vp8 = if packet.vp8 { self.vp8.rewrite(packet.payload) } else { None };
        Verdict::Forward { seq, timestamp, vp8, switched }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn packet(rid: &str, seq: u64, keyframe: bool, now: Instant) -> PacketView<'static> {
        PacketView {
            rid: Some(rid.into()),
            ssrc: 1,
            seq,
            timestamp: (seq as u32) * 3000,
            starts_keyframe: keyframe,
            clock_rate: 90_000,
            vp8: false,
            payload: &[],
            now,
        }
    }

    fn forwarded(verdict: Verdict) -> Option<u64> {
        match verdict {
            Verdict::Forward { seq, .. } => Some(seq),
            Verdict::Skip => None,
        }
    }

    #[test]
    fn a_layer_restarted_under_a_new_ssrc_resumes_at_its_keyframe_without_a_gap_or_repeat() {
        let t0 = Instant::now();
        let mut f = Forwarder::default();
        f.set_target(Some(Some("h".into())));
        let mut out = Vec::new();
        for seq in 40_000..=40_010 {
            out.extend(forwarded(f.on_packet(&packet("h", seq, seq == 40_000, t0))));
        }
        // The publisher's encoder restarts: a new SSRC, sequence numbers from 1,000 (below the old ones).
        let restarted = |seq, keyframe| PacketView { ssrc: 2, ..packet("h", seq, keyframe, t0) };
        assert_eq!(f.on_packet(&restarted(999, false)), Verdict::Skip, "not a keyframe: wait for one");
        assert_eq!(f.awaiting_keyframe(), Some(Some("h".into())), "so the node asks the publisher for one");
        for seq in 1_000..=1_003 {
            out.extend(forwarded(f.on_packet(&restarted(seq, seq == 1_000))));
        }
        assert_eq!(out, (1..=15).collect::<Vec<u64>>(), "one unbroken sequence for the subscriber");
    }

    #[test]
    fn each_wait_for_a_keyframe_is_counted_once() {
        let t0 = Instant::now();
        let mut f = Forwarder::default();
        assert!(!f.count_wait(), "no target: nothing awaited");
        f.set_target(Some(Some("h".into())));
        assert!(f.count_wait());
        assert!(!f.count_wait() && !f.count_wait(), "asking again while waiting is the same wait");
        assert!(forwarded(f.on_packet(&packet("h", 1, true, t0))).is_some());
        assert!(!f.count_wait(), "forwarding: nothing awaited");
        f.pause();
        assert!(f.count_wait(), "a pause (mute, renegotiation) is a new wait");
        assert!(forwarded(f.on_packet(&packet("h", 2, true, t0))).is_some());
        f.set_target(Some(Some("l".into())));
        assert!(f.count_wait(), "a layer switch is a new wait");
        assert!(!f.count_wait());
    }

    #[test]
    fn a_new_subscriber_starts_at_a_keyframe_of_its_target() {
        let t0 = Instant::now();
        let mut f = Forwarder::default();
        assert_eq!(f.on_packet(&packet("h", 10, true, t0)), Verdict::Skip, "no target yet");
        f.set_target(Some(Some("h".into())));
        assert_eq!(f.awaiting_keyframe(), Some(Some("h".into())));
        assert_eq!(f.on_packet(&packet("h", 11, false, t0)), Verdict::Skip);
        assert_eq!(f.on_packet(&packet("l", 12, true, t0)), Verdict::Skip, "other layers are ignored");
        assert_eq!(forwarded(f.on_packet(&packet("h", 13, true, t0))), Some(1));
        assert_eq!(f.awaiting_keyframe(), None);
        assert_eq!(forwarded(f.on_packet(&packet("h", 14, false, t0))), Some(2));
    }

    #[test]
    fn layer_switches_wait_for_a_keyframe_and_keep_sequence_numbers_continuous() {
        let t0 = Instant::now();
        let mut f = Forwarder::default();
        f.set_target(Some(Some("h".into())));
        assert_eq!(forwarded(f.on_packet(&packet("h", 100, true, t0))), Some(1));
        assert_eq!(forwarded(f.on_packet(&packet("h", 101, false, t0))), Some(2));
        // Preference drops to low: keep high until low's keyframe.
        assert!(f.set_target(Some(Some("l".into()))));
        assert_eq!(f.on_packet(&packet("l", 5000, false, t0)), Verdict::Skip);
        assert_eq!(forwarded(f.on_packet(&packet("h", 102, false, t0))), Some(3));
        let later = t0 + Duration::from_millis(40);
        match f.on_packet(&packet("l", 5001, true, later)) {
            Verdict::Forward { seq, switched, .. } => {
                assert_eq!(seq, 4);
                assert!(switched);
            }
            Verdict::Skip => panic!("the keyframe switches layers"),
        }
        assert_eq!(f.on_packet(&packet("h", 103, true, later)), Verdict::Skip, "the old layer stops");
        assert_eq!(forwarded(f.on_packet(&packet("l", 5002, false, later))), Some(5));
    }

    #[test]
    fn a_pause_waits_for_the_next_keyframe() {
        let t0 = Instant::now();
        let mut f = Forwarder::default();
        f.set_target(Some(None));
        let plain = |seq, keyframe| PacketView { rid: None, ..packet("x", seq, keyframe, t0) };
        assert_eq!(forwarded(f.on_packet(&plain(1, true))), Some(1));
        f.pause();
        assert_eq!(f.on_packet(&plain(2, false)), Verdict::Skip);
        assert_eq!(forwarded(f.on_packet(&plain(50, true))), Some(2), "resumes without a sequence gap");
    }
}
