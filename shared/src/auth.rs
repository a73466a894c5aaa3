//! Tokens: the user JWT of the contract, the media token and the node heartbeat token.
//!
//! All are HS256 JWTs. Verification is pure: the caller passes the current time, so `exp` and `nbf` are
//! checked here rather than by `jsonwebtoken` (which would read the clock).

use crate::ids::{parse_display_name, NodeId, RoomId, TenantId, UserId};
use crate::protocol::{ApiError, ErrorCode, MediaFlags, MediaKind, Perms, PermsPatch, Role};
use crate::time::Timestamp;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Tolerated clock skew for `nbf`, in seconds. A user's or media token's `exp` has none: an expired token is
/// expired.
pub const NBF_LEEWAY_SECS: u64 = 30;

/// Tolerated clock skew for a service token's `exp`, in seconds. Service tokens pass between two machines'
/// clocks (a node's heartbeat token, valid 120 s, to the edge; the edge's control token, valid 60 s, to a
/// node), so a node whose clock is somewhat off must not lose its lease or its moderation commands over it:
/// control calls fail only once the node is more than 90 s ahead, heartbeats once it is 150 s behind.
pub const SERVICE_SKEW_SECS: u64 = 30;

/// How long after its expiry a media token still releases its holder's session
/// ([`TokenKey::verify_media_for_release`]).
pub const RELEASE_GRACE_SECS: u64 = 24 * 3600;

/// The claims of a user token (contract v1, "Tokens").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserClaims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Rooms the token may enter; absent means every room of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perms: Option<PermsPatch>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// Who a verified user token says the bearer is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub user: UserId,
    pub name: String,
    pub role: Role,
    pub tenant: TenantId,
    /// `None`: any room of the tenant.
    pub rooms: Option<Vec<RoomId>>,
    /// The token's own overrides of the role's default permissions.
    pub perms: PermsPatch,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

impl Identity {
    /// The permissions the token grants: the role's defaults with the token's overrides.
    pub fn perms(&self) -> Perms {
        self.role.default_perms().with(&self.perms)
    }

    /// Whether the token may enter `room`.
    pub fn may_enter(&self, room: &RoomId) -> bool {
        self.rooms.as_ref().is_none_or(|rooms| rooms.contains(room))
    }
}

/// Claims of the media token the edge hands clients for one media node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaClaims {
    /// The participant (user id).
    pub sub: String,
    /// The room, scoped by tenant: `{tenant}/{room}`.
    pub room: String,
    /// The node the token is good for.
    pub node: String,
    pub perms: MediaPerms,
    /// The participant's display name, for the node's logs and metrics labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Quality limits the node enforces for this participant (e.g. per role, see
    /// [`crate::media::MediaCaps::for_role`]). Absent: no limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<crate::media::MediaCaps>,
    pub exp: u64,
    /// When the edge issued it (seconds since the epoch): the node applies moderators' later decisions to
    /// sessions opened with it. Absent: older than every decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// What a media token allows on the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaPerms {
    pub audio: bool,
    pub video: bool,
    pub screen: bool,
    pub subscribe: bool,
}

impl MediaPerms {
    /// Whether publishing `kind` is permitted (a mute aside).
    pub const fn permits(self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Audio => self.audio,
            MediaKind::Video => self.video,
            MediaKind::Screen => self.screen,
        }
    }

    /// Media permissions from room permissions, minus what a moderator muted.
    pub fn from_room(perms: Perms, muted: MediaFlags) -> Self {
        MediaPerms {
            audio: perms.stream && !muted.audio,
            video: perms.stream && !muted.video,
            screen: perms.screen_share && !muted.screen,
            subscribe: true,
        }
    }
}

/// Claims of a token signed with `NODE_SECRET`: node heartbeats (`sub` = node id) and the edge's control calls
/// to a node (`sub` = `"edge"`).
///
/// `body_sha256` binds the token to the request it authorises ([`body_digest`] of the exact body): a token
/// seen in transit cannot carry another body (a heartbeat saying "draining", another moderation command).
/// Both of ours always set it; a token without it is accepted as before the claim existed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceClaims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_sha256: Option<String>,
    /// Who the token is for: the edge's control tokens name the node (its id), so one seen on its way to
    /// node A does nothing on node B. Tokens without it (contract v1) are for anyone holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

impl ServiceClaims {
    /// Refuses the token if it names another recipient than `me` (`aud`).
    pub fn check_audience(&self, me: &str) -> Result<(), AuthError> {
        match &self.aud {
            Some(aud) if aud != me => Err(AuthError::WrongAudience { aud: aud.clone(), me: me.to_owned() }),
            _ => Ok(()),
        }
    }

    /// Refuses `body` if the token names another one (`body_sha256`).
    pub fn check_body(&self, body: &[u8]) -> Result<(), AuthError> {
        match &self.body_sha256 {
            Some(digest) if *digest != body_digest(body) => Err(AuthError::BadClaim(
                "body_sha256 does not match the request body (the body was changed after the token was signed)".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// The SHA-256 of `body`, lowercase hex: a service token's `body_sha256`.
pub fn body_digest(body: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(body).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The longest a service token may live (`exp` this far past now, skew included): ours live 60–120 s, so a
/// token valid for longer comes from a host whose clock runs ahead, and would stay usable if captured.
pub const MAX_SERVICE_TOKEN_SECS: u64 = 600;

/// [`ServiceClaims`] plus the media-token claims whose presence marks a token as not a service token.
#[derive(Deserialize)]
struct ServiceTokenShape {
    sub: String,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    body_sha256: Option<String>,
    #[serde(default)]
    aud: Option<String>,
    #[serde(default)]
    room: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    node: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    perms: Option<serde::de::IgnoredAny>,
}

/// Why a token was refused. Every variant maps to HTTP 401 / close 4001 except where noted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token: pass ?token=JWT or an Authorization: Bearer header")]
    Missing,
    #[error("{}", no_secret(*.0))]
    NoSecret(Option<&'static str>),
    #[error("token is not a valid HS256 JWT: {0}")]
    Malformed(String),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token algorithm is not accepted (only HS256 is)")]
    WrongAlgorithm,
    #[error("token expired at {exp} (now {now})")]
    Expired { exp: u64, now: u64 },
    #[error("token is not valid before {nbf} (now {now})")]
    NotYetValid { nbf: u64, now: u64 },
    #[error("token claim is invalid: {0}")]
    BadClaim(String),
    /// A service token made for another recipient (`aud`).
    #[error("token is for {aud:?}, not {me:?} (aud): it was sent to the wrong recipient")]
    WrongAudience { aud: String, me: String },
    /// The configured secrets cannot be used ([`secrets_problem`]): every token is refused, none signed.
    #[error("{0}")]
    Misconfigured(String),
    /// A valid media token presented where a service token is needed: 403.
    #[error("a media token is not a service token (service tokens carry no room, node or perms)")]
    MediaTokenAsService,
}

impl AuthError {
    /// The client-facing error: always `unauthorized` (a configuration problem is `internal`).
    pub fn to_api(&self) -> ApiError {
        let code = match self {
            AuthError::NoSecret(_) | AuthError::Misconfigured(_) => ErrorCode::Internal,
            AuthError::MediaTokenAsService => ErrorCode::Forbidden,
            _ => ErrorCode::Unauthorized,
        };
        ApiError::new(code, self.to_string())
    }
}

/// An HS256 key for signing and verifying tokens.
#[derive(Clone)]
pub struct TokenKey {
    decoding: DecodingKey,
    encoding: EncodingKey,
    empty: bool,
    /// What the secret is called where it is configured, for the error when it is missing.
    secret_name: Option<&'static str>,
    /// Why the configured secrets cannot be used: the key refuses every token and signs none.
    refusal: Option<String>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from a shared secret.
    pub fn new(secret: &[u8]) -> Self {
        TokenKey {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            empty: secret.is_empty(),
            secret_name: None,
            refusal: None,
        }
    }

    /// A key that refuses every token and signs none, saying `why` (a misconfiguration: [`secrets_problem`]).
    pub fn refusing(why: String) -> Self {
        TokenKey { refusal: Some(why), ..TokenKey::new(b"") }
    }

    fn usable(&self) -> Result<(), AuthError> {
        if let Some(why) = &self.refusal {
            return Err(AuthError::Misconfigured(why.clone()));
        }
        if self.empty {
            return Err(AuthError::NoSecret(self.secret_name));
        }
        Ok(())
    }

    /// A key from the secret configured as `name` (a Worker secret or environment variable), which a missing
    /// secret's error then names.
    pub fn named(name: &'static str, secret: &[u8]) -> Self {
        TokenKey { secret_name: Some(name), ..TokenKey::new(secret) }
    }

    /// Signs `claims` as an HS256 JWT.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, AuthError> {
        self.usable()?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| AuthError::Malformed(e.to_string()))
    }

    /// Verifies the signature and algorithm of `token` and decodes its claims. Times are not checked here.
    fn decode<T: DeserializeOwned>(&self, token: &str) -> Result<T, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        self.usable()?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<T>(token, &self.decoding, &validation).map(|data| data.claims).map_err(|e| {
            match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
                    AuthError::WrongAlgorithm
                }
                ErrorKind::Json(err) => AuthError::BadClaim(err.to_string()),
                _ => AuthError::Malformed(e.to_string()),
            }
        })
    }

    /// Verifies a user token at time `now` and returns who it identifies.
    pub fn verify_user(&self, token: &str, now: Timestamp) -> Result<Identity, AuthError> {
        let claims: UserClaims = self.decode(token)?;
        check_times(claims.exp, claims.nbf, now)?;
        identity_from_claims(claims)
    }

    /// Verifies a media token at time `now`.
    pub fn verify_media(&self, token: &str, now: Timestamp) -> Result<MediaClaims, AuthError> {
        let claims: MediaClaims = self.decode(token)?;
        check_times(claims.exp, None, now)?;
        Ok(claims)
    }

    /// Verifies a media token for releasing what its holder already has (the node's `DELETE` of one's own
    /// session): as [`TokenKey::verify_media`], but a token that expired up to [`RELEASE_GRACE_SECS`] ago is
    /// accepted, since sessions outlive their tokens and closing one only gives resources back.
    pub fn verify_media_for_release(&self, token: &str, now: Timestamp) -> Result<MediaClaims, AuthError> {
        let claims: MediaClaims = self.decode(token)?;
        check_times(claims.exp.saturating_add(RELEASE_GRACE_SECS), None, now)?;
        Ok(claims)
    }

    /// Verifies a service token (node heartbeat or edge control) at time `now`.
    ///
    /// Media tokens are signed with the same secret, so a media token is refused here by its shape: one that
    /// carries a media token's `room`, `node` or `perms` is not a service token, whatever its `sub` (else a
    /// participant whose user id is `edge`, or looks like a node id, could moderate a node or register one).
    pub fn verify_service(&self, token: &str, now: Timestamp) -> Result<ServiceClaims, AuthError> {
        let shape: ServiceTokenShape = self.decode(token)?;
        if shape.room.is_some() || shape.node.is_some() || shape.perms.is_some() {
            return Err(AuthError::MediaTokenAsService);
        }
        let claims = ServiceClaims {
            sub: shape.sub,
            exp: shape.exp,
            iat: shape.iat,
            body_sha256: shape.body_sha256,
            aud: shape.aud,
        };
        if claims.exp.saturating_add(SERVICE_SKEW_SECS) <= now.as_secs() {
            return Err(AuthError::Expired { exp: claims.exp, now: now.as_secs() });
        }
        let lifetime = claims.exp.saturating_sub(now.as_secs());
        if lifetime > MAX_SERVICE_TOKEN_SECS + SERVICE_SKEW_SECS {
            return Err(AuthError::BadClaim(format!(
                "exp is {lifetime} s away: service tokens live at most {MAX_SERVICE_TOKEN_SECS} s (is the signing \
                 host's clock ahead? keep it in sync, NTP)"
            )));
        }
        NodeId::parse(&claims.sub).map_err(|e| AuthError::BadClaim(format!("sub: {e}")))?;
        Ok(claims)
    }
}

/// The shortest secret accepted (128 bits): shorter HS256 keys can be guessed offline from one token. The
/// media node requires the same of `NODE_SECRET`.
pub const MIN_SECRET_BYTES: usize = 16;

/// Why the edge's secrets cannot be used, if they cannot (an unset one is reported on use instead:
/// [`AuthError::NoSecret`]):
/// - one shorter than [`MIN_SECRET_BYTES`];
/// - both the same: a media token (signed with `NODE_SECRET`, carrying `sub` and `exp`) would then verify as a
///   user token, and a user token as the edge's control token.
pub fn secrets_problem(jwt_secret: &str, node_secret: &str) -> Option<String> {
    for (name, secret) in [("JWT_SECRET", jwt_secret), ("NODE_SECRET", node_secret)] {
        if !secret.is_empty() && secret.len() < MIN_SECRET_BYTES {
            return Some(format!(
                "{name} is {} bytes: use at least {MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -hex 32`; \
                 `wrangler secret put {name}`)",
                secret.len()
            ));
        }
    }
    (!jwt_secret.is_empty() && jwt_secret == node_secret).then(|| {
        "JWT_SECRET and NODE_SECRET are the same: a media token would pass as a user token. Set two different \
         random secrets (`wrangler secret put NODE_SECRET`, and the new one on every media node)"
            .to_owned()
    })
}

fn no_secret(name: Option<&str>) -> String {
    match name {
        Some(name) => format!(
            "{name} is not configured on this server (`wrangler secret put {name}`; `.dev.vars` for `wrangler dev`)"
        ),
        None => "the server has no signing secret configured".to_owned(),
    }
}

/// The latest `exp` a token may carry: the largest integer a JavaScript number holds exactly (2^53 − 1,
/// some 285 million years away). The edge keeps `exp` in each connection's hibernation attachment, which the
/// runtime stores as a JavaScript value; a larger one could not be stored, and the socket would outlive
/// the room's record of it.
pub const MAX_EXP_SECS: u64 = (1 << 53) - 1;

fn check_times(exp: u64, nbf: Option<u64>, now: Timestamp) -> Result<(), AuthError> {
    if exp > MAX_EXP_SECS {
        return Err(AuthError::BadClaim(format!(
            "exp {exp} is past the latest date a token may name ({MAX_EXP_SECS})"
        )));
    }
    let now = now.as_secs();
    if exp <= now {
        return Err(AuthError::Expired { exp, now });
    }
    if let Some(nbf) = nbf {
        if nbf > now.saturating_add(NBF_LEEWAY_SECS) {
            return Err(AuthError::NotYetValid { nbf, now });
        }
    }
    Ok(())
}

fn identity_from_claims(claims: UserClaims) -> Result<Identity, AuthError> {
    let user = UserId::parse(&claims.sub).map_err(|e| AuthError::BadClaim(format!("sub: {e}")))?;
    if user == UserId::system() {
        // The admin API's announcements are sent as `system`; nobody may act as their author.
        return Err(AuthError::BadClaim("sub: \"system\" is reserved for the room's announcements".into()));
    }
    let name = match &claims.name {
        Some(name) => parse_display_name(name).map_err(|e| AuthError::BadClaim(format!("name: {e}")))?,
        None => user.as_str().chars().take(80).collect(),
    };
    let tenant = match &claims.tenant {
        Some(t) => TenantId::parse(t).map_err(|e| AuthError::BadClaim(format!("tenant: {e}")))?,
        None => TenantId::default_tenant(),
    };
    let rooms = match claims.rooms {
        Some(rooms) => Some(
            rooms
                .iter()
                .map(|r| RoomId::parse(r))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| AuthError::BadClaim(format!("rooms: {e}")))?,
        ),
        None => None,
    };
    Ok(Identity {
        user,
        name,
        role: claims.role.unwrap_or_default(),
        tenant,
        rooms,
        perms: claims.perms.unwrap_or_default(),
        exp: claims.exp,
    })
}

/// Pulls the token out of a `?token=` value or an `Authorization: Bearer` header (query first).
pub fn token_from(query_token: Option<&str>, authorization: Option<&str>) -> Option<String> {
    if let Some(t) = query_token.filter(|t| !t.is_empty()) {
        return Some(t.to_owned());
    }
    let header = authorization?.trim();
    let (scheme, rest) = header.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
        Some(rest.trim().to_owned())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    fn claims() -> UserClaims {
        UserClaims {
            sub: "u1".into(),
            name: Some("Ada".into()),
            role: Some(Role::Teacher),
            tenant: None,
            rooms: Some(vec!["math".into()]),
            perms: Some(PermsPatch { moderate: Some(false), ..PermsPatch::default() }),
            exp: NOW.as_secs() + 60,
            nbf: None,
            iat: None,
        }
    }

    #[test]
    fn the_edge_refuses_short_or_shared_secrets_and_says_which() {
        let long = "0123456789abcdef0123";
        assert_eq!(secrets_problem(long, "fedcba9876543210fedc"), None);
        assert_eq!(secrets_problem("", ""), None, "unset secrets are reported when a key is used");
        let short = secrets_problem("short", long).expect("a 5-byte JWT_SECRET");
        assert!(short.starts_with("JWT_SECRET is 5 bytes: use at least 16"), "{short}");
        let short = secrets_problem(long, "0123456789abcde").expect("a 15-byte NODE_SECRET");
        assert!(short.starts_with("NODE_SECRET is 15 bytes"), "{short}");
        let same = secrets_problem(long, long).expect("the same secret twice");
        assert!(same.contains("are the same: a media token would pass as a user token"), "{same}");

        // A refusing key verifies nothing and signs nothing, with the reason, as a server error.
        let key = TokenKey::refusing(same.clone());
        let token = TokenKey::new(long.as_bytes()).sign(&claims()).unwrap();
        let refused = key.verify_user(&token, NOW).unwrap_err();
        assert_eq!((refused.to_api().code, refused.to_string()), (ErrorCode::Internal, same));
        assert!(matches!(key.sign(&claims()), Err(AuthError::Misconfigured(_))));
    }

    #[test]
    fn a_signed_token_verifies_into_an_identity() {
        let key = TokenKey::new(b"secret");
        let id = key.verify_user(&key.sign(&claims()).unwrap(), NOW).unwrap();
        assert_eq!(id.user.as_str(), "u1");
        assert_eq!(id.tenant.as_str(), "default");
        assert!(id.may_enter(&RoomId::parse("math").unwrap()));
        assert!(!id.may_enter(&RoomId::parse("art").unwrap()));
        let perms = id.perms();
        assert!(perms.screen_share && !perms.moderate);
    }

    #[test]
    fn wrong_key_expired_and_immature_tokens_are_refused() {
        let key = TokenKey::new(b"secret");
        let other = TokenKey::new(b"other");
        assert_eq!(other.verify_user(&key.sign(&claims()).unwrap(), NOW), Err(AuthError::BadSignature));

        let expired = UserClaims { exp: NOW.as_secs(), ..claims() };
        assert!(matches!(key.verify_user(&key.sign(&expired).unwrap(), NOW), Err(AuthError::Expired { .. })));

        let early = UserClaims { nbf: Some(NOW.as_secs() + NBF_LEEWAY_SECS + 1), ..claims() };
        assert!(matches!(key.verify_user(&key.sign(&early).unwrap(), NOW), Err(AuthError::NotYetValid { .. })));
        let skewed = UserClaims { nbf: Some(NOW.as_secs() + 5), ..claims() };
        assert!(key.verify_user(&key.sign(&skewed).unwrap(), NOW).is_ok());
    }

    #[test]
    fn alg_none_and_garbage_are_refused() {
        let key = TokenKey::new(b"secret");
        // {"alg":"none","typ":"JWT"} . {"sub":"u1","exp":9999999999} . (no signature)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert!(key.verify_user(none, NOW).is_err());
        assert!(matches!(key.verify_user("not-a-jwt", NOW), Err(AuthError::Malformed(_))));
        assert_eq!(TokenKey::new(b"").verify_user("x", NOW), Err(AuthError::NoSecret(None)));
        let unset = TokenKey::named("NODE_SECRET", b"").sign(&serde_json::json!({"sub": "x"})).unwrap_err();
        assert!(unset.to_string().starts_with("NODE_SECRET is not configured"), "{unset}");
    }

    #[test]
    fn bad_claims_are_refused() {
        let key = TokenKey::new(b"secret");
        let bad_tenant = UserClaims { tenant: Some("a/b".into()), ..claims() };
        assert!(matches!(key.verify_user(&key.sign(&bad_tenant).unwrap(), NOW), Err(AuthError::BadClaim(_))));
        let bad_role = serde_json::json!({"sub": "u1", "role": "god", "exp": NOW.as_secs() + 60});
        assert!(matches!(key.verify_user(&key.sign(&bad_role).unwrap(), NOW), Err(AuthError::BadClaim(_))));
        let system = UserClaims { sub: "system".into(), ..claims() };
        assert!(matches!(key.verify_user(&key.sign(&system).unwrap(), NOW), Err(AuthError::BadClaim(_))));
        let far = serde_json::json!({"sub": "u1", "exp": MAX_EXP_SECS + 1});
        assert!(
            matches!(key.verify_user(&key.sign(&far).unwrap(), NOW), Err(AuthError::BadClaim(m)) if m.contains("exp"))
        );
        let latest = serde_json::json!({"sub": "u1", "exp": MAX_EXP_SECS});
        assert!(key.verify_user(&key.sign(&latest).unwrap(), NOW).is_ok());
        let no_exp = serde_json::json!({"sub": "u1"});
        assert!(matches!(key.verify_user(&key.sign(&no_exp).unwrap(), NOW), Err(AuthError::BadClaim(_))));
    }

    #[test]
    fn a_media_token_is_not_a_service_token_whatever_its_sub() {
        let key = TokenKey::new(b"node-secret");
        let exp = NOW.as_secs() + 60;
        let service = ServiceClaims { sub: "edge".into(), exp, ..ServiceClaims::default() };
        assert_eq!(key.verify_service(&key.sign(&service).unwrap(), NOW).unwrap(), service);
        // A participant named "edge" (or "eu-node-1") holds a media token signed with the same secret.
        let perms = MediaPerms { audio: true, video: true, screen: true, subscribe: true };
        let media = MediaClaims {
            sub: "edge".into(),
            room: "default/math".into(),
            node: "eu-node-1".into(),
            perms,
            name: None,
            caps: None,
            exp,
            iat: None,
        };
        let token = key.sign(&media).unwrap();
        assert!(key.verify_media(&token, NOW).is_ok(), "the token is a valid media token");
        assert_eq!(key.verify_service(&token, NOW), Err(AuthError::MediaTokenAsService), "but not a service token");
        for claim in ["room", "node", "perms"] {
            let mut shaped = serde_json::json!({"sub": "eu-node-1", "exp": exp});
            shaped[claim] = serde_json::json!("x");
            let refused = key.verify_service(&key.sign(&shaped).unwrap(), NOW);
            assert_eq!(refused, Err(AuthError::MediaTokenAsService), "a service token with {claim}");
        }
    }

    #[test]
    fn a_service_token_tolerates_some_clock_skew_at_expiry() {
        let key = TokenKey::new(b"node-secret");
        let service = |exp| ServiceClaims { sub: "eu-node-1".into(), exp, ..ServiceClaims::default() };
        let just_expired = key.sign(&service(NOW.as_secs() - 1)).unwrap();
        assert!(key.verify_service(&just_expired, NOW).is_ok(), "a clock a little ahead is tolerated");
        let long_expired = key.sign(&service(NOW.as_secs() - SERVICE_SKEW_SECS)).unwrap();
        assert!(matches!(key.verify_service(&long_expired, NOW), Err(AuthError::Expired { .. })));
        // From a clock a day ahead: refused, though unexpired, saying why.
        let lasting = key.sign(&service(NOW.as_secs() + 86_400)).unwrap();
        let refused = key.verify_service(&lasting, NOW).unwrap_err().to_string();
        assert!(refused.contains("86400 s away: service tokens live at most 600 s"), "{refused}");
        let longest = key.sign(&service(NOW.as_secs() + MAX_SERVICE_TOKEN_SECS + SERVICE_SKEW_SECS)).unwrap();
        assert!(key.verify_service(&longest, NOW).is_ok());
    }

    #[test]
    fn a_service_token_with_a_body_digest_authorises_that_body_only() {
        let key = TokenKey::new(b"node-secret");
        let body = br#"{"id":"eu-node-1","draining":false}"#;
        let claims = ServiceClaims {
            sub: "eu-node-1".into(),
            exp: NOW.as_secs() + 60,
            body_sha256: Some(body_digest(body)),
            ..ServiceClaims::default()
        };
        let verified = key.verify_service(&key.sign(&claims).unwrap(), NOW).unwrap();
        assert_eq!(verified.check_body(body), Ok(()));
        let changed = verified.check_body(br#"{"id":"eu-node-1","draining":true}"#).unwrap_err();
        assert!(changed.to_string().contains("body_sha256 does not match"), "{changed}");
        assert_eq!(changed.to_api().code, ErrorCode::Unauthorized);
        let unbound = ServiceClaims { body_sha256: None, ..claims };
        assert_eq!(unbound.check_body(b"anything"), Ok(()), "a token from before the claim binds nothing");
        assert_eq!(body_digest(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn a_service_token_for_one_recipient_is_refused_by_another() {
        let key = TokenKey::new(b"node-secret");
        let claims = ServiceClaims {
            sub: "edge".into(),
            exp: NOW.as_secs() + 60,
            aud: Some("eu-node-1".into()),
            ..ServiceClaims::default()
        };
        let verified = key.verify_service(&key.sign(&claims).unwrap(), NOW).unwrap();
        assert_eq!(verified.aud.as_deref(), Some("eu-node-1"), "the claim survives verification");
        assert_eq!(verified.check_audience("eu-node-1"), Ok(()));
        let other = verified.check_audience("eu-node-2").unwrap_err();
        assert!(other.to_string().contains(r#"token is for "eu-node-1", not "eu-node-2""#), "{other}");
        assert_eq!(other.to_api().code, ErrorCode::Unauthorized);
        let anyone = ServiceClaims { aud: None, ..claims };
        assert_eq!(anyone.check_audience("eu-node-2"), Ok(()), "a token from before the claim is for anyone");
    }

    #[test]
    fn token_comes_from_query_or_bearer_header() {
        assert_eq!(token_from(Some("q"), Some("Bearer h")).as_deref(), Some("q"));
        assert_eq!(token_from(None, Some("bearer  h ")).as_deref(), Some("h"));
        assert_eq!(token_from(Some(""), Some("Basic x")), None);
        assert_eq!(token_from(None, None), None);
    }
}
