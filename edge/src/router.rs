//! The public HTTP surface of the Worker.
//!
//! Everything a request can get wrong is answered here, before a Durable Object is woken and before any
//! WebSocket upgrade: a bad room id is 400, a missing or invalid token 401, a token that may not enter the
//! room 403 — each with a JSON body `{"code","message"}`. The room object then only decides what needs its
//! state (capacity, bans), and trusts the identity header this module sets (it cannot be reached otherwise).
//! A room's lasting refusals (`Retry-After`: the per-user connection limit, a cooldown, a timed ban) are
//! remembered per isolate and repeated to retries until they lapse, so a user hammering the endpoint does not
//! wake the room for each attempt.

use crate::http::{error, fail, json};
use crate::{clock, config, http};
use homeroom_shared::auth::{token_from, Identity};
use homeroom_shared::protocol::{ApiError, ErrorCode, Role, PROTOCOL_VERSION};
use homeroom_shared::refusals::RefusalMemo;
use homeroom_shared::RoomId;
use serde::Serialize;
use std::cell::RefCell;
use worker::worker_sys::ext::RequestExt;
use worker::worker_sys::web_sys;
use worker::{Cf, Env, Headers, Method, Request, RequestInit, Response, Url};

/// Header carrying the verified identity (JSON) from the Worker to a room object.
pub const IDENTITY_HEADER: &str = "x-homeroom-identity";
/// Header carrying the room's `{tenant}/{room}` address from the Worker to a room object.
pub const ADDRESS_HEADER: &str = "x-homeroom-address";
/// Header carrying the client's coordinates (`lat,lon` from Cloudflare's request metadata) to a room object.
pub const GEO_HEADER: &str = "x-homeroom-geo";
/// Response header marking a refusal the Worker repeated from its memo, without asking the room.
pub const REMEMBERED_HEADER: &str = "x-homeroom-remembered";
/// Header carrying the display name of an admin actor to a room object.
pub const ACTOR_HEADER: &str = "x-homeroom-actor";

#[derive(Serialize)]
struct Health {
    ok: bool,
    service: &'static str,
    protocol: u32,
    version: &'static str,
}

/// Routes one request. Never fails: every problem becomes a JSON error response.
///
/// The request arrives as the runtime's own object: workers-rs' `Request` reads the whole `request.cf`
/// object when it is made (a tenth of the CPU of a refused upgrade, measured), and only an admitted
/// upgrade needs `cf` (for the client's coordinates), so the upgrade path reads it then and every other
/// route converts the request when it is routed.
pub async fn handle(raw: web_sys::Request, env: Env) -> Response {
    let url = match Url::parse(&raw.url()) {
        Ok(url) => url,
        Err(e) => return fail(ErrorCode::BadRequest, format!("unreadable request URL: {e}")),
    };
    let path = url.path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = Method::from(raw.method());
    if let ["v1", "rooms", room, "ws"] = segments.as_slice() {
        return match method {
            Method::Get => connect(&raw, &env, &url, room).await,
            _ => method_not_allowed("GET"),
        };
    }
    let req = Request::from(raw);
    match segments.as_slice() {
        ["healthz"] => match method {
            Method::Get | Method::Head => json(
                200,
                &Health {
                    ok: true,
                    service: "homeroom-edge",
                    protocol: PROTOCOL_VERSION,
                    version: env!("CARGO_PKG_VERSION"),
                },
            ),
            _ => method_not_allowed("GET, HEAD"),
        },
        ["v1", "rooms", room] => match method {
            Method::Get => admin_room(req, &env, room, "/admin/info", Method::Get).await,
            _ => method_not_allowed("GET"),
        },
        ["v1", "rooms", room, action @ ("clear" | "kick" | "settings")] => match method {
            Method::Post => admin_room(req, &env, room, &format!("/admin/{action}"), Method::Post).await,
            Method::Get if *action == "settings" => admin_room(req, &env, room, "/admin/settings", Method::Get).await,
            _ if *action == "settings" => method_not_allowed("GET, POST"),
            _ => method_not_allowed("POST"),
        },
        ["v1", "rooms", room, "messages"] => {
            let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
            match method {
                Method::Get => admin_room(req, &env, room, &format!("/admin/messages{query}"), Method::Get).await,
                Method::Post => admin_room(req, &env, room, "/admin/announce", Method::Post).await,
                _ => method_not_allowed("GET, POST"),
            }
        }
        ["v1", "nodes"] => match method {
            Method::Get => crate::registry_object::list_nodes(req, &env).await,
            _ => method_not_allowed("GET"),
        },
        // Without DEV_TOKENS the route does not exist, whatever the method.
        ["v1", "dev", "token"] if !crate::dev_tokens::enabled(&env) => {
            fail(ErrorCode::NotFound, format!("no route for {path}; see docs/protocol.md"))
        }
        ["v1", "dev", "token"] => match method {
            Method::Post => crate::dev_tokens::issue(req, &env).await,
            _ => method_not_allowed("POST"),
        },
        ["v1", "nodes", "heartbeat"] => match method {
            Method::Post => crate::registry_object::heartbeat(req, &env).await,
            _ => method_not_allowed("POST"),
        },
        _ => fail(ErrorCode::NotFound, format!("no route for {path}; see docs/protocol.md")),
    }
}

fn method_not_allowed(allowed: &str) -> Response {
    let response = fail(ErrorCode::BadRequest, format!("method not allowed here; use {allowed}")).with_status(405);
    let headers = response.headers().clone();
    let _ = headers.set("allow", allowed);
    response.with_headers(headers)
}

fn parse_room(room: &str) -> Result<RoomId, Response> {
    RoomId::parse(room).map_err(|e| fail(ErrorCode::BadRequest, format!("invalid room id: {e}")))
}

fn query_param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// Verifies the token of a request (query `token` or `Authorization: Bearer`).
fn authenticate(headers: &Headers, env: &Env, url: Option<&Url>) -> Result<Identity, Response> {
    let query_token = url.and_then(|u| query_param(u, "token"));
    let header = headers.get("authorization").ok().flatten();
    let token = token_from(query_token.as_deref(), header.as_deref())
        .ok_or_else(|| error(&homeroom_shared::auth::AuthError::Missing.to_api()))?;
    config::user_key(env).verify_user(&token, clock::now()).map_err(|e| error(&e.to_api()))
}

/// The address of a room object: `{tenant}/{room}`.
fn address(identity: &Identity, room: &RoomId) -> String {
    format!("{}/{}", identity.tenant, room)
}

fn room_stub(env: &Env, address: &str) -> Result<worker::Stub, Response> {
    let unavailable = |e: worker::Error| fail(ErrorCode::Internal, format!("room object unavailable: {e}"));
    let namespace = env.durable_object("ROOMS").map_err(unavailable)?;
    namespace.get_by_name(address).map_err(unavailable)
}

/// `GET /v1/rooms/{room}/ws`: authenticate, then hand the upgrade to the room object.
async fn connect(req: &web_sys::Request, env: &Env, url: &Url, room: &str) -> Response {
    let req_headers = Headers(req.headers());
    let room = match parse_room(room) {
        Ok(room) => room,
        Err(response) => return response,
    };
    let identity = match authenticate(&req_headers, env, Some(url)) {
        Ok(identity) => identity,
        Err(response) => return response,
    };
    if !identity.may_enter(&room) {
        return fail(ErrorCode::Forbidden, format!("this token does not allow room \"{room}\""));
    }
    let upgrade = req_headers.get("upgrade").ok().flatten().unwrap_or_default();
    let probe = !upgrade.eq_ignore_ascii_case("websocket");
    if probe && query_param(url, "probe").as_deref() != Some("1") {
        return fail(
            ErrorCode::BadRequest,
            "this endpoint needs a WebSocket upgrade (Upgrade: websocket); add probe=1 to a plain GET to ask whether \
             you would be admitted",
        )
        .with_status(426);
    }
    // A probe (plain GET with probe=1) runs the room's admission checks without joining: browsers cannot read
    // the HTTP status of a refused upgrade, so they ask this way to show the reason.
    let mut inner = String::from(if probe { "https://room/probe" } else { "https://room/ws" });
    let since = query_param(url, "since");
    let epoch = query_param(url, "epoch");
    match (&since, &epoch) {
        (Some(since), Some(epoch)) => {
            if since.parse::<u64>().is_err() {
                return fail(ErrorCode::BadRequest, "since must be a non-negative integer seq");
            }
            if epoch.is_empty() || epoch.len() > 32 || !epoch.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return fail(ErrorCode::BadRequest, "epoch must be the alphanumeric epoch of a welcome");
            }
            inner.push_str(&format!("?since={since}&epoch={epoch}"));
        }
        (None, None) => {}
        _ => return fail(ErrorCode::BadRequest, "since and epoch go together: pass both to resume, or neither"),
    }
    if query_param(url, "batch").as_deref() == Some("1") {
        inner.push_str(if inner.contains('?') { "&batch=1" } else { "?batch=1" });
    }
    let address = address(&identity, &room);
    let user = identity.user.as_str();
    let now = clock::now();
    if let Some(refused) = REFUSALS.with(|memo| memo.borrow_mut().check(&address, user, now)) {
        let retry_after = refused.retry_after_s(now);
        return http::refusal(refused.status, refused.body, retry_after, &[(REMEMBERED_HEADER, "1")]);
    }
    let identity_json = match homeroom_shared::header::encode(&identity) {
        Ok(j) => j,
        Err(e) => return fail(ErrorCode::Internal, format!("could not encode identity: {e}")),
    };
    let headers = Headers::new();
    if !probe {
        let _ = headers.set("upgrade", "websocket");
    }
    let _ = headers.set(IDENTITY_HEADER, &identity_json);
    let _ = headers.set(ADDRESS_HEADER, &address);
    if let Some((lat, lon)) = req.cf().map(Cf::from).and_then(|cf| cf.coordinates()) {
        let _ = headers.set(GEO_HEADER, &format!("{lat},{lon}"));
    }
    let response = forward(env, &address, &inner, Method::Get, headers, None).await;
    remember_refusal(response, &address, user).await
}

thread_local! {
    /// Lasting admission refusals of this isolate (see [`homeroom_shared::refusals`]).
    static REFUSALS: RefCell<RefusalMemo> = RefCell::new(RefusalMemo::default());
}

/// Passes the room's answer on; a refusal with `Retry-After` is remembered so that retries before then are
/// answered here without waking the room.
async fn remember_refusal(mut response: Response, address: &str, user: &str) -> Response {
    let status = response.status_code();
    if !matches!(status, 403 | 429) {
        return response;
    }
    let retry_after = response.headers().get("retry-after").ok().flatten().and_then(|v| v.trim().parse::<u64>().ok());
    let Some(retry_after) = retry_after else { return response };
    match response.text().await {
        Ok(body) => {
            REFUSALS.with(|memo| {
                memo.borrow_mut().remember(address, user, status, body.clone(), retry_after, clock::now());
            });
            http::refusal(status, body, retry_after, &[])
        }
        Err(e) => fail(ErrorCode::Internal, format!("unreadable refusal from the room: {e}")),
    }
}

/// Admin endpoints: `role: admin` tokens of the room's tenant.
async fn admin_room(mut req: Request, env: &Env, room: &str, inner_path: &str, method: Method) -> Response {
    let room = match parse_room(room) {
        Ok(room) => room,
        Err(response) => return response,
    };
    let identity = match authenticate(req.headers(), env, None) {
        Ok(identity) => identity,
        Err(response) => return response,
    };
    if let Err(response) = require_admin(&identity) {
        return response;
    }
    if !identity.may_enter(&room) {
        return fail(ErrorCode::Forbidden, format!("this admin token does not allow room \"{room}\""));
    }
    let body = if method == Method::Post {
        match http::body_within(&mut req, 64 * 1024, "request body").await {
            Ok(body) => Some(body),
            Err(response) => return response,
        }
    } else {
        None
    };
    let address = address(&identity, &room);
    let headers = Headers::new();
    let _ = headers.set(ADDRESS_HEADER, &address);
    match homeroom_shared::header::encode(&identity.name) {
        Ok(name) => {
            let _ = headers.set(ACTOR_HEADER, &name);
        }
        Err(e) => return fail(ErrorCode::Internal, format!("could not encode the actor's name: {e}")),
    }
    let _ = headers.set("content-type", "application/json");
    forward(env, &address, &format!("https://room{inner_path}"), method, headers, body).await
}

/// Refuses identities without the admin role.
pub fn require_admin(identity: &Identity) -> Result<(), Response> {
    if identity.role == Role::Admin {
        Ok(())
    } else {
        Err(error(&ApiError::new(ErrorCode::Forbidden, "the admin API needs a token with role \"admin\"")))
    }
}

async fn forward(
    env: &Env,
    address: &str,
    url: &str,
    method: Method,
    headers: Headers,
    body: Option<String>,
) -> Response {
    let stub = match room_stub(env, address) {
        Ok(stub) => stub,
        Err(response) => return response,
    };
    let mut init = RequestInit::new();
    init.with_method(method).with_headers(headers);
    if let Some(body) = body {
        init.with_body(Some(body.into()));
    }
    let request = match Request::new_with_init(url, &init) {
        Ok(request) => request,
        Err(e) => return fail(ErrorCode::Internal, format!("could not build the room request: {e}")),
    };
    match stub.fetch_with_request(request).await {
        Ok(response) => response,
        Err(e) => fail(ErrorCode::Unavailable, format!("the room did not answer: {e}; retry")),
    }
}

/// The authenticated identity of an admin request (used by the registry's `GET /v1/nodes`).
pub fn authenticate_admin(req: &Request, env: &Env) -> Result<Identity, Response> {
    let identity = authenticate(req.headers(), env, None)?;
    require_admin(&identity)?;
    Ok(identity)
}
