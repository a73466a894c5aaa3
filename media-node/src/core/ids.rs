//! Identifiers of the core: sessions and the tracks they publish.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
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
}
