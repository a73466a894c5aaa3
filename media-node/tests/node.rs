//! A whole node in-process (HTTP + real UDP on 127.0.0.1) driven by str0m test peers.

mod common;

use common::*;
use homeroom_media_node::peer::{PeerOptions, PeerStats, TestPeer};
use homeroom_shared::auth::{MediaClaims, ServiceClaims, TokenKey};
use homeroom_shared::media::{MediaCaps, Quality};
use homeroom_shared::protocol::MediaKind;
use serde_json::json;
use std::time::{Duration, Instant};

const AUDIO_ENOUGH: u64 = 100; // 2 s of 20 ms frames
const VIDEO_ENOUGH: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_reaches_two_subscribers_and_no_other_room() {
    let node = node().await;
    let url = node.url();

    let started = Instant::now();
    let bob = TestPeer::connect(&url, &media_token("bob", "t1/math"), PeerOptions::subscriber()).await.unwrap();
    let carol = TestPeer::connect(&url, &media_token("carol", "t1/math"), PeerOptions::subscriber()).await.unwrap();
    let eve = TestPeer::connect(&url, &media_token("eve", "t1/art"), PeerOptions::subscriber()).await.unwrap();
    let alice_started = Instant::now();
    let alice = TestPeer::connect(&url, &media_token("alice", "t1/math"), PeerOptions::publisher()).await.unwrap();
    let connected = alice.wait_for(WAIT, |s| s.connected_at.is_some()).await.unwrap();
    let setup = connected.connected_at.unwrap() - connected.created_at;
    eprintln!("session setup (offer → POST → ICE+DTLS connected): {setup:?}");

    let enough = |s: &PeerStats| {
        s.packets_from("alice", MediaKind::Audio) >= AUDIO_ENOUGH
            && s.packets_from("alice", MediaKind::Video) >= VIDEO_ENOUGH
    };
    let bob_stats = bob.wait_for(WAIT, enough).await.unwrap();
    let carol_stats = carol.wait_for(WAIT, enough).await.unwrap();
    for (name, stats) in [("bob", &bob_stats), ("carol", &carol_stats)] {
        let audio = stats.track("alice", MediaKind::Audio).unwrap();
        let video = stats.track("alice", MediaKind::Video).unwrap();
        let first = stats.first_packet_at().unwrap();
        eprintln!(
            "{name}: first forwarded packet {:?} after alice's offer ({:?} after alice connected); audio {} pkts, \
             video {} pkts ({} keyframes)",
            first.saturating_duration_since(alice_started),
            first.saturating_duration_since(connected.connected_at.unwrap()),
            audio.packets,
            video.packets,
            video.keyframes,
        );
        assert!(video.keyframes >= 1, "video starts at a keyframe the node asked for");
        assert_eq!(audio.participant.as_deref(), Some("alice"));
    }
    let alice_stats = alice.stats();
    eprintln!("alice sent {:?}, got {} keyframe requests", alice_stats.sent, alice_stats.keyframe_requests);
    assert!(alice_stats.keyframe_requests >= 1);
    eve.wait_for(WAIT, |s| s.connected_at.is_some()).await.expect("eve's session is up");
    assert_eq!(eve.stats().packets(), 0, "another room's subscriber receives nothing");
    assert!(eve.stats().tracks.is_empty(), "and is not even offered the tracks");
    assert_eq!(alice.stats().packets(), 0, "a publisher does not receive itself");
    eprintln!("whole test setup: {:?}", started.elapsed());

    // The publisher leaves: the node offers bob the removal of her tracks, and nothing more arrives.
    let offers_before = bob.stats().renegotiations;
    alice.close().await;
    let bob_after = bob
        .wait_for(WAIT, |s| s.renegotiations > offers_before)
        .await
        .expect("bob is offered the removal of alice's tracks");
    let frozen = bob_after.packets();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bob.stats().packets(), frozen);

    for peer in [bob, carol, eve] {
        peer.close().await;
    }
    node.shutdown().await.unwrap();
}

/// A peer reading with UDP GRO (as the load tool's `--peer-gro` peers do) gets the node's GSO runs whole and
/// must see the same media as a plain one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_reading_with_gro_gets_the_same_media_as_a_plain_one() {
    let node = node().await;
    let url = node.url();
    let plain = TestPeer::connect(&url, &media_token("bob", "t1/gro"), PeerOptions::subscriber()).await.unwrap();
    let gro = PeerOptions { gro: true, ..PeerOptions::subscriber() };
    let with_gro = TestPeer::connect(&url, &media_token("carol", "t1/gro"), gro).await.unwrap();
    let alice = TestPeer::connect(&url, &media_token("alice", "t1/gro"), PeerOptions::publisher()).await.unwrap();
    let enough = |s: &PeerStats| {
        s.packets_from("alice", MediaKind::Audio) >= AUDIO_ENOUGH
            && s.packets_from("alice", MediaKind::Video) >= VIDEO_ENOUGH
    };
    with_gro.wait_for(WAIT, enough).await.expect("the GRO peer gets audio and video");
    plain.wait_for(WAIT, enough).await.expect("the plain peer too");
    // Compared from here on: on a busy machine one peer's negotiation may finish a little later than the
    // other's, and the packets before it are not what this test is about.
    let (a0, b0) = (plain.stats(), with_gro.stats());
    tokio::time::sleep(Duration::from_secs(1)).await;
    alice.close().await;
    for peer in [&plain, &with_gro] {
        peer.wait_until_still(WAIT, PeerStats::packets).await.expect("the streams end when alice leaves");
    }
    let (a, b) = (plain.stats(), with_gro.stats());
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let plain_packets = a.packets_from("alice", kind) - a0.packets_from("alice", kind);
        let gro_packets = b.packets_from("alice", kind) - b0.packets_from("alice", kind);
        eprintln!("{kind:?} in the last second: plain {plain_packets}, GRO {gro_packets}");
        assert!(plain_packets >= 30, "{kind:?}: a second of media reached the plain peer");
        let gap = plain_packets.abs_diff(gro_packets);
        assert!(gap <= 2 + plain_packets / 20, "{kind:?}: the two peers got the same stream (within 5 %)");
    }
    assert!(b.track("alice", MediaKind::Video).unwrap().keyframes >= 1, "video decodable from a keyframe");
    for peer in [plain, with_gro] {
        peer.close().await;
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_over_control_drops_the_packets_until_unmuted() {
    let node = node().await;
    let url = node.url();
    let alice = TestPeer::connect(&url, &media_token("alice", "t1/mute"), PeerOptions::publisher()).await.unwrap();
    let bob = TestPeer::connect(&url, &media_token("bob", "t1/mute"), PeerOptions::subscriber()).await.unwrap();
    bob.wait_for(WAIT, |s| {
        s.packets_from("alice", MediaKind::Video) > 30 && s.packets_from("alice", MediaKind::Audio) > 30
    })
    .await
    .unwrap();

    let mute = |muted: bool| json!({"type": "mute", "room": "t1/mute", "participant": "alice", "kind": "video", "muted": muted});
    let (status, reply) = control(&node, Some(&edge_token()), mute(true)).await;
    assert_eq!((status, reply), (200, json!({"sessions": 1})));
    // Packets already paced or retransmitted before the mute may still land: wait until alice's video holds
    // still, however long a busy machine takes to drain them.
    let video = |s: &PeerStats| s.packets_from("alice", MediaKind::Video);
    let audio = |s: &PeerStats| s.packets_from("alice", MediaKind::Audio);
    let video_muted = bob.wait_until_still(WAIT, video).await.expect("muted video stops");
    // From then on audio keeps flowing (50 packets ≈ 1 s of it) and video does not.
    let audio_muted = audio(&bob.stats());
    bob.wait_for(WAIT, |s| audio(s) > audio_muted + 50).await.expect("audio flows while video is muted");
    let video_later = video(&bob.stats());
    assert!(video_later <= video_muted + 2, "muted video keeps flowing: {video_muted} → {video_later}");

    let (status, _) = control(&node, Some(&edge_token()), mute(false)).await;
    assert_eq!(status, 200);
    let resumed = video_later;
    bob.wait_for(WAIT, |s| s.packets_from("alice", MediaKind::Video) > resumed + 30).await.unwrap();

    let metrics = reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap();
    let dropped = metric(&metrics, "homeroom_media_packets_dropped_total{reason=\"muted\"}");
    assert!(dropped > 0.0, "muted drops are counted");

    alice.close().await;
    bob.close().await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_and_close_room_end_sessions() {
    let node = node().await;
    let url = node.url();
    let alice = TestPeer::connect(&url, &media_token("alice", "t1/kick"), PeerOptions::publisher()).await.unwrap();
    let bob = TestPeer::connect(&url, &media_token("bob", "t1/kick"), PeerOptions::subscriber()).await.unwrap();
    alice.wait_for(WAIT, |s| s.connected_at.is_some()).await.unwrap();
    bob.wait_for(WAIT, |s| s.packets() > 10).await.unwrap();

    let (status, reply) =
        control(&node, Some(&edge_token()), json!({"type": "kick", "room": "t1/kick", "participant": "alice"})).await;
    assert_eq!((status, reply), (200, json!({"sessions": 1})));
    alice.wait_for(WAIT, |s| s.closed).await.expect("the kicked peer is disconnected");
    assert_eq!(alice.delete().await.unwrap(), 404, "the session is gone");
    assert_eq!(health(&node).await["sessions"], 1);

    let (status, reply) = control(&node, Some(&edge_token()), json!({"type": "close_room", "room": "t1/kick"})).await;
    assert_eq!((status, reply), (200, json!({"sessions": 1})));
    bob.wait_for(WAIT, |s| s.closed).await.unwrap();
    assert_eq!(health(&node).await["sessions"], 0);

    // A token from before the close (a class that was cleared) opens nothing in the room any more; the
    // edge's fresh tokens do.
    let before_close = sign(&MediaClaims { iat: Some(now_secs() - 30), ..claims("bob", "t1/kick") });
    let error = TestPeer::connect(&url, &before_close, PeerOptions::subscriber()).await.unwrap_err();
    assert_eq!(error.status(), Some(403), "{error}");
    assert!(error.to_string().contains("room was closed"), "{error}");
    let fresh = TestPeer::connect(&url, &media_token("bob", "t1/kick"), PeerOptions::subscriber()).await.unwrap();
    fresh.wait_for(WAIT, |s| s.connected_at.is_some()).await.expect("a token issued at the close is admitted");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_expired_and_misdirected_tokens_are_refused() {
    let node = node().await;
    let url = node.url();
    let refused = |token: String| {
        let url = url.clone();
        async move { TestPeer::connect(&url, &token, PeerOptions::subscriber()).await.unwrap_err() }
    };

    let forged = TokenKey::new(b"not-the-secret").sign(&claims("mallory", "t1/math")).unwrap();
    let error = refused(forged).await;
    assert_eq!(error.status(), Some(401), "{error}");
    let expired = sign(&MediaClaims { exp: now_secs() - 1, ..claims("bob", "t1/math") });
    let error = refused(expired).await;
    assert_eq!(error.status(), Some(401), "{error}");
    assert!(error.to_string().contains("unauthorized"), "{error}");
    let other_node = sign(&MediaClaims { node: "media-elsewhere".into(), ..claims("bob", "t1/math") });
    let error = refused(other_node).await;
    assert_eq!(error.status(), Some(403), "{error}");
    assert!(error.to_string().contains("forbidden"));
    let error = refused("not-a-jwt".into()).await;
    assert_eq!(error.status(), Some(401));

    // No token, wrong content type, not SDP.
    let http = reqwest::Client::new();
    let post = |token: Option<String>, content_type: &'static str, body: &'static str| {
        let mut request = http.post(format!("{url}/v1/sessions")).header("content-type", content_type).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let response = post(None, "application/sdp", "v=0").await.unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized");
    let response = post(Some(media_token("bob", "t1/math")), "application/json", "{}").await.unwrap();
    assert_eq!(response.status(), 400);
    let response = post(Some(media_token("bob", "t1/math")), "application/sdp", "hello").await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["code"], "bad_request");

    // DELETE needs the session's own participant and room.
    let bob = TestPeer::connect(&url, &media_token("bob", "t1/math"), PeerOptions::subscriber()).await.unwrap();
    assert_eq!(bob.delete_with(&media_token("bob", "t1/art")).await.unwrap(), 403, "other room");
    assert_eq!(bob.delete_with(&media_token("mallory", "t1/math")).await.unwrap(), 403, "other participant");
    // Sessions outlive their tokens: one that expired a minute ago still closes its holder's session.
    let expired = sign(&MediaClaims { exp: now_secs() - 60, ..claims("bob", "t1/math") });
    assert_eq!(bob.delete_with(&expired).await.unwrap(), 204);
    assert_eq!(bob.delete().await.unwrap(), 404);
    node.shutdown().await.unwrap();
}

/// An offer the node refuses leaves no session, so the session limit does not count it: opens are limited on
/// their own, per participant and room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_looping_on_refused_offers_is_slowed_down() {
    let node = node().await;
    let url = format!("{}/v1/sessions", node.url());
    let http = reqwest::Client::new();
    let open = |participant: &str| {
        let request = http.post(&url).header("content-type", "application/sdp").body("not an offer");
        request.bearer_auth(media_token(participant, "t1/loop")).send()
    };
    for attempt in 0..10 {
        assert_eq!(open("eve").await.unwrap().status(), 400, "attempt {attempt}: refused as not SDP");
    }
    let limited = open("eve").await.unwrap();
    assert_eq!(limited.status(), 429);
    let retry_after = limited.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(retry_after.as_deref(), Some("2"));
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert!(body["message"].as_str().unwrap().contains("back off"), "{body}");
    assert_eq!(open("bob").await.unwrap().status(), 400, "another participant is not affected");
    let bob = TestPeer::connect(&node.url(), &media_token("bob", "t1/loop"), PeerOptions::subscriber()).await;
    assert!(bob.is_ok(), "and opens sessions as before");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_needs_the_edge_token() {
    let node = node().await;
    let body = json!({"type": "close_room", "room": "t1/math"});
    let (status, reply) = control(&node, None, body.clone()).await;
    assert_eq!((status, reply["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = control(&node, Some(&media_token("alice", "t1/math")), body.clone()).await;
    assert_eq!(status, 403, "a media token is not the edge");
    // A heartbeat token as the node sends them: addressed to the edge, naming no body.
    let heartbeat_token = sign(&ServiceClaims {
        sub: NODE.into(),
        exp: now_secs() + 60,
        aud: Some("edge".into()),
        ..ServiceClaims::default()
    });
    let (status, reply) = control(&node, Some(&heartbeat_token), body.clone()).await;
    assert_eq!((status, reply["code"].as_str()), (403, Some("forbidden")), "a node token is not the edge");
    let forged = TokenKey::new(b"nope").sign(&ServiceClaims {
        sub: "edge".into(),
        exp: now_secs() + 60,
        ..ServiceClaims::default()
    });
    assert_eq!(control(&node, Some(&forged.unwrap()), body.clone()).await.0, 401);
    // Service tokens tolerate 30 s of clock skew past `exp`, not more.
    let skewed = sign(&ServiceClaims { sub: "edge".into(), exp: now_secs() - 5, ..ServiceClaims::default() });
    assert_eq!(control(&node, Some(&skewed), body.clone()).await.0, 200, "5 s of skew is tolerated");
    let expired = sign(&ServiceClaims { sub: "edge".into(), exp: now_secs() - 40, ..ServiceClaims::default() });
    assert_eq!(control(&node, Some(&expired), body.clone()).await.0, 401);
    // A token bound to one command (as the edge's are) does not carry another.
    let kick = json!({"type": "kick", "room": "t1/math", "participant": "bob"});
    let bound = sign(&ServiceClaims {
        sub: "edge".into(),
        exp: now_secs() + 60,
        body_sha256: Some(homeroom_shared::auth::body_digest(kick.to_string().as_bytes())),
        ..ServiceClaims::default()
    });
    let (status, reply) = control(&node, Some(&bound), body.clone()).await;
    assert_eq!((status, reply["code"].as_str()), (401, Some("unauthorized")), "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("body_sha256 does not match"), "{reply}");
    assert_eq!(control(&node, Some(&bound), kick).await.0, 200, "the command it was signed for");
    // A token made for another node (as the edge's name theirs) does nothing here; one for this node works.
    let for_node = |aud: &str| {
        sign(&ServiceClaims {
            sub: "edge".into(),
            exp: now_secs() + 60,
            aud: Some(aud.into()),
            ..ServiceClaims::default()
        })
    };
    let (status, reply) = control(&node, Some(&for_node("eu-node-2")), body.clone()).await;
    assert_eq!((status, reply["code"].as_str()), (401, Some("unauthorized")), "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("the wrong recipient"), "{reply}");
    assert_eq!(control(&node, Some(&for_node(NODE)), body.clone()).await.0, 200, "this node's token");
    let (status, reply) = control(&node, Some(&edge_token()), json!({"type": "reboot"})).await;
    assert_eq!((status, reply["code"].as_str()), (400, Some("bad_request")));
    let huge = json!({"type": "close_room", "room": "x".repeat(70 * 1024)});
    let (status, reply) = control(&node, Some(&edge_token()), huge).await;
    assert_eq!((status, reply["code"].as_str()), (413, Some("too_large")), "{reply}");
    assert_eq!(control(&node, Some(&edge_token()), body).await, (200, json!({"sessions": 0})));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_layers_follow_each_subscribers_preference_and_caps() {
    let node = node().await;
    let url = node.url();
    let publisher = PeerOptions { video_kbps: 300, ..PeerOptions::simulcast_publisher() };
    let alice = TestPeer::connect(&url, &media_token("alice", "t1/sim"), publisher).await.unwrap();
    let low = PeerOptions { quality: Some(Quality::Low), ..PeerOptions::subscriber() };
    let bob = TestPeer::connect(&url, &media_token("bob", "t1/sim"), low).await.unwrap();
    let medium_cap = MediaCaps { receive_quality: Some(Quality::Medium), ..MediaCaps::default() };
    let carol =
        TestPeer::connect(&url, &capped_token("carol", "t1/sim", medium_cap), PeerOptions::subscriber()).await.unwrap();

    let on_layer = |tag: &'static str| {
        move |s: &PeerStats| {
            s.track("alice", MediaKind::Video).is_some_and(|t| t.last_tag.as_deref() == Some(tag) && t.packets > 20)
        }
    };
    let stats = bob.wait_for(WAIT, on_layer("l")).await.unwrap();
    eprintln!("bob (low): {:?}", stats.track("alice", MediaKind::Video).map(|t| &t.tags));
    let stats = carol.wait_for(WAIT, on_layer("m")).await.unwrap();
    eprintln!("carol (high, capped at medium): {:?}", stats.track("alice", MediaKind::Video).map(|t| &t.tags));

    let switched_at = Instant::now();
    bob.set_quality(Quality::High, None);
    let stats = bob.wait_for(WAIT, on_layer("h")).await.unwrap();
    eprintln!(
        "bob switched to high in {:?}: {:?}",
        switched_at.elapsed(),
        stats.track("alice", MediaKind::Video).map(|t| &t.tags)
    );
    bob.set_quality(Quality::Low, None);
    let stats = bob.wait_for(WAIT, on_layer("l")).await.unwrap();
    let high_then = stats.track("alice", MediaKind::Video).unwrap().tags.get("h").copied().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let high_later = bob.stats().track("alice", MediaKind::Video).unwrap().tags.get("h").copied().unwrap_or(0);
    assert_eq!(high_later, high_then, "after switching down, no more high-layer packets");
    // The high layer was there and reachable all along (bob got it), yet carol, capped at medium, never did.
    let carol_high = carol.stats().track("alice", MediaKind::Video).unwrap().tags.get("h").copied().unwrap_or(0);
    assert_eq!(carol_high, 0, "carol's token caps what she receives at medium");

    let metrics = reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metric(&metrics, "homeroom_media_layer_switches_total") >= 4.0);

    for peer in [alice, bob, carol] {
        peer.close().await;
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perms_are_enforced_per_kind() {
    let node = node().await;
    let url = node.url();
    // Alice may publish audio only; her video is dropped. Dave may not subscribe.
    let audio_only = sign(&MediaClaims {
        perms: homeroom_shared::auth::MediaPerms { video: false, screen: false, ..all_perms() },
        ..claims("alice", "t1/perms")
    });
    let alice =
        TestPeer::connect(&url, &audio_only, PeerOptions { screen: true, ..PeerOptions::publisher() }).await.unwrap();
    let bob = TestPeer::connect(&url, &media_token("bob", "t1/perms"), PeerOptions::subscriber()).await.unwrap();
    let no_subscribe = sign(&MediaClaims {
        perms: homeroom_shared::auth::MediaPerms { subscribe: false, ..all_perms() },
        ..claims("dave", "t1/perms")
    });
    let dave = TestPeer::connect(&url, &no_subscribe, PeerOptions::subscriber()).await.unwrap();
    bob.wait_for(WAIT, |s| s.packets_from("alice", MediaKind::Audio) > 50).await.unwrap();
    let stats = bob.stats();
    assert_eq!(stats.packets_from("alice", MediaKind::Video), 0);
    assert_eq!(stats.packets_from("alice", MediaKind::Screen), 0);
    assert!(stats.track("alice", MediaKind::Screen).is_some(), "the screen track is declared and offered");
    dave.wait_for(WAIT, |s| s.connected_at.is_some()).await.expect("dave's session is up");
    assert_eq!(dave.stats().packets(), 0, "a session that may not subscribe receives nothing");

    // The edge grants video: it flows from the next keyframe.
    let (status, _) = control(
        &node,
        Some(&edge_token()),
        json!({"type": "perms", "room": "t1/perms", "participant": "alice",
               "perms": {"audio": true, "video": true, "screen": true, "subscribe": true}}),
    )
    .await;
    assert_eq!(status, 200);
    let stats = bob
        .wait_for(WAIT, |s| {
            s.packets_from("alice", MediaKind::Video) > 20 && s.packets_from("alice", MediaKind::Screen) > 5
        })
        .await
        .unwrap();
    assert_eq!(stats.track("alice", MediaKind::Screen).unwrap().last_tag.as_deref(), Some("s"));

    for peer in [alice, bob, dave] {
        peer.close().await;
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_drain() {
    // A drain timeout far beyond the test's bound, so that only "the sessions are gone" can end the drain in
    // time (with the local default of 2 s, the timeout alone would pass the check below).
    let node =
        homeroom_media_node::start(homeroom_media_node::Config { drain_timeout: Duration::from_secs(30), ..config() })
            .await
            .expect("node starts");
    let url = node.url();
    let first_health = health(&node).await;
    assert_eq!(first_health["node"], NODE);
    assert_eq!(first_health["draining"], false);

    let alice = TestPeer::connect(&url, &media_token("alice", "t1/ops"), PeerOptions::publisher()).await.unwrap();
    let bob = TestPeer::connect(&url, &media_token("bob", "t1/ops"), PeerOptions::subscriber()).await.unwrap();
    bob.wait_for(WAIT, |s| s.packets() > 60).await.unwrap();

    let metrics = reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap();
    for name in [
        "homeroom_media_sessions",
        "homeroom_media_rooms",
        "homeroom_media_tracks{kind=\"audio\"}",
        "homeroom_media_packets_in_total{kind=\"video\"}",
        "homeroom_media_packets_out_total{kind=\"audio\"}",
        "homeroom_media_bytes_out_total{kind=\"video\"}",
        "homeroom_media_keyframe_requests_sent_total",
        "homeroom_media_udp_datagrams_in_total",
        "homeroom_media_run_loop_seconds_count",
    ] {
        assert!(metric(&metrics, name) > 0.0, "{name} in\n{metrics}");
    }
    assert_eq!(metric(&metrics, "homeroom_media_sessions"), 2.0);
    assert!(metrics.contains("homeroom_media_forwarding_errors_total"));

    // Drain: no new sessions, existing ones keep flowing until closed.
    node.begin_drain();
    let drain_began = Instant::now();
    while health(&node).await["draining"] != true {
        assert!(drain_began.elapsed() < Duration::from_secs(5), "the node reports draining soon after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let error = TestPeer::connect(&url, &media_token("carol", "t1/ops"), PeerOptions::subscriber()).await.unwrap_err();
    assert_eq!(error.status(), Some(503), "{error}");
    assert!(error.to_string().contains("unavailable"));
    let health_now = health(&node).await;
    assert_eq!(health_now["draining"], true);
    let before = bob.stats().packets();
    bob.wait_for(WAIT, |s| s.packets() > before + 20).await.expect("sessions keep working while draining");

    let stopping = Instant::now();
    alice.close().await;
    bob.close().await;
    node.wait().await.unwrap();
    eprintln!("drain finished {:?} after the last sessions closed", stopping.elapsed());
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "the drain ends once the sessions are gone, not at its 30 s timeout"
    );
}

async fn health(node: &homeroom_media_node::NodeHandle) -> serde_json::Value {
    reqwest::get(format!("{}/healthz", node.url())).await.unwrap().json().await.unwrap()
}

/// The value of the sample `name` (with labels, if given) in an OpenMetrics text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series == name).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_may_call_from_another_origin() {
    let node = node().await;
    let response = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/v1/sessions", node.url()))
        .header("origin", "https://classroom.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let response = reqwest::Client::new()
        .get(format!("{}/nope", node.url()))
        .header("origin", "https://classroom.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["access-control-expose-headers"], "location");
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["code"], "not_found");
    node.shutdown().await.unwrap();
}
