//! Join storm: `joins` members join one fresh room, evenly paced over `over` (500 in 5 s = 100 joins/s), each
//! in its own task without waiting for the previous one. Each join's latency runs from the TCP connect to the
//! server's join confirmation (Homeroom: the `welcome` frame, after the token check, the room's admission and
//! its SQLite writes; socket.io: the `join` event's ack; ws: `joined`). Joined members keep reading their
//! socket, so Homeroom's `participant.joined` fan-out to everyone already present (≈ joins² / 2 frames) is
//! part of the load, as in a real class starting.

use crate::adapter::{self, Adapter};
use crate::fanout::{member_loop, Recorder};
use crate::procfs::{CpuSnapshot, ProcUsage, Watched};
use homeroom_shared::protocol::Role;
use homeroom_tests::tokens::Minter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A join storm.
#[derive(Clone, Debug)]
pub struct StormConfig {
    pub adapter: Adapter,
    pub base: String,
    pub room: String,
    pub joins: usize,
    pub over: Duration,
    pub watched: Vec<Watched>,
}

/// What a join storm measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StormResult {
    pub joins: usize,
    pub over_secs: f64,
    pub ok: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// From the first connect to the last successful confirmation.
    pub total_secs: f64,
    /// How far behind its schedule this tool started a join, at worst (included in the latencies).
    pub max_start_lag_ms: f64,
    /// Server CPU from the first connect to the last successful confirmation.
    pub server: Vec<ProcUsage>,
    /// The slowest joins, slowest first: when each was due (ms after the storm began) and its latency, so
    /// a tail can be told to be one stall (joins due together) or spread over the storm.
    pub slowest: Vec<SlowJoin>,
}

/// One of a storm's slowest joins ([`StormResult::slowest`]).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct SlowJoin {
    pub due_ms: f64,
    pub latency_ms: f64,
}

/// How many of the slowest joins a storm reports.
const SLOWEST: usize = 8;

/// Runs a join storm.
pub async fn run(cfg: &StormConfig) -> anyhow::Result<StormResult> {
    let minter = match cfg.adapter {
        Adapter::Homeroom => Some(Minter::dev()?),
        _ => None,
    };
    let tokens: Vec<Option<String>> =
        (0..cfg.joins).map(|i| minter.as_ref().map(|m| m.token(&format!("s{i}"), Role::Student))).collect();
    let rec = Recorder::new(0);
    let results: Arc<Mutex<Vec<Result<SlowJoin, String>>>> = Arc::default();
    let max_lag_us = Arc::new(AtomicU64::new(0));
    let snap0 = CpuSnapshot::take(&cfg.watched);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let at = start + cfg.over.mul_f64(i as f64 / cfg.joins.max(1) as f64);
        tokio::time::sleep_until(at.into()).await;
        let (adapter, base, room, rec, results) =
            (cfg.adapter, cfg.base.clone(), cfg.room.clone(), rec.clone(), results.clone());
        let lag = max_lag_us.clone();
        tasks.push(tokio::spawn(async move {
            // Timed from when the join was due, so a load tool running behind its schedule adds to the figure
            // instead of hiding (its worst lag is reported too).
            let late = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
            lag.fetch_max(late, Ordering::Relaxed);
            match adapter::join_within(adapter, &base, &room, token.as_deref(), Duration::from_secs(60)).await {
                Ok(ws) => {
                    if let Ok(mut r) = results.lock() {
                        let due_ms = (at - start).as_secs_f64() * 1000.0;
                        r.push(Ok(SlowJoin { due_ms, latency_ms: at.elapsed().as_secs_f64() * 1000.0 }));
                    }
                    member_loop(ws, adapter, rec, None).await;
                }
                Err(e) => {
                    if let Ok(mut r) = results.lock() {
                        r.push(Err(e));
                    }
                }
            }
        }));
    }
    // Server CPU and the total time run to the last *successful* join (a join that times out would otherwise
    // stretch the window with idle time).
    let limit = cfg.over + Duration::from_secs(65);
    let mut seen_ok = 0;
    let mut last_ok = (start.elapsed(), CpuSnapshot::take(&cfg.watched));
    loop {
        let (done, oks) = results.lock().map(|r| (r.len(), r.iter().filter(|x| x.is_ok()).count())).unwrap_or((0, 0));
        if oks > seen_ok {
            seen_ok = oks;
            last_ok = (start.elapsed(), CpuSnapshot::take(&cfg.watched));
        }
        if done >= cfg.joins || start.elapsed() >= limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (total, snap1) = last_ok;
    let total_secs = total.as_secs_f64();
    let results = results.lock().map(|r| r.clone()).unwrap_or_default();
    for t in &tasks {
        t.abort();
    }
    let mut joins: Vec<SlowJoin> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    joins.sort_by(|a, b| b.latency_ms.total_cmp(&a.latency_ms));
    let slowest = joins.iter().take(SLOWEST).copied().collect();
    let mut ok: Vec<f64> = joins.iter().map(|j| j.latency_ms).collect();
    ok.sort_by(f64::total_cmp);
    let first_error = results.iter().find_map(|r| r.as_ref().err().cloned());
    let pct = |p: f64| -> f64 {
        if ok.is_empty() {
            return 0.0;
        }
        ok.get(((ok.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0)
    };
    Ok(StormResult {
        joins: cfg.joins,
        over_secs: cfg.over.as_secs_f64(),
        ok: ok.len(),
        failed: cfg.joins - ok.len(),
        first_error,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        total_secs,
        max_start_lag_ms: max_lag_us.load(Ordering::Relaxed) as f64 / 1000.0,
        server: snap0.usage(&snap1, &cfg.watched),
        slowest,
    })
}
