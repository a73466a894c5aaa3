//! Which session an incoming datagram belongs to.
//!
//! All sessions share one UDP socket, so every datagram has to be routed to one `Rtc`. A linear
//! `rtc.accepts()` scan costs O(sessions) per packet; instead:
//!
//! - **STUN** binding requests carry `USERNAME = "<node ufrag>:<client ufrag>"`. The node ufrag is unique per
//!   session, so STUN is always routed by it. Routing teaches nothing: the session's `Rtc` checks the
//!   request's MESSAGE-INTEGRITY (the ICE password only the client has), and only when it answers with a
//!   binding *success* does the core `Demux::confirm` the source address for that session (the client's
//!   ICE candidate, usually peer-reflexive since the node is ICE-lite).
//! - **Everything else** (DTLS, SRTP, SRTCP) is routed by the source address learned that way: one hash lookup.
//!
//! Invariants: an address maps to at most one session; only a verified request moves an address, so a spoofed
//! packet cannot steal a live client's address, while an address a NAT handed to another client (a rebinding,
//! a reused port behind a school's NAT) follows that client's first verified request instead of staying with
//! a stale session — once the session that holds it has not confirmed it for `ADDRESS_HOLD`: a live
//! client re-confirms its address with every consent check (RFC 7675: about every 5 s), so a participant
//! who spoofs its victim's address on a request signed with its *own* credentials cannot take it; a session keeps at most `MAX_ADDRS_PER_SESSION` addresses (the oldest goes first); all of
//! a session's entries go when the session goes.

use super::ids::SessionId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// STUN message attribute type of USERNAME (RFC 8489 §14.3).
const STUN_ATTR_USERNAME: u16 = 0x0006;
/// The STUN magic cookie (RFC 8489 §5).
const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const STUN_HEADER_LEN: usize = 20;
/// STUN Binding Success Response (RFC 8489 §5: method 0x001, class success).
const STUN_BINDING_SUCCESS: [u8; 2] = [0x01, 0x01];

/// Addresses one session may be reached from at once (ICE candidates, NAT rebindings).
pub(crate) const MAX_ADDRS_PER_SESSION: usize = 8;

/// How long an address stays with the session that last confirmed it before another session's verified
/// request may take it: two consent-check intervals, so a live client never loses its address.
pub(crate) const ADDRESS_HOLD: Duration = Duration::from_secs(12);

/// Which session an address reaches, and when that session last confirmed it.
#[derive(Clone, Copy, Debug)]
struct AddrRoute {
    session: SessionId,
    confirmed_at: Instant,
}

/// The routing table from datagram to session.
#[derive(Debug, Default)]
pub(crate) struct Demux {
    by_addr: HashMap<SocketAddr, AddrRoute>,
    by_ufrag: HashMap<String, SessionId>,
    addrs_of: HashMap<SessionId, Vec<SocketAddr>>,
}

impl Demux {
    /// Registers a session by its local ICE ufrag.
    pub(crate) fn register(&mut self, session: SessionId, local_ufrag: &str) {
        self.by_ufrag.insert(local_ufrag.to_owned(), session);
        self.addrs_of.entry(session).or_default();
    }

    /// Forgets a session and every address learned for it.
    pub(crate) fn remove(&mut self, session: SessionId, local_ufrag: &str) {
        self.by_ufrag.remove(local_ufrag);
        for addr in self.addrs_of.remove(&session).unwrap_or_default() {
            if self.by_addr.get(&addr).is_some_and(|r| r.session == session) {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// The session `datagram` from `source` belongs to: STUN by its ufrag, the rest by the learned address.
    pub(crate) fn route(&self, source: SocketAddr, datagram: &[u8]) -> Option<SessionId> {
        if let Some(ufrag) = stun_local_ufrag(datagram) {
            return self.by_ufrag.get(ufrag).copied();
        }
        self.by_addr.get(&source).map(|r| r.session)
    }

    /// `session` answered a binding request from `source` with success (its integrity checked out): `source`
    /// now reaches `session` — unless another session confirmed it within [`ADDRESS_HOLD`] (then nothing
    /// moves). Returns whether `source` reaches `session` now.
    pub(crate) fn confirm(&mut self, source: SocketAddr, session: SessionId, now: Instant) -> bool {
        if !self.addrs_of.contains_key(&session) {
            return false;
        }
        let route = AddrRoute { session, confirmed_at: now };
        match self.by_addr.get_mut(&source) {
            Some(held) if held.session == session => {
                held.confirmed_at = now;
                // Newest last, so the bound below drops the address confirmed longest ago.
                if let Some(addrs) = self.addrs_of.get_mut(&session) {
                    addrs.retain(|a| *a != source);
                    addrs.push(source);
                }
                return true;
            }
            Some(held) if now.saturating_duration_since(held.confirmed_at) < ADDRESS_HOLD => return false,
            Some(held) => {
                let previous = held.session;
                *held = route;
                if let Some(addrs) = self.addrs_of.get_mut(&previous) {
                    addrs.retain(|a| *a != source);
                }
            }
            None => {
                self.by_addr.insert(source, route);
            }
        }
        // Newest last, so the bound below drops the address confirmed longest ago, never the one in use.
        let addrs = self.addrs_of.entry(session).or_default();
        addrs.push(source);
        if addrs.len() > MAX_ADDRS_PER_SESSION {
            let oldest = addrs.remove(0);
            if self.by_addr.get(&oldest).is_some_and(|r| r.session == session) {
                self.by_addr.remove(&oldest);
            }
        }
        true
    }

    /// Number of learned addresses.
    #[cfg(test)]
    pub(crate) fn address_count(&self) -> usize {
        self.by_addr.len()
    }
}

/// Whether `datagram` is a STUN Binding Success Response.
pub(crate) fn is_binding_success(datagram: &[u8]) -> bool {
    is_stun(datagram) && datagram.get(..2) == Some(&STUN_BINDING_SUCCESS[..])
}

/// Whether `datagram` looks like a STUN message (RFC 7983 demultiplexing plus the magic cookie).
pub(crate) fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= STUN_HEADER_LEN
        && datagram.first().is_some_and(|b| *b < 2)
        && datagram.get(4..8) == Some(&STUN_MAGIC_COOKIE[..])
}

/// The local (receiving side's) ufrag from a STUN message's USERNAME (`"<local>:<remote>"`), if it has one.
pub(crate) fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    if !is_stun(datagram) {
        return None;
    }
    let declared_len = usize::from(u16::from_be_bytes([*datagram.get(2)?, *datagram.get(3)?]));
    let end = STUN_HEADER_LEN.checked_add(declared_len)?.min(datagram.len());
    let mut at = STUN_HEADER_LEN;
    while at + 4 <= end {
        let attr_type = u16::from_be_bytes([*datagram.get(at)?, *datagram.get(at + 1)?]);
        let attr_len = usize::from(u16::from_be_bytes([*datagram.get(at + 2)?, *datagram.get(at + 3)?]));
        let value = datagram.get(at + 4..at + 4 + attr_len)?;
        if attr_type == STUN_ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split_once(':').map(|(local, _)| local);
        }
        // Attributes are padded to a multiple of four bytes.
        at += 4 + attr_len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&0x0024u16.to_be_bytes()); // PRIORITY, before USERNAME
        attrs.extend_from_slice(&4u16.to_be_bytes());
        attrs.extend_from_slice(&[0, 0, 0, 1]);
        attrs.extend_from_slice(&STUN_ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        msg.extend_from_slice(&STUN_MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attrs);
        msg
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    const RTP: [u8; 12] = [0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 42];

    #[test]
    fn the_local_ufrag_comes_from_the_username_attribute() {
        assert_eq!(stun_local_ufrag(&stun_request("node1:client")), Some("node1"));
        assert_eq!(stun_local_ufrag(&stun_request("abc:d")), Some("abc"));
        assert_eq!(stun_local_ufrag(&stun_request("no-colon")), None);
        assert_eq!(stun_local_ufrag(&RTP), None);
        // Truncated messages never panic.
        let msg = stun_request("node1:client");
        for len in 0..msg.len() {
            let _ = stun_local_ufrag(&msg[..len]);
        }
    }

    #[test]
    fn only_a_verified_request_teaches_an_address_and_media_follows_it() {
        let (a, b) = (SessionId::from_u64(1), SessionId::from_u64(2));
        let mut demux = Demux::default();
        let t0 = Instant::now();
        demux.register(a, "ufa");
        demux.register(b, "ufb");

        // Media from an unknown address goes nowhere.
        assert_eq!(demux.route(addr(1), &RTP), None);
        // STUN routes by ufrag but teaches nothing by itself (its integrity is not checked yet).
        assert_eq!(demux.route(addr(1), &stun_request("ufa:x")), Some(a));
        assert_eq!(demux.route(addr(1), &RTP), None);
        // The session answered with success: now media from there follows.
        demux.confirm(addr(1), a, t0);
        demux.confirm(addr(2), b, t0);
        assert_eq!(demux.route(addr(1), &RTP), Some(a));
        assert_eq!(demux.route(addr(2), &RTP), Some(b));
        // An unknown ufrag is not routed.
        assert_eq!(demux.route(addr(3), &stun_request("nope:z")), None);
        assert_eq!(demux.route(addr(3), &RTP), None);
    }

    #[test]
    fn a_verified_request_moves_an_address_and_removal_forgets_it() {
        let (a, b) = (SessionId::from_u64(1), SessionId::from_u64(2));
        let mut demux = Demux::default();
        let t0 = Instant::now();
        demux.register(a, "ufa");
        demux.register(b, "ufb");
        demux.confirm(addr(1), a, t0);
        // An unverified request for b from a's address goes to b (by ufrag) and moves nothing.
        assert_eq!(demux.route(addr(1), &stun_request("ufb:x")), Some(b));
        assert_eq!(demux.route(addr(1), &RTP), Some(a));
        // b verifies a request from a's address while a keeps confirming it (a live client; the request was
        // spoofed, signed with b's own credentials): the address stays with a.
        assert!(!demux.confirm(addr(1), b, t0 + ADDRESS_HOLD / 2));
        assert_eq!(demux.route(addr(1), &RTP), Some(a), "a live client's address is not taken");
        assert!(demux.confirm(addr(1), a, t0 + ADDRESS_HOLD / 2 + Duration::from_secs(5)), "a's consent check");
        assert!(!demux.confirm(addr(1), b, t0 + ADDRESS_HOLD + Duration::from_secs(1)), "held from a's last check");
        // a went quiet; the NAT gave its old address to b's client, whose request b verified: it follows b.
        let later = t0 + ADDRESS_HOLD * 2 + Duration::from_secs(6);
        assert!(demux.confirm(addr(1), b, later));
        assert_eq!(demux.route(addr(1), &RTP), Some(b));
        demux.remove(a, "ufa");
        assert_eq!(demux.route(addr(1), &RTP), Some(b), "a's removal does not take b's address");
        demux.remove(b, "ufb");
        assert_eq!(demux.route(addr(1), &RTP), None);
        assert_eq!(demux.address_count(), 0);
        demux.confirm(addr(1), b, t0);
        assert_eq!(demux.address_count(), 0, "a removed session learns nothing");
    }

    #[test]
    fn a_session_keeps_a_bounded_number_of_addresses() {
        let a = SessionId::from_u64(1);
        let mut demux = Demux::default();
        let t0 = Instant::now();
        demux.register(a, "ufa");
        for port in 0..(MAX_ADDRS_PER_SESSION as u16 + 5) {
            demux.confirm(addr(port), a, t0);
        }
        assert_eq!(demux.address_count(), MAX_ADDRS_PER_SESSION);
        assert_eq!(demux.route(addr(0), &RTP), None, "the oldest went first");
        assert_eq!(demux.route(addr(MAX_ADDRS_PER_SESSION as u16 + 4), &RTP), Some(a));
        // The address in use keeps being confirmed (consent checks), so it is never the one dropped.
        let in_use = addr(5);
        for port in 100..120 {
            demux.confirm(in_use, a, t0);
            demux.confirm(addr(port), a, t0);
            assert_eq!(demux.route(in_use, &RTP), Some(a), "the address in use survived a new one ({port})");
        }
        assert_eq!(demux.route(in_use, &RTP), Some(a));
        assert_eq!(demux.address_count(), MAX_ADDRS_PER_SESSION);
    }

    #[test]
    fn binding_success_is_told_from_requests() {
        let mut response = stun_request("ufa:x");
        assert!(!is_binding_success(&response));
        response[0] = 0x01;
        response[1] = 0x01;
        assert!(is_binding_success(&response));
        assert!(!is_binding_success(&RTP));
    }
}
