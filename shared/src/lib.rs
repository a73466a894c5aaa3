//! Homeroom's shared core: the wire protocol, tokens, and the pure logic both sides and the tests need.
//!
//! # Layout
//! - [`protocol`]: frame types in both directions (serde), the objects they carry, error and close codes.
//! - [`auth`]: user, media and service tokens (HS256 JWT), verified against a time passed in.
//! - [`room`]: the room state machine (sans-IO): `connect`/`receive`/`disconnect`/`tick` in,
//!   [`room::Output`]s out, durable state behind the synchronous [`room::store::RoomStore`] port.
//! - [`media`]: the edge ↔ media node contract (heartbeats, control commands).
//! - [`placement`]: the media-node registry (leases) and room placement (region, distance, load).
//! - [`outbox`]: a room object's socket deliveries in chunks, each connection's frames kept in order.
//! - [`pump`]: the lease that decides which event handler of a room object pumps its flush windows.
//! - [`io_queue`]: a room object's media IO, one call at a time in the order the room asked for it.
//! - [`header`]: ASCII-only JSON for the Worker's internal headers to its objects.
//! - [`ids`], [`time`]: validated identifiers and the millisecond clock the adapters pass in.
//!
//! Nothing here does IO, reads a clock or draws random numbers, so everything builds for native and
//! `wasm32-unknown-unknown` and is tested natively and deterministically. Outside tests, `unwrap`, `expect`,
//! `panic!` and unchecked indexing are denied: a panic in the edge resets every room of its isolate.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod auth;
pub mod header;
pub mod ids;
pub mod io_queue;
pub mod media;
pub mod notice;
pub mod outbox;
pub mod placement;
pub mod protocol;
pub mod pump;
pub mod refusals;
pub mod room;
pub mod time;

pub use ids::{ConnId, NodeId, Region, RoomId, TenantId, UserId};
pub use time::Timestamp;
