//! Who flushes a busy room's queue, on real `wrangler dev`: an upgrade answers at once even while a flush
//! window is open (its `101` and `welcome` never wait for the window), and what it queued for the others is
//! flushed at the window's end by the room's alarm when no other event is pumping.
//!
//! The window is stretched to a full second (`COALESCE_MS`) and coalescing starts at two connections, so the
//! margins below are hundreds of milliseconds wide: they check behaviour, not speed.

use homeroom_shared::protocol::{Role, ServerFrame as F};
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
