//! `homeroom-load`: the signaling load tool. One binary, three wire protocols (`--adapter homeroom | socketio |
//! ws`), the same load for each.
//!
//! ```text
//! # against a running server (report the server's CPU and memory with --pid LABEL=PID, repeatable):
//! homeroom-load fanout --adapter ws --url ws://127.0.0.1:9000 --members 1000 --rates 10,20,50 --pid node=1234
//! homeroom-load fanout --adapter homeroom --url ws://127.0.0.1:8787 --edge-port 8787 --members 100 --rates 100
//! homeroom-load join-storm --adapter socketio --url ws://127.0.0.1:9001 --joins 500 --over-secs 5
//! homeroom-load idle --adapter homeroom --url ws://127.0.0.1:8787 --connections 1000 --edge-port 8787
//! homeroom-load room-state
//! # start one server pinned to CPU 0 and print its URLs and processes (for the commands above):
//! homeroom-load serve --target homeroom-proxy --cpus 0
//! # the whole suite (starts every server itself; scripts/bench-signaling.sh pins it to CPU 1):
//! homeroom-load suite [--smoke]
//! ```
//!
//! Homeroom members use development tokens (`JWT_SECRET` of `.dev.vars`), so the target must be a
//! `wrangler dev` of this repository with a raised rate limit and room capacity (see
//! `homeroom_bench::servers::HOMEROOM_VARS`). `--edge-port` names `wrangler dev`'s public port: the tool then
//! finds its proxy and inner workerd processes and reports both.

use clap::{Parser, Subcommand};
use homeroom_bench::adapter::Adapter;
use homeroom_bench::procfs::Watched;
use homeroom_bench::servers::{find_edge_procs, Server, Target};
use homeroom_bench::suite::{Scenario, SuiteConfig};
use homeroom_bench::{fanout, idle, report, storm, suite};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "Signaling load for Homeroom, socket.io and ws: fan-out, join storm, idle memory, and the suite")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Debug, Clone)]
struct ServerArgs {
    #[arg(long, value_enum)]
    adapter: Adapter,
    /// ws://HOST:PORT of the server.
    #[arg(long)]
    url: String,
    /// A server process to report on, as LABEL=PID (repeatable).
    #[arg(long = "pid", value_parser = parse_pid)]
    pids: Vec<Watched>,
    /// wrangler dev's public port: report its proxy and inner workerd processes.
    #[arg(long)]
    edge_port: Option<u16>,
}

fn parse_pid(s: &str) -> Result<Watched, String> {
    let (label, pid) = s.split_once('=').ok_or_else(|| format!("{s:?} is not LABEL=PID"))?;
    let pid = pid.parse().map_err(|_| format!("{pid:?} is not a process id"))?;
    Ok(Watched { label: label.to_owned(), pid })
}

fn parse_rates(s: &str) -> Result<Vec<u32>, String> {
    s.split(',').map(|r| r.trim().parse::<u32>().map_err(|_| format!("{r:?} is not a rate"))).collect()
}

fn parse_sizes(s: &str) -> Result<Vec<usize>, String> {
    s.split(',').map(|r| r.trim().parse::<usize>().map_err(|_| format!("{r:?} is not a count"))).collect()
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// N members per room, one sender per room at each rate in turn.
    Fanout {
        #[command(flatten)]
        target: ServerArgs,
        #[arg(long, default_value_t = 100)]
        members: usize,
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        /// Messages per second per room, comma-separated, one step each.
        #[arg(long, default_value = "10,20,50,100", value_parser = parse_rates)]
        rates: std::vec::Vec<u32>,
        #[arg(long, default_value_t = 10.0)]
        step_secs: f64,
        #[arg(long, default_value_t = 3.0)]
        warmup_secs: f64,
        #[arg(long, default_value_t = 200)]
        payload: usize,
        /// Stop the series when p99 exceeds this (ms).
        #[arg(long, default_value_t = 1000.0)]
        stop_p99_ms: f64,
        /// Stop the series when loss exceeds this (%).
        #[arg(long, default_value_t = 1.0)]
        stop_loss_pct: f64,
        #[arg(long, default_value_t = 50)]
        join_concurrency: usize,
        #[arg(long, default_value_t = 900)]
        join_budget_secs: u64,
        /// Print the result as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// `joins` members join one fresh room, paced evenly over `over-secs`.
    JoinStorm {
        #[command(flatten)]
        target: ServerArgs,
        #[arg(long, default_value_t = 500)]
        joins: usize,
        #[arg(long, default_value_t = 5.0)]
        over_secs: f64,
    },
    /// Memory and descriptors per idle connection.
    Idle {
        #[command(flatten)]
        target: ServerArgs,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
    },
    /// Starts one server pinned to CPUs and prints its URL and processes, then runs until killed or `--secs`.
    Serve {
        #[arg(long, value_enum)]
        target: Target,
        #[arg(long, default_value = "0")]
        cpus: String,
        #[arg(long, default_value_t = 3600)]
        secs: u64,
    },
    /// Homeroom's own per-connection state, measured on the room core.
    RoomState {
        #[arg(long, default_value_t = 50)]
        connections: usize,
    },
    /// Every scenario against Homeroom (proxy and direct), socket.io and ws; prints markdown tables.
    Suite {
        /// Tiny sizes, under a minute: keeps the tools working in CI.
        #[arg(long)]
        smoke: bool,
        /// Only these targets.
        #[arg(long, value_enum, value_delimiter = ',')]
        targets: Option<Vec<Target>>,
        /// Only these parts of the suite.
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Option<Vec<Scenario>>,
        /// Member counts for the fan-out series (comma-separated).
        #[arg(long, value_parser = parse_sizes)]
        members: Option<std::vec::Vec<usize>>,
        /// Rates for the fan-out series (comma-separated).
        #[arg(long, value_parser = parse_rates)]
        rates: Option<std::vec::Vec<u32>>,
        /// Seconds per rate step.
        #[arg(long)]
        step_secs: Option<f64>,
        /// Skip the multi-room runs.
        #[arg(long)]
        no_multi: bool,
        /// Rooms for the multi-room runs (comma-separated).
        #[arg(long, value_parser = parse_sizes)]
        multi_rooms: Option<std::vec::Vec<usize>>,
        /// Messages per second per room in the multi-room runs.
        #[arg(long)]
        multi_rate: Option<u32>,
        /// CPUs for the servers.
        #[arg(long)]
        server_cpus: Option<String>,
    },
}

async fn watched(target: &ServerArgs) -> anyhow::Result<Vec<Watched>> {
    let mut pids = target.pids.clone();
    if let Some(port) = target.edge_port {
        let procs = find_edge_procs(port).await?;
        eprintln!("wrangler dev on {port}: {procs:?} (inner entry: ws://127.0.0.1:{})", procs.inner_port);
        pids.push(Watched { label: "inner workerd".into(), pid: procs.inner });
        pids.push(Watched { label: "proxy workerd".into(), pid: procs.proxy });
    }
    Ok(pids)
}

fn room(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let limit = homeroom_bench::raise_fd_limit();
    eprintln!("open-file limit: {limit}");
    match args.command {
        Cmd::Fanout {
            target,
            members,
            rooms,
            rates,
            step_secs,
            warmup_secs,
            payload,
            stop_p99_ms,
            stop_loss_pct,
            join_concurrency,
            join_budget_secs,
            json,
        } => {
            anyhow::ensure!(
                (members * rooms) as u64 + 100 < limit,
                "{} connections need more than the open-file limit of {limit}: raise `ulimit -n`",
                members * rooms
            );
            let cfg = fanout::FanoutConfig {
                adapter: target.adapter,
                base: target.url.clone(),
                rooms,
                members,
                rates,
                step: Duration::from_secs_f64(step_secs),
                warmup: Duration::from_secs_f64(warmup_secs),
                payload,
                join_concurrency,
                join_budget: Duration::from_secs(join_budget_secs),
                stop_p99_ms,
                stop_loss_pct,
                watched: watched(&target).await?,
                room_prefix: room("fan"),
            };
            let result = fanout::run_series(&cfg).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                println!(
                    "joined {} of {} in {:.1} s ({} non-benchmark frames); stopped: {:?}",
                    result.joined,
                    members * rooms,
                    result.join_secs,
                    result.join_frames,
                    result.stopped
                );
                println!("| msg/s | offered/s | delivered/s | p50 ms | p99 ms | max ms | loss % | server CPU % (µs/delivery) | client CPU % |");
                println!("|---|---|---|---|---|---|---|---|---|");
                for s in &result.steps {
                    let cpu: Vec<String> = s
                        .server
                        .iter()
                        .map(|u| format!("{} {:.0} ({:.1})", u.usage.label, u.usage.cpu_pct, u.cpu_us_per_delivery))
                        .collect();
                    println!(
                        "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.0} |",
                        s.rate,
                        s.offered_per_sec,
                        s.delivered_per_sec,
                        s.p50_ms,
                        s.p99_ms,
                        s.max_ms,
                        s.loss_pct,
                        cpu.join(", "),
                        s.client_cpu_pct
                    );
                }
            }
        }
        Cmd::JoinStorm { target, joins, over_secs } => {
            let cfg = storm::StormConfig {
                adapter: target.adapter,
                base: target.url.clone(),
                room: room("storm"),
                joins,
                over: Duration::from_secs_f64(over_secs),
                watched: watched(&target).await?,
            };
            println!("{}", serde_json::to_string_pretty(&storm::run(&cfg).await?)?);
        }
        Cmd::Idle { target, connections } => {
            let cfg = idle::IdleConfig {
                adapter: target.adapter,
                base: target.url.clone(),
                room: room("idle"),
                connections,
                join_concurrency: 50,
                watched: watched(&target).await?,
                quiet_wait: Duration::from_secs(5),
                later_wait: Duration::from_secs(20),
            };
            println!("{}", serde_json::to_string_pretty(&idle::run(&cfg).await?)?);
        }
        Cmd::Serve { target, cpus, secs } => {
            let server = Server::start(target, &cpus).await?;
            println!("{} at {} on CPUs {cpus}", target.name(), server.base);
            for w in &server.watched {
                println!("  {} pid {}", w.label, w.pid);
            }
            if let Some(e) = &server.edge {
                println!("  proxy: ws://127.0.0.1:{}  inner: ws://127.0.0.1:{}", server.port, e.inner_port);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            drop(server);
        }
        Cmd::RoomState { connections } => {
            println!("{}", serde_json::to_string_pretty(&idle::room_state(connections))?);
        }
        Cmd::Suite {
            smoke,
            targets,
            only,
            members,
            rates,
            step_secs,
            no_multi,
            multi_rooms,
            multi_rate,
            server_cpus,
        } => {
            let mut cfg = if smoke { SuiteConfig::smoke() } else { SuiteConfig::full() };
            if let Some(t) = targets {
                cfg.multi_targets.retain(|m| t.contains(m));
                cfg.targets = t;
            }
            if let Some(m) = members {
                cfg.members = m;
            }
            if let Some(o) = only {
                cfg.scenarios = o;
            }
            if let Some(r) = rates {
                cfg.rates = r;
            }
            if let Some(s) = step_secs {
                cfg.step = Duration::from_secs_f64(s);
            }
            if no_multi {
                cfg.multi_targets.clear();
            }
            if let Some(m) = multi_rooms {
                cfg.multi_rooms = m;
            }
            if let Some(r) = multi_rate {
                cfg.multi_rate = r;
            }
            if let Some(c) = server_cpus {
                cfg.server_cpus = c;
            }
            let biggest = cfg.members.iter().max().copied().unwrap_or(0).max(cfg.idle_conns);
            anyhow::ensure!(
                biggest as u64 + 200 < limit,
                "{biggest} connections need more than the open-file limit of {limit}: raise `ulimit -n`"
            );
            let result = suite::run(&cfg).await?;
            let md = report::markdown(&result);
            let (json_path, md_path) = suite::output_paths();
            if let Some(dir) = json_path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&json_path, serde_json::to_string_pretty(&result)?)?;
            std::fs::write(&md_path, &md)?;
            println!("{md}");
            eprintln!("results: {} and {}", md_path.display(), json_path.display());
            if smoke {
                smoke_check(&cfg, &result)?;
            }
        }
    }
    Ok(())
}

/// In smoke mode every scenario must have produced a result with deliveries — and every scenario asked for
/// must be there at all (a scenario that produced nothing would otherwise pass by having nothing to check).
fn smoke_check(cfg: &SuiteConfig, r: &suite::SuiteResult) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let asked = |s: Scenario| cfg.scenarios.contains(&s);
    for (scenario, name, produced) in [
        (Scenario::Idle, "idle", r.idle.len()),
        (Scenario::Storm, "join storm", r.storms.len()),
        (Scenario::Fanout, "fan-out", r.series.len()),
    ] {
        if asked(scenario) && produced < cfg.targets.len() {
            problems.push(format!("{name}: {produced} results for {} targets", cfg.targets.len()));
        }
    }
    for e in &r.idle {
        if e.result.as_ref().is_none_or(|x| x.failed > 0) {
            problems.push(format!(
                "idle {}: {:?}",
                e.target.name(),
                e.note.clone().or(e.result.as_ref().and_then(|x| x.first_error.clone()))
            ));
        }
    }
    for e in &r.storms {
        if e.result.as_ref().is_none_or(|x| x.failed > 0) {
            problems.push(format!(
                "join storm {}: {:?}",
                e.target.name(),
                e.note.clone().or(e.result.as_ref().and_then(|x| x.first_error.clone()))
            ));
        }
    }
    for e in r.series.iter().chain(&r.multi) {
        match &e.result {
            Some(s) if !s.steps.is_empty() && s.steps.iter().all(|x| x.received > 0 && x.loss == 0) => {}
            Some(s) => problems.push(format!("fan-out {} ({}): {:?}", e.target.name(), e.size, s.stopped)),
            None => problems.push(format!("fan-out {} ({}): {:?}", e.target.name(), e.size, e.note)),
        }
    }
    anyhow::ensure!(problems.is_empty(), "smoke run failed:\n{}", problems.join("\n"));
    eprintln!("smoke: every adapter and scenario worked");
    Ok(())
}
