//! Homeroom's signaling benchmarks: one load tool that speaks Homeroom's protocol, socket.io (Engine.IO v4
//! over a WebSocket) and a plain `ws` JSON relay, so that every server gets the identical load, and the suite
//! that runs it against all of them on pinned CPUs.
//!
//! # What is measured
//! - [`fanout`]: N members in one room (or several rooms), one sender per room at R msg/s with ≈ 200-byte
//!   payloads carrying their scheduled send time; deliveries/s, latency p50/p99 (receive − scheduled send, one
//!   clock), loss, server CPU per process (`/proc/<pid>/stat`) and RSS (`/proc/<pid>/status`).
//! - [`storm`]: a join storm (500 joins in 5 s), connect → welcome latency.
//! - [`idle`]: memory and file descriptors per idle connection, and Homeroom's own per-connection state.
//! - [`sfu`]: the media node under a lecture (1 → N) and classrooms (R × 6 all-to-all) of str0m peers:
//!   forwarded packets/s, loss, latency, node CPU per forwarded packet (binary `homeroom-sfu-load`).
//! - [`udp_floor`]: the loopback floor of forwarding (seal and send only, the lecture's packet pattern), the
//!   ceiling any SFU has on this box (binary `homeroom-sfu-load --only floor`).
//! - [`suite`]: all of them for Homeroom (through `wrangler dev`'s proxy and directly on the inner workerd),
//!   socket.io and ws, plus several busy rooms at once; [`report`] prints the markdown tables.
//!
//! # Layout
//! - [`adapter`]: the three wire protocols (join, post, recognise a delivery).
//! - [`servers`]: starts and pins the servers, finds wrangler's two workerd processes.
//! - [`procfs`]: CPU, memory, descriptors, ports and threads from `/proc`.
//!
//! The binary is `homeroom-load` (`cargo run --release -p homeroom-bench --bin homeroom-load -- --help`);
//! `scripts/bench-signaling.sh` runs the suite on pinned CPUs.

pub mod adapter;
pub mod fanout;
pub mod idle;
pub mod procfs;
pub mod report;
pub mod servers;
pub mod sfu;
pub mod storm;
pub mod suite;
pub mod udp_floor;

/// Raises this process's open-file limit to its hard limit (each connection is a descriptor); returns the
/// new soft limit.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            eprintln!("warning: could not raise the open-file limit ({e}); run `ulimit -n \"$(ulimit -Hn)\"` first");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(0)
        }
    }
}
