//! SFU load: str0m peers against a real media node over loopback UDP.
//!
//! - **Lecture**: one publisher (synthetic VP8-shaped video at `video_kbps` plus Opus-shaped audio, no encoder
//!   in the loop) and N subscribers. N grows step by step; at each step every subscriber must be receiving,
//!   then two windows of `measure` seconds each count what was sent and what arrived; the second decides.
//! - **Classroom**: R rooms of `room_size` peers, everyone publishing and receiving everyone else in the room.
//!
//! Every peer is a [`TestPeer`] (str0m in RTP mode, its own UDP socket, DTLS/SRTP like a browser) in this
//! process. Each frame carries the time it was due at its publisher (see `homeroom_media_node::peer`), so
//! latency is a frame's completion at the subscriber (audio packet, last packet of a video frame) minus that
//! time on one clock: node forwarding plus both peers' queues, including this tool's own when it runs short of
//! CPU (its CPU and the publishers' achieved frame rate are reported next to each row). Loss is what the
//! subscribers did not get, within a second after the window, of the frames their publishers stamped inside
//! it. The node runs as its own process (the release binary, pinned with `taskset`), so its CPU per forwarded
//! packet and per delivered frame comes from `/proc`.
//!
//! A run stops at the first step whose second window exceeds the loss or p99 limit; the last step within them
//! is the maximum.

use crate::procfs::{rss_kb, CpuSnapshot, Watched};
use anyhow::Context;
use homeroom_media_node::peer::{stamp_us, PeerOptions, TestPeer};
use homeroom_shared::auth::{MediaClaims, MediaPerms, TokenKey};
use homeroom_tests::repo_root;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The secret the node and this tool share for media tokens (the node runs only for the benchmark).
const SECRET: &str = "homeroom-sfu-bench-secret";
const NODE_ID: &str = "bench-node";
/// Peers connected at once while a step grows.
const CONNECT_BATCH: usize = 25;
/// The stats snapshot of a load peer is refreshed rarely; the counters the tool reads are always current.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);
/// After a step's peers all receive, time for the joins' keyframe requests, retransmissions and bandwidth
/// probing to settle before the window opens.
const SETTLE: Duration = Duration::from_secs(4);

/// How a run is shaped.
#[derive(Clone, Debug, Serialize)]
pub struct SfuConfig {
    /// Subscriber counts for the lecture, in increasing order.
    pub lecture_steps: Vec<usize>,
    /// Room counts for the classroom, in increasing order.
    pub classroom_steps: Vec<usize>,
    pub room_size: usize,
    /// Camera bitrate of every publisher.
    pub video_kbps: u32,
    /// Length of each step's measuring window.
    pub measure: Duration,
    /// A step is over the limit above this loss…
    pub max_loss_pct: f64,
    /// …or this p99 latency.
    pub max_p99_ms: f64,
    /// CPUs for the node (`taskset -c` syntax).
    pub node_cpus: String,
    /// Peers read with UDP GRO ([`PeerOptions::gro`]): a GSO run from the node is not cut into datagrams on
    /// the node's CPU, as it would not be on a network with segmentation offload.
    pub peer_gro: bool,
}

/// One step's measurements.
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    /// Subscribers (lecture) or rooms (classroom).
    pub size: usize,
    /// Tracks received: for each subscriber, each track of each of its publishers.
    pub streams: usize,
    /// Media frames per second the subscribers should have received (what their publishers sent).
    pub expected_fps: f64,
    /// Media frames per second each publisher sent in the window (nominal: 30 video + 50 audio = 80; less
    /// means this tool fell behind and skipped frames).
    pub publisher_fps: f64,
    /// Packets per second they received: the SFU's forwarded rate.
    pub forwarded_pps: f64,
    /// Share of the expected media frames that did not arrive.
    pub loss_pct: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Peers whose median latency is over the p99 limit.
    pub slow_peers: usize,
    /// Share of one core the node used.
    pub node_cpu_pct: f64,
    /// Node CPU per forwarded packet.
    pub node_us_per_packet: f64,
    /// Node CPU per media frame received by a subscriber (independent of how an SFU packetizes).
    pub node_us_per_frame: f64,
    pub node_rss_mib: f64,
    /// Share of one core this tool used (its peers decrypt and count every packet).
    pub client_cpu_pct: f64,
    /// Share of the machine's CPU time the hypervisor gave to other guests during the window.
    pub steal_pct: f64,
    /// Whether the step is within the loss and p99 limits.
    pub within_limits: bool,
    /// 1 for a step's first window, 2 for the one right after it, which decides the step.
    pub window: u32,
}

/// A lecture or classroom run.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub scenario: &'static str,
    /// The SFU measured.
    pub sfu: &'static str,
    pub steps: Vec<StepResult>,
    /// Why the run ended before its last step, if it did.
    pub stopped: Option<String>,
}

impl RunResult {
    /// The largest step whose second (deciding) window was within the limits.
    pub fn max_within_limits(&self) -> Option<usize> {
        self.steps.iter().filter(|s| s.window == 2 && s.within_limits).map(|s| s.size).max()
    }
}

/// Which SFU a run measures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum SfuKind {
    /// Homeroom's media node: `target/release/homeroom-media-node`, with its default bandwidth estimation
    /// towards subscribers (`--bwe-kbps 2000`) or with it off (`--bwe-kbps 0`).
    Homeroom { bwe: bool },
    /// str0m's `chat` example, built from the published crate by `scripts/bench-sfu.sh` (not committed): one
    /// room, frame-mode forwarding (it depacketizes and re-packetizes), HTTPS signalling on port 3000.
    Str0mChat { binary: PathBuf },
}

impl SfuKind {
    pub fn name(&self) -> &'static str {
        match self {
            SfuKind::Homeroom { bwe: true } => "Homeroom media node",
            SfuKind::Homeroom { bwe: false } => "Homeroom media node, bandwidth estimation off",
            SfuKind::Str0mChat { .. } => "str0m chat example",
        }
    }
}

/// The SFU under test, in its own process group under a watchdog shell (it dies with this process), pinned.
#[derive(Debug)]
pub struct SfuProcess {
    child: Child,
    kind: SfuKind,
    /// Homeroom: the node's `http://…`; chat: its `https://IP:3000/`.
    pub url: String,
    /// The address peers bind to. The chat example listens on the first non-loopback address it finds; under
    /// `scripts/bench-sfu.sh` that is a private address on loopback in the run's own network namespace.
    pub peer_ip: IpAddr,
    pub pid: u32,
}

impl SfuProcess {
    /// Starts `kind` pinned to `cpus` and waits for it to say where it listens.
    pub fn start(kind: &SfuKind, cpus: &str) -> anyhow::Result<SfuProcess> {
        let (binary, args, comm) = match kind {
            SfuKind::Homeroom { bwe } => (
                repo_root().join("target/release/homeroom-media-node"),
                format!(
                    "--http-addr 127.0.0.1:0 --udp-addr 127.0.0.1:0 --node-id {NODE_ID} --region local \
                     --capacity 100000 --idle-timeout-secs 60 --log warn{}",
                    if *bwe { "" } else { " --bwe-kbps 0" }
                ),
                "homeroom-media",
            ),
            SfuKind::Str0mChat { binary } => (binary.clone(), String::new(), "str0m-chat"),
        };
        anyhow::ensure!(
            binary.exists(),
            "{} is missing: scripts/bench-sfu.sh builds it (the node with `cargo build --release -p \
             homeroom-media-node`)",
            binary.display()
        );
        let log = log_path()?;
        let script = format!(
            "taskset -c {cpus} '{bin}' {args} >'{log}' 2>&1 & n=$!; \
             while kill -0 {parent} 2>/dev/null && kill -0 $n 2>/dev/null; do sleep 0.5; done; kill -KILL 0",
            bin = binary.display(),
            log = log.display(),
            parent = std::process::id(),
        );
        let child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("NODE_SECRET", SECRET)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", kind.name()))?;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some((url, peer_ip)) = listening(kind, &text) {
                let pid = child_pid(child.id(), comm).with_context(|| format!("the process of {}", kind.name()))?;
                return Ok(SfuProcess { child, kind: kind.clone(), url, peer_ip, pid });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        anyhow::bail!("{} did not start within 20 s; its log:\n{text}", kind.name())
    }

    fn watched(&self) -> Vec<Watched> {
        vec![Watched { label: self.kind.name().into(), pid: self.pid }]
    }

    /// Connects one peer: `participant` in `room` (the chat example has one room for everyone).
    async fn connect(
        &self,
        http: &reqwest::Client,
        participant: &str,
        room: &str,
        options: PeerOptions,
    ) -> anyhow::Result<TestPeer> {
        let peer = match self.kind {
            SfuKind::Homeroom { .. } => {
                let token = token(participant, room)?;
                TestPeer::connect_using(http.clone(), self.peer_ip, &self.url, &token, options).await
            }
            SfuKind::Str0mChat { .. } => {
                TestPeer::connect_str0m_chat(http.clone(), self.peer_ip, &self.url, options).await
            }
        };
        peer.with_context(|| format!("peer {participant} in {room}"))
    }
}

impl Drop for SfuProcess {
    fn drop(&mut self) {
        homeroom_tests::kill_process_group(&mut self.child);
    }
}

/// Where the SFU listens, from its log: the node prints `homeroom-media-node listening http=ADDR udp=ADDR`;
/// the chat example logs `Connect a browser to https://IP:PORT`.
fn listening(kind: &SfuKind, log: &str) -> Option<(String, IpAddr)> {
    match kind {
        SfuKind::Homeroom { .. } => {
            let http = log
                .lines()
                .find(|l| l.contains("listening"))?
                .split_whitespace()
                .find_map(|w| w.strip_prefix("http="))?;
            Some((format!("http://{http}"), IpAddr::V4(Ipv4Addr::LOCALHOST)))
        }
        SfuKind::Str0mChat { .. } => {
            let line = log.lines().find(|l| l.contains("Connect a browser to https://"))?;
            let rest = line.split("https://").nth(1)?.trim();
            let (ip, port) = rest.rsplit_once(':')?;
            let ip: IpAddr = ip.trim_matches('"').parse().ok()?;
            Some((format!("https://{ip}:{port}/"), ip))
        }
    }
}

/// A fresh log file per SFU started (it tells the SFU's address).
fn log_path() -> anyhow::Result<PathBuf> {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = repo_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("sfu-{}-{n}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    Ok(path)
}

/// The child of the watchdog shell whose command starts with `comm`.
fn child_pid(shell: u32, comm: &str) -> Option<u32> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let found = crate::procfs::processes()
            .into_iter()
            .find(|(_, (name, ppid))| *ppid == shell && name.starts_with(comm))
            .map(|(pid, _)| pid);
        if found.is_some() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn token(participant: &str, room: &str) -> anyhow::Result<String> {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 6 * 3600;
    let claims = MediaClaims {
        sub: participant.into(),
        room: room.into(),
        node: NODE_ID.into(),
        perms: MediaPerms { audio: true, video: true, screen: false, subscribe: true },
        name: None,
        caps: None,
        exp,
        iat: Some(exp - 6 * 3600),
    };
    TokenKey::new(SECRET.as_bytes()).sign(&claims).map_err(|e| anyhow::anyhow!("signing a media token: {e}"))
}

fn publisher_options(config: &SfuConfig) -> PeerOptions {
    PeerOptions {
        video_kbps: config.video_kbps,
        // A keyframe every 2 s, as a conferencing encoder would, besides the ones new subscribers ask for.
        keyframe_every: Some(Duration::from_secs(2)),
        record_latency: true,
        snapshot_every: SNAPSHOT_EVERY,
        gro: config.peer_gro,
        ..PeerOptions::publisher()
    }
}

fn subscriber_options(config: &SfuConfig) -> PeerOptions {
    PeerOptions {
        record_latency: true,
        snapshot_every: SNAPSHOT_EVERY,
        gro: config.peer_gro,
        ..PeerOptions::subscriber()
    }
}

/// Connects `count` peers, the i-th as `spec(i)` = (participant, room, options), [`CONNECT_BATCH`] at a time.
async fn connect_many(
    http: &reqwest::Client,
    sfu: &SfuProcess,
    count: usize,
    first: usize,
    spec: impl Fn(usize) -> (String, String, PeerOptions),
) -> anyhow::Result<Vec<TestPeer>> {
    let mut peers = Vec::with_capacity(count);
    let mut next = first;
    while peers.len() < count {
        let batch = CONNECT_BATCH.min(count - peers.len());
        let attempts = (next..next + batch).map(|i| {
            let (name, room, options) = spec(i);
            async move { sfu.connect(http, &name, &room, options).await }
        });
        for peer in futures_util::future::join_all(attempts).await {
            peers.push(peer?);
        }
        next += batch;
    }
    Ok(peers)
}

/// Connects peers (`spec(i)` for the i-th) until there are `target`, waits until every peer receives, and
/// lets the joins settle.
async fn grow(
    http: &reqwest::Client,
    sfu: &SfuProcess,
    peers: &mut Vec<TestPeer>,
    target: usize,
    spec: impl Fn(usize) -> (String, String, PeerOptions),
) -> anyhow::Result<()> {
    let first = peers.len();
    peers.extend(connect_many(http, sfu, target.saturating_sub(first), first, spec).await?);
    let refs: Vec<&TestPeer> = peers.iter().collect();
    wait_receiving(&refs, 20, Duration::from_secs(60)).await?;
    tokio::time::sleep(SETTLE).await;
    Ok(())
}

/// Waits until every peer has received at least `min_packets`, for at most `limit`.
async fn wait_receiving(peers: &[&TestPeer], min_packets: u64, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let waiting = peers.iter().filter(|p| p.packets_received() < min_packets).count();
        if waiting == 0 {
            return Ok(());
        }
        if started.elapsed() > limit {
            anyhow::bail!(
                "{waiting} of {} peers received fewer than {min_packets} packets within {limit:?}",
                peers.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Per-peer counters at one instant.
struct Counts {
    at: Instant,
    packets_received: Vec<u64>,
    cpu: CpuSnapshot,
    steal: (u64, u64),
}

impl Counts {
    fn take(peers: &[&TestPeer], node: &SfuProcess) -> Counts {
        Counts {
            at: Instant::now(),
            packets_received: peers.iter().map(|p| p.packets_received()).collect(),
            cpu: CpuSnapshot::take(&node.watched()),
            steal: crate::procfs::steal_ticks(),
        }
    }
}

fn deltas(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a.saturating_sub(*b)).collect()
}

/// How long after a window its frames may still arrive and count; a frame later than that is lost.
const DRAIN: Duration = Duration::from_secs(1);

/// Measures one window. Frames are judged by their send stamp (the time they were due at the publisher):
/// those stamped inside the window are expected, and each counts as received if it arrived by [`DRAIN`] after
/// the window, so frames in flight at either edge of the window neither inflate nor hide loss.
/// `expected(sent)` says how many frames each peer should have received given how many every peer sent in
/// the window. A frame is an audio packet or the last packet of a video frame, so that an SFU that
/// re-packetizes (the baseline) is measured like one that forwards packets; latency is that packet's, i.e.
/// when the frame was complete.
async fn measure(
    peers: &[&TestPeer],
    node: &SfuProcess,
    config: &SfuConfig,
    (size, streams): (usize, usize),
    expected: impl Fn(&[u64]) -> Vec<u64>,
) -> StepResult {
    for peer in peers {
        peer.take_arrivals();
        peer.take_sent_stamps();
    }
    let before = Counts::take(peers, node);
    tokio::time::sleep(config.measure).await;
    let after = Counts::take(peers, node);
    tokio::time::sleep(DRAIN).await;
    let window = stamp_us(before.at)..stamp_us(after.at);
    let sent: Vec<u64> =
        peers.iter().map(|p| p.take_sent_stamps().iter().filter(|s| window.contains(s)).count() as u64).collect();
    let per_peer: Vec<Vec<u32>> = peers
        .iter()
        .map(|p| p.take_arrivals().into_iter().filter(|a| window.contains(&a.sent_us)).map(|a| a.latency_us).collect())
        .collect();
    // Peers whose own median is over the limit: one slow subscriber is a different problem from everyone late.
    let slow_peers = per_peer
        .iter()
        .filter(|l| {
            let mut l = (*l).clone();
            l.sort_unstable();
            percentile_ms(&l, 50.0) > config.max_p99_ms
        })
        .count();
    let mut latencies: Vec<u32> = per_peer.into_iter().flatten().collect();
    latencies.sort_unstable();

    let secs = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let received: u64 = deltas(&after.packets_received, &before.packets_received).iter().sum();
    let frames_received = latencies.len() as u64;
    let frames_expected: u64 = expected(&sent).iter().sum();
    let loss_pct = if frames_expected == 0 {
        100.0
    } else {
        (1.0 - frames_received as f64 / frames_expected as f64).max(0.0) * 100.0
    };
    let publishers: Vec<u64> = sent.iter().copied().filter(|n| *n > 0).collect();
    let publisher_fps = if publishers.is_empty() {
        0.0
    } else {
        publishers.iter().sum::<u64>() as f64 / publishers.len() as f64 / secs
    };
    let usage = before.cpu.usage(&after.cpu, &node.watched());
    let steal_pct = {
        let (steal, total) =
            (after.steal.0.saturating_sub(before.steal.0), after.steal.1.saturating_sub(before.steal.1));
        if total == 0 {
            0.0
        } else {
            steal as f64 * 100.0 / total as f64
        }
    };
    let node_cpu_secs = usage.first().map_or(0.0, |u| u.cpu_secs);
    let pct = |p: f64| percentile_ms(&latencies, p);
    let p99 = pct(99.0);
    StepResult {
        size,
        streams,
        expected_fps: frames_expected as f64 / secs,
        publisher_fps,
        forwarded_pps: received as f64 / secs,
        loss_pct,
        p50_ms: pct(50.0),
        p99_ms: p99,
        max_ms: latencies.last().map_or(0.0, |us| f64::from(*us) / 1000.0),
        slow_peers,
        node_cpu_pct: node_cpu_secs / secs * 100.0,
        node_us_per_packet: if received == 0 { 0.0 } else { node_cpu_secs * 1e6 / received as f64 },
        node_us_per_frame: if frames_received == 0 { 0.0 } else { node_cpu_secs * 1e6 / frames_received as f64 },
        node_rss_mib: rss_kb(node.pid).unwrap_or(0) as f64 / 1024.0,
        client_cpu_pct: before.cpu.own_pct(&after.cpu),
        steal_pct,
        within_limits: loss_pct <= config.max_loss_pct && p99 <= config.max_p99_ms && !latencies.is_empty(),
        window: 1,
    }
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((sorted_us.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us.get(rank - 1).map_or(0.0, |us| f64::from(*us) / 1000.0)
}

fn print_step(scenario: &str, step: &StepResult) {
    eprintln!(
        "  {scenario} {:>5}{}: forwarded {:>8.0} pkt/s, frame loss {:>5.2} %, p50 {:>6.1} ms, p99 {:>7.1} ms, \
         SFU CPU {:>5.1} % ({:.2} µs/pkt, {:.2} µs/frame), publisher {:.1} frames/s, client CPU {:>5.1} %, \
         slow peers {}, steal {:.0} %",
        step.size,
        if step.window > 1 { " (2nd window)" } else { " (1st window)" },
        step.forwarded_pps,
        step.loss_pct,
        step.p50_ms,
        step.p99_ms,
        step.node_cpu_pct,
        step.node_us_per_packet,
        step.node_us_per_frame,
        step.publisher_fps,
        step.client_cpu_pct,
        step.slow_peers,
        step.steal_pct,
    );
}

/// An HTTP client for signalling: the chat example serves HTTPS with the self-signed certificate it ships.
fn signalling_client(kind: &SfuKind) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder().pool_max_idle_per_host(4);
    let builder = match kind {
        SfuKind::Homeroom { .. } => builder,
        SfuKind::Str0mChat { .. } => builder.danger_accept_invalid_certs(true),
    };
    builder.build().context("building the HTTP client")
}

/// Measures a step in two windows, one right after the other, and judges it on the second: the steady state,
/// not the joins' transient (keyframes and bandwidth probing outlasting the settling time) — whichever way the
/// first window went. Both windows are kept in the results. Returns whether the second is within the limits.
async fn measure_step<F, Fut>(run: &mut RunResult, scenario: &str, mut window: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StepResult>,
{
    let mut within = false;
    for attempt in 1..=2 {
        let mut step = window().await;
        step.window = attempt;
        print_step(scenario, &step);
        within = step.within_limits;
        run.steps.push(step);
    }
    within
}

/// One publisher, growing numbers of subscribers, on `kind`.
pub async fn lecture(config: &SfuConfig, kind: &SfuKind) -> anyhow::Result<RunResult> {
    let node = SfuProcess::start(kind, &config.node_cpus)?;
    let http = signalling_client(kind)?;
    let publisher =
        connect_many(&http, &node, 1, 0, |_| ("teacher".into(), "lecture".into(), publisher_options(config)))
            .await?
            .pop()
            .context("no publisher")?;
    let mut subscribers: Vec<TestPeer> = Vec::new();
    let mut run = RunResult { scenario: "lecture", sfu: kind.name(), steps: Vec::new(), stopped: None };
    for &n in &config.lecture_steps {
        let student = |i: usize| (format!("student-{i}"), "lecture".to_owned(), subscriber_options(config));
        if let Err(e) = grow(&http, &node, &mut subscribers, n, student).await {
            run.stopped = Some(format!("at {n} subscribers: {e:#}"));
            break;
        }
        let refs: Vec<&TestPeer> = subscribers.iter().collect();
        // Index 0 is the publisher; every subscriber should receive all it sent.
        let mut all = vec![&publisher];
        all.extend(refs.iter().copied());
        // Audio and video of the one publisher per subscriber.
        let expected = |sent: &[u64]| {
            let published = sent.first().copied().unwrap_or(0);
            sent.iter().enumerate().map(|(i, _)| if i == 0 { 0 } else { published }).collect()
        };
        let within = measure_step(&mut run, "lecture", || measure(&all, &node, config, (n, n * 2), expected)).await;
        if !within {
            run.stopped = Some(format!("at {n} subscribers: over the loss or p99 limit"));
            break;
        }
    }
    for peer in subscribers {
        peer.vanish().await;
    }
    publisher.vanish().await;
    Ok(run)
}

/// Rooms of `room_size`, everyone publishing to everyone else in the room, on Homeroom's node (the chat example
/// has a single room).
pub async fn classroom(config: &SfuConfig) -> anyhow::Result<RunResult> {
    let kind = SfuKind::Homeroom { bwe: true };
    let node = SfuProcess::start(&kind, &config.node_cpus)?;
    let http = signalling_client(&kind)?;
    let size = config.room_size.max(2);
    let mut peers: Vec<TestPeer> = Vec::new();
    let mut run = RunResult { scenario: "classroom", sfu: kind.name(), steps: Vec::new(), stopped: None };
    for &rooms in &config.classroom_steps {
        let pupil = |i: usize| (format!("p{i}"), format!("class-{}", i / size), publisher_options(config));
        if let Err(e) = grow(&http, &node, &mut peers, rooms * size, pupil).await {
            run.stopped = Some(format!("at {rooms} rooms: {e:#}"));
            break;
        }
        let refs: Vec<&TestPeer> = peers.iter().collect();
        let streams = rooms * size * (size - 1) * 2;
        // Peer i receives what its room-mates sent.
        let expected = |sent: &[u64]| {
            (0..sent.len())
                .map(|i| {
                    let room = i / size;
                    (room * size..(room + 1) * size).filter(|j| *j != i).filter_map(|j| sent.get(j)).sum()
                })
                .collect()
        };
        let within =
            measure_step(&mut run, "classroom", || measure(&refs, &node, config, (rooms, streams), expected)).await;
        if !within {
            run.stopped = Some(format!("at {rooms} rooms: over the loss or p99 limit"));
            break;
        }
    }
    for peer in peers {
        peer.vanish().await;
    }
    Ok(run)
}

/// Markdown for a run.
pub fn table(run: &RunResult, config: &SfuConfig) -> String {
    let unit = if run.scenario == "lecture" { "subscribers" } else { "rooms" };
    let mut out = format!(
        "#### {} — {}: {} kbps video + audio per publisher{}{}\n\n| {unit} | streams received | forwarded pkt/s | \
         expected frames/s | publisher frames/s | frame loss % | p50 ms | p99 ms | max ms | slow peers | SFU CPU % | \
         SFU µs / forwarded pkt | SFU µs / delivered frame | SFU RSS MiB | load tool CPU % | host steal % |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        run.sfu,
        run.scenario,
        config.video_kbps,
        if run.scenario == "classroom" {
            format!(", {} peers per room all-to-all", config.room_size)
        } else {
            String::new()
        },
        if config.peer_gro { ", peers reading with UDP GRO" } else { "" },
    );
    for s in &run.steps {
        out.push_str(&format!(
            "| {}{} | {} | {:.0} | {:.0} | {:.1} | {:.2} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} \
             | {:.0} |\n",
            s.size,
            match (s.window, s.within_limits) {
                (1, true) => " (1st window)",
                (1, false) => " (1st window) ✗",
                (_, true) => "",
                (_, false) => " ✗",
            },
            s.streams,
            s.forwarded_pps,
            s.expected_fps,
            s.publisher_fps,
            s.loss_pct,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.slow_peers,
            s.node_cpu_pct,
            s.node_us_per_packet,
            s.node_us_per_frame,
            s.node_rss_mib,
            s.client_cpu_pct,
            s.steal_pct,
        ));
    }
    let max = run.max_within_limits().map_or_else(|| "none".to_owned(), |m| m.to_string());
    out.push_str(&format!(
        "\nLargest step within loss ≤ {} % and p99 ≤ {} ms: **{max}** {unit}.{}\n",
        config.max_loss_pct,
        config.max_p99_ms,
        run.stopped.as_ref().map(|s| format!(" Stopped {s}.")).unwrap_or_default()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_ranked_sample() {
        let samples: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&samples, 50.0), 50.0);
        assert_eq!(percentile_ms(&samples, 99.0), 99.0);
        assert_eq!(percentile_ms(&[], 99.0), 0.0);
        assert_eq!(percentile_ms(&[7000], 1.0), 7.0);
    }
}
