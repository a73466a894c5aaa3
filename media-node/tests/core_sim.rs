//! The SFU core driven in memory on a simulated clock: no sockets, no tokio.

use homeroom_media_node::peer::PeerOptions;
use homeroom_media_node::sim::{SimIdentity, SimNetwork};
use homeroom_shared::protocol::MediaKind;
use std::time::Duration;

#[test]
fn publisher_reaches_subscribers_of_its_room_only() {
    let mut net = SimNetwork::new();
    let publisher = net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    let carol = net.join(&SimIdentity::new("carol", "t/math"), &PeerOptions::subscriber()).unwrap();
    let eve = net.join(&SimIdentity::new("eve", "t/art"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(3));

    let sent = net.peer(publisher).unwrap().stats().sent.clone();
    eprintln!("publisher sent {sent:?}");
    for (name, index) in [("bob", bob), ("carol", carol)] {
        let stats = net.peer(index).unwrap().stats();
        eprintln!("{name}: {:?}", stats.tracks);
        assert!(stats.packets_from("alice", MediaKind::Audio) > 100, "{name} audio");
        assert!(stats.packets_from("alice", MediaKind::Video) > 100, "{name} video");
    }
    assert_eq!(net.peer(eve).unwrap().stats().packets(), 0);
}

use homeroom_shared::media::{ControlCommand, Quality};

fn counts(net: &SimNetwork, peer: usize, from: &str) -> (u64, u64) {
    let stats = net.peer(peer).unwrap().stats();
    (stats.packets_from(from, MediaKind::Audio), stats.packets_from(from, MediaKind::Video))
}

/// A session request for `participant` of t/math whose offer has send-only m-lines of `kinds`, no peer
/// behind it (for tests of what the core does with an offer alone).
fn bare_offer(participant: &str, kinds: &[str0m::media::MediaKind]) -> homeroom_media_node::core::NewSession {
    let mut rtc = str0m::Rtc::builder().set_rtp_mode(true).build(std::time::Instant::now());
    let mut change = rtc.sdp_api();
    for kind in kinds {
        change.add_media(*kind, str0m::media::Direction::SendOnly, None, None, None);
    }
    let (offer, _pending) = change.apply().expect("an offer");
    let identity = SimIdentity::new(participant, "t/math");
    homeroom_media_node::core::NewSession {
        participant: identity.participant,
        name: None,
        room: identity.room,
        perms: identity.perms,
        caps: identity.caps,
        offer_sdp: offer.to_sdp_string(),
        screen_mids: Vec::new(),
        quality: Quality::High,
        issued_at: None,
    }
}

/// A mute (or unmute) of alice's audio in t/math.
fn alice_audio(muted: bool) -> ControlCommand {
    ControlCommand::Mute { room: "t/math".into(), participant: "alice".into(), kind: MediaKind::Audio, muted }
}

#[test]
fn mute_drops_one_kind_until_unmuted() {
    let mut net = SimNetwork::new();
    net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(2));
    let mute = |muted| alice_audio(muted);
    let now = net.now();
    assert_eq!(net.sfu.control(now, 1_000, &mute(true)), 1);
    net.run_for(Duration::from_millis(200));
    let (audio_muted, video_muted) = counts(&net, bob, "alice");
    net.run_for(Duration::from_secs(1));
    let (audio_later, video_later) = counts(&net, bob, "alice");
    assert_eq!(audio_later, audio_muted, "muted audio is dropped");
    assert!(video_later > video_muted + 30, "video still flows");
    let now = net.now();
    net.sfu.control(now, 1_000, &mute(false));
    net.run_for(Duration::from_secs(1));
    assert!(counts(&net, bob, "alice").0 > audio_later + 30, "unmuted audio flows again");
}

#[test]
fn a_late_command_does_not_undo_a_newer_decision_or_a_newer_token() {
    let mut net = SimNetwork::new();
    net.join(&SimIdentity { issued_at: Some(900), ..SimIdentity::new("alice", "t/math") }, &PeerOptions::publisher())
        .unwrap();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(2));
    let mute = |muted| alice_audio(muted);
    // Muted at 1,000, unmuted at 1,004; the mute's call, given up on by the edge, arrives after the unmute.
    let now = net.now();
    assert_eq!(net.sfu.control(now, 1_004, &mute(false)), 1);
    assert_eq!(net.sfu.control(now, 1_000, &mute(true)), 0, "the older mute touches no session");
    net.run_for(Duration::from_millis(200));
    let audio = counts(&net, bob, "alice").0;
    net.run_for(Duration::from_secs(1));
    assert!(counts(&net, bob, "alice").0 > audio + 30, "alice's audio still flows");

    // A session whose token was issued at 2,000 is not changed by perms decided at 1,500.
    let carol = SimIdentity { issued_at: Some(2_000), ..SimIdentity::new("carol", "t/math") };
    let carol = net.join(&carol, &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_secs(2));
    let no_audio = homeroom_shared::auth::MediaPerms { audio: false, video: true, screen: true, subscribe: true };
    let perms = ControlCommand::Perms { room: "t/math".into(), participant: "carol".into(), perms: no_audio };
    assert_eq!(net.sfu.control(net.now(), 1_500, &perms), 0, "carol's token is newer than the decision");
    let carol_session = net.session_of(carol).unwrap();
    assert!(net.sfu.session_info(carol_session).unwrap().connected);
    assert_eq!(net.sfu.control(net.now(), 2_000, &perms), 1, "a decision of the token's second applies");
}

#[test]
fn kick_closes_the_session_and_its_tracks_leave_the_room() {
    let mut net = SimNetwork::new();
    let alice = net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(2));
    let now = net.now();
    let kicked =
        net.sfu.control(now, 1_000, &ControlCommand::Kick { room: "t/math".into(), participant: "alice".into() });
    assert_eq!(kicked, 1);
    net.run_for(Duration::from_secs(1));
    assert!(net.peer(alice).unwrap().stats().closed, "the kicked peer learns at once (DTLS close)");
    assert_eq!(net.sfu.session_count(), 1);
    let bob_session = net.session_of(bob).unwrap();
    assert_eq!(net.sfu.session_info(bob_session).unwrap().receiving, 0, "bob's copies were stopped");
}

#[test]
fn a_kick_or_a_mute_is_not_undone_by_reconnecting_with_an_older_token() {
    let mut net = SimNetwork::new();
    let issued =
        |participant: &str, iat: Option<u64>| SimIdentity { issued_at: iat, ..SimIdentity::new(participant, "t/math") };
    net.join(&issued("carol", Some(900)), &PeerOptions::publisher()).unwrap();
    net.join(&issued("dave", Some(900)), &PeerOptions::publisher()).unwrap();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(2));

    // At wall-clock second 1,000 a moderator kicks dave and mutes carol's audio.
    let now = net.now();
    let kick = ControlCommand::Kick { room: "t/math".into(), participant: "dave".into() };
    assert_eq!(net.sfu.control(now, 1_000, &kick), 1);
    let mute = ControlCommand::Mute {
        room: "t/math".into(),
        participant: "carol".into(),
        kind: MediaKind::Audio,
        muted: true,
    };
    assert_eq!(net.sfu.control(now, 1_000, &mute), 1);

    for iat in [Some(900), Some(1_000), None] {
        let refused = net.join(&issued("dave", iat), &PeerOptions::publisher());
        let message = refused.expect_err("a token from before the kick opens no session").to_string();
        assert!(message.contains("removed from the room (by a moderator"), "{message}");
    }

    // Carol comes back with her old token as well (a second tab): the session opens, but its audio stays muted.
    let carol_again = net.join(&issued("carol", Some(900)), &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_secs(2));
    assert!(net.sfu.session_info(net.session_of(carol_again).unwrap()).unwrap().connected);
    let bob_session = net.session_of(bob).unwrap();
    assert_eq!(net.sfu.session_info(bob_session).unwrap().receiving, 4, "both of carol's sessions reach bob");
    // Per received track: every one of carol's video tracks (the new session's too) flows, none of her audio.
    let carol_tracks = |net: &SimNetwork| -> Vec<(MediaKind, u64)> {
        let stats = net.peer(bob).unwrap().stats();
        let carol = stats.tracks.values().filter(|t| t.participant.as_deref() == Some("carol"));
        carol.map(|t| (t.kind.unwrap(), t.packets)).collect()
    };
    let before = carol_tracks(&net);
    net.run_for(Duration::from_secs(1));
    let after = carol_tracks(&net);
    assert_eq!(before.len(), 4, "bob has carol's four tracks: {before:?}");
    for ((kind, was), (_, now)) in before.iter().zip(&after) {
        match kind {
            MediaKind::Audio => assert_eq!(now, was, "the remembered mute applies to each session"),
            _ => assert!(*now > was + 30, "her video flows from each session: {was} → {now}"),
        }
    }
    let audio_after = counts(&net, bob, "carol").0;

    // Tokens the edge issues after the decisions say what the room decided; the node takes them as they are.
    net.join(&issued("dave", Some(1_001)), &PeerOptions::publisher()).expect("a newer token is admitted");
    net.join(&issued("carol", Some(1_001)), &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_secs(2));
    let (audio_later, _) = counts(&net, bob, "carol");
    assert!(audio_later > audio_after + 30, "the newer session's audio flows");
}

#[test]
fn a_session_publishes_at_most_its_limit_of_each_kind() {
    use homeroom_media_node::core::max_published;
    use str0m::media::MediaKind as Str0mKind;
    // An offer with 40 send-only m-lines, none declared a screen share.
    let request = bare_offer("mallory", &[Str0mKind::Audio, Str0mKind::Video].repeat(20));
    let mut net = SimNetwork::new();
    let now = net.now();
    let created = net.sfu.create_session(now, request).expect("the offer is accepted");
    let published = net.sfu.session_info(created.id).unwrap().published;
    let count = |kind| published.iter().filter(|k| **k == kind).count();
    assert_eq!(count(MediaKind::Audio), max_published(MediaKind::Audio));
    assert_eq!(count(MediaKind::Video), max_published(MediaKind::Video), "no second camera, labelled or not");
    assert_eq!(count(MediaKind::Screen), 0, "nothing was declared a screen share");
}

#[test]
fn simulcast_layer_follows_the_subscribers_preference() {
    // Without bandwidth estimation, so that only preferences decide (the simulated network's instant delivery
    // makes the delay-based estimate swing; the budget rule has unit tests of its own).
    let mut net = SimNetwork::without_bwe();
    net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::simulcast_publisher()).unwrap();
    let low = PeerOptions { quality: Some(Quality::Low), ..PeerOptions::subscriber() };
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &low).unwrap();
    let carol = net.join(&SimIdentity::new("carol", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(3));
    let layer = |net: &SimNetwork, peer| {
        let stats = net.peer(peer).unwrap().stats();
        let track = stats.track("alice", MediaKind::Video).cloned().unwrap_or_default();
        (track.last_tag.unwrap_or_default(), track.tags)
    };
    let (bob_layer, bob_tags) = layer(&net, bob);
    let (carol_layer, carol_tags) = layer(&net, carol);
    eprintln!("carol {carol_tags:?}");
    eprintln!("bob {bob_tags:?}");
    assert_eq!(bob_layer, "l");
    assert_eq!(carol_layer, "h");

    net.peer_mut(bob).unwrap().set_quality(Quality::High, None);
    net.run_for(Duration::from_secs(2));
    let (bob_layer, tags) = layer(&net, bob);
    eprintln!("bob after high {tags:?}");
    assert_eq!(bob_layer, "h");
    net.peer_mut(bob).unwrap().set_quality(Quality::Medium, None);
    net.run_for(Duration::from_secs(2));
    let (bob_layer, tags) = layer(&net, bob);
    eprintln!("bob after medium {tags:?}");
    assert_eq!(bob_layer, "m");
}

#[test]
fn subscriber_keyframe_requests_reach_the_publisher_throttled() {
    let mut net = SimNetwork::new();
    let alice = net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(2));
    let video_mid = net.peer(bob).unwrap().stats().track("alice", MediaKind::Video).unwrap().mid.clone();
    let before = net.peer(alice).unwrap().stats().keyframe_requests;
    let keyframes_before = net.peer(bob).unwrap().stats().track("alice", MediaKind::Video).unwrap().keyframes;
    // A burst of PLIs within 100 ms: one reaches the publisher.
    for _ in 0..5 {
        assert!(net.peer_mut(bob).unwrap().request_keyframe(&video_mid));
        net.run_for(Duration::from_millis(20));
    }
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.peer(alice).unwrap().stats().keyframe_requests, before + 1);
    // After the throttle interval (500 ms), the next one goes through too.
    net.run_for(Duration::from_millis(500));
    net.peer_mut(bob).unwrap().request_keyframe(&video_mid);
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.peer(alice).unwrap().stats().keyframe_requests, before + 2);
    let keyframes = net.peer(bob).unwrap().stats().track("alice", MediaKind::Video).unwrap().keyframes;
    assert_eq!(keyframes, keyframes_before + 2, "each request that went through produced a forwarded keyframe");
    assert_eq!(net.metrics.packets_out(MediaKind::Audio), net.peer(bob).unwrap().stats().packets_of(MediaKind::Audio));
}

#[test]
fn a_late_subscriber_starts_video_at_a_requested_keyframe() {
    let mut net = SimNetwork::new();
    let alice = net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_secs(3));
    let requests_before = net.peer(alice).unwrap().stats().keyframe_requests;
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(1));
    let stats = net.peer(bob).unwrap().stats();
    let video = stats.track("alice", MediaKind::Video).unwrap();
    assert!(video.packets > 20 && video.keyframes == 1, "{video:?}");
    assert!(net.peer(alice).unwrap().stats().keyframe_requests > requests_before);
}

#[test]
fn a_silent_session_is_reaped_and_leaves_its_room() {
    use homeroom_media_node::core::SfuConfig;
    let config = SfuConfig { idle_timeout: Duration::from_secs(3), ..SfuConfig::new("10.0.0.1:5000".parse().unwrap()) };
    let mut net = SimNetwork::with_config(config);
    let alice = net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.sfu.session_count(), 2);
    net.cut(alice);
    net.run_for(Duration::from_secs(5));
    assert_eq!(net.sfu.session_count(), 1, "alice went silent and was reaped");
    let bob_session = net.session_of(bob).unwrap();
    assert_eq!(net.sfu.session_info(bob_session).unwrap().receiving, 0);
    assert!(net.metrics.encode().contains("homeroom_media_sessions_closed_total{reason=\"idle\"} 1"));
}

#[test]
fn a_session_that_never_connects_is_closed_after_the_connect_timeout() {
    use homeroom_media_node::core::{SfuConfig, CONNECT_TIMEOUT};
    // Idle reaping is pushed past the connect timeout, so only the connect deadline can close the session.
    let config =
        SfuConfig { idle_timeout: Duration::from_secs(120), ..SfuConfig::new("10.0.0.1:5000".parse().unwrap()) };
    let mut net = SimNetwork::with_config(config);
    let request = bare_offer("ghost", &[str0m::media::MediaKind::Audio]);
    let now = net.now();
    net.sfu.create_session(now, request).expect("the offer is accepted");
    net.run_for(CONNECT_TIMEOUT - Duration::from_secs(1));
    assert_eq!(net.sfu.session_count(), 1, "still within the connect timeout");
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.sfu.session_count(), 0, "never connected: closed");
    assert!(net.metrics.encode().contains("homeroom_media_sessions_closed_total{reason=\"connect_timeout\"} 1"));
}

#[test]
fn a_publish_cap_limits_the_layers_anyone_receives() {
    use homeroom_shared::media::MediaCaps;
    let mut net = SimNetwork::without_bwe();
    let student = SimIdentity {
        caps: MediaCaps { publish_quality: Some(Quality::Medium), ..MediaCaps::default() },
        ..SimIdentity::new("student", "t/math")
    };
    net.join(&student, &PeerOptions::simulcast_publisher()).unwrap();
    let teacher = net.join(&SimIdentity::new("teacher", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(3));
    let stats = net.peer(teacher).unwrap().stats();
    let video = stats.track("student", MediaKind::Video).unwrap();
    eprintln!("teacher receives {:?}", video.tags);
    assert_eq!(video.last_tag.as_deref(), Some("m"), "high is above the student's cap");
    assert_eq!(video.tags.get("h").copied().unwrap_or(0), 0);
}

#[test]
fn a_client_offer_starts_and_stops_a_screen_share() {
    let mut net = SimNetwork::new();
    let alice = net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(2));
    assert!(net.peer_mut(alice).unwrap().start_screen_share(200));
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.peer(alice).unwrap().stats().own_offers_answered, 1);
    let screen = net.peer(bob).unwrap().stats().packets_from("alice", MediaKind::Screen);
    assert!(screen > 10, "bob receives alice's screen share ({screen} packets)");
    let track = net.peer(bob).unwrap().stats().track("alice", MediaKind::Screen).unwrap().clone();
    assert_eq!(track.last_tag.as_deref(), Some("s"));

    assert!(net.peer_mut(alice).unwrap().stop_publishing(MediaKind::Screen));
    net.run_for(Duration::from_secs(1));
    let stopped = net.peer(bob).unwrap().stats().packets_from("alice", MediaKind::Screen);
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.peer(bob).unwrap().stats().packets_from("alice", MediaKind::Screen), stopped);
    let alice_session = net.session_of(alice).unwrap();
    let published = net.sfu.session_info(alice_session).unwrap().published;
    assert_eq!(published, vec![MediaKind::Audio, MediaKind::Video], "the screen track was unpublished");
    let bob_session = net.session_of(bob).unwrap();
    assert_eq!(net.sfu.session_info(bob_session).unwrap().receiving, 2, "bob's copy of the screen was stopped");
}

#[test]
fn crossing_offers_resolve_with_the_node_as_the_polite_peer() {
    let mut net = SimNetwork::new();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(1));
    // While bob is unreachable, alice joins (the node offers bob her tracks) and bob starts a screen share
    // (bob offers the node): both offers are lost and retransmitted by SCTP, so they cross.
    net.cut(bob);
    let alice = net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_millis(500));
    assert!(net.peer_mut(bob).unwrap().start_screen_share(200));
    net.run_for(Duration::from_millis(200));
    net.restore(bob);
    net.run_for(Duration::from_secs(6));
    let stats = net.peer(bob).unwrap().stats();
    eprintln!(
        "bob: {} node offers ignored, {} answered, own offers answered {}, errors {:?}",
        stats.ignored_offers, stats.renegotiations, stats.own_offers_answered, stats.errors
    );
    assert!(stats.ignored_offers >= 1, "the offers crossed: bob ignored the node's while his own was out");
    assert_eq!(stats.own_offers_answered, 1, "the node answered bob's offer");
    assert!(stats.packets_from("alice", MediaKind::Video) > 20, "and then offered alice's tracks again");
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert!(net.peer(alice).unwrap().stats().packets_from("bob", MediaKind::Screen) > 10);
}

/// The same crossing, with the node's offer reusing the m-lines of a track that left: the dropped offer's
/// direction changes are undone, and the offer after bob's gives them to alice's tracks again.
#[test]
fn crossing_offers_leave_reused_m_lines_consistent() {
    use homeroom_media_node::core::CloseReason;
    let mut net = SimNetwork::new();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    let carol = net.join(&SimIdentity::new("carol", "t/math"), &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_secs(2));
    let (now, carol_session) = (net.now(), net.session_of(carol).unwrap());
    net.sfu.close_session(now, carol_session, CloseReason::Deleted);
    net.run_for(Duration::from_secs(1));
    net.cut(bob);
    let alice = net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_millis(500));
    assert!(net.peer_mut(bob).unwrap().start_screen_share(200));
    net.run_for(Duration::from_millis(200));
    net.restore(bob);
    net.run_for(Duration::from_secs(6));
    let stats = net.peer(bob).unwrap().stats();
    assert!(stats.ignored_offers >= 1, "the offers crossed");
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert!(stats.packets_from("alice", MediaKind::Video) > 20, "alice's video on carol's old m-line");
    assert_eq!(stats.tracks.len(), 2, "carol's two m-lines, reused: {:?}", stats.tracks.keys().collect::<Vec<_>>());
    assert!(net.peer(alice).unwrap().stats().packets_from("bob", MediaKind::Screen) > 10);
}

#[test]
fn one_participant_may_hold_a_few_sessions_per_room() {
    use homeroom_media_node::core::MAX_SESSIONS_PER_PARTICIPANT;
    use homeroom_media_node::sim::SimError;
    let mut net = SimNetwork::new();
    let bob = SimIdentity::new("bob", "t/math");
    for _ in 0..MAX_SESSIONS_PER_PARTICIPANT {
        net.join(&bob, &PeerOptions::subscriber()).unwrap();
    }
    let refused = net.join(&bob, &PeerOptions::subscriber()).unwrap_err();
    assert!(
        matches!(refused, SimError::Create(ref e) if e.code() == homeroom_shared::protocol::ErrorCode::RateLimited)
    );
    net.join(&SimIdentity::new("bob", "t/art"), &PeerOptions::subscriber()).expect("another room is fine");
}

#[test]
fn a_large_room_is_offered_to_a_newcomer_in_one_signalling_message() {
    // 60 cameras: the node's offer to a newcomer has 60 video m-lines, ≈ 2.3 KB each with the node's codec
    // list (`core::codecs`; ≈ 4.3 KB with str0m's default list, which capped a session near 45 cameras), so
    // ≈ 140 KB — more than str0m's default data-channel send buffer (128 KiB) takes, within the 256 KiB the
    // channel announces for one message. Before the node raised its buffer, such an offer was refused on every
    // retry and the newcomer never received anyone.
    const CAMERAS: usize = 60;
    let mut net = SimNetwork::without_bwe();
    let camera = PeerOptions { audio: false, video_kbps: 20, ..PeerOptions::publisher() };
    for i in 0..CAMERAS {
        net.join(&SimIdentity::new(&format!("cam{i}"), "t/big"), &camera).unwrap();
    }
    let newcomer = net.join(&SimIdentity::new("late", "t/big"), &PeerOptions::subscriber()).unwrap();
    let session = net.session_of(newcomer).unwrap();
    let flowing = |net: &SimNetwork| {
        let stats = net.peer(newcomer).unwrap().stats();
        (0..CAMERAS).filter(|i| stats.packets_from(&format!("cam{i}"), MediaKind::Video) > 0).count()
    };
    for _ in 0..24 {
        net.run_for(Duration::from_millis(250));
        if flowing(&net) == CAMERAS {
            break;
        }
    }
    let receiving = net.sfu.session_info(session).unwrap().receiving;
    let largest = net.peer(newcomer).unwrap().stats().largest_signal_bytes;
    eprintln!("{CAMERAS} cameras: largest offer {largest} bytes ({} per camera)", largest / CAMERAS);
    assert_eq!((receiving, flowing(&net)), (CAMERAS, CAMERAS), "every camera negotiated and flowing to the newcomer");
    assert!(largest > 128 * 1024, "the offer needed more than str0m's default send buffer: {largest} bytes");
    assert!(largest / CAMERAS < 2_500, "the node's codec list keeps an m-line small: {} bytes", largest / CAMERAS);
}

#[test]
fn an_offer_answered_late_is_sent_again_unchanged_and_renegotiation_keeps_working() {
    let mut net = SimNetwork::new();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(1));
    // Bob's browser takes 12 s to apply the node's offer of alice's tracks: past the node's 10 s offer timeout,
    // so the node sends it again while bob is still busy with the first copy.
    net.peer_mut(bob).unwrap().set_answer_delay(Duration::from_secs(12));
    let _alice = net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_secs(14));
    net.peer_mut(bob).unwrap().set_answer_delay(Duration::ZERO);
    net.run_for(Duration::from_secs(12));
    let video = net.peer(bob).unwrap().stats().packets_from("alice", MediaKind::Video);
    assert!(video > 100, "alice's video reaches bob after the late answer: {video} packets");
    // A later change still negotiates: carol joins and bob is offered her tracks, at once now.
    let _carol = net.join(&SimIdentity::new("carol", "t/math"), &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_secs(3));
    let stats = net.peer(bob).unwrap().stats();
    assert!(stats.packets_from("carol", MediaKind::Video) > 20, "bob receives carol's video too");
    let refused: Vec<&String> = stats.errors.iter().filter(|e| !e.contains("no node offer outstanding")).collect();
    assert!(refused.is_empty(), "bob applied every offer (the copy's second answer is the only error): {refused:?}");
}

#[test]
fn a_client_that_never_answers_the_nodes_offer_is_closed() {
    let mut net = SimNetwork::new();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(1));
    net.peer_mut(bob).unwrap().set_answer_delay(Duration::from_secs(3600));
    let _alice = net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_secs(35));
    assert!(!net.peer(bob).unwrap().stats().closed, "still open while the offer is sent again");
    net.run_for(Duration::from_secs(10));
    assert!(net.peer(bob).unwrap().stats().closed, "closed after four unanswered sends of one offer");
}

#[test]
fn a_client_flooding_signalling_messages_is_told_and_the_room_goes_on() {
    use homeroom_shared::media::Quality;
    let mut net = SimNetwork::new();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    let _alice = net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_secs(2));
    for _ in 0..300 {
        net.peer_mut(bob).unwrap().set_quality(Quality::Low, None);
    }
    net.run_for(Duration::from_secs(1));
    let limited = |net: &SimNetwork| {
        net.peer(bob).unwrap().stats().errors.iter().filter(|e| e.contains("too many signalling messages")).count()
    };
    let refused = limited(&net);
    assert!((200..=260).contains(&refused), "beyond the burst of 50 (plus ≈ 20 refilled), refused: {refused}");
    // The budget refills; a client at a sane pace is never refused, and media kept flowing.
    net.run_for(Duration::from_secs(3));
    let video = net.peer(bob).unwrap().stats().packets_from("alice", MediaKind::Video);
    net.peer_mut(bob).unwrap().set_quality(Quality::High, None);
    net.run_for(Duration::from_secs(1));
    assert_eq!(limited(&net), refused);
    assert!(net.peer(bob).unwrap().stats().packets_from("alice", MediaKind::Video) > video + 20);
}

#[test]
fn large_offers_pay_for_their_size_in_the_signalling_budget() {
    use homeroom_media_node::signal::{signal_cost, ClientSignal, SIGNAL_BURST};
    use homeroom_shared::media::Quality;
    let mut net = SimNetwork::new();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(2));
    // 100 KiB each (not SDP: parsing stops early, but the budget is charged before that).
    let offer = "x".repeat(100 * 1024 - 64);
    let message = serde_json::to_string(&ClientSignal::Offer { sdp: offer.clone(), screen: Vec::new() }).unwrap();
    let cost = signal_cost(message.len());
    assert_eq!(cost, 13);
    for _ in 0..10 {
        net.peer_mut(bob).unwrap().send_raw_signal(ClientSignal::Offer { sdp: offer.clone(), screen: Vec::new() });
    }
    net.run_for(Duration::from_millis(100));
    let errors = net.peer(bob).unwrap().stats().errors.clone();
    let limited = errors.iter().filter(|e| e.contains("too many signalling messages")).count();
    let parsed = errors.iter().filter(|e| e.contains("not SDP")).count();
    assert_eq!(parsed as u32, SIGNAL_BURST / cost, "the burst holds {} such offers: {errors:?}", SIGNAL_BURST / cost);
    assert_eq!(parsed + limited, 10);
    // Small messages are still one unit each, and the budget refills.
    net.run_for(Duration::from_secs(3));
    net.peer_mut(bob).unwrap().set_quality(Quality::Low, None);
    net.run_for(Duration::from_millis(100));
    let limited_after = net.peer(bob).unwrap().stats().errors.iter().filter(|e| e.contains("too many")).count();
    assert_eq!(limited_after, limited, "a quality change after the refill is not refused");

    // Answers: a good one costs one unit whatever its size (one per offer of the node's); one that fails
    // pays for its size afterwards. With an offer outstanding (bob is slow to answer), large bad answers.
    net.run_for(Duration::from_secs(3));
    net.peer_mut(bob).unwrap().set_answer_delay(Duration::from_secs(5));
    net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_millis(300));
    let before = net.peer(bob).unwrap().stats().errors.len();
    for _ in 0..10 {
        net.peer_mut(bob).unwrap().send_raw_signal(ClientSignal::Answer { sdp: offer.clone() });
    }
    net.run_for(Duration::from_millis(100));
    let errors = net.peer(bob).unwrap().stats().errors[before..].to_vec();
    let parsed = errors.iter().filter(|e| e.contains("not SDP")).count();
    let limited = errors.iter().filter(|e| e.contains("too many signalling messages")).count();
    assert!(
        parsed <= 5 && parsed + limited == 10,
        "bad answers pay for their size: {parsed} parsed, {limited} refused"
    );
}

/// A STUN binding request alice's peer sent, captured by stepping her alone (consent checks come every few
/// seconds).
fn captured_binding_request(net: &mut SimNetwork, alice: usize) -> Vec<u8> {
    for _ in 0..200 {
        let sent = net.step_peer(alice, Duration::from_millis(100));
        if let Some(stun) = sent.into_iter().find(|d| d.len() > 20 && d[..2] == [0x00, 0x01]) {
            return stun;
        }
    }
    panic!("no binding request within 20 s");
}

#[test]
fn stun_from_ever_new_source_addresses_stops_reaching_the_ice_agent() {
    use homeroom_media_node::core::session::MAX_STUN_SOURCES;
    let mut net = SimNetwork::new();
    let alice = net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_secs(2));
    let request = captured_binding_request(&mut net, alice);
    // First 100 that only name her ufrag (integrity broken): they never become candidates, so they must not
    // use up what her real addresses may need.
    let mut forged = request.clone();
    let at = forged.len() - 12;
    forged[at] ^= 0xff;
    let now = net.now();
    for port in 0..100u16 {
        net.sfu.handle_datagram(now, std::net::SocketAddr::from(([10, 9, 9, 8], 20_000 + port)), &forged);
    }
    assert!(net.metrics.encode().contains("homeroom_media_stun_refused_total 0"), "forged requests count for nothing");
    // Signed with alice's own credentials (a replay of her request), from 100 new ports: each would be a new
    // remote candidate her ICE agent keeps and scans on every request.
    for port in 0..100u16 {
        let source = std::net::SocketAddr::from(([10, 9, 9, 9], 20_000 + port));
        net.sfu.handle_datagram(now, source, &request);
    }
    let admitted = MAX_STUN_SOURCES - 1; // alice's own address is the first source
    let metrics = net.metrics.encode();
    assert!(
        metrics.contains(&format!("homeroom_media_stun_refused_total {}", 100 - admitted)),
        "{}",
        metrics.lines().filter(|l| l.contains("stun")).collect::<Vec<_>>().join("\n")
    );
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.sfu.session_count(), 1, "alice's own session is unharmed");
}

#[test]
fn forged_stun_does_not_keep_a_silent_session_alive() {
    use homeroom_media_node::core::SfuConfig;
    let config = SfuConfig { idle_timeout: Duration::from_secs(3), ..SfuConfig::new("10.0.0.1:5000".parse().unwrap()) };
    let mut net = SimNetwork::with_config(config);
    let alice = net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_secs(2));
    let mut forged = captured_binding_request(&mut net, alice);
    // Alice's ufrag is in clear in every request; anyone can route a message to her session with it. One
    // byte of the MESSAGE-INTEGRITY changed (it sits before the 8-byte FINGERPRINT): not hers any more.
    let at = forged.len() - 12;
    forged[at] ^= 0xff;
    net.cut(alice);
    let stranger = std::net::SocketAddr::from(([10, 9, 9, 9], 40_000));
    for _ in 0..6 {
        net.run_for(Duration::from_secs(1));
        let now = net.now();
        net.sfu.handle_datagram(now, stranger, &forged);
    }
    assert_eq!(net.sfu.session_count(), 0, "reaped after the idle timeout despite the forged requests");
}

/// str0m never reuses a stopped m-line, so a member of a class where people come and go used to collect one
/// m-line per track that ever left, in every later offer, until its offers outgrew the signalling limit and
/// it was offered nobody new. The node now reuses the m-line of a track that went away.
#[test]
fn a_member_of_a_class_where_people_come_and_go_keeps_a_bounded_offer() {
    use homeroom_media_node::core::CloseReason;
    let mut net = SimNetwork::new();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(1));
    for round in 0..12 {
        let name = format!("pupil-{round}");
        let pupil = net.join(&SimIdentity::new(&name, "t/math"), &PeerOptions::publisher()).unwrap();
        net.run_for(Duration::from_secs(2));
        let stats = net.peer(bob).unwrap().stats().clone();
        let audio = stats.packets_from(&name, MediaKind::Audio);
        let video = stats.track(&name, MediaKind::Video).map_or((0, 0), |t| (t.packets, t.keyframes));
        assert!(audio > 20 && video.0 > 10 && video.1 >= 1, "round {round}: bob gets {name}: {audio} audio, {video:?}");
        let id = net.session_of(pupil).unwrap();
        let now = net.now();
        net.sfu.close_session(now, id, CloseReason::Deleted);
        net.run_for(Duration::from_millis(500));
    }
    let mids = net.peer(bob).unwrap().stats().tracks.len();
    assert_eq!(mids, 2, "one audio and one video m-line carried all twelve pupils in turn");
    let bob_session = net.session_of(bob).unwrap();
    assert_eq!(net.sfu.session_info(bob_session).unwrap().receiving, 0, "the last pupil's copies were stopped");
}

#[test]
fn an_offer_with_thousands_of_m_lines_is_refused_before_it_is_parsed() {
    use homeroom_media_node::core::MAX_OFFER_MLINES;
    use homeroom_media_node::signal::ClientSignal;
    let mut net = SimNetwork::new();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(2));
    let sdp = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".repeat(MAX_OFFER_MLINES + 1);
    net.peer_mut(bob).unwrap().send_raw_signal(ClientSignal::Offer { sdp: sdp.clone(), screen: Vec::new() });
    net.run_for(Duration::from_millis(100));
    let errors = &net.peer(bob).unwrap().stats().errors;
    assert!(errors.iter().any(|e| e.contains("513 m-lines; at most 512")), "{errors:?}");
    // The same at the door.
    let request = homeroom_media_node::core::NewSession {
        offer_sdp: sdp,
        ..bare_offer("eve", &[str0m::media::MediaKind::Audio])
    };
    let now = net.now();
    let refused = net.sfu.create_session(now, request).unwrap_err();
    assert!(refused.to_string().contains("513 m-lines"), "{refused}");
}

/// A client that made a received m-line `inactive` itself: when that track leaves, setting the line inactive
/// changes nothing, so no offer would carry the stop. It must settle at once, or the track's return (a
/// camera turned back on) would never be offered.
#[test]
fn a_stop_the_client_already_made_settles_without_an_offer() {
    let mut net = SimNetwork::new();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    let alice = net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_secs(2));
    let video_mid = net.peer(bob).unwrap().stats().track("alice", MediaKind::Video).unwrap().mid.clone();
    assert!(net.peer_mut(bob).unwrap().stop_receiving(&video_mid));
    net.run_for(Duration::from_secs(1));
    assert!(net.peer(bob).unwrap().stats().errors.is_empty(), "{:?}", net.peer(bob).unwrap().stats().errors);

    // Alice's camera goes: bob's copy must end, though no offer carries its stop.
    assert!(net.peer_mut(alice).unwrap().stop_publishing(MediaKind::Video));
    net.run_for(Duration::from_secs(1));
    let info = net.sfu.session_info(net.session_of(bob).unwrap()).unwrap();
    assert_eq!((info.receiving, info.subscriptions), (1, 1), "only alice's audio is left, nothing waits");
    // Her screen share next takes the freed video m-line.
    assert!(net.peer_mut(alice).unwrap().start_screen_share(300));
    net.run_for(Duration::from_secs(2));
    let stats = net.peer(bob).unwrap().stats();
    assert_eq!(stats.track("alice", MediaKind::Screen).map(|t| t.mid.clone()), Some(video_mid), "reused");
}

/// A client that rejects a node m-line (port 0, as a browser without the codec does) gets nothing on it and
/// is not offered that publisher's tracks of that kind again, even after a rejoin (each offer would add a dead
/// m-line); the line is dead, so no offer stops it, and a track of another kind comes on a new line.
#[test]
fn a_track_the_client_rejected_is_neither_forwarded_nor_offered_again() {
    let mut net = SimNetwork::new();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.peer_mut(bob).unwrap().decline_track_of("alice", MediaKind::Video);
    let alice = net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_secs(2));
    let bob_session = net.session_of(bob).unwrap();
    let stats = net.peer(bob).unwrap().stats().clone();
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert!(stats.packets_from("alice", MediaKind::Audio) > 50, "audio flows");
    assert_eq!(stats.packets_from("alice", MediaKind::Video), 0, "the rejected line carries nothing");
    let rejected_mid = stats.track("alice", MediaKind::Video).map(|t| t.mid.clone()).expect("offered once");
    let info = net.sfu.session_info(bob_session).unwrap();
    assert_eq!((info.receiving, info.subscriptions), (1, 1), "audio open; the declined video forgotten");

    // Nothing to offer while alice's camera stays: no offer loop.
    let offers = stats.node_offers;
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.peer(bob).unwrap().stats().node_offers, offers, "the declined track is not offered again");

    // The camera goes: the declined copy is forgotten without an offer.
    assert!(net.peer_mut(alice).unwrap().stop_publishing(MediaKind::Video));
    net.run_for(Duration::from_secs(1));
    let info = net.sfu.session_info(bob_session).unwrap();
    assert_eq!((info.receiving, info.subscriptions), (1, 1), "only alice's audio is left");
    assert_eq!(net.peer(bob).unwrap().stats().node_offers, offers, "a dead line needs no offer to stop");

    // Her screen share comes on a new line, and flows.
    assert!(net.peer_mut(alice).unwrap().start_screen_share(300));
    net.run_for(Duration::from_secs(2));
    let stats = net.peer(bob).unwrap().stats();
    let screen = stats.track("alice", MediaKind::Screen).expect("the screen share is offered");
    assert_ne!(screen.mid, rejected_mid, "a rejected line is never reused");
    assert!(screen.packets > 10, "the screen share flows: {screen:?}");

    // Alice leaves and comes back with a camera: bob gets her audio again, and is not offered her video.
    let now = net.now();
    net.sfu.close_session(now, net.session_of(alice).unwrap(), homeroom_media_node::core::CloseReason::Deleted);
    net.run_for(Duration::from_secs(1));
    net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_secs(2));
    let stats = net.peer(bob).unwrap().stats();
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    let videos = stats.tracks.values().filter(|t| t.kind == Some(MediaKind::Video)).count();
    assert_eq!(videos, 1, "no new video m-line for alice: {:?}", stats.tracks);
    let info = net.sfu.session_info(bob_session).unwrap();
    assert_eq!((info.receiving, info.subscriptions), (1, 1), "her new audio only");
}

/// After a refused answer the node's changes go back to be offered again, but not at once: building an offer
/// for a large room is expensive, so a client sending bad answers cannot have one built per message.
#[test]
fn a_refused_answer_holds_the_next_offer_back() {
    use homeroom_media_node::signal::ClientSignal;
    let mut net = SimNetwork::new();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(1));
    // Bob holds the node's offers (a slow client), so one stays outstanding while he answers garbage.
    net.peer_mut(bob).unwrap().set_answer_delay(Duration::from_secs(60));
    net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.peer(bob).unwrap().stats().node_offers, 1, "alice's tracks offered to bob");

    // A well-formed answer to some other offer: it parses, and does not fit the node's.
    let now = std::time::Instant::now();
    let mut stranger = str0m::Rtc::builder().set_rtp_mode(true).build(now);
    let mut change = stranger.sdp_api();
    change.add_media(str0m::media::MediaKind::Video, str0m::media::Direction::SendOnly, None, None, None);
    let (offer, _pending) = change.apply().expect("an offer");
    let mut answerer = str0m::Rtc::builder().set_rtp_mode(true).build(now);
    let answer = answerer.sdp_api().accept_offer(offer).expect("an answer");
    net.peer_mut(bob).unwrap().send_raw_signal(ClientSignal::Answer { sdp: answer.to_sdp_string() });
    net.run_for(Duration::from_millis(200));
    let stats = net.peer(bob).unwrap().stats();
    assert!(stats.errors.iter().any(|e| e.contains("does not fit the node's offer")), "{:?}", stats.errors);
    assert_eq!(stats.node_offers, 1, "no new offer within 200 ms of the refusal");
    net.run_for(Duration::from_millis(400));
    assert_eq!(net.peer(bob).unwrap().stats().node_offers, 2, "offered again after the hold (250 ms + housekeeping)");
}

/// A second screen share while the first is on is not published, and the client is told why (its answer
/// accepted the line, so it would otherwise send into a track nobody receives).
#[test]
fn a_track_over_the_sessions_limit_is_refused_with_a_reason() {
    let mut net = SimNetwork::new();
    let alice = net.join(&SimIdentity::new("alice", "t/math"), &PeerOptions::publisher()).unwrap();
    let bob = net.join(&SimIdentity::new("bob", "t/math"), &PeerOptions::subscriber()).unwrap();
    net.run_for(Duration::from_secs(1));
    assert!(net.peer_mut(alice).unwrap().start_screen_share(300));
    net.run_for(Duration::from_secs(1));
    assert!(net.peer_mut(alice).unwrap().start_screen_share(300), "a second screen share offered");
    net.run_for(Duration::from_secs(1));
    let errors = &net.peer(alice).unwrap().stats().errors;
    assert!(
        errors.iter().any(|e| e.starts_with("forbidden:") && e.contains("at most 1 screen track at a time")),
        "{errors:?}"
    );
    let info = net.sfu.session_info(net.session_of(alice).unwrap()).unwrap();
    assert_eq!(info.published.iter().filter(|k| **k == MediaKind::Screen).count(), 1);
    let screens = net.peer(bob).unwrap().stats().tracks.values().filter(|t| t.kind == Some(MediaKind::Screen)).count();
    assert_eq!(screens, 1, "bob is offered the first screen share only");
}
