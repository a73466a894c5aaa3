//! Who flushes a busy room's queue, on real `wrangler dev`: an upgrade answers at once even while a flush
//! window is open (its `101` and `welcome` never wait for the window), and what it queued for the others is
//! flushed at the window's end by the room's alarm when no other event is pumping.
//!
//! The window is stretched to a full second (`COALESCE_MS`) and coalescing starts at two connections, so the
//! margins below are hundreds of milliseconds wide: they check behaviour, not speed.

use homeroom_shared::protocol::{ClientFrame, ClientRequest, Role, ServerFrame as F};
use homeroom_shared::pump::HANDOFF_MS;
use homeroom_tests::client::{Client, Connect};
use homeroom_tests::edge::Edge;
use homeroom_tests::tokens::Minter;
use std::time::{Duration, Instant};

const WINDOW_MS: u64 = 1000;

fn joined(frame: &F, who: &str) -> bool {
    matches!(frame, F::ParticipantJoined { participant, .. } if participant.id.as_str() == who)
}

#[tokio::test]
async fn upgrades_do_not_wait_for_the_window_and_the_alarm_flushes_what_they_queued() {
    let window = WINDOW_MS.to_string();
    let vars = [("COALESCE_MS", window.as_str()), ("COALESCE_MIN_CONNECTIONS", "2"), ("COALESCE_FRAMES_PER_SEC", "0")];
    let edge = Edge::start_with(&vars).await.expect("edge starts");
    let minter = Minter::dev().expect(".dev.vars has JWT_SECRET");
    let connect = |user: &str| Connect::new(&edge.ws(), "coalesce", &minter.token(user, Role::Student));

    let mut alice = Client::connect(&connect("alice")).await.expect("alice joins");
    // Bob's join makes two connections: its `participant.joined` goes to alice at once and opens the window.
    let _bob = Client::connect(&connect("bob")).await.expect("bob joins");
    alice.expect("bob's join", Duration::from_secs(5), |f| joined(f, "bob")).await.expect("alice hears of bob");
    let window_opened = Instant::now();

    // Carol joins inside the window: her welcome comes at once, her join is queued for the others.
    let started = Instant::now();
    let _carol = Client::connect(&connect("carol")).await.expect("carol joins");
    let carol_waited = started.elapsed();
    assert!(
        carol_waited < Duration::from_millis(WINDOW_MS / 2),
        "an upgrade inside an open window waited {carol_waited:?} for its welcome (window {WINDOW_MS} ms)"
    );
    assert!(
        window_opened.elapsed() < Duration::from_millis(WINDOW_MS / 2),
        "carol joined inside the window ({:?} after it opened): the test needs a longer window",
        window_opened.elapsed()
    );

    // Nobody else sends anything, so only the alarm can flush carol's join to alice, at the window's end.
    alice
        .expect("carol's join", Duration::from_millis(WINDOW_MS * 4), |f| joined(f, "carol"))
        .await
        .expect("the queued join reaches alice without any other event in the room");
    let heard_after = window_opened.elapsed();
    assert!(
        heard_after >= Duration::from_millis(WINDOW_MS * 8 / 10),
        "carol's join reached alice {heard_after:?} after the window opened: it was not coalesced"
    );
    eprintln!("carol's welcome after {carol_waited:?}; her join reached alice {heard_after:?} after the window opened");
}

/// A room busy for longer than one pump may hold it ([`homeroom_shared::pump::HANDOFF_MS`]): every window
/// stays open, the pumper hands over at 5 s, and the next events pump again. Every message still arrives, in
/// order, within about a window of its sending — a hand-off that left the lease held (so that no later event
/// pumps until it goes stale) or dropped what was queued would show as a late or missing message. (The alarm
/// that the hand-off arms is not what delivers here: bob's next message pumps first.)
#[tokio::test]
async fn a_long_busy_stretch_hands_the_pump_over_without_losing_or_stalling_anything() {
    let window = WINDOW_MS.to_string();
    let vars = [("COALESCE_MS", window.as_str()), ("COALESCE_MIN_CONNECTIONS", "2"), ("COALESCE_FRAMES_PER_SEC", "0")];
    let edge = Edge::start_with(&vars).await.expect("edge starts");
    let minter = Minter::dev().expect(".dev.vars has JWT_SECRET");
    let connect = |user: &str| Connect::new(&edge.ws(), "busy", &minter.token(user, Role::Student));
    let mut alice = Client::connect(&connect("alice")).await.expect("alice joins");
    let mut bob = Client::connect(&connect("bob")).await.expect("bob joins");

    // One message every 300 ms for 8 s: every 1 s window has traffic, so one pump would hold it throughout.
    let messages = 8_000 / 300;
    let started = Instant::now();
    let send = async {
        let mut sent_at = Vec::new();
        for i in 0..messages {
            let request = ClientRequest::ChatSend { text: format!("m{i}"), reply_to: None };
            let frame = ClientFrame::with_rid(bob.rid(), request);
            bob.send(&frame).await.expect("bob sends");
            sent_at.push(Instant::now());
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        sent_at
    };
    let receive = async {
        let mut arrived_at = Vec::new();
        for i in 0..messages {
            let frame = alice
                .expect("the next message", Duration::from_millis(WINDOW_MS * 4), |f| {
                    matches!(f, F::ChatMessage { .. })
                })
                .await
                .expect("every message arrives");
            let F::ChatMessage { message, .. } = frame else { unreachable!("expect matched a chat message") };
            assert_eq!(message.text, format!("m{i}"), "messages arrive in order");
            arrived_at.push(Instant::now());
        }
        arrived_at
    };
    let (sent_at, arrived_at) = tokio::join!(send, receive);
    assert!(started.elapsed() > Duration::from_millis(HANDOFF_MS), "the busy stretch outlasts one pump");

    // A message waits at most one window plus the flush; a stalled hand-off would show as a multi-second gap.
    let worst = sent_at.iter().zip(&arrived_at).map(|(sent, arrived)| arrived.saturating_duration_since(*sent)).max();
    let worst = worst.unwrap_or_default();
    assert!(
        worst < Duration::from_millis(WINDOW_MS * 5 / 2),
        "a message took {worst:?} to arrive (window {WINDOW_MS} ms): the pump stalled around a hand-off"
    );
    eprintln!("{messages} messages over {:?}; worst send → receive {worst:?}", started.elapsed());
}
