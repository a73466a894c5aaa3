//! A deterministic driver for the room core: a fake clock, fake connections, and an inbox per connection.
//!
//! It plays the Durable Object's part exactly: applies outputs in order, keeps attachments, runs the alarm
//! when time passes, and can "hibernate" (drop the room and restore it from the store and attachments).
//! It also checks, on every output, that nothing is sent to a connection that was already closed.
//! Available to this crate's tests and, with the `sim` feature, to other crates' tests and benchmarks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use super::config::Limits;
use super::store::MemoryStore;
use super::{ClientInfo, ConnRecord, Output, Resume, Room, RoomKeys};
use crate::auth::{Identity, TokenKey};
use crate::ids::{ConnId, RoomId, TenantId, UserId};
use crate::protocol::{ApiError, ClientFrame, ClientRequest, PermsPatch, Role, ServerFrame};
use crate::time::Timestamp;
use std::collections::{BTreeMap, BTreeSet};

/// The secret the simulator signs tokens with.
pub const SIM_SECRET: &[u8] = b"sim-secret";
/// The secret the simulator signs media tokens with.
pub const SIM_NODE_SECRET: &[u8] = b"sim-node-secret";

/// A simulated room with its connections.
#[derive(Debug)]
pub struct Sim {
    room: Option<Room<MemoryStore>>,
    pub now: Timestamp,
    pub limits: Limits,
    key: TokenKey,
    keys: RoomKeys,
    address: String,
    open: BTreeSet<ConnId>,
    attachments: BTreeMap<ConnId, ConnRecord>,
    inbox: BTreeMap<ConnId, Vec<String>>,
    /// Close code and reason of every connection the room closed.
    pub closed: BTreeMap<ConnId, (u16, String)>,
    /// How many times the room was hibernated and restored.
    pub hibernations: u32,
    /// Media outputs (placement requests, control commands, releases) for the test to act on.
    pub media: Vec<Output>,
    /// Whether new connections accept batched frames (`?batch=1`).
    pub batch: bool,
}

impl Sim {
    /// A room `tenant/room` at time 1,700,000,000,000 ms with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self::with_address(limits, "default/room")
    }

    /// A room with the given `{tenant}/{room}` address.
    pub fn with_address(limits: Limits, address: &str) -> Self {
        let now = Timestamp(1_700_000_000_000);
        let key = TokenKey::new(SIM_SECRET);
        let keys = RoomKeys { user: key.clone(), media: TokenKey::new(SIM_NODE_SECRET) };
        let room = Room::restore(MemoryStore::default(), limits.clone(), keys.clone(), Some(address), Vec::new(), now)
            .expect("memory store cannot fail");
        Sim {
            room: Some(room),
            now,
            limits,
            key,
            keys,
            address: address.to_owned(),
            open: BTreeSet::new(),
            attachments: BTreeMap::new(),
            inbox: BTreeMap::new(),
            closed: BTreeMap::new(),
            hibernations: 0,
            media: Vec::new(),
            batch: true,
        }
    }

    /// The room (between events).
    pub fn room(&self) -> &Room<MemoryStore> {
        self.room.as_ref().expect("room present between events")
    }

    fn room_mut(&mut self) -> &mut Room<MemoryStore> {
        self.room.as_mut().expect("room present between events")
    }

    /// An identity for `user` with `role`, valid for an hour from now.
    pub fn identity(&self, user: &str, role: Role) -> Identity {
        let tenant = self.address.split('/').next().unwrap_or("default");
        Identity {
            user: UserId::parse(user).unwrap(),
            name: format!("{user} name"),
            role,
            tenant: TenantId::parse(tenant).unwrap(),
            rooms: None,
            perms: PermsPatch::default(),
            exp: self.now.as_secs() + 3600,
        }
    }

    /// A signed token for `identity` (for `auth.refresh`).
    pub fn token_for(&self, identity: &Identity, exp: u64) -> String {
        let claims = crate::auth::UserClaims {
            sub: identity.user.to_string(),
            name: Some(identity.name.clone()),
            role: Some(identity.role),
            tenant: Some(identity.tenant.to_string()),
            rooms: None,
            perms: None,
            exp,
            nbf: None,
            iat: None,
        };
        self.key.sign(&claims).unwrap()
    }

    /// Connects `identity`, fresh or resuming.
    pub fn connect(&mut self, identity: &Identity, resume: Option<Resume>) -> Result<ConnId, ApiError> {
        let now = self.now;
        let client = ClientInfo { geo: None, batch: self.batch };
        let admitted = self.room_mut().connect(identity, resume, client, now);
        if let Ok(a) = &admitted {
            self.open.insert(a.conn);
            self.attachments.insert(a.conn, a.record.clone());
            self.inbox.entry(a.conn).or_default();
        }
        self.drain();
        admitted.map(|a| a.conn)
    }

    /// Connects `user` with `role` and no resume; panics if refused.
    pub fn join(&mut self, user: &str, role: Role) -> ConnId {
        let identity = self.identity(user, role);
        self.connect(&identity, None).unwrap()
    }

    /// Sends a raw text frame from `conn`.
    pub fn say(&mut self, conn: ConnId, text: &str) {
        let now = self.now;
        self.room_mut().receive(conn, text, now);
        self.drain();
    }

    /// A binary frame of `len` bytes from `conn`.
    pub fn say_binary(&mut self, conn: ConnId, len: usize) {
        let now = self.now;
        self.room_mut().receive_binary(conn, len, now);
        self.drain();
    }

    /// Sends a request from `conn`.
    pub fn request(&mut self, conn: ConnId, rid: Option<&str>, request: ClientRequest) {
        let frame = ClientFrame { rid: rid.map(str::to_owned), request };
        self.say(conn, &frame.to_json());
    }

    /// The client side of `conn` goes away.
    pub fn drop_conn(&mut self, conn: ConnId) {
        self.open.remove(&conn);
        self.attachments.remove(&conn);
        let now = self.now;
        self.room_mut().disconnect(conn, now);
        self.drain();
    }

    /// The connection vanishes without the room hearing of it (a runtime restart kills sockets silently).
    pub fn forget_without_close(&mut self, conn: ConnId) {
        self.open.remove(&conn);
        self.attachments.remove(&conn);
    }

    /// Moves the clock and fires the alarm if it is due (possibly several times); like the object's flush pump,
    /// it also wakes at the end of every open flush window, which flushes it or closes it.
    pub fn advance(&mut self, ms: u64) {
        let target = self.now.plus_ms(ms);
        loop {
            let room = self.room();
            let next = [room.next_deadline(), room.window_end(), room.next_flush()].into_iter().flatten().min();
            let Some(deadline) = next.filter(|d| *d <= target) else { break };
            self.now = self.now.max(deadline);
            let now = self.now;
            self.room_mut().tick(now);
            self.drain();
        }
        self.now = target;
    }

    /// Lets every queued (coalesced) frame go out and the flush window close, advancing the clock (an object
    /// only hibernates after seconds of silence, long after any window).
    pub fn settle(&mut self) {
        // Deadlines that fire while settling may send (and open a window) again; a few rounds always end it.
        for _ in 0..100 {
            while let Some(at) = self.room().next_flush() {
                self.now = self.now.max(at);
                let now = self.now;
                self.room_mut().flush(now);
                self.drain();
            }
            if !self.room().is_coalescing() {
                return;
            }
            self.now = self.now.plus_ms(self.limits.coalesce_ms);
            let now = self.now;
            self.room_mut().tick(now);
            self.drain();
        }
    }

    /// Drops the room's memory and rebuilds it from the store and the attachments, as after hibernation.
    pub fn hibernate(&mut self) {
        // A Durable Object cannot hibernate while a flush is pending (its event handler is still running).
        self.settle();
        let store = self.room.take().expect("room present").into_store();
        let live: Vec<ConnRecord> = self.attachments.values().cloned().collect();
        self.room =
            Some(Room::restore(store, self.limits.clone(), self.keys.clone(), None, live, self.now).expect("restore"));
        self.hibernations += 1;
        self.drain();
    }

    /// Admin API actions run through this.
    pub fn admin<T>(&mut self, f: impl FnOnce(&mut Room<MemoryStore>, Timestamp) -> T) -> T {
        let now = self.now;
        let out = f(self.room_mut(), now);
        self.drain();
        out
    }

    fn drain(&mut self) {
        while let Some(output) = self.room_mut().poll_output() {
            match output {
                Output::Send { to, text } => {
                    for conn in to {
                        assert!(self.open.contains(&conn), "sent to {conn}, which is closed or unknown: {text}");
                        self.inbox.entry(conn).or_default().push(text.to_string());
                    }
                }
                Output::Close { conn, code, reason } => {
                    assert!(self.open.remove(&conn), "closed {conn} twice or unknown");
                    self.attachments.remove(&conn);
                    self.closed.insert(conn, (code, reason));
                }
                Output::Attach { record } => {
                    assert!(self.open.contains(&record.conn), "attachment for closed {}", record.conn);
                    self.attachments.insert(record.conn, record);
                }
                media @ (Output::PlaceMedia { .. } | Output::MediaControl { .. } | Output::ReleaseMedia) => {
                    self.media.push(media);
                }
            }
        }
    }

    /// The open connections and their users.
    pub fn open_connections(&self) -> Vec<(ConnId, UserId)> {
        self.attachments.iter().map(|(c, r)| (*c, r.user.clone())).collect()
    }

    /// Every connection that ever received something, open or closed.
    pub fn known_connections(&self) -> Vec<ConnId> {
        self.inbox.keys().copied().collect()
    }

    /// Whether `conn` is open.
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.open.contains(&conn)
    }

    /// Takes the text frames `conn` received since the last call.
    pub fn take_text(&mut self, conn: ConnId) -> Vec<String> {
        std::mem::take(self.inbox.entry(conn).or_default())
    }

    /// Takes the frames `conn` received since the last call, parsed, batches unpacked (`pong` is skipped).
    pub fn take(&mut self, conn: ConnId) -> Vec<ServerFrame> {
        self.take_text(conn)
            .into_iter()
            .filter(|t| t != "pong")
            .flat_map(|t| {
                if t.starts_with('[') {
                    serde_json::from_str::<Vec<ServerFrame>>(&t).unwrap_or_else(|e| panic!("unparsable batch {t}: {e}"))
                } else {
                    vec![serde_json::from_str(&t).unwrap_or_else(|e| panic!("unparsable frame {t}: {e}"))]
                }
            })
            .collect()
    }

    /// The room id part of the address.
    pub fn room_id(&self) -> RoomId {
        RoomId::parse(self.address.split('/').nth(1).unwrap_or("room")).unwrap()
    }
}
