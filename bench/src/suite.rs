//! The signaling suite: every scenario against every server in one run, with markdown tables at the end.
//!
//! For each target (Homeroom through the wrangler proxy, Homeroom directly on the inner workerd, socket.io,
//! ws), on a fresh server pinned to `server_cpus` (the load tool itself is pinned by
//! `scripts/bench-signaling.sh` to another core):
//! 1. idle memory ([`crate::idle`]) with `idle_conns` members;
//! 2. join storm ([`crate::storm`]), measured after the same storm into another room has warmed the server;
//! 3. a fan-out series ([`crate::fanout`]) for each member count, rates in increasing steps until one fails.
//!    A member count is skipped when the idle run's descriptors per connection say a server process would run
//!    out of file descriptors (the wrangler proxy needs several per WebSocket).
//!
//! Then the multi-room question: `multi_rooms` rooms busy at once, Homeroom's workerds allowed on *both*
//! cores, to see whether the inner workerd ever uses more than one core (the per-thread CPU shows which
//! thread does the work).
//!
//! In `--smoke` mode everything is tiny and servers are reused across scenarios, so it ends in under a
//! minute and only proves the tools work.

use crate::fanout::{self, FanoutConfig, SeriesResult};
use crate::idle::{self, IdleConfig, IdleResult, RoomState};
use crate::procfs;
use crate::servers::{Server, Target};
use crate::storm::{self, StormConfig, StormResult};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static ROOM_SEQ: AtomicU32 = AtomicU32::new(0);

fn room_name(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), ROOM_SEQ.fetch_add(1, Ordering::Relaxed))
}

/// A part of the suite.
/// The pause between the warm-up storm and the measured one (the warm-up's members have gone by then).
const STORM_SETTLE: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Scenario {
    Idle,
    Storm,
    Fanout,
    Multi,
}

/// What the suite runs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SuiteConfig {
    pub smoke: bool,
    /// The parts to run.
    pub scenarios: Vec<Scenario>,
    pub targets: Vec<Target>,
    pub members: Vec<usize>,
    pub rates: Vec<u32>,
    pub step: Duration,
    pub warmup: Duration,
    pub payload: usize,
    pub idle_conns: usize,
    pub storm_joins: usize,
    pub storm_over: Duration,
    pub multi_rooms: Vec<usize>,
    pub multi_members: usize,
    pub multi_rate: u32,
    pub multi_targets: Vec<Target>,
    /// CPUs for the servers (`taskset -c` syntax).
    pub server_cpus: String,
    /// CPUs for Homeroom's workerds in the multi-room runs.
    pub multi_cpus: String,
    pub join_concurrency: usize,
    pub join_budget: Duration,
    pub stop_p99_ms: f64,
    pub stop_loss_pct: f64,
}

impl SuiteConfig {
    /// The full suite.
    pub fn full() -> Self {
        SuiteConfig {
            smoke: false,
            scenarios: vec![Scenario::Idle, Scenario::Storm, Scenario::Fanout, Scenario::Multi],
            targets: vec![Target::HomeroomProxy, Target::HomeroomDirect, Target::Socketio, Target::Ws],
            members: vec![100, 1000, 5000],
            rates: vec![10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000],
            step: Duration::from_secs(10),
            warmup: Duration::from_secs(3),
            payload: 200,
            idle_conns: 1000,
            storm_joins: 500,
            storm_over: Duration::from_secs(5),
            multi_rooms: vec![1, 2, 4],
            multi_members: 100,
            multi_rate: 200,
            multi_targets: vec![Target::HomeroomDirect, Target::HomeroomProxy],
            server_cpus: "0".into(),
            multi_cpus: "0,1".into(),
            join_concurrency: 50,
            join_budget: Duration::from_secs(900),
            stop_p99_ms: 1000.0,
            stop_loss_pct: 1.0,
        }
    }

    /// Tiny sizes, every adapter and scenario, under a minute.
    pub fn smoke() -> Self {
        SuiteConfig {
            smoke: true,
            members: vec![5],
            rates: vec![10, 50],
            step: Duration::from_secs(1),
            warmup: Duration::ZERO,
            idle_conns: 10,
            storm_joins: 10,
            storm_over: Duration::from_secs(1),
            multi_rooms: vec![2],
            multi_members: 5,
            multi_rate: 20,
            multi_targets: vec![Target::HomeroomDirect],
            join_concurrency: 10,
            join_budget: Duration::from_secs(30),
            ..Self::full()
        }
    }
}

/// The machine and software a run used.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Environment {
    pub cpu_model: String,
    pub cores: usize,
    pub mem_gib: f64,
    pub os: String,
    pub kernel: String,
    pub node: String,
    pub wrangler: String,
    pub workerd: String,
    pub socketio: String,
    pub ws: String,
    pub git_head: String,
    /// `git status --short` of edge/ and shared/ (what the measured Worker was built from).
    pub edge_changes: Vec<String>,
    pub load_tool_cpus: String,
    pub fd_limit: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn npm_version(package: &str) -> String {
    let path = homeroom_tests::repo_root().join("node_modules").join(package).join("package.json");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("version").and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .current_dir(homeroom_tests::repo_root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Describes this machine.
pub fn environment() -> Environment {
    let cpuinfo = read("/proc/cpuinfo");
    let status = read("/proc/self/status");
    let field = |text: &str, key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().trim_start_matches(':').trim().to_owned())
    };
    Environment {
        cpu_model: field(&cpuinfo, "model name").unwrap_or_default(),
        cores: cpuinfo.lines().filter(|l| l.starts_with("processor")).count(),
        mem_gib: field(&read("/proc/meminfo"), "MemTotal")
            .and_then(|v| v.split_whitespace().next().and_then(|k| k.parse::<f64>().ok()))
            .map(|kb| kb / 1024.0 / 1024.0)
            .unwrap_or(0.0),
        os: field(&read("/etc/os-release"), "PRETTY_NAME=").unwrap_or_default().trim_matches('"').to_owned(),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        node: command_output("node", &["--version"]),
        wrangler: npm_version("wrangler"),
        workerd: npm_version("workerd"),
        socketio: npm_version("socket.io"),
        ws: npm_version("ws"),
        git_head: command_output("git", &["rev-parse", "--short", "HEAD"]),
        edge_changes: command_output("git", &["status", "--short", "--", "edge", "shared"])
            .lines()
            .map(str::to_owned)
            .collect(),
        load_tool_cpus: field(&status, "Cpus_allowed_list").unwrap_or_default(),
        fd_limit: procfs::fd_limit(std::process::id()).map(|l| l.to_string()).unwrap_or_default(),
        loadavg_start: read("/proc/loadavg").trim().to_owned(),
        loadavg_end: String::new(),
    }
}

/// One scenario's outcome for one target.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Entry<T> {
    pub target: Target,
    /// Members (fan-out), connections (idle), joins (storm) or rooms (multi-room).
    pub size: usize,
    pub result: Option<T>,
    /// Why there is no result (skipped, or the error).
    pub note: Option<String>,
}

/// Everything a suite run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SuiteResult {
    pub config: SuiteConfig,
    pub env: Environment,
    pub idle: Vec<Entry<IdleResult>>,
    pub room_state: Option<RoomState>,
    pub storms: Vec<Entry<StormResult>>,
    pub series: Vec<Entry<SeriesResult>>,
    pub multi: Vec<Entry<SeriesResult>>,
    pub secs: f64,
}

/// Holds the current server; starts a fresh one unless reuse is allowed and it fits.
struct Pool {
    reuse: bool,
    current: Option<Server>,
}

impl Pool {
    async fn get(&mut self, target: Target, cpus: &str) -> anyhow::Result<&mut Server> {
        let fits = self.current.as_ref().is_some_and(|s| s.serves(target) && s.alive());
        if !(self.reuse && fits) {
            if let Some(mut old) = self.current.take() {
                old.stop();
            }
            eprintln!("  starting {} on CPUs {cpus}", target.name());
            let server = Server::start(target, cpus).await?;
            eprintln!("  {} ready at {} ({:?})", target.name(), server.base, server.watched);
            self.current = Some(server);
        }
        let server = self.current.as_mut().ok_or_else(|| anyhow::anyhow!("no server"))?;
        server.retarget(target)?;
        if server.cpus != cpus {
            server.pin(cpus)?;
        }
        Ok(server)
    }

    fn stop(&mut self) {
        if let Some(mut s) = self.current.take() {
            s.stop();
        }
    }
}

/// The data-path processes of a target (what its CPU and memory figures cover).
fn watched_for(server: &Server) -> Vec<procfs::Watched> {
    server.watched.clone()
}

/// Would `members` connections exceed a server process's descriptor limit, judging by the idle run?
fn fd_shortage(idle: &[Entry<IdleResult>], target: Target, members: usize) -> Option<String> {
    let entry = idle.iter().find(|e| e.target == target)?;
    let result = entry.result.as_ref()?;
    for p in &result.procs {
        let need = p.fds_before as f64 + p.fds_per_conn * members as f64;
        if p.fd_limit > 0 && p.fds_per_conn > 0.5 && need > p.fd_limit as f64 * 0.95 {
            return Some(format!(
                "not run: the {} uses {:.1} file descriptors per WebSocket (idle run), so {members} members need ≈ {:.0} \
                 of its limit of {}",
                p.label, p.fds_per_conn, need, p.fd_limit
            ));
        }
    }
    None
}

/// Runs the suite.
pub async fn run(cfg: &SuiteConfig) -> anyhow::Result<SuiteResult> {
    let start = Instant::now();
    let env = environment();
    eprintln!("signaling suite ({}): {env:?}", if cfg.smoke { "smoke" } else { "full" });
    let mut pool = Pool { reuse: cfg.smoke, current: None };
    let mut result = SuiteResult {
        config: cfg.clone(),
        env,
        idle: Vec::new(),
        room_state: None,
        storms: Vec::new(),
        series: Vec::new(),
        multi: Vec::new(),
        secs: 0.0,
    };
    if cfg.targets.iter().any(|t| t.is_homeroom()) {
        result.room_state = Some(idle::room_state(50));
    }
    for &target in &cfg.targets {
        eprintln!("\n== {}", target.name());
        // 1. Idle memory.
        if cfg.scenarios.contains(&Scenario::Idle) {
            let idle = async {
                let server = pool.get(target, &cfg.server_cpus).await?;
                let c = IdleConfig {
                    adapter: target.adapter(),
                    base: server.base.clone(),
                    room: room_name("idle"),
                    connections: cfg.idle_conns,
                    join_concurrency: cfg.join_concurrency,
                    watched: watched_for(server),
                    quiet_wait: if cfg.smoke { Duration::from_millis(500) } else { Duration::from_secs(5) },
                    later_wait: if cfg.smoke { Duration::ZERO } else { Duration::from_secs(20) },
                };
                idle::run(&c).await
            }
            .await;
            eprintln!("  idle: {idle:?}");
            result.idle.push(entry(target, cfg.idle_conns, idle));
        }
        // 2. Join storm.
        if cfg.scenarios.contains(&Scenario::Storm) {
            let storm = async {
                let server = pool.get(target, &cfg.server_cpus).await?;
                let mut c = StormConfig {
                    adapter: target.adapter(),
                    base: server.base.clone(),
                    room: room_name("storm-warm-up"),
                    joins: cfg.storm_joins,
                    over: cfg.storm_over,
                    watched: watched_for(server),
                };
                // The same storm into another room first, on every server: the measured one then sees a
                // warm process (a fresh workerd is still compiling the Worker's wasm to optimized code in
                // its first seconds of load, on the same core: first storms read 100–400 ms at p99).
                let warm_up = storm::run(&c).await?;
                eprintln!("  join storm (warm-up, not reported): p99 {:.1} ms", warm_up.p99_ms);
                tokio::time::sleep(STORM_SETTLE).await;
                c.room = room_name("storm");
                storm::run(&c).await
            }
            .await;
            eprintln!("  join storm: {storm:?}");
            result.storms.push(entry(target, cfg.storm_joins, storm));
        }
        // 3. Fan-out series.
        let members = if cfg.scenarios.contains(&Scenario::Fanout) { cfg.members.as_slice() } else { &[] };
        for &members in members {
            if let Some(reason) = fd_shortage(&result.idle, target, members) {
                eprintln!("  {members} members: {reason}");
                result.series.push(Entry { target, size: members, result: None, note: Some(reason) });
                continue;
            }
            eprintln!("  fan-out, {members} members");
            let series = async {
                let server = pool.get(target, &cfg.server_cpus).await?;
                let c = FanoutConfig {
                    adapter: target.adapter(),
                    base: server.base.clone(),
                    rooms: 1,
                    members,
                    rates: cfg.rates.clone(),
                    step: cfg.step,
                    warmup: cfg.warmup,
                    payload: cfg.payload,
                    join_concurrency: cfg.join_concurrency,
                    join_budget: cfg.join_budget,
                    stop_p99_ms: cfg.stop_p99_ms,
                    stop_loss_pct: cfg.stop_loss_pct,
                    watched: watched_for(server),
                    room_prefix: room_name("fan"),
                };
                let r = fanout::run_series(&c).await;
                if !server.alive() {
                    eprintln!("  the server died; its log:\n{}", server.log_tail());
                }
                r
            }
            .await;
            if let Ok(s) = &series {
                eprintln!("  joined {} in {:.1} s; stopped: {:?}", s.joined, s.join_secs, s.stopped);
            }
            result.series.push(entry(target, members, series));
        }
        if !cfg.smoke {
            pool.stop();
        }
    }
    // Multi-room: do more busy rooms use more cores?
    let multi = if cfg.scenarios.contains(&Scenario::Multi) { cfg.multi_targets.as_slice() } else { &[] };
    for &target in multi {
        for &rooms in &cfg.multi_rooms {
            eprintln!("\n== multi-room: {} rooms on {} (server CPUs {})", rooms, target.name(), cfg.multi_cpus);
            let series = async {
                if !cfg.smoke {
                    pool.stop();
                }
                let server = pool.get(target, &cfg.multi_cpus).await?;
                let c = FanoutConfig {
                    adapter: target.adapter(),
                    base: server.base.clone(),
                    rooms,
                    members: cfg.multi_members,
                    rates: vec![cfg.multi_rate],
                    step: cfg.step,
                    warmup: cfg.warmup,
                    payload: cfg.payload,
                    join_concurrency: cfg.join_concurrency,
                    join_budget: cfg.join_budget,
                    stop_p99_ms: f64::INFINITY,
                    stop_loss_pct: 100.0,
                    watched: watched_for(server),
                    room_prefix: room_name("multi"),
                };
                fanout::run_series(&c).await
            }
            .await;
            result.multi.push(entry(target, rooms, series));
        }
    }
    pool.stop();
    result.env.loadavg_end = read("/proc/loadavg").trim().to_owned();
    result.secs = start.elapsed().as_secs_f64();
    Ok(result)
}

fn entry<T>(target: Target, size: usize, r: anyhow::Result<T>) -> Entry<T> {
    match r {
        Ok(r) => Entry { target, size, result: Some(r), note: None },
        Err(e) => Entry { target, size, result: None, note: Some(format!("error: {e:#}")) },
    }
}

/// Where results are written: `target/bench/signaling-<unix time>.{json,md}`.
pub fn output_paths() -> (PathBuf, PathBuf) {
    let dir = homeroom_tests::repo_root().join("target/bench");
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    (dir.join(format!("signaling-{stamp}.json")), dir.join(format!("signaling-{stamp}.md")))
}
