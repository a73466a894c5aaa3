//! Homeroom's media node: a WebRTC SFU for classrooms, built on [str0m](https://docs.rs/str0m) in its sans-IO
//! style, with a WHIP-style HTTP API, heartbeats to the edge and edge-signed moderation.
//!
//! # Layout
//! - [`core`]: the SFU itself, sans-IO: [`core::Sfu`] takes datagrams, time and commands and returns datagrams
//!   and its next deadline. One str0m `Rtc` (ICE-lite, RTP mode) per participant session; demux, forwarding,
//!   simulcast layer choice, keyframe throttling, renegotiation and moderation live here. No tokio.
//! - `driver` (private): the tokio task that owns the one UDP socket and the core's timer.
//! - `http` (private): the axum API (`POST /v1/sessions`, `DELETE /v1/sessions/{id}`, `POST /v1/control`,
//!   `GET /healthz`, `GET /metrics`), token checks, contract error codes.
//! - `heartbeat` (private): leases with the edge.
//! - [`node`]: [`start`]/[`run`] a whole node and drain it on shutdown; [`Config`] its settings.
//! - [`signal`]: the JSON messages on each session's data channel (renegotiation, quality preference).
//! - [`metrics`]: Prometheus metrics.
//! - [`peer`]: a str0m test peer (synthetic audio/video/simulcast/screen, per-track receive counts) for tests
//!   and load tools; [`sim`]: an in-memory network that drives the core and peers on a simulated clock.
//!
//! # Run loop
//! One task turns the crank: wait for a datagram batch, a command or the core's deadline; feed it to the core
//! with `Instant::now()`; send what the core queued. Inside the core every `Rtc` is mutated once and then
//! drained to `Output::Timeout` before any other session is touched (str0m's single-mutation invariant);
//! events are queued and handled after the drain that produced them. See [`core`] for the invariants.
//!
//! # Using it from other crates
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use homeroom_media_node::{start, Config, NodeSecret};
//! use homeroom_shared::{NodeId, Region};
//!
//! let config = Config::local(NodeId::parse("media-1")?, Region::parse("local")?, NodeSecret::new("a-long-random-secret"));
//! let node = start(config).await?;          // binds 127.0.0.1:0 for HTTP and UDP
//! println!("{} {}", node.url(), node.udp_addr());
//! node.shutdown().await?;                   // drain, then stop
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

mod clock;
pub mod config;
pub mod core;
mod driver;
mod gso;
mod heartbeat;
mod http;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod signal;
pub mod sim;

pub use config::{Config, ConfigError, NodeSecret};
pub use metrics::Metrics;
pub use node::{run, start, NodeError, NodeHandle, Phase};

/// The line the binary prints to stdout once both sockets are bound (tests parse it):
/// `homeroom-media-node listening http=<ip:port> udp=<ip:port>`.
pub fn listening_line(http: std::net::SocketAddr, udp: std::net::SocketAddr) -> String {
    format!("homeroom-media-node listening http={http} udp={udp}")
}
