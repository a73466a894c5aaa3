//! An in-memory network for driving an [`Sfu`] and [`PeerCore`]s on a simulated clock: no sockets, no tokio,
//! no real time. Each step delivers every pending datagram, then jumps the clock to the earliest deadline.
//! Deterministic apart from str0m's own random ids, and fast: seconds of media take milliseconds.

use crate::core::{CreateError, NewSession, SessionId, Sfu, SfuConfig};
use crate::metrics::Metrics;
use crate::peer::{PeerCore, PeerCoreError, PeerOptions};
use homeroom_shared::auth::MediaPerms;
use homeroom_shared::media::{MediaCaps, Quality};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Why a simulated peer could not join.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error(transparent)]
    Peer(#[from] PeerCoreError),
}

/// Who a simulated peer is, as a media token would say.
#[derive(Clone, Debug)]
pub struct SimIdentity {
    pub participant: String,
    pub room: String,
    pub perms: MediaPerms,
    pub caps: MediaCaps,
    /// The media token's `iat` (seconds); `None`: older than every moderation decision.
    pub issued_at: Option<u64>,
}

impl SimIdentity {
    /// A participant of `room` with every permission and no caps.
    pub fn new(participant: &str, room: &str) -> Self {
        SimIdentity {
            participant: participant.to_owned(),
            room: room.to_owned(),
            perms: MediaPerms { audio: true, video: true, screen: true, subscribe: true },
            caps: MediaCaps::default(),
            issued_at: None,
        }
    }
}

/// One node and its peers on a simulated network.
#[derive(Debug)]
pub struct SimNetwork {
    pub sfu: Sfu,
    pub metrics: Metrics,
    node_addr: SocketAddr,
    peers: Vec<(SessionId, PeerCore)>,
    /// Peers whose datagrams are lost (both ways).
    cut: Vec<bool>,
    now: Instant,
    /// Real (wall-clock) time spent inside the node's core, for cost measurements.
    node_busy: Duration,
}

impl SimNetwork {
    /// A node at `10.0.0.1:5000` with default settings.
    pub fn new() -> Self {
        let node_addr = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 5000));
        Self::with_config(SfuConfig::new(node_addr))
    }

    /// A node without bandwidth estimation: layer choice follows preferences and caps only.
    pub fn without_bwe() -> Self {
        let node_addr = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 5000));
        Self::with_config(SfuConfig { bwe_initial_kbps: None, ..SfuConfig::new(node_addr) })
    }

    /// A node with `config` (its `candidate_addr` is where peers send).
    pub fn with_config(config: SfuConfig) -> Self {
        let now = Instant::now();
        let metrics = Metrics::new();
        let node_addr = config.candidate_addr;
        SimNetwork {
            sfu: Sfu::new(config, metrics.clone(), now),
            metrics,
            node_addr,
            peers: Vec::new(),
            cut: Vec::new(),
            now,
            node_busy: Duration::ZERO,
        }
    }

    /// The simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Wall-clock time the node's core has spent handling datagrams and timers so far.
    pub fn node_busy(&self) -> Duration {
        self.node_busy
    }

    /// Adds a peer: offer, `create_session`, answer. Returns its index.
    pub fn join(&mut self, identity: &SimIdentity, options: &PeerOptions) -> Result<usize, SimError> {
        let index = self.peers.len();
        let addr = SocketAddr::from((Ipv4Addr::new(10, 0, 1, (index % 250) as u8 + 1), 40_000 + index as u16));
        let (mut peer, offer) = PeerCore::new(options, addr, self.now)?;
        let created = self.sfu.create_session(
            self.now,
            NewSession {
                participant: identity.participant.clone(),
                name: None,
                room: identity.room.clone(),
                perms: identity.perms,
                caps: identity.caps,
                offer_sdp: offer.sdp,
                screen_mids: offer.screen_mids,
                quality: Quality::High,
                issued_at: identity.issued_at,
            },
        )?;
        peer.accept_answer(&created.answer_sdp)?;
        self.peers.push((created.id, peer));
        self.cut.push(false);
        Ok(index)
    }

    /// Peer `index`.
    pub fn peer(&self, index: usize) -> Option<&PeerCore> {
        self.peers.get(index).map(|(_, p)| p)
    }

    /// Peer `index`, mutably (to change its quality, close it…).
    pub fn peer_mut(&mut self, index: usize) -> Option<&mut PeerCore> {
        self.peers.get_mut(index).map(|(_, p)| p)
    }

    /// The node-side session of peer `index`.
    pub fn session_of(&self, index: usize) -> Option<SessionId> {
        self.peers.get(index).map(|(id, _)| *id)
    }

    /// Cuts peer `index` off the network: its datagrams are lost both ways, as when a laptop lid closes.
    pub fn cut(&mut self, index: usize) {
        if let Some(cut) = self.cut.get_mut(index) {
            *cut = true;
        }
    }

    /// Reconnects a peer cut off by [`SimNetwork::cut`].
    pub fn restore(&mut self, index: usize) {
        if let Some(cut) = self.cut.get_mut(index) {
            *cut = false;
        }
    }

    /// Runs the network for `duration` of simulated time.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.deliver();
            let mut next = self.sfu.next_deadline();
            for (_, peer) in &mut self.peers {
                next = next.min(peer.next_deadline());
            }
            // At least 100 µs a step (so a busy timer cannot stall the loop), never past `end`.
            self.now = next.max(self.now + Duration::from_micros(100)).min(end);
            let started = Instant::now();
            self.sfu.handle_timeout(self.now);
            self.node_busy += started.elapsed();
            for (_, peer) in &mut self.peers {
                if peer.is_alive() {
                    peer.handle_timeout(self.now);
                }
            }
        }
        self.deliver();
    }

    /// Advances simulated time by `step` for peer `index` alone (not the node, not the other peers) and returns
    /// what it sent to the node. With [`SimNetwork::feed_node`], this times the node's forwarding path on its
    /// own (see `benches/forwarding.rs`); the network's other methods keep working afterwards.
    pub fn step_peer(&mut self, index: usize, step: Duration) -> Vec<Vec<u8>> {
        self.now += step;
        let now = self.now;
        let node_addr = self.node_addr;
        let Some((_, peer)) = self.peers.get_mut(index) else {
            return Vec::new();
        };
        peer.handle_timeout(now);
        peer.take_transmits().into_iter().filter(|t| t.destination == node_addr).map(|t| t.contents.to_vec()).collect()
    }

    /// Hands `datagrams` from peer `index` to the node at the current simulated time: as one batch
    /// ([`Sfu::handle_datagrams`]) or one by one ([`Sfu::handle_datagram`]); then lets the node handle its due
    /// timers. Returns how many datagrams the node queued for the other peers, and drops those; what it
    /// queued for peer `index` itself (STUN responses, RTCP) is delivered to it, so its ICE consent holds.
    pub fn feed_node(&mut self, index: usize, datagrams: &[Vec<u8>], batch: bool) -> usize {
        let Some(source) = self.peers.get(index).map(|(_, p)| p.local_addr()) else {
            return 0;
        };
        let started = Instant::now();
        if batch {
            self.sfu.handle_datagrams(self.now, datagrams.iter().map(|d| (source, d.as_slice())));
        } else {
            for datagram in datagrams {
                self.sfu.handle_datagram(self.now, source, datagram);
            }
        }
        self.sfu.handle_timeout(self.now);
        self.node_busy += started.elapsed();
        let node_addr = self.node_addr;
        let now = self.now;
        let mut to_others = 0;
        for transmit in self.sfu.take_transmits() {
            if transmit.destination == source {
                if let Some((_, peer)) = self.peers.get_mut(index) {
                    peer.handle_datagram(now, node_addr, &transmit.contents);
                }
            } else {
                to_others += 1;
            }
        }
        to_others
    }

    /// Moves datagrams until none are in flight (zero latency, no loss).
    fn deliver(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for transmit in self.sfu.take_transmits() {
                moved = true;
                let to = self.peers.iter().position(|(_, p)| p.local_addr() == transmit.destination);
                let Some(index) = to.filter(|i| !self.cut.get(*i).copied().unwrap_or(true)) else {
                    continue;
                };
                if let Some((_, peer)) = self.peers.get_mut(index) {
                    peer.handle_datagram(self.now, self.node_addr, &transmit.contents);
                }
            }
            for (index, (_, peer)) in self.peers.iter_mut().enumerate() {
                let lost = self.cut.get(index).copied().unwrap_or(true);
                for transmit in peer.take_transmits() {
                    moved = true;
                    if !lost && transmit.destination == self.node_addr {
                        let started = Instant::now();
                        self.sfu.handle_datagram(self.now, peer.local_addr(), &transmit.contents);
                        self.node_busy += started.elapsed();
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }
}

impl Default for SimNetwork {
    fn default() -> Self {
        Self::new()
    }
}
