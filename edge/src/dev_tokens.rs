//! `POST /v1/dev/token`: mints a user token so a person can try the demo classroom without an identity
//! provider. Enabled only when the var `DEV_TOKENS` is `"true"`, which only `.dev.vars` sets (local
//! `wrangler dev`); a deployment answers 404 as if the route did not exist.

use crate::http::{self, fail};
use crate::{clock, config};
use homeroom_shared::auth::UserClaims;
use homeroom_shared::ids::parse_display_name;
use homeroom_shared::protocol::{ErrorCode, Role};
use homeroom_shared::{TenantId, UserId};
use serde::{Deserialize, Serialize};
use worker::{Env, Request, Response};

/// Lifetime of development tokens.
const DEV_TOKEN_TTL_SECS: u64 = 8 * 3600;

#[derive(Deserialize)]
struct Ask {
    name: String,
    #[serde(default)]
    role: Option<Role>,
    /// A stable user id (the demo page keeps one per browser); derived from the name if absent.
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    /// Token lifetime in seconds (10 s to 8 h; default 8 h), e.g. to try `auth.expiring` and `auth.refresh`.
    #[serde(default)]
    ttl_secs: Option<u64>,
}

#[derive(Serialize)]
struct Issued {
    token: String,
    user: String,
    name: String,
    role: Role,
    exp: u64,
}

/// Whether development tokens are enabled.
pub fn enabled(env: &Env) -> bool {
    config::var(env, "DEV_TOKENS").is_some_and(|v| v.trim() == "true")
}

/// Handles `POST /v1/dev/token {name, role?, user?, tenant?, ttl_secs?}` → `{token, user, name, role, exp}`.
/// Any role may be asked for, `admin` included (to try the admin API locally): this endpoint exists only in
/// development.
pub async fn issue(mut req: Request, env: &Env) -> Response {
    if !enabled(env) {
        return fail(ErrorCode::NotFound, "no route for /v1/dev/token; see docs/protocol.md");
    }
    let body = match crate::http::body_within(&mut req, 4 * 1024, "token request").await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let ask: Ask = match serde_json::from_str(&body) {
        Ok(ask) => ask,
        Err(e) => {
            return fail(ErrorCode::BadRequest, format!("expected {{name, role?, user?, tenant?, ttl_secs?}}: {e}"))
        }
    };
    let name = match parse_display_name(&ask.name) {
        Ok(name) => name,
        Err(e) => return fail(ErrorCode::BadRequest, format!("name: {e}")),
    };
    let role = ask.role.unwrap_or(Role::Student);
    let user = ask.user.unwrap_or_else(|| {
        let slug: String =
            name.chars().filter(|c| c.is_ascii_alphanumeric()).take(24).collect::<String>().to_ascii_lowercase();
        format!("{}-{}", if slug.is_empty() { "guest" } else { &slug }, clock::now().as_millis() % 1_000_000)
    });
    if let Err(e) = UserId::parse(&user) {
        return fail(ErrorCode::BadRequest, format!("user: {e}"));
    }
    if let Some(Err(e)) = ask.tenant.as_deref().map(TenantId::parse) {
        return fail(ErrorCode::BadRequest, format!("tenant: {e}"));
    }
    let now = clock::now().as_secs();
    let claims = UserClaims {
        sub: user.clone(),
        name: Some(name.clone()),
        role: Some(role),
        tenant: ask.tenant,
        rooms: None,
        perms: None,
        exp: now + ask.ttl_secs.unwrap_or(DEV_TOKEN_TTL_SECS).clamp(10, DEV_TOKEN_TTL_SECS),
        nbf: None,
        iat: Some(now),
    };
    match config::user_key(env).sign(&claims) {
        Ok(token) => http::json(200, &Issued { token, user, name, role, exp: claims.exp }),
        Err(e) => http::error(&e.to_api()),
    }
}
