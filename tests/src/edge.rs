//! The real edge under test: `wrangler dev` (workerd with SQLite-backed Durable Objects) on a free port.
//!
//! Each [`Edge`] runs in its own process group under a small watchdog shell: when the test process goes
//! away (even without running destructors, as with a `static`), the watchdog kills the whole group within
//! half a second, so no workerd outlives the suite.

use crate::repo_root;
use std::collections::HashSet;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static BUILD: Mutex<bool> = Mutex::new(false);
static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs `wrangler dev` without its devtools inspector proxy. With the proxy, every subrequest of the Worker
/// (each WebSocket upgrade the router hands to a room, each probe) turns into four inspector events that a
/// Durable Object inside wrangler's proxy workerd forwards one by one over HTTP to the wrangler CLI, which
/// formats each and appends it to a debug log file. Measured under `reliability_abuse`: the wrangler CLI took
/// 25 % of a core, and a 500-join storm waited on it (p99 4.4 s with it, 0.75 s without; docs/benchmarks.md).
/// Production has no such proxy. wrangler 4 skips it when this variable (set by VS Code's JavaScript debug
/// terminal, which brings its own) is present (`inspectorEnabled` in wrangler's `cli.js`); Node ignores it.
pub const NO_INSPECTOR_PROXY: (&str, &str) = ("VSCODE_INSPECTOR_OPTIONS", "{}");

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Builds the Worker once per process (a no-op when `edge/build` is up to date).
pub fn build_edge() -> anyhow::Result<()> {
    let mut built = BUILD.lock().map_err(|_| anyhow::anyhow!("build lock poisoned"))?;
    if *built {
        return Ok(());
    }
    let status = Command::new("bash").arg("scripts/build-edge.sh").current_dir(repo_root()).status()?;
    anyhow::ensure!(status.success(), "scripts/build-edge.sh failed ({status}); run scripts/bootstrap.sh first");
    *built = true;
    Ok(())
}

/// A running `wrangler dev`.
#[derive(Debug)]
pub struct Edge {
    pub port: u16,
    /// Where its Durable Objects' SQLite files live (kept across [`Edge::restart`]).
    pub persist: PathBuf,
    pub log: PathBuf,
    vars: Vec<(String, String)>,
    /// A wrangler configuration other than the repository's (`-c`), see [`Edge::start_without_assets`].
    config: Option<PathBuf>,
    child: Option<Child>,
}

impl Edge {
    /// Starts an edge with fresh storage and default vars.
    pub async fn start() -> anyhow::Result<Edge> {
        Self::start_with(&[]).await
    }

    /// Starts an edge with fresh storage and `vars` overriding wrangler.toml's `[vars]`.
    pub async fn start_with(vars: &[(&str, &str)]) -> anyhow::Result<Edge> {
        Self::start_configured(vars, false).await
    }

    /// Starts an edge whose configuration is wrangler.toml without its `[assets]` (the demo page): every
    /// request reaches the Worker without the development asset router in front. Locally that router runs on
    /// the one workerd thread that also runs the Worker and every Durable Object, and costs ≈ 0.6 ms of it
    /// per HTTP request (half of a refused upgrade's cost, docs/reliability.md); deployed, assets are served
    /// in front of the Worker and never share a thread with a room. For measuring a room under a request
    /// flood.
    pub async fn start_without_assets() -> anyhow::Result<Edge> {
        Self::start_configured(&[], true).await
    }

    async fn start_configured(vars: &[(&str, &str)], without_assets: bool) -> anyhow::Result<Edge> {
        build_edge()?;
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = repo_root().join("target/e2e").join(format!("edge-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut edge = Edge {
            port: free_port()?,
            persist: dir.join("state"),
            log: dir.join("wrangler.log"),
            vars: vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            config: if without_assets { Some(config_without_assets(&dir)?) } else { None },
            child: None,
        };
        edge.launch().await?;
        Ok(edge)
    }

    /// `http://127.0.0.1:PORT`
    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `ws://127.0.0.1:PORT`
    pub fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let inspector = free_port()?;
        let mut args = format!(
            "dev --ip 127.0.0.1 --port {} --inspector-port {} --persist-to '{}' --log-level warn",
            self.port,
            inspector,
            self.persist.display()
        );
        if let Some(config) = &self.config {
            args.push_str(&format!(" -c '{}'", config.display()));
        }
        for (k, v) in &self.vars {
            args.push_str(&format!(" --var '{k}:{v}'"));
        }
        let script = format!(
            "ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; \
             node_modules/.bin/wrangler {args} >>'{log}' 2>&1 & w=$!; \
             while kill -0 {parent} 2>/dev/null && kill -0 $w 2>/dev/null; do sleep 0.5; done; \
             kill -KILL 0",
            log = self.log.display(),
            parent = std::process::id(),
        );
        let child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(repo_root())
            .env("WRANGLER_SEND_METRICS", "false")
            .env("NO_COLOR", "1")
            .env("CI", "true")
            .env(NO_INSPECTOR_PROXY.0, NO_INSPECTOR_PROXY.1)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(90)).await
    }

    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let client = reqwest::Client::new();
        while start.elapsed() < limit {
            if let Ok(response) = client.get(format!("{}/healthz", self.http())).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    anyhow::bail!("wrangler dev exited ({status}):\n{}", tail(&self.log));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!("wrangler dev not ready after {limit:?}:\n{}", tail(&self.log))
    }

    /// Kills the edge (its whole process group), like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The watchdog leads its own process group: kill the whole group (wrangler and both workerds).
            crate::kill_process_group(&mut child);
        }
    }

    /// Kills and restarts the edge on the same port with the same persisted storage.
    pub async fn restart(&mut self) -> anyhow::Result<Duration> {
        self.kill();
        let start = Instant::now();
        // The port is released when the process group dies; wait for it to be bindable again.
        for _ in 0..50 {
            if TcpListener::bind(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.launch().await?;
        Ok(start.elapsed())
    }

    /// The workerd processes of this edge (the proxy and the one running the Worker and its objects): every
    /// process of its process group whose command is workerd.
    pub fn workerd_pids(&self) -> Vec<u32> {
        let Some(group) = self.child.as_ref().map(Child::id) else { return Vec::new() };
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        let mut pids = Vec::new();
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid pgrp ...: comm may contain spaces, so split after the closing parenthesis.
            let Some((head, rest)) = stat.rsplit_once(')') else { continue };
            let pgrp = rest.split_whitespace().nth(2).and_then(|v| v.parse::<u32>().ok());
            if pgrp == Some(group) && head.contains("(workerd") {
                pids.push(pid);
            }
        }
        pids
    }

    /// `ws://127.0.0.1:PORT` of the inner workerd, where the Worker and its Durable Objects run, skipping
    /// `wrangler dev`'s proxy (which production does not have). Found as the port, among those the edge's
    /// other workerd listens on, that answers `GET /healthz` like the Worker does.
    pub async fn inner_ws(&self) -> anyhow::Result<String> {
        let pids = self.workerd_pids();
        for pid in &pids {
            let ports = listening_ports(*pid);
            if ports.contains(&self.port) {
                continue; // the proxy
            }
            if let Some(port) = worker_port(&ports).await {
                return Ok(format!("ws://127.0.0.1:{port}"));
            }
        }
        anyhow::bail!("none of this edge's workerd processes {pids:?} besides the proxy answers GET /healthz")
    }

    /// Resident memory of this edge's workerd processes, in KiB.
    pub fn workerd_rss_kib(&self) -> u64 {
        self.workerd_pids()
            .into_iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .filter_map(|status| {
                status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum()
    }

    /// The last lines of the wrangler log.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

/// Writes wrangler.toml without its `[assets]` and `[build]` tables (the harness has built the Worker) into
/// `dir`, with `main` made absolute and the development secrets beside it (wrangler reads `.dev.vars` next
/// to its configuration). Returns the new configuration's path.
fn config_without_assets(dir: &Path) -> anyhow::Result<PathBuf> {
    let root = repo_root();
    let original = std::fs::read_to_string(root.join("wrangler.toml"))?;
    let mut config = String::new();
    let mut skipping = false;
    for line in original.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            skipping = matches!(trimmed, "[assets]" | "[build]");
        }
        if skipping {
            continue;
        }
        match trimmed.strip_prefix("main = ") {
            Some(main) => {
                config.push_str(&format!("main = {:?}\n", root.join(main.trim_matches('"')).display().to_string()))
            }
            None => {
                config.push_str(line);
                config.push('\n');
            }
        }
    }
    anyhow::ensure!(!config.contains("[assets]"), "wrangler.toml's [assets] table was not removed");
    let path = dir.join("wrangler.toml");
    std::fs::write(&path, config)?;
    std::fs::copy(root.join(".dev.vars"), dir.join(".dev.vars"))?;
    Ok(path)
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The first of `ports` on 127.0.0.1 where the Worker answers `GET /healthz` (workerd also listens on
/// others: the inspector, the loopback).
pub async fn worker_port(ports: &[u16]) -> Option<u16> {
    let client = reqwest::Client::new();
    for port in ports {
        let url = format!("http://127.0.0.1:{port}/healthz");
        let Ok(r) = client.get(&url).timeout(Duration::from_secs(2)).send().await else { continue };
        if r.status().is_success() && r.text().await.unwrap_or_default().contains("\"service\"") {
            return Some(*port);
        }
    }
    None
}

/// TCP ports `pid` listens on (IPv4 and IPv6): the socket inodes among its open files, looked up in
/// `/proc/net/tcp{,6}`.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let mut inodes = HashSet::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in dir.flatten() {
            if let Ok(link) = std::fs::read_link(entry.path()) {
                let link = link.to_string_lossy().into_owned();
                if let Some(inode) = link.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    inodes.insert(inode.to_owned());
                }
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9)) else { continue };
            if *state != "0A" || !inodes.contains(*inode) {
                continue;
            }
            if let Some(port) = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()) {
                if !ports.contains(&port) {
                    ports.push(port);
                }
            }
        }
    }
    ports
}
