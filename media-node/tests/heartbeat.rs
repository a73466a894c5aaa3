//! Heartbeats against a stand-in edge: token, body, period bounded by the lease, draining flag, retry.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use common::*;
use homeroom_media_node::peer::{PeerOptions, TestPeer};
use homeroom_media_node::start;
use homeroom_shared::auth::TokenKey;
use homeroom_shared::media::{HeartbeatReply, NodeHeartbeat};
use homeroom_shared::Timestamp;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
struct Edge {
    beats: Arc<Mutex<Vec<(Instant, NodeHeartbeat)>>>,
    fail_first: Arc<Mutex<u32>>,
}

async fn heartbeat(
    State(edge): State<Edge>,
    headers: HeaderMap,
    Json(beat): Json<NodeHeartbeat>,
) -> Result<Json<HeartbeatReply>, StatusCode> {
    {
        let mut fail = edge.fail_first.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
    }
    let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let now = Timestamp::from_secs(now_secs());
    let claims = TokenKey::new(SECRET.as_bytes()).verify_service(token.ok_or(StatusCode::UNAUTHORIZED)?, now);
    let claims = claims.map_err(|_| StatusCode::UNAUTHORIZED)?;
    if claims.sub != beat.id {
        return Err(StatusCode::FORBIDDEN);
    }
    edge.beats.lock().unwrap().push((Instant::now(), beat));
    Ok(Json(HeartbeatReply { ttl_ms: 900 }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_renew_within_a_third_of_the_lease_and_report_draining() {
    let edge = Edge::default();
    *edge.fail_first.lock().unwrap() = 2;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let edge_url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route("/v1/nodes/heartbeat", post(heartbeat)).with_state(edge.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut config = config();
    config.edge_url = Some(edge_url);
    config.public_url = Some("https://media-test.example.com".into());
    config.capacity = 42;
    let node = start(config).await.unwrap();

    // Two refusals first: the node retries (0.5 s, 1 s), then renews every ttl/3 = 300 ms.
    let deadline = Instant::now() + Duration::from_secs(10);
    while edge.beats.lock().unwrap().len() < 5 {
        assert!(Instant::now() < deadline, "{} heartbeats in 10 s", edge.beats.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let beats = edge.beats.lock().unwrap().clone();
    let (_, first) = &beats[0];
    assert_eq!(first.id, NODE);
    assert_eq!(first.region, "local");
    assert_eq!(first.url, "https://media-test.example.com");
    assert_eq!(first.capacity, 42);
    assert!(!first.draining);
    // Every renewal lands well within the 900 ms lease (300 ms apart, with room for a busy machine).
    let gaps: Vec<Duration> = beats.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps.iter().all(|gap| *gap <= Duration::from_millis(600)), "{gaps:?}");

    // One session open, so the drain lasts until it leaves and the heartbeats in between carry its load.
    let peer = TestPeer::connect(&node.url(), &media_token("alice", "t1/hb"), PeerOptions::publisher()).await.unwrap();
    peer.wait_for(WAIT, |s| s.connected_at.is_some()).await.expect("the session is up");
    let drain_started = Instant::now();
    node.begin_drain();
    let draining_beat = loop {
        let found = edge.beats.lock().unwrap().iter().find(|(at, b)| *at >= drain_started && b.draining).cloned();
        if let Some(found) = found {
            break found;
        }
        assert!(drain_started.elapsed() < Duration::from_secs(2), "no draining heartbeat");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // At once, not with the next periodic renewal (300 ms later), and with the session still counted.
    let (at, beat) = draining_beat;
    assert!(at - drain_started < Duration::from_millis(250), "{:?}", at - drain_started);
    assert_eq!(beat.load, 1, "the draining node still reports the session it carries");
    let leaving = Instant::now();
    peer.close().await;
    node.wait().await.unwrap();
    let beats = edge.beats.lock().unwrap().clone();
    let (at, last) = beats.last().unwrap();
    assert!(*at >= leaving, "a heartbeat after the last session left");
    assert!(last.draining && last.load == 0, "a last heartbeat on the way out");
}
