//! Golden JSON: the exact bytes of every frame type, in both directions. A change here is a protocol change.

use homeroom_shared::auth::MediaPerms;
use homeroom_shared::media::{ControlCommand, HeartbeatReply, NodeHeartbeat};
use homeroom_shared::protocol::*;
use homeroom_shared::{Timestamp, UserId};

fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn participant() -> Participant {
    Participant {
        id: uid("u1"),
        name: "Ada".into(),
        role: Role::Teacher,
        joined_at: Timestamp(1000),
        perms: Role::Teacher.default_perms(),
        status: Status::Active,
        last_seen: Timestamp(2000),
        hand_raised: false,
        media: MediaFlags { audio: true, video: false, screen: false },
        muted: MediaFlags::default(),
        last_read: 7,
    }
}

const PARTICIPANT: &str = r#"{"id":"u1","name":"Ada","role":"teacher","joined_at":1000,"perms":{"chat":true,"stream":true,"screen_share":true,"moderate":true},"status":"active","last_seen":2000,"hand_raised":false,"media":{"audio":true,"video":false,"screen":false},"muted":{"audio":false,"video":false,"screen":false},"last_read":7}"#;

fn message() -> ChatMessage {
    ChatMessage {
        id: "e1-5".into(),
        seq: 5,
        from: Sender { id: uid("u1"), name: "Ada".into(), role: Role::Teacher },
        text: "hi".into(),
        reply_to: None,
        ts: Timestamp(3000),
        edited_at: None,
    }
}

const MESSAGE: &str = r#"{"id":"e1-5","seq":5,"from":{"id":"u1","name":"Ada","role":"teacher"},"text":"hi","reply_to":null,"ts":3000,"edited_at":null}"#;

fn config() -> ClientConfig {
    ClientConfig {
        capacity: 100,
        max_frame_bytes: 16384,
        max_chat_chars: 4000,
        max_rid_chars: 64,
        rate_burst: 30,
        rate_per_sec: 10,
        typing_ttl_ms: 5000,
        cursor_interval_ms: 50,
        idle_after_ms: 300000,
        history_limit: 500,
        persist_messages: true,
        ping_interval_ms: 30000,
    }
}

/// Serializes `frame`, compares with `expected`, and checks that parsing `expected` gives `frame` back.
fn golden(frame: ServerFrame, expected: &str) {
    assert_eq!(frame.to_json(), expected);
    let parsed: ServerFrame = serde_json::from_str(expected).unwrap();
    assert_eq!(parsed, frame);
}

#[test]
fn welcome() {
    let welcome = Welcome {
        protocol: 1,
        room: "math".into(),
        epoch: "lx1".into(),
        seq: 9,
        resumed: false,
        you: participant(),
        participants: vec![participant()],
        history: vec![message()],
        history_more: true,
        config: config(),
    };
    let expected = format!(
        r#"{{"type":"welcome","protocol":1,"room":"math","epoch":"lx1","seq":9,"resumed":false,"you":{PARTICIPANT},"participants":[{PARTICIPANT}],"history":[{MESSAGE}],"history_more":true,"config":{{"capacity":100,"max_frame_bytes":16384,"max_chat_chars":4000,"max_rid_chars":64,"rate_burst":30,"rate_per_sec":10,"typing_ttl_ms":5000,"cursor_interval_ms":50,"idle_after_ms":300000,"history_limit":500,"persist_messages":true,"ping_interval_ms":30000}}}}"#
    );
    golden(ServerFrame::Welcome(Box::new(welcome)), &expected);
}

#[test]
fn ack_and_error() {
    golden(
        ServerFrame::Ack(Ack { rid: "r1".into(), seq: Some(5), id: Some("e1-5".into()), exp: None }),
        r#"{"type":"ack","rid":"r1","seq":5,"id":"e1-5"}"#,
    );
    golden(ServerFrame::Ack(Ack { rid: "r2".into(), seq: None, id: None, exp: None }), r#"{"type":"ack","rid":"r2"}"#);
    golden(
        ServerFrame::Ack(Ack { rid: "r3".into(), seq: None, id: None, exp: Some(1800000000) }),
        r#"{"type":"ack","rid":"r3","exp":1800000000}"#,
    );
    golden(
        ServerFrame::Error(ErrorFrame { rid: Some("r1".into()), code: ErrorCode::RateLimited, message: "slow".into() }),
        r#"{"type":"error","rid":"r1","code":"rate_limited","message":"slow"}"#,
    );
    golden(
        ServerFrame::Error(ErrorFrame { rid: None, code: ErrorCode::BadRequest, message: "x".into() }),
        r#"{"type":"error","code":"bad_request","message":"x"}"#,
    );
}

#[test]
fn every_error_code() {
    let codes = [
        (ErrorCode::BadRequest, "bad_request", 400),
        (ErrorCode::Unauthorized, "unauthorized", 401),
        (ErrorCode::Forbidden, "forbidden", 403),
        (ErrorCode::NotFound, "not_found", 404),
        (ErrorCode::Conflict, "conflict", 409),
        (ErrorCode::RoomFull, "room_full", 409),
        (ErrorCode::RateLimited, "rate_limited", 429),
        (ErrorCode::TooLarge, "too_large", 413),
        (ErrorCode::Unavailable, "unavailable", 503),
        (ErrorCode::Internal, "internal", 500),
    ];
    for (code, name, status) in codes {
        assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{name}\""));
        assert_eq!(code.as_str(), name);
        assert_eq!(code.http_status(), status);
    }
    assert_eq!(ApiError::new(ErrorCode::RoomFull, "full").to_json(), r#"{"code":"room_full","message":"full"}"#);
    assert_eq!(
        [close::TOKEN_INVALID, close::KICKED, close::ROOM_CLEARED, close::POLICY, close::TOO_LARGE, close::INTERNAL],
        [4001, 4003, 4004, 4008, 4009, 1011]
    );
}

#[test]
fn logged_events() {
    golden(
        ServerFrame::ParticipantJoined { seq: 1, ts: Timestamp(10), participant: participant() },
        &format!(r#"{{"type":"participant.joined","seq":1,"ts":10,"participant":{PARTICIPANT}}}"#),
    );
    golden(
        ServerFrame::ParticipantLeft { seq: 2, ts: Timestamp(11), id: uid("u1"), reason: LeaveReason::Kicked },
        r#"{"type":"participant.left","seq":2,"ts":11,"id":"u1","reason":"kicked"}"#,
    );
    golden(
        ServerFrame::ParticipantUpdated { seq: 3, ts: Timestamp(12), participant: participant() },
        &format!(r#"{{"type":"participant.updated","seq":3,"ts":12,"participant":{PARTICIPANT}}}"#),
    );
    golden(
        ServerFrame::ChatMessage { seq: 5, ts: Timestamp(3000), message: message() },
        &format!(r#"{{"type":"chat.message","seq":5,"ts":3000,"message":{MESSAGE}}}"#),
    );
    let edited = ChatMessage { edited_at: Some(Timestamp(4000)), reply_to: Some("e1-2".into()), ..message() };
    golden(
        ServerFrame::ChatEdited { seq: 6, ts: Timestamp(4000), message: edited },
        r#"{"type":"chat.edited","seq":6,"ts":4000,"message":{"id":"e1-5","seq":5,"from":{"id":"u1","name":"Ada","role":"teacher"},"text":"hi","reply_to":"e1-2","ts":3000,"edited_at":4000}}"#,
    );
    golden(
        ServerFrame::ChatDeleted { seq: 7, ts: Timestamp(5000), id: "e1-5".into() },
        r#"{"type":"chat.deleted","seq":7,"ts":5000,"id":"e1-5"}"#,
    );
    for reason in ["left", "kicked", "expired", "disconnected", "policy"] {
        let _: LeaveReason = serde_json::from_str(&format!("\"{reason}\"")).unwrap();
    }
}

#[test]
fn ephemeral_events_and_notices() {
    golden(ServerFrame::Typing { id: uid("u1"), active: true }, r#"{"type":"typing","id":"u1","active":true}"#);
    golden(
        ServerFrame::Presence { id: uid("u1"), status: Status::Away, last_seen: Timestamp(9) },
        r#"{"type":"presence","id":"u1","status":"away","last_seen":9}"#,
    );
    golden(
        ServerFrame::Reaction { id: uid("u1"), emoji: "👍".into() },
        r#"{"type":"reaction","id":"u1","emoji":"👍"}"#,
    );
    golden(
        ServerFrame::Cursor { id: uid("u1"), line: 3, column: 14 },
        r#"{"type":"cursor","id":"u1","line":3,"column":14}"#,
    );
    golden(ServerFrame::Read { id: uid("u1"), seq: 5 }, r#"{"type":"read","id":"u1","seq":5}"#);
    golden(
        ServerFrame::History { rid: Some("h".into()), messages: vec![message()], has_more: true },
        &format!(r#"{{"type":"history","rid":"h","messages":[{MESSAGE}],"has_more":true}}"#),
    );
    golden(
        ServerFrame::MediaAssigned {
            rid: Some("m".into()),
            node: NodeInfo { id: "n1".into(), region: "eu".into(), url: "http://127.0.0.1:7000".into() },
            token: "jwt".into(),
            expires_at: 99,
        },
        r#"{"type":"media.assigned","rid":"m","node":{"id":"n1","region":"eu","url":"http://127.0.0.1:7000"},"token":"jwt","expires_at":99}"#,
    );
    golden(ServerFrame::MediaMoved { reason: "node lost".into() }, r#"{"type":"media.moved","reason":"node lost"}"#);
    golden(ServerFrame::AuthExpiring { exp: 1800 }, r#"{"type":"auth.expiring","exp":1800}"#);
    golden(ServerFrame::RoomCleared { epoch: "lx2".into() }, r#"{"type":"room.cleared","epoch":"lx2"}"#);
}

/// Parses `text` as a client frame and checks the request and the rid.
fn client(text: &str, rid: Option<&str>, request: ClientRequest) {
    let frame = parse_client_frame(text).unwrap();
    assert_eq!(frame.rid.as_deref(), rid);
    assert_eq!(frame.request, request);
    // And what our own clients send parses back to the same request.
    assert_eq!(parse_client_frame(&frame.to_json()).unwrap(), frame);
}

#[test]
fn every_client_request() {
    client(
        r#"{"type":"chat.send","rid":"1","text":"hi","reply_to":"e1-2"}"#,
        Some("1"),
        ClientRequest::ChatSend { text: "hi".into(), reply_to: Some("e1-2".into()) },
    );
    client(
        r#"{"type":"chat.edit","id":"e1-5","text":"fixed"}"#,
        None,
        ClientRequest::ChatEdit { id: "e1-5".into(), text: "fixed".into() },
    );
    client(r#"{"type":"chat.delete","id":"e1-5"}"#, None, ClientRequest::ChatDelete { id: "e1-5".into() });
    client(r#"{"type":"chat.read","seq":5}"#, None, ClientRequest::ChatRead { seq: 5 });
    client(r#"{"type":"typing","active":true}"#, None, ClientRequest::Typing { active: true });
    client(r#"{"type":"presence","status":"idle"}"#, None, ClientRequest::Presence { status: Status::Idle });
    client(r#"{"type":"hand","raised":true}"#, None, ClientRequest::Hand { raised: true });
    client(r#"{"type":"reaction","emoji":"🎉"}"#, None, ClientRequest::Reaction { emoji: "🎉".into() });
    client(r#"{"type":"cursor","line":1,"column":2}"#, None, ClientRequest::Cursor { line: 1, column: 2 });
    client(
        r#"{"type":"history","before":40,"limit":20}"#,
        None,
        ClientRequest::History { before: Some(40), limit: Some(20) },
    );
    client(r#"{"type":"history"}"#, None, ClientRequest::History { before: None, limit: None });
    client(r#"{"type":"media.join"}"#, None, ClientRequest::MediaJoin { region: None });
    client(r#"{"type":"media.join","region":"eu"}"#, None, ClientRequest::MediaJoin { region: Some("eu".into()) });
    client(
        r#"{"type":"media.state","audio":true,"video":true,"screen":false}"#,
        None,
        ClientRequest::MediaState { audio: true, video: true, screen: false },
    );
    client(r#"{"type":"auth.refresh","token":"t"}"#, None, ClientRequest::AuthRefresh { token: "t".into() });
    client(r#"{"type":"room.clear","rid":"c"}"#, Some("c"), ClientRequest::RoomClear);
    client(r#"{"type":"participant.kick","id":"u2"}"#, None, ClientRequest::ParticipantKick { id: uid("u2") });
    client(
        r#"{"type":"participant.update","id":"u2","role":"teacher","perms":{"chat":false}}"#,
        None,
        ClientRequest::ParticipantUpdate {
            id: uid("u2"),
            role: Some(Role::Teacher),
            perms: Some(PermsPatch { chat: Some(false), ..PermsPatch::default() }),
        },
    );
    client(
        r#"{"type":"participant.mute","id":"u2","kind":"screen","muted":false}"#,
        None,
        ClientRequest::ParticipantMute { id: uid("u2"), kind: MediaKind::Screen, muted: false },
    );
    // Unknown fields are ignored (forward compatibility).
    client(r#"{"type":"typing","active":false,"future":1}"#, None, ClientRequest::Typing { active: false });
}

#[test]
fn node_contract() {
    let hb = NodeHeartbeat {
        id: "n1".into(),
        region: "eu".into(),
        url: "http://127.0.0.1:7000".into(),
        capacity: 500,
        load: 3,
        draining: false,
    };
    assert_eq!(
        serde_json::to_string(&hb).unwrap(),
        r#"{"id":"n1","region":"eu","url":"http://127.0.0.1:7000","capacity":500,"load":3,"draining":false}"#
    );
    assert_eq!(serde_json::to_string(&HeartbeatReply { ttl_ms: 15000 }).unwrap(), r#"{"ttl_ms":15000}"#);
    let mute = ControlCommand::Mute {
        room: "default/math".into(),
        participant: "u2".into(),
        kind: MediaKind::Audio,
        muted: true,
    };
    assert_eq!(
        serde_json::to_string(&mute).unwrap(),
        r#"{"type":"mute","room":"default/math","participant":"u2","kind":"audio","muted":true}"#
    );
    let perms = ControlCommand::Perms {
        room: "default/math".into(),
        participant: "u2".into(),
        perms: MediaPerms { audio: true, video: false, screen: false, subscribe: true },
    };
    let text = serde_json::to_string(&perms).unwrap();
    assert!(
        text.starts_with(r#"{"type":"perms","room":"default/math","participant":"u2","perms":{"audio":true"#),
        "{text}"
    );
    assert_eq!(
        serde_json::to_string(&ControlCommand::CloseRoom { room: "t/r".into() }).unwrap(),
        r#"{"type":"close_room","room":"t/r"}"#
    );
}
