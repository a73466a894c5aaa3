//! The servers under test, started fresh and pinned to chosen CPUs.
//!
//! - **Homeroom**: `wrangler dev` (real workerd, SQLite-backed Durable Objects) on a *snapshot* of the built
//!   Worker (`edge/build` and `web/` copied to `target/bench/edge-<pid>-<n>/`, with a `wrangler.toml` derived
//!   from the repository's minus its `[build]` section), so that other people rebuilding `edge/` while a
//!   benchmark runs cannot make wrangler reload the Worker under load. It runs under the same watchdog as the
//!   test harness (`tests/src/edge.rs`): its own process group, killed when this process goes away.
//!   `wrangler dev` runs two workerd processes: a **proxy** on the public port that relays every request and
//!   every WebSocket frame to an **inner** workerd where the Worker and its Durable Objects run. The inner one
//!   listens on a random port (`--socket-addr=entry=127.0.0.1:0`, told to wrangler over a control pipe); we
//!   find it by listing the inner process's listening sockets (`/proc/<pid>/fd` + `/proc/net/tcp`) and asking
//!   each for `GET /healthz`. Connecting there skips the development proxy, which production does not have.
//! - **socket.io** and **ws**: `node bench/servers/{socketio,ws}-server.mjs` (pinned versions from the root
//!   `package.json`), which print `listening <port>` and exit when this process goes away.
//!
//! Every server starts under `taskset -c <cpus>` (inherited by all its processes and threads), and
//! [`Server::pin`] re-pins all threads later (`taskset -a -p`) — except wrangler's CLI, which serves
//! nothing and is moved beside the load tool at the lowest priority ([`cli_pids`]).

use crate::procfs::{self, Watched};
use anyhow::Context;
use homeroom_tests::edge::free_port;
use homeroom_tests::repo_root;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Which server a run targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
pub enum Target {
    /// Homeroom through `wrangler dev`'s public port (proxy workerd → inner workerd).
    HomeroomProxy,
    /// Homeroom directly on the inner workerd's entry port.
    HomeroomDirect,
    /// socket.io 4.8.4 on Node.
    Socketio,
    /// ws 8.23 on Node.
    Ws,
}

impl Target {
    /// The protocol the load tool speaks to it.
    pub fn adapter(self) -> crate::adapter::Adapter {
        match self {
            Target::HomeroomProxy | Target::HomeroomDirect => crate::adapter::Adapter::Homeroom,
            Target::Socketio => crate::adapter::Adapter::Socketio,
            Target::Ws => crate::adapter::Adapter::Ws,
        }
    }

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Target::HomeroomProxy => "Homeroom via wrangler proxy",
            Target::HomeroomDirect => "Homeroom direct to inner workerd",
            Target::Socketio => "socket.io 4.8.4",
            Target::Ws => "ws 8.23.0",
        }
    }

    pub fn is_homeroom(self) -> bool {
        matches!(self, Target::HomeroomProxy | Target::HomeroomDirect)
    }
}

/// Worker vars for benchmarking: the sender may post up to 1000 msg/s (default bucket: 30 burst, 10/s), rooms
/// hold up to 10,000 participants (default 100), and silent members are not turned `idle` (and broadcast) after
/// 5 minutes during long joins. Everything else keeps its default (history persisted, 500 kept, log of 1000).
pub const HOMEROOM_VARS: &[(&str, &str)] =
    &[("RATE_BURST", "100000"), ("RATE_PER_SEC", "100000"), ("ROOM_CAPACITY", "10000"), ("IDLE_AFTER_SECS", "86400")];

/// Worker vars from `HOMEROOM_BENCH_VARS` (comma-separated `NAME:value`), for comparing a setting against the
/// defaults on servers started side by side. Names are upper-case words; anything else is skipped, with a note.
fn extra_vars() -> Vec<String> {
    let Ok(list) = std::env::var("HOMEROOM_BENCH_VARS") else { return Vec::new() };
    list.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let ok = pair.split_once(':').is_some_and(|(name, value)| {
                !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    && value.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            });
            if !ok {
                eprintln!("HOMEROOM_BENCH_VARS: {pair:?} skipped (expected NAME:value)");
            }
            ok
        })
        .map(str::to_owned)
        .collect()
}

/// The processes of a running `wrangler dev`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EdgeProcs {
    /// The wrangler CLI (node); not in the data path.
    pub wrangler: u32,
    /// The workerd on the public port.
    pub proxy: u32,
    /// The workerd running the Worker and its Durable Objects.
    pub inner: u32,
    /// The inner workerd's entry port.
    pub inner_port: u16,
}

#[derive(Debug)]
enum Handle {
    /// The process group to kill.
    Group(Child),
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    pub target: Target,
    /// `ws://127.0.0.1:PORT` to connect to.
    pub base: String,
    /// The processes whose CPU and memory are reported.
    pub watched: Vec<Watched>,
    /// For Homeroom: both workerds and wrangler.
    pub edge: Option<EdgeProcs>,
    /// The public port (the proxy's for Homeroom).
    pub port: u16,
    /// The CPUs its processes are pinned to (`taskset -c` syntax).
    pub cpus: String,
    pub log: PathBuf,
    handle: Option<Handle>,
}

impl Server {
    /// Starts a fresh server for `target` with its processes pinned to `cpus` (`taskset -c` syntax).
    pub async fn start(target: Target, cpus: &str) -> anyhow::Result<Server> {
        match target {
            Target::HomeroomProxy | Target::HomeroomDirect => {
                // The free ports are picked before wrangler binds them; another process may take one first.
                let mut attempt = 1;
                loop {
                    match start_edge(target, cpus).await {
                        Err(e) if attempt < 3 && format!("{e:#}").contains("Address already in use") => {
                            eprintln!("  wrangler dev lost a port race (attempt {attempt}); retrying on other ports");
                            attempt += 1;
                        }
                        other => return other,
                    }
                }
            }
            Target::Socketio => start_node(target, "socketio-server.mjs", cpus).await,
            Target::Ws => start_node(target, "ws-server.mjs", cpus).await,
        }
    }

    /// The same running server, addressed as `target` (Homeroom proxy ↔ direct share one `wrangler dev`).
    pub fn retarget(&mut self, target: Target) -> anyhow::Result<()> {
        let edge = self.edge.as_ref();
        match (target, edge) {
            (Target::HomeroomProxy, Some(_)) => self.base = format!("ws://127.0.0.1:{}", self.port),
            (Target::HomeroomDirect, Some(e)) => self.base = format!("ws://127.0.0.1:{}", e.inner_port),
            (t, _) if t == self.target => {}
            (t, _) => anyhow::bail!("a {} server cannot serve {}", self.target.name(), t.name()),
        }
        self.target = target;
        Ok(())
    }

    /// Whether this server can serve `target` (Homeroom proxy and direct share one `wrangler dev`).
    pub fn serves(&self, target: Target) -> bool {
        self.target == target || (self.target.is_homeroom() && target.is_homeroom())
    }

    /// Re-pins every thread of every server process to `cpus`. wrangler's CLI (its node processes and
    /// esbuild) goes beside the load tool instead, at the lowest priority ([`cli_pids`]).
    pub fn pin(&mut self, cpus: &str) -> anyhow::Result<()> {
        self.cpus = cpus.to_owned();
        let cli = self.edge.as_ref().map(cli_pids).unwrap_or_default();
        for pid in self.watched.iter().map(|w| w.pid).filter(|pid| !cli.contains(pid)) {
            procfs::pin(pid, cpus)?;
        }
        let beside_tool = procfs::own_cpus().unwrap_or_else(|| cpus.to_owned());
        for pid in cli {
            procfs::pin(pid, &beside_tool)?;
            procfs::deprioritize(pid)?;
        }
        Ok(())
    }

    /// Whether every watched process is still alive.
    pub fn alive(&self) -> bool {
        self.watched.iter().all(|w| procfs::cpu_ticks(w.pid).is_ok())
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Stops the server (kills its process group).
    pub fn stop(&mut self) {
        if let Some(Handle::Group(mut child)) = self.handle.take() {
            homeroom_tests::kill_process_group(&mut child);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bench_dir() -> PathBuf {
    repo_root().join("target/bench")
}

/// Copies the built Worker and assets into a private directory with its own `wrangler.toml`.
fn snapshot_edge(dir: &Path) -> anyhow::Result<()> {
    let root = repo_root();
    let build = root.join("edge/build");
    anyhow::ensure!(
        build.join("index.js").exists(),
        "edge/build/index.js is missing: run scripts/build-edge.sh (after scripts/bootstrap.sh)"
    );
    copy_dir(&build, &dir.join("build"))?;
    copy_dir(&root.join("web"), &dir.join("web"))?;
    std::fs::copy(root.join(".dev.vars"), dir.join(".dev.vars")).context("copying .dev.vars")?;
    let toml = std::fs::read_to_string(root.join("wrangler.toml")).context("reading wrangler.toml")?;
    let mut out = String::new();
    let mut in_build = false;
    for line in toml.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_build = trimmed == "[build]";
        }
        if in_build {
            continue;
        }
        if trimmed.starts_with("main") && trimmed.contains('=') {
            out.push_str("main = \"build/index.js\"\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(dir.join("wrangler.toml"), out)?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(".tmp") {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            copy_dir(&path, &to.join(&name))?;
        } else {
            std::fs::copy(&path, to.join(&name)).with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}

/// Spawns `command` (a shell snippet) in its own process group under a watchdog that kills the group when
/// this process exits.
fn spawn_group(command: &str, cwd: &Path, log: &Path) -> anyhow::Result<Child> {
    let script = format!(
        "ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; \
         {command} >>'{log}' 2>&1 & w=$!; \
         while kill -0 {parent} 2>/dev/null && kill -0 $w 2>/dev/null; do sleep 0.5; done; \
         kill -KILL 0",
        log = log.display(),
        parent = std::process::id(),
    );
    Ok(Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env("WRANGLER_SEND_METRICS", "false")
        .env("NO_COLOR", "1")
        .env("CI", "true")
        // No devtools inspector proxy in wrangler dev: it costs a quarter of a core under connection churn.
        .env(homeroom_tests::edge::NO_INSPECTOR_PROXY.0, homeroom_tests::edge::NO_INSPECTOR_PROXY.1)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?)
}

async fn start_edge(target: Target, cpus: &str) -> anyhow::Result<Server> {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = bench_dir().join(format!("edge-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    snapshot_edge(&dir)?;
    let port = free_port()?;
    let inspector = free_port()?;
    let wrangler = repo_root().join("node_modules/.bin/wrangler");
    anyhow::ensure!(wrangler.exists(), "{} is missing: run npm ci (scripts/bootstrap.sh)", wrangler.display());
    let mut command = format!(
        "taskset -c {cpus} '{}' dev --ip 127.0.0.1 --port {port} --inspector-port {inspector} --persist-to '{}' \
         --log-level warn",
        wrangler.display(),
        dir.join("state").display()
    );
    for (k, v) in HOMEROOM_VARS {
        command.push_str(&format!(" --var '{k}:{v}'"));
    }
    // A/B of a setting: `HOMEROOM_BENCH_VARS="COALESCE_SWEEP_CONNECTIONS:32,COALESCE_FLUSH_DUTY_PCT:60"`.
    for pair in extra_vars() {
        command.push_str(&format!(" --var '{pair}'"));
    }
    let log = dir.join("wrangler.log");
    let child = spawn_group(&command, &dir, &log)?;
    let mut server = Server {
        target,
        base: String::new(),
        watched: Vec::new(),
        edge: None,
        port,
        cpus: cpus.to_owned(),
        log,
        handle: Some(Handle::Group(child)),
    };
    wait_http_ok(&format!("http://127.0.0.1:{port}/healthz"), Duration::from_secs(90), &mut server).await?;
    let procs = find_edge_procs(port).await?;
    server.watched = vec![
        Watched { label: "inner workerd".into(), pid: procs.inner },
        Watched { label: "proxy workerd".into(), pid: procs.proxy },
        Watched { label: "wrangler (node)".into(), pid: procs.wrangler },
    ];
    server.edge = Some(procs);
    server.target = Target::HomeroomProxy;
    server.retarget(target)?;
    server.pin(cpus)?;
    Ok(server)
}

async fn wait_http_ok(url: &str, limit: Duration, server: &mut Server) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(r) = client.get(url).timeout(Duration::from_secs(2)).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if let Some(Handle::Group(child)) = server.handle.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                anyhow::bail!("wrangler dev exited ({status}):\n{}", server.log_tail());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("wrangler dev not ready on {url} after {limit:?}:\n{}", server.log_tail())
}

/// wrangler's CLI processes: the wrangler node process, the `wrangler` launcher above it and the helpers
/// below it (esbuild) — everything of `wrangler dev` but the two workerds. None of them is in the data path,
/// but wrangler's V8 runs major collections some seconds after start-up (≈ 150 ms of a core, several times
/// in a row, `perf`: `ConcurrentMarking::RunMajor`); on the server's core that stalled every join of a
/// storm behind it (p99 60–155 ms in about one storm in three). So [`Server::pin`] moves them beside the
/// load tool at the lowest priority (docs/benchmarks.md, "Join storm").
fn cli_pids(edge: &EdgeProcs) -> Vec<u32> {
    let procs = procfs::processes();
    let mut pids = vec![edge.wrangler];
    if let Some((_, parent)) = procs.get(&edge.wrangler) {
        if procs.get(parent).is_some_and(|(comm, _)| comm == "node") {
            pids.push(*parent);
        }
    }
    pids.extend(
        procs
            .iter()
            .filter(|(pid, (comm, ppid))| *ppid == edge.wrangler && comm != "workerd" && **pid != edge.wrangler)
            .map(|(pid, _)| *pid),
    );
    pids
}

/// Finds the proxy workerd (listening on `port`), its parent (wrangler) and the inner workerd (its sibling),
/// and the inner workerd's entry port.
pub async fn find_edge_procs(port: u16) -> anyhow::Result<EdgeProcs> {
    let procs = procfs::processes();
    let needle = format!("--socket-addr=entry=127.0.0.1:{port} ");
    let proxy = procs
        .iter()
        .filter(|(_, (comm, _))| comm == "workerd")
        .map(|(pid, (_, ppid))| (*pid, *ppid))
        .find(|(pid, _)| format!("{} ", procfs::cmdline(*pid)).contains(&needle));
    let Some((proxy, wrangler)) = proxy else {
        anyhow::bail!("no workerd process has {needle:?} in its command line (is wrangler dev on port {port}?)")
    };
    let inner = procs
        .iter()
        .find(|(pid, (comm, ppid))| comm == "workerd" && *ppid == wrangler && **pid != proxy)
        .map(|(pid, _)| *pid)
        .with_context(|| format!("wrangler (pid {wrangler}) has no second workerd besides the proxy {proxy}"))?;
    let ports = homeroom_tests::edge::listening_ports(inner);
    if let Some(inner_port) = homeroom_tests::edge::worker_port(&ports).await {
        return Ok(EdgeProcs { wrangler, proxy, inner, inner_port });
    }
    anyhow::bail!("the inner workerd (pid {inner}) listens on {ports:?} but none answers GET /healthz with 200")
}

async fn start_node(target: Target, script: &str, cpus: &str) -> anyhow::Result<Server> {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = bench_dir();
    std::fs::create_dir_all(&dir)?;
    let log = dir.join(format!("{}-{}-{n}.log", script.trim_end_matches(".mjs"), std::process::id()));
    let path = repo_root().join("bench/servers").join(script);
    anyhow::ensure!(
        repo_root().join("node_modules/socket.io").exists(),
        "node_modules/socket.io is missing: run npm ci"
    );
    let mut child = Command::new("taskset")
        .args(["-c", cpus, "node"])
        .arg(&path)
        .current_dir(repo_root())
        .env("PORT", "0")
        .env("BENCH_PARENT_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting taskset -c {cpus} node {}", path.display()))?;
    let pid = child.id();
    let stdout = child.stdout.take().context("no stdout")?;
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        line
    });
    let line = tokio::time::timeout(Duration::from_secs(30), line)
        .await
        .with_context(|| format!("{script} did not print 'listening <port>' within 30 s"))??;
    let port: u16 = line.trim().strip_prefix("listening ").and_then(|p| p.parse().ok()).with_context(|| {
        format!(
            "{script} printed {line:?} instead of 'listening <port>': {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    })?;
    Ok(Server {
        target,
        base: format!("ws://127.0.0.1:{port}"),
        watched: vec![Watched { label: "node".into(), pid }],
        edge: None,
        port,
        cpus: cpus.to_owned(),
        log,
        handle: Some(Handle::Group(child)),
    })
}
