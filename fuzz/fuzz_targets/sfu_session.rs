//! The media node's session API on arbitrary input: session offers (valid offers from a real str0m peer,
//! mutated, and raw text), datagrams from known and unknown addresses, control commands, timeouts, closes
//! and client signalling messages. Nothing may panic; the core's counts must stay consistent.
#![no_main]

use arbitrary::Arbitrary;
use homeroom_media_node::core::{NewSession, Sfu, SfuConfig};
use homeroom_media_node::peer::{PeerCore, PeerOptions};
use homeroom_media_node::signal::ClientSignal;
use homeroom_media_node::Metrics;
use homeroom_shared::auth::MediaPerms;
use homeroom_shared::media::{ControlCommand, MediaCaps, Quality};
use homeroom_shared::protocol::MediaKind;
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Arbitrary, Debug)]
enum Op {
    /// A real peer's offer, with some bytes changed.
    Offer { participant: u8, room: u8, kind: u8, edits: Vec<(u16, u8)>, screen: bool },
    /// Any text as an offer.
    RawOffer { participant: u8, room: u8, sdp: String },
    /// A datagram from one of a few addresses (peers' or strangers').
    Datagram { from: u8, bytes: Vec<u8> },
    Control { kind: u8, participant: u8, room: u8, flag: bool },
    Close { which: u8 },
    Advance { ms: u16 },
    Signal { text: String },
}

fuzz_target!(|ops: Vec<Op>| {
    let start = Instant::now();
    let mut now = start;
    let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut config = SfuConfig::new(local);
    config.capacity = 8;
    let mut sfu = Sfu::new(config, Metrics::new(), now);
    let mut sessions = Vec::new();
    for op in ops.into_iter().take(64) {
        match op {
            Op::Offer { participant, room, kind, edits, screen } => {
                let options = match kind % 3 {
                    0 => PeerOptions::publisher(),
                    1 => PeerOptions::subscriber(),
                    _ => PeerOptions::simulcast_publisher(),
                };
                let peer_addr: SocketAddr = format!("127.0.0.1:{}", 50000 + u16::from(participant % 8)).parse().unwrap();
                let Ok((_, offer)) = PeerCore::new(&options, peer_addr, now) else { continue };
                let mut sdp = offer.sdp.into_bytes();
                for (at, byte) in edits.into_iter().take(8) {
                    if !sdp.is_empty() {
                        let at = usize::from(at) % sdp.len();
                        sdp[at] = byte;
                    }
                }
                let request = NewSession {
                    participant: format!("p{}", participant % 8),
                    name: None,
                    room: format!("t/r{}", room % 3),
                    perms: MediaPerms { audio: true, video: true, screen, subscribe: true },
                    caps: MediaCaps::default(),
                    offer_sdp: String::from_utf8_lossy(&sdp).into_owned(),
                    screen_mids: if screen { offer.screen_mids } else { Vec::new() },
                    quality: Quality::High,
                    issued_at: Some(u64::from(room)),
                };
                if let Ok(created) = sfu.create_session(now, request) {
                    sessions.push(created.id);
                }
            }
            Op::RawOffer { participant, room, sdp } => {
                let request = NewSession {
                    participant: format!("p{}", participant % 8),
                    name: Some("x".into()),
                    room: format!("t/r{}", room % 3),
                    perms: MediaPerms { audio: true, video: false, screen: false, subscribe: true },
                    caps: MediaCaps::for_role(homeroom_shared::protocol::Role::Student),
                    offer_sdp: sdp,
                    screen_mids: Vec::new(),
                    quality: Quality::Low,
                    issued_at: None,
                };
                if let Ok(created) = sfu.create_session(now, request) {
                    sessions.push(created.id);
                }
            }
            Op::Datagram { from, bytes } => {
                let source: SocketAddr = format!("127.0.0.1:{}", 50000 + u16::from(from % 10)).parse().unwrap();
                sfu.handle_datagram(now, source, &bytes);
            }
            Op::Control { kind, participant, room, flag } => {
                let room = format!("t/r{}", room % 3);
                let participant = format!("p{}", participant % 8);
                let command = match kind % 4 {
                    0 => ControlCommand::Mute { room, participant, kind: MediaKind::Audio, muted: flag },
                    1 => ControlCommand::Kick { room, participant },
                    2 => ControlCommand::CloseRoom { room },
                    _ => ControlCommand::Perms {
                        room,
                        participant,
                        perms: MediaPerms { audio: flag, video: !flag, screen: flag, subscribe: true },
                    },
                };
                sfu.control(now, u64::from(flag), &command);
            }
            Op::Close { which } => {
                if !sessions.is_empty() {
                    let id = sessions[usize::from(which) % sessions.len()];
                    sfu.close_session(now, id, homeroom_media_node::core::CloseReason::Deleted);
                }
            }
            Op::Advance { ms } => {
                now += Duration::from_millis(u64::from(ms));
                sfu.handle_timeout(now);
            }
            Op::Signal { text } => {
                let _ = serde_json::from_str::<ClientSignal>(&text);
            }
        }
        let _ = sfu.take_transmits();
        assert!(sfu.session_count() <= 8, "capacity is enforced");
        assert!(sfu.room_count() <= sfu.session_count());
    }
});
