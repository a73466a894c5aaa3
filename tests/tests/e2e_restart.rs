//! `wrangler dev` is killed and restarted on the same persisted storage in the middle of a class: history,
//! `seq` and `epoch` survive, and clients resume with exactly what they missed.

use homeroom_shared::protocol::{ClientRequest as Req, LeaveReason, Role, ServerFrame as F};
use homeroom_tests::client::{Client, Connect};
use homeroom_tests::edge::Edge;
use homeroom_tests::tokens::Minter;
use std::time::{Duration, Instant};

#[tokio::test]
async fn history_seq_and_epoch_survive_a_restart_and_clients_resume() {
    let mut edge = Edge::start().await.expect("edge starts");
    let m = Minter::dev().unwrap();
    let connect = |edge: &Edge, user: &str, resume: Option<(String, u64)>| {
        let mut target = Connect::new(&edge.ws(), "restart-class", &m.token(user, Role::Student));
        target.resume = resume;
        target
    };
    let mut a = Client::connect(&connect(&edge, "a", None)).await.unwrap();
    let mut b = Client::connect(&connect(&edge, "b", None)).await.unwrap();
    for i in 0..3 {
        a.request(Req::ChatSend { text: format!("before {i}"), reply_to: None }).await.unwrap();
    }
    let last_sent = |f: &F| matches!(f, F::ChatMessage { message, .. } if message.text == "before 2");
    b.expect("before 2", Duration::from_secs(10), last_sent).await.unwrap();
    let epoch = a.welcome.epoch.clone();
    let a_last = *a.log.last().unwrap();
    let b_last = *b.log.last().unwrap_or(&b.welcome.seq);
    assert_eq!(a_last, b_last);

    let restart = edge.restart().await.expect("edge restarts");
    let back = Instant::now();
    let mut a2 = Client::connect(&connect(&edge, "a", Some((epoch.clone(), a_last)))).await.unwrap();
    let mut b2 = Client::connect(&connect(&edge, "b", Some((epoch.clone(), b_last)))).await.unwrap();
    let resumed_in = back.elapsed();
    eprintln!("restart: wrangler dev back in {restart:?}, both clients resumed {resumed_in:?} later");

    assert_eq!(a2.welcome.epoch, epoch, "epoch survives");
    assert!(a2.welcome.resumed && b2.welcome.resumed);
    assert!(a2.welcome.seq > a_last, "seq continues: the stale participants left after the restart");
    // Each replay is exactly what its client missed: every seq after the last it saw, up to its welcome's.
    for (who, client, last) in [("a", &mut a2, a_last), ("b", &mut b2, b_last)] {
        let upto = client.welcome.seq;
        let replay = client.frames_until_seq(upto, Duration::from_secs(10)).await.unwrap();
        let seqs: Vec<u64> = replay.iter().filter_map(F::seq).collect();
        assert_eq!(seqs, (last + 1..=upto).collect::<Vec<_>>(), "{who}'s replay, gap-free: {replay:?}");
        assert!(
            replay.iter().any(|f| matches!(f, F::ParticipantLeft { reason: LeaveReason::Disconnected, .. })),
            "{who} hears who the restart disconnected"
        );
    }

    // History is intact and new messages continue the same sequence.
    let fresh = Client::connect(&connect(&edge, "c", None)).await.unwrap();
    let texts: Vec<&str> = fresh.welcome.history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["before 0", "before 1", "before 2"]);
    let ack = b2.request(Req::ChatSend { text: "after".into(), reply_to: None }).await.unwrap();
    match ack {
        F::Ack(ack) => assert!(ack.seq.unwrap() > fresh.welcome.seq, "the sequence goes on after the restart"),
        other => panic!("{other:?}"),
    }
    a2.expect(
        "after",
        Duration::from_secs(5),
        |f| matches!(f, F::ChatMessage { message, .. } if message.text == "after"),
    )
    .await
    .unwrap();
}
