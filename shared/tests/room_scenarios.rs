//! Scenario tests of the room core on a fake clock (no IO): one test per behaviour of the contract.

use homeroom_shared::protocol::{
    close, ClientRequest as Req, ErrorCode, LeaveReason, MediaKind, PermsPatch, Role, ServerFrame as F, Status,
};
use homeroom_shared::room::config::{Limits, SettingsPatch};
use homeroom_shared::room::sim::Sim;
use homeroom_shared::room::store::RoomStore;
use homeroom_shared::room::Resume;
use homeroom_shared::{ConnId, UserId};

fn sim() -> Sim {
    Sim::new(Limits::default())
}

fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn send(s: &mut Sim, c: ConnId, rid: &str, text: &str) {
    s.request(c, Some(rid), Req::ChatSend { text: text.into(), reply_to: None });
}

/// Sends `n` messages at a pace the rate limit allows.
fn send_many(s: &mut Sim, c: ConnId, n: usize) {
    for i in 0..n {
        s.advance(100);
        send(s, c, &format!("bulk{i}"), &format!("m{i}"));
    }
}

fn welcome(frames: &[F]) -> &homeroom_shared::protocol::Welcome {
    match frames.first() {
        Some(F::Welcome(w)) => w,
        other => panic!("expected welcome first, got {other:?}"),
    }
}

fn error_code(frames: &[F]) -> Option<ErrorCode> {
    frames.iter().find_map(|f| match f {
        F::Error(e) => Some(e.code),
        _ => None,
    })
}

fn ack(frames: &[F]) -> &homeroom_shared::protocol::Ack {
    frames
        .iter()
        .find_map(|f| match f {
            F::Ack(a) => Some(a),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no ack in {frames:?}"))
}

#[test]
fn two_users_see_each_other_with_full_objects_and_roles() {
    let mut s = sim();
    let t = s.join("teacher", Role::Teacher);
    let w = s.take(t);
    let w = welcome(&w);
    assert_eq!(w.protocol, 1);
    assert_eq!(w.room, "room");
    assert!(!w.resumed);
    assert_eq!(w.you.role, Role::Teacher);
    assert_eq!(w.participants.len(), 1);
    assert_eq!(w.seq, 1, "the teacher's own join is seq 1 and covered by its welcome");

    let st = s.join("student", Role::Student);
    let frames = s.take(st);
    let w = welcome(&frames);
    assert_eq!(w.participants.len(), 2);
    let teacher = w.participants.iter().find(|p| p.id.as_str() == "teacher").unwrap();
    assert_eq!(teacher.role, Role::Teacher);
    assert!(teacher.perms.moderate);
    assert_eq!(w.you.role, Role::Student);
    assert!(!w.you.perms.moderate && !w.you.perms.screen_share && w.you.perms.chat);

    let frames = s.take(t);
    match frames.as_slice() {
        [F::ParticipantJoined { seq: 2, participant, .. }] => {
            assert_eq!(participant.id.as_str(), "student");
            assert_eq!(participant.role, Role::Student);
            assert_eq!(participant.name, "student name");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn chat_acks_with_seq_and_id_and_a_resent_rid_creates_no_duplicate() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    let b = s.join("b", Role::Student);
    s.take(a);
    s.take(b);
    send(&mut s, a, "r1", "hello");
    let fa = s.take(a);
    let first = ack(&fa).clone();
    assert_eq!(first.seq, Some(3));
    let id = first.id.clone().unwrap();
    let fb = s.take(b);
    assert!(matches!(&fb[..], [F::ChatMessage { message, .. }] if message.text == "hello" && message.id == id));

    send(&mut s, a, "r1", "hello");
    let again = s.take(a);
    assert_eq!(again.len(), 1, "only the ack: {again:?}");
    assert_eq!(*ack(&again), first);
    assert!(s.take(b).is_empty(), "no second message");

    // The same rid from a new connection of the same user is still the same request.
    let a2 = s.join("a", Role::Student);
    s.take(a2);
    send(&mut s, a2, "r1", "hello");
    assert_eq!(*ack(&s.take(a2)), first);
    // Another user's r1 is its own request.
    send(&mut s, b, "r1", "mine");
    assert_eq!(ack(&s.take(b)).seq, Some(4));
}

#[test]
fn replies_edits_and_deletes_follow_ownership() {
    let mut s = sim();
    let t = s.join("t", Role::Teacher);
    let a = s.join("a", Role::Student);
    let b = s.join("b", Role::Student);
    send(&mut s, a, "1", "question");
    let id = ack(&s.take(a)).id.clone().unwrap();
    s.request(b, Some("2"), Req::ChatSend { text: "answer".into(), reply_to: Some(id.clone()) });
    let fb = s.take(b);
    assert!(ack(&fb).seq.is_some());
    s.request(b, Some("3"), Req::ChatSend { text: "x".into(), reply_to: Some("nope".into()) });
    assert_eq!(error_code(&s.take(b)), Some(ErrorCode::NotFound));

    s.request(b, Some("4"), Req::ChatEdit { id: id.clone(), text: "hijack".into() });
    assert_eq!(error_code(&s.take(b)), Some(ErrorCode::Forbidden));
    s.request(a, Some("5"), Req::ChatEdit { id: id.clone(), text: "better question".into() });
    let fa = s.take(a);
    assert!(fa.iter().any(|f| matches!(f, F::ChatEdited { message, .. }
        if message.text == "better question" && message.edited_at.is_some())));
    s.request(t, Some("6"), Req::ChatDelete { id: id.clone() });
    let ft = s.take(t);
    assert!(ft.iter().any(|f| matches!(f, F::ChatDeleted { id: d, .. } if *d == id)));
    s.request(a, Some("7"), Req::ChatEdit { id, text: "gone?".into() });
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::NotFound));

    // A moderator acts on messages of roles up to its own: a teacher cannot rewrite an admin's announcement.
    let announced = s.admin(|room, now| room.announce("exam moved to Friday", "Office", now)).unwrap();
    s.take(t);
    s.request(t, Some("8"), Req::ChatEdit { id: announced.id.clone(), text: "exam cancelled".into() });
    assert_eq!(error_code(&s.take(t)), Some(ErrorCode::Forbidden));
    s.request(t, Some("9"), Req::ChatDelete { id: announced.id.clone() });
    assert_eq!(error_code(&s.take(t)), Some(ErrorCode::Forbidden));
    let (page, _) = s.room().history(None, None).unwrap();
    assert!(page.iter().any(|m| m.id == announced.id && m.text == "exam moved to Friday"));
}

#[test]
fn a_lowered_history_limit_applies_at_once() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    send_many(&mut s, a, 25);
    s.take(a);
    let patch = SettingsPatch { history_limit: Some(Some(10)), ..SettingsPatch::default() };
    s.admin(|room, _| room.update_settings(&patch)).unwrap();
    let (page, more) = s.room().history(None, Some(100)).unwrap();
    assert_eq!((page.len(), more), (10, false), "only the newest 10 are kept");
}

#[test]
fn a_new_tabs_token_grant_is_stored_even_when_moderation_hides_the_difference() {
    let mut s = sim();
    let t = s.join("t", Role::Teacher);
    s.join("a", Role::Student);
    s.request(t, Some("p"), Req::ParticipantUpdate { id: uid("a"), role: Some(Role::Teacher), perms: None });
    assert!(ack(&s.take(t)).seq.is_some());
    // A new tab whose token says admin: the role in force stays the teacher's decision, so nothing visible
    // changes; the grant later moderation is computed on must still be the new token's.
    let admin_token = s.identity("a", Role::Admin);
    s.connect(&admin_token, None).unwrap();
    let stored = s.room().store().participants().unwrap();
    let a = stored.iter().find(|r| r.participant.id == uid("a")).expect("a is stored");
    assert_eq!(a.participant.role, Role::Teacher, "the decision in force");
    assert_eq!(a.grant.role, Role::Admin, "the newest token's grant, stored");
}

#[test]
fn history_turned_off_keeps_nothing_readable_or_editable() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    send_many(&mut s, a, 5);
    s.take(a);
    let kept = s.room().history(None, None).unwrap().0;
    assert_eq!(kept.len(), 5);
    let patch = SettingsPatch { persist_messages: Some(Some(false)), ..SettingsPatch::default() };
    s.admin(|room, _| room.update_settings(&patch)).unwrap();
    assert!(s.room().history(None, Some(100)).unwrap().0.is_empty(), "the messages kept so far are gone");
    s.request(a, Some("e"), Req::ChatEdit { id: kept[0].id.clone(), text: "rewritten".into() });
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::NotFound), "nothing left to edit");
}

#[test]
fn history_pages_backwards_and_respects_persistence() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    send_many(&mut s, a, 25);
    s.take(a);
    s.request(a, Some("h"), Req::History { before: None, limit: Some(10) });
    let (page, more) = match &s.take(a)[..] {
        [F::History { rid, messages, has_more }] => {
            assert_eq!(rid.as_deref(), Some("h"));
            (messages.clone(), *has_more)
        }
        other => panic!("{other:?}"),
    };
    assert!(more);
    assert_eq!(page.first().unwrap().text, "m15");
    assert_eq!(page.last().unwrap().text, "m24");
    s.request(a, None, Req::History { before: Some(page[0].seq), limit: Some(100) });
    match &s.take(a)[..] {
        [F::History { messages, has_more: false, .. }] => {
            assert_eq!(messages.len(), 15);
            assert_eq!(messages[0].text, "m0");
        }
        other => panic!("{other:?}"),
    }
    s.request(a, Some("bad"), Req::History { before: None, limit: Some(0) });
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::BadRequest));

    // A late joiner's welcome carries recent history, and says whether there is more.
    let b = s.join("b", Role::Student);
    let fb = s.take(b);
    assert_eq!(welcome(&fb).history.len(), 25);
    assert!(!welcome(&fb).history_more);
    let mut small = Sim::new(Limits { welcome_history: 10, ..Limits::default() });
    let a = small.join("a", Role::Student);
    send_many(&mut small, a, 11);
    let c = small.join("c", Role::Student);
    let fc = small.take(c);
    assert_eq!((welcome(&fc).history.len(), welcome(&fc).history_more), (10, true));

    // With persistence off, nothing is kept.
    let mut s = Sim::new(Limits { persist_messages: false, ..Limits::default() });
    let a = s.join("a", Role::Student);
    send(&mut s, a, "r", "ephemeral");
    assert!(ack(&s.take(a)).seq.is_some());
    let b = s.join("b", Role::Student);
    let fb = s.take(b);
    assert!(welcome(&fb).history.is_empty());
    assert!(!welcome(&fb).config.persist_messages);
}

#[test]
fn history_limit_bounds_what_is_kept() {
    let mut s = Sim::new(Limits { history_limit: 10, ..Limits::default() });
    let a = s.join("a", Role::Student);
    send_many(&mut s, a, 200);
    s.request(a, None, Req::History { before: None, limit: Some(100) });
    let frames = s.take(a);
    let Some(F::History { messages, .. }) = frames.last() else { panic!() };
    assert!(messages.len() <= 10 + 64, "trimmed in batches of 64 events: {}", messages.len());
}

#[test]
fn read_receipts_are_ephemeral_and_kept_in_the_snapshot() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    let b = s.join("b", Role::Student);
    send(&mut s, a, "1", "hi");
    let seq = ack(&s.take(a)).seq.unwrap();
    s.take(b);
    s.request(b, None, Req::ChatRead { seq });
    assert!(matches!(&s.take(a)[..], [F::Read { id, seq: r }] if id.as_str() == "b" && *r == seq));
    s.request(b, Some("x"), Req::ChatRead { seq: seq + 100 });
    assert_eq!(error_code(&s.take(b)), Some(ErrorCode::BadRequest));
    let c = s.join("c", Role::Student);
    let fc = s.take(c);
    let w = welcome(&fc);
    assert_eq!(w.participants.iter().find(|p| p.id.as_str() == "b").unwrap().last_read, seq);
}

#[test]
fn resume_replays_exactly_the_missed_events() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    let b = s.join("b", Role::Student);
    send(&mut s, b, "0", "before");
    let fb = s.take(b);
    let (epoch, seen) = {
        let w = welcome(&fb);
        (w.epoch.clone(), fb.iter().filter_map(F::seq).max().unwrap())
    };
    s.drop_conn(b);
    send(&mut s, a, "1", "missed one");
    send(&mut s, a, "2", "missed two");
    s.take(a);
    let identity = s.identity("b", Role::Student);
    let b2 = s.connect(&identity, Some(Resume { epoch: epoch.clone(), since: seen })).unwrap();
    let frames = s.take(b2);
    let w = welcome(&frames);
    assert!(w.resumed);
    assert!(w.history.is_empty());
    let replayed: Vec<u64> = frames.iter().filter_map(F::seq).collect();
    assert_eq!(replayed, ((seen + 1)..=w.seq).collect::<Vec<_>>());
    let texts: Vec<&str> = frames
        .iter()
        .filter_map(|f| match f {
            F::ChatMessage { message, .. } => Some(message.text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["missed one", "missed two"]);
    assert!(frames
        .iter()
        .any(|f| matches!(f, F::ParticipantLeft { id, reason: LeaveReason::Left, .. } if id.as_str() == "b")));

    // Wrong epoch: a fresh snapshot.
    let b3 = s.connect(&identity, Some(Resume { epoch: "old".into(), since: 1 })).unwrap();
    let frames = s.take(b3);
    assert!(!welcome(&frames).resumed);
    assert_eq!(welcome(&frames).history.len(), 3);
    assert_eq!(frames.len(), 1);
}

#[test]
fn resume_after_the_log_was_trimmed_falls_back_to_a_snapshot() {
    let mut s = Sim::new(Limits { log_limit: 10, ..Limits::default() });
    let a = s.join("a", Role::Student);
    let b = s.join("b", Role::Student);
    let epoch = welcome(&s.take(b)).epoch.clone();
    s.drop_conn(b);
    send_many(&mut s, a, 130);
    let identity = s.identity("b", Role::Student);
    let b2 = s.connect(&identity, Some(Resume { epoch, since: 2 })).unwrap();
    let frames = s.take(b2);
    assert!(!welcome(&frames).resumed);
    assert_eq!(frames.len(), 1);
}

#[test]
fn one_participant_per_user_across_tabs() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    let tab1 = s.join("b", Role::Student);
    let tab2 = s.join("b", Role::Student);
    let fa = s.take(a);
    assert_eq!(fa.iter().filter(|f| matches!(f, F::ParticipantJoined { .. })).count(), 1);
    assert_eq!(welcome(&s.take(tab2)).participants.len(), 2);
    s.take(tab1);
    s.drop_conn(tab1);
    assert!(s.take(a).is_empty());
    s.drop_conn(tab2);
    assert!(matches!(&s.take(a)[..], [F::ParticipantLeft { reason: LeaveReason::Left, .. }]));
    assert_eq!(s.room().participants().len(), 1);
}

#[test]
fn typing_expires_server_side_and_stops_on_send() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    let b = s.join("b", Role::Student);
    s.take(b);
    s.request(a, None, Req::Typing { active: true });
    assert!(matches!(&s.take(b)[..], [F::Typing { active: true, .. }]));
    s.advance(3000);
    s.request(a, None, Req::Typing { active: true });
    assert!(s.take(b).is_empty(), "a refresh is not re-broadcast");
    s.advance(4999);
    assert!(s.take(b).is_empty());
    s.advance(1);
    assert!(matches!(&s.take(b)[..], [F::Typing { active: false, .. }]));

    s.request(a, None, Req::Typing { active: true });
    send(&mut s, a, "m", "done typing");
    let fb = s.take(b);
    assert!(matches!(
        &fb[..],
        [F::Typing { active: true, .. }, F::ChatMessage { .. }, F::Typing { active: false, .. }]
    ));
}

#[test]
fn a_typist_is_not_told_its_own_typing_stopped() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    let b = s.join("b", Role::Student);
    s.take(a);
    s.take(b);
    s.request(a, None, Req::Typing { active: true });
    s.request(a, None, Req::Typing { active: false });
    assert!(s.take(a).is_empty(), "neither start nor stop is echoed to the connection that sent it");
    assert!(matches!(&s.take(b)[..], [F::Typing { active: true, .. }, F::Typing { active: false, .. }]));
}

#[test]
fn presence_hand_reactions_and_auto_idle() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    let b = s.join("b", Role::Student);
    s.take(b);
    s.request(a, None, Req::Presence { status: Status::Away });
    assert!(matches!(&s.take(b)[..], [F::Presence { status: Status::Away, .. }]));
    s.request(a, Some("h"), Req::Hand { raised: true });
    assert!(matches!(&s.take(b)[..], [F::ParticipantUpdated { participant, .. }] if participant.hand_raised));
    s.request(a, Some("r"), Req::Reaction { emoji: "👍".into() });
    assert!(matches!(&s.take(b)[..], [F::Reaction { emoji, .. }] if emoji == "👍"));
    s.request(a, Some("r2"), Req::Reaction { emoji: "x".repeat(17) });
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::BadRequest));

    // b goes quiet: after idle_after it is shown idle; its next frame brings it back.
    s.request(a, None, Req::Presence { status: Status::Active });
    s.take(a);
    s.advance(s.limits.idle_after_ms + 1000);
    let fa = s.take(a);
    assert!(fa.iter().any(|f| matches!(f, F::Presence { id, status: Status::Idle, .. } if id.as_str() == "b")));
    s.request(b, None, Req::Typing { active: false });
    assert!(s
        .take(a)
        .iter()
        .any(|f| matches!(f, F::Presence { id, status: Status::Active, .. } if id.as_str() == "b")));
}

#[test]
fn cursor_updates_are_throttled_with_the_latest_sent_last() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    let b = s.join("b", Role::Student);
    s.take(a);
    s.take(b);
    for i in 0..5 {
        s.request(a, None, Req::Cursor { line: i, column: 1 });
    }
    assert!(matches!(&s.take(b)[..], [F::Cursor { line: 0, .. }]));
    s.advance(s.limits.cursor_interval_ms);
    assert!(matches!(&s.take(b)[..], [F::Cursor { line: 4, .. }]));
    assert!(s.take(a).is_empty(), "the sender does not get its own cursor");
}

#[test]
fn clear_wipes_everything_and_closes_with_4004() {
    let mut s = sim();
    let t = s.join("t", Role::Teacher);
    let a = s.join("a", Role::Student);
    send(&mut s, a, "1", "old");
    let old_epoch = welcome(&s.take(t)).epoch.clone();
    s.request(a, Some("c"), Req::RoomClear);
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::Forbidden));
    s.request(t, Some("c"), Req::RoomClear);
    let ft = s.take(t);
    assert!(matches!(&ft[..], [F::Ack(_), F::RoomCleared { .. }]));
    let F::RoomCleared { epoch } = &ft[1] else { panic!() };
    assert_ne!(*epoch, old_epoch);
    assert!(matches!(s.take(a).last(), Some(F::RoomCleared { .. })));
    assert_eq!(s.closed.get(&t).unwrap().0, close::ROOM_CLEARED);
    assert_eq!(s.closed.get(&a).unwrap().0, close::ROOM_CLEARED);
    let b = s.join("a", Role::Student);
    let fb = s.take(b);
    let w = welcome(&fb);
    assert!(w.history.is_empty());
    assert_eq!(w.seq, 1);
    assert_eq!(w.epoch, *epoch);
}

#[test]
fn a_user_reconnecting_in_a_loop_is_refused_until_it_slows_down() {
    let mut s = sim();
    let t = s.join("t", Role::Teacher);
    let looper = s.identity("looper", Role::Student);
    let burst = s.limits.join_burst;
    for _ in 0..burst {
        s.admin(|room, now| room.check_admission(&looper, now)).expect("a check is not a connect");
        let c = s.connect(&looper, None).expect("within the burst");
        s.drop_conn(c);
    }
    s.take(t);
    let err = s.connect(&looper, None).unwrap_err();
    assert_eq!(err.code, ErrorCode::RateLimited, "{err:?}");
    assert_eq!(err.retry_after, Some(u64::from(s.limits.join_refill_secs)), "{err:?}");
    assert!(err.message.contains("back off"), "{}", err.message);
    assert!(s.take(t).is_empty(), "a refused connect costs the room nothing");
    let other = s.identity("someone-else", Role::Student);
    assert!(s.connect(&other, None).is_ok(), "the limit is per user");
    s.advance(u64::from(s.limits.join_refill_secs) * 1000);
    assert!(s.connect(&looper, None).is_ok(), "one more after the refill");
}

#[test]
fn a_moderator_cannot_clear_a_room_while_someone_above_it_is_in_it() {
    let mut s = sim();
    let t = s.join("t", Role::Teacher);
    let adm = s.join("adm", Role::Admin);
    s.take(t);
    s.request(t, Some("c"), Req::RoomClear);
    let ft = s.take(t);
    assert_eq!(error_code(&ft), Some(ErrorCode::Forbidden), "{ft:?}");
    assert!(s.closed.is_empty(), "nobody was closed");
    s.drop_conn(adm);
    s.take(t);
    s.request(t, Some("c2"), Req::RoomClear);
    assert!(matches!(&s.take(t)[..], [F::Ack(_), F::RoomCleared { .. }]), "the admin left: the teacher may clear");
}

#[test]
fn a_moderators_clear_keeps_every_moderation_decision() {
    let mut s = sim();
    let t = s.join("t", Role::Teacher);
    let t2 = s.join("t2", Role::Teacher);
    s.join("a", Role::Student);
    s.join("b", Role::Student);
    s.request(t, Some("k"), Req::ParticipantKick { id: uid("a") });
    s.request(t, Some("mute"), Req::ParticipantMute { id: uid("t2"), kind: MediaKind::Audio, muted: true });
    s.request(
        t,
        Some("g"),
        Req::ParticipantUpdate {
            id: uid("b"),
            role: None,
            perms: Some(PermsPatch { chat: Some(false), ..PermsPatch::default() }),
        },
    );
    s.take(t2);
    // The muted teacher clears the room: the clear is not a way out of the mute, nor a way back in for `a`.
    s.request(t2, Some("c"), Req::RoomClear);
    assert!(matches!(&s.take(t2)[..], [F::Ack(_), F::RoomCleared { .. }]));
    let t2 = s.join("t2", Role::Teacher);
    assert!(welcome(&s.take(t2)).you.muted.audio, "its own mute outlives its clear");
    let banned = s.identity("a", Role::Student);
    let err = s.connect(&banned, None).unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden, "the kick's ban outlives the clear");
    let b = s.join("b", Role::Student);
    assert!(!welcome(&s.take(b)).you.perms.chat, "so does the restriction on b");
    // The admin API's clear wipes every decision.
    s.admin(|room, now| room.clear(now)).unwrap();
    assert!(s.connect(&banned, None).is_ok(), "the admin's clear lifts the ban");
    let t2 = s.join("t2", Role::Teacher);
    assert!(!welcome(&s.take(t2)).you.muted.audio);
}

#[test]
fn a_demotion_outlives_a_teachers_clear() {
    let mut s = sim();
    let t = s.join("t", Role::Teacher);
    let boss = s.join("boss", Role::Admin);
    s.join("adm", Role::Admin);
    s.request(boss, Some("d"), Req::ParticipantUpdate { id: uid("adm"), role: Some(Role::Student), perms: None });
    s.drop_conn(boss);
    s.take(t);
    // The demoted admin is a student now, which a teacher may act on; wiping the demotion would give it back
    // an admin's powers, which no teacher can grant: the clear keeps it.
    s.request(t, Some("c"), Req::RoomClear);
    assert!(matches!(&s.take(t)[..], [F::Ack(_), F::RoomCleared { .. }]));
    let adm = s.join("adm", Role::Admin);
    let w = s.take(adm);
    assert_eq!(welcome(&w).you.role, Role::Student, "the demotion outlived the clear");
}

#[test]
fn a_teacher_cannot_lift_what_an_admin_decided_about_another_teacher() {
    let mut s = sim();
    let boss = s.join("boss", Role::Admin);
    let t2 = s.join("t2", Role::Teacher);
    s.join("t1", Role::Teacher);
    let mute = |muted| Req::ParticipantMute { id: uid("t1"), kind: MediaKind::Audio, muted };
    s.request(boss, Some("m"), mute(true));
    let restrict = PermsPatch { chat: Some(false), ..PermsPatch::default() };
    s.request(boss, Some("p"), Req::ParticipantUpdate { id: uid("t1"), role: None, perms: Some(restrict) });
    s.take(boss);
    s.take(t2);

    s.request(t2, Some("u"), mute(false));
    let refused = s.take(t2);
    assert_eq!(error_code(&refused), Some(ErrorCode::Forbidden), "the admin's mute stands: {refused:?}");
    let grant = PermsPatch { chat: Some(true), ..PermsPatch::default() };
    s.request(t2, Some("g"), Req::ParticipantUpdate { id: uid("t1"), role: None, perms: Some(grant) });
    assert_eq!(error_code(&s.take(t2)), Some(ErrorCode::Forbidden), "so does its restriction");
    s.request(t2, Some("v"), Req::ParticipantMute { id: uid("t1"), kind: MediaKind::Video, muted: true });
    assert!(ack(&s.take(t2)).seq.is_some(), "adding to the decisions is still a teacher's to do");

    // The admin lifts everything; from then on the teachers' own decisions are theirs to lift.
    s.request(boss, Some("u"), mute(false));
    s.request(boss, Some("uv"), Req::ParticipantMute { id: uid("t1"), kind: MediaKind::Video, muted: false });
    let clear = PermsPatch { chat: Some(true), ..PermsPatch::default() };
    s.request(boss, Some("g"), Req::ParticipantUpdate { id: uid("t1"), role: None, perms: Some(clear) });
    s.take(boss);
    s.request(t2, Some("m2"), mute(true));
    s.request(t2, Some("u2"), mute(false));
    let frames = s.take(t2);
    assert_eq!(error_code(&frames), None, "a teacher lifts a teacher's decision: {frames:?}");

    // A demotion stops restricting once the participant's own token grants no more (it refreshed to a
    // student's token): the admin's authority is no longer needed to lift a teacher's later mute.
    s.request(boss, Some("d2"), Req::ParticipantUpdate { id: uid("t1"), role: Some(Role::Student), perms: None });
    s.take(boss);
    let t1 = s.open_connections().into_iter().find(|(_, u)| *u == uid("t1")).map(|(c, _)| c).unwrap();
    let student_grant = s.identity("t1", Role::Student);
    let token = s.token_for(&student_grant, s.now.as_secs() + 3600);
    s.request(t1, Some("r"), Req::AuthRefresh { token });
    s.request(t2, Some("m4"), Req::ParticipantMute { id: uid("t1"), kind: MediaKind::Audio, muted: true });
    s.request(t2, Some("u4"), Req::ParticipantMute { id: uid("t1"), kind: MediaKind::Audio, muted: false });
    let frames = s.take(t2);
    assert_eq!(error_code(&frames), None, "after the refresh nothing of the admin's restricts t1: {frames:?}");
    s.request(boss, Some("d3"), Req::ParticipantUpdate { id: uid("t1"), role: Some(Role::Teacher), perms: None });
    s.take(boss);

    // An admin's promotion restricts nothing: a teacher may lift its own mute of the promoted student, and a
    // demotion the admin undid is no decision in force either.
    s.join("s", Role::Student);
    s.request(boss, Some("up"), Req::ParticipantUpdate { id: uid("s"), role: Some(Role::Teacher), perms: None });
    s.request(boss, Some("down"), Req::ParticipantUpdate { id: uid("t1"), role: Some(Role::Student), perms: None });
    s.request(boss, Some("back"), Req::ParticipantUpdate { id: uid("t1"), role: Some(Role::Teacher), perms: None });
    s.take(boss);
    for id in ["s", "t1"] {
        let mute = |muted| Req::ParticipantMute { id: uid(id), kind: MediaKind::Audio, muted };
        s.request(t2, Some(&format!("m3-{id}")), mute(true));
        s.request(t2, Some(&format!("u3-{id}")), mute(false));
        let frames = s.take(t2);
        assert_eq!(frames.iter().filter(|f| matches!(f, F::Ack(_))).count(), 2, "{id}: both acked: {frames:?}");
        assert_eq!(error_code(&frames), None, "{id}: the admin's decisions restrict nothing now: {frames:?}");
    }
}

#[test]
fn a_clear_that_storage_refuses_is_not_acked_and_closes_nobody() {
    let mut s = sim();
    let t = s.join("t", Role::Teacher);
    let a = s.join("a", Role::Student);
    s.take(t);
    s.take(a);
    s.admin(|room, _| room.store_mut().fail_writes = true);
    s.request(t, Some("c"), Req::RoomClear);
    let ft = s.take(t);
    assert!(!ft.iter().any(|f| matches!(f, F::Ack(_))), "no ack for a clear that did not happen: {ft:?}");
    assert_eq!(error_code(&ft), Some(ErrorCode::Internal));
    assert!(s.closed.is_empty(), "nobody was closed");
    assert!(!s.take(a).iter().any(|f| matches!(f, F::RoomCleared { .. })));
    assert!(s.room().is_poisoned(), "the adapter will rebuild the room from storage");
}

#[test]
fn a_message_sent_before_storage_failed_is_acked_once_and_the_room_rebuilt() {
    // A typing student sends a message: the message is stored, logged and sent (three writes), then ending
    // the typing fails. The request has succeeded: it is acked with its seq (failing it would let a retry
    // with the same rid log the message twice), and the room is poisoned so the adapter rebuilds it.
    let mut s = sim();
    let t = s.join("t", Role::Teacher);
    let a = s.join("a", Role::Student);
    s.request(a, Some("ty"), Req::Typing { active: true });
    s.take(a);
    s.take(t);
    s.admin(|room, _| room.store_mut().fail_after_writes = Some(3));
    send(&mut s, a, "m1", "hello");
    let fa = s.take(a);
    let acked: Vec<_> = fa.iter().filter(|f| matches!(f, F::Ack(ack) if ack.seq.is_some())).collect();
    assert_eq!(acked.len(), 1, "acked once, with its seq: {fa:?}");
    assert_eq!(error_code(&fa), None, "no error for a message everyone received: {fa:?}");
    assert!(s.take(t).iter().any(|f| matches!(f, F::ChatMessage { message, .. } if message.text == "hello")));
    assert!(s.room().is_poisoned(), "the failed typing write drops the room's cache");
}

#[test]
fn a_wipe_that_storage_refused_is_rescheduled_by_rebuilding_the_room() {
    // The idle wipe runs from the alarm. Its write fails: the timer is spent and the room poisoned, so the
    // adapter drops it. `RoomObject::alarm` then wakes the object again 2 s later, which rebuilds the room
    // from storage — and the rebuilt room has the wipe's deadline back, instead of never being wiped.
    let mut s = sim();
    let a = s.join("a", Role::Student);
    send(&mut s, a, "1", "remember me");
    s.drop_conn(a);
    s.admin(|room, _| room.store_mut().fail_writes = true);
    s.advance(s.limits.idle_room_ttl_ms);
    assert!(s.room().is_poisoned());
    assert_eq!(s.room().next_deadline(), None, "the failed wipe's timer is spent");
    s.admin(|room, _| room.store_mut().fail_writes = false);
    s.hibernate();
    assert!(s.room().next_deadline().is_some(), "the rebuilt room has the wipe to do");
    s.advance(1);
    let b = s.join("b", Role::Student);
    assert!(welcome(&s.take(b)).history.is_empty(), "wiped on the next wake");
}

#[test]
fn kick_closes_4003_and_keeps_the_user_out_for_a_while() {
    let mut s = sim();
    let t = s.join("t", Role::Teacher);
    let a = s.join("a", Role::Student);
    let a2 = s.join("a", Role::Student);
    s.request(a, Some("k"), Req::ParticipantKick { id: uid("t") });
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::Forbidden));
    s.take(t);
    s.request(t, Some("k"), Req::ParticipantKick { id: uid("a") });
    let ft = s.take(t);
    assert!(ft.iter().any(|f| matches!(f, F::ParticipantLeft { reason: LeaveReason::Kicked, .. })));
    assert!(ack(&ft).seq.is_some());
    assert_eq!(s.closed.get(&a).unwrap().0, close::KICKED);
    assert_eq!(s.closed.get(&a2).unwrap().0, close::KICKED);
    let identity = s.identity("a", Role::Student);
    let err = s.connect(&identity, None).unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden);
    assert!(err.message.contains("removed"), "{}", err.message);
    s.advance(s.limits.kick_ban_ms);
    assert!(s.connect(&identity, None).is_ok());
    s.request(t, Some("self"), Req::ParticipantKick { id: uid("t") });
    assert_eq!(error_code(&s.take(t)), Some(ErrorCode::BadRequest));
}

#[test]
fn moderators_change_roles_and_perms_within_their_authority() {
    let mut s = sim();
    let t = s.join("t", Role::Teacher);
    let a = s.join("a", Role::Student);
    let adm = s.join("adm", Role::Admin);
    s.take(a);
    s.request(
        t,
        Some("u"),
        Req::ParticipantUpdate {
            id: uid("a"),
            role: None,
            perms: Some(PermsPatch { chat: Some(false), ..PermsPatch::default() }),
        },
    );
    assert!(s
        .take(a)
        .iter()
        .any(|f| matches!(f, F::ParticipantUpdated { participant, .. } if !participant.perms.chat)));
    send(&mut s, a, "m", "can I talk?");
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::Forbidden));
    // The decision survives a reconnect.
    s.drop_conn(a);
    let a = s.join("a", Role::Student);
    assert!(!welcome(&s.take(a)).you.perms.chat);

    s.request(t, Some("g"), Req::ParticipantUpdate { id: uid("a"), role: Some(Role::Admin), perms: None });
    assert_eq!(error_code(&s.take(t)), Some(ErrorCode::Forbidden));
    s.request(t, Some("k"), Req::ParticipantKick { id: uid("adm") });
    assert_eq!(error_code(&s.take(t)), Some(ErrorCode::Forbidden));
    s.request(t, Some("p"), Req::ParticipantUpdate { id: uid("a"), role: Some(Role::Teacher), perms: None });
    let ft = s.take(t);
    assert!(ft.iter().any(|f| matches!(f, F::ParticipantUpdated { participant, .. }
        if participant.role == Role::Teacher && participant.perms.screen_share)));
    s.request(t, Some("n"), Req::ParticipantUpdate { id: uid("nobody"), role: Some(Role::Student), perms: None });
    assert_eq!(error_code(&s.take(t)), Some(ErrorCode::NotFound));
    let _ = adm;
}

#[test]
fn a_mute_that_changes_nothing_acks_no_event() {
    let mut s = sim();
    let t = s.join("t", Role::Teacher);
    s.join("a", Role::Student);
    s.take(t);
    s.request(t, Some("mute"), Req::ParticipantMute { id: uid("a"), kind: MediaKind::Audio, muted: true });
    let first = s.take(t);
    let logged = first.iter().find_map(|f| match f {
        F::ParticipantUpdated { seq, .. } => Some(*seq),
        _ => None,
    });
    assert_eq!(ack(&first).seq, logged, "the ack names the participant.updated it caused");
    send(&mut s, t, "chat", "an unrelated event moves seq");
    s.take(t);
    s.request(t, Some("again"), Req::ParticipantMute { id: uid("a"), kind: MediaKind::Audio, muted: true });
    assert_eq!(ack(&s.take(t)).seq, None, "already muted: no event, so no seq (not the chat message's)");
}

#[test]
fn mute_is_recorded_and_blocks_publishing_that_kind() {
    let mut s = sim();
    let t = s.join("t", Role::Teacher);
    let a = s.join("a", Role::Student);
    s.request(a, Some("m1"), Req::MediaState { audio: true, video: true, screen: false });
    assert!(ack(&s.take(a)).seq.is_some());
    s.request(a, Some("m2"), Req::MediaState { audio: true, video: true, screen: true });
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::Forbidden), "students may not share screens");
    s.take(t);
    s.request(t, Some("mute"), Req::ParticipantMute { id: uid("a"), kind: MediaKind::Audio, muted: true });
    let ft = s.take(t);
    assert!(ft.iter().any(|f| matches!(f, F::ParticipantUpdated { participant, .. }
        if participant.muted.audio && !participant.media.audio && participant.media.video)));
    s.request(a, Some("m3"), Req::MediaState { audio: true, video: true, screen: false });
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::Forbidden));
    s.request(t, Some("unmute"), Req::ParticipantMute { id: uid("a"), kind: MediaKind::Audio, muted: false });
    s.request(a, Some("m4"), Req::MediaState { audio: true, video: true, screen: false });
    assert!(error_code(&s.take(a)).is_none());
}

#[test]
fn a_moderator_cannot_lift_a_restriction_on_itself() {
    let mut s = sim();
    let t = s.join("t", Role::Teacher);
    let adm = s.join("adm", Role::Admin);
    let restrict = PermsPatch { chat: Some(false), screen_share: Some(false), ..PermsPatch::default() };
    s.request(adm, Some("r"), Req::ParticipantUpdate { id: uid("t"), role: None, perms: Some(restrict) });
    s.request(adm, Some("m"), Req::ParticipantMute { id: uid("t"), kind: MediaKind::Audio, muted: true });
    assert!(error_code(&s.take(adm)).is_none());
    s.take(t);

    let regrant = PermsPatch { chat: Some(true), ..PermsPatch::default() };
    s.request(t, Some("g"), Req::ParticipantUpdate { id: uid("t"), role: None, perms: Some(regrant) });
    assert_eq!(error_code(&s.take(t)), Some(ErrorCode::Forbidden), "no self-granted permission");
    s.request(t, Some("u"), Req::ParticipantMute { id: uid("t"), kind: MediaKind::Audio, muted: false });
    assert_eq!(error_code(&s.take(t)), Some(ErrorCode::Forbidden), "no self-unmute of a moderator's mute");
    send(&mut s, t, "c", "still muted?");
    assert_eq!(error_code(&s.take(t)), Some(ErrorCode::Forbidden), "chat stays revoked");

    // Tightening one's own restrictions is fine, and another moderator can lift them.
    s.request(t, Some("v"), Req::ParticipantMute { id: uid("t"), kind: MediaKind::Video, muted: true });
    assert!(error_code(&s.take(t)).is_none());
    s.request(adm, Some("l"), Req::ParticipantMute { id: uid("t"), kind: MediaKind::Audio, muted: false });
    assert!(error_code(&s.take(adm)).is_none());
}

#[test]
fn a_ping_in_a_busy_room_is_answered_with_a_bare_pong() {
    // Coalescing from two connections: everything else inside the window is queued and batched.
    let limits = Limits { coalesce_ms: 20, coalesce_min_conns: 2, ..Limits::default() };
    let mut s = Sim::new(limits);
    let a = s.join("a", Role::Student);
    let b = s.join("b", Role::Student);
    send(&mut s, b, "m1", "opens the window");
    send(&mut s, b, "m2", "queued for a");
    s.take_text(a);
    s.say(a, "ping");
    s.advance(50);
    let texts = s.take_text(a);
    assert!(texts.iter().any(|t| t == "pong"), "a bare pong, never inside a batch array: {texts:?}");
    assert!(texts.iter().any(|t| t.starts_with('[')), "the window did batch the rest: {texts:?}");
    assert!(texts.iter().all(|t| !t.starts_with('[') || !t.contains("pong")), "{texts:?}");
}

#[test]
fn in_a_busy_room_joins_wait_for_a_lazier_flush_and_chat_takes_them_along() {
    // Coalescing from two connections, a 20 ms window; churn alone may wait 250 ms (a tiny lazy budget).
    let limits =
        Limits { coalesce_ms: 20, coalesce_min_conns: 2, coalesce_lazy_frames_per_sec: 10, ..Limits::default() };
    let mut s = Sim::new(limits);
    let a = s.join("a", Role::Student);
    let b = s.join("b", Role::Student);
    s.settle();
    s.take(a);
    let _c = s.join("c", Role::Student);
    assert_eq!(s.take(a).len(), 1, "the first event of a quiet room goes out at once");
    let d = s.join("d", Role::Student);
    assert!(matches!(&s.take(d)[..], [F::Welcome(_)]), "the joiner's welcome is never held");
    s.advance(200);
    assert!(s.take(a).is_empty(), "d's join is held past the 20 ms window");
    s.advance(60);
    let joined: Vec<_> = s.take(a).into_iter().filter(|f| matches!(f, F::ParticipantJoined { .. })).collect();
    assert_eq!(joined.len(), 1, "flushed once the lazy hold is over");

    // Held churn goes out with the next chat message, at the end of that message's window, in order.
    s.advance(100);
    s.take(a);
    s.take(b);
    let _e = s.join("e", Role::Student);
    s.take(a);
    let _f = s.join("f", Role::Student);
    s.advance(5);
    send(&mut s, b, "m", "hello");
    s.advance(20);
    let frames = s.take(a);
    let kinds: Vec<&str> = frames
        .iter()
        .map(|f| match f {
            F::ParticipantJoined { .. } => "joined",
            F::ChatMessage { .. } => "chat",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["joined", "chat"], "f's join, then the message, within the message's window: {frames:?}");
}

#[test]
fn an_author_whose_chat_was_revoked_cannot_edit_or_delete_either() {
    let mut s = sim();
    let t = s.join("t", Role::Teacher);
    let a = s.join("a", Role::Student);
    send(&mut s, a, "m", "first draft");
    let id = ack(&s.take(a)).id.clone().expect("a message id");
    let revoke = PermsPatch { chat: Some(false), ..PermsPatch::default() };
    s.request(t, Some("r"), Req::ParticipantUpdate { id: uid("a"), role: None, perms: Some(revoke) });
    s.take(a);
    s.request(a, Some("e"), Req::ChatEdit { id: id.clone(), text: "rewritten".into() });
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::Forbidden));
    s.request(a, Some("d"), Req::ChatDelete { id: id.clone() });
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::Forbidden));
    // A moderator still can.
    s.request(t, Some("td"), Req::ChatDelete { id });
    assert!(error_code(&s.take(t)).is_none());
}

#[test]
fn tokens_are_warned_before_expiry_closed_at_expiry_and_can_be_refreshed() {
    let mut s = sim();
    let mut identity = s.identity("a", Role::Student);
    identity.exp = s.now.as_secs() + 120;
    let a = s.connect(&identity, None).unwrap();
    let b = s.join("b", Role::Student);
    s.take(a);
    s.advance(60_000);
    assert!(matches!(&s.take(a)[..], [F::AuthExpiring { exp }] if *exp == identity.exp));
    let token = s.token_for(&identity, s.now.as_secs() + 3600);
    s.request(a, Some("r"), Req::AuthRefresh { token });
    assert_eq!(ack(&s.take(a)).exp, Some(s.now.as_secs() + 3600));
    s.advance(120_000);
    assert!(s.is_open(a), "refreshed token keeps the connection");

    let other = s.identity("zed", Role::Student);
    let token = s.token_for(&other, s.now.as_secs() + 3600);
    s.request(a, Some("r2"), Req::AuthRefresh { token });
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::Forbidden));
    s.request(a, Some("r3"), Req::AuthRefresh { token: "garbage".into() });
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::Unauthorized));

    let mut short = s.identity("c", Role::Student);
    short.exp = s.now.as_secs() + 10;
    let c = s.connect(&short, None).unwrap();
    s.take(b);
    s.advance(10_000);
    assert_eq!(s.closed.get(&c).unwrap().0, close::TOKEN_INVALID);
    assert!(s.take(b).iter().any(|f| matches!(f, F::ParticipantLeft { reason: LeaveReason::Expired, .. })));
}

#[test]
fn bad_frames_get_errors_and_the_connection_survives() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    s.take(a);
    s.say(a, "{not json");
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::BadRequest));
    s.say(a, r#"{"type":"nope","rid":"q"}"#);
    let frames = s.take(a);
    assert!(matches!(&frames[..], [F::Error(e)] if e.rid.as_deref() == Some("q") && e.code == ErrorCode::BadRequest));
    let big = format!(r#"{{"type":"chat.send","text":"{}"}}"#, "x".repeat(20_000));
    s.say(a, &big);
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::TooLarge));
    s.request(a, Some("long"), Req::ChatSend { text: "y".repeat(4001), reply_to: None });
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::TooLarge));
    s.request(a, Some("empty"), Req::ChatSend { text: "  ".into(), reply_to: None });
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::BadRequest));
    s.say(a, "ping");
    assert_eq!(s.take_text(a), ["pong"]);
    send(&mut s, a, "ok", "still here");
    assert!(ack(&s.take(a)).seq.is_some());
    assert!(s.is_open(a));

    s.say(a, &"z".repeat(300_000));
    assert_eq!(s.closed.get(&a).unwrap().0, close::TOO_LARGE);
}

#[test]
fn reconnecting_does_not_refill_the_rate_limit() {
    let mut s = sim();
    let _first_tab = s.join("a", Role::Student);
    let second_tab = s.join("a", Role::Student);
    for i in 0..Limits::default().rate_burst {
        send(&mut s, second_tab, &format!("b{i}"), "burst");
    }
    assert!(error_code(&s.take(second_tab)).is_none(), "the burst itself is allowed");
    // The client cycles its second tab to get a fresh bucket: the new connection inherits the spent one.
    s.drop_conn(second_tab);
    let cycled = s.join("a", Role::Student);
    s.take(cycled);
    send(&mut s, cycled, "x", "one more");
    assert_eq!(error_code(&s.take(cycled)), Some(ErrorCode::RateLimited));
    // Two sockets at once get the spent bucket too, not one spent and one full.
    s.drop_conn(cycled);
    let (one, two) = (s.join("a", Role::Student), s.join("a", Role::Student));
    s.take(one);
    s.take(two);
    send(&mut s, two, "z", "from the second");
    assert_eq!(error_code(&s.take(two)), Some(ErrorCode::RateLimited));
    s.advance(1_000);
    send(&mut s, one, "y", "after the refill");
    assert!(error_code(&s.take(one)).is_none(), "the bucket refills as usual");
}

#[test]
fn refusals_before_parsing_still_answer_the_request_by_its_rid() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    s.take(a);
    // Over the limit: the client's pending request is answered, so it can stop waiting for it.
    for i in 0..s.limits.rate_burst {
        send(&mut s, a, &format!("ok{i}"), "within the burst");
    }
    s.take(a);
    send(&mut s, a, "over", "one too many");
    assert!(
        matches!(&s.take(a)[..], [F::Error(e)] if e.code == ErrorCode::RateLimited && e.rid.as_deref() == Some("over"))
    );
    s.advance(2_000);
    let big =
        format!(r#"{{"type":"chat.send","rid":"big","text":"{}"}}"#, "x".repeat(s.limits.max_frame_bytes as usize));
    s.say(a, &big);
    assert!(
        matches!(&s.take(a)[..], [F::Error(e)] if e.code == ErrorCode::TooLarge && e.rid.as_deref() == Some("big"))
    );
}

#[test]
fn a_flooding_client_is_rate_limited_then_cut_while_others_are_unaffected() {
    let mut s = sim();
    let flood = s.join("flood", Role::Student);
    let calm = s.join("calm", Role::Student);
    s.take(flood);
    let mut limited = 0;
    for i in 0..200 {
        if !s.is_open(flood) {
            break;
        }
        s.request(flood, None, Req::Typing { active: i % 2 == 0 });
        limited +=
            s.take(flood).iter().filter(|f| matches!(f, F::Error(e) if e.code == ErrorCode::RateLimited)).count();
    }
    assert!(limited >= 1);
    assert_eq!(s.closed.get(&flood).unwrap().0, close::POLICY);
    // The flooder is kept out for the cool-down, then may come back.
    let again = s.identity("flood", Role::Student);
    let err = s.connect(&again, None).unwrap_err();
    assert_eq!(err.code, ErrorCode::RateLimited);
    assert!(err.message.contains("too many refused frames"), "{}", err.message);
    s.advance(s.limits.abuse_cooldown_ms);
    let back = s.connect(&again, None).unwrap();
    s.drop_conn(back);
    send(&mut s, calm, "c", "fine");
    assert!(ack(&s.take(calm)).seq.is_some());

    // A client within its rate is never limited.
    let steady = s.join("steady", Role::Student);
    s.take(steady);
    for i in 0..100 {
        s.advance(100);
        send(&mut s, steady, &format!("s{i}"), "tick");
    }
    let frames = s.take(steady);
    assert!(error_code(&frames).is_none(), "{frames:?}");
}

#[test]
fn capacity_refuses_with_room_full_except_for_moderators() {
    let mut s = Sim::new(Limits { capacity: 2, ..Limits::default() });
    s.join("a", Role::Student);
    s.join("b", Role::Student);
    let c = s.identity("c", Role::Student);
    assert_eq!(s.connect(&c, None).unwrap_err().code, ErrorCode::RoomFull);
    s.join("b", Role::Student);
    s.join("t", Role::Teacher);
    s.admin(|room, _| room.update_settings(&SettingsPatch { capacity: Some(Some(10)), ..Default::default() })).unwrap();
    assert!(s.connect(&c, None).is_ok());
}

/// Replies stored after 1,000 no-op requests (a lowered hand that was never raised: no event, no `seq`, but
/// a reply kept for idempotency) with a limit of 100, the room hibernating every `nap_every` requests.
fn replies_stored_after_noop_requests(nap_every: Option<usize>) -> usize {
    let limits = Limits { reply_limit: 100, ..Limits::default() };
    let mut s = Sim::new(limits);
    let c = s.join("u1", Role::Student);
    for i in 0..1_000 {
        s.advance(100);
        s.request(c, Some(&format!("h{i}")), Req::Hand { raised: false });
        if nap_every.is_some_and(|n| i % n == n - 1) {
            s.advance(10_000);
            s.hibernate();
        }
    }
    assert!(s.is_open(c));
    s.room().store().reply_count()
}

#[test]
fn stored_replies_stay_bounded_when_requests_log_nothing() {
    let stored = replies_stored_after_noop_requests(None);
    // Stored at all (the limit is reached), and bounded.
    assert!((100..=100 + 64).contains(&stored), "{stored} replies stored with a limit of 100");
}

#[test]
fn stored_replies_stay_bounded_when_the_room_sleeps_between_requests() {
    // Bursts shorter than the trim interval: the in-memory count starts over at every wake, and the table
    // must not grow with every nap.
    let stored = replies_stored_after_noop_requests(Some(50));
    assert!((100..=100 + 64).contains(&stored), "{stored} replies stored with a limit of 100 across 20 hibernations");
}

#[test]
fn a_binary_frame_beyond_the_hard_limit_closes_like_a_text_frame() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    s.take(a);
    s.say_binary(a, 1_000);
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::BadRequest), "a small binary frame: an error, stays open");
    assert!(s.is_open(a));
    s.say_binary(a, 300 * 1024);
    assert_eq!(s.closed.get(&a).map(|c| c.0), Some(close::TOO_LARGE));
}

#[test]
fn too_many_connections_from_one_user_are_refused() {
    let mut s = Sim::new(Limits { max_conns_per_user: 3, ..Limits::default() });
    for _ in 0..3 {
        s.join("a", Role::Student);
    }
    let a = s.identity("a", Role::Student);
    assert_eq!(s.connect(&a, None).unwrap_err().code, ErrorCode::RateLimited);
}

#[test]
fn an_empty_room_is_wiped_after_the_idle_ttl() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    send(&mut s, a, "1", "remember me");
    let epoch = welcome(&s.take(a)).epoch.clone();
    s.drop_conn(a);
    s.advance(s.limits.idle_room_ttl_ms - 1);
    let b = s.join("b", Role::Student);
    assert_eq!(welcome(&s.take(b)).history.len(), 1, "not yet wiped");
    s.drop_conn(b);
    s.advance(s.limits.idle_room_ttl_ms);
    let c = s.join("c", Role::Student);
    let fc = s.take(c);
    let w = welcome(&fc);
    assert!(w.history.is_empty());
    assert_ne!(w.epoch, epoch);
    assert_eq!(w.seq, 1);

    // Wiped without settings, a room leaves no rows at all; with settings, only its meta row remains.
    s.drop_conn(c);
    s.advance(s.limits.idle_room_ttl_ms);
    assert_eq!(s.room().store().load_meta().unwrap(), None, "an idle room without settings leaves nothing");
    let d = s.join("d", Role::Student);
    let patch = SettingsPatch { capacity: Some(Some(20)), ..SettingsPatch::default() };
    s.admin(|room, _| room.update_settings(&patch)).unwrap();
    s.drop_conn(d);
    s.advance(s.limits.idle_room_ttl_ms);
    let kept = s.room().store().load_meta().unwrap().expect("a room with settings keeps its meta row");
    assert_eq!(kept.settings.capacity, Some(20));
    assert_eq!(kept.seq, 0);
}

#[test]
fn an_empty_room_waits_for_its_longest_ban_before_the_idle_wipe() {
    let idle = Limits::default().idle_room_ttl_ms;
    let mut s = Sim::new(Limits { kick_ban_ms: 3 * idle, ..Limits::default() });
    let t = s.join("t", Role::Teacher);
    s.join("a", Role::Student);
    s.request(t, Some("k"), Req::ParticipantKick { id: uid("a") });
    s.drop_conn(t);
    let banned = s.identity("a", Role::Student);
    s.advance(2 * idle);
    assert_eq!(s.connect(&banned, None).unwrap_err().code, ErrorCode::Forbidden, "idle, but the ban still runs");
    assert!(s.room().store().load_meta().unwrap().is_some(), "the room waits for the ban");
    s.advance(idle);
    let c = s.connect(&banned, None).expect("the ban is over");
    let w = s.take(c);
    assert_eq!(welcome(&w).seq, 1, "the room was wiped once the ban ended");
}

#[test]
fn a_room_woken_without_its_address_stores_nothing_until_a_request_names_it() {
    use homeroom_shared::auth::TokenKey;
    use homeroom_shared::room::store::MemoryStore;
    use homeroom_shared::room::{Room, RoomKeys};
    // After a wipe left no rows, an alarm (which carries no address) wakes the object.
    let keys = RoomKeys { user: TokenKey::new(b"user"), media: TokenKey::new(b"node") };
    let now = homeroom_shared::Timestamp(1_700_000_000_000);
    let mut room = Room::restore(MemoryStore::default(), Limits::default(), keys, None, Vec::new(), now).unwrap();
    assert_eq!(room.store().load_meta().unwrap(), None, "no row that names no room");
    room.adopt_address("default/math").unwrap();
    assert_eq!(room.store().load_meta().unwrap().expect("named now").address, "default/math");
    room.adopt_address("default/other").unwrap();
    assert_eq!(room.store().load_meta().unwrap().expect("kept").address, "default/math", "a known address stays");
}

#[test]
fn admin_api_reads_kicks_and_announces() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    s.take(a);
    let info = s.admin(|room, now| room.info(now));
    assert_eq!(info.participants.len(), 1);
    assert_eq!(info.room, "default/room");
    let msg = s.admin(|room, now| room.announce("class starts", "Office", now)).unwrap();
    assert_eq!(msg.from.id.as_str(), "system");
    assert!(matches!(&s.take(a)[..], [F::ChatMessage { message, .. }] if message.text == "class starts"));
    let (page, _) = s.room().history(None, None).unwrap();
    assert_eq!(page.len(), 1);
    s.admin(|room, now| room.kick(&uid("a"), now)).unwrap();
    assert_eq!(s.closed.get(&a).unwrap().0, close::KICKED);
    assert_eq!(s.admin(|room, now| room.kick(&uid("a"), now)).unwrap_err().code, ErrorCode::NotFound);
    let epoch = s.admin(|room, now| room.clear(now)).unwrap();
    assert_eq!(s.admin(|room, now| room.info(now)).epoch, epoch);
}

#[test]
fn a_restart_without_connections_removes_stale_participants() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    let b = s.join("b", Role::Student);
    s.take(a);
    // The runtime restarts: a's socket is gone without a close event, b's survives.
    s.forget_without_close(a);
    s.hibernate();
    let fb = s.take(b);
    assert!(fb
        .iter()
        .any(|f| matches!(f, F::ParticipantLeft { id, reason: LeaveReason::Disconnected, .. } if id.as_str() == "a")));
    assert_eq!(s.room().participants().len(), 1);
}

#[test]
fn a_room_emptied_by_a_restart_is_wiped_one_idle_ttl_later_however_often_it_is_evicted() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    send(&mut s, a, "1", "before the restart");
    // The runtime restarts: the only socket is gone without a close event, so nothing stored says when the
    // room emptied. The wake after the restart decides it; later wakes must not start the idle period anew.
    s.forget_without_close(a);
    s.hibernate();
    let ttl = s.limits.idle_room_ttl_ms;
    for _ in 0..3 {
        s.advance(ttl / 3);
        s.hibernate();
    }
    s.advance(ttl / 3);
    assert_eq!(s.room().store().load_meta().unwrap(), None, "wiped one idle TTL after the restart emptied it");
    assert!(s.room().history(None, None).unwrap().0.is_empty());
}

mod media {
    use super::*;
    use homeroom_shared::auth::TokenKey;
    use homeroom_shared::media::ControlCommand;
    use homeroom_shared::protocol::NodeInfo;
    use homeroom_shared::room::sim::SIM_NODE_SECRET;
    use homeroom_shared::room::Output;

    fn node(id: &str) -> NodeInfo {
        NodeInfo { id: id.into(), region: "eu-west".into(), url: format!("http://{id}.example") }
    }

    /// The control commands the room queued for its media node since the last call.
    fn control_commands(s: &mut Sim) -> Vec<ControlCommand> {
        s.media
            .drain(..)
            .filter_map(|o| match o {
                Output::MediaControl { command, .. } => Some(command),
                _ => None,
            })
            .collect()
    }

    /// Answers the pending placement requests with `node`.
    fn place(s: &mut Sim, with: NodeInfo) {
        let requests: Vec<Output> = std::mem::take(&mut s.media);
        for output in requests {
            if let Output::PlaceMedia { conn, rid, .. } = output {
                let node = with.clone();
                s.admin(|room, now| room.media_placed(conn, rid, Ok(node), now));
            }
        }
    }

    #[test]
    fn media_join_is_placed_and_answered_with_a_scoped_short_lived_token() {
        let mut s = sim();
        let a = s.join("a", Role::Student);
        s.take(a);
        s.request(a, Some("m"), Req::MediaJoin { region: Some("eu-west".into()) });
        assert!(
            matches!(&s.media[..], [Output::PlaceMedia { location, .. }] if location.region.as_deref() == Some("eu-west"))
        );
        place(&mut s, node("n1"));
        let frames = s.take(a);
        let F::MediaAssigned { rid, node: n, token, expires_at } = &frames[0] else { panic!("{frames:?}") };
        assert_eq!(rid.as_deref(), Some("m"));
        assert_eq!(n.id, "n1");
        let claims = TokenKey::new(SIM_NODE_SECRET).verify_media(token, s.now).unwrap();
        assert_eq!((claims.sub.as_str(), claims.room.as_str(), claims.node.as_str()), ("a", "default/room", "n1"));
        assert!(claims.perms.audio && claims.perms.video && !claims.perms.screen && claims.perms.subscribe);
        assert_eq!(*expires_at, s.now.as_secs() + 300);
        assert_eq!(s.admin(|room, now| room.info(now)).media.map(|n| n.id), Some("n1".into()));

        s.request(a, Some("bad"), Req::MediaJoin { region: Some("not a region".into()) });
        assert_eq!(error_code(&s.take(a)), Some(ErrorCode::BadRequest));
        let unavailable = homeroom_shared::protocol::ApiError::new(ErrorCode::Unavailable, "no node");
        s.admin(|room, now| room.media_placed(a, Some("x".into()), Err(unavailable), now));
        assert_eq!(error_code(&s.take(a)), Some(ErrorCode::Unavailable));
    }

    #[test]
    fn asking_for_media_again_does_not_count_as_another_session_on_the_node() {
        let mut s = sim();
        let a = s.join("a", Role::Student);
        let new_sessions = |s: &mut Sim| -> Vec<bool> {
            s.media
                .iter()
                .filter_map(|o| match o {
                    Output::PlaceMedia { new_session, .. } => Some(*new_session),
                    _ => None,
                })
                .collect()
        };
        s.request(a, Some("1"), Req::MediaJoin { region: None });
        assert_eq!(new_sessions(&mut s), [true]);
        place(&mut s, node("n1"));
        for rid in ["2", "3", "4"] {
            s.request(a, Some(rid), Req::MediaJoin { region: None });
        }
        assert_eq!(new_sessions(&mut s), [false, false, false], "a media token was handed out in this stay");
        place(&mut s, node("n1"));
        let b = s.join("b", Role::Student);
        s.request(b, Some("1"), Req::MediaJoin { region: None });
        assert_eq!(new_sessions(&mut s), [true], "another participant counts");
        place(&mut s, node("n1"));
        // The node is lost: every session went with it, and the class re-joining elsewhere counts again.
        s.admin(|room, now| room.media_lost("n1", "gone", now));
        s.request(a, Some("5"), Req::MediaJoin { region: None });
        assert_eq!(new_sessions(&mut s), [true], "a session on the next node is a new one");
    }

    #[test]
    fn media_join_is_limited_to_a_few_in_a_row_then_one_a_second() {
        let mut s = sim();
        let a = s.join("a", Role::Student);
        s.take(a);
        for i in 0..5 {
            s.request(a, Some(&format!("ok{i}")), Req::MediaJoin { region: None });
        }
        assert_eq!(error_code(&s.take(a)), None);
        s.request(a, Some("sixth"), Req::MediaJoin { region: None });
        assert_eq!(error_code(&s.take(a)), Some(ErrorCode::RateLimited));
        let placements = s.media.iter().filter(|o| matches!(o, Output::PlaceMedia { .. })).count();
        assert_eq!(placements, 5, "the refused one does not reach the registry");
        s.advance(1_000);
        s.request(a, Some("later"), Req::MediaJoin { region: None });
        assert_eq!(error_code(&s.take(a)), None, "one a second after the burst");
        assert!(s.is_open(a), "a refused media.join is not abuse");
    }

    #[test]
    fn a_new_tab_with_a_narrower_token_stops_what_it_no_longer_allows() {
        let mut s = sim();
        let t = s.join("t", Role::Teacher);
        let a = s.join("a", Role::Student);
        s.request(a, Some("m"), Req::MediaJoin { region: None });
        place(&mut s, node("n1"));
        s.request(a, Some("on"), Req::MediaState { audio: true, video: true, screen: false });
        s.media.clear();
        s.take(t);
        // The same user opens another tab with a re-issued token that no longer allows streaming.
        let mut narrower = s.identity("a", Role::Student);
        narrower.perms.stream = Some(false);
        s.connect(&narrower, None).unwrap();
        let ft = s.take(t);
        assert!(
            ft.iter().any(|f| matches!(f, F::ParticipantUpdated { participant, .. }
                if !participant.perms.stream && !participant.media.audio && !participant.media.video)),
            "the room no longer shows it publishing: {ft:?}"
        );
        assert!(
            s.media.iter().any(
                |o| matches!(o, Output::MediaControl { command: ControlCommand::Perms { participant, perms, .. }, .. }
                if participant == "a" && !perms.audio && !perms.video)
            ),
            "the media node is told to stop forwarding it: {:?}",
            s.media
        );
    }

    #[test]
    fn a_placement_answered_after_its_connection_left_is_released_with_the_room() {
        let mut s = sim();
        let _t = s.join("t", Role::Teacher);
        let a = s.join("a", Role::Student);
        s.request(a, Some("m"), Req::MediaJoin { region: None });
        // The tab closes while the registry places the room: the registry holds the placement anyway.
        s.drop_conn(a);
        place(&mut s, node("n1"));
        assert_eq!(s.admin(|room, now| room.info(now)).media.map(|n| n.id).as_deref(), Some("n1"));
        s.media.clear();
        s.admin(|room, now| room.clear(now)).unwrap();
        assert!(
            s.media.iter().any(|o| matches!(o, Output::ReleaseMedia)),
            "the clear releases the placement: {:?}",
            s.media
        );
    }

    #[test]
    fn a_permissions_change_re_asserts_every_mute_on_the_media_node() {
        let mut s = sim();
        let t = s.join("t", Role::Teacher);
        let a = s.join("a", Role::Student);
        s.request(a, Some("m"), Req::MediaJoin { region: None });
        place(&mut s, node("n1"));
        s.request(t, Some("v"), Req::ParticipantMute { id: uid("a"), kind: MediaKind::Video, muted: true });
        // The node may not know the video mute (a's next media token carries video as not permitted, and the
        // node admits that session with no mute to remember); the next `perms` command must not lift it.
        s.media.clear();
        s.request(t, Some("au"), Req::ParticipantMute { id: uid("a"), kind: MediaKind::Audio, muted: true });
        let commands = control_commands(&mut s);
        assert!(
            matches!(&commands[..], [
                ControlCommand::Perms { perms, .. },
                ControlCommand::Mute { kind: MediaKind::Audio, muted: true, .. },
                ControlCommand::Mute { kind: MediaKind::Video, muted: true, .. },
            ] if perms.audio && perms.video),
            "permissions, then every mute in force, each once: {commands:?}"
        );
        s.request(t, Some("vu"), Req::ParticipantMute { id: uid("a"), kind: MediaKind::Video, muted: false });
        let commands = control_commands(&mut s);
        assert!(
            matches!(
                &commands[..],
                [
                    ControlCommand::Perms { .. },
                    ControlCommand::Mute { kind: MediaKind::Audio, muted: true, .. },
                    ControlCommand::Mute { kind: MediaKind::Video, muted: false, .. },
                ]
            ),
            "an unmute: the mutes still in force, then the unmute: {commands:?}"
        );
    }

    /// Everyone was told the user left (token expired, or cut for abuse): its media must end too, and only
    /// once its last connection is gone.
    #[test]
    fn media_ends_when_the_room_removes_someone_for_an_expired_token_or_abuse() {
        let mut s = sim();
        let mut short = s.identity("late", Role::Student);
        short.exp = s.now.as_secs() + 10;
        let late = s.connect(&short, None).unwrap();
        let second_tab = s.join("late", Role::Student);
        let flood = s.join("flood", Role::Student);
        s.request(flood, Some("m"), Req::MediaJoin { region: None });
        place(&mut s, node("n1"));
        control_commands(&mut s);

        s.advance(10_000);
        assert_eq!(s.closed.get(&late).unwrap().0, close::TOKEN_INVALID);
        assert!(control_commands(&mut s).is_empty(), "its other tab is still in the room: media goes on");
        s.drop_conn(second_tab);
        assert!(control_commands(&mut s).is_empty(), "leaving on its own is not a removal (media may outlive a blip)");

        let mut expired = s.identity("gone", Role::Student);
        expired.exp = s.now.as_secs() + 5;
        s.connect(&expired, None).unwrap();
        s.advance(5_000);
        let dated = s.media.iter().find_map(|o| match o {
            Output::MediaControl { decided_at, .. } => Some(*decided_at),
            _ => None,
        });
        assert_eq!(
            dated,
            Some(Some(s.now.as_secs() - 1)),
            "dated a second early: a fresh media token of this second still opens a session"
        );
        let commands = control_commands(&mut s);
        assert!(
            matches!(&commands[..], [ControlCommand::Kick { participant, .. }] if participant == "gone"),
            "an expired token's last connection: {commands:?}"
        );

        for i in 0..200 {
            if !s.is_open(flood) {
                break;
            }
            s.request(flood, None, Req::Typing { active: i % 2 == 0 });
        }
        assert_eq!(s.closed.get(&flood).unwrap().0, close::POLICY);
        let dated = s.media.iter().find_map(|o| match o {
            Output::MediaControl { decided_at, .. } => Some(*decided_at),
            _ => None,
        });
        assert_eq!(dated, Some(None), "cut for abuse: dated now (its cooldown keeps it from a fresh token)");
        let commands = control_commands(&mut s);
        assert!(
            matches!(&commands[..], [ControlCommand::Kick { participant, .. }] if participant == "flood"),
            "cut for abuse: {commands:?}"
        );
    }

    #[test]
    fn the_media_of_someone_who_left_ends_after_the_grace_unless_they_are_back() {
        let mut s = sim();
        let t = s.join("t", Role::Teacher);
        let a = s.join("a", Role::Student);
        let b = s.join("b", Role::Student);
        s.request(a, Some("m"), Req::MediaJoin { region: None });
        place(&mut s, node("n1"));
        s.media.clear();
        // a leaves holding a media token (its session on the node may go on); b never asked for media.
        s.drop_conn(a);
        s.drop_conn(b);
        let grace = s.limits.media_leave_grace_ms;
        s.advance(grace - 1);
        assert!(control_commands(&mut s).is_empty(), "within the grace: a signalling blip need not cut the call");
        s.hibernate();
        s.advance(1);
        let commands = control_commands(&mut s);
        assert!(
            matches!(&commands[..], [ControlCommand::Kick { participant, .. }] if participant == "a"),
            "the deadline outlives a hibernation, and only a is ended: {commands:?}"
        );
        assert!(s.room().store().load_meta().unwrap().unwrap().media_leavers.is_empty());

        // Back within the grace: nothing ends. Leaving again starts another grace: the media it kept is its own.
        let c = s.join("c", Role::Student);
        s.request(c, Some("m"), Req::MediaJoin { region: None });
        place(&mut s, node("n1"));
        s.drop_conn(c);
        s.advance(grace / 2);
        let c = s.join("c", Role::Student);
        s.advance(grace);
        assert!(control_commands(&mut s).is_empty(), "c came back in time");
        s.drop_conn(c);
        s.advance(grace);
        let commands = control_commands(&mut s);
        assert!(
            matches!(&commands[..], [ControlCommand::Kick { participant, .. }] if participant == "c"),
            "{commands:?}"
        );

        // A clear ends the room's media as a whole: no grace outlives it.
        let d = s.join("d", Role::Student);
        s.request(d, Some("m"), Req::MediaJoin { region: None });
        place(&mut s, node("n1"));
        s.drop_conn(d);
        s.request(t, Some("clear"), Req::RoomClear);
        let commands = control_commands(&mut s);
        assert!(matches!(&commands[..], [ControlCommand::CloseRoom { .. }]), "{commands:?}");
        s.advance(grace);
        assert!(control_commands(&mut s).is_empty(), "nothing left to end after the clear");
    }

    #[test]
    fn moderation_reaches_the_media_node_and_node_loss_tells_everyone() {
        let mut s = sim();
        let t = s.join("t", Role::Teacher);
        let a = s.join("a", Role::Student);
        s.request(a, Some("m"), Req::MediaJoin { region: None });
        place(&mut s, node("n1"));
        s.request(t, Some("mute"), Req::ParticipantMute { id: uid("a"), kind: MediaKind::Audio, muted: true });
        s.request(t, Some("kick"), Req::ParticipantKick { id: uid("a") });
        let commands: Vec<ControlCommand> = s
            .media
            .drain(..)
            .filter_map(|o| match o {
                Output::MediaControl { node, command, .. } => {
                    assert_eq!(node.id, "n1");
                    Some(command)
                }
                _ => None,
            })
            .collect();
        assert!(
            matches!(&commands[0], ControlCommand::Perms { participant, perms, .. } if participant == "a" && perms.audio),
            "perms carry permissions; the mute travels as its own command: {commands:?}"
        );
        assert!(matches!(&commands[1], ControlCommand::Mute { kind: MediaKind::Audio, muted: true, .. }));
        assert!(matches!(&commands[2], ControlCommand::Kick { participant, .. } if participant == "a"));

        let b = s.join("b", Role::Student);
        s.take(t);
        s.take(b);
        s.admin(|room, now| room.media_lost("other-node", "lease expired", now));
        assert!(s.take(t).is_empty(), "another node's loss is not ours");
        s.admin(|room, now| room.media_lost("n1", "lease expired", now));
        assert!(matches!(&s.take(b)[..], [F::MediaMoved { reason }] if reason == "lease expired"));
        assert!(s.admin(|room, now| room.info(now)).media.is_none());

        s.request(b, Some("m"), Req::MediaJoin { region: None });
        place(&mut s, node("n2"));
        s.take(b);
        s.request(t, Some("c"), Req::RoomClear);
        assert!(
            matches!(&s.media[..], [Output::MediaControl { command: ControlCommand::CloseRoom { room }, .. }, Output::ReleaseMedia] if room == "default/room")
        );
    }
}

#[test]
fn per_connection_state_stays_under_two_kilobytes() {
    // What a connection costs the room: its attachment (ConnRecord) and its share of the participant record,
    // both as stored (JSON). Names at their maximum length make this the worst case.
    let mut s = sim();
    let mut identity = s.identity("u", Role::Teacher);
    identity.name = "N".repeat(80);
    identity.user = UserId::parse(&"u".repeat(128)).unwrap();
    let c = s.connect(&identity, None).unwrap();
    s.take(c);
    let record = s.room().conn_records().into_iter().next().unwrap();
    let attachment = serde_json::to_vec(&record).unwrap().len();
    let participant = serde_json::to_vec(&s.room().participants()[0]).unwrap().len();
    eprintln!("per connection: attachment {attachment} B, participant {participant} B");
    assert!(attachment + participant < 2048, "{attachment} + {participant} bytes");
}

#[test]
fn a_class_whose_tokens_expire_together_costs_a_frame_per_connection_not_a_flush_per_close() {
    // Every student joined with the same lesson-long token. At its expiry each connection is closed in one
    // event; a close must write only what was queued for the closing connection, or the closes of n
    // connections write about n²/2 frames.
    let limits = Limits { capacity: 500, coalesce_ms: 20, coalesce_min_conns: 2, ..Limits::default() };
    let mut s = Sim::new(limits);
    s.batch = true;
    let teacher = s.join("teacher", Role::Teacher);
    let exp = s.now.as_secs() + 600;
    let students: Vec<ConnId> = (0..200)
        .map(|i| {
            let mut identity = s.identity(&format!("s{i}"), Role::Student);
            identity.exp = exp;
            let conn = s.connect(&identity, None).unwrap();
            s.advance(10);
            conn
        })
        .collect();
    // Up to just before the expiry (warnings, presence going idle), then over it.
    s.advance((exp * 1000).saturating_sub(s.now.0 + 500));
    for conn in students.iter().chain([&teacher]) {
        s.take_text(*conn);
    }
    s.advance(2_000);
    let frames: usize = students.iter().map(|c| s.take_text(*c).len()).sum();
    assert!(students.iter().all(|c| s.closed.get(c).is_some_and(|(code, _)| *code == close::TOKEN_INVALID)));
    assert!(frames <= 3 * students.len(), "{frames} frames to 200 closing students");
    let left = s.take(teacher).iter().filter(|f| matches!(f, F::ParticipantLeft { .. })).count();
    assert_eq!(left, 200, "the teacher still hears of every departure");
}

#[test]
fn whoever_may_not_chat_may_not_react_either() {
    let mut s = sim();
    let t = s.join("t", Role::Teacher);
    let a = s.join("a", Role::Student);
    s.request(a, Some("r1"), Req::Reaction { emoji: "👍".into() });
    assert!(s.take(t).iter().any(|f| matches!(f, F::Reaction { emoji, .. } if emoji == "👍")));
    let silence = PermsPatch { chat: Some(false), ..PermsPatch::default() };
    s.request(t, Some("p"), Req::ParticipantUpdate { id: uid("a"), role: None, perms: Some(silence) });
    s.take(t);
    s.take(a);
    s.request(a, Some("r2"), Req::Reaction { emoji: "you all suck!!!!".into() });
    assert_eq!(error_code(&s.take(a)), Some(ErrorCode::Forbidden));
    assert!(!s.take(t).iter().any(|f| matches!(f, F::Reaction { .. })), "nobody hears the reaction");
}

#[test]
fn a_demoted_teacher_keeps_no_permission_its_token_restated() {
    let mut s = sim();
    let admin = s.join("boss", Role::Admin);
    let mut ta = s.identity("ta", Role::Teacher);
    ta.perms =
        PermsPatch { moderate: Some(true), screen_share: Some(true), stream: Some(false), ..PermsPatch::default() };
    let ta = s.connect(&ta, None).unwrap();
    s.join("a", Role::Student);
    s.request(admin, Some("d"), Req::ParticipantUpdate { id: uid("ta"), role: Some(Role::Student), perms: None });
    s.take(ta);
    s.request(ta, Some("k"), Req::ParticipantKick { id: uid("a") });
    assert_eq!(error_code(&s.take(ta)), Some(ErrorCode::Forbidden), "no moderate left after the demotion");
    let me = s.room().participants().into_iter().find(|p| p.id.as_str() == "ta").unwrap();
    let withheld = homeroom_shared::protocol::Perms { stream: false, ..Role::Student.default_perms() };
    assert_eq!((me.role, me.perms), (Role::Student, withheld), "the token's grants go, what it withheld stays");
    // The demoter may still grant back what it chooses: a moderator's perms apply on top of the new role.
    let grant = PermsPatch { screen_share: Some(true), ..PermsPatch::default() };
    s.request(admin, Some("g"), Req::ParticipantUpdate { id: uid("ta"), role: None, perms: Some(grant) });
    let me = s.room().participants().into_iter().find(|p| p.id.as_str() == "ta").unwrap();
    assert!(me.perms.screen_share && !me.perms.moderate);
}

#[test]
fn a_moderator_grants_only_permissions_it_has_itself() {
    let mut s = sim();
    // A teaching assistant: a student whose token adds `moderate`, but not `screen_share`.
    let mut assistant = s.identity("ta", Role::Student);
    assistant.perms = PermsPatch { moderate: Some(true), ..PermsPatch::default() };
    let ta = s.connect(&assistant, None).unwrap();
    s.join("a", Role::Student);
    s.take(ta);
    let lift = PermsPatch { moderate: Some(true), screen_share: Some(true), ..PermsPatch::default() };
    s.request(ta, Some("g"), Req::ParticipantUpdate { id: uid("a"), role: None, perms: Some(lift) });
    let frames = s.take(ta);
    let refusal = frames
        .iter()
        .find_map(|f| match f {
            F::Error(e) => Some(e.clone()),
            _ => None,
        })
        .expect("refused");
    assert_eq!(refusal.code, ErrorCode::Forbidden);
    assert!(refusal.message.contains("screen_share"), "{}", refusal.message);
    let a = s.room().participants().into_iter().find(|p| p.id.as_str() == "a").unwrap();
    assert!(!a.perms.screen_share, "nothing of the refused grant applied");
    // What it has it may grant, and restricting is always allowed.
    let share_moderation = PermsPatch { moderate: Some(true), chat: Some(false), ..PermsPatch::default() };
    s.request(ta, Some("g2"), Req::ParticipantUpdate { id: uid("a"), role: None, perms: Some(share_moderation) });
    assert_eq!(error_code(&s.take(ta)), None);
    let a = s.room().participants().into_iter().find(|p| p.id.as_str() == "a").unwrap();
    assert!(a.perms.moderate && !a.perms.chat);
}

#[test]
fn an_announcement_just_after_the_idle_wipe_is_wiped_in_its_turn() {
    let mut s = sim();
    let a = s.join("a", Role::Student);
    s.drop_conn(a);
    s.advance(s.limits.idle_room_ttl_ms);
    assert_eq!(s.room().store().load_meta().unwrap(), None, "wiped");
    s.admin(|room, now| room.announce("class moved to room 4", "Office", now)).unwrap();
    assert!(s.room().store().load_meta().unwrap().is_some());
    s.advance(s.limits.idle_room_ttl_ms);
    assert_eq!(s.room().store().load_meta().unwrap(), None, "the announcement's rows go with the next wipe");
    let b = s.join("b", Role::Student);
    assert!(welcome(&s.take(b)).history.is_empty());
}
