//! Property tests: random operation sequences (connect, send, resend, drop, resume, kick, clear, expire,
//! hibernate) against two rooms, checking after every step:
//!
//! - presence equals the connected users;
//! - no event reaches a departed connection (the simulator asserts it on every output);
//! - every connection's log is gap-free and duplicate-free, and a resumed connection continues exactly where
//!   its predecessor stopped;
//! - a `(user, rid)` never produces two chat messages;
//! - nothing leaks between rooms;
//! - a room that hibernates (memory dropped, rebuilt from store + attachments) sends exactly the same bytes
//!   as a twin that never does.

use homeroom_shared::protocol::{ClientRequest, Role, ServerFrame};
use homeroom_shared::room::config::Limits;
use homeroom_shared::room::sim::Sim;
use homeroom_shared::room::Resume;
use homeroom_shared::{ConnId, UserId};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const USERS: [&str; 4] = ["ada", "bob", "cy", "di"];

#[derive(Clone, Debug)]
enum Op {
    /// A user connects (fresh, or resuming from its last dropped connection).
    Connect {
        room: usize,
        user: usize,
        teacher: bool,
        resume: bool,
        ttl_s: u64,
    },
    /// A connection sends a chat message with a rid from a small pool (so resends happen).
    Send {
        room: usize,
        conn: usize,
        rid: u8,
    },
    Typing {
        room: usize,
        conn: usize,
    },
    Hand {
        room: usize,
        conn: usize,
        raised: bool,
    },
    /// The client side of a connection goes away.
    Drop {
        room: usize,
        conn: usize,
    },
    Kick {
        room: usize,
        conn: usize,
        target: usize,
    },
    Clear {
        room: usize,
        conn: usize,
    },
    /// Time passes: typing, token and idle deadlines fire.
    Advance {
        ms: u64,
    },
    /// The room's memory is dropped and rebuilt.
    Hibernate {
        room: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let room = 0..2usize;
    prop_oneof![
        4 => (room.clone(), 0..4usize, any::<bool>(), any::<bool>(), 5..600u64)
            .prop_map(|(room, user, teacher, resume, ttl_s)| Op::Connect { room, user, teacher, resume, ttl_s }),
        6 => (room.clone(), 0..6usize, 0..4u8).prop_map(|(room, conn, rid)| Op::Send { room, conn, rid }),
        1 => (room.clone(), 0..6usize).prop_map(|(room, conn)| Op::Typing { room, conn }),
        1 => (room.clone(), 0..6usize, any::<bool>()).prop_map(|(room, conn, raised)| Op::Hand { room, conn, raised }),
        2 => (room.clone(), 0..6usize).prop_map(|(room, conn)| Op::Drop { room, conn }),
        1 => (room.clone(), 0..6usize, 0..4usize).prop_map(|(room, conn, target)| Op::Kick { room, conn, target }),
        1 => (room.clone(), 0..6usize).prop_map(|(room, conn)| Op::Clear { room, conn }),
        2 => prop_oneof![0..2_000u64, 0..400_000u64].prop_map(|ms| Op::Advance { ms }),
        2 => room.prop_map(|room| Op::Hibernate { room }),
    ]
}

/// What a client knows of its connection: where its log is, to check the next logged frame.
#[derive(Debug, Clone)]
struct ClientView {
    user: String,
    epoch: String,
    /// The next `seq` this connection must receive.
    next_seq: u64,
    /// The position the connection asked to resume from.
    resume_since: Option<u64>,
}

/// One room under test: the hibernating room, its never-hibernating twin, and the clients' views.
struct World {
    name: &'static str,
    room: Sim,
    twin: Sim,
    views: BTreeMap<ConnId, ClientView>,
    /// For resume: the last position each user reached on a connection that ended.
    last_position: BTreeMap<String, (String, u64)>,
    /// Chat texts seen per epoch, to catch duplicates.
    texts: BTreeMap<String, BTreeSet<String>>,
}

fn limits() -> Limits {
    // Generous rate limits: the property under test is ordering and state, not throttling (which differs by
    // design after hibernation: buckets are memory only). Coalescing is on even for tiny rooms, so batching
    // is under test too, and flushes go out in sweeps of two connections a step, so that events land between
    // a sweep's steps.
    Limits {
        rate_burst: 100_000,
        rate_per_sec: 100_000,
        abuse_strikes: 100_000,
        coalesce_ms: 20,
        coalesce_min_conns: 1,
        coalesce_sweep_conns: 2,
        ..Limits::default()
    }
}

impl World {
    fn new(name: &'static str, batch: bool) -> Self {
        let address = format!("default/{name}");
        let mut room = Sim::with_address(limits(), &address);
        let mut twin = Sim::with_address(limits(), &address);
        room.batch = batch;
        twin.batch = batch;
        World { name, room, twin, views: BTreeMap::new(), last_position: BTreeMap::new(), texts: BTreeMap::new() }
    }

    fn nth_open(&self, n: usize) -> Option<ConnId> {
        let open = self.room.open_connections();
        if open.is_empty() {
            None
        } else {
            open.get(n % open.len()).map(|(c, _)| *c)
        }
    }

    fn both(&mut self, f: impl Fn(&mut Sim)) {
        f(&mut self.room);
        f(&mut self.twin);
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Connect { user, teacher, resume, ttl_s, .. } => {
                let name = USERS[*user];
                let role = if *teacher { Role::Teacher } else { Role::Student };
                let mut identity = self.room.identity(name, role);
                identity.exp = self.room.now.as_secs() + ttl_s;
                let resume = if *resume {
                    self.last_position.get(name).map(|(epoch, since)| Resume { epoch: epoch.clone(), since: *since })
                } else {
                    None
                };
                let a = self.room.connect(&identity, resume.clone());
                let b = self.twin.connect(&identity, resume.clone());
                assert_eq!(a, b, "twins disagree on admission");
                if let Ok(conn) = a {
                    let view = ClientView {
                        user: name.to_owned(),
                        epoch: String::new(),
                        next_seq: 0,
                        resume_since: resume.as_ref().map(|r| r.since),
                    };
                    self.views.insert(conn, view);
                    // The resume position is consumed: the new connection carries the user's log on.
                    if resume.is_some() {
                        self.last_position.remove(name);
                    }
                }
            }
            Op::Send { conn, rid, .. } => {
                if let Some(c) = self.nth_open(*conn) {
                    let user = self.views.get(&c).map(|v| v.user.clone()).unwrap_or_default();
                    // The room's name in the text: a message that reaches the other room is told apart.
                    let text = format!("{}:{user}:{rid}", self.name);
                    let req = ClientRequest::ChatSend { text, reply_to: None };
                    let rid = format!("r{rid}");
                    self.both(|s| s.request(c, Some(&rid), req.clone()));
                }
            }
            Op::Typing { conn, .. } => {
                if let Some(c) = self.nth_open(*conn) {
                    self.both(|s| s.request(c, None, ClientRequest::Typing { active: true }));
                }
            }
            Op::Hand { conn, raised, .. } => {
                if let Some(c) = self.nth_open(*conn) {
                    self.both(|s| s.request(c, Some("h"), ClientRequest::Hand { raised: *raised }));
                }
            }
            Op::Drop { conn, .. } => {
                if let Some(c) = self.nth_open(*conn) {
                    self.end_view(c);
                    self.both(|s| s.drop_conn(c));
                }
            }
            Op::Kick { conn, target, .. } => {
                if let Some(c) = self.nth_open(*conn) {
                    let id = UserId::parse(USERS[*target]).unwrap();
                    self.both(|s| s.request(c, Some("k"), ClientRequest::ParticipantKick { id: id.clone() }));
                }
            }
            Op::Clear { conn, .. } => {
                if let Some(c) = self.nth_open(*conn) {
                    self.both(|s| s.request(c, Some("c"), ClientRequest::RoomClear));
                }
            }
            Op::Advance { ms } => self.both(|s| s.advance(*ms)),
            Op::Hibernate { .. } => {
                // Both let queued frames out first (an object never hibernates with a flush pending).
                self.both(|s| s.settle());
                self.room.hibernate();
            }
        }
    }

    /// Remembers where a connection's log ended, for a later resume by its user.
    fn end_view(&mut self, conn: ConnId) {
        if let Some(view) = self.views.get(&conn) {
            if !view.epoch.is_empty() {
                self.last_position.insert(view.user.clone(), (view.epoch.clone(), view.next_seq.saturating_sub(1)));
            }
        }
    }

    /// Collects what every connection received and checks the invariants.
    fn check(&mut self) {
        // The twin sent exactly the same bytes to every connection.
        for conn in self.room.known_connections() {
            let a = self.room.take_text(conn);
            let b = self.twin.take_text(conn);
            assert_eq!(a, b, "{}: hibernation changed what {conn} received", self.name);
            for text in a {
                if text.starts_with('[') {
                    let frames: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
                    for frame in frames {
                        self.observe(conn, &frame.to_string());
                    }
                } else {
                    self.observe(conn, &text);
                }
            }
        }
        assert_eq!(self.room.closed, self.twin.closed, "{}: twins closed different connections", self.name);
        // Connections the room closed end their views too.
        let closed: Vec<ConnId> = self.room.closed.keys().copied().collect();
        for conn in closed {
            if self.views.contains_key(&conn) {
                self.end_view(conn);
                self.views.remove(&conn);
            }
        }
        self.views.retain(|c, _| self.room.is_open(*c));

        // Presence equals the connected users.
        let connected: BTreeSet<UserId> = self.room.open_connections().into_iter().map(|(_, u)| u).collect();
        let present: BTreeSet<UserId> = self.room.room().participants().into_iter().map(|p| p.id).collect();
        assert_eq!(connected, present, "{}: presence differs from connected users", self.name);
        assert_eq!(self.room.room().participants(), self.twin.room().participants());
        assert_eq!(self.room.room().position(), self.twin.room().position());
    }

    fn observe(&mut self, conn: ConnId, text: &str) {
        if text == "pong" {
            return;
        }
        let frame: ServerFrame = serde_json::from_str(text).unwrap();
        let Some(view) = self.views.get_mut(&conn) else {
            panic!("{}: {conn} received {text} without a view", self.name);
        };
        match &frame {
            ServerFrame::Welcome(w) => {
                assert!(view.epoch.is_empty(), "{}: second welcome on {conn}", self.name);
                view.epoch = w.epoch.clone();
                view.next_seq = match (w.resumed, view.resume_since) {
                    // Resumed: exactly the events in (since, seq] follow, then live ones.
                    (true, Some(since)) => since + 1,
                    (true, None) => panic!("{}: resumed without asking", self.name),
                    // Fresh snapshot: the log continues after the welcome's seq.
                    (false, _) => w.seq + 1,
                };
            }
            ServerFrame::RoomCleared { .. } => {}
            other => {
                if let Some(seq) = other.seq() {
                    let epoch = view.epoch.clone();
                    assert_eq!(seq, view.next_seq, "{}: {conn} got seq {seq}, expected {}", self.name, view.next_seq);
                    view.next_seq = seq + 1;
                    if let ServerFrame::ChatMessage { message, .. } = other {
                        let ours = format!("{}:", self.name);
                        assert!(
                            message.text.starts_with(&ours),
                            "{}: {conn} got {:?} from another room",
                            self.name,
                            message.text
                        );
                        let seen = self.texts.entry(epoch).or_default();
                        // Every connection sees each message once; the set only checks a (user, rid) never
                        // produced two different messages.
                        let key = format!("{}#{}", message.text, message.id);
                        let dup = seen.iter().any(|k| k.starts_with(&format!("{}#", message.text)) && *k != key);
                        assert!(!dup, "{}: {} was posted twice", self.name, message.text);
                        seen.insert(key);
                    }
                }
            }
        }
    }
}

fn run(ops: &[Op]) {
    let mut worlds = [World::new("alpha", true), World::new("beta", false)];
    for op in ops {
        let room = match op {
            Op::Connect { room, .. }
            | Op::Send { room, .. }
            | Op::Typing { room, .. }
            | Op::Hand { room, .. }
            | Op::Drop { room, .. }
            | Op::Kick { room, .. }
            | Op::Clear { room, .. }
            | Op::Hibernate { room } => *room,
            Op::Advance { .. } => 2,
        };
        if room == 2 {
            for w in worlds.iter_mut() {
                w.apply(op);
            }
        } else {
            worlds[room].apply(op);
        }
        for world in worlds.iter_mut() {
            world.check();
        }
    }
}

/// When a user resumes, its new connection's first replayed seq must follow its last seen seq exactly.
#[test]
fn resume_continues_exactly_where_the_last_connection_stopped() {
    let mut s = Sim::new(limits());
    let a = s.join("a", Role::Student);
    let b = s.join("b", Role::Student);
    let welcome = s.take(b);
    let ServerFrame::Welcome(w) = &welcome[0] else { panic!() };
    let (epoch, last) = (w.epoch.clone(), w.seq);
    s.drop_conn(b);
    for i in 0..3 {
        s.request(a, Some(&format!("{i}")), ClientRequest::ChatSend { text: format!("m{i}"), reply_to: None });
    }
    let identity = s.identity("b", Role::Student);
    let b2 = s.connect(&identity, Some(Resume { epoch, since: last })).unwrap();
    let seqs: Vec<u64> = s.take(b2).iter().filter_map(ServerFrame::seq).collect();
    assert_eq!(seqs.first(), Some(&(last + 1)));
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_operation_sequences_keep_the_invariants(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops);
    }
}
