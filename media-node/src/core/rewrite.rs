//! Rewriting of forwarded RTP so each subscriber sees one continuous stream.
//!
//! A subscriber's outgoing m-line carries one stream, but what feeds it changes: simulcast layers (each with
//! its own sequence numbers, RTP timestamps and VP8 picture ids), pauses for mutes, resumption after a
//! renegotiation. At each such switch ("rebase") the rewriters pick offsets so that the output continues
//! right after the last packet sent: sequence numbers stay gap-free across the switch, timestamps advance by
//! the wall-clock time that passed, VP8 picture ids and TL0PICIDX continue by one. Between switches the
//! offsets are constant, so loss, reordering and retransmissions from the publisher keep their shape.

use std::time::Instant;
use str0m::rtp::{Vp8Descriptor, Vp8Patch};

/// Output sequence numbers (str0m's extended, 64-bit form) start here: below 2^16, so no ROC needs signalling.
const FIRST_OUT_SEQ: u64 = 1;

/// Maps a publisher layer's extended sequence numbers onto the subscriber stream's.
#[derive(Clone, Debug, Default)]
pub(crate) struct SeqRewriter {
    offset: i64,
    floor_in: u64,
    max_out: Option<u64>,
}

impl SeqRewriter {
    /// Makes `first_in` the next output packet; inputs before it are refused from now on (they belong to the
    /// previous layer's numbering).
    pub(crate) fn rebase(&mut self, first_in: u64) {
        let next_out = self.max_out.map_or(FIRST_OUT_SEQ, |max| max.saturating_add(1));
        self.offset = (next_out as i64).wrapping_sub(first_in as i64);
        self.floor_in = first_in;
    }

    /// The output sequence number for `input`, or `None` for a packet from before the last rebase.
    pub(crate) fn rewrite(&mut self, input: u64) -> Option<u64> {
        if input < self.floor_in {
            return None;
        }
        let out = u64::try_from((input as i64).checked_add(self.offset)?).ok()?;
        self.max_out = Some(self.max_out.map_or(out, |max| max.max(out)));
        Some(out)
    }
}

/// Maps a publisher layer's RTP timestamps onto the subscriber stream's.
#[derive(Clone, Debug, Default)]
pub(crate) struct TsRewriter {
    offset: u32,
    last_out: Option<(u32, Instant)>,
}

impl TsRewriter {
    /// Makes `first_in` continue the output: after the last output timestamp by the time elapsed since it was
    /// sent (at least one tick), so the receiver's jitter buffer sees no jump.
    pub(crate) fn rebase(&mut self, first_in: u32, now: Instant, clock_rate: u32) {
        let next_out = match self.last_out {
            Some((ts, at)) => {
                let elapsed_ms = now.saturating_duration_since(at).as_millis().min(60_000) as u64;
                let ticks = (elapsed_ms * u64::from(clock_rate) / 1000).max(1);
                ts.wrapping_add(ticks as u32)
            }
            None => first_in,
        };
        self.offset = next_out.wrapping_sub(first_in);
    }

    /// The output timestamp for `input`, remembering the newest one sent.
    pub(crate) fn rewrite(&mut self, input: u32, now: Instant) -> u32 {
        let out = input.wrapping_add(self.offset);
        let newer = match self.last_out {
            Some((last, _)) => out != last && out.wrapping_sub(last) < u32::MAX / 2,
            None => true,
        };
        if newer {
            self.last_out = Some((out, now));
        }
        out
    }
}

/// Keeps VP8 picture ids and TL0PICIDX continuous across switches (libwebrtc's frame reference finder relies
/// on them).
#[derive(Clone, Debug, Default)]
pub(crate) struct Vp8Rewriter {
    picture_id_offset: u16,
    tl0_offset: u8,
    last_picture_id: Option<u16>,
    last_tl0: Option<u8>,
    rebase_pending: bool,
}

impl Vp8Rewriter {
    /// The next packet starts a new numbering.
    pub(crate) fn rebase(&mut self) {
        self.rebase_pending = true;
    }

    /// The descriptor patch for `payload` (a VP8 RTP payload), or `None` when nothing changes.
    pub(crate) fn rewrite(&mut self, payload: &[u8]) -> Option<Vp8Patch> {
        let descriptor = Vp8Descriptor::parse(payload).ok()?;
        let mask = if picture_id_is_15_bit(payload) { 0x7fff } else { 0x7f };
        let picture_id = descriptor.picture_id();
        let tl0 = descriptor.tl0_pic_idx();
        if std::mem::take(&mut self.rebase_pending) {
            if let (Some(input), Some(last)) = (picture_id, self.last_picture_id) {
                self.picture_id_offset = last.wrapping_add(1).wrapping_sub(input) & mask;
            }
            if let (Some(input), Some(last)) = (tl0, self.last_tl0) {
                self.tl0_offset = last.wrapping_add(1).wrapping_sub(input);
            }
        }
        let picture_id_out = picture_id.map(|p| p.wrapping_add(self.picture_id_offset) & mask);
        let tl0_out = tl0.map(|t| t.wrapping_add(self.tl0_offset));
        if picture_id_out.is_some() {
            self.last_picture_id = picture_id_out;
        }
        if tl0_out.is_some() {
            self.last_tl0 = tl0_out;
        }
        if picture_id_out == picture_id && tl0_out == tl0 {
            return None;
        }
        let mut patch = descriptor.patch();
        if let Some(p) = picture_id_out {
            patch = patch.picture_id(p);
        }
        if let Some(t) = tl0_out {
            patch = patch.tl0_pic_idx(t);
        }
        patch.build().ok()
    }
}

/// Whether the VP8 payload descriptor carries a 15-bit picture id (X, I and M bits set; RFC 7741 §4.2).
fn picture_id_is_15_bit(payload: &[u8]) -> bool {
    let has_extension = payload.first().is_some_and(|b| b & 0x80 != 0);
    let has_picture_id = has_extension && payload.get(1).is_some_and(|b| b & 0x80 != 0);
    has_picture_id && payload.get(2).is_some_and(|b| b & 0x80 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sequence_numbers_continue_across_a_switch_and_keep_gaps_within_a_layer() {
        let mut seq = SeqRewriter::default();
        seq.rebase(5000);
        assert_eq!(seq.rewrite(5000), Some(1));
        assert_eq!(seq.rewrite(5001), Some(2));
        assert_eq!(seq.rewrite(5003), Some(4), "a gap stays a gap so the subscriber can NACK it");
        assert_eq!(seq.rewrite(5002), Some(3), "a late packet fills it");
        // Switch to a layer numbered far away.
        seq.rebase(70);
        assert_eq!(seq.rewrite(70), Some(5));
        assert_eq!(seq.rewrite(71), Some(6));
        assert_eq!(seq.rewrite(69), None, "packets from before the switch are refused");
        // Switch back up.
        seq.rebase(90_000);
        assert_eq!(seq.rewrite(90_000), Some(7));
    }

    #[test]
    fn timestamps_advance_by_wall_clock_across_a_switch() {
        let t0 = Instant::now();
        let mut ts = TsRewriter::default();
        ts.rebase(1_000_000, t0, 90_000);
        assert_eq!(ts.rewrite(1_000_000, t0), 1_000_000);
        assert_eq!(ts.rewrite(1_003_000, t0 + Duration::from_millis(33)), 1_003_000);
        // 100 ms later a layer with an unrelated base takes over.
        let t1 = t0 + Duration::from_millis(133);
        ts.rebase(5, t1, 90_000);
        assert_eq!(ts.rewrite(5, t1), 1_003_000 + 9_000);
        assert_eq!(ts.rewrite(3005, t1), 1_003_000 + 12_000);
        // Wrapping inputs keep working.
        let mut wrap = TsRewriter::default();
        wrap.rebase(u32::MAX - 10, t0, 48_000);
        assert_eq!(wrap.rewrite(5, t0), 5);
    }

    fn vp8(picture_id: u16, tl0: u8) -> Vec<u8> {
        // X=1, S=1; I=1, L=1, T=1; 15-bit picture id; TL0PICIDX; TID/Y/KEYIDX; then one payload byte.
        vec![0x90, 0xE0, 0x80 | (picture_id >> 8) as u8, picture_id as u8, tl0, 0x00, 0x10]
    }

    #[test]
    fn vp8_picture_ids_continue_across_a_switch() {
        let mut rewriter = Vp8Rewriter::default();
        rewriter.rebase();
        assert!(rewriter.rewrite(&vp8(100, 7)).is_none(), "the first layer keeps its numbering");
        assert!(rewriter.rewrite(&vp8(101, 8)).is_none());
        rewriter.rebase();
        let patch = rewriter.rewrite(&vp8(30_000, 200));
        assert!(patch.is_some());
        assert_eq!(rewriter.last_picture_id, Some(102));
        assert_eq!(rewriter.last_tl0, Some(9));
        rewriter.rewrite(&vp8(30_001, 201));
        assert_eq!(rewriter.last_picture_id, Some(103));
        // Wraps within 15 bits.
        rewriter.rebase();
        rewriter.rewrite(&vp8(0x7fff, 0));
        assert_eq!(rewriter.last_picture_id, Some(104));
        assert!(rewriter.rewrite(&[]).is_none());
    }
}
