//! Worker configuration: secrets (`JWT_SECRET`, `NODE_SECRET`) and vars (limits, see `docs/protocol.md`).

use homeroom_shared::auth::{secrets_problem, TokenKey};
use homeroom_shared::room::config::{ConfigError, Limits};
use worker::Env;

/// A secret or var, whichever is set (wrangler's `.dev.vars` provides secrets as vars locally).
pub fn var(env: &Env, name: &str) -> Option<String> {
    if let Ok(secret) = env.secret(name) {
        return Some(secret.to_string());
    }
    env.var(name).ok().map(|v| v.to_string())
}

/// The key user tokens are verified with. Empty (so every token is refused) when `JWT_SECRET` is unset; one
/// that refuses every token, naming the problem, when the secrets are unusable
/// ([`homeroom_shared::auth::secrets_problem`]).
pub fn user_key(env: &Env) -> TokenKey {
    key(env, "JWT_SECRET")
}

/// The key for node heartbeats, media tokens and control calls (`NODE_SECRET`); refusing as [`user_key`].
pub fn node_key(env: &Env) -> TokenKey {
    key(env, "NODE_SECRET")
}

fn key(env: &Env, name: &'static str) -> TokenKey {
    let (jwt, node) = (var(env, "JWT_SECRET").unwrap_or_default(), var(env, "NODE_SECRET").unwrap_or_default());
    if let Some(problem) = secrets_problem(&jwt, &node) {
        worker::console_error!("{problem}");
        return TokenKey::refusing(problem);
    }
    TokenKey::named(name, if name == "JWT_SECRET" { jwt.as_bytes() } else { node.as_bytes() })
}

/// Room limits from Worker vars.
pub fn limits(env: &Env) -> Result<Limits, ConfigError> {
    Limits::from_vars(|name| var(env, name))
}
