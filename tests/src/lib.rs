//! Homeroom's protocol client and end-to-end harness.
//!
//! # Layout
//! - [`client`]: a WebSocket client for protocol v1 (requests with `rid`, replies, event buffering, resume).
//!   The e2e suites and the load tools use it.
//! - [`edge`]: starts the real edge (`wrangler dev`, real workerd with SQLite-backed Durable Objects) on a
//!   free port with its own persisted state, and stops it with its whole process group.
//! - [`chaos`]: the chaos-resume scenario (random drops while chat flows; logs must match).
//! - [`media`]: starts real media nodes (the `homeroom-media-node` binary) registered with an edge.
//! - [`tokens`]: mints user and admin tokens with the development secret of `.dev.vars`.

pub mod chaos;
pub mod client;
pub mod edge;
pub mod media;
pub mod tokens;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

/// Kills the process group `child` leads (SIGKILL, like a crash) and waits up to 10 s for `child` to exit.
pub fn kill_process_group(child: &mut Child) {
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if !matches!(child.try_wait(), Ok(None)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
