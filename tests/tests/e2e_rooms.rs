//! End to end on real `wrangler dev` (workerd, SQLite-backed Durable Objects) with real WebSockets and JWTs.
//!
//! One edge is shared by the tests of this file; each test uses its own room names.

use homeroom_shared::auth::UserClaims;
use homeroom_shared::protocol::{
    close, ClientRequest as Req, ErrorCode, LeaveReason, MediaKind, PermsPatch, Role, ServerFrame as F,
};
use homeroom_tests::client::{Client, Connect};
use homeroom_tests::edge::Edge;
use homeroom_tests::tokens::{now_secs, Minter};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

static EDGE: OnceCell<Edge> = OnceCell::const_new();

async fn edge() -> &'static Edge {
    EDGE.get_or_init(|| async {
        Edge::start_with(&[("RATE_BURST", "20"), ("RATE_PER_SEC", "10")]).await.expect("edge starts")
    })
    .await
}

fn minter() -> Minter {
    Minter::dev().expect(".dev.vars has JWT_SECRET")
}

async fn join(room: &str, user: &str, role: Role) -> Client {
    let edge = edge().await;
    Client::connect(&Connect::new(&edge.ws(), room, &minter().token(user, role))).await.expect("connects")
}

const SHORT: Duration = Duration::from_millis(300);

fn ack_seq(frame: &F) -> u64 {
    match frame {
        F::Ack(a) => a.seq.expect("ack with seq"),
        other => panic!("expected ack, got {other:?}"),
    }
}

fn error_code(frame: &F) -> ErrorCode {
    match frame {
        F::Error(e) => e.code,
        other => panic!("expected error, got {other:?}"),
    }
}

fn chat(text: &str) -> Req {
    Req::ChatSend { text: text.into(), reply_to: None }
}

#[tokio::test]
async fn without_dev_tokens_the_route_does_not_exist_for_any_method() {
    let edge = Edge::start_with(&[("DEV_TOKENS", "false")]).await.expect("edge starts");
    let http = reqwest::Client::new();
    let url = format!("{}/v1/dev/token", edge.http());
    let post = http.post(&url).json(&serde_json::json!({"name": "Ada"})).send().await.unwrap();
    let get = http.get(&url).send().await.unwrap();
    for response in [post, get] {
        assert_eq!(response.status().as_u16(), 404, "a deployment has no dev tokens: {response:?}");
        assert!(response.headers().get("allow").is_none());
    }
}

#[tokio::test]
async fn health_and_refusals_before_upgrade() {
    let edge = edge().await;
    let http = reqwest::Client::new();
    let health: serde_json::Value =
        http.get(format!("{}/healthz", edge.http())).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["ok"], true);
    let post = http.post(format!("{}/healthz", edge.http())).send().await.unwrap();
    assert_eq!(
        (post.status().as_u16(), post.headers().get("allow").map(|v| v.to_str().unwrap_or(""))),
        (405, Some("GET, HEAD"))
    );
    let head = http.head(format!("{}/healthz", edge.http())).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200, "load balancers probe with HEAD");
    // Development tokens are on in .dev.vars: the route exists and takes POST only.
    let get_token = http.get(format!("{}/v1/dev/token", edge.http())).send().await.unwrap();
    assert_eq!(get_token.status().as_u16(), 405);

    let m = minter();
    let refuse = |room: &str, token: String| Connect::new(&edge.ws(), room, &token);
    let err = Client::connect(&refuse("bad.room", m.token("a", Role::Student))).await.unwrap_err();
    assert_eq!((err.status(), err.code().as_deref()), (Some(400), Some("bad_request")));
    let err = Client::connect(&refuse("r", String::new())).await.unwrap_err();
    assert_eq!((err.status(), err.code().as_deref()), (Some(401), Some("unauthorized")));
    let err = Client::connect(&refuse("r", "not.a.jwt".into())).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    let wrong_key = Minter::with_secret(b"some other secret").token("a", Role::Teacher);
    assert_eq!(Client::connect(&refuse("r", wrong_key)).await.unwrap_err().status(), Some(401));
    let expired = m.sign(&UserClaims { exp: now_secs() - 10, ..m.claims("a", Role::Student) });
    let err = Client::connect(&refuse("r", expired)).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(format!("{err}").contains("expired"), "{err}");
    let scoped = m.sign(&UserClaims { rooms: Some(vec!["math".into()]), ..m.claims("a", Role::Student) });
    let err = Client::connect(&refuse("art", scoped.clone())).await.unwrap_err();
    assert_eq!((err.status(), err.code().as_deref()), (Some(403), Some("forbidden")));
    assert!(Client::connect(&refuse("math", scoped)).await.is_ok());

    // A plain GET without the upgrade is told what to do.
    let response =
        http.get(format!("{}/v1/rooms/r/ws?token={}", edge.http(), m.token("a", Role::Student))).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 426);
    // Bearer header works for non-browser clients.
    let mut bearer = Connect::new(&edge.ws(), "bearer-room", &m.token("b", Role::Student));
    bearer.bearer = true;
    let mut c = Client::connect(&bearer).await.unwrap();
    assert!(c.ping(Duration::from_secs(5)).await.is_ok());
    let unknown = http.get(format!("{}/v2/whatever", edge.http())).send().await.unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
}

#[tokio::test]
async fn two_users_chat_and_see_each_other_with_roles() {
    let started = Instant::now();
    let mut teacher = join("chat-basic", "teacher-1", Role::Teacher).await;
    let connect_ms = started.elapsed().as_millis();
    let mut student = join("chat-basic", "student-1", Role::Student).await;
    let me = &student.welcome;
    assert_eq!(me.participants.len(), 2);
    let t = me.participants.iter().find(|p| p.id.as_str() == "teacher-1").unwrap();
    assert_eq!(t.role, Role::Teacher);
    assert_eq!(t.name, "teacher-1 (test)");
    assert!(t.perms.moderate);
    let joined =
        teacher.expect("joined", Duration::from_secs(5), |f| matches!(f, F::ParticipantJoined { .. })).await.unwrap();
    match joined {
        F::ParticipantJoined { participant, .. } => {
            assert_eq!(participant.id.as_str(), "student-1");
            assert_eq!(participant.role, Role::Student);
            assert!(!participant.perms.moderate);
        }
        _ => unreachable!(),
    }

    let round_trip = Instant::now();
    let ack = student.request(chat("hello, teacher")).await.unwrap();
    let seq = ack_seq(&ack);
    let got = teacher.expect("chat", Duration::from_secs(5), |f| matches!(f, F::ChatMessage { .. })).await.unwrap();
    let rtt = round_trip.elapsed();
    match got {
        F::ChatMessage { seq: s, message, .. } => {
            assert_eq!(s, seq);
            assert_eq!(message.text, "hello, teacher");
            assert_eq!(message.from.role, Role::Student);
        }
        _ => unreachable!(),
    }
    let reply = teacher.request(chat("hi!")).await.unwrap();
    assert_eq!(ack_seq(&reply), seq + 1);
    eprintln!("e2e timings: connect→welcome {connect_ms} ms, chat send→delivered {} ms", rtt.as_millis());
}

#[tokio::test]
async fn a_resent_rid_creates_no_duplicate() {
    let mut a = join("idempotent", "a", Role::Student).await;
    let mut b = join("idempotent", "b", Role::Student).await;
    let first = a.request_with_rid("same", chat("once")).await.unwrap();
    let again = a.request_with_rid("same", chat("once")).await.unwrap();
    assert_eq!(first, again);
    let frames = b.drain(Duration::from_millis(500)).await.unwrap();
    let copies =
        frames.iter().filter(|f| matches!(f, F::ChatMessage { message, .. } if message.text == "once")).count();
    assert_eq!(copies, 1);
    // Even from a new connection of the same user.
    let mut a2 = join("idempotent", "a", Role::Student).await;
    assert_eq!(a2.request_with_rid("same", chat("once")).await.unwrap(), first);
}

#[tokio::test]
async fn a_dropped_client_resumes_with_exactly_the_missed_events() {
    let mut a = join("resume", "a", Role::Student).await;
    let mut b = join("resume", "b", Role::Student).await;
    b.request(chat("before the drop")).await.unwrap();
    let epoch = b.welcome.epoch.clone();
    let _ = a.drain(SHORT).await.unwrap();
    let last = *b.log.last().unwrap();
    b.abort();
    // Let the edge notice the drop, then talk while b is away.
    a.expect("b left", Duration::from_secs(10), |f| matches!(f, F::ParticipantLeft { .. })).await.unwrap();
    let mut missed = Vec::new();
    for i in 0..5 {
        missed.push(ack_seq(&a.request(chat(&format!("missed {i}"))).await.unwrap()));
    }
    let edge = edge().await;
    let mut target = Connect::new(&edge.ws(), "resume", &minter().token("b", Role::Student));
    target.resume = Some((epoch, last));
    let mut b2 = Client::connect(&target).await.unwrap();
    assert!(b2.welcome.resumed);
    let replay = b2.drain(SHORT).await.unwrap();
    let seqs: Vec<u64> = replay.iter().filter_map(F::seq).collect();
    assert_eq!(seqs, ((last + 1)..=b2.welcome.seq).collect::<Vec<_>>(), "gap-free, in order, nothing extra");
    let texts: Vec<String> = replay
        .iter()
        .filter_map(|f| match f {
            F::ChatMessage { message, .. } => Some(message.text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, (0..5).map(|i| format!("missed {i}")).collect::<Vec<_>>());
    for s in missed {
        assert!(seqs.contains(&s));
    }
    // A stale epoch gets a fresh snapshot instead.
    let mut stale = Connect::new(&edge.ws(), "resume", &minter().token("c", Role::Student));
    stale.resume = Some(("zzzz".into(), 3));
    let c = Client::connect(&stale).await.unwrap();
    assert!(!c.welcome.resumed);
    assert!(c.welcome.history.len() >= 6);
}

#[tokio::test]
async fn rooms_and_tenants_are_isolated() {
    let edge = edge().await;
    let m = minter();
    let mut a1 = Client::connect(&Connect::new(&edge.ws(), "iso-1", &m.token("a", Role::Student))).await.unwrap();
    let mut a2 = Client::connect(&Connect::new(&edge.ws(), "iso-2", &m.token("b", Role::Student))).await.unwrap();
    let mut other_tenant =
        Client::connect(&Connect::new(&edge.ws(), "iso-1", &m.tenant_token("c", Role::Student, "acme"))).await.unwrap();
    assert_eq!(other_tenant.welcome.participants.len(), 1, "tenant acme's iso-1 is a different room");
    a1.request(chat("only for iso-1 of the default tenant")).await.unwrap();
    for client in [&mut a2, &mut other_tenant] {
        let frames = client.drain(Duration::from_millis(500)).await.unwrap();
        assert!(frames.iter().all(|f| !matches!(f, F::ChatMessage { .. } | F::ParticipantJoined { .. })), "{frames:?}");
    }
}

#[tokio::test]
async fn clear_and_kick_work_and_are_refused_to_students() {
    let mut teacher = join("moderation", "t", Role::Teacher).await;
    let mut student = join("moderation", "s", Role::Student).await;
    let mut other = join("moderation", "o", Role::Student).await;
    assert_eq!(error_code(&student.request(Req::RoomClear).await.unwrap()), ErrorCode::Forbidden);
    let kick_teacher = Req::ParticipantKick { id: homeroom_shared::UserId::parse("t").unwrap() };
    assert_eq!(error_code(&student.request(kick_teacher).await.unwrap()), ErrorCode::Forbidden);

    let kick = Req::ParticipantKick { id: homeroom_shared::UserId::parse("s").unwrap() };
    assert!(matches!(teacher.request(kick).await.unwrap(), F::Ack(_)));
    assert_eq!(student.closed(Duration::from_secs(5)).await.unwrap().0, close::KICKED);
    other
        .expect("kicked", Duration::from_secs(5), |f| {
            matches!(f, F::ParticipantLeft { reason: LeaveReason::Kicked, .. })
        })
        .await
        .unwrap();
    // Kicked users cannot silently rejoin with the same token.
    let edge = edge().await;
    let err = Client::connect(&Connect::new(&edge.ws(), "moderation", &minter().token("s", Role::Student)))
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.code().as_deref()), (Some(403), Some("forbidden")));
    // Browsers cannot read a refused upgrade's status: a plain GET with probe=1 tells them why.
    let probe = |user: &str, role: Role| {
        format!("{}/v1/rooms/moderation/ws?probe=1&token={}", edge.http(), minter().token(user, role))
    };
    let refused = reqwest::get(probe("s", Role::Student)).await.unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("removed"), "{body}");
    assert_eq!(reqwest::get(probe("newcomer", Role::Student)).await.unwrap().status().as_u16(), 204);

    teacher.request(chat("soon gone")).await.unwrap();
    let old_epoch = teacher.welcome.epoch.clone();
    let reply = teacher.request(Req::RoomClear).await.unwrap();
    assert!(matches!(reply, F::Ack(_)));
    let cleared =
        other.expect("cleared", Duration::from_secs(5), |f| matches!(f, F::RoomCleared { .. })).await.unwrap();
    assert_eq!(other.closed(Duration::from_secs(5)).await.unwrap().0, close::ROOM_CLEARED);
    assert_eq!(teacher.closed(Duration::from_secs(5)).await.unwrap().0, close::ROOM_CLEARED);
    let fresh = join("moderation", "o", Role::Student).await;
    assert!(fresh.welcome.history.is_empty());
    assert_ne!(fresh.welcome.epoch, old_epoch);
    assert!(matches!(cleared, F::RoomCleared { epoch } if epoch == fresh.welcome.epoch));
}

#[tokio::test]
async fn moderators_mute_and_change_permissions() {
    let mut teacher = join("perms", "t", Role::Teacher).await;
    let mut student = join("perms", "s", Role::Student).await;
    let sid = homeroom_shared::UserId::parse("s").unwrap();
    let update = Req::ParticipantUpdate {
        id: sid.clone(),
        role: None,
        perms: Some(PermsPatch { chat: Some(false), ..PermsPatch::default() }),
    };
    assert!(matches!(teacher.request(update).await.unwrap(), F::Ack(_)));
    assert_eq!(error_code(&student.request(chat("let me talk")).await.unwrap()), ErrorCode::Forbidden);
    let mute = Req::ParticipantMute { id: sid, kind: MediaKind::Audio, muted: true };
    assert!(matches!(teacher.request(mute).await.unwrap(), F::Ack(_)));
    let state = Req::MediaState { audio: true, video: false, screen: false };
    assert_eq!(error_code(&student.request(state).await.unwrap()), ErrorCode::Forbidden);
}

#[tokio::test]
async fn malformed_and_oversized_frames_get_errors_and_the_connection_survives() {
    let mut a = join("bad-frames", "a", Role::Student).await;
    a.send_text("{this is not json").await.unwrap();
    let f = a.expect("error", Duration::from_secs(5), |f| matches!(f, F::Error(_))).await.unwrap();
    assert_eq!(error_code(&f), ErrorCode::BadRequest);
    a.send_text(r#"{"type":"teleport","rid":"t1"}"#).await.unwrap();
    assert_eq!(error_code(&a.reply_to("t1", Duration::from_secs(5)).await.unwrap()), ErrorCode::BadRequest);
    let huge = format!(r#"{{"type":"chat.send","text":"{}"}}"#, "x".repeat(20_000));
    a.send_text(&huge).await.unwrap();
    let f = a.expect("too_large", Duration::from_secs(5), |f| matches!(f, F::Error(_))).await.unwrap();
    assert_eq!(error_code(&f), ErrorCode::TooLarge);
    a.send_binary(vec![1, 2, 3]).await.unwrap();
    let f = a.expect("binary refused", Duration::from_secs(5), |f| matches!(f, F::Error(_))).await.unwrap();
    assert_eq!(error_code(&f), ErrorCode::BadRequest);
    let long_text = Req::ChatSend { text: "y".repeat(4001), reply_to: None };
    assert_eq!(error_code(&a.request(long_text).await.unwrap()), ErrorCode::TooLarge);
    assert!(matches!(a.request(chat("still here")).await.unwrap(), F::Ack(_)));
    assert!(a.ping(Duration::from_secs(5)).await.is_ok());
}

#[tokio::test]
async fn a_flooding_client_is_limited_and_cut_while_another_is_unaffected() {
    let mut flood = join("flood", "flooder", Role::Student).await;
    let mut calm = join("flood", "calm", Role::Student).await;
    for i in 0..400 {
        if i == 100 {
            // Mid-flood, the other member is served as usual.
            assert!(matches!(calm.request(chat("I am fine")).await.unwrap(), F::Ack(_)));
        }
        if flood.send_text(&format!(r#"{{"type":"typing","active":{}}}"#, i % 2 == 0)).await.is_err() {
            break;
        }
    }
    let limited = |f: &F| matches!(f, F::Error(e) if e.code == ErrorCode::RateLimited);
    flood.expect("rate_limited before the cut", Duration::from_secs(10), limited).await.unwrap();
    let (code, reason) = flood.closed(Duration::from_secs(10)).await.unwrap();
    assert_eq!(code, close::POLICY, "{reason}");
    assert!(matches!(calm.request(chat("still fine")).await.unwrap(), F::Ack(_)));
}

#[tokio::test]
async fn tokens_expire_with_a_warning_and_close_4001() {
    let edge = edge().await;
    let m = minter();
    let short = m.sign(&UserClaims { exp: now_secs() + 4, ..m.claims("brief", Role::Student) });
    let mut c = Client::connect(&Connect::new(&edge.ws(), "expiry", &short)).await.unwrap();
    c.expect("auth.expiring", Duration::from_secs(5), |f| matches!(f, F::AuthExpiring { .. })).await.unwrap();
    assert_eq!(c.closed(Duration::from_secs(10)).await.unwrap().0, close::TOKEN_INVALID);

    let short = m.sign(&UserClaims { exp: now_secs() + 4, ..m.claims("renewed", Role::Student) });
    let mut r = Client::connect(&Connect::new(&edge.ws(), "expiry", &short)).await.unwrap();
    let reply = r.request(Req::AuthRefresh { token: m.token("renewed", Role::Student) }).await.unwrap();
    assert!(matches!(reply, F::Ack(a) if a.exp.is_some()));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(r.ping(Duration::from_secs(5)).await.is_ok(), "refreshed connection stays open");
}

#[tokio::test]
async fn display_names_in_any_script_reach_the_room_intact() {
    // The verified identity and the announcer's name travel from the Worker to the room in headers.
    let edge = edge().await;
    let m = minter();
    let name = "Zoë 李雷 👩‍🏫";
    let token = m.sign(&UserClaims { name: Some(name.into()), ..m.claims("zoe", Role::Teacher) });
    let mut zoe = Client::connect(&Connect::new(&edge.ws(), "unicode", &token)).await.expect("connects");
    assert_eq!(zoe.welcome.you.name, name);
    let admin = m.sign(&UserClaims { name: Some("Émile Ops 🎓".into()), ..m.claims("ops", Role::Admin) });
    let posted = reqwest::Client::new()
        .post(format!("{}/v1/rooms/unicode/messages", edge.http()))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"text": "Bonne journée"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 201);
    let announced =
        zoe.expect("announcement", Duration::from_secs(5), |f| matches!(f, F::ChatMessage { .. })).await.unwrap();
    assert!(
        matches!(&announced, F::ChatMessage { message, .. } if message.from.name == "Émile Ops 🎓"),
        "{announced:?}"
    );
}

#[tokio::test]
async fn admin_api_reads_announces_pages_kicks_and_limits_capacity() {
    let edge = edge().await;
    let m = minter();
    let admin = m.token("ops", Role::Admin);
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}/v1/rooms/admin-room{p}", edge.http());
    let mut s = join("admin-room", "s1", Role::Student).await;

    let info: serde_json::Value = http.get(url("")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["participants"].as_array().unwrap().len(), 1);
    assert_eq!(info["participants"][0]["role"], "student");
    let student_token = m.token("s1", Role::Student);
    let denied = http.get(url("")).bearer_auth(&student_token).send().await.unwrap();
    assert_eq!(denied.status().as_u16(), 403);
    assert_eq!(http.get(url("")).send().await.unwrap().status().as_u16(), 401);

    let posted = http
        .post(url("/messages"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"text": "Exam at 10"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 201);
    let announced =
        s.expect("announcement", Duration::from_secs(5), |f| matches!(f, F::ChatMessage { .. })).await.unwrap();
    assert!(matches!(announced, F::ChatMessage { message, .. } if message.from.id.as_str() == "system"));
    let page: serde_json::Value =
        http.get(url("/messages?limit=10")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["messages"][0]["text"], "Exam at 10");
    let bad = http.get(url("/messages?limit=abc")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    // The contract spells the route `?before=&limit=`: empty values mean absent.
    let page: serde_json::Value =
        http.get(url("/messages?before=&limit=")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["messages"][0]["text"], "Exam at 10");

    let empty = http.post(url("/settings")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(empty.status().as_u16(), 400, "a POST without a patch is a mistake, not a read");
    let settings =
        http.post(url("/settings")).bearer_auth(&admin).json(&serde_json::json!({"capacity": 1})).send().await.unwrap();
    assert_eq!(settings.status().as_u16(), 200);
    let err =
        Client::connect(&Connect::new(&edge.ws(), "admin-room", &m.token("s2", Role::Student))).await.unwrap_err();
    assert_eq!((err.status(), err.code().as_deref()), (Some(409), Some("room_full")));
    // Moderators may still enter a full room.
    assert!(Client::connect(&Connect::new(&edge.ws(), "admin-room", &m.token("t", Role::Teacher))).await.is_ok());

    let kicked =
        http.post(url("/kick")).bearer_auth(&admin).json(&serde_json::json!({"id": "s1"})).send().await.unwrap();
    assert_eq!(kicked.status().as_u16(), 200);
    assert_eq!(s.closed(Duration::from_secs(5)).await.unwrap().0, close::KICKED);
    let missing =
        http.post(url("/kick")).bearer_auth(&admin).json(&serde_json::json!({"id": "nobody"})).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let cleared: serde_json::Value =
        http.post(url("/clear")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert!(cleared["epoch"].is_string());
    let nodes = http.get(format!("{}/v1/nodes", edge.http())).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(nodes.status().as_u16(), 200);
}

#[tokio::test]
async fn typing_presence_and_reactions_reach_others() {
    let mut a = join("ephemeral", "a", Role::Student).await;
    let mut b = join("ephemeral", "b", Role::Student).await;
    a.send(&homeroom_shared::protocol::ClientFrame { rid: None, request: Req::Typing { active: true } }).await.unwrap();
    b.expect("typing", Duration::from_secs(5), |f| matches!(f, F::Typing { active: true, .. })).await.unwrap();
    // Server-side expiry, without another frame from a.
    b.expect("typing stops", Duration::from_secs(8), |f| matches!(f, F::Typing { active: false, .. })).await.unwrap();
    a.request(Req::Reaction { emoji: "🎉".into() }).await.unwrap();
    b.expect("reaction", Duration::from_secs(5), |f| matches!(f, F::Reaction { .. })).await.unwrap();
    a.request(Req::Hand { raised: true }).await.unwrap();
    b.expect(
        "hand",
        Duration::from_secs(5),
        |f| matches!(f, F::ParticipantUpdated { participant, .. } if participant.hand_raised),
    )
    .await
    .unwrap();
}
