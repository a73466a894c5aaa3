//! The node registry and placement on real `wrangler dev`, with heartbeats sent by the test itself (the
//! media-node suites use real nodes): leases, region placement, sticky rooms, failover and `media.moved`.

use homeroom_shared::auth::UserClaims;
use homeroom_shared::media::NodeHeartbeat;
use homeroom_shared::protocol::{ClientFrame, ClientRequest as Req, ErrorCode, MediaKind, Role, ServerFrame as F};
use homeroom_tests::client::{Client, Connect};
use homeroom_tests::edge::Edge;
use homeroom_tests::tokens::{
    service_token, service_token_for, service_token_for_body, service_token_issued_ago, verify_media_token,
    verify_service_token, Minter,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn heartbeat(id: &str, region: &str, load: u32) -> NodeHeartbeat {
    NodeHeartbeat {
        id: id.into(),
        region: region.into(),
        url: format!("http://127.0.0.1:9/{id}"),
        capacity: 100,
        load,
        draining: false,
    }
}

async fn beat(http: &reqwest::Client, edge: &Edge, hb: &NodeHeartbeat) -> reqwest::Response {
    http.post(format!("{}/v1/nodes/heartbeat", edge.http()))
        .bearer_auth(service_token(&hb.id).unwrap())
        .json(hb)
        .send()
        .await
        .unwrap()
}

/// Renews `id`'s lease every 800 ms (a third of the test's 3 s TTL, as a node does) for at most a minute, so
/// that the setup's round trips cannot let it lapse. Returns the task and when its latest heartbeat went out.
fn keep_alive(edge: &Edge, id: &str, region: &str) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Instant>>) {
    let http = reqwest::Client::new();
    let url = format!("{}/v1/nodes/heartbeat", edge.http());
    let hb = heartbeat(id, region, 0);
    let last = Arc::new(Mutex::new(Instant::now()));
    let sent = Arc::clone(&last);
    let task = tokio::spawn(async move {
        for _ in 0..75 {
            if let Ok(mut at) = sent.lock() {
                *at = Instant::now();
            }
            let _ = http.post(&url).bearer_auth(service_token(&hb.id).unwrap()).json(&hb).send().await;
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
    });
    (task, last)
}

fn assigned(frame: F) -> (String, String) {
    match frame {
        F::MediaAssigned { node, token, .. } => (node.id, token),
        other => panic!("expected media.assigned, got {other:?}"),
    }
}

#[tokio::test]
async fn heartbeats_place_rooms_by_region_and_failover_tells_clients() {
    let ttl_ms = 3000u64;
    let edge = Edge::start_with(&[("NODE_LEASE_TTL_MS", "3000")]).await.expect("edge starts");
    let http = reqwest::Client::new();
    let m = Minter::dev().unwrap();

    // Heartbeats are authenticated with NODE_SECRET and must match the token's subject.
    let forged = http
        .post(format!("{}/v1/nodes/heartbeat", edge.http()))
        .bearer_auth(m.token("eu-1", Role::Admin))
        .json(&heartbeat("eu-1", "eu-west", 0))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401, "a user token is not a node token");
    let mismatch = http
        .post(format!("{}/v1/nodes/heartbeat", edge.http()))
        .bearer_auth(service_token("other").unwrap())
        .json(&heartbeat("eu-1", "eu-west", 0))
        .send()
        .await
        .unwrap();
    assert_eq!(mismatch.status().as_u16(), 403);
    // A token bound to one body (as the node's are) does not carry another: a captured heartbeat token cannot
    // announce a drain.
    let signed = serde_json::to_string(&heartbeat("eu-1", "eu-west", 0)).unwrap();
    let changed = serde_json::to_string(&NodeHeartbeat { draining: true, ..heartbeat("eu-1", "eu-west", 0) }).unwrap();
    let tampered = http
        .post(format!("{}/v1/nodes/heartbeat", edge.http()))
        .bearer_auth(service_token_for_body("eu-1", &signed).unwrap())
        .header("content-type", "application/json")
        .body(changed)
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status().as_u16(), 401);
    assert!(tampered.text().await.unwrap().contains("body_sha256 does not match"));
    // A token made for another recipient (a control token for a node) is no heartbeat.
    let for_a_node = http
        .post(format!("{}/v1/nodes/heartbeat", edge.http()))
        .bearer_auth(service_token_for("eu-1", "eu-2").unwrap())
        .json(&heartbeat("eu-1", "eu-west", 0))
        .send()
        .await
        .unwrap();
    assert_eq!(for_a_node.status().as_u16(), 401);
    assert!(for_a_node.text().await.unwrap().contains("the wrong recipient"));
    // The edge's own control token (same secret, `sub` "edge") registers no node.
    let edge_subject = beat(&http, &edge, &heartbeat("edge", "eu-west", 0)).await;
    assert_eq!(edge_subject.status().as_u16(), 403);
    assert!(edge_subject.text().await.unwrap().contains("reserved"));
    let reply: serde_json::Value = beat(&http, &edge, &heartbeat("eu-1", "eu-west", 0)).await.json().await.unwrap();
    assert_eq!(reply["ttl_ms"], ttl_ms);
    // A second process under a live node's id, at another URL, is refused: it would flip the lease.
    let impostor = NodeHeartbeat { url: "http://127.0.0.1:9/elsewhere".into(), ..heartbeat("eu-1", "eu-west", 0) };
    let refused = beat(&http, &edge, &impostor).await;
    assert_eq!(refused.status().as_u16(), 409);
    assert!(refused.text().await.unwrap().contains("own id"));
    beat(&http, &edge, &heartbeat("us-1", "us-east", 0)).await;
    let (eu_alive, eu_last_beat) = keep_alive(&edge, "eu-1", "eu-west");
    let (us_alive, _) = keep_alive(&edge, "us-1", "us-east");

    let nodes: serde_json::Value = http
        .get(format!("{}/v1/nodes", edge.http()))
        .bearer_auth(m.token("ops", Role::Admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 2);

    // A client in eu-west is placed there; the room stays on that node for everyone.
    let mut a = Client::connect(&Connect::new(&edge.ws(), "geo-room", &m.token("a", Role::Student))).await.unwrap();
    let mut b = Client::connect(&Connect::new(&edge.ws(), "geo-room", &m.token("b", Role::Teacher))).await.unwrap();
    let (node, token) = assigned(a.request(Req::MediaJoin { region: Some("eu-west".into()) }).await.unwrap());
    assert_eq!(node, "eu-1");
    let claims = verify_media_token(&token).unwrap();
    assert_eq!((claims.sub.as_str(), claims.room.as_str(), claims.node.as_str()), ("a", "default/geo-room", "eu-1"));
    assert!(claims.perms.audio && !claims.perms.screen);
    let (node_b, token_b) = assigned(b.request(Req::MediaJoin { region: Some("us-east".into()) }).await.unwrap());
    assert_eq!(node_b, "eu-1", "a room stays on its node");
    assert!(verify_media_token(&token_b).unwrap().perms.screen, "teachers may share screens");
    let (other_room_node, _) = {
        let mut c = Client::connect(&Connect::new(&edge.ws(), "us-room", &m.token("c", Role::Student))).await.unwrap();
        assigned(c.request(Req::MediaJoin { region: Some("us-east".into()) }).await.unwrap())
    };
    assert_eq!(other_room_node, "us-1");

    // Placements name rooms: an admin sees those of its own tenant (and `rooms` claim) only.
    let placements = |token: String| {
        let http = http.clone();
        let url = format!("{}/v1/nodes", edge.http());
        async move {
            let view: serde_json::Value = http.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
            assert_eq!(view["nodes"].as_array().map(Vec::len), Some(2), "every tenant sees the nodes");
            let mut rooms: Vec<String> =
                view["placements"].as_array().unwrap().iter().map(|p| p["room"].as_str().unwrap().to_owned()).collect();
            rooms.sort();
            rooms
        }
    };
    assert_eq!(placements(m.token("ops", Role::Admin)).await, ["default/geo-room", "default/us-room"]);
    assert!(placements(m.tenant_token("ops", Role::Admin, "globex")).await.is_empty(), "another tenant's rooms");
    let geo_only = m.sign(&UserClaims { rooms: Some(vec!["geo-room".into()]), ..m.claims("ops", Role::Admin) });
    assert_eq!(placements(geo_only.clone()).await, ["default/geo-room"]);
    // The same `rooms` claim holds for the room admin API.
    let other_room = http.get(format!("{}/v1/rooms/us-room", edge.http())).bearer_auth(&geo_only).send().await.unwrap();
    assert_eq!(other_room.status().as_u16(), 403, "an admin token limited to geo-room");
    let own_room = http.get(format!("{}/v1/rooms/geo-room", edge.http())).bearer_auth(&geo_only).send().await.unwrap();
    assert_eq!(own_room.status().as_u16(), 200);

    // eu-1 stops sending heartbeats; us-1 keeps going. Within the lease TTL the room is told to move.
    eu_alive.abort();
    let stop = *eu_last_beat.lock().unwrap();
    let moved = a.expect("media.moved", Duration::from_secs(10), |f| matches!(f, F::MediaMoved { .. })).await.unwrap();
    let told_after = stop.elapsed();
    eprintln!("failover: clients told {told_after:?} after the last heartbeat (lease TTL {ttl_ms} ms)");
    assert!(told_after < Duration::from_millis(ttl_ms + 2500), "{told_after:?}");
    assert!(matches!(moved, F::MediaMoved { reason } if reason.contains("eu-1")));
    b.expect("media.moved", Duration::from_secs(5), |f| matches!(f, F::MediaMoved { .. })).await.unwrap();
    let (new_node, _) = assigned(a.request(Req::MediaJoin { region: Some("eu-west".into()) }).await.unwrap());
    assert_eq!(new_node, "us-1", "re-placed on the nearest live node");
    us_alive.abort();

    // With every node gone (once us-1's lease lapses too), media.join says so.
    let mut d = Client::connect(&Connect::new(&edge.ws(), "empty-room", &m.token("d", Role::Student))).await.unwrap();
    let gone = Instant::now();
    loop {
        match d.request(Req::MediaJoin { region: None }).await.unwrap() {
            F::Error(e) => {
                assert_eq!(e.code, ErrorCode::Unavailable);
                break;
            }
            F::MediaAssigned { .. } => {
                assert!(gone.elapsed() < Duration::from_millis(ttl_ms + 3000), "us-1's lease never lapsed");
                tokio::time::sleep(Duration::from_millis(1000)).await; // media.join: one a second after a burst
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_drained_node_moves_its_rooms_with_its_last_heartbeat_not_a_lease_later() {
    // The default lease (15 s): a room told within a few seconds was told by the heartbeat, not the lapse.
    let edge = Edge::start().await.expect("edge starts");
    let http = reqwest::Client::new();
    let m = Minter::dev().unwrap();
    assert_eq!(beat(&http, &edge, &heartbeat("dr-1", "eu-west", 0)).await.status().as_u16(), 200);
    let mut a = Client::connect(&Connect::new(&edge.ws(), "drain-room", &m.token("a", Role::Student))).await.unwrap();
    let (node, _) = assigned(a.request(Req::MediaJoin { region: None }).await.unwrap());
    assert_eq!(node, "dr-1");

    // Draining with a session left: the room stays (its sessions carry on there).
    let draining = NodeHeartbeat { draining: true, ..heartbeat("dr-1", "eu-west", 1) };
    assert_eq!(beat(&http, &edge, &draining).await.status().as_u16(), 200);
    let (still, _) = assigned(a.request(Req::MediaJoin { region: None }).await.unwrap());
    assert_eq!(still, "dr-1", "a room stays on a draining node that still has sessions");

    // The last heartbeat of the drain (no sessions left): the room is told at once.
    let last = NodeHeartbeat { draining: true, ..heartbeat("dr-1", "eu-west", 0) };
    let sent = Instant::now();
    assert_eq!(beat(&http, &edge, &last).await.status().as_u16(), 200);
    let moved = a.expect("media.moved", Duration::from_secs(10), |f| matches!(f, F::MediaMoved { .. })).await.unwrap();
    let told_after = sent.elapsed();
    eprintln!("drain: the room was told {told_after:?} after the node's last heartbeat (lease 15 s)");
    assert!(told_after < Duration::from_secs(5), "told by the lease's lapse, not the heartbeat: {told_after:?}");
    assert!(
        matches!(&moved, F::MediaMoved { reason } if reason.contains("dr-1") && reason.contains("drained")),
        "{moved:?}"
    );
    // A heartbeat issued before the drain (a retry that arrived late) does not bring the node back.
    let stale = http
        .post(format!("{}/v1/nodes/heartbeat", edge.http()))
        .bearer_auth(service_token_issued_ago("dr-1", 20).unwrap())
        .json(&heartbeat("dr-1", "eu-west", 0))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status().as_u16(), 409);
    assert!(stale.text().await.unwrap().contains("stale heartbeat"));
    match a.request(Req::MediaJoin { region: None }).await.unwrap() {
        F::Error(e) => assert_eq!(e.code, ErrorCode::Unavailable, "no node is left: {e:?}"),
        other => panic!("the drained node is gone from placement, got {other:?}"),
    }
}

/// How a [`recording_node`] answers the first control command it receives.
#[derive(Clone, Copy)]
enum FirstAnswer {
    /// `200`, after this long (a slow node).
    After(Duration),
    /// `503` after 1.2 s (a node whose media loop is overloaded for a moment), so that the try after it goes
    /// out in a later second than the decision.
    Unavailable,
}

/// A stand-in media node that records the control commands it receives, in arrival order, and answers the
/// first one as `first` says. Returns its base URL and the record; each command has its token's verified
/// `aud` and `iat` added as `_aud` and `_iat`.
async fn recording_node(first: FirstAnswer) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let control = move |headers: axum::http::HeaderMap, axum::Json(mut command): axum::Json<serde_json::Value>| {
        let seen = Arc::clone(&record);
        let token = headers.get("authorization").and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer "));
        let claims = token.and_then(|t| verify_service_token(t).ok());
        command["_aud"] = serde_json::json!(claims.as_ref().and_then(|c| c.aud.clone()));
        command["_iat"] = serde_json::json!(claims.as_ref().and_then(|c| c.iat));
        async move {
            let is_first = {
                let mut seen = seen.lock().unwrap();
                seen.push(command);
                seen.len() == 1
            };
            match first {
                FirstAnswer::After(delay) if is_first => tokio::time::sleep(delay).await,
                FirstAnswer::Unavailable if is_first => {
                    tokio::time::sleep(Duration::from_millis(1200)).await;
                    let busy = serde_json::json!({"code": "unavailable", "message": "the media loop is busy"});
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(busy));
                }
                _ => {}
            }
            (axum::http::StatusCode::OK, axum::Json(serde_json::json!({"sessions": 0})))
        }
    };
    let app = axum::Router::new().route("/v1/control", axum::routing::post(control));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn control_commands_reach_a_slow_node_in_the_order_the_moderators_decided() {
    let edge = Edge::start().await.expect("edge starts");
    let http = reqwest::Client::new();
    let m = Minter::dev().unwrap();
    let (url, seen) = recording_node(FirstAnswer::After(Duration::from_millis(1500))).await;
    let node = NodeHeartbeat { url, ..heartbeat("slow-1", "eu-west", 0) };
    assert_eq!(beat(&http, &edge, &node).await.status().as_u16(), 200);
    let mut teacher =
        Client::connect(&Connect::new(&edge.ws(), "order-room", &m.token("t", Role::Teacher))).await.unwrap();
    let _student =
        Client::connect(&Connect::new(&edge.ws(), "order-room", &m.token("s", Role::Student))).await.unwrap();
    let (placed, _) = assigned(teacher.request(Req::MediaJoin { region: None }).await.unwrap());
    assert_eq!(placed, "slow-1");

    // Mute, then unmute at once, without waiting for the first reply: the node answers the mute's first
    // command only after 1.5 s, and the unmute must still arrive after the mute.
    let mute = |muted| Req::ParticipantMute {
        id: homeroom_shared::UserId::parse("s").unwrap(),
        kind: MediaKind::Audio,
        muted,
    };
    teacher.send(&ClientFrame::with_rid("mute", mute(true))).await.unwrap();
    teacher.send(&ClientFrame::with_rid("unmute", mute(false))).await.unwrap();
    for rid in ["mute", "unmute"] {
        let reply = teacher.reply_to(rid, Duration::from_secs(10)).await.unwrap();
        assert!(matches!(reply, F::Ack(_)), "{rid}: {reply:?}");
    }
    let mutes = || -> Vec<bool> {
        let seen = seen.lock().unwrap();
        seen.iter()
            .filter(|c| c["type"] == "mute" && c["participant"] == "s" && c["kind"] == "audio")
            .filter_map(|c| c["muted"].as_bool())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mutes().contains(&false) {
        assert!(Instant::now() < deadline, "the unmute never reached the node: {:?}", seen.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Longer than the slow answer, so that a mute sent after the unmute would have arrived by now.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.first().is_some_and(|c| c["type"] == "perms" && c["participant"] == "s"),
        "the slow first answer is the mute's own first command: {seen:?}"
    );
    assert_eq!(mutes(), [true, false], "mute then unmute, as decided; the node ends unmuted: {seen:?}");
    assert!(seen.iter().all(|c| c["_aud"] == "slow-1"), "every control token names the node it is for: {seen:?}");
}

#[tokio::test]
async fn a_control_command_the_node_cannot_take_now_is_sent_again_with_its_decisions_second() {
    let edge = Edge::start().await.expect("edge starts");
    let http = reqwest::Client::new();
    let m = Minter::dev().unwrap();
    let (url, seen) = recording_node(FirstAnswer::Unavailable).await;
    let node = NodeHeartbeat { url, ..heartbeat("busy-1", "eu-west", 0) };
    assert_eq!(beat(&http, &edge, &node).await.status().as_u16(), 200);
    let mut teacher =
        Client::connect(&Connect::new(&edge.ws(), "retry-room", &m.token("t", Role::Teacher))).await.unwrap();
    let _student =
        Client::connect(&Connect::new(&edge.ws(), "retry-room", &m.token("s", Role::Student))).await.unwrap();
    let (placed, _) = assigned(teacher.request(Req::MediaJoin { region: None }).await.unwrap());
    assert_eq!(placed, "busy-1");
    let kick = Req::ParticipantKick { id: homeroom_shared::UserId::parse("s").unwrap() };
    assert!(matches!(teacher.request(kick).await.unwrap(), F::Ack(_)));
    let kicks = || -> Vec<serde_json::Value> {
        seen.lock().unwrap().iter().filter(|c| c["type"] == "kick" && c["participant"] == "s").cloned().collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while kicks().len() < 2 {
        assert!(Instant::now() < deadline, "the refused kick was not sent again: {:?}", seen.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kicks = kicks();
    assert_eq!(kicks.len(), 2, "sent again once, after the 503 only: {kicks:?}");
    assert!(kicks[0]["_iat"].is_u64(), "{kicks:?}");
    assert_eq!(kicks[0]["_iat"], kicks[1]["_iat"], "the retry carries the decision's second, not its own");
}

#[tokio::test]
async fn the_media_of_a_student_who_left_is_ended_once_the_grace_is_over() {
    let edge = Edge::start_with(&[("MEDIA_LEAVE_GRACE_SECS", "2")]).await.expect("edge starts");
    let http = reqwest::Client::new();
    let m = Minter::dev().unwrap();
    let (url, seen) = recording_node(FirstAnswer::After(Duration::ZERO)).await;
    let node = NodeHeartbeat { url, ..heartbeat("grace-1", "eu-west", 0) };
    assert_eq!(beat(&http, &edge, &node).await.status().as_u16(), 200);
    let _teacher =
        Client::connect(&Connect::new(&edge.ws(), "grace-room", &m.token("t", Role::Teacher))).await.unwrap();
    let mut student =
        Client::connect(&Connect::new(&edge.ws(), "grace-room", &m.token("s", Role::Student))).await.unwrap();
    let (placed, _) = assigned(student.request(Req::MediaJoin { region: None }).await.unwrap());
    assert_eq!(placed, "grace-1");
    // The student closes its signalling socket only; its media session (on the node) could go on.
    let left = Instant::now();
    student.close().await;
    let kicked = || seen.lock().unwrap().iter().any(|c| c["type"] == "kick" && c["participant"] == "s");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!kicked(), "not within the grace: {:?}", seen.lock().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kicked() {
        assert!(Instant::now() < deadline, "the node never heard: {:?}", seen.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(left.elapsed() >= Duration::from_secs(2), "ended after the grace, {:?} after leaving", left.elapsed());
}

#[tokio::test]
async fn a_class_asking_for_media_at_once_is_answered_with_one_node() {
    let edge = Edge::start().await.expect("edge starts");
    let http = reqwest::Client::new();
    let m = Minter::dev().unwrap();
    for id in ["burst-1", "burst-2"] {
        assert_eq!(beat(&http, &edge, &heartbeat(id, "eu-west", 0)).await.status().as_u16(), 200);
    }
    let mut class = Vec::new();
    for i in 0..20 {
        let token = m.token(&format!("s{i}"), Role::Student);
        class.push(Client::connect(&Connect::new(&edge.ws(), "burst-room", &token)).await.unwrap());
    }
    // Every member asks before any answer is in: the room queues the joins behind one another.
    for client in &mut class {
        client.send(&ClientFrame::with_rid("join", Req::MediaJoin { region: None })).await.unwrap();
    }
    let mut nodes = Vec::new();
    for client in &mut class {
        let (node, token) = assigned(client.reply_to("join", Duration::from_secs(10)).await.unwrap());
        assert_eq!(verify_media_token(&token).unwrap().node, node);
        nodes.push(node);
    }
    nodes.dedup();
    assert_eq!(nodes.len(), 1, "one room, one node: {nodes:?}");
}
