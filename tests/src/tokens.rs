//! Tokens for tests and tools, signed with the development secrets of `.dev.vars`.

use crate::repo_root;
use homeroom_shared::auth::{TokenKey, UserClaims};
use homeroom_shared::protocol::{PermsPatch, Role};
use std::time::{SystemTime, UNIX_EPOCH};

/// Reads `NAME="value"` from `.dev.vars`.
pub fn dev_var(name: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(repo_root().join(".dev.vars"))?;
    for line in text.lines() {
        if let Some((key, value)) = line.split_once('=') {
            if key.trim() == name {
                return Ok(value.trim().trim_matches('"').to_owned());
            }
        }
    }
    anyhow::bail!("{name} is not in .dev.vars")
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Builds user tokens.
#[derive(Clone, Debug)]
pub struct Minter {
    key: TokenKey,
}

impl Minter {
    /// A minter with the development `JWT_SECRET`.
    pub fn dev() -> anyhow::Result<Self> {
        Ok(Minter { key: TokenKey::new(dev_var("JWT_SECRET")?.as_bytes()) })
    }

    /// A minter with any secret.
    pub fn with_secret(secret: &[u8]) -> Self {
        Minter { key: TokenKey::new(secret) }
    }

    /// Claims for `user` with `role`, valid for an hour, default tenant, any room.
    pub fn claims(&self, user: &str, role: Role) -> UserClaims {
        UserClaims {
            sub: user.to_owned(),
            name: Some(format!("{user} (test)")),
            role: Some(role),
            tenant: None,
            rooms: None,
            perms: None,
            exp: now_secs() + 3600,
            nbf: None,
            iat: Some(now_secs()),
        }
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &UserClaims) -> String {
        self.key.sign(claims).unwrap_or_default()
    }

    /// A token for `user` with `role`.
    pub fn token(&self, user: &str, role: Role) -> String {
        self.sign(&self.claims(user, role))
    }

    /// A token for `user` in `tenant`.
    pub fn tenant_token(&self, user: &str, role: Role, tenant: &str) -> String {
        self.sign(&UserClaims { tenant: Some(tenant.to_owned()), ..self.claims(user, role) })
    }

    /// A token with permission overrides.
    pub fn token_with_perms(&self, user: &str, role: Role, perms: PermsPatch) -> String {
        self.sign(&UserClaims { perms: Some(perms), ..self.claims(user, role) })
    }
}

/// A token signed with the development `NODE_SECRET`: a node's heartbeat token (`sub` = node id) or the edge's
/// control token (`sub` = `"edge"`).
pub fn service_token(sub: &str) -> anyhow::Result<String> {
    service_token_with(sub, now_secs(), None)
}

/// [`service_token`] issued `secs_ago` seconds ago (a heartbeat retried late).
pub fn service_token_issued_ago(sub: &str, secs_ago: u64) -> anyhow::Result<String> {
    service_token_with(sub, now_secs().saturating_sub(secs_ago), None)
}

/// [`service_token`] bound to `body` (its `body_sha256` claim), as the node's and the edge's own tokens are.
pub fn service_token_for_body(sub: &str, body: &str) -> anyhow::Result<String> {
    service_token_with(sub, now_secs(), Some(homeroom_shared::auth::body_digest(body.as_bytes())))
}

fn service_token_with(sub: &str, iat: u64, body_sha256: Option<String>) -> anyhow::Result<String> {
    let key = TokenKey::new(dev_var("NODE_SECRET")?.as_bytes());
    let claims = homeroom_shared::auth::ServiceClaims {
        sub: sub.to_owned(),
        exp: now_secs() + 300,
        iat: Some(iat),
        body_sha256,
        aud: None,
    };
    Ok(key.sign(&claims)?)
}

/// A service token for `sub` made for `aud` only (as the edge's control tokens name their node).
pub fn service_token_for(sub: &str, aud: &str) -> anyhow::Result<String> {
    let key = TokenKey::new(dev_var("NODE_SECRET")?.as_bytes());
    let claims = homeroom_shared::auth::ServiceClaims {
        sub: sub.to_owned(),
        exp: now_secs() + 300,
        iat: Some(now_secs()),
        aud: Some(aud.to_owned()),
        ..Default::default()
    };
    Ok(key.sign(&claims)?)
}

/// Verifies a service token (the edge's control token, a node's heartbeat) with the development `NODE_SECRET`.
pub fn verify_service_token(token: &str) -> anyhow::Result<homeroom_shared::auth::ServiceClaims> {
    let key = TokenKey::new(dev_var("NODE_SECRET")?.as_bytes());
    let now = homeroom_shared::Timestamp::from_secs(now_secs());
    Ok(key.verify_service(token, now)?)
}

/// Verifies a media token with the development `NODE_SECRET`.
pub fn verify_media_token(token: &str) -> anyhow::Result<homeroom_shared::auth::MediaClaims> {
    let key = TokenKey::new(dev_var("NODE_SECRET")?.as_bytes());
    let now = homeroom_shared::Timestamp::from_secs(now_secs());
    Ok(key.verify_media(token, now)?)
}
