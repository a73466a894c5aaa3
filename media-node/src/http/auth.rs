//! Bearer tokens of the node's API: media tokens for sessions, the edge's service token for control.

use super::error::HttpError;
use crate::clock;
use axum::http::{header, HeaderMap};
use homeroom_shared::auth::{token_from, AuthError, MediaClaims, TokenKey};
use homeroom_shared::ids::UserId;
use homeroom_shared::media::EDGE_SUBJECT;
use homeroom_shared::protocol::ErrorCode;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest tenant-scoped room key accepted from a token (`{tenant}/{room}`: 64 + 1 + 64).
const MAX_ROOM_KEY: usize = 129;

fn bearer(headers: &HeaderMap) -> Result<String, HttpError> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    token_from(None, authorization).ok_or_else(|| {
        HttpError::new(ErrorCode::Unauthorized, "no token: send Authorization: Bearer <media token from the edge>")
    })
}

/// What a media token is checked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Use {
    /// Opening a session: the token must be unexpired.
    Open,
    /// Closing one's own session: a token expired within a day still does (sessions outlive their tokens).
    Release,
}

/// Verifies the request's media token for this node: signature, expiry, the `node` claim, sane `sub`/`room`.
pub(crate) fn media_claims(
    headers: &HeaderMap,
    key: &TokenKey,
    node_id: &str,
    purpose: Use,
) -> Result<MediaClaims, HttpError> {
    let token = bearer(headers)?;
    let verified = match purpose {
        Use::Open => key.verify_media(&token, clock::now()),
        Use::Release => key.verify_media_for_release(&token, clock::now()),
    };
    let claims = verified.map_err(|e| HttpError(e.to_api()))?;
    if claims.node != node_id {
        return Err(HttpError::new(
            ErrorCode::Forbidden,
            format!(
                "the media token is for node {:?}, this is node {node_id:?}; ask the edge for a new one",
                claims.node
            ),
        ));
    }
    if UserId::parse(&claims.sub).is_err() {
        return Err(HttpError::new(ErrorCode::Unauthorized, "token claim is invalid: sub must be a user id"));
    }
    let room_ok =
        !claims.room.is_empty() && claims.room.len() <= MAX_ROOM_KEY && !claims.room.chars().any(char::is_control);
    if !room_ok {
        return Err(HttpError::new(
            ErrorCode::Unauthorized,
            format!("token claim is invalid: room must be 1 to {MAX_ROOM_KEY} characters ({{tenant}}/{{room}})"),
        ));
    }
    Ok(claims)
}

/// When a refused control call was last logged at warn (seconds on the node's clock).
static LAST_REFUSAL_WARNING: AtomicU64 = AtomicU64::new(0);

/// Logs a refused control call. A bad signature or an expired token means the edge's moderation (mutes,
/// kicks, room clears) does not reach this node, which the operator must hear about: at warn, at most once
/// per 10 s (the endpoint is public, and anyone can send it bad tokens). Garbage is logged at debug.
fn log_refused_control(error: &AuthError) {
    let now = clock::now().as_secs();
    let last = LAST_REFUSAL_WARNING.load(Ordering::Relaxed);
    let warn = now >= last.saturating_add(10)
        && LAST_REFUSAL_WARNING.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok();
    match error {
        AuthError::Expired { exp, now } if warn => tracing::warn!(
            %error,
            expired_secs_ago = now.saturating_sub(*exp),
            "refused the edge's control call: its token (valid for 60 s, 30 s of skew tolerated) had expired \
             on this host's clock; this host's clock is likely ahead: keep it in sync (NTP)"
        ),
        AuthError::BadSignature if warn => tracing::warn!(
            %error,
            "refused a control call signed with another secret: if it came from the edge, this node's \
             NODE_SECRET is not the edge's (`wrangler secret put NODE_SECRET`)"
        ),
        AuthError::WrongAudience { .. } if warn => tracing::warn!(
            %error,
            "refused the edge's control call for another node: does another node announce this node's \
             --public-url? each node needs its own"
        ),
        _ => tracing::debug!(%error, "refused a control call"),
    }
}

/// Verifies the edge's control token: signed with `NODE_SECRET`, unexpired, `sub` = `"edge"`, and naming
/// `body` if it names one (`body_sha256`). Returns the token's `iat`: when the edge made the decision, on the
/// clock its media tokens' `iat` comes from.
pub(crate) fn edge_service(
    headers: &HeaderMap,
    key: &TokenKey,
    node_id: &str,
    body: &[u8],
) -> Result<Option<u64>, HttpError> {
    let token = bearer(headers)?;
    let refused = |e: homeroom_shared::auth::AuthError| {
        log_refused_control(&e);
        HttpError(e.to_api())
    };
    let claims = key.verify_service(&token, clock::now()).map_err(refused)?;
    // Whose token it is comes first: a heartbeat token (another `sub`, no body digest, `aud` "edge") is the
    // wrong kind of token, which says more than the body or audience it does not name.
    if claims.sub != EDGE_SUBJECT {
        return Err(HttpError::new(
            ErrorCode::Forbidden,
            format!("control needs the edge's service token (sub {EDGE_SUBJECT:?}), not sub {:?}", claims.sub),
        ));
    }
    claims.check_body(body).and_then(|()| claims.check_audience(node_id)).map_err(refused)?;
    Ok(claims.iat)
}
