//! Fan-out: `rooms` rooms of `members` members each; in every room one member (the sender) posts messages at
//! `rate` msg/s and the server delivers each to every member of the room, the sender included. So one message
//! is `members` deliveries and a step offers `rooms × members × rate` deliveries/s.
//!
//! # How a series runs
//! 1. **Join**: every member connects and joins (at most `join_concurrency` handshakes in flight), then keeps
//!    reading its socket until the end. A barrier message per room, delivered to every member, proves every
//!    earlier frame (for Homeroom: the `participant.joined` fan-out of the joins) has been delivered.
//! 2. **Warm-up** at the first rate (not reported), so JITs and allocators are warm.
//! 3. **Steps**, one per rate: the sender's messages are scheduled at `t0 + k / rate` and carry that
//!    scheduled time (so a sender held back by a slow server does not hide the delay: no coordinated
//!    omission). Each delivery's latency is its receive time minus the scheduled time, on the same clock
//!    (client and servers share this machine). After the last send, the step drains: it ends when every
//!    expected delivery arrived, 3 s pass without progress, or 30 s pass.
//! 4. A step **fails** when p99 > `stop_p99_ms`, loss > `stop_loss_pct` % or a connection closed; the series
//!    stops at the first failing step. Between steps the server must go quiet (< 5 % CPU) first.
//!
//! # What a step reports
//! Deliveries/s (received ÷ time from the first scheduled send to the last delivery), latency p50/p99/max,
//! loss (expected − received), server CPU per process (share of one core while sending; CPU µs per delivery
//! over the whole step including the drain; busiest thread), peak RSS, and the load tool's own CPU share (if it
//! nears 100 % of its core, the client is the limit, not the server).

use crate::adapter::{self, Adapter, Incoming, Ws};
use crate::procfs::{self, CpuSnapshot, ProcUsage, Watched};
use futures_util::{SinkExt, StreamExt};
use homeroom_shared::protocol::Role;
use homeroom_tests::tokens::Minter;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Default)]
struct StepData {
    lat_us: Vec<u32>,
    count: u64,
    bytes: u64,
    first_us: u64,
    last_us: u64,
}

/// What every member records, shared by all connection tasks.
#[derive(Debug, Default)]
pub struct Recorder {
    steps: Mutex<Vec<StepData>>,
    other_frames: AtomicU64,
    closed: AtomicU64,
    first_close: Mutex<Option<String>>,
}

impl Recorder {
    /// A recorder for step ids `0..steps`.
    pub fn new(steps: usize) -> Arc<Recorder> {
        let rec = Recorder::default();
        if let Ok(mut s) = rec.steps.lock() {
            s.resize_with(steps, StepData::default);
        }
        Arc::new(rec)
    }

    fn delivered(&self, step: u32, sched_us: u64, bytes: usize) {
        let now = adapter::now_us();
        let lat = now.saturating_sub(sched_us).min(u64::from(u32::MAX)) as u32;
        if let Ok(mut steps) = self.steps.lock() {
            if let Some(s) = steps.get_mut(step as usize) {
                s.lat_us.push(lat);
                s.count += 1;
                s.bytes += bytes as u64;
                s.first_us = if s.count == 1 { now } else { s.first_us.min(now) };
                s.last_us = s.last_us.max(now);
            }
        }
    }

    fn closed(&self, why: String) {
        self.closed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_close.lock() {
            first.get_or_insert(why);
        }
    }

    fn count(&self, step: u32) -> (u64, u64) {
        self.steps.lock().ok().and_then(|s| s.get(step as usize).map(|d| (d.count, d.last_us))).unwrap_or((0, 0))
    }

    fn take(&self, step: u32) -> StepData {
        self.steps.lock().ok().and_then(|mut s| s.get_mut(step as usize).map(std::mem::take)).unwrap_or_default()
    }

    /// Connections that closed or failed after joining, and the first reason.
    pub fn closes(&self) -> (u64, Option<String>) {
        (self.closed.load(Ordering::Relaxed), self.first_close.lock().ok().and_then(|f| f.clone()))
    }

    /// Frames received that were not benchmark messages (acks, presence, ...).
    pub fn other_frames(&self) -> u64 {
        self.other_frames.load(Ordering::Relaxed)
    }
}

async fn recv_opt(rx: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A joined member: reads until the socket ends, recording deliveries; sends what arrives on `outgoing`.
pub async fn member_loop(
    mut ws: Ws,
    adapter: Adapter,
    rec: Arc<Recorder>,
    mut outgoing: Option<mpsc::Receiver<String>>,
) {
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let incoming = adapter::classify_all(adapter, text.as_str());
                    if incoming.is_empty() {
                        rec.other_frames.fetch_add(1, Ordering::Relaxed);
                    }
                    // A batch's bytes are shared among the messages it carries.
                    let bytes = text.len() / incoming.len().max(1);
                    for item in incoming {
                        match item {
                            Incoming::Bench { step, sched_us, .. } => rec.delivered(step, sched_us, bytes),
                            Incoming::Ping => {
                                if let Err(e) = ws.send(Message::text("3")).await {
                                    rec.closed(format!("answering an Engine.IO ping: {e}"));
                                    return;
                                }
                            }
                            Incoming::Other => {
                                rec.other_frames.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    rec.closed(format!("closed by the server: {}", frame.map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default()));
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    rec.closed(format!("read error: {e}"));
                    return;
                }
                None => {
                    rec.closed("the server ended the stream".into());
                    return;
                }
            },
            item = recv_opt(&mut outgoing) => match item {
                Some(text) => {
                    if let Err(e) = ws.send(Message::text(text)).await {
                        rec.closed(format!("send error: {e}"));
                        return;
                    }
                }
                None => outgoing = None,
            },
        }
    }
}

/// Members of several rooms, joined and reading.
#[derive(Debug)]
pub struct Crowd {
    pub tasks: Vec<JoinHandle<()>>,
    /// One sender channel per room (to member 0 of the room).
    pub senders: Vec<mpsc::Sender<String>>,
    pub joined: usize,
    pub failed: usize,
    /// Members joined in each room.
    pub joined_per_room: Vec<usize>,
    /// Whether each room's sender (member 0) joined.
    pub sender_joined: Vec<bool>,
    pub first_error: Option<String>,
    pub join_secs: f64,
    /// Connect → join confirmation of each member, ms.
    pub join_ms: Vec<f64>,
}

impl Crowd {
    /// Closes every connection (drops the sockets).
    pub fn abort(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.senders.clear();
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Where and how members join.
#[derive(Clone, Debug)]
pub struct JoinPlan {
    pub adapter: Adapter,
    pub base: String,
    /// Room names (one per room).
    pub rooms: Vec<String>,
    pub members: usize,
    pub concurrency: usize,
    /// Give up on joins still pending after this long.
    pub budget: Duration,
}

/// A development token for member `i` of room `r` (Homeroom only).
fn token(minter: Option<&Minter>, r: usize, i: usize) -> Option<String> {
    minter.map(|m| m.token(&format!("m{r}-{i}"), Role::Student))
}

/// Joins every member of every room (interleaved across rooms), each then reading in its own task.
pub async fn join_crowd(plan: &JoinPlan, rec: &Arc<Recorder>) -> anyhow::Result<Crowd> {
    let minter = match plan.adapter {
        Adapter::Homeroom => Some(Minter::dev()?),
        _ => None,
    };
    let start = Instant::now();
    let permits = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let join_ms: Arc<Mutex<Vec<f64>>> = Arc::default();
    let per_room: Arc<Vec<AtomicUsize>> = Arc::new(plan.rooms.iter().map(|_| AtomicUsize::new(0)).collect());
    let senders_ok: Arc<Vec<AtomicUsize>> = Arc::new(plan.rooms.iter().map(|_| AtomicUsize::new(0)).collect());
    let mut tasks = Vec::new();
    let mut senders = Vec::new();
    let mut receivers: Vec<Option<mpsc::Receiver<String>>> = Vec::new();
    for _ in &plan.rooms {
        let (tx, rx) = mpsc::channel(100_000);
        senders.push(tx);
        receivers.push(Some(rx));
    }
    let per_join = Duration::from_secs(60).min(plan.budget);
    for i in 0..plan.members {
        for (r, room) in plan.rooms.iter().enumerate() {
            let outgoing = if i == 0 { receivers.get_mut(r).and_then(Option::take) } else { None };
            let tok = token(minter.as_ref(), r, i);
            let (permits, done, failed, first_error, join_ms, rec) =
                (permits.clone(), done.clone(), failed.clone(), first_error.clone(), join_ms.clone(), rec.clone());
            let (adapter, base, room) = (plan.adapter, plan.base.clone(), room.clone());
            let (per_room, senders_ok) = (per_room.clone(), senders_ok.clone());
            tasks.push(tokio::spawn(async move {
                let permit = permits.acquire_owned().await;
                let t = Instant::now();
                let joined = adapter::join_within(adapter, &base, &room, tok.as_deref(), per_join).await;
                drop(permit);
                match joined {
                    Ok(ws) => {
                        if let Ok(mut v) = join_ms.lock() {
                            v.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                        if let Some(n) = per_room.get(r) {
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                        if let (0, Some(ok)) = (i, senders_ok.get(r)) {
                            ok.store(1, Ordering::Relaxed);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                        member_loop(ws, adapter, rec, outgoing).await;
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        done.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = first_error.lock() {
                            f.get_or_insert(format!("member {i} of {room}: {e}"));
                        }
                    }
                }
            }));
        }
    }
    let total = plan.members * plan.rooms.len();
    while done.load(Ordering::Relaxed) < total && start.elapsed() < plan.budget {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let finished = done.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed) + (total - finished);
    let mut first_error = first_error.lock().ok().and_then(|f| f.clone());
    if finished < total {
        first_error.get_or_insert(format!("{} joins still pending after {:?}", total - finished, plan.budget));
    }
    let join_ms = join_ms.lock().map(|v| v.clone()).unwrap_or_default();
    Ok(Crowd {
        tasks,
        senders,
        joined: total - failed,
        failed,
        joined_per_room: per_room.iter().map(|n| n.load(Ordering::Relaxed)).collect(),
        sender_joined: senders_ok.iter().map(|n| n.load(Ordering::Relaxed) == 1).collect(),
        first_error,
        join_secs: start.elapsed().as_secs_f64(),
        join_ms,
    })
}

/// A fan-out series.
#[derive(Clone, Debug)]
pub struct FanoutConfig {
    pub adapter: Adapter,
    pub base: String,
    pub rooms: usize,
    /// Members per room (the sender is one of them).
    pub members: usize,
    /// Messages per second per room, one step each, in order.
    pub rates: Vec<u32>,
    pub step: Duration,
    pub warmup: Duration,
    /// Bytes of message text.
    pub payload: usize,
    pub join_concurrency: usize,
    pub join_budget: Duration,
    pub stop_p99_ms: f64,
    pub stop_loss_pct: f64,
    pub watched: Vec<Watched>,
    /// Room names are `{room_prefix}-{r}`.
    pub room_prefix: String,
}

/// One step of a series.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StepResult {
    pub rooms: usize,
    pub members: usize,
    /// Messages per second per room.
    pub rate: u32,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub loss: u64,
    pub loss_pct: f64,
    /// Offered deliveries per second (`rooms × members × rate`).
    pub offered_per_sec: f64,
    pub delivered_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Mean size of a delivered frame, bytes.
    pub frame_bytes: f64,
    /// How far the senders fell behind their schedule at worst (a busy client), ms.
    pub sender_lag_ms: f64,
    /// The load tool's CPU share of one core while sending.
    pub client_cpu_pct: f64,
    /// How busy each core of the machine was while sending (all processes, ours and anyone else's), %.
    pub core_busy_pct: Vec<f64>,
    /// Per server process: CPU share while sending, µs per delivery, busiest thread, RSS.
    pub server: Vec<ServerUsage>,
    pub closed: u64,
    pub ok: bool,
    /// Why the step failed.
    pub failure: Option<String>,
}

/// A server process's usage during a step.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ServerUsage {
    #[serde(flatten)]
    pub usage: ProcUsage,
    /// CPU µs per delivery over the step and its drain.
    pub cpu_us_per_delivery: f64,
    /// Highest RSS seen during the step, MiB.
    pub peak_rss_mib: f64,
}

/// A whole series.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SeriesResult {
    pub rooms: usize,
    pub members: usize,
    pub joined: usize,
    pub join_failed: usize,
    pub join_error: Option<String>,
    /// From the first connect until every member received the barrier (includes the join fan-out).
    pub join_secs: f64,
    /// Non-benchmark frames the members received during the join (Homeroom: presence).
    pub join_frames: u64,
    pub steps: Vec<StepResult>,
    /// Why the series ended before its last rate, if it did.
    pub stopped: Option<String>,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted.get(idx).copied().unwrap_or(0)) / 1000.0
}

/// Sends `count` messages per room at `rate`, the rooms' schedules staggered evenly; returns the messages sent
/// in each room and the worst lag behind schedule (µs).
async fn send_step(
    cfg: &FanoutConfig,
    senders: &[mpsc::Sender<String>],
    step: u32,
    rate: u32,
    dur: Duration,
) -> (Vec<u64>, u64) {
    let base_instant = Instant::now() + Duration::from_millis(50);
    let base_us = adapter::now_us() + 50_000;
    let count = (f64::from(rate) * dur.as_secs_f64()).round().max(1.0) as u64;
    let rooms = senders.len().max(1) as f64;
    let mut handles = Vec::new();
    for (r, tx) in senders.iter().enumerate() {
        let tx = tx.clone();
        let (adapter, payload) = (cfg.adapter, cfg.payload);
        handles.push(tokio::spawn(async move {
            let mut sent = 0u64;
            let mut lag = 0u64;
            for k in 0..count {
                let offset = Duration::from_secs_f64((k as f64 + r as f64 / rooms) / f64::from(rate));
                let at = base_instant + offset;
                tokio::time::sleep_until(at.into()).await;
                lag = lag.max(Instant::now().saturating_duration_since(at).as_micros() as u64);
                let sched_us = base_us + offset.as_micros() as u64;
                let text = adapter::payload(step, k, sched_us, payload);
                if tx.send(adapter::post_frame(adapter, &format!("b{step}-{k}"), &text)).await.is_err() {
                    break;
                }
                sent += 1;
            }
            (sent, lag)
        }));
    }
    let mut sent = Vec::new();
    let mut lag = 0;
    for h in handles {
        let (s, l) = h.await.unwrap_or((0, 0));
        sent.push(s);
        lag = lag.max(l);
    }
    (sent, lag)
}

/// Runs one measured step.
async fn run_step(cfg: &FanoutConfig, crowd: &Crowd, rec: &Arc<Recorder>, step: u32, rate: u32) -> StepResult {
    let watched = &cfg.watched;
    let snap0 = CpuSnapshot::take(watched);
    let mut peak = vec![0.0f64; watched.len()];
    let sending = {
        let cfg = cfg.clone();
        let senders = crowd.senders.clone();
        tokio::spawn(async move { send_step(&cfg, &senders, step, rate, cfg.step).await })
    };
    while !sending.is_finished() {
        for (p, w) in peak.iter_mut().zip(watched) {
            *p = p.max(procfs::rss_kb(w.pid).unwrap_or(0) as f64 / 1024.0);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (sent_per_room, lag_us) = sending.await.unwrap_or_default();
    let snap1 = CpuSnapshot::take(watched);
    let sent: u64 = sent_per_room.iter().sum();
    let expected: u64 = sent_per_room.iter().zip(&crowd.joined_per_room).map(|(s, j)| s * *j as u64).sum();
    let end_send = Instant::now();
    let mut last_progress = Instant::now();
    let mut last_count = 0;
    loop {
        let (count, _) = rec.count(step);
        if count >= expected {
            break;
        }
        if count != last_count {
            last_count = count;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > Duration::from_secs(3) || end_send.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (p, w) in peak.iter_mut().zip(watched) {
        *p = p.max(procfs::rss_kb(w.pid).unwrap_or(0) as f64 / 1024.0);
    }
    let snap2 = CpuSnapshot::take(watched);
    let mut data = rec.take(step);
    data.lat_us.sort_unstable();
    let received = data.count;
    let loss = expected.saturating_sub(received);
    let loss_pct = if expected > 0 { loss as f64 * 100.0 / expected as f64 } else { 0.0 };
    // The span the deliveries arrived over, plus one send interval (messages 1/rate apart span one interval
    // less than the step): a server that keeps up at a steady lag reads its full rate, one that falls behind
    // reads the rate it really delivered at.
    let window = if received > 0 {
        data.last_us.saturating_sub(data.first_us) as f64 / 1e6 + 1.0 / f64::from(rate.max(1))
    } else {
        cfg.step.as_secs_f64()
    };
    let whole = snap0.usage(&snap2, watched);
    let server = snap0
        .usage(&snap1, watched)
        .into_iter()
        .zip(whole)
        .zip(peak)
        .map(|((usage, whole), peak)| ServerUsage {
            cpu_us_per_delivery: if received > 0 { whole.cpu_secs * 1e6 / received as f64 } else { 0.0 },
            peak_rss_mib: peak,
            usage,
        })
        .collect();
    let (closed, first_close) = rec.closes();
    let p99 = percentile(&data.lat_us, 0.99);
    let mut failure = None;
    if closed > 0 {
        failure = Some(format!("{closed} connections closed (first: {})", first_close.unwrap_or_default()));
    } else if loss_pct > cfg.stop_loss_pct {
        failure = Some(format!("loss {loss_pct:.2} % > {} %", cfg.stop_loss_pct));
    } else if p99 > cfg.stop_p99_ms {
        failure = Some(format!("p99 {p99:.0} ms > {} ms", cfg.stop_p99_ms));
    }
    StepResult {
        rooms: cfg.rooms,
        members: cfg.members,
        rate,
        sent,
        expected,
        received,
        loss,
        loss_pct,
        offered_per_sec: (cfg.rooms * cfg.members) as f64 * f64::from(rate),
        delivered_per_sec: received as f64 / window,
        p50_ms: percentile(&data.lat_us, 0.5),
        p99_ms: p99,
        max_ms: percentile(&data.lat_us, 1.0),
        frame_bytes: if received > 0 { data.bytes as f64 / received as f64 } else { 0.0 },
        sender_lag_ms: lag_us as f64 / 1000.0,
        client_cpu_pct: snap0.own_pct(&snap1),
        core_busy_pct: snap0.core_busy_pct(&snap1),
        server,
        closed,
        ok: failure.is_none(),
        failure,
    }
}

/// Runs a series: join, barrier, warm-up, then one step per rate until one fails.
pub async fn run_series(cfg: &FanoutConfig) -> anyhow::Result<SeriesResult> {
    let rooms: Vec<String> = (0..cfg.rooms).map(|r| format!("{}-{r}", cfg.room_prefix)).collect();
    let rec = Recorder::new(cfg.rates.len() + 2);
    let plan = JoinPlan {
        adapter: cfg.adapter,
        base: cfg.base.clone(),
        rooms,
        members: cfg.members,
        concurrency: cfg.join_concurrency,
        budget: cfg.join_budget,
    };
    let start = Instant::now();
    let mut crowd = join_crowd(&plan, &rec).await?;
    let mut result = SeriesResult {
        rooms: cfg.rooms,
        members: cfg.members,
        joined: crowd.joined,
        join_failed: crowd.failed,
        join_error: crowd.first_error.clone(),
        ..SeriesResult::default()
    };
    // A few failed joins (≤ 1 %) are reported and tolerated: the steps expect deliveries to the joined members.
    let total = cfg.members * cfg.rooms;
    if crowd.failed * 100 > total || crowd.sender_joined.iter().any(|ok| !ok) {
        result.join_secs = crowd.join_secs;
        result.stopped = Some(format!(
            "{} of {} members could not join{}: {}",
            crowd.failed,
            total,
            if crowd.sender_joined.iter().any(|ok| !ok) { " (a sender among them)" } else { "" },
            crowd.first_error.clone().unwrap_or_default()
        ));
        return Ok(result);
    }
    // Barrier: one message per room, delivered to everyone, after every join-time frame.
    let _ = send_step(cfg, &crowd.senders, 0, 1000, Duration::from_millis(1)).await;
    let expected = crowd.joined as u64;
    let left = cfg.join_budget.saturating_sub(start.elapsed()).max(Duration::from_secs(30));
    let barrier_start = Instant::now();
    while rec.count(0).0 < expected && barrier_start.elapsed() < left {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    result.join_secs = start.elapsed().as_secs_f64();
    result.join_frames = rec.other_frames();
    let got = rec.count(0).0;
    if got < expected {
        result.stopped =
            Some(format!("the barrier reached {got} of {expected} members within {left:?} after the joins"));
        return Ok(result);
    }
    procfs::settle(&cfg.watched, 5.0, Duration::from_secs(60)).await;
    if let (Some(rate), false) = (cfg.rates.first(), cfg.warmup.is_zero()) {
        let warm = FanoutConfig { step: cfg.warmup, ..cfg.clone() };
        let _ = send_step(&warm, &crowd.senders, 1, *rate, warm.step).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        procfs::settle(&cfg.watched, 5.0, Duration::from_secs(30)).await;
    }
    for (i, rate) in cfg.rates.iter().enumerate() {
        if let Some(dead) = cfg.watched.iter().find(|w| procfs::cpu_ticks(w.pid).is_err()) {
            result.stopped = Some(format!("the server process {} (pid {}) died", dead.label, dead.pid));
            break;
        }
        let step = run_step(cfg, &crowd, &rec, i as u32 + 2, *rate).await;
        eprintln!(
            "    rate {:>5}/s × {} rooms × {} members: {:>9.0} deliveries/s, p50 {:>8.1} ms, p99 {:>8.1} ms, loss {:.2} %, client CPU {:.0} %{}",
            rate,
            cfg.rooms,
            cfg.members,
            step.delivered_per_sec,
            step.p50_ms,
            step.p99_ms,
            step.loss_pct,
            step.client_cpu_pct,
            step.failure.as_ref().map(|f| format!(" — FAIL: {f}")).unwrap_or_default()
        );
        let failed = step.failure.clone();
        result.steps.push(step);
        if let Some(f) = failed {
            result.stopped = Some(format!("at {rate} msg/s: {f}"));
            break;
        }
        procfs::settle(&cfg.watched, 5.0, Duration::from_secs(30)).await;
    }
    crowd.abort();
    Ok(result)
}
