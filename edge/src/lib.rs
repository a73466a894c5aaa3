//! Homeroom's edge: a Cloudflare Worker (workers-rs) in front of one Durable Object per room.
//!
//! # Layout
//! - [`router`]: the public HTTP surface: validates the room id and the token *before* any upgrade, then
//!   forwards to the room's Durable Object (`{tenant}/{room}`) with the verified identity.
//! - [`room_object`]: the Room Durable Object, a thin adapter around [`homeroom_shared::room::Room`]:
//!   hibernatable WebSockets in, outputs applied, alarm kept at the core's next deadline.
//! - [`sql_store`]: the core's storage port on the Durable Object's SQLite.
//! - [`registry_object`]: the media-node registry Durable Object (leases by heartbeat).
//! - [`dev_tokens`]: `POST /v1/dev/token`, for local development only (var `DEV_TOKENS=true`).
//! - [`config`], [`http`], [`clock`]: Worker vars and secrets, JSON responses, the clock.
//!
//! Never panic here: a panic resets the whole Wasm instance, i.e. every room in this isolate. Outside tests
//! `unwrap`, `expect`, `panic!` and unchecked indexing are denied.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod clock;
pub mod config;
pub mod dev_tokens;
pub mod http;
pub mod media_control;
pub mod registry_object;
pub mod room_object;
pub mod router;
mod send;
pub mod sql_store;

use worker::worker_sys::web_sys;
use worker::{event, Context, Env, Response, Result};

/// The Worker's entry point. It takes the runtime's request as is (see [`router::handle`]).
#[event(fetch)]
pub async fn fetch(req: web_sys::Request, env: Env, _ctx: Context) -> Result<Response> {
    Ok(router::handle(req, env).await)
}
