//! Restart in the middle of a class: 100 clients, `wrangler dev` killed and restarted on the same storage;
//! every client reconnects with resume. History, seq and epoch survive; reports the time until 99 % of the
//! clients are back (figures in docs/reliability.md).

use homeroom_shared::protocol::{ClientRequest as Req, Role};
use homeroom_tests::client::{Client, Connect};
use homeroom_tests::edge::Edge;
use homeroom_tests::tokens::Minter;
use std::time::{Duration, Instant};

const CLIENTS: usize = 100;

#[tokio::test]
async fn a_class_of_100_is_back_after_a_restart() {
    let mut edge = Edge::start_with(&[("ROOM_CAPACITY", "1000")]).await.expect("edge starts");
    let m = Minter::dev().unwrap();
    let target =
        |edge: &Edge, i: usize| Connect::new(&edge.ws(), "big-class", &m.token(&format!("s{i}"), Role::Student));
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(Client::connect(&target(&edge, i)).await.expect("joins"));
    }
    for i in 0..5 {
        clients[0].request(Req::ChatSend { text: format!("before {i}"), reply_to: None }).await.unwrap();
    }
    // Everyone catches up to the same position.
    let mut positions = Vec::new();
    for c in clients.iter_mut() {
        let _ = c.drain(Duration::from_millis(50)).await.unwrap();
        positions.push((c.welcome.epoch.clone(), *c.log.last().unwrap_or(&c.welcome.seq)));
    }
    let epoch = positions[0].0.clone();
    drop(clients);

    let killed = Instant::now();
    let relaunch = edge.restart().await.expect("restarts");
    // All clients reconnect at once, each retrying every 100 ms until it is back.
    let mut tasks = Vec::new();
    for (i, (epoch, since)) in positions.into_iter().enumerate() {
        let mut t = target(&edge, i);
        t.resume = Some((epoch, since));
        tasks.push(tokio::spawn(async move {
            for _ in 0..300 {
                if let Ok(c) = Client::connect(&t).await {
                    return Some((killed.elapsed(), c.welcome.resumed, c.welcome.epoch.clone()));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        }));
    }
    let mut back = Vec::new();
    for task in tasks {
        let (at, resumed, e) = task.await.unwrap().expect("client came back");
        assert!(resumed, "resumed after the restart");
        assert_eq!(e, epoch, "epoch survives");
        back.push(at);
    }
    back.sort();
    let p99 = back[(back.len() * 99).div_ceil(100) - 1];
    eprintln!(
        "restart of a {CLIENTS}-client class: wrangler back in {relaunch:?}; 50% back {:?}, 99% back {p99:?}, all {:?} \
         after the kill",
        back[back.len() / 2],
        back[back.len() - 1]
    );
    assert!(p99 < Duration::from_secs(60));
    let fresh = Client::connect(&target(&edge, 999)).await.unwrap();
    assert_eq!(fresh.welcome.history.len(), 5, "history survives");
}
