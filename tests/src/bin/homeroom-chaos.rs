//! Chaos resume at full size: starts its own `wrangler dev`, runs [`homeroom_tests::chaos`] and prints a
//! report. `homeroom-chaos --clients 100 --messages 10000 --rate 100 --mean-drop-ms 2000`

use clap::Parser;
use homeroom_tests::chaos::{run, ChaosConfig};
use homeroom_tests::edge::Edge;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "Chaos resume: clients drop at random while chat flows; every log must match")]
struct Args {
    #[arg(long, default_value_t = 100)]
    clients: usize,
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Sender pace, messages per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Mean time between a client's drops.
    #[arg(long, default_value_t = 2000)]
    mean_drop_ms: u64,
    /// Use a running edge (ws://host:port) instead of starting one.
    #[arg(long)]
    url: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let vars = [
        ("RATE_BURST", "100000"),
        ("RATE_PER_SEC", "100000"),
        ("LOG_LIMIT", "50000"),
        ("ROOM_CAPACITY", "1000"),
        ("JOIN_BURST", "100000"),
    ];
    let edge = match &args.url {
        Some(_) => None,
        None => Some(Edge::start_with(&vars).await?),
    };
    let base = args.url.clone().or_else(|| edge.as_ref().map(Edge::ws)).unwrap_or_default();
    let messages = args.messages;
    let config = ChaosConfig {
        base,
        room: format!("chaos-{}", std::process::id()),
        clients: args.clients,
        messages,
        rate: args.rate,
        mean_drop_ms: args.mean_drop_ms,
        deadline: Duration::from_secs(60 + (messages as u64 / u64::from(args.rate.max(1))) * 3),
    };
    eprintln!("running {config:?}");
    let report = run(config).await?;
    println!(
        "| clients | messages | drops | resumes | snapshots | lost | duplicated | gaps | divergent | batches | time |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s |",
        report.clients,
        report.messages_sent,
        report.drops,
        report.resumes,
        report.snapshots,
        report.lost,
        report.duplicated,
        report.gaps,
        report.divergent_clients,
        report.batches,
        report.elapsed.as_secs_f64()
    );
    anyhow::ensure!(
        report.lost == 0 && report.duplicated == 0 && report.gaps == 0 && report.divergent_clients == 0,
        "logs differ"
    );
    Ok(())
}
