//! End to end with media: real `wrangler dev` and two real media nodes in two regions. `media.join` places
//! the room in the client's region, both participants publish and receive each other's audio and video over
//! real WebRTC (str0m test peers on loopback UDP), a teacher's mute stops a student's audio at the node, and
//! when a node dies its room is re-placed within the lease TTL and media flows again on the other node.

use homeroom_media_node::peer::{PeerOptions, PeerStats, TestPeer};
use homeroom_shared::protocol::{ClientRequest as Req, MediaKind, Role, ServerFrame as F};
use homeroom_shared::UserId;
use homeroom_tests::client::{Client, Connect};
use homeroom_tests::edge::Edge;
use homeroom_tests::media::MediaNode;
use homeroom_tests::tokens::Minter;
use std::time::{Duration, Instant};

fn assigned(frame: F) -> (String, String, String) {
    match frame {
        F::MediaAssigned { node, token, .. } => (node.id, node.url, token),
        other => panic!("expected media.assigned, got {other:?}"),
    }
}

async fn wait_nodes(edge: &Edge, admin: &str, n: usize) {
    let http = reqwest::Client::new();
    for _ in 0..100 {
        let nodes: serde_json::Value = http
            .get(format!("{}/v1/nodes", edge.http()))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if nodes["nodes"].as_array().map(Vec::len) == Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{n} nodes never registered");
}

#[tokio::test]
async fn media_is_placed_by_region_flows_both_ways_obeys_mute_and_fails_over() {
    let ttl_ms = 3000;
    let edge = Edge::start_with(&[("NODE_LEASE_TTL_MS", "3000")]).await.expect("edge starts");
    let mut eu = MediaNode::start("eu-1", "eu-west", &edge.http()).expect("eu node starts");
    let us = MediaNode::start("us-1", "us-east", &edge.http()).expect("us node starts");
    eu.wait_healthy(Duration::from_secs(10)).await.unwrap();
    us.wait_healthy(Duration::from_secs(10)).await.unwrap();
    let m = Minter::dev().unwrap();
    wait_nodes(&edge, &m.token("ops", Role::Admin), 2).await;

    let mut teacher =
        Client::connect(&Connect::new(&edge.ws(), "media-class", &m.token("alice", Role::Teacher))).await.unwrap();
    let mut student =
        Client::connect(&Connect::new(&edge.ws(), "media-class", &m.token("bob", Role::Student))).await.unwrap();
    let started = Instant::now();
    let (node, url, alice_token) =
        assigned(teacher.request(Req::MediaJoin { region: Some("eu-west".into()) }).await.unwrap());
    assert_eq!((node.as_str(), url.as_str()), ("eu-1", eu.url.as_str()), "placed in the client's region");
    let (node_b, _, bob_token) =
        assigned(student.request(Req::MediaJoin { region: Some("us-east".into()) }).await.unwrap());
    assert_eq!(node_b, "eu-1", "the room stays on its node");

    let alice = TestPeer::connect(&url, &alice_token, PeerOptions::publisher()).await.expect("alice's session");
    let bob = TestPeer::connect(&url, &bob_token, PeerOptions::publisher()).await.expect("bob's session");
    let got = bob
        .wait_for(Duration::from_secs(20), |s| {
            s.packets_from("alice", MediaKind::Audio) > 20 && s.packets_from("alice", MediaKind::Video) > 20
        })
        .await
        .expect("bob receives alice");
    let first_media = started.elapsed();
    alice
        .wait_for(Duration::from_secs(20), |s| {
            s.packets_from("bob", MediaKind::Audio) > 20 && s.packets_from("bob", MediaKind::Video) > 20
        })
        .await
        .expect("alice receives bob");
    eprintln!(
        "media: media.join → both directions flowing in {first_media:?}; bob got {} audio / {} video packets from alice",
        got.packets_from("alice", MediaKind::Audio),
        got.packets_from("alice", MediaKind::Video)
    );
    student.request(Req::MediaState { audio: true, video: true, screen: false }).await.unwrap();

    // The teacher mutes bob's audio: the node drops it (video keeps flowing).
    let mute = Req::ParticipantMute { id: UserId::parse("bob").unwrap(), kind: MediaKind::Audio, muted: true };
    assert!(matches!(teacher.request(mute).await.unwrap(), F::Ack(_)));
    // The mute travels edge → node; packets already on the way may still land: wait until bob's audio holds
    // still (bounded).
    let bob_audio = |s: &PeerStats| s.packets_from("bob", MediaKind::Audio);
    alice.wait_until_still(Duration::from_secs(15), bob_audio).await.expect("muted audio stops");
    let before = alice.stats();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = alice.stats();
    let audio = after.packets_from("bob", MediaKind::Audio) - before.packets_from("bob", MediaKind::Audio);
    let video = after.packets_from("bob", MediaKind::Video) - before.packets_from("bob", MediaKind::Video);
    eprintln!("media: after the mute, alice got {audio} audio and {video} video packets from bob in 2 s");
    assert_eq!(audio, 0, "muted audio is dropped at the node");
    assert!(video > 10, "video still flows");

    // The eu node crashes: within the lease TTL the room is told, re-placed on us-1, and media flows again.
    let killed = Instant::now();
    eu.kill();
    teacher.expect("media.moved", Duration::from_secs(10), |f| matches!(f, F::MediaMoved { .. })).await.unwrap();
    let told = killed.elapsed();
    student.expect("media.moved", Duration::from_secs(5), |f| matches!(f, F::MediaMoved { .. })).await.unwrap();
    assert!(told < Duration::from_millis(ttl_ms + 2500), "told within the lease TTL: {told:?}");
    let (node, url, alice_token) =
        assigned(teacher.request(Req::MediaJoin { region: Some("eu-west".into()) }).await.unwrap());
    assert_eq!(node, "us-1", "re-placed on the live node");
    let (_, _, bob_token) = assigned(student.request(Req::MediaJoin { region: None }).await.unwrap());
    let alice2 = TestPeer::connect(&url, &alice_token, PeerOptions::publisher()).await.expect("alice moves");
    let bob2 = TestPeer::connect(&url, &bob_token, PeerOptions::subscriber()).await.expect("bob moves");
    bob2.wait_for(Duration::from_secs(20), |s| s.packets_from("alice", MediaKind::Video) > 5)
        .await
        .expect("flowing again");
    eprintln!(
        "failover: node killed → clients told in {told:?} (lease TTL {ttl_ms} ms) → media flowing again on us-1 after {:?}",
        killed.elapsed()
    );
    let metrics = us.metrics().await.unwrap();
    assert!(metrics.contains("homeroom"), "the node exposes Prometheus metrics");
    alice2.close().await;
    bob2.close().await;
    drop((alice, bob));
}
