//! Worker configuration: secrets (`JWT_SECRET`, `NODE_SECRET`) and vars (limits, see `docs/protocol.md`).

use homeroom_shared::auth::TokenKey;
use homeroom_shared::room::config::{ConfigError, Limits};
use worker::Env;

/// A secret or var, whichever is set (wrangler's `.dev.vars` provides secrets as vars locally).
pub fn var(env: &Env, name: &str) -> Option<String> {
    if let Ok(secret) = env.secret(name) {
        return Some(secret.to_string());
    }
    env.var(name).ok().map(|v| v.to_string())
}

/// The key user tokens are verified with. Empty (so every token is refused) when `JWT_SECRET` is unset.
pub fn user_key(env: &Env) -> TokenKey {
    TokenKey::named("JWT_SECRET", var(env, "JWT_SECRET").unwrap_or_default().as_bytes())
}

/// The key for node heartbeats, media tokens and control calls (`NODE_SECRET`).
pub fn node_key(env: &Env) -> TokenKey {
    TokenKey::named("NODE_SECRET", var(env, "NODE_SECRET").unwrap_or_default().as_bytes())
}

/// Room limits from Worker vars.
pub fn limits(env: &Env) -> Result<Limits, ConfigError> {
    Limits::from_vars(|name| var(env, name))
}
