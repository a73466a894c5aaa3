//! The media-node registry Durable Object (one per deployment, named `global`): a thin adapter around
//! [`homeroom_shared::placement::Registry`].
//!
//! # Run loop
//! Each event loads the registry from SQLite if it is not in memory, applies one operation (heartbeat, place,
//! release, list, or the alarm), writes what changed back, and keeps the alarm at the next lease expiry.
//! When leases run out (or a draining node reports its last session gone), every room placed on the node is
//! told (`POST /media/lost` on its Room object), which tells its clients `media.moved`; their next
//! `media.join` is placed on a live node.
//!
//! # Invariants
//! - Expiring is synchronous: the leases and placements leave memory and SQLite, and a notice for each lost
//!   room is stored, with no `await` in between, so no other request (a placement of one of those rooms on a
//!   live node) can run in the middle and have its fresh row deleted.
//! - Rooms are told from the alarm only, never inside a heartbeat or placement: a node loss with many rooms
//!   does not hold those calls up. A notice stays in `lost_notices` until its room answered, and the alarm
//!   retries what is left ([`homeroom_shared::notice`]: from 2 s apart while young to 30 s, dropped after 10
//!   minutes), so no reachable room misses its `media.moved`. The notice is stored before the placement's row
//!   is deleted, so a failed write leaves the placement to expire again.
//! - A drain that ended a lease is stored (`drained`) while a heartbeat token issued before it could verify,
//!   so a late retry of an earlier heartbeat cannot bring the node back, even after a reload.
//!
//! The Worker verifies node tokens before forwarding heartbeats here; this object trusts its callers.

use crate::http::{self, fail};
use crate::{clock, config};
use homeroom_shared::media::{NodeHeartbeat, EDGE_SUBJECT};
use homeroom_shared::notice::{self, AfterFailure};
use homeroom_shared::placement::{ClientLocation, Drained, Geo, NodeLease, Placement, Registry};
use homeroom_shared::protocol::{ApiError, ErrorCode, NodeInfo};
use homeroom_shared::Timestamp;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use worker::{
    durable_object, DurableObject, Env, Headers, Method, Request, RequestInit, Response, ScheduledTime, SqlStorage,
    SqlStorageValue, State,
};

/// Default lease length: nodes heartbeat well within it (the node uses a third of it).
pub const DEFAULT_LEASE_TTL_MS: u64 = 15_000;

/// How long one room may take to answer its notice before the alarm moves on to the next (and retries it).
const NOTICE_TIMEOUT_MS: u64 = 3_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS nodes (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS placements (room TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lost_notices (room TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS drained (id TEXT PRIMARY KEY, body TEXT NOT NULL);
";

/// Body of the internal `POST /heartbeat`.
#[derive(Debug, Serialize, Deserialize)]
pub struct HeartbeatCall {
    /// The verified token's `sub`.
    pub subject: String,
    /// The verified token's `iat` (seconds): after a drain, heartbeats issued before it are refused.
    #[serde(default)]
    pub issued_at: Option<u64>,
    pub heartbeat: NodeHeartbeat,
}

/// Body of the internal `POST /place`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlaceCall {
    pub room: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub geo: Option<Geo>,
    /// How many new sessions on the node the `media.join`s this call answers may open (a participant already
    /// handed a media token asks again without counting twice).
    #[serde(default = "one")]
    pub sessions: u32,
}

fn one() -> u32 {
    1
}

/// Body of the internal `POST /release`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReleaseCall {
    pub room: String,
}

/// Body of the Room object's `POST /media/lost`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LostCall {
    pub node: String,
    pub reason: String,
    /// When the registry noticed the loss (how old a notice is decides its retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_at: Option<Timestamp>,
    /// The registry's own bookkeeping (rooms ignore it): not before this time is the notice tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
}

#[derive(Serialize, Deserialize)]
struct NodesView {
    nodes: Vec<NodeLease>,
    placements: Vec<Placement>,
}

#[derive(Deserialize)]
struct Body {
    body: String,
}

#[derive(Deserialize)]
struct Notice {
    room: String,
    body: String,
}

/// The registry Durable Object.
#[durable_object]
pub struct NodeRegistry {
    state: State,
    env: Env,
    registry: RefCell<Option<Registry>>,
    alarm_at: Cell<Option<Timestamp>>,
    /// When the alarm should tell rooms of lost nodes (`lost_notices` has rows): now after an expiry, later
    /// after a failed attempt. Read from SQLite on load.
    notices_due: Cell<Option<Timestamp>>,
}

impl std::fmt::Debug for NodeRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeRegistry")
    }
}

fn storage_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Internal, format!("registry storage failed: {e}"))
}

fn text(s: &str) -> SqlStorageValue {
    SqlStorageValue::String(s.to_owned())
}

impl NodeRegistry {
    fn sql(&self) -> SqlStorage {
        self.state.storage().sql()
    }

    /// The lease length from `NODE_LEASE_TTL_MS`. A value outside 1,000–600,000 is an error naming the var
    /// (every registry call answers it, and nodes log it), like the room vars: a typo is not a silent 15 s.
    fn ttl_ms(&self) -> Result<u64, ApiError> {
        let Some(value) = config::var(&self.env, "NODE_LEASE_TTL_MS") else { return Ok(DEFAULT_LEASE_TTL_MS) };
        value.trim().parse::<u64>().ok().filter(|ttl| (1000..=600_000).contains(ttl)).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Internal,
                format!(
                    "Worker var NODE_LEASE_TTL_MS={value:?} is invalid: expected a whole number from 1000 to 600000"
                ),
            )
        })
    }

    fn bodies<T: serde::de::DeserializeOwned>(&self, query: &str) -> Result<Vec<T>, ApiError> {
        let rows: Vec<Body> = self.bodies_of(query)?;
        rows.iter().map(|r| serde_json::from_str(&r.body).map_err(storage_error)).collect()
    }

    /// The rows of `query`, as they are.
    fn bodies_of<T: serde::de::DeserializeOwned>(&self, query: &str) -> Result<Vec<T>, ApiError> {
        self.sql().exec(query, None).and_then(|c| c.to_array()).map_err(storage_error)
    }

    fn ensure_loaded(&self) -> Result<(), ApiError> {
        if self.registry.borrow().is_some() {
            return Ok(());
        }
        self.sql().exec(SCHEMA, None).map_err(storage_error)?;
        let nodes: Vec<NodeLease> = self.bodies("SELECT body FROM nodes")?;
        let placements: Vec<Placement> = self.bodies("SELECT body FROM placements")?;
        let notices: Vec<Body> = self.bodies_of("SELECT body FROM lost_notices LIMIT 1")?;
        if !notices.is_empty() {
            self.notices_due.set(Some(clock::now()));
        }
        let drained: Vec<Drained> = self.bodies("SELECT body FROM drained")?;
        *self.registry.borrow_mut() = Some(Registry::restore(self.ttl_ms()?, nodes, placements, drained));
        Ok(())
    }

    fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> Result<T, ApiError>) -> Result<T, ApiError> {
        self.ensure_loaded()?;
        let mut slot = self.registry.borrow_mut();
        let registry = slot.as_mut().ok_or_else(|| ApiError::new(ErrorCode::Internal, "registry not loaded"))?;
        f(registry)
    }

    /// Stores `value` as JSON in `table`'s `body`, under `key` in `key_column` (replacing what was there).
    fn save(&self, table: &str, key_column: &str, key: &str, value: &impl Serialize) -> Result<(), ApiError> {
        let body = serde_json::to_string(value).map_err(storage_error)?;
        self.sql()
            .exec(
                &format!("INSERT OR REPLACE INTO {table} ({key_column}, body) VALUES (?, ?)"),
                Some(vec![text(key), text(&body)]),
            )
            .map_err(storage_error)?;
        Ok(())
    }

    fn save_node(&self, lease: &NodeLease) -> Result<(), ApiError> {
        self.save("nodes", "id", &lease.id, lease)
    }

    fn delete(&self, table: &str, key_column: &str, key: &str) -> Result<(), ApiError> {
        self.sql()
            .exec(&format!("DELETE FROM {table} WHERE {key_column} = ?"), Some(vec![text(key)]))
            .map_err(storage_error)?;
        Ok(())
    }

    async fn sync_alarm(&self) {
        let expiry = self.registry.borrow().as_ref().and_then(Registry::next_expiry);
        let next = match (expiry, self.notices_due.get()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(next) = next else { return };
        if self.alarm_at.get() == Some(next) {
            return;
        }
        let date = worker::js_sys::Date::new(&worker::wasm_bindgen::JsValue::from_f64(next.as_millis() as f64));
        match self.state.storage().set_alarm(ScheduledTime::new(date)).await {
            Ok(()) => self.alarm_at.set(Some(next)),
            Err(e) => worker::console_error!("could not set the registry alarm: {e}"),
        }
    }

    fn heartbeat(&self, call: HeartbeatCall) -> Result<Response, ApiError> {
        let now = clock::now();
        let (lease, reply) =
            self.with_registry(|r| r.heartbeat(&call.subject, call.issued_at, &call.heartbeat, now))?;
        self.save_node(&lease)?;
        self.delete("drained", "id", &lease.id)?;
        Ok(http::json(200, &reply))
    }

    fn place(&self, call: PlaceCall) -> Result<Response, ApiError> {
        let now = clock::now();
        let location = ClientLocation { region: call.region, geo: call.geo };
        let (lease, new) = self.with_registry(|r| r.place_sessions(&call.room, &location, call.sessions, now))?;
        self.save_node(&lease)?;
        if new {
            let placement = Placement { room: call.room.clone(), node: lease.id.clone(), since: now };
            self.save("placements", "room", &placement.room, &placement)?;
            worker::console_log!("placed room {} on node {} ({})", call.room, lease.id, lease.region);
        }
        Ok(http::json(200, &lease.info()))
    }

    fn release(&self, call: ReleaseCall) -> Result<Response, ApiError> {
        self.with_registry(|r| Ok(r.release(&call.room)))?;
        self.delete("placements", "room", &call.room)?;
        Ok(http::json(200, &serde_json::json!({ "released": call.room })))
    }

    fn list(&self) -> Result<Response, ApiError> {
        let now = clock::now();
        // Live leases only, without expiring anything here: `fetch` expired what was due before this call and
        // told the rooms; a lease that lapsed since is left for the next expiry, which tells its rooms too.
        let view = self.with_registry(|r| {
            let nodes: Vec<_> = r.nodes().into_iter().filter(|n| n.expires_at > now).collect();
            let placements = r.placements().into_iter().filter(|p| nodes.iter().any(|n| n.id == p.node)).collect();
            Ok(NodesView { nodes, placements })
        })?;
        Ok(http::json(200, &view))
    }

    /// Expires leases: the lost nodes and their rooms' placements leave memory and SQLite, and a notice for
    /// each of those rooms is stored for the alarm ([`NodeRegistry::tell_rooms`]). Synchronous on purpose (see
    /// the module's invariants).
    fn expire(&self) -> Result<(), ApiError> {
        let now = clock::now();
        let expired = self.with_registry(|r| Ok(r.expire(now)))?;
        for node in &expired.nodes {
            if node.draining {
                worker::console_log!("media node {} ({}) drained: its last session ended", node.id, node.region);
            } else {
                worker::console_warn!("media node {} ({}) lost its lease", node.id, node.region);
            }
            self.delete("nodes", "id", &node.id)?;
        }
        for drain in &expired.drained {
            self.save("drained", "id", &drain.id, drain)?;
        }
        for id in &expired.forgotten_drains {
            self.delete("drained", "id", id)?;
        }
        for placement in &expired.rooms {
            let drained = expired.nodes.iter().any(|n| n.id == placement.node && n.draining);
            let reason = if drained {
                format!("media node {} was drained (taken out of service)", placement.node)
            } else {
                format!("media node {} stopped sending heartbeats", placement.node)
            };
            let lost = LostCall { node: placement.node.clone(), reason, lost_at: Some(now), retry_at: None };
            self.save("lost_notices", "room", &placement.room, &lost)?;
            // After the notice: should a write fail, the placement is still there to be expired again.
            self.delete("placements", "room", &placement.room)?;
            self.notices_due.set(Some(now));
        }
        Ok(())
    }

    /// Tells every room with a due notice that its node was lost (the alarm's work). A notice is deleted once
    /// its room answered; one that failed is stored again with its own `retry_at`, or dropped when too old
    /// ([`notice::after_failure`]); the alarm comes back for the soonest.
    async fn tell_rooms(&self) -> Result<(), ApiError> {
        if self.notices_due.get().is_none_or(|due| due > clock::now()) {
            return Ok(());
        }
        self.notices_due.set(None);
        let notices: Vec<Notice> = self.bodies_of("SELECT room, body FROM lost_notices")?;
        for notice in notices {
            let lost = match serde_json::from_str::<LostCall>(&notice.body) {
                Ok(lost) => lost,
                Err(e) => {
                    worker::console_error!("dropping an unreadable lost-node notice for room {}: {e}", notice.room);
                    self.delete_notice(&notice)?;
                    continue;
                }
            };
            if let Some(later) = lost.retry_at.filter(|at| *at > clock::now()) {
                self.notices_due_at(later);
                continue;
            }
            let told = crate::room_object::within(NOTICE_TIMEOUT_MS, notify_room(&self.env, &notice.room, &lost))
                .await
                .unwrap_or_else(|| Err(format!("no answer within {NOTICE_TIMEOUT_MS} ms")));
            let Err(e) = told else {
                self.delete_notice(&notice)?;
                continue;
            };
            match notice::after_failure(lost.lost_at, clock::now()) {
                AfterFailure::RetryAt(retry) => {
                    worker::console_error!(
                        "could not tell room {} that its node {} was lost ({e}); trying again in {} ms",
                        notice.room,
                        lost.node,
                        retry.since(clock::now())
                    );
                    self.update_notice(&notice, &LostCall { retry_at: Some(retry), ..lost })?;
                    self.notices_due_at(retry);
                }
                AfterFailure::GiveUp => {
                    worker::console_error!(
                        "giving up telling room {} that its node {} was lost ({e}), after {} min of retries; its \
                         clients reconnect their media by themselves when it fails",
                        notice.room,
                        lost.node,
                        notice::GIVE_UP_AFTER_MS / 60_000
                    );
                    self.delete_notice(&notice)?;
                }
            }
        }
        Ok(())
    }

    /// The alarm tells rooms again at `at` at the latest.
    fn notices_due_at(&self, at: Timestamp) {
        self.notices_due.set(Some(self.notices_due.get().map_or(at, |due| due.min(at))));
    }

    /// Replaces a notice that failed with `retried`, only if it is still the one read (see below).
    fn update_notice(&self, notice: &Notice, retried: &LostCall) -> Result<(), ApiError> {
        let body = serde_json::to_string(retried).map_err(storage_error)?;
        self.sql()
            .exec(
                "UPDATE lost_notices SET body = ? WHERE room = ? AND body = ?",
                Some(vec![text(&body), text(&notice.room), text(&notice.body)]),
            )
            .map(|_| ())
            .map_err(storage_error)
    }

    /// Deletes a notice that was told or given up on, only if it is still the one read (a newer loss may have
    /// replaced it meanwhile, while its room was being told).
    fn delete_notice(&self, notice: &Notice) -> Result<(), ApiError> {
        self.sql()
            .exec(
                "DELETE FROM lost_notices WHERE room = ? AND body = ?",
                Some(vec![text(&notice.room), text(&notice.body)]),
            )
            .map(|_| ())
            .map_err(storage_error)
    }
}

/// Tells a room object that its media node was lost. `Err`: try again later (the room was unreachable or
/// failed); a refusal (4xx) would be refused again, so it is logged and counts as told.
async fn notify_room(env: &Env, room: &str, lost: &LostCall) -> Result<(), String> {
    let mut response = send_lost(env, room, lost).await.map_err(|e| e.to_string())?;
    let status = response.status_code();
    if status < 400 {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    if status >= 500 {
        return Err(format!("the room answered {status}: {text}"));
    }
    worker::console_error!("room {room} refused the lost-node notice ({status}: {text}); not sent again");
    Ok(())
}

async fn send_lost(env: &Env, room: &str, lost: &LostCall) -> worker::Result<Response> {
    let stub = env.durable_object("ROOMS")?.get_by_name(room)?;
    let body = serde_json::to_string(lost).map_err(|e| worker::Error::RustError(e.to_string()))?;
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    // The room may have been wiped and evicted since: the address lets it know itself again.
    headers.set(crate::router::ADDRESS_HEADER, room)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    let request = Request::new_with_init("https://room/media/lost", &init)?;
    stub.fetch_with_request(request).await
}

impl DurableObject for NodeRegistry {
    fn new(state: State, env: Env) -> Self {
        NodeRegistry {
            state,
            env,
            registry: RefCell::new(None),
            alarm_at: Cell::new(None),
            notices_due: Cell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let path = req.path();
        let body = if req.method() == Method::Post { req.text().await.unwrap_or_default() } else { String::new() };
        fn parse<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, ApiError> {
            serde_json::from_str(body).map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("bad body: {e}")))
        }
        // Lost nodes are noticed on every call, not only by the alarm (which tells their rooms). A failed expiry
        // may have left memory and SQLite apart: reload from SQLite.
        if let Err(e) = self.expire() {
            worker::console_error!("registry expiry failed: {e}");
            *self.registry.borrow_mut() = None;
        }
        let result = match path.as_str() {
            "/heartbeat" => parse(&body).and_then(|call| self.heartbeat(call)),
            "/place" => parse(&body).and_then(|call| self.place(call)),
            "/release" => parse(&body).and_then(|call| self.release(call)),
            "/nodes" => self.list(),
            _ => Err(ApiError::new(ErrorCode::NotFound, format!("no registry route {path}"))),
        };
        if result.as_ref().is_err_and(|e| e.code == ErrorCode::Internal) {
            *self.registry.borrow_mut() = None;
        }
        // A drained node's last heartbeat ended its lease now, and an expiry above stored notices: the alarm
        // set here fires at once and tells the rooms, without holding this reply while every room is told.
        self.sync_alarm().await;
        Ok(result.unwrap_or_else(|e| http::error(&e)))
    }

    async fn alarm(&self) -> worker::Result<Response> {
        self.alarm_at.set(None);
        if let Err(e) = self.expire() {
            worker::console_error!("registry expiry failed: {e}");
            *self.registry.borrow_mut() = None;
        }
        if let Err(e) = self.ensure_loaded() {
            worker::console_error!("registry unavailable for the alarm: {e}");
        }
        if let Err(e) = self.tell_rooms().await {
            worker::console_error!("could not read the lost-node notices: {e}");
            self.notices_due.set(Some(clock::now().plus_ms(notice::FIRST_RETRY_MS)));
        }
        self.sync_alarm().await;
        Response::empty()
    }
}

/// Calls the registry object.
pub async fn call_registry<T: Serialize>(env: &Env, path: &str, body: Option<&T>) -> Result<Response, ApiError> {
    let unavailable =
        |e: worker::Error| ApiError::new(ErrorCode::Unavailable, format!("node registry unavailable: {e}"));
    let stub = env.durable_object("REGISTRY").and_then(|ns| ns.get_by_name("global")).map_err(unavailable)?;
    let mut init = RequestInit::new();
    match body {
        Some(body) => {
            let json = serde_json::to_string(body).map_err(storage_error)?;
            let headers = Headers::new();
            let _ = headers.set("content-type", "application/json");
            init.with_method(Method::Post).with_headers(headers).with_body(Some(json.into()));
        }
        None => {
            init.with_method(Method::Get);
        }
    }
    let request = Request::new_with_init(&format!("https://registry{path}"), &init).map_err(unavailable)?;
    stub.fetch_with_request(request).await.map_err(unavailable)
}

/// Asks the registry where `room`'s media goes.
pub async fn place(env: &Env, call: &PlaceCall) -> Result<NodeInfo, ApiError> {
    let mut response = call_registry(env, "/place", Some(call)).await?;
    let text = response.text().await.map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
    if response.status_code() == 200 {
        serde_json::from_str(&text).map_err(|e| ApiError::new(ErrorCode::Internal, format!("bad placement: {e}")))
    } else {
        Err(serde_json::from_str::<ApiError>(&text)
            .unwrap_or_else(|_| ApiError::new(ErrorCode::Unavailable, format!("placement failed: {text}"))))
    }
}

/// `GET /v1/nodes` (admin): every live node, and the placements of the admin's own tenant and rooms (they
/// name rooms; no tenant sees another's).
pub async fn list_nodes(req: Request, env: &Env) -> Response {
    let identity = match crate::router::authenticate_admin(&req, env) {
        Ok(identity) => identity,
        Err(response) => return response,
    };
    let listed = async {
        let mut response = call_registry::<()>(env, "/nodes", None).await?;
        let text = response.text().await.map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
        if response.status_code() != 200 {
            return Err(serde_json::from_str::<ApiError>(&text)
                .unwrap_or_else(|_| ApiError::new(ErrorCode::Unavailable, format!("node registry: {text}"))));
        }
        let mut view: NodesView = serde_json::from_str(&text)
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("unreadable node list from the registry: {e}")))?;
        view.placements.retain(|placement| placement.visible_to(&identity));
        Ok::<_, ApiError>(view)
    };
    match listed.await {
        Ok(view) => http::json(200, &view),
        Err(e) => http::error(&e),
    }
}

/// `POST /v1/nodes/heartbeat` (node token signed with `NODE_SECRET`).
pub async fn heartbeat(mut req: Request, env: &Env) -> Response {
    let header = req.headers().get("authorization").ok().flatten();
    let Some(token) = homeroom_shared::auth::token_from(None, header.as_deref()) else {
        return fail(
            ErrorCode::Unauthorized,
            "heartbeats need Authorization: Bearer <node token signed with NODE_SECRET>",
        );
    };
    let claims = match config::node_key(env).verify_service(&token, clock::now()) {
        Ok(claims) => claims,
        Err(e) => return http::error(&e.to_api()),
    };
    let body = match http::body_within(&mut req, 16 * 1024, "heartbeat body").await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Err(e) = claims.check_body(body.as_bytes()).and_then(|()| claims.check_audience(EDGE_SUBJECT)) {
        return http::error(&e.to_api());
    }
    let heartbeat: NodeHeartbeat = match serde_json::from_str(&body) {
        Ok(hb) => hb,
        Err(e) => {
            return fail(ErrorCode::BadRequest, format!("expected {{id, region, url, capacity, load, draining}}: {e}"))
        }
    };
    let call = HeartbeatCall { subject: claims.sub, issued_at: claims.iat, heartbeat };
    call_registry(env, "/heartbeat", Some(&call)).await.unwrap_or_else(|e| http::error(&e))
}
