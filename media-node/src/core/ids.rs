//! Identifiers of the core: sessions and the tracks they publish.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use str0m::media::Mid;

/// One participant session (one `Rtc`, one WebRTC peer connection). Shown as 16 hex digits in URLs
/// (`/v1/sessions/{id}`); drawn at random so ids are not guessable from each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(u64);

impl SessionId {
    /// A fresh random id, distinct from `taken` ones (the caller checks membership).
    pub(crate) fn random(counter: u64) -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(counter);
        SessionId(hasher.finish())
    }

    /// Parses the 16-hex-digit form used in URLs.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(SessionId)
    }

    /// The raw value (for tests and logs).
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// An id from a raw value (tests and simulations).
    pub const fn from_u64(raw: u64) -> Self {
        SessionId(raw)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A published track: the session that publishes it and the publisher-side m-line (`mid`) it arrives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackKey {
    pub session: SessionId,
    pub mid: Mid,
}

impl fmt::Display for TrackKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.session, self.mid)
    }
}

/// Hashing for maps keyed by [`SessionId`]: the ids are drawn at random by the node, so their own bits are a good
/// hash (no attacker chooses them) and the per-packet lookups of the fan-out skip SipHash.
pub(crate) type IdHasher = BuildHasherDefault<IdHash>;

/// The [`Hasher`] of [`IdHasher`]: takes the last `u64` written (what `SessionId`'s derived `Hash` writes).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdHash(u64);

impl Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `SessionId`; anything else still hashes (FNV-1a), just not as fast.
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_round_trip_through_their_url_form() {
        let id = SessionId::random(7);
        assert_eq!(SessionId::parse(&id.to_string()), Some(id));
        assert_eq!(SessionId::parse("xyz"), None);
        assert_eq!(SessionId::parse("00000000000000zz"), None);
        assert_ne!(SessionId::random(1), SessionId::random(2));
    }

    #[test]
    fn the_id_hasher_keeps_a_session_ids_bits() {
        let id = SessionId::from_u64(0xdead_beef_0042);
        assert_eq!(IdHasher::default().hash_one(id), 0xdead_beef_0042);
        let mut map: std::collections::HashMap<SessionId, u8, IdHasher> = std::collections::HashMap::default();
        map.insert(id, 1);
        assert_eq!(map.get(&id), Some(&1));
    }
}
