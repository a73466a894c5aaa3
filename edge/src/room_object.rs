//! The Room Durable Object: one per `{tenant}/{room}`, a thin adapter around the room core.
//!
//! # Run loop
//! Every event (upgrade, WebSocket message, close, error, alarm, admin request):
//! 1. make sure the core is loaded — after hibernation or a cold start it is rebuilt from SQLite and the
//!    attachments of the live WebSockets ([`Room::restore`]);
//! 2. translate the event into one call on the core, passing `Date.now()`;
//! 3. apply the core's outputs in order (send, close, rewrite an attachment). Sends go through the
//!    [`Outbox`]: a WebSocket event or the alarm writes one chunk ([`outbox::CHUNK`] sockets) at once and
//!    the rest chunk by chunk with a yield to the event loop in between (`drain_outbox`), so
//!    a join arriving during a flush to a thousand members is served between chunks; a connection with
//!    frames still waiting gets its later ones (and its close) behind them. An HTTP request writes all at
//!    once (its answer must not wait), except to a connection with frames waiting. A busy room's flush is a
//!    sweep ([`Room::is_sweeping`]): once the outbox is written, the drain asks the core for the sweep's
//!    next step, so each step carries what arrived while the previous ones went out;
//! 4. perform the IO the core asked for beyond the sockets (placing the room's media, control commands to
//!    its node, releasing the placement), after the sockets are written, through one [`IoQueue`]: one
//!    handler at a time performs it, in the order the core asked, whichever handler's event caused it, and
//!    applies each answer (`media.assigned`) as it comes in; a run of `media.join`s shares one placement;
//! 5. set the alarm to the core's next deadline;
//! 6. see that what the core queued in a busy room's flush window goes out at the window's end: WebSocket
//!    events and the alarm pump the windows inside their own event (nobody waits for their answer), HTTP
//!    requests never do — an upgrade's `101` must not wait for a window — and leave the flush to whoever is
//!    pumping, or to the alarm, set for the window's end. A room whose events are all upgrades (a class
//!    arriving) is pumped by its alarm handler, which keeps pumping while windows keep opening. One handler
//!    pumps at a time ([`PumpLease`]): a pumper the runtime dropped mid-wait is taken over once its lease is
//!    stale, and a pump hands over to the alarm after [`homeroom_shared::pump::HANDOFF_MS`], so no single
//!    event runs for a whole busy lesson. Each wake of the pump also runs the core's due deadlines.
//!
//! Nothing queued is lost to hibernation: the object hibernates only after seconds without events, and an
//! open window always has a pump or an alarm due at its end (a window lasts at most 250 ms by default).
//!
//! The core is borrowed only inside synchronous sections, never across an `.await`. The `ping` → `pong`
//! auto-response is answered by the runtime without waking the object.

use crate::media_control;
use crate::registry_object::{self, LostCall, PlaceCall, ReleaseCall};
use crate::router::{ACTOR_HEADER, ADDRESS_HEADER, GEO_HEADER, IDENTITY_HEADER};
use crate::sql_store::SqlStore;
use crate::{clock, config, http, send};
use homeroom_shared::auth::Identity;
use homeroom_shared::io_queue::{IoQueue, IoWorker};
use homeroom_shared::media::{ControlCommand, CONTROL_RETRY_DELAYS_MS};
use homeroom_shared::outbox::{self, Delivery, DrainLease, Outbox};
use homeroom_shared::placement::{ClientLocation, Geo};
use homeroom_shared::protocol::{close, ApiError, ErrorCode, NodeInfo};
use homeroom_shared::pump::{Beat, PumpLease};
use homeroom_shared::room::config::SettingsPatch;
use homeroom_shared::room::{ClientInfo, ConnRecord, Output, Resume, Room, RoomKeys};
use homeroom_shared::{ConnId, Timestamp, UserId};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use wasm_bindgen::JsValue;
use worker::{
    durable_object, DurableObject, Env, Method, Request, Response, ScheduledTime, State, WebSocket,
    WebSocketIncomingMessage, WebSocketPair,
};

/// The Room Durable Object.
#[durable_object]
pub struct RoomObject {
    state: State,
    env: Env,
    room: RefCell<Option<Room<SqlStore>>>,
    sockets: RefCell<HashMap<ConnId, WebSocket>>,
    alarm_at: Cell<Option<Timestamp>>,
    /// Alarms in a row that found the room unusable (storage failing): the retry backs off.
    alarm_failures: Cell<u32>,
    /// Which handler pumps the flush windows ([`homeroom_shared::pump`]).
    pump: RefCell<PumpLease>,
    /// Socket deliveries not written yet ([`homeroom_shared::outbox`]).
    outbox: RefCell<Outbox<JsValue>>,
    /// Whether a handler is draining the outbox ([`RoomObject::drain_outbox`]): one at a time.
    draining: Cell<bool>,
    /// Socket frames written so far, by any handler (for timing a flush's steps: [`RoomObject::drain_outbox`]).
    sockets_written: Cell<u64>,
    /// Media IO the room asked for, performed in that order by one handler at a time ([`IoQueue`]).
    io_queue: IoQueue<Output>,
}

/// Hands one delivery to the sockets (a socket that has gone away is skipped; its close event follows).
fn deliver(sockets: &mut HashMap<ConnId, WebSocket>, delivery: Delivery<JsValue>) {
    match delivery {
        Delivery::Text { text, to } => send::send_to_all(&text, to.iter().filter_map(|conn| sockets.get(conn))),
        Delivery::Close { conn, code, reason } => {
            if let Some(ws) = sockets.remove(&conn) {
                let _ = ws.close(Some(code), Some(reason));
            }
        }
    }
}

/// The longest a room waits for the node registry or a media node ([`RoomObject::media_io`]).
const MEDIA_IO_TIMEOUT_MS: u64 = 3_000;

/// `work`, or `None` if it takes longer than `ms`.
pub(crate) async fn within<T>(ms: u64, work: impl std::future::Future<Output = T>) -> Option<T> {
    use std::future::Future;
    use std::task::Poll;
    let mut work = std::pin::pin!(work);
    let mut deadline = std::pin::pin!(worker::Delay::from(std::time::Duration::from_millis(ms)));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(done) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(done));
        }
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

impl std::fmt::Debug for RoomObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomObject").field("loaded", &self.room.borrow().is_some()).finish()
    }
}

/// Who flushes what an event left queued ([`RoomObject::finish`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pump {
    /// This handler waits for the windows and flushes them (nobody waits for its answer).
    Inline,
    /// This handler answers a request now; the alarm flushes.
    Alarm,
}

#[derive(Deserialize)]
struct KickBody {
    id: String,
}

#[derive(Deserialize)]
struct AnnounceBody {
    text: String,
}

#[derive(Serialize)]
struct Cleared {
    epoch: String,
}

#[derive(Serialize)]
struct Kicked {
    id: String,
    seq: u64,
}

#[derive(Serialize)]
struct Messages {
    messages: Vec<homeroom_shared::protocol::ChatMessage>,
    has_more: bool,
}

impl RoomObject {
    /// Loads the core if it is not in memory. `address` names the room when storage is still empty.
    fn ensure_loaded(&self, address: Option<&str>, now: Timestamp) -> Result<(), ApiError> {
        if let Some(room) = self.room.borrow_mut().as_mut() {
            // Loaded by an event without an address (the alarm): the first request that has one names it.
            if let Some(address) = address {
                room.adopt_address(address).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
            }
            return Ok(());
        }
        let limits = config::limits(&self.env).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        let store = SqlStore::open(self.state.storage().sql())
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        let mut records = Vec::new();
        let mut sockets = HashMap::new();
        for ws in self.state.get_websockets() {
            match ws.deserialize_attachment::<ConnRecord>() {
                Ok(Some(record)) => {
                    sockets.insert(record.conn, ws);
                    records.push(record);
                }
                _ => {
                    let _ = ws.close(Some(close::INTERNAL), Some("connection state lost; reconnect"));
                }
            }
        }
        let keys = RoomKeys { user: config::user_key(&self.env), media: config::node_key(&self.env) };
        let room = Room::restore(store, limits, keys, address, records, now)
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        *self.sockets.borrow_mut() = sockets;
        *self.room.borrow_mut() = Some(room);
        Ok(())
    }

    /// Runs `f` on the loaded core. Call [`Self::finish`] afterwards to apply the outputs.
    fn with_room<T>(
        &self,
        address: Option<&str>,
        f: impl FnOnce(&mut Room<SqlStore>, Timestamp) -> T,
    ) -> Result<T, ApiError> {
        let now = clock::now();
        self.ensure_loaded(address, now)?;
        let mut slot = self.room.borrow_mut();
        let room = slot.as_mut().ok_or_else(|| ApiError::new(ErrorCode::Internal, "room not loaded"))?;
        Ok(f(room, now))
    }

    /// Applies the core's outputs in order and returns the ones that need IO beyond the sockets; drops the
    /// cache after a storage failure.
    ///
    /// Socket deliveries go through the [`Outbox`]: at most `budget` sockets are written now, the rest wait
    /// for [`Self::drain_outbox`], and a connection with frames waiting gets its later ones behind them.
    fn apply_outputs(&self, mut budget: usize) -> Vec<Output> {
        let mut deferred = Vec::new();
        let mut slot = self.room.borrow_mut();
        let Some(room) = slot.as_mut() else { return deferred };
        let mut sockets = self.sockets.borrow_mut();
        let mut outbox = self.outbox.borrow_mut();
        let poisoned = room.is_poisoned();
        if poisoned {
            // What the window had queued goes out with the rest, or it would be lost with the cache.
            room.flush_now();
        }
        while let Some(output) = room.poll_output() {
            match output {
                Output::Send { to, text } => {
                    let text = send::js_text(&text);
                    let now = outbox.send(&text, to, &mut budget);
                    self.sockets_written.set(self.sockets_written.get().saturating_add(now.len() as u64));
                    send::send_to_all(&text, now.iter().filter_map(|conn| sockets.get(conn)));
                }
                Output::Close { conn, code, reason } => {
                    if let Some(close) = outbox.close(conn, code, reason) {
                        deliver(&mut sockets, close);
                    }
                }
                Output::Attach { record } => {
                    if let Some(ws) = sockets.get(&record.conn) {
                        if let Err(e) = ws.serialize_attachment(&record) {
                            // The connection works on; after hibernation or a restart it would come back with
                            // its previous record (or none, and leave as disconnected).
                            worker::console_error!("could not store connection {}'s attachment: {e}", record.conn);
                        }
                    }
                }
                Output::MediaControl { node, command, decided_at } => {
                    // Dated now, when the room decided, not when the call goes out (or goes out again): the
                    // node orders decisions by that second.
                    let decided_at = decided_at.or(Some(clock::now().as_secs()));
                    deferred.push(Output::MediaControl { node, command, decided_at });
                }
                io @ (Output::PlaceMedia { .. } | Output::ReleaseMedia) => deferred.push(io),
            }
        }
        if poisoned {
            worker::console_error!("room storage failed; dropping the in-memory room to rebuild it from SQLite");
            *slot = None;
        }
        deferred
    }

    /// Applies every output, performs the media IO they ask for (feeding answers back to the core), moves the
    /// alarm, and sees that what the room queued gets flushed. Every event handler ends with this.
    ///
    /// `Pump::Inline` (WebSocket events, the alarm: nobody waits for them) pumps the flush windows right here.
    /// `Pump::Alarm` (HTTP requests: upgrades, probes, admin calls) never waits for a window, because its
    /// response (an upgrade's `101`) would wait with it: if frames stay queued and nobody is pumping, the
    /// alarm is set for the window's end and the alarm handler pumps.
    ///
    /// Socket writes beyond one [`outbox::CHUNK`] are left to a handler that may take its time: an inline
    /// one drains the outbox here; a request writes everything at once unless a connection already has
    /// frames waiting (then an inline handler is draining them).
    async fn finish(&self, pump: Pump) {
        let budget = match pump {
            Pump::Inline => outbox::CHUNK,
            Pump::Alarm => usize::MAX,
        };
        match pump {
            Pump::Inline => {
                self.apply_with_io(budget, true).await;
                self.sync_alarm(None).await;
                self.pump_flushes().await;
            }
            Pump::Alarm => {
                // A request never performs the room's IO (a node or the registry may take seconds, and the
                // response would wait): it queues it, and if no handler is working the queue, the alarm,
                // set for now, does.
                self.queue_io(self.apply_outputs(budget));
                let now = clock::now();
                let io_waiting = !self.io_queue.is_empty() && !self.io_queue.is_worked(now);
                let pumped = self.pump.borrow().is_held(now);
                let flush = if pumped { None } else { self.room.borrow().as_ref().and_then(|r| r.next_flush()) };
                let flush = if io_waiting { Some(now) } else { flush };
                self.sync_alarm(flush).await;
            }
        }
    }

    /// Queues the room's IO. A control command identical to the one queued right before it is dropped: the
    /// commands are idempotent, and a moderator clicking mute again and again while the node is slow would
    /// otherwise queue one call (up to [`MEDIA_IO_TIMEOUT_MS`] each) per click ahead of everything after.
    fn queue_io(&self, io: Vec<Output>) {
        self.io_queue.push_collapsing(io, |last, next| match (last, next) {
            (
                Output::MediaControl { node, command, .. },
                Output::MediaControl { node: next_node, command: next_command, .. },
            ) => node == next_node && command == next_command,
            _ => false,
        });
    }

    /// Applies the core's outputs and performs the media IO they ask for; an IO's answer (such as
    /// `media.assigned`) is applied as soon as it is in. With `drain`, the outbox is written before the IO:
    /// the room hears what happened (a kick's `participant.left`) before a handler waits on a node or the
    /// registry, which may take up to [`MEDIA_IO_TIMEOUT_MS`].
    ///
    /// The IO goes through [`IoQueue`]: one handler at a time performs it, in the order the room asked for
    /// it. The turn is taken before the drain, so a handler that arrives during it (a joiner's upgrade) finds
    /// the queue worked and returns at once, leaving any IO of its own to the worker.
    async fn apply_with_io(&self, budget: usize, drain: bool) {
        loop {
            self.queue_io(self.apply_outputs(budget));
            let worker = self.io_queue.worker(clock::now());
            if drain {
                self.drain_outbox().await;
            }
            let Some(worker) = worker else { return };
            worker.renew(clock::now());
            let mut performed = false;
            loop {
                let next = worker.next(clock::now());
                let Some(output) = next else { break };
                self.media_io(output, &worker).await;
                performed = true;
                self.queue_io(self.apply_outputs(budget));
            }
            drop(worker);
            // Another round drains what the answers wrote beyond the first chunk (and performs any IO that
            // drain's sweep steps ask for).
            if !(performed && drain) {
                return;
            }
        }
    }

    /// Waits for each coalescing window to end and flushes it, for as long as windows keep opening: a window
    /// that flushed something opens the next one, and the pump waits for that one too, so a busy room has
    /// one pump for the whole burst rather than one per window; a window that ends empty closes and the pump
    /// stops. Each wake also runs the room's due deadlines (typing expiry and the like), which would otherwise
    /// wait for an alarm that cannot be delivered while an alarm handler pumps.
    ///
    /// One handler at a time pumps ([`PumpLease`]); the others return at once. After
    /// [`homeroom_shared::pump::HANDOFF_MS`] the pumper hands over: it arms the alarm for the next window's
    /// end and returns, and the alarm's handler pumps on. A pumper the runtime dropped mid-wait is taken over
    /// once its lease is stale. Nothing queued is lost: the object does not hibernate while a window is open
    /// (a pump or the alarm is due at its end, within 250 ms).
    async fn pump_flushes(&self) {
        let Some(pumper) = self.pump.borrow_mut().start(clock::now()) else { return };
        loop {
            let next = self.room.borrow().as_ref().and_then(|r| r.window_end());
            let Some(at) = next else { break };
            let wait = at.since(clock::now());
            if wait > 0 {
                worker::Delay::from(std::time::Duration::from_millis(wait)).await;
            }
            let beat = self.pump.borrow_mut().beat(pumper, clock::now());
            if beat == Beat::Superseded {
                return;
            }
            if self.with_room(None, |room, now| room.tick(now)).is_err() {
                break;
            }
            self.apply_with_io(outbox::CHUNK, true).await;
            match beat {
                // The deadlines run here may have moved the next one.
                Beat::Pump => self.sync_alarm(None).await,
                Beat::HandOff => {
                    let next = self.room.borrow().as_ref().and_then(|r| r.window_end());
                    self.pump.borrow_mut().end(pumper);
                    self.sync_alarm(next).await;
                    return;
                }
                Beat::Superseded => return,
            }
        }
        self.pump.borrow_mut().end(pumper);
    }

    /// Writes what waits in the outbox, [`outbox::CHUNK`] sockets at a time, yielding to the event loop
    /// between chunks so that requests arriving meanwhile (a joiner's upgrade) are served in between. One
    /// handler drains at a time ([`DrainLease`]); the others return at once and leave what they submitted to
    /// it (the outbox keeps the order). Two drainers taking turns would each count the other's chunks in the
    /// clock steps of their own, and measure the frame cost up to twice what it is.
    ///
    /// A flush that took several chunks is also timed for the room's frame budget ([`Room::observe_flush`]).
    /// The runtime's clock stands still while a turn of the event loop runs and moves between turns, so each
    /// chunk's time shows as the step of the clock to the next turn — together with whatever other events
    /// ran in that yield (a message arriving, its storage commit). Steps well above the flush's typical one
    /// are such intrusions and are left out ([`outbox::clean_flush_time`]): the budget is for the flush's own cost.
    async fn drain_outbox(&self) {
        let Some(_lease) = DrainLease::take(&self.draining) else { return };
        // (clock step, frames written in the turn before it); the handler's turn already wrote one chunk.
        let mut steps: Vec<(u64, u64)> = Vec::new();
        let mut turn_started = clock::now();
        let mut turn_frames = outbox::CHUNK as u64;
        let mut written = self.sockets_written.get();
        loop {
            let chunk = self.outbox.borrow_mut().next_chunk(outbox::CHUNK);
            if chunk.is_empty() {
                // Everything submitted is written: a flush going out as a sweep writes its next step now,
                // with what was queued meanwhile for the connections it reaches.
                if !self.is_sweeping() || self.with_room(None, |room, now| room.flush(now)).is_err() {
                    break;
                }
                // Its media IO waits in the queue: the caller performs it once the drain is done.
                self.queue_io(self.apply_outputs(outbox::CHUNK));
            } else {
                let frames = chunk
                    .iter()
                    .map(|delivery| match delivery {
                        Delivery::Text { to, .. } => to.len() as u64,
                        Delivery::Close { .. } => 1,
                    })
                    .sum::<u64>();
                self.sockets_written.set(self.sockets_written.get().saturating_add(frames));
                let mut sockets = self.sockets.borrow_mut();
                for delivery in chunk {
                    deliver(&mut sockets, delivery);
                }
            }
            if self.outbox.borrow().is_empty() && !self.is_sweeping() {
                break;
            }
            worker::Delay::from(std::time::Duration::from_millis(0)).await;
            let now = clock::now();
            // What every handler wrote since the last step: the step's time includes theirs (a message
            // arriving in the yield writes a sweep's next step too).
            let total = self.sockets_written.get();
            turn_frames += total.saturating_sub(written);
            written = total;
            steps.push((now.since(turn_started), turn_frames));
            turn_started = now;
            turn_frames = 0;
        }
        if let Some((frames, elapsed_ms)) = outbox::clean_flush_time(&mut steps) {
            if let Some(room) = self.room.borrow_mut().as_mut() {
                room.observe_flush(frames, elapsed_ms);
            }
        }
    }

    fn is_sweeping(&self) -> bool {
        self.room.borrow().as_ref().is_some_and(|room| room.is_sweeping())
    }

    /// The room's address, rebuilding the room from SQLite first if a storage failure dropped it meanwhile
    /// (so a placement asked for before the failure is still answered, by the rebuilt room).
    fn address(&self) -> Result<String, ApiError> {
        self.with_room(None, |room, _| room.address().to_owned())
    }

    /// Places the room's media (near `location`, the first asker's, for a room not placed yet) and answers
    /// each `media.join` in `joins` with the result.
    async fn place_media(&self, location: ClientLocation, joins: Vec<(ConnId, Option<String>)>, sessions: u32) {
        let room = match self.address() {
            Ok(room) => room,
            Err(e) => return worker::console_error!("{} media.join(s) not placed: {e}", joins.len()),
        };
        let call = PlaceCall { room, region: location.region, geo: location.geo, sessions };
        let placed = within(MEDIA_IO_TIMEOUT_MS, registry_object::place(&self.env, &call)).await;
        let placed = placed.unwrap_or_else(|| {
            worker::console_error!("placing the room's media took longer than {MEDIA_IO_TIMEOUT_MS} ms; given up");
            Err(ApiError::new(ErrorCode::Unavailable, "the node registry did not answer in time; retry"))
        });
        for (conn, rid) in joins {
            let answer = placed.clone();
            if let Err(e) = self.with_room(None, |room, now| room.media_placed(conn, rid, answer, now)) {
                worker::console_error!("room unavailable for a placement: {e}");
            }
        }
    }

    /// Performs one output that needs IO beyond the sockets, taken from the queue by `worker`. Each call is
    /// bounded by [`MEDIA_IO_TIMEOUT_MS`]: a hung media node or registry must not hold the handler (and with
    /// it the room's flush pump).
    async fn media_io(&self, output: Output, worker: &IoWorker<'_, Output>) {
        let timed_out = |what: &str| {
            worker::console_error!("{what} took longer than {MEDIA_IO_TIMEOUT_MS} ms; given up");
        };
        match output {
            Output::PlaceMedia { conn, rid, location, new_session } => {
                // A class joining at once queues a run of `media.join`s: one placement answers them all (a
                // room has one node), rather than one registry round trip after another.
                let mut joins = vec![(conn, rid)];
                let mut sessions = u32::from(new_session);
                let is_join = |o: &Output| matches!(o, Output::PlaceMedia { .. });
                while let Some(Output::PlaceMedia { conn, rid, new_session, .. }) =
                    worker.next_if(clock::now(), is_join)
                {
                    joins.push((conn, rid));
                    sessions = sessions.saturating_add(u32::from(new_session));
                }
                self.place_media(location, joins, sessions).await;
            }
            Output::MediaControl { node, command, decided_at } => {
                self.control_node(&node, &command, decided_at, worker).await;
            }
            Output::ReleaseMedia => {
                let room = match self.address() {
                    Ok(room) => room,
                    Err(e) => return worker::console_error!("the room's media placement not released: {e}"),
                };
                let call = ReleaseCall { room };
                let release = registry_object::call_registry(&self.env, "/release", Some(&call));
                match within(MEDIA_IO_TIMEOUT_MS, release).await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => worker::console_error!("could not release the room's media placement: {e}"),
                    None => timed_out("releasing the room's media placement"),
                }
            }
            _ => {}
        }
    }

    /// Sends one control command to the room's node, trying again after [`CONTROL_RETRY_DELAYS_MS`] when
    /// the node could not be reached or answered that it cannot now (a moderator's mute must not be lost to
    /// one overloaded second of the node). Each try is bounded by [`MEDIA_IO_TIMEOUT_MS`]; the worker's turn is
    /// renewed before each. A try arriving late after a newer decision is harmless: the node orders decisions
    /// by `decided_at`.
    async fn control_node(
        &self,
        node: &NodeInfo,
        command: &ControlCommand,
        decided_at: Option<u64>,
        worker: &IoWorker<'_, Output>,
    ) {
        let mut retries = CONTROL_RETRY_DELAYS_MS.iter();
        loop {
            worker.renew(clock::now());
            let send = media_control::send(&self.env, node, command, decided_at);
            let failure = match within(MEDIA_IO_TIMEOUT_MS, send).await {
                Some(Ok(_)) => return,
                Some(Err(failure)) => failure,
                None => media_control::Failure::Unreachable(format!("no answer within {MEDIA_IO_TIMEOUT_MS} ms")),
            };
            let retry = failure.is_transient().then(|| retries.next()).flatten();
            let Some(delay) = retry else {
                return worker::console_error!(
                    "media control {command:?} to node {} failed: {failure}; given up (the room's decision stands; \
                     the node does not enforce it until the next command about this participant)",
                    node.id
                );
            };
            worker::console_warn!("media control {command:?} to node {} failed: {failure}; trying again", node.id);
            worker::Delay::from(std::time::Duration::from_millis(*delay)).await;
            // A node the room has lost meanwhile (the registry's notice came in) took its sessions with it;
            // the class's placements on the next one wait behind this call.
            let current = self.room.borrow().as_ref().and_then(|r| r.media_node()).is_some_and(|n| n.id == node.id);
            if !current {
                return worker::console_warn!("media control {command:?}: node {} is no longer the room's", node.id);
            }
        }
    }

    /// Moves the alarm to the core's next deadline, or to `flush` if that is sooner (no borrow is held across
    /// the await).
    async fn sync_alarm(&self, flush: Option<Timestamp>) {
        let deadline = self.room.borrow().as_ref().and_then(|r| r.next_deadline());
        let next = match (deadline, flush) {
            (Some(d), Some(f)) => Some(d.min(f)),
            (d, f) => d.or(f),
        };
        let Some(next) = next else { return };
        self.set_alarm(next).await;
    }

    /// Sets the object's alarm for `next` (nothing to do if it is already set for then).
    async fn set_alarm(&self, next: Timestamp) {
        if self.alarm_at.get() == Some(next) {
            return;
        }
        let date = worker::js_sys::Date::new(&worker::wasm_bindgen::JsValue::from_f64(next.as_millis() as f64));
        match self.state.storage().set_alarm(ScheduledTime::new(date)).await {
            Ok(()) => self.alarm_at.set(Some(next)),
            Err(e) => worker::console_error!("could not set the room alarm: {e}"),
        }
    }

    fn conn_of(ws: &WebSocket) -> Option<ConnId> {
        ws.deserialize_attachment::<ConnRecord>().ok().flatten().map(|r| r.conn)
    }

    fn identity(req: &Request) -> Result<Identity, Response> {
        match req.headers().get(IDENTITY_HEADER).ok().flatten() {
            Some(json) => homeroom_shared::header::decode(&json)
                .map_err(|e| http::fail(ErrorCode::Internal, format!("bad identity header: {e}"))),
            None => Err(http::fail(ErrorCode::Unauthorized, "no identity; connect through /v1/rooms/{room}/ws")),
        }
    }

    /// `probe=1`: would this identity be admitted? 204, or the refusal the upgrade would get.
    async fn probe(&self, req: &Request) -> Response {
        let identity = match Self::identity(req) {
            Ok(identity) => identity,
            Err(response) => return response,
        };
        let address = req.headers().get(ADDRESS_HEADER).ok().flatten();
        let verdict = self.with_room(address.as_deref(), |room, now| room.check_admission(&identity, now));
        self.finish(Pump::Alarm).await;
        match verdict {
            Ok(Ok(())) => Response::empty().map(|r| r.with_status(204)).unwrap_or_else(|_| http::json(200, &())),
            Ok(Err(e)) | Err(e) => http::error(&e),
        }
    }

    async fn upgrade(&self, req: &Request) -> Response {
        let identity = match Self::identity(req) {
            Ok(identity) => identity,
            Err(response) => return response,
        };
        let address = req.headers().get(ADDRESS_HEADER).ok().flatten();
        let geo = req.headers().get(GEO_HEADER).ok().flatten().and_then(|v| {
            let (lat, lon) = v.split_once(',')?;
            Some(Geo::from_degrees(lat.trim().parse().ok()?, lon.trim().parse().ok()?))
        });
        let batch = req.url().ok().is_some_and(|url| url.query_pairs().any(|(k, v)| k == "batch" && v == "1"));
        let resume = req.url().ok().and_then(|url| {
            let mut since = None;
            let mut epoch = None;
            for (k, v) in url.query_pairs() {
                match &*k {
                    "since" => since = v.parse::<u64>().ok(),
                    "epoch" => epoch = Some(v.into_owned()),
                    _ => {}
                }
            }
            Some(Resume { epoch: epoch?, since: since? })
        });
        let now = clock::now();
        if let Err(e) = self.ensure_loaded(address.as_deref(), now) {
            return http::error(&e);
        }
        let admitted = {
            let mut slot = self.room.borrow_mut();
            let Some(room) = slot.as_mut() else {
                return http::fail(ErrorCode::Internal, "room not loaded");
            };
            room.connect(&identity, resume, ClientInfo { geo, batch }, now)
        };
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err(e) => {
                self.finish(Pump::Alarm).await;
                return http::error(&e);
            }
        };
        let pair = match WebSocketPair::new() {
            Ok(pair) => pair,
            Err(e) => {
                // Nothing was sent yet: the core forgets the connection as if it had closed at once.
                let _ = self.with_room(None, |room, now| room.disconnect(admitted.conn, now));
                self.finish(Pump::Alarm).await;
                return http::fail(ErrorCode::Internal, format!("could not create a WebSocket: {e}"));
            }
        };
        let conn_tag = format!("conn:{}", admitted.conn.0);
        self.state.accept_websocket_with_tags(&pair.server, &[conn_tag.as_str()]);
        if let Err(e) = pair.server.serialize_attachment(&admitted.record) {
            // Without its attachment the socket could not be matched to its connection after a wake: the
            // room forgets the connection and the client gets an answer instead of a socket nobody owns.
            worker::console_error!("could not store a connection attachment: {e}");
            let _ = pair.server.close(Some(1011), Some("internal error"));
            let _ = self.with_room(None, |room, now| room.disconnect(admitted.conn, now));
            self.finish(Pump::Alarm).await;
            return http::fail(ErrorCode::Internal, format!("could not store the connection's attachment: {e}"));
        }
        self.sockets.borrow_mut().insert(admitted.conn, pair.server);
        self.finish(Pump::Alarm).await;
        Response::from_websocket(pair.client)
            .unwrap_or_else(|e| http::fail(ErrorCode::Internal, format!("upgrade failed: {e}")))
    }

    async fn admin(&self, mut req: Request, path: &str) -> Response {
        let address = req.headers().get(ADDRESS_HEADER).ok().flatten();
        let actor = req
            .headers()
            .get(ACTOR_HEADER)
            .ok()
            .flatten()
            .and_then(|h| homeroom_shared::header::decode::<String>(&h).ok())
            .unwrap_or_else(|| "Announcement".to_owned());
        let is_post = req.method() == Method::Post;
        let body = if is_post { req.text().await.unwrap_or_default() } else { String::new() };
        let query = req.url().ok();
        let address = address.as_deref();
        let response = match path {
            "/admin/info" => self.with_room(address, |room, now| http::json(200, &room.info(now))),
            "/admin/clear" => self.with_room(address, |room, now| match room.clear(now) {
                Ok(epoch) => http::json(200, &Cleared { epoch }),
                Err(e) => http::error(&e),
            }),
            "/admin/kick" => match serde_json::from_str::<KickBody>(&body) {
                Ok(kick) => match UserId::parse(&kick.id) {
                    Ok(user) => self.with_room(address, |room, now| match room.kick(&user, now) {
                        Ok(seq) => http::json(200, &Kicked { id: kick.id.clone(), seq }),
                        Err(e) => http::error(&e),
                    }),
                    Err(e) => Ok(http::fail(ErrorCode::BadRequest, format!("id: {e}"))),
                },
                Err(e) => Ok(http::fail(ErrorCode::BadRequest, format!("expected {{\"id\": \"user id\"}}: {e}"))),
            },
            "/admin/announce" => match serde_json::from_str::<AnnounceBody>(&body) {
                Ok(a) => self.with_room(address, |room, now| match room.announce(&a.text, &actor, now) {
                    Ok(message) => http::json(201, &message),
                    Err(e) => http::error(&e),
                }),
                Err(e) => Ok(http::fail(ErrorCode::BadRequest, format!("expected {{\"text\": \"...\"}}: {e}"))),
            },
            "/admin/messages" => {
                let mut before = None;
                let mut limit = None;
                let mut bad = None;
                if let Some(url) = &query {
                    // An empty value (`?before=&limit=`, as the contract spells the route) means absent.
                    for (k, v) in url.query_pairs().filter(|(_, v)| !v.is_empty()) {
                        match &*k {
                            "before" => {
                                before = v.parse::<u64>().map(Some).unwrap_or_else(|_| {
                                    bad = Some("before must be a seq (integer)");
                                    None
                                })
                            }
                            "limit" => {
                                limit = v.parse::<u32>().map(Some).unwrap_or_else(|_| {
                                    bad = Some("limit must be an integer");
                                    None
                                })
                            }
                            _ => {}
                        }
                    }
                }
                match bad {
                    Some(message) => Ok(http::fail(ErrorCode::BadRequest, message)),
                    None => self.with_room(address, |room, _| match room.history(before, limit) {
                        Ok((messages, has_more)) => http::json(200, &Messages { messages, has_more }),
                        Err(e) => http::error(&e),
                    }),
                }
            }
            "/admin/settings" => {
                // A POST always carries a patch: an empty one is a mistake to report, not a read.
                if !is_post {
                    self.with_room(address, |room, now| http::json(200, &room.info(now).settings))
                } else {
                    match serde_json::from_str::<SettingsPatch>(&body) {
                        Ok(patch) => self.with_room(address, |room, _| match room.update_settings(&patch) {
                            Ok(settings) => http::json(200, &settings),
                            Err(e) => http::error(&e),
                        }),
                        Err(e) => Ok(http::fail(
                            ErrorCode::BadRequest,
                            format!("expected {{\"capacity\"?, \"history_limit\"?, \"persist_messages\"?}}: {e}"),
                        )),
                    }
                }
            }
            "/media/lost" => match serde_json::from_str::<LostCall>(&body) {
                Ok(lost) => {
                    // Commands still queued for the lost node would each wait out their timeout ahead of the
                    // placement on the next one.
                    self.io_queue.retain(|o| !matches!(o, Output::MediaControl { node, .. } if node.id == lost.node));
                    self.with_room(address, |room, now| {
                        room.media_lost(&lost.node, &lost.reason, now);
                        http::json(200, &serde_json::json!({ "ok": true }))
                    })
                }
                Err(e) => Ok(http::fail(ErrorCode::BadRequest, format!("expected {{node, reason}}: {e}"))),
            },
            _ => Ok(http::fail(ErrorCode::NotFound, format!("no room route {path}"))),
        };
        self.finish(Pump::Alarm).await;
        response.unwrap_or_else(|e| http::error(&e))
    }
}

impl DurableObject for RoomObject {
    fn new(state: State, env: Env) -> Self {
        match worker::worker_sys::WebSocketRequestResponsePair::new("ping", "pong") {
            Ok(pair) => state.set_websocket_auto_response(&pair),
            Err(_) => worker::console_error!("could not set the ping/pong auto-response"),
        }
        RoomObject {
            state,
            env,
            room: RefCell::new(None),
            sockets: RefCell::new(HashMap::new()),
            alarm_at: Cell::new(None),
            alarm_failures: Cell::new(0),
            pump: RefCell::new(PumpLease::default()),
            outbox: RefCell::new(Outbox::default()),
            draining: Cell::new(false),
            sockets_written: Cell::new(0),
            io_queue: IoQueue::default(),
        }
    }

    async fn fetch(&self, req: Request) -> worker::Result<Response> {
        let path = req.path();
        Ok(match path.as_str() {
            "/ws" => self.upgrade(&req).await,
            "/probe" => self.probe(&req).await,
            p if p.starts_with("/admin/") || p == "/media/lost" => {
                let p = p.to_owned();
                self.admin(req, &p).await
            }
            _ => http::fail(ErrorCode::NotFound, format!("no room route {path}")),
        })
    }

    async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> worker::Result<()> {
        let Some(conn) = Self::conn_of(&ws) else {
            let _ = ws.close(Some(close::INTERNAL), Some("connection state lost; reconnect"));
            return Ok(());
        };
        let result = self.with_room(None, |room, now| match &message {
            WebSocketIncomingMessage::String(text) => room.receive(conn, text, now),
            WebSocketIncomingMessage::Binary(bytes) => room.receive_binary(conn, bytes.len(), now),
        });
        if let Err(e) = result {
            worker::console_error!("room unavailable for a message: {e}");
            let _ = ws.send_with_str(
                homeroom_shared::protocol::ServerFrame::Error(homeroom_shared::protocol::ErrorFrame {
                    rid: None,
                    code: e.code,
                    message: e.message,
                })
                .to_json(),
            );
        }
        self.finish(Pump::Inline).await;
        Ok(())
    }

    async fn websocket_close(&self, ws: WebSocket, _code: usize, _reason: String, _clean: bool) -> worker::Result<()> {
        if let Some(conn) = Self::conn_of(&ws) {
            self.sockets.borrow_mut().remove(&conn);
            if let Err(e) = self.with_room(None, |room, now| room.disconnect(conn, now)) {
                worker::console_error!("room unavailable for a close: {e}");
            }
        }
        // Complete the closing handshake (harmless if the runtime already did).
        let _ = ws.close(Some(close::NORMAL), Some("bye"));
        self.finish(Pump::Inline).await;
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, error: worker::Error) -> worker::Result<()> {
        worker::console_warn!("websocket error: {error}");
        if let Some(conn) = Self::conn_of(&ws) {
            self.sockets.borrow_mut().remove(&conn);
            if let Err(e) = self.with_room(None, |room, now| room.disconnect(conn, now)) {
                worker::console_error!("room unavailable for an error: {e}");
            }
        }
        self.finish(Pump::Inline).await;
        Ok(())
    }

    async fn alarm(&self) -> worker::Result<Response> {
        self.alarm_at.set(None);
        if let Err(e) = self.with_room(None, |room, now| room.tick(now)) {
            worker::console_error!("room unavailable for its alarm: {e}");
        }
        self.finish(Pump::Inline).await;
        if self.room.borrow().is_none() {
            // Storage failed (the room was dropped) or the room could not load. Its timers live in the dropped
            // room — the one that just failed among them — so nothing would set the alarm again: an empty
            // room would never be wiped, expired tokens never closed. Wake again shortly; the room is rebuilt
            // from SQLite then, and its deadlines set the alarm as usual. The wait doubles with each failure in
            // a row (2 s up to a minute), so a storage failure that lasts neither spins the alarm nor floods
            // the log.
            let failures = self.alarm_failures.get().saturating_add(1);
            self.alarm_failures.set(failures);
            let retry_ms = homeroom_shared::time::backoff_ms(failures, ALARM_RETRY_MS, ALARM_RETRY_MAX_MS);
            worker::console_warn!("room alarm failed ({failures} in a row); retrying in {retry_ms} ms");
            self.set_alarm(clock::now().plus_ms(retry_ms)).await;
        } else {
            self.alarm_failures.set(0);
        }
        Response::empty()
    }
}

/// How long after a failed alarm the room wakes to try again (doubling with each failure in a row)…
const ALARM_RETRY_MS: u64 = 2_000;
/// …up to this.
const ALARM_RETRY_MAX_MS: u64 = 60_000;
