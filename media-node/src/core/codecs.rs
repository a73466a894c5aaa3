//! The codecs the node negotiates.
//!
//! str0m's default list has 13 video formats (VP8, seven H.264 profile and packetization variants, H.265,
//! VP9 profiles 0 and 2, AV1), each with its RTX payload type and five feedback lines. Every m-line of every
//! offer carries the whole list, so a session receiving many cameras gets ≈ 4.3 KB of SDP per camera and
//! its renegotiation offer outgrows one data-channel message (256 KiB) at about 45 cameras.
//!
//! An SFU forwards what publishers send, so every format it accepts must also be decodable by every
//! subscriber. The node keeps the formats all current browsers decode in WebRTC, in the order it prefers
//! them (a client's offer still decides among those it lists):
//!
//! - Opus;
//! - VP8 (the simulcast workhorse), VP9 profile 0, AV1;
//! - H.264 constrained baseline and baseline, packetization mode 1 (what Safari and hardware encoders use).
//!
//! Left out: packetization mode 0 (one NAL unit per packet, not used by browsers), H.264 main and high,
//! VP9 profile 2 (10-bit) and H.265 (decoded by only some browsers, so a room with one H.265 publisher
//! would leave other subscribers black). The same browsers negotiate one of the kept formats instead.

use str0m::format::{Codec, FormatParams};
use str0m::media::Frequency;
use str0m::RtcConfig;

/// H.264 profile-level-ids kept: constrained baseline and baseline, level 3.1, each `(pt, rtx)`.
const H264: [(u8, u8, u32); 2] = [(108, 109, 0x42_e0_1f), (127, 121, 0x42_00_1f)];
/// VP9 profile 0 on str0m's default payload types.
const VP9: (u8, u8) = (98, 99);

/// `config` with the node's codec list in place of str0m's default one.
pub(crate) fn sfu_codecs(config: RtcConfig) -> RtcConfig {
    let mut config = config.clear_codecs().enable_opus(true, false).enable_vp8(true);
    let codecs = config.codec_config();
    codecs.add_config(
        VP9.0.into(),
        Some(VP9.1.into()),
        Codec::Vp9,
        Frequency::NINETY_KHZ,
        None,
        FormatParams { profile_id: Some(0), ..Default::default() },
    );
    codecs.enable_av1(true);
    for (pt, rtx, profile_level_id) in H264 {
        codecs.add_h264(pt.into(), Some(rtx.into()), true, profile_level_id);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_offers_six_formats_with_rtx_in_its_order() {
        let mut config = sfu_codecs(RtcConfig::new());
        let params = config.codec_config().params();
        let kinds: Vec<Codec> = params.iter().map(|p| p.spec().codec).collect();
        assert_eq!(kinds, [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::Av1, Codec::H264, Codec::H264]);
        assert!(params.iter().filter(|p| p.spec().codec.is_video()).all(|p| p.resend().is_some()));
        let h264: Vec<_> = params.iter().filter(|p| p.spec().codec == Codec::H264).map(|p| p.spec().format).collect();
        assert!(h264.iter().all(|f| f.packetization_mode == Some(1)));
        let vp9 = params.iter().find(|p| p.spec().codec == Codec::Vp9).map(|p| p.spec().format.profile_id);
        assert_eq!(vp9, Some(Some(0)));
    }
}
