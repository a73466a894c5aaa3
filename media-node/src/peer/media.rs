//! Synthetic media for the test peer: Opus-shaped audio packets and VP8-shaped video frames.
//!
//! The bytes are not decodable media, but they are shaped the way the node looks at media: VP8 payload
//! descriptors with 15-bit picture ids, keyframes that start with a real VP8 keyframe header (so
//! `detect_vp8_keyframe` and layer switching work), and the marker bit on a frame's last packet. The **last byte
//! of every packet is a tag** naming the stream it was sent on (`a` audio, `v` camera, `s` screen, or the
//! simulcast rid's first byte, e.g. `l`/`m`/`h`), so a receiver can tell which layer reached it. Before the tag
//! come a **send stamp**: two magic bytes `HR` and the microseconds since this process's [`stamp_epoch`]
//! (little-endian u64), so a receiver in the same process measures how long the packet took ([`latency_since`]).
//! Every packet of a frame carries its frame's stamp; an SFU that re-packetizes frames (str0m's `chat`
//! example) keeps it at the end of each frame's last packet.

use homeroom_shared::protocol::MediaKind;
use std::time::{Duration, Instant};
use str0m::media::{Mid, Pt, Rid};

/// Largest payload per packet, leaving room for RTP/SRTP headers under a 1200-byte MTU.
const MAX_PAYLOAD: usize = 1000;
/// Bytes of the VP8 payload descriptor written here: X, S, PID=0 | I | 15-bit picture id.
const VP8_DESCRIPTOR_LEN: usize = 4;
/// Bytes at the end of every payload: the magic, the send stamp and the stream tag.
const TRAILER_LEN: usize = 11;
const STAMP_MAGIC: [u8; 2] = *b"HR";

/// The instant send stamps count from: the first time anyone in this process asked.
pub(crate) fn stamp_epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `at` as a send stamp: microseconds since the stamp epoch (the first time anyone in this process asked).
pub fn stamp_us(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(stamp_epoch()).as_micros()).unwrap_or(u64::MAX)
}

/// The trailer of a payload stamped `stamp` on a stream tagged `tag`.
fn trailer(stamp: u64, tag: u8) -> [u8; TRAILER_LEN] {
    let mut out = [tag; TRAILER_LEN];
    out[..2].copy_from_slice(&STAMP_MAGIC);
    out[2..10].copy_from_slice(&stamp.to_le_bytes());
    out
}

/// The send stamp of a synthetic payload: `None` for payloads without one (not synthetic).
pub(crate) fn stamp_of(payload: &[u8]) -> Option<u64> {
    let trailer = payload.len().checked_sub(TRAILER_LEN).and_then(|at| payload.get(at..at + TRAILER_LEN - 1))?;
    let (magic, stamp) = trailer.split_at(2);
    if magic != STAMP_MAGIC {
        return None;
    }
    Some(u64::from_le_bytes(stamp.try_into().ok()?))
}

/// How long ago, at `received`, a synthetic payload was sent by a peer of this process: `None` for payloads
/// without a plausible stamp (from another process, or not synthetic).
#[cfg(test)]
fn latency_of(payload: &[u8], received: Instant) -> Option<Duration> {
    latency_since(stamp_of(payload)?, received)
}

/// How long before `received` the send stamp `stamp` was: `None` if implausible (in the future, or more than a
/// minute ago: another process's clock).
pub(crate) fn latency_since(stamp: u64, received: Instant) -> Option<Duration> {
    let sent = stamp_epoch().checked_add(Duration::from_micros(stamp))?;
    let latency = received.checked_duration_since(sent)?;
    (latency < Duration::from_secs(60)).then_some(latency)
}

/// One stream the peer sends: an audio track, a video track, or one simulcast layer.
#[derive(Debug)]
pub(crate) struct SyntheticStream {
    pub(crate) mid: Mid,
    pub(crate) rid: Option<Rid>,
    pub(crate) kind: MediaKind,
    pub(crate) pt: Option<Pt>,
    tag: u8,
    bytes_per_frame: usize,
    frame_interval: Duration,
    ticks_per_frame: u32,
    dimensions: (u16, u16),
    pub(crate) next_frame_at: Option<Instant>,
    seq: u64,
    rtp_time: u32,
    picture_id: u16,
    pub(crate) want_keyframe: bool,
    last_keyframe: Option<Instant>,
    keyframe_every: Option<Duration>,
    pub(crate) packets_sent: u64,
}

/// One RTP packet to write.
#[derive(Debug)]
pub(crate) struct SyntheticPacket {
    pub(crate) seq: u64,
    pub(crate) rtp_time: u32,
    pub(crate) marker: bool,
    pub(crate) payload: Vec<u8>,
}

impl SyntheticStream {
    pub(crate) fn audio(mid: Mid) -> Self {
        Self::new(mid, None, MediaKind::Audio, b'a', 80, Duration::from_millis(20), 960, (0, 0), None)
    }

    pub(crate) fn video(
        mid: Mid,
        rid: Option<Rid>,
        kind: MediaKind,
        kbps: u32,
        fps: u32,
        dimensions: (u16, u16),
        keyframe_every: Option<Duration>,
    ) -> Self {
        let tag = match (kind, rid) {
            (_, Some(rid)) => rid.as_bytes().first().copied().unwrap_or(b'?'),
            (MediaKind::Screen, None) => b's',
            _ => b'v',
        };
        let fps = fps.max(1);
        let bytes_per_frame = (kbps as usize * 1000 / 8 / fps as usize).max(40);
        let interval = Duration::from_micros(1_000_000 / u64::from(fps));
        Self::new(mid, rid, kind, tag, bytes_per_frame, interval, 90_000 / fps, dimensions, keyframe_every)
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        mid: Mid,
        rid: Option<Rid>,
        kind: MediaKind,
        tag: u8,
        bytes_per_frame: usize,
        frame_interval: Duration,
        ticks_per_frame: u32,
        dimensions: (u16, u16),
        keyframe_every: Option<Duration>,
    ) -> Self {
        // Distinct, arbitrary starting points per stream, as real encoders have.
        let salt = u32::from(tag) * 7919 + u32::from(mid.as_bytes().first().copied().unwrap_or(0)) * 104_729;
        SyntheticStream {
            mid,
            rid,
            kind,
            pt: None,
            tag,
            bytes_per_frame,
            frame_interval,
            ticks_per_frame,
            dimensions,
            next_frame_at: None,
            seq: u64::from(salt % 30_000) + 1,
            rtp_time: salt.wrapping_mul(2654435761),
            picture_id: (salt % 0x7fff) as u16,
            want_keyframe: true,
            last_keyframe: None,
            keyframe_every,
            packets_sent: 0,
        }
    }

    /// Whether a frame is due at `now`.
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.next_frame_at.is_none_or(|at| at <= now)
    }

    /// The packets of the next frame, advancing the stream's clocks. The frame is stamped with the time it
    /// was due, not the time it is made: a sender that falls behind (a busy load tool) shows as latency
    /// instead of hiding it.
    pub(crate) fn next_frame(&mut self, now: Instant) -> Vec<SyntheticPacket> {
        let due = self.next_frame_at.unwrap_or(now);
        let following = due + self.frame_interval;
        // Do not try to catch up more than a frame after a stall: skip ahead, as an encoder drops frames.
        self.next_frame_at =
            Some(if following + self.frame_interval < now { now + self.frame_interval } else { following });
        let stamp = stamp_us(due);
        let packets =
            if self.kind == MediaKind::Audio { self.audio_frame(stamp) } else { self.video_frame(now, stamp) };
        self.rtp_time = self.rtp_time.wrapping_add(self.ticks_per_frame);
        self.packets_sent += packets.len() as u64;
        packets
    }

    fn audio_frame(&mut self, stamp: u64) -> Vec<SyntheticPacket> {
        let mut payload = vec![0x78; self.bytes_per_frame.saturating_sub(TRAILER_LEN)];
        payload.extend_from_slice(&trailer(stamp, self.tag));
        let packet = SyntheticPacket { seq: self.seq, rtp_time: self.rtp_time, marker: false, payload };
        self.seq += 1;
        vec![packet]
    }

    fn video_frame(&mut self, now: Instant, stamp: u64) -> Vec<SyntheticPacket> {
        let periodic = match (self.keyframe_every, self.last_keyframe) {
            (Some(every), Some(last)) => now.saturating_duration_since(last) >= every,
            _ => false,
        };
        let keyframe = std::mem::take(&mut self.want_keyframe) || periodic;
        if keyframe {
            self.last_keyframe = Some(now);
        }
        let mut frame = Vec::with_capacity(self.bytes_per_frame);
        if keyframe {
            let (w, h) = self.dimensions;
            frame.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
            frame.extend_from_slice(&w.to_le_bytes());
            frame.extend_from_slice(&h.to_le_bytes());
        } else {
            frame.extend_from_slice(&[0x11, 0x02, 0x00]);
        }
        frame.resize(self.bytes_per_frame.max(frame.len()), self.picture_id as u8);

        // Equal packets, as libwebrtc's VP8 packetizer makes them (not full ones and a short last one).
        let max_chunk = MAX_PAYLOAD - VP8_DESCRIPTOR_LEN - TRAILER_LEN;
        let count = frame.len().div_ceil(max_chunk).max(1);
        let (base, longer) = (frame.len() / count, frame.len() % count);
        let trailer = trailer(stamp, self.tag);
        let mut rest = frame.as_slice();
        let chunks: Vec<&[u8]> = (0..count)
            .map(|i| {
                let (chunk, after) = rest.split_at((base + usize::from(i < longer)).min(rest.len()));
                rest = after;
                chunk
            })
            .collect();
        let count = chunks.len();
        let mut packets = Vec::with_capacity(count);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let start = if i == 0 { 0x10 } else { 0x00 };
            let mut payload = Vec::with_capacity(chunk.len() + VP8_DESCRIPTOR_LEN + TRAILER_LEN);
            payload.extend_from_slice(&[
                0x80 | start,
                0x80,
                0x80 | ((self.picture_id >> 8) as u8 & 0x7f),
                self.picture_id as u8,
            ]);
            payload.extend_from_slice(chunk);
            payload.extend_from_slice(&trailer);
            packets.push(SyntheticPacket { seq: self.seq, rtp_time: self.rtp_time, marker: i + 1 == count, payload });
            self.seq += 1;
        }
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        packets
    }
}

/// The stream tag at the end of a synthetic payload, as text (`"l"`, `"v"`, `"a"`…).
pub(crate) fn tag_of(payload: &[u8]) -> Option<String> {
    payload.last().filter(|b| b.is_ascii_alphanumeric()).map(|b| char::from(*b).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::format::detect_vp8_keyframe;

    #[test]
    fn video_frames_start_with_a_detectable_keyframe_and_carry_their_tag() {
        let t0 = Instant::now();
        let mut stream =
            SyntheticStream::video("1".into(), Some("h".into()), MediaKind::Video, 900, 30, (1280, 720), None);
        let frame = stream.next_frame(t0);
        assert!(frame.len() > 1);
        assert!(detect_vp8_keyframe(&frame[0].payload));
        assert!(frame.last().unwrap().marker);
        assert!(frame.iter().all(|p| tag_of(&p.payload).as_deref() == Some("h")));
        assert!(frame.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        let next = stream.next_frame(t0 + Duration::from_millis(33));
        assert!(!detect_vp8_keyframe(&next[0].payload));
        assert_eq!(next[0].rtp_time, frame[0].rtp_time.wrapping_add(3000));
        stream.want_keyframe = true;
        assert!(detect_vp8_keyframe(&stream.next_frame(t0 + Duration::from_millis(66))[0].payload));
    }

    #[test]
    fn audio_packets_are_small_and_tagged() {
        let mut stream = SyntheticStream::audio("0".into());
        let frame = stream.next_frame(Instant::now());
        assert_eq!(frame.len(), 1);
        assert_eq!(frame[0].payload.len(), 80);
        assert_eq!(tag_of(&frame[0].payload).as_deref(), Some("a"));
    }

    #[test]
    fn every_packet_carries_its_send_time() {
        let sent = stamp_epoch() + Duration::from_millis(1500);
        let mut video = SyntheticStream::video("1".into(), None, MediaKind::Video, 1200, 30, (640, 360), None);
        let mut audio = SyntheticStream::audio("0".into());
        let packets: Vec<SyntheticPacket> = video.next_frame(sent).into_iter().chain(audio.next_frame(sent)).collect();
        assert!(packets.len() >= 2);
        for packet in &packets {
            assert!(packet.payload.len() <= MAX_PAYLOAD);
            assert_eq!(stamp_of(&packet.payload), Some(1_500_000));
            let latency = latency_of(&packet.payload, sent + Duration::from_micros(2_345));
            assert_eq!(latency, Some(Duration::from_micros(2_345)));
            assert_eq!(latency_of(&packet.payload, sent - Duration::from_millis(1)), None, "received before sent");
        }
        assert_eq!(latency_of(b"short", sent), None);
        let mut unstamped = packets[0].payload.clone();
        let magic_at = unstamped.len() - TRAILER_LEN;
        unstamped[magic_at] = b'x';
        assert_eq!(latency_of(&unstamped, sent + Duration::from_millis(1)), None, "no magic, no stamp");
    }

    #[test]
    fn a_late_frame_keeps_the_time_it_was_due_and_frames_are_split_evenly() {
        let start = stamp_epoch() + Duration::from_secs(10);
        let mut video = SyntheticStream::video("1".into(), None, MediaKind::Video, 1200, 30, (640, 360), None);
        let first = video.next_frame(start);
        // 5,000 bytes in equal packets: six of 834 or 833 bytes of frame, not five full ones and a short one.
        let sizes: Vec<usize> = first.iter().map(|p| p.payload.len()).collect();
        assert_eq!(sizes.len(), 6, "{sizes:?}");
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        // The next frame was due 33 ms later; made 20 ms after that, it still carries its due time.
        let due = start + Duration::from_micros(33_333);
        let late = video.next_frame(due + Duration::from_millis(20));
        assert_eq!(stamp_of(&late[0].payload), Some(stamp_us(due)));
    }
}
