//! A track one session publishes: its simulcast layers as measured, its codecs, and the throttle on keyframe
//! requests sent to its publisher.

use super::ids::TrackKey;
use super::layers::{quality_rank, rank_layers, BitrateMeter, LayerOption};
use super::throttle::Throttle;
use homeroom_shared::media::MediaCaps;
use homeroom_shared::protocol::MediaKind;
use std::time::{Duration, Instant};
use str0m::format::{Codec, PayloadParams};
use str0m::media::{Pt, Rid};
use str0m::Rtc;

/// A layer counts as active while packets arrived within this long.
pub(crate) const LAYER_ACTIVE_WITHIN: Duration = Duration::from_millis(1500);

/// How far above its publisher's `publish_kbps` the lowest layer may run before it is not forwarded either
/// (every higher layer stops at the cap itself). Generous, because a screen share's keyframe on a slide change
/// lifts the smoothed rate for a second, and a layer cut mid-frame costs a new keyframe.
pub(crate) const LOWEST_LAYER_SLACK: u64 = 4;

/// H.264 NAL unit type of a sequence parameter set: a keyframe that switches layers starts with it.
const H264_NALU_SPS: u8 = 7;

/// What the node needs to know about one payload type of the publisher.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CodecInfo {
    pub(crate) params: PayloadParams,
    pub(crate) codec: Codec,
    pub(crate) clock_rate: u32,
}

impl CodecInfo {
    /// Whether `payload` (an RTP payload of this codec) starts a keyframe, i.e. a subscriber can start decoding
    /// at this packet.
    pub(crate) fn starts_keyframe(&self, payload: &[u8]) -> bool {
        use str0m::format::{detect_av1_keyframe, detect_h264_keyframe, detect_h264_nalu};
        use str0m::format::{detect_h265_keyframe, detect_vp8_keyframe, detect_vp9_keyframe};
        match self.codec {
            Codec::Vp8 => detect_vp8_keyframe(payload),
            Codec::Vp9 => detect_vp9_keyframe(payload),
            Codec::H264 => detect_h264_nalu(payload, H264_NALU_SPS) || detect_h264_keyframe(payload),
            Codec::H265 => detect_h265_keyframe(payload),
            Codec::Av1 => detect_av1_keyframe(payload),
            // Audio: every packet decodes on its own.
            _ => !self.codec.is_video(),
        }
    }
}

/// One simulcast layer (or the only stream of a non-simulcast track, `rid == None`).
#[derive(Debug)]
pub(crate) struct Layer {
    pub(crate) rid: Option<Rid>,
    pub(crate) meter: BitrateMeter,
}

/// A track as its publisher sends it.
#[derive(Debug)]
pub(crate) struct PublishedTrack {
    pub(crate) key: TrackKey,
    pub(crate) kind: MediaKind,
    /// In declaration order.
    layers: Vec<Layer>,
    codecs: Vec<(Pt, CodecInfo)>,
    keyframe_throttle: Throttle<Option<Rid>>,
    /// Layers within the publisher's caps; `None` when it has none.
    allowed: Option<Vec<Option<Rid>>>,
}

/// The usable layers of a track, ranked lowest quality first, for the layer selector.
#[derive(Clone, Debug, Default)]
pub(crate) struct LayerMenu {
    pub(crate) rids: Vec<Option<Rid>>,
    pub(crate) options: Vec<LayerOption>,
}

/// The most layers one track may have: browsers send three simulcast layers; one more for a rid-less stream.
pub(crate) const MAX_LAYERS: usize = 4;

impl PublishedTrack {
    pub(crate) fn new(key: TrackKey, kind: MediaKind, declared_rids: &[Rid], keyframe_interval: Duration) -> Self {
        let layers = if declared_rids.is_empty() {
            vec![Layer { rid: None, meter: BitrateMeter::default() }]
        } else {
            declared_rids
                .iter()
                .take(MAX_LAYERS)
                .map(|rid| Layer { rid: Some(*rid), meter: BitrateMeter::default() })
                .collect()
        };
        PublishedTrack {
            key,
            kind,
            layers,
            codecs: Vec::new(),
            keyframe_throttle: Throttle::new(keyframe_interval),
            allowed: None,
        }
    }

    pub(crate) fn is_video(&self) -> bool {
        self.kind != MediaKind::Audio
    }

    /// Counts a packet of `bytes` on layer `rid` (learning a layer the SDP did not declare). Returns whether
    /// the layer just became active, which changes what subscribers can be given; `None` for a new layer
    /// beyond [`MAX_LAYERS`] (a client sending packets under ever new rids), which is not kept or forwarded.
    pub(crate) fn record(&mut self, now: Instant, rid: Option<Rid>, bytes: usize) -> Option<bool> {
        if let Some(layer) = self.layers.iter_mut().find(|l| l.rid == rid) {
            let was_active = layer.meter.active(now, LAYER_ACTIVE_WITHIN);
            layer.meter.add(now, bytes);
            return Some(!was_active);
        }
        if self.layers.len() >= MAX_LAYERS {
            return None;
        }
        // A rid-less stream on a simulcast m-line, or a rid the SDP did not list: a layer of its own.
        let mut meter = BitrateMeter::default();
        meter.add(now, bytes);
        self.layers.push(Layer { rid, meter });
        Some(true)
    }

    /// The codec of payload type `pt`, looked up in the publisher's negotiated codecs once and cached.
    pub(crate) fn codec(&mut self, pt: Pt, rtc: &Rtc) -> Option<CodecInfo> {
        if let Some((_, info)) = self.codecs.iter().find(|(p, _)| *p == pt) {
            return Some(*info);
        }
        let params = *rtc.codec_config().find(|p| p.pt() == pt)?;
        let spec = params.spec();
        let info = CodecInfo { params, codec: spec.codec, clock_rate: spec.clock_rate.get() };
        self.codecs.push((pt, info));
        Some(info)
    }

    /// Whether a keyframe request to layer `rid` may go out now (see [`super::throttle`]).
    pub(crate) fn allow_keyframe_request(&mut self, rid: Option<Rid>, now: Instant) -> bool {
        self.keyframe_throttle.allow(rid, now)
    }

    /// The layers ranked lowest first, with activity and the publisher's caps applied.
    pub(crate) fn menu(&self, now: Instant, caps: &MediaCaps) -> LayerMenu {
        let active: Vec<&Layer> = self.layers.iter().filter(|l| l.meter.active(now, LAYER_ACTIVE_WITHIN)).collect();
        let ranked_active = {
            let rates: Vec<Option<u64>> = active.iter().map(|l| l.meter.rate_bps()).collect();
            rank_layers(&rates)
        };
        // Inactive layers keep their declaration position after the active ones; they only matter for the
        // rank a quality level names. (Browsers start layers from the bottom up and drop them from the top
        // down, so the layers sent are the lowest ones. A publisher that leaves out its low layer moves its
        // high one down a rank; `publish_kbps`, which every capped role has, still holds it, see below.)
        let mut ordered: Vec<&Layer> = ranked_active.iter().filter_map(|i| active.get(*i).copied()).collect();
        ordered.extend(self.layers.iter().filter(|l| !l.meter.active(now, LAYER_ACTIVE_WITHIN)));
        let count = ordered.len();
        let quality_limit = caps.publish_quality.map(|q| quality_rank(q, count));
        let kbps_limit = caps.publish_kbps.map(|k| u64::from(k) * 1000);
        let mut menu = LayerMenu::default();
        for (rank, layer) in ordered.iter().enumerate() {
            let within_quality = quality_limit.is_none_or(|limit| rank <= limit);
            // The lowest layer passes up to `LOWEST_LAYER_SLACK` times the cap: the cap works through REMB on the publisher, which
            // takes a moment; a publisher that ignores it and sends one layer far above it is not forwarded.
            let ceiling = |limit: u64| if rank == 0 { limit.saturating_mul(LOWEST_LAYER_SLACK) } else { limit };
            let within_bitrate =
                kbps_limit.is_none_or(|limit| layer.meter.rate_bps().is_none_or(|bps| bps <= ceiling(limit)));
            menu.rids.push(layer.rid);
            menu.options.push(LayerOption {
                bitrate_bps: layer.meter.rate_bps(),
                active: layer.meter.active(now, LAYER_ACTIVE_WITHIN),
                allowed: within_quality && within_bitrate,
            });
        }
        menu
    }

    /// Recomputes which layers the publisher's caps let through (called on every housekeeping tick, so the
    /// per-packet check is a short scan).
    pub(crate) fn refresh_allowed(&mut self, now: Instant, caps: &MediaCaps) {
        if caps.publish_quality.is_none() && caps.publish_kbps.is_none() {
            self.allowed = None;
            return;
        }
        let menu = self.menu(now, caps);
        self.allowed = Some(
            menu.rids.iter().zip(&menu.options).filter(|(_, option)| option.allowed).map(|(rid, _)| *rid).collect(),
        );
    }

    /// Whether packets of layer `rid` may be forwarded under the publisher's caps.
    pub(crate) fn layer_allowed(&self, rid: Option<Rid>) -> bool {
        self.allowed.as_ref().is_none_or(|allowed| allowed.contains(&rid))
    }

    /// The rids of every layer seen or declared.
    pub(crate) fn rids(&self) -> impl Iterator<Item = Option<Rid>> + '_ {
        self.layers.iter().map(|l| l.rid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::SessionId;
    use homeroom_shared::media::Quality;
    use str0m::media::Mid;

    #[test]
    fn a_track_keeps_at_most_max_layers_however_many_rids_arrive() {
        let key = TrackKey { session: SessionId::random(1), mid: Mid::from("1") };
        let mut track = PublishedTrack::new(key, MediaKind::Video, &[], Duration::from_secs(1));
        let now = Instant::now();
        assert_eq!(track.record(now, None, 1000), Some(true), "the declared rid-less layer comes alive");
        assert_eq!(track.record(now, None, 1000), Some(false));
        let mut refused = 0;
        for i in 0..10_000 {
            if track.record(now, Some(Rid::from(format!("r{i}").as_str())), 100).is_none() {
                refused += 1;
            }
        }
        assert_eq!(track.rids().count(), MAX_LAYERS, "invented rids do not grow the track");
        assert_eq!(refused, 10_000 - (MAX_LAYERS - 1));
        assert_eq!(track.record(now, Some(Rid::from("r0")), 100), Some(false), "a kept layer still counts");
    }

    /// A track declaring `rids`, fed for 2 s with the layers of `sent` at their kbit/s.
    fn fed(rids: &[&str], sent: &[(&str, u64)]) -> (PublishedTrack, Instant) {
        let key = TrackKey { session: SessionId::random(1), mid: Mid::from("1") };
        let declared: Vec<Rid> = rids.iter().map(|r| Rid::from(*r)).collect();
        let mut track = PublishedTrack::new(key, MediaKind::Video, &declared, Duration::from_secs(1));
        let start = Instant::now();
        for tick in 0..=200u64 {
            let at = start + Duration::from_millis(tick * 10);
            for (rid, kbps) in sent {
                // kbit/s → bytes per 10 ms
                track.record(at, Some(Rid::from(*rid)), (*kbps * 10 / 8) as usize);
            }
        }
        (track, start + Duration::from_secs(2))
    }

    fn allowed(track: &mut PublishedTrack, now: Instant, caps: &MediaCaps) -> Vec<String> {
        track.refresh_allowed(now, caps);
        let mut rids: Vec<String> =
            track.rids().filter(|rid| track.layer_allowed(*rid)).filter_map(|rid| rid.map(|r| r.to_string())).collect();
        rids.sort();
        rids
    }

    /// A student's caps (`MediaCaps::for_role`): medium quality, 800 kbit/s.
    fn student() -> MediaCaps {
        MediaCaps { publish_quality: Some(Quality::Medium), publish_kbps: Some(800), ..MediaCaps::default() }
    }

    #[test]
    fn a_students_layers_are_forwarded_as_a_browser_turns_them_on_from_the_bottom() {
        let (mut all, now) = fed(&["l", "m", "h"], &[("l", 150), ("m", 500), ("h", 1500)]);
        assert_eq!(allowed(&mut all, now, &student()), ["l", "m"]);
        let (mut low_only, now) = fed(&["l", "m", "h"], &[("l", 150)]);
        assert_eq!(
            allowed(&mut low_only, now, &student()),
            ["l", "m"],
            "early in a call the one layer sent passes, and m will when it starts"
        );
        let (mut two, now) = fed(&["l", "m", "h"], &[("l", 150), ("m", 500)]);
        assert_eq!(allowed(&mut two, now, &student()), ["l", "m"], "under its REMB ceiling, without h");
    }

    #[test]
    fn a_student_that_leaves_out_its_low_layer_gets_no_high_layer_through() {
        let (mut no_low, now) = fed(&["l", "m", "h"], &[("m", 500), ("h", 1500)]);
        assert_eq!(allowed(&mut no_low, now, &student()), ["m"], "h is over the bitrate cap and not the lowest");
        let (mut reversed, now) = fed(&["h", "m", "l"], &[("h", 1500), ("m", 500)]);
        assert_eq!(allowed(&mut reversed, now, &student()), ["m"], "whatever the declaration order");
    }

    #[test]
    fn the_lowest_layer_passes_a_bitrate_cap_up_to_its_slack_and_no_further() {
        let kbps = |k: u32| MediaCaps { publish_kbps: Some(k), ..MediaCaps::default() };
        let (mut layers, now) = fed(&["l", "m", "h"], &[("l", 150), ("m", 500), ("h", 1500)]);
        assert_eq!(allowed(&mut layers, now, &kbps(800)), ["l", "m"]);
        let (mut no_low, now) = fed(&["l", "m", "h"], &[("m", 500), ("h", 1500)]);
        assert_eq!(allowed(&mut no_low, now, &kbps(800)), ["l", "m"], "h, above the lowest layer sent, is capped");
        // One stream: within the slack it passes (REMB brings it down), far above it it does not.
        let (mut single, now) = fed(&["only"], &[("only", 1200)]);
        assert_eq!(allowed(&mut single, now, &kbps(800)), ["only"]);
        let (mut flood, now) = fed(&["only"], &[("only", 8000)]);
        assert_eq!(allowed(&mut flood, now, &kbps(800)), Vec::<String>::new());
    }
}
