//! The wire protocol, v1: frame types in both directions, the objects they carry, and the codes.
//!
//! One enum per direction, `#[serde(tag = "type")]` with the dotted names of the contract. Golden tests in
//! `tests/golden.rs` pin the exact bytes of every frame.

pub mod client;
pub mod codes;
pub mod model;
pub mod server;

pub use client::{parse_client_frame, peek_rid, ClientFrame, ClientRequest, FrameError, MAX_RID_CHARS};
pub use codes::{close, ApiError, ErrorCode};
pub use model::{
    ChatMessage, LeaveReason, MediaFlags, MediaKind, NodeInfo, Participant, Perms, PermsPatch, Role, Sender, Status,
};
pub use server::{Ack, ClientConfig, ErrorFrame, ServerFrame, Welcome, PROTOCOL_VERSION};
