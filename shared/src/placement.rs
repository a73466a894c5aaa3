//! The media-node registry and room placement: pure logic, driven by the registry Durable Object.
//!
//! Nodes hold leases renewed by heartbeats; a node whose lease runs out is removed and every room placed on
//! it is reported so the room can tell its clients. Placement of a room's first `media.join`:
//! 1. the client's region (a `region` hint, else the region nearest the client's coordinates) if a node there
//!    has room;
//! 2. else the nearest region, by great-circle distance, that has a node with room;
//! 3. within a region, the least loaded non-draining node (load / capacity, then id).
//!
//! A room stays on its node while the node lives, even when the node starts draining (its sessions carry on
//! there, and a room split over two nodes would not hear itself). A draining node that reports no sessions
//! is done: its lease ends with that heartbeat, and its rooms are reported like those of a lost node, at
//! once rather than a lease later.

use crate::auth::Identity;
use crate::ids::{NodeId, RoomId};
use crate::media::{HeartbeatReply, NodeHeartbeat};
use crate::protocol::{ApiError, ErrorCode, NodeInfo};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A point on Earth in millidegrees (integers keep the records comparable and hashable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Geo {
    pub lat_milli: i32,
    pub lon_milli: i32,
}

impl Geo {
    /// A point from degrees (clamped to valid ranges).
    pub fn from_degrees(lat: f64, lon: f64) -> Self {
        Geo {
            lat_milli: (lat.clamp(-90.0, 90.0) * 1000.0).round() as i32,
            lon_milli: (lon.clamp(-180.0, 180.0) * 1000.0).round() as i32,
        }
    }

    /// Great-circle distance to `other`, in kilometres.
    pub fn distance_km(self, other: Geo) -> f64 {
        let rad = |milli: i32| f64::from(milli) / 1000.0 * std::f64::consts::PI / 180.0;
        let (lat1, lon1, lat2, lon2) =
            (rad(self.lat_milli), rad(self.lon_milli), rad(other.lat_milli), rad(other.lon_milli));
        let a = ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
        2.0 * 6371.0 * a.sqrt().min(1.0).asin()
    }
}

/// Where well-known region names are. Operators may name regions anything; unknown names are placed only
/// when nothing known has room (or when a client asks for them by name).
pub const KNOWN_REGIONS: &[(&str, f64, f64)] = &[
    ("us-east", 39.0, -77.5),
    ("us-central", 41.9, -93.6),
    ("us-west", 37.4, -122.1),
    ("ca-central", 45.5, -73.6),
    ("sa-east", -23.5, -46.6),
    ("eu-west", 53.3, -6.3),
    ("eu-central", 50.1, 8.7),
    ("eu-north", 59.3, 18.1),
    ("eu-south", 45.5, 9.2),
    ("uk-south", 51.5, -0.1),
    ("me-central", 25.2, 55.3),
    ("af-south", -26.2, 28.0),
    ("ap-south", 19.1, 72.9),
    ("ap-southeast", 1.35, 103.8),
    ("ap-northeast", 35.7, 139.7),
    ("ap-east", 22.3, 114.2),
    ("oc-southeast", -33.9, 151.2),
];

/// The coordinates of a known region.
pub fn region_geo(region: &str) -> Option<Geo> {
    KNOWN_REGIONS.iter().find(|(name, _, _)| *name == region).map(|(_, lat, lon)| Geo::from_degrees(*lat, *lon))
}

/// A node's lease as the registry holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLease {
    pub id: String,
    pub region: String,
    pub url: String,
    pub capacity: u32,
    pub load: u32,
    pub draining: bool,
    /// Sessions the edge placed there since the last heartbeat (heartbeats report the node's own count).
    #[serde(default)]
    pub pending: u32,
    pub last_heartbeat: Timestamp,
    pub expires_at: Timestamp,
    /// The `iat` (seconds) of the last heartbeat's token, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<u64>,
}

impl NodeLease {
    /// The node as handed to clients.
    pub fn info(&self) -> NodeInfo {
        NodeInfo { id: self.id.clone(), region: self.region.clone(), url: self.url.clone() }
    }

    fn used(&self) -> u32 {
        self.load.saturating_add(self.pending)
    }

    fn has_room(&self) -> bool {
        !self.draining && self.used() < self.capacity
    }

    /// Load as a fraction of capacity, in millis (for ordering).
    fn load_milli(&self) -> u64 {
        u64::from(self.used()) * 1000 / u64::from(self.capacity.max(1))
    }
}

/// Where a client is, as far as the edge knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientLocation {
    /// A region the client asked for (`media.join {region}`).
    pub region: Option<String>,
    /// Coordinates from Cloudflare's request metadata.
    pub geo: Option<Geo>,
}

/// A room placed on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// `{tenant}/{room}`.
    pub room: String,
    pub node: String,
    pub since: Timestamp,
}

impl Placement {
    /// Whether an admin with `identity` may see this placement: the room is of the admin's tenant and among
    /// the token's rooms. Placements name rooms, so `GET /v1/nodes` shows each tenant only its own.
    pub fn visible_to(&self, identity: &Identity) -> bool {
        let Some((tenant, room)) = self.room.split_once('/') else { return false };
        tenant == identity.tenant.as_str() && RoomId::parse(room).is_ok_and(|room| identity.may_enter(&room))
    }
}

/// The registry: leases and placements.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    pub ttl_ms: u64,
    nodes: BTreeMap<String, NodeLease>,
    placements: BTreeMap<String, Placement>,
    /// Nodes whose lease a drain ended, by id: kept while a heartbeat token issued before the drain could
    /// still verify ([`DRAIN_MEMORY_MS`]), so that a stale heartbeat cannot bring a drained node back.
    drained: BTreeMap<String, Drained>,
}

/// How long a drain is remembered: the longest a service token stays valid, skew included.
pub const DRAIN_MEMORY_MS: u64 = (crate::auth::MAX_SERVICE_TOKEN_SECS + crate::auth::SERVICE_SKEW_SECS) * 1000;

/// A node whose lease its drain ended, remembered for [`DRAIN_MEMORY_MS`] (stored by the adapter).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drained {
    pub id: String,
    /// The `iat` (seconds) of the drain's last heartbeat.
    pub issued_at: u64,
    pub ended_at: Timestamp,
}

/// What changed when leases ran out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub nodes: Vec<NodeLease>,
    /// Rooms that were placed on those nodes (now unplaced).
    pub rooms: Vec<Placement>,
    /// Drains now remembered (of those nodes), and the ids of drains forgotten ([`DRAIN_MEMORY_MS`]).
    pub drained: Vec<Drained>,
    pub forgotten_drains: Vec<String>,
}

impl Registry {
    /// An empty registry with lease length `ttl_ms`.
    pub fn new(ttl_ms: u64) -> Self {
        Registry { ttl_ms, ..Registry::default() }
    }

    /// A registry rebuilt from stored leases, placements and drains.
    pub fn restore(ttl_ms: u64, nodes: Vec<NodeLease>, placements: Vec<Placement>, drained: Vec<Drained>) -> Self {
        Registry {
            ttl_ms,
            nodes: nodes.into_iter().map(|n| (n.id.clone(), n)).collect(),
            placements: placements.into_iter().map(|p| (p.room.clone(), p)).collect(),
            drained: drained.into_iter().map(|d| (d.id.clone(), d)).collect(),
        }
    }

    /// Renews (or creates) the lease of the heartbeat's node. `subject` and `issued_at` are the verified
    /// token's `sub` and `iat`. After a drain (the lease holds a draining heartbeat, or a drain ended it), a
    /// heartbeat issued before it, or in its second without draining, is a stale retry and is refused: it
    /// would bring a node that is shutting down back into placement. Other heartbeats are not ordered (an
    /// out-of-date load is corrected by the next one, and a node whose clock stepped back is not locked out).
    pub fn heartbeat(
        &mut self,
        subject: &str,
        issued_at: Option<u64>,
        hb: &NodeHeartbeat,
        now: Timestamp,
    ) -> Result<(NodeLease, HeartbeatReply), ApiError> {
        let bad = |m: String| ApiError::new(ErrorCode::BadRequest, m);
        if subject == crate::media::EDGE_SUBJECT {
            // The edge's control token is signed with the same secret: replayed here, it must not register a
            // node called "edge" (whose URL would then receive rooms' media).
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("node id \"{subject}\" is reserved for the edge's control token; heartbeats need a node token"),
            ));
        }
        if hb.id != subject {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("heartbeat for node \"{}\" signed for \"{subject}\"", hb.id),
            ));
        }
        NodeId::parse(&hb.id).map_err(|e| bad(format!("id: {e}")))?;
        crate::ids::Region::parse(&hb.region).map_err(|e| bad(format!("region: {e}")))?;
        if !(hb.url.starts_with("http://") || hb.url.starts_with("https://")) || hb.url.len() > 512 {
            return Err(bad("url must be an http:// or https:// URL of at most 512 characters".into()));
        }
        if let Some(problem) = base_url_problem(&hb.url) {
            // The edge appends `/v1/control` and clients `/v1/sessions`: anything but a base URL would break
            // both without an error anyone sees.
            return Err(bad(format!("url {:?} is not a base URL: {problem}", hb.url)));
        }
        if hb.capacity == 0 {
            return Err(bad("capacity must be at least 1".into()));
        }
        let drain = match self.nodes.get(&hb.id) {
            Some(lease) => lease.issued_at.filter(|_| lease.draining),
            None => self.drained.get(&hb.id).map(|d| d.issued_at),
        };
        if let (Some(issued), Some(drain)) = (issued_at, drain) {
            if issued < drain || (issued == drain && !hb.draining) {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "stale heartbeat: issued at {issued}, not after the node's drain (issued at {drain}); \
                         ignored"
                    ),
                ));
            }
        }
        let last = self.nodes.get(&hb.id).and_then(|lease| lease.issued_at);
        let url = hb.url.trim_end_matches('/');
        let elsewhere = |live: &&NodeLease| live.expires_at > now && comparable_url(&live.url) != comparable_url(url);
        if let Some(live) = self.nodes.get(&hb.id).filter(elsewhere) {
            // Two processes with one id would flip the lease between their URLs on every heartbeat, and the
            // rooms placed on it between two nodes.
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "node id \"{}\" is registered at {} (its lease runs out in {} s unless it heartbeats); give \
                     each node its own id, or stop the other one first",
                    hb.id,
                    live.url,
                    live.expires_at.since(now).div_ceil(1000)
                ),
            ));
        }
        let lease = NodeLease {
            id: hb.id.clone(),
            region: hb.region.clone(),
            url: url.to_owned(),
            capacity: hb.capacity,
            load: hb.load,
            draining: hb.draining,
            pending: 0,
            last_heartbeat: now,
            expires_at: if hb.draining && hb.load == 0 { now } else { now.plus_ms(self.ttl_ms) },
            issued_at: issued_at.or(last),
        };
        self.drained.remove(&lease.id);
        self.nodes.insert(lease.id.clone(), lease.clone());
        Ok((lease, HeartbeatReply { ttl_ms: self.ttl_ms }))
    }

    /// Removes every lease that ran out at `now`, and the placements on those nodes.
    pub fn expire(&mut self, now: Timestamp) -> Expired {
        let dead: Vec<String> = self.nodes.values().filter(|n| n.expires_at <= now).map(|n| n.id.clone()).collect();
        let mut expired = Expired::default();
        let forgotten: Vec<String> =
            self.drained.values().filter(|d| now.since(d.ended_at) >= DRAIN_MEMORY_MS).map(|d| d.id.clone()).collect();
        for id in &forgotten {
            self.drained.remove(id);
        }
        expired.forgotten_drains = forgotten;
        for id in dead {
            if let Some(node) = self.nodes.remove(&id) {
                if let Some(issued_at) = node.issued_at.filter(|_| node.draining) {
                    let drain = Drained { id: node.id.clone(), issued_at, ended_at: now };
                    self.drained.insert(drain.id.clone(), drain.clone());
                    expired.drained.push(drain);
                }
                expired.nodes.push(node);
            }
            let rooms: Vec<String> =
                self.placements.values().filter(|p| p.node == id).map(|p| p.room.clone()).collect();
            for room in rooms {
                if let Some(p) = self.placements.remove(&room) {
                    expired.rooms.push(p);
                }
            }
        }
        expired
    }

    /// When the next lease runs out.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.nodes.values().map(|n| n.expires_at).min()
    }

    /// The live nodes, by id.
    pub fn nodes(&self) -> Vec<NodeLease> {
        self.nodes.values().cloned().collect()
    }

    /// The placements, by room.
    pub fn placements(&self) -> Vec<Placement> {
        self.placements.values().cloned().collect()
    }

    /// The node for one session of `room`: [`Registry::place_sessions`] with one.
    pub fn place(
        &mut self,
        room: &str,
        client: &ClientLocation,
        now: Timestamp,
    ) -> Result<(NodeLease, bool), ApiError> {
        self.place_sessions(room, client, 1, now)
    }

    /// The node for `sessions` new sessions of `room` (a class's `media.join`s answered together): its
    /// current node while that lives, else a new placement near `client`. Each session counts as pending on
    /// the node until its next heartbeat reports the real load, so a node filling up with the classes already
    /// on it is not given more rooms meanwhile. Returns the lease and whether the placement is new.
    pub fn place_sessions(
        &mut self,
        room: &str,
        client: &ClientLocation,
        sessions: u32,
        now: Timestamp,
    ) -> Result<(NodeLease, bool), ApiError> {
        let current = self.placements.get(room).map(|p| p.node.clone());
        if let Some(node) = current.and_then(|id| self.nodes.get_mut(&id)).filter(|n| n.expires_at > now) {
            // The room stays where it is (a class on one node), even on a full one: the node refuses what
            // it cannot take, and the heartbeat corrects the estimate.
            node.pending = node.pending.saturating_add(sessions);
            return Ok((node.clone(), false));
        }
        let chosen = choose(self.nodes.values().filter(|n| n.expires_at > now), client).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unavailable,
                "no media node has room right now; retry in a few seconds (operators: add nodes or capacity)",
            )
        })?;
        let id = chosen.id.clone();
        self.placements.insert(room.to_owned(), Placement { room: room.to_owned(), node: id.clone(), since: now });
        let node = self.nodes.get_mut(&id).map(|n| {
            n.pending = n.pending.saturating_add(sessions);
            n.clone()
        });
        node.map(|n| (n, true)).ok_or_else(|| ApiError::new(ErrorCode::Internal, "chosen node vanished"))
    }

    /// Forgets a room's placement (the room ended).
    pub fn release(&mut self, room: &str) -> Option<Placement> {
        self.placements.remove(room)
    }
}

/// Picks a node for a client among `nodes` (see the module docs for the rule).
pub fn choose<'a>(nodes: impl Iterator<Item = &'a NodeLease>, client: &ClientLocation) -> Option<&'a NodeLease> {
    let open: Vec<&NodeLease> = nodes.filter(|n| n.has_room()).collect();
    let least_loaded =
        |candidates: Vec<&'a NodeLease>| candidates.into_iter().min_by_key(|n| (n.load_milli(), n.id.clone()));
    if let Some(region) = &client.region {
        let here: Vec<&NodeLease> = open.iter().copied().filter(|n| &n.region == region).collect();
        if !here.is_empty() {
            return least_loaded(here);
        }
    }
    let origin = client.region.as_deref().and_then(region_geo).or(client.geo);
    let Some(origin) = origin else {
        return least_loaded(open);
    };
    // Nearest region first; regions without known coordinates come last.
    let distance = |n: &NodeLease| region_geo(&n.region).map(|g| g.distance_km(origin)).unwrap_or(f64::INFINITY);
    let nearest = open.iter().map(|n| distance(n)).fold(f64::INFINITY, f64::min);
    if nearest.is_infinite() {
        // Only regions of unknown place have room: none is nearer than another.
        return least_loaded(open);
    }
    let region = open.iter().find(|n| distance(n) == nearest).map(|n| n.region.clone())?;
    least_loaded(open.into_iter().filter(|n| n.region == region).collect())
}

/// Why `url` (starting with `http://` or `https://`) cannot be a node's base URL, if it cannot: paths are
/// appended to it, so it needs a host and may not have a query, fragment, user info or whitespace.
fn base_url_problem(url: &str) -> Option<&'static str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace")
    } else if url.contains(['?', '#']) {
        Some("it has a query or fragment")
    } else if authority.contains('@') {
        Some("it has user info")
    } else if authority.is_empty() || authority.starts_with(':') {
        Some("it has no host")
    } else {
        None
    }
}

/// A node URL as compared between heartbeats: scheme and host in lower case, without a default port or a
/// trailing slash (`HTTPS://Media.example:443/` is the node at `https://media.example`).
fn comparable_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let mut authority = authority.to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    if authority.ends_with(default_port) {
        authority.truncate(authority.len() - default_port.len());
    }
    if path.is_empty() {
        format!("{scheme}://{authority}")
    } else {
        format!("{scheme}://{authority}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(id: &str, region: &str, capacity: u32, load: u32) -> NodeHeartbeat {
        NodeHeartbeat {
            id: id.into(),
            region: region.into(),
            url: format!("http://{id}.example"),
            capacity,
            load,
            draining: false,
        }
    }

    fn registry(nodes: &[NodeHeartbeat]) -> Registry {
        let mut r = Registry::new(15_000);
        for n in nodes {
            r.heartbeat(&n.id, None, n, Timestamp(0)).unwrap();
        }
        r
    }

    fn admin(tenant: &str, rooms: Option<&[&str]>) -> Identity {
        Identity {
            user: crate::ids::UserId::parse("ops").unwrap(),
            name: "Ops".into(),
            role: crate::protocol::Role::Admin,
            tenant: crate::ids::TenantId::parse(tenant).unwrap(),
            rooms: rooms.map(|rooms| rooms.iter().map(|r| RoomId::parse(r).unwrap()).collect()),
            perms: Default::default(),
            exp: u64::MAX,
        }
    }

    #[test]
    fn an_admin_sees_only_the_placements_of_its_tenant_and_rooms() {
        let placed = |room: &str| Placement { room: room.into(), node: "n1".into(), since: Timestamp(0) };
        let a = admin("acme", None);
        assert!(placed("acme/math").visible_to(&a));
        assert!(!placed("globex/math").visible_to(&a), "another tenant's room");
        assert!(!placed("acme-labs/math").visible_to(&a), "a tenant whose name starts like ours");
        assert!(!placed("acme").visible_to(&a), "not an address");
        let math_only = admin("acme", Some(&["math"]));
        assert!(placed("acme/math").visible_to(&math_only));
        assert!(!placed("acme/art").visible_to(&math_only), "outside the token's rooms");
    }

    fn at(region: &str) -> ClientLocation {
        ClientLocation { region: Some(region.into()), geo: None }
    }

    #[test]
    fn the_clients_region_wins_then_the_least_loaded_node() {
        let mut r = registry(&[hb("eu1", "eu-west", 10, 5), hb("eu2", "eu-west", 10, 1), hb("us1", "us-east", 10, 0)]);
        let (node, new) = r.place("t/a", &at("eu-west"), Timestamp(1)).unwrap();
        assert_eq!((node.id.as_str(), new), ("eu2", true));
        // The room stays where it is.
        let (again, new) = r.place("t/a", &at("us-east"), Timestamp(2)).unwrap();
        assert_eq!((again.id.as_str(), new), ("eu2", false));
    }

    #[test]
    fn a_full_or_draining_region_falls_back_to_the_nearest_with_capacity() {
        let mut r =
            registry(&[hb("eu1", "eu-west", 1, 1), hb("de1", "eu-central", 5, 0), hb("ap1", "ap-southeast", 5, 0)]);
        assert_eq!(r.place("t/a", &at("eu-west"), Timestamp(1)).unwrap().0.id, "de1");
        let mut drain = hb("de1", "eu-central", 5, 1);
        drain.draining = true;
        r.heartbeat("de1", None, &drain, Timestamp(2)).unwrap();
        assert_eq!(r.place("t/b", &at("eu-west"), Timestamp(3)).unwrap().0.id, "ap1");
        // A room already on a draining node stays there while the node has sessions.
        assert_eq!(r.place("t/a", &at("eu-west"), Timestamp(4)).unwrap().0.id, "de1");
    }

    #[test]
    fn a_drained_node_is_dropped_with_its_last_heartbeat_and_its_rooms_move_at_once() {
        let mut r = registry(&[hb("de1", "eu-central", 5, 0), hb("ap1", "ap-southeast", 5, 0)]);
        assert_eq!(r.place("t/a", &at("eu-central"), Timestamp(1)).unwrap().0.id, "de1");
        let mut last = hb("de1", "eu-central", 5, 0);
        last.draining = true;
        r.heartbeat("de1", None, &last, Timestamp(2)).unwrap();
        assert_eq!(r.next_expiry(), Some(Timestamp(2)), "the lease ends now, not {} ms later", r.ttl_ms);
        let expired = r.expire(Timestamp(2));
        assert_eq!(expired.nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["de1"]);
        assert!(expired.nodes.iter().all(|n| n.draining), "reported as drained, not lost");
        assert_eq!(expired.rooms.iter().map(|p| p.room.as_str()).collect::<Vec<_>>(), ["t/a"]);
        assert_eq!(r.place("t/a", &at("eu-central"), Timestamp(3)).unwrap().0.id, "ap1");
    }

    /// A class joining counts every session on its node, not one per room: a small node that its classes have
    /// filled since its last heartbeat gets no new room (it would refuse its students with 503).
    #[test]
    fn every_joining_session_counts_on_its_node_until_the_next_heartbeat() {
        let mut r = registry(&[hb("small", "eu-west", 30, 0), hb("big", "eu-west", 1_000, 500)]);
        let (node, new) = r.place_sessions("t/a", &at("eu-west"), 20, Timestamp(1)).unwrap();
        assert_eq!((node.id.as_str(), new, node.pending), ("small", true, 20), "the emptier node, by share");
        // The rest of the class, folded into one call, stays with its room and counts too.
        let (node, new) = r.place_sessions("t/a", &at("eu-west"), 10, Timestamp(2)).unwrap();
        assert_eq!((node.id.as_str(), new, node.pending), ("small", false, 30));
        assert_eq!(r.place("t/b", &at("eu-west"), Timestamp(3)).unwrap().0.id, "big", "small is full");
        // The node's heartbeat reports what it really has (some joins failed or left), and replaces the estimate.
        r.heartbeat("small", None, &hb("small", "eu-west", 30, 12), Timestamp(4)).unwrap();
        assert_eq!(r.place("t/c", &at("eu-west"), Timestamp(5)).unwrap().0.id, "small");
    }

    #[test]
    fn among_regions_of_unknown_place_the_least_loaded_node_is_chosen() {
        let mut r = registry(&[hb("a1", "lab-a", 10, 9), hb("b1", "lab-b", 10, 1)]);
        let paris = ClientLocation { region: None, geo: Some(Geo::from_degrees(48.9, 2.35)) };
        assert_eq!(r.place("t/a", &paris, Timestamp(1)).unwrap().0.id, "b1", "not the first region by id");
    }

    /// A heartbeat retried late may arrive after the drain that followed it; accepting it would give a node
    /// that is shutting down a fresh lease and new rooms. Outside drains heartbeats are not ordered.
    #[test]
    fn a_heartbeat_issued_before_a_drain_is_refused_even_after_the_lease_ended() {
        let mut r = Registry::new(15_000);
        let at_secs = |secs: u64| Some(1_800_000_000 + secs);
        let draining = |load| NodeHeartbeat { draining: true, ..hb("de1", "eu-central", 5, load) };
        r.heartbeat("de1", at_secs(10), &hb("de1", "eu-central", 5, 0), Timestamp(1)).unwrap();
        assert!(
            r.heartbeat("de1", at_secs(4), &hb("de1", "eu-central", 5, 1), Timestamp(2)).is_ok(),
            "no drain yet: a node whose clock stepped back is not locked out"
        );
        r.heartbeat("de1", at_secs(12), &draining(2), Timestamp(3)).unwrap();
        for (secs, what) in [(11, "before the drain"), (12, "in the drain's second, not draining")] {
            let stale = r.heartbeat("de1", at_secs(secs), &hb("de1", "eu-central", 5, 2), Timestamp(4)).unwrap_err();
            assert_eq!(stale.code, ErrorCode::Conflict, "{what}");
            assert!(stale.message.starts_with("stale heartbeat: issued at"), "{}", stale.message);
        }
        assert!(r.heartbeat("de1", at_secs(12), &draining(0), Timestamp(5)).is_ok(), "the drain's last, same second");
        let expired = r.expire(Timestamp(5));
        assert_eq!(expired.drained.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["de1"], "to be stored");
        let revived = r.heartbeat("de1", at_secs(11), &hb("de1", "eu-central", 5, 0), Timestamp(6));
        assert_eq!(revived.map(|_| ()).unwrap_err().code, ErrorCode::Conflict, "the drain outlives its lease");
        assert!(r.nodes().is_empty());
        // Stored and reloaded, the drain still holds.
        let mut reloaded = Registry::restore(15_000, Vec::new(), Vec::new(), expired.drained.clone());
        assert!(reloaded.heartbeat("de1", at_secs(11), &hb("de1", "eu-central", 5, 0), Timestamp(6)).is_err());
        // The node started again: its newer heartbeats register it.
        assert!(reloaded.heartbeat("de1", at_secs(40), &hb("de1", "eu-central", 5, 0), Timestamp(7)).is_ok());
        // A drain is forgotten once no token issued before it could still verify.
        let forgotten = r.expire(Timestamp(5 + DRAIN_MEMORY_MS));
        assert_eq!(forgotten.forgotten_drains, ["de1"], "to be deleted from storage");
        assert!(r.heartbeat("de1", at_secs(11), &hb("de1", "eu-central", 5, 0), Timestamp(6)).is_ok());
    }

    #[test]
    fn coordinates_pick_the_nearest_region() {
        let mut r = registry(&[hb("us1", "us-west", 5, 0), hb("eu1", "eu-central", 5, 0)]);
        let paris = ClientLocation { region: None, geo: Some(Geo::from_degrees(48.9, 2.35)) };
        assert_eq!(r.place("t/a", &paris, Timestamp(1)).unwrap().0.id, "eu1");
        let la = ClientLocation { region: None, geo: Some(Geo::from_degrees(34.0, -118.2)) };
        assert_eq!(r.place("t/b", &la, Timestamp(1)).unwrap().0.id, "us1");
    }

    #[test]
    fn placements_count_against_capacity_until_the_next_heartbeat() {
        let mut r = registry(&[hb("a", "eu-west", 1, 0), hb("b", "eu-west", 1, 0)]);
        let first = r.place("t/1", &at("eu-west"), Timestamp(1)).unwrap().0.id;
        let second = r.place("t/2", &at("eu-west"), Timestamp(1)).unwrap().0.id;
        assert_ne!(first, second);
        assert_eq!(r.place("t/3", &at("eu-west"), Timestamp(1)).unwrap_err().code, ErrorCode::Unavailable);
    }

    #[test]
    fn expired_leases_unplace_their_rooms() {
        let mut r = registry(&[hb("a", "eu-west", 5, 0), hb("b", "us-east", 5, 0)]);
        r.place("t/1", &at("eu-west"), Timestamp(1)).unwrap();
        r.heartbeat("b", None, &hb("b", "us-east", 5, 0), Timestamp(10_000)).unwrap();
        assert_eq!(r.next_expiry(), Some(Timestamp(15_000)));
        let expired = r.expire(Timestamp(15_000));
        assert_eq!(expired.nodes.len(), 1);
        assert_eq!(expired.rooms[0].room, "t/1");
        let (node, new) = r.place("t/1", &at("eu-west"), Timestamp(15_001)).unwrap();
        assert_eq!((node.id.as_str(), new), ("b", true));
    }

    #[test]
    fn heartbeats_are_validated() {
        let mut r = Registry::new(1000);
        assert_eq!(
            r.heartbeat("other", None, &hb("a", "eu-west", 1, 0), Timestamp(0)).unwrap_err().code,
            ErrorCode::Forbidden
        );
        let edge = r.heartbeat("edge", None, &hb("edge", "eu-west", 1, 0), Timestamp(0)).unwrap_err();
        assert_eq!(edge.code, ErrorCode::Forbidden, "the edge's control token registers no node: {edge:?}");
        assert!(edge.message.contains("reserved"), "{edge:?}");
        assert!(r.nodes.is_empty());
        let mut bad = hb("a", "eu west", 1, 0);
        assert_eq!(r.heartbeat("a", None, &bad, Timestamp(0)).unwrap_err().code, ErrorCode::BadRequest);
        bad = hb("a", "eu-west", 0, 0);
        assert!(r.heartbeat("a", None, &bad, Timestamp(0)).is_err());
        bad = hb("a", "eu-west", 1, 0);
        bad.url = "ftp://x".into();
        assert!(r.heartbeat("a", None, &bad, Timestamp(0)).is_err());
        for (url, problem) in [
            ("https://media.example?x=1", "query or fragment"),
            ("https://media.example/#top", "query or fragment"),
            ("https://ops:pw@media.example", "user info"),
            ("https://media.example/ x", "whitespace"),
            ("https:///v1", "no host"),
            ("http://:7000", "no host"),
        ] {
            bad.url = url.into();
            let refused = r.heartbeat("a", None, &bad, Timestamp(0)).unwrap_err();
            assert!(refused.message.contains(problem), "{url}: {}", refused.message);
        }
        for url in ["https://media.example", "https://media.example:8443/sfu/", "http://127.0.0.1:7000"] {
            bad.url = url.into();
            assert!(r.heartbeat("a", None, &bad, Timestamp(0)).is_ok(), "{url}");
            r = Registry::new(1000);
        }
    }

    #[test]
    fn a_second_process_with_a_live_nodes_id_is_refused_until_the_lease_ends() {
        let mut r = Registry::new(1000);
        let first = hb("a", "eu-west", 1, 0);
        r.heartbeat("a", None, &first, Timestamp(0)).unwrap();
        let mut moved = first.clone();
        moved.url = "http://elsewhere:9000".into();
        let err = r.heartbeat("a", None, &moved, Timestamp(400)).unwrap_err();
        assert_eq!(err.code, ErrorCode::Conflict, "{err:?}");
        assert!(err.message.contains(&first.url) && err.message.contains("own id"), "{err:?}");
        assert_eq!(r.nodes.get("a").map(|n| n.url.as_str()), Some(first.url.as_str()), "the lease keeps its URL");
        let mut same = first.clone();
        same.url.push('/');
        assert!(r.heartbeat("a", None, &same, Timestamp(500)).is_ok(), "the same node, a trailing slash aside, renews");
        same.url = first.url.replace(".example", ".EXAMPLE:80");
        assert!(r.heartbeat("a", None, &same, Timestamp(500)).is_ok(), "nor do case and a default port: {}", same.url);
        assert_eq!(comparable_url("https://Media.example:443/"), "https://media.example");
        assert_ne!(comparable_url("https://media.example:8443"), "https://media.example");
        assert!(r.heartbeat("a", None, &moved, Timestamp(1_499)).is_err());
        let lease = r.heartbeat("a", None, &moved, Timestamp(1_500)).unwrap().0;
        assert_eq!(lease.url, moved.url, "once the old lease ran out, the id may move");
    }

    #[test]
    fn distances_are_plausible() {
        let paris = Geo::from_degrees(48.86, 2.35);
        let london = Geo::from_degrees(51.5, -0.12);
        let d = paris.distance_km(london);
        assert!((330.0..360.0).contains(&d), "{d}");
    }
}
