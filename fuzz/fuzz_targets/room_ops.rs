//! Random operation sequences against the room core (through the deterministic simulator): nothing may
//! panic, nothing may be sent to a closed connection (the simulator asserts it), presence must equal the
//! connected users, and raw client frames of any shape must be survivable.
#![no_main]

use arbitrary::Arbitrary;
use homeroom_shared::protocol::{ClientRequest, MediaKind, PermsPatch, Role, Status};
use homeroom_shared::room::config::Limits;
use homeroom_shared::room::sim::Sim;
use homeroom_shared::room::Resume;
use homeroom_shared::UserId;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;

const USERS: [&str; 4] = ["ada", "bob", "cy", "di"];

#[derive(Arbitrary, Debug)]
enum Op {
    Connect { user: u8, role: u8, resume_since: Option<u8>, ttl: u16 },
    Raw { conn: u8, text: String },
    Chat { conn: u8, rid: u8, text: String, reply: bool },
    Edit { conn: u8, seq: u8, text: String },
    Delete { conn: u8, seq: u8 },
    Typing { conn: u8, active: bool },
    Presence { conn: u8, status: u8 },
    Cursor { conn: u8, line: u32 },
    Read { conn: u8, seq: u16 },
    History { conn: u8, before: Option<u16>, limit: u8 },
    Kick { conn: u8, target: u8 },
    Update { conn: u8, target: u8, role: u8, chat: Option<bool> },
    Mute { conn: u8, target: u8, kind: u8, muted: bool },
    Clear { conn: u8 },
    Refresh { conn: u8, garbage: bool },
    Drop { conn: u8 },
    Advance { ms: u32 },
    Hibernate,
}

fn role(n: u8) -> Role {
    match n % 3 {
        0 => Role::Student,
        1 => Role::Teacher,
        _ => Role::Admin,
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut s = Sim::new(Limits { log_limit: 20, history_limit: 10, ..Limits::default() });
    for op in ops.into_iter().take(200) {
        let open = s.open_connections();
        let pick = |n: u8| (!open.is_empty()).then(|| open[n as usize % open.len()].0);
        let epoch = s.room().position().0.to_owned();
        match op {
            Op::Connect { user, role: r, resume_since, ttl } => {
                let mut identity = s.identity(USERS[user as usize % USERS.len()], role(r));
                identity.exp = s.now.as_secs() + u64::from(ttl);
                let resume = resume_since.map(|since| Resume { epoch, since: u64::from(since) });
                let _ = s.connect(&identity, resume);
            }
            Op::Raw { conn, text } => {
                if let Some(c) = pick(conn) {
                    s.say(c, &text);
                }
            }
            Op::Chat { conn, rid, text, reply } => {
                if let Some(c) = pick(conn) {
                    let reply_to = reply.then(|| format!("{epoch}-3"));
                    s.request(c, Some(&format!("r{rid}")), ClientRequest::ChatSend { text, reply_to });
                }
            }
            Op::Edit { conn, seq, text } => {
                if let Some(c) = pick(conn) {
                    s.request(c, Some("e"), ClientRequest::ChatEdit { id: format!("{epoch}-{seq}"), text });
                }
            }
            Op::Delete { conn, seq } => {
                if let Some(c) = pick(conn) {
                    s.request(c, None, ClientRequest::ChatDelete { id: format!("{epoch}-{seq}") });
                }
            }
            Op::Typing { conn, active } => {
                if let Some(c) = pick(conn) {
                    s.request(c, None, ClientRequest::Typing { active });
                }
            }
            Op::Presence { conn, status } => {
                if let Some(c) = pick(conn) {
                    let status = [Status::Active, Status::Idle, Status::Away][status as usize % 3];
                    s.request(c, None, ClientRequest::Presence { status });
                }
            }
            Op::Cursor { conn, line } => {
                if let Some(c) = pick(conn) {
                    s.request(c, None, ClientRequest::Cursor { line, column: 1 });
                }
            }
            Op::Read { conn, seq } => {
                if let Some(c) = pick(conn) {
                    s.request(c, None, ClientRequest::ChatRead { seq: u64::from(seq) });
                }
            }
            Op::History { conn, before, limit } => {
                if let Some(c) = pick(conn) {
                    let before = before.map(u64::from);
                    s.request(c, Some("h"), ClientRequest::History { before, limit: Some(u32::from(limit)) });
                }
            }
            Op::Kick { conn, target } => {
                if let Some(c) = pick(conn) {
                    let id = UserId::parse(USERS[target as usize % USERS.len()]).unwrap();
                    s.request(c, Some("k"), ClientRequest::ParticipantKick { id });
                }
            }
            Op::Update { conn, target, role: r, chat } => {
                if let Some(c) = pick(conn) {
                    let id = UserId::parse(USERS[target as usize % USERS.len()]).unwrap();
                    let perms = chat.map(|chat| PermsPatch { chat: Some(chat), ..PermsPatch::default() });
                    s.request(c, Some("u"), ClientRequest::ParticipantUpdate { id, role: Some(role(r)), perms });
                }
            }
            Op::Mute { conn, target, kind, muted } => {
                if let Some(c) = pick(conn) {
                    let id = UserId::parse(USERS[target as usize % USERS.len()]).unwrap();
                    let kind = [MediaKind::Audio, MediaKind::Video, MediaKind::Screen][kind as usize % 3];
                    s.request(c, Some("m"), ClientRequest::ParticipantMute { id, kind, muted });
                }
            }
            Op::Clear { conn } => {
                if let Some(c) = pick(conn) {
                    s.request(c, Some("c"), ClientRequest::RoomClear);
                }
            }
            Op::Refresh { conn, garbage } => {
                if let Some(c) = pick(conn) {
                    let user = open.iter().find(|(id, _)| *id == c).map(|(_, u)| u.clone()).unwrap();
                    let identity = s.identity(user.as_str(), Role::Student);
                    let token =
                        if garbage { "x.y.z".to_owned() } else { s.token_for(&identity, s.now.as_secs() + 3600) };
                    s.request(c, Some("a"), ClientRequest::AuthRefresh { token });
                }
            }
            Op::Drop { conn } => {
                if let Some(c) = pick(conn) {
                    s.drop_conn(c);
                }
            }
            Op::Advance { ms } => s.advance(u64::from(ms % 3_600_000)),
            Op::Hibernate => s.hibernate(),
        }
        let connected: BTreeSet<UserId> = s.open_connections().into_iter().map(|(_, u)| u).collect();
        let present: BTreeSet<UserId> = s.room().participants().into_iter().map(|p| p.id).collect();
        assert_eq!(connected, present, "presence must equal the connected users");
        for conn in s.known_connections() {
            s.take_text(conn);
        }
    }
});
