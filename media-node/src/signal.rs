//! The session's in-band signalling: JSON text messages on the data channel the client opens in its first
//! offer (any label; the node uses the first channel that opens). See `docs/media-node.md`.
//!
//! - Node → client `offer` when tracks of other participants come or go; the client answers with `answer`.
//! - Client → node `offer` when its own published tracks change; the node replies `answer`.
//! - Client → node `quality` to choose the simulcast layer it receives.
//!
//! Glare: the node is the polite peer. A client offer that crosses a node offer wins: the node drops its own
//! offer, answers the client's, and offers its changes again afterwards. The client ignores a node offer while
//! its own offer is outstanding.

use homeroom_shared::media::Quality;
use homeroom_shared::protocol::{ErrorCode, MediaKind};
use serde::{Deserialize, Serialize};

/// Longest signalling message the node accepts or sends, in bytes (SDP of a large room included).
pub const MAX_SIGNAL_BYTES: usize = 256 * 1024;
/// Signalling messages a session may send per second, after a burst of [`SIGNAL_BURST`]: far above what a
/// client does (an answer per node offer, an offer per screen share, a quality change per click), far below
/// what would keep the node's media loop busy.
pub const SIGNAL_RATE_PER_SEC: u32 = 20;
pub const SIGNAL_BURST: u32 = 50;
/// A message costs one unit of the rate per started [`SIGNAL_UNIT_BYTES`]: the work is the parsing and
/// applying of its SDP, so a burst of offers at the size limit is as limited as the bytes it would take.
pub const SIGNAL_UNIT_BYTES: usize = 8 * 1024;

/// Units of the signalling rate a message of `len` bytes costs: one per started [`SIGNAL_UNIT_BYTES`].
pub fn signal_cost(len: usize) -> u32 {
    u32::try_from(len.div_ceil(SIGNAL_UNIT_BYTES).max(1)).unwrap_or(u32::MAX)
}

/// A message from the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientSignal {
    /// A new offer from the client (its published tracks changed). `screen` lists the mids (of this offer) that
    /// carry screen share rather than camera video.
    Offer {
        sdp: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        screen: Vec<String>,
    },
    /// The client's answer to the node's last `offer`.
    Answer { sdp: String },
    /// The simulcast quality the client wants to receive: for one received track (`mid` of the client's m-line)
    /// or, without `mid`, as the default for all of them.
    Quality {
        quality: Quality,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mid: Option<String>,
    },
}

/// A message from the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeSignal {
    /// The node's offer (tracks to receive were added or stopped) and what every receiving m-line carries.
    Offer { sdp: String, tracks: Vec<TrackInfo> },
    /// The node's answer to a client offer, with the same track list.
    Answer { sdp: String, tracks: Vec<TrackInfo> },
    /// A client message the node could not use. The session stays up.
    Error {
        code: ErrorCode,
        message: String,
        /// The `type` of the client message refused, when the node read that far (`"offer"`: the client's
        /// offer was refused and the node keeps its description as it was; the client rolls its own back).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<String>,
    },
}

/// What one of the client's receiving m-lines carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// The m-line (`a=mid`) in the client's session description.
    pub mid: String,
    /// The publishing participant (user id).
    pub participant: String,
    /// The publisher's display name, when its token has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub kind: MediaKind,
    /// A stable id of the published track (`{publisher session}/{publisher mid}`).
    pub source: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_documented_shape() {
        let quality: ClientSignal = serde_json::from_str(r#"{"type":"quality","quality":"low"}"#).unwrap();
        assert_eq!(quality, ClientSignal::Quality { quality: Quality::Low, mid: None });
        let offer: ClientSignal = serde_json::from_str(r#"{"type":"offer","sdp":"v=0","screen":["2"]}"#).unwrap();
        assert_eq!(offer, ClientSignal::Offer { sdp: "v=0".into(), screen: vec!["2".into()] });
        let answer: ClientSignal = serde_json::from_str(r#"{"type":"answer","sdp":"v=0"}"#).unwrap();
        assert_eq!(answer, ClientSignal::Answer { sdp: "v=0".into() });

        let node = NodeSignal::Offer {
            sdp: "v=0".into(),
            tracks: vec![TrackInfo {
                mid: "3".into(),
                participant: "u1".into(),
                name: None,
                kind: MediaKind::Screen,
                source: "00000000000000aa/1".into(),
            }],
        };
        assert_eq!(
            serde_json::to_string(&node).unwrap(),
            r#"{"type":"offer","sdp":"v=0","tracks":[{"mid":"3","participant":"u1","kind":"screen","source":"00000000000000aa/1"}]}"#
        );
        let error = NodeSignal::Error { code: ErrorCode::BadRequest, message: "x".into(), refused: None };
        assert_eq!(serde_json::to_string(&error).unwrap(), r#"{"type":"error","code":"bad_request","message":"x"}"#);
        let error =
            NodeSignal::Error { code: ErrorCode::BadRequest, message: "x".into(), refused: Some("offer".into()) };
        assert_eq!(
            serde_json::to_string(&error).unwrap(),
            r#"{"type":"error","code":"bad_request","message":"x","refused":"offer"}"#
        );
    }
}
