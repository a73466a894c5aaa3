//! Soak: many connected clients for a long time with steady chat; reports workerd's memory over time and
//! every error. `homeroom-soak --clients 1000 --rooms 10 --minutes 30 --rate 1`
//!
//! Each room has one sender posting `rate` messages per second; every client checks that its logged `seq`s
//! stay gap-free and counts error frames and unexpected closes. The tool starts its own `wrangler dev`
//! (or uses `--url`), samples the resident memory of the edge's workerd processes every `--sample-secs`, and
//! prints a table.

use clap::Parser;
use homeroom_shared::protocol::{ClientFrame, ClientRequest, Role, ServerFrame};
use homeroom_tests::client::{Client, Connect};
use homeroom_tests::edge::Edge;
use homeroom_tests::tokens::Minter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Soak: many clients, steady chat, memory over time")]
struct Args {
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Messages per second per room.
    #[arg(long, default_value_t = 1)]
    rate: u64,
    #[arg(long, default_value_t = 60)]
    sample_secs: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    errors: AtomicU64,
    closes: AtomicU64,
    gaps: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let vars = [("ROOM_CAPACITY", "5000"), ("RATE_BURST", "1000"), ("RATE_PER_SEC", "1000")];
    let edge = Edge::start_with(&vars).await?;
    let minter = Minter::dev()?;
    let counters = Arc::new(Counters::default());
    let deadline = Instant::now() + Duration::from_secs(args.minutes * 60);

    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let room = format!("soak-{}", i % args.rooms.max(1));
        let target = Connect::new(&edge.ws(), &room, &minter.token(&format!("soaker-{i}"), Role::Student));
        let client = Client::connect(&target).await?;
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move { listen(client, counters, deadline).await }));
    }
    for r in 0..args.rooms {
        let target =
            Connect::new(&edge.ws(), &format!("soak-{r}"), &minter.token(&format!("teacher-{r}"), Role::Teacher));
        let mut sender = Client::connect(&target).await?;
        let counters = counters.clone();
        let period = Duration::from_millis(1000 / args.rate.max(1));
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let frame = ClientFrame::with_rid(
                    format!("s{n}"),
                    ClientRequest::ChatSend { text: format!("steady message {n}"), reply_to: None },
                );
                if sender.send(&frame).await.is_err() {
                    counters.closes.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // Read acks (and the room's frames) until the next send.
                let until = Instant::now() + period;
                while Instant::now() < until {
                    match sender.next(until.saturating_duration_since(Instant::now())).await {
                        Ok(Some(ServerFrame::Error(_))) => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            counters.closes.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }
        }));
    }

    println!("| minute | workerd RSS (MiB) | deliveries | errors | unexpected closes | gaps |");
    println!("|---|---|---|---|---|---|");
    let start = Instant::now();
    let mut samples = Vec::new();
    loop {
        let rss = edge.workerd_rss_kib() / 1024;
        samples.push(rss);
        println!(
            "| {:.0} | {} | {} | {} | {} | {} |",
            start.elapsed().as_secs_f64() / 60.0,
            rss,
            counters.delivered.load(Ordering::Relaxed),
            counters.errors.load(Ordering::Relaxed),
            counters.closes.load(Ordering::Relaxed),
            counters.gaps.load(Ordering::Relaxed)
        );
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(
            Duration::from_secs(args.sample_secs).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    for t in tasks {
        let _ = t.await;
    }
    let first = samples.first().copied().unwrap_or(0);
    let last = samples.last().copied().unwrap_or(0);
    println!(
        "\n{} clients in {} rooms for {} min: RSS {first} MiB → {last} MiB; {} deliveries, {} errors, {} unexpected \
         closes, {} gaps",
        args.clients,
        args.rooms,
        args.minutes,
        counters.delivered.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
        counters.closes.load(Ordering::Relaxed),
        counters.gaps.load(Ordering::Relaxed)
    );
    let errors = counters.errors.load(Ordering::Relaxed) + counters.closes.load(Ordering::Relaxed);
    anyhow::ensure!(errors == 0 && counters.gaps.load(Ordering::Relaxed) == 0, "the soak saw errors");
    Ok(())
}

async fn listen(mut client: Client, counters: Arc<Counters>, deadline: Instant) {
    let mut position = client.welcome.seq;
    let mut last_ping = Instant::now();
    while Instant::now() < deadline {
        if last_ping.elapsed() > Duration::from_secs(20) {
            if client.ping(Duration::from_secs(10)).await.is_err() {
                counters.closes.fetch_add(1, Ordering::Relaxed);
                return;
            }
            last_ping = Instant::now();
        }
        match client.next(Duration::from_secs(1)).await {
            Ok(Some(frame)) => {
                if let Some(seq) = frame.seq() {
                    if seq != position + 1 {
                        counters.gaps.fetch_add(1, Ordering::Relaxed);
                    }
                    position = seq;
                }
                match frame {
                    ServerFrame::ChatMessage { .. } => {
                        counters.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    ServerFrame::Error(_) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            Ok(None) => {}
            Err(_) => {
                counters.closes.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
    client.close().await;
}
