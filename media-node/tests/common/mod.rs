//! Helpers for the node's integration tests: a node on 127.0.0.1:0 and tokens signed with its secret.
#![allow(dead_code, unreachable_pub)]

use homeroom_media_node::{start, Config, NodeHandle, NodeSecret};
use homeroom_shared::auth::{MediaClaims, MediaPerms, ServiceClaims, TokenKey};
use homeroom_shared::media::{MediaCaps, EDGE_SUBJECT};
use homeroom_shared::{NodeId, Region};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const SECRET: &str = "test-node-secret";
pub const NODE: &str = "media-test";
pub const WAIT: Duration = Duration::from_secs(20);

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn config() -> Config {
    Config::local(NodeId::parse(NODE).unwrap(), Region::parse("local").unwrap(), NodeSecret::new(SECRET))
}

pub async fn node() -> NodeHandle {
    start(config()).await.expect("node starts")
}

pub fn all_perms() -> MediaPerms {
    MediaPerms { audio: true, video: true, screen: true, subscribe: true }
}

pub fn claims(participant: &str, room: &str) -> MediaClaims {
    MediaClaims {
        sub: participant.into(),
        room: room.into(),
        node: NODE.into(),
        perms: all_perms(),
        name: Some(participant.to_uppercase()),
        caps: None,
        exp: now_secs() + 300,
        iat: Some(now_secs()),
    }
}

pub fn sign<T: serde::Serialize>(claims: &T) -> String {
    TokenKey::new(SECRET.as_bytes()).sign(claims).unwrap()
}

pub fn media_token(participant: &str, room: &str) -> String {
    sign(&claims(participant, room))
}

pub fn capped_token(participant: &str, room: &str, caps: MediaCaps) -> String {
    sign(&MediaClaims { caps: Some(caps), ..claims(participant, room) })
}

pub fn edge_token() -> String {
    sign(&ServiceClaims { sub: EDGE_SUBJECT.into(), exp: now_secs() + 60, ..ServiceClaims::default() })
}

pub async fn control(node: &NodeHandle, token: Option<&str>, body: serde_json::Value) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().post(format!("{}/v1/control", node.url())).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}
