//! Heartbeats against a stand-in edge: token, body, period bounded by the lease, draining flag, retry.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use common::*;
use homeroom_media_node::peer::{PeerOptions, TestPeer};
use homeroom_media_node::{start, NodeHandle};
use homeroom_shared::auth::TokenKey;
use homeroom_shared::media::{HeartbeatReply, NodeHeartbeat};
use homeroom_shared::Timestamp;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
struct Edge {
    beats: Arc<Mutex<Vec<(Instant, NodeHeartbeat)>>>,
    fail_first: Arc<Mutex<u32>>,
    /// Heartbeats that do not say `draining` are answered only after this long (an edge slow to answer).
    hang_running: Arc<Mutex<Option<Duration>>>,
    /// This many of the node's last heartbeats (`draining`, `load: 0`) are refused with 503 first.
    fail_last: Arc<Mutex<u32>>,
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
    if beat.draining && beat.load == 0 {
        let mut fail = edge.fail_last.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
    }
    let hang = edge.hang_running.lock().unwrap().filter(|_| !beat.draining);
    if let Some(hang) = hang {
        edge.beats.lock().unwrap().push((Instant::now(), beat));
        tokio::time::sleep(hang).await;
        return Ok(Json(HeartbeatReply { ttl_ms: 900 }));
    }
    let mut beats = edge.beats.lock().unwrap();
    beats.push((Instant::now(), beat));
    // The first beats get a short lease, to see the renewal period (a third of it). Later ones get 30 s, so
    // that renewals come only every 10 s: any heartbeat within the next seconds is one the node sent because
    // something happened (the drain, the last session leaving), not a periodic one that happened to fall there.
    let ttl_ms = if beats.len() <= SHORT_LEASES { 900 } else { 30_000 };
    Ok(Json(HeartbeatReply { ttl_ms }))
}

/// Serves the stand-in edge on a loopback port; returns its base URL.
async fn serve(edge: &Edge) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let edge_url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route("/v1/nodes/heartbeat", post(heartbeat)).with_state(edge.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    edge_url
}

/// Heartbeats answered with a 900 ms lease; the rest get 30 s.
const SHORT_LEASES: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_renew_within_the_lease_and_report_draining_at_once() {
    let edge = Edge::default();
    *edge.fail_first.lock().unwrap() = 2;
    let edge_url = serve(&edge).await;

    let mut config = config();
    config.edge_url = Some(edge_url);
    config.public_url = Some("https://media-test.example.com".into());
    config.capacity = 42;
    let node = start(config).await.unwrap();

    // Two refusals first: the node retries (0.5 s, 1 s), then renews every ttl/3 = 300 ms.
    let deadline = Instant::now() + Duration::from_secs(10);
    while edge.beats.lock().unwrap().len() < SHORT_LEASES + 1 {
        assert!(Instant::now() < deadline, "{} heartbeats in 10 s", edge.beats.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let beats: Vec<_> = edge.beats.lock().unwrap().iter().take(SHORT_LEASES + 1).cloned().collect();
    let (_, first) = &beats[0];
    assert_eq!(first.id, NODE);
    assert_eq!(first.region, "local");
    assert_eq!(first.url, "https://media-test.example.com");
    assert_eq!(first.capacity, 42);
    assert!(!first.draining);
    // Every renewal lands within the 900 ms lease: 300 ms apart, with room for a busy machine (a renewal at
    // two thirds of the lease would still be in time, which is the property that matters).
    let gaps: Vec<Duration> = beats.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps.iter().all(|gap| *gap <= Duration::from_millis(600)), "{gaps:?}");
    // From here on the lease is 30 s, so renewals are 10 s apart.
    let quiet_from = edge.beats.lock().unwrap().len();

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
    // At once (the next periodic renewal is up to 10 s away), with the session still counted.
    let (_, beat) = draining_beat;
    assert_eq!(beat.load, 1, "the draining node still reports the session it carries");
    let leaving = Instant::now();
    peer.close().await;
    node.wait().await.unwrap();
    let beats = edge.beats.lock().unwrap().clone();
    let since_quiet = beats.len() - quiet_from;
    let (at, last) = beats.last().unwrap();
    assert!(*at >= leaving, "a heartbeat after the last session left");
    assert!(last.draining && last.load == 0, "a last heartbeat on the way out");
    assert!(since_quiet <= 3, "only the draining beat and the last one came, not periodic renewals: {since_quiet}");
}

async fn health(node: &NodeHandle) -> serde_json::Value {
    reqwest::get(format!("{}/healthz", node.url())).await.unwrap().json().await.unwrap()
}

async fn metric(node: &NodeHandle, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", node.url())).await.unwrap().text().await.unwrap();
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_say_whether_the_edge_accepts_the_node() {
    let edge = Edge::default();
    *edge.fail_first.lock().unwrap() = u32::MAX;
    let edge_url = serve(&edge).await;
    let mut registered = config();
    registered.edge_url = Some(edge_url);
    let node = start(registered).await.unwrap();

    // Refused (0.5 s, then 1 s apart): unregistered, with the failures counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = health(&node).await;
        if h["heartbeat_failures"].as_u64().unwrap_or(0) >= 2 {
            assert_eq!(h["edge"], "unregistered", "{h}");
            break;
        }
        assert!(Instant::now() < deadline, "no failures counted: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metric(&node, "homeroom_media_heartbeat_failures_total").await >= Some(2.0));
    assert_eq!(metric(&node, "homeroom_media_registered").await, Some(0.0));

    // The edge accepts the next one: registered, and the run of failures ends.
    *edge.fail_first.lock().unwrap() = 0;
    loop {
        let h = health(&node).await;
        if h["edge"] == "registered" {
            assert_eq!(h["heartbeat_failures"], 0, "{h}");
            break;
        }
        assert!(Instant::now() < deadline + Duration::from_secs(5), "never registered: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&node, "homeroom_media_registered").await, Some(1.0));
    let metrics = node.metrics().clone();
    node.begin_drain();
    node.wait().await.unwrap();
    assert!(
        metrics.encode().lines().any(|line| line == "homeroom_media_registered 0"),
        "the last heartbeat ended the lease: no longer registered"
    );

    // Without --edge-url the node says it is standalone.
    let standalone = start(config()).await.unwrap();
    assert_eq!(health(&standalone).await["edge"], "standalone");
    standalone.begin_drain();
    standalone.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_does_not_wait_for_a_hung_heartbeat_and_the_last_one_is_tried_again() {
    let edge = Edge::default();
    let edge_url = serve(&edge).await;
    let mut config = config();
    config.edge_url = Some(edge_url);
    let node = start(config).await.unwrap();
    let peer = TestPeer::connect(&node.url(), &media_token("alice", "t1/hb"), PeerOptions::publisher()).await.unwrap();
    peer.wait_for(WAIT, |s| s.connected_at.is_some()).await.expect("the session is up");

    // The edge stops answering "running" heartbeats for 4 s; wait until one is in flight.
    *edge.hang_running.lock().unwrap() = Some(Duration::from_secs(4));
    let hung_from = edge.beats.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(5);
    while edge.beats.lock().unwrap().len() == hung_from {
        assert!(Instant::now() < deadline, "no heartbeat reached the hanging edge");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain_started = Instant::now();
    node.begin_drain();
    loop {
        let draining = edge.beats.lock().unwrap().iter().any(|(at, b)| *at >= drain_started && b.draining);
        if draining {
            break;
        }
        assert!(drain_started.elapsed() < Duration::from_secs(2), "the drain waited for the hung heartbeat");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The stop's last heartbeat is refused once (a 503): it is tried again and reaches the edge.
    *edge.fail_last.lock().unwrap() = 1;
    let leaving = Instant::now();
    peer.close().await;
    node.wait().await.unwrap();
    assert_eq!(*edge.fail_last.lock().unwrap(), 0, "the first try of the last heartbeat was refused");
    let beats = edge.beats.lock().unwrap().clone();
    let (at, last) = beats.last().unwrap();
    assert!(*at >= leaving && last.draining && last.load == 0, "the last heartbeat arrived on its second try");
}
