//! Idle memory: what an idle member costs a server.
//!
//! On a fresh server (nothing connected yet), sample each server process's RSS (`VmRSS`) and open file
//! descriptors; join `connections` members to one room (they stay silent and keep reading); wait until the
//! server is quiet (< 3 % CPU over 500 ms — for Homeroom the join fan-out is done) and `quiet_wait` (5 s) more;
//! sample again.
//! Per connection = (after − before) ÷ connections; sampled again `later_wait` (20 s) later. RSS includes whatever garbage the joins left that the
//! runtime's GC has not returned yet, so treat it as an upper bound of the steady state.
//!
//! For Homeroom, [`room_state`] also estimates the room's *own* state per connection, independent of the
//! runtime: the WebSocket attachment (the serialized [`ConnRecord`]), the participant row in SQLite (the
//! serialized `ParticipantRecord`) and the core's in-memory structures, measured on the room core itself
//! (`homeroom_shared::room::sim`, the same code the Durable Object runs).

use crate::adapter::Adapter;
use crate::fanout::{join_crowd, JoinPlan, Recorder};
use crate::procfs::{self, Watched};
use homeroom_shared::protocol::Role;
use homeroom_shared::room::config::Limits;
use homeroom_shared::room::rate::TokenBucket;
use homeroom_shared::room::sim::Sim;
use homeroom_shared::room::store::{ParticipantRecord, RoomStore};
use homeroom_shared::room::ConnRecord;
use std::time::Duration;

/// An idle-memory run.
#[derive(Clone, Debug)]
pub struct IdleConfig {
    pub adapter: Adapter,
    pub base: String,
    pub room: String,
    pub connections: usize,
    pub join_concurrency: usize,
    pub watched: Vec<Watched>,
    /// How long to wait after the server went quiet before sampling (5 s in the full suite).
    pub quiet_wait: Duration,
    /// Sample RSS once more this much later (to see whether the runtime returns join-time garbage); zero: no.
    pub later_wait: Duration,
}

/// One process's memory and descriptors before and after.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ProcMemory {
    pub label: String,
    pub rss_before_mib: f64,
    pub rss_after_mib: f64,
    pub kib_per_conn: f64,
    /// RSS `later_wait` after the first sample (0 if not sampled).
    pub rss_later_mib: f64,
    pub kib_per_conn_later: f64,
    pub fds_before: usize,
    pub fds_after: usize,
    pub fds_per_conn: f64,
    /// The process's soft limit on open files.
    pub fd_limit: u64,
}

/// What an idle-memory run measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IdleResult {
    pub connections: usize,
    pub joined: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub join_secs: f64,
    pub procs: Vec<ProcMemory>,
}

/// Connections of the warm-up room.
const WARM_UP_CONNECTIONS: usize = 50;

/// Runs an idle-memory measurement on a fresh server.
pub async fn run(cfg: &IdleConfig) -> anyhow::Result<IdleResult> {
    // Warm-up: 50 members in another room first, so that what every server pays once (for Homeroom a room
    // object, its SQLite and the compiled upgrade path; for Node the heap's first growth) is in the baseline
    // instead of being divided among the measured connections. They stay connected until the end.
    let warm_plan = JoinPlan {
        adapter: cfg.adapter,
        base: cfg.base.clone(),
        rooms: vec![format!("{}-warm", cfg.room)],
        members: WARM_UP_CONNECTIONS,
        concurrency: cfg.join_concurrency,
        budget: Duration::from_secs(120),
    };
    let mut warm = join_crowd(&warm_plan, &Recorder::new(0)).await?;
    procfs::settle(&cfg.watched, 3.0, Duration::from_secs(30)).await;
    let before: Vec<(u64, usize)> = cfg
        .watched
        .iter()
        .map(|w| (procfs::rss_kb(w.pid).unwrap_or(0), procfs::fd_count(w.pid).unwrap_or(0)))
        .collect();
    let rec = Recorder::new(0);
    let plan = JoinPlan {
        adapter: cfg.adapter,
        base: cfg.base.clone(),
        rooms: vec![cfg.room.clone()],
        members: cfg.connections,
        concurrency: cfg.join_concurrency,
        budget: Duration::from_secs(600),
    };
    let mut crowd = join_crowd(&plan, &rec).await?;
    procfs::settle(&cfg.watched, 3.0, Duration::from_secs(180)).await;
    tokio::time::sleep(cfg.quiet_wait).await;
    let n = crowd.joined.max(1) as f64;
    let mut procs: Vec<ProcMemory> = cfg
        .watched
        .iter()
        .zip(before)
        .map(|(w, (rss0, fds0))| {
            let rss1 = procfs::rss_kb(w.pid).unwrap_or(0);
            let fds1 = procfs::fd_count(w.pid).unwrap_or(0);
            ProcMemory {
                label: w.label.clone(),
                rss_before_mib: rss0 as f64 / 1024.0,
                rss_after_mib: rss1 as f64 / 1024.0,
                kib_per_conn: (rss1 as f64 - rss0 as f64) / n,
                rss_later_mib: 0.0,
                kib_per_conn_later: 0.0,
                fds_before: fds0,
                fds_after: fds1,
                fds_per_conn: (fds1 as f64 - fds0 as f64) / n,
                fd_limit: procfs::fd_limit(w.pid).unwrap_or(0),
            }
        })
        .collect();
    if !cfg.later_wait.is_zero() {
        tokio::time::sleep(cfg.later_wait).await;
        for (p, w) in procs.iter_mut().zip(&cfg.watched) {
            let rss = procfs::rss_kb(w.pid).unwrap_or(0) as f64;
            p.rss_later_mib = rss / 1024.0;
            p.kib_per_conn_later = (rss - p.rss_before_mib * 1024.0) / n;
        }
    }
    let result = IdleResult {
        connections: cfg.connections,
        joined: crowd.joined,
        failed: crowd.failed,
        first_error: crowd.first_error.clone(),
        join_secs: crowd.join_secs,
        procs,
    };
    crowd.abort();
    warm.abort();
    Ok(result)
}

/// Homeroom's own per-connection state, measured on the room core.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RoomState {
    /// Connections the estimate averaged over.
    pub connections: usize,
    /// The WebSocket attachment: `ConnRecord` as JSON, bytes (workerd stores it structured-cloned, which is
    /// of the same order).
    pub attachment_bytes: f64,
    /// The participant's SQLite row (`ParticipantRecord` as JSON), bytes.
    pub participant_row_bytes: f64,
    /// The core's in-memory structures per connection (connection record, two rate buckets, participant
    /// record, map entries and owned strings), bytes: a lower-bound estimate from type sizes plus heap strings.
    pub in_memory_bytes: f64,
}

/// Measures [`RoomState`] with `connections` one-connection participants named like the load tool's.
pub fn room_state(connections: usize) -> RoomState {
    let limits = Limits { capacity: connections as u32 + 10, ..Limits::default() };
    let mut sim = Sim::new(limits);
    for i in 0..connections {
        let mut identity = sim.identity(&format!("m0-{i}"), Role::Student);
        identity.name = format!("m0-{i} (test)");
        if sim.connect(&identity, None).is_err() {
            break;
        }
    }
    let records: Vec<ConnRecord> = sim.room().conn_records();
    let participants: Vec<ParticipantRecord> = sim.room().store().participants().unwrap_or_default();
    let n = records.len().max(1) as f64;
    let attachment: usize = records.iter().map(|r| serde_json::to_string(r).map(|s| s.len()).unwrap_or(0)).sum();
    let rows: usize = participants.iter().map(|p| serde_json::to_string(p).map(|s| s.len()).unwrap_or(0)).sum();
    // Connection: record + two token buckets, in a BTreeMap entry (key + value, ~1/11 of a node's overhead).
    let conn = std::mem::size_of::<ConnRecord>() + 2 * std::mem::size_of::<TokenBucket>() + 8 + 16;
    // Member: participant record + a one-element BTreeSet + the cursor slot (≈ 48 B), in a BTreeMap entry.
    let member = std::mem::size_of::<ParticipantRecord>() + 24 + 48 + 48 + 24;
    // The adapter's HashMap<ConnId, WebSocket> entry (a JS handle).
    let socket = 8 + 8 + 8;
    let strings: usize = records.iter().map(|r| r.user.to_string().len() * 2 + r.name.len()).sum::<usize>()
        + participants.iter().map(|p| p.participant.name.len() + p.participant.id.to_string().len()).sum::<usize>();
    RoomState {
        connections: records.len(),
        attachment_bytes: attachment as f64 / n,
        participant_row_bytes: rows as f64 / n,
        in_memory_bytes: (conn + member + socket) as f64 + strings as f64 / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_state_is_measured_on_real_records() {
        let s = room_state(20);
        assert_eq!(s.connections, 20);
        assert!(s.attachment_bytes > 50.0 && s.attachment_bytes < 1000.0, "{s:?}");
        assert!(s.participant_row_bytes > 100.0, "{s:?}");
        assert!(s.in_memory_bytes > 100.0, "{s:?}");
    }
}
