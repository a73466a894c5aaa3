//! The edge's memo of lasting admission refusals.
//!
//! A room refuses a connection for reasons that last: the user already holds the per-user connection limit,
//! is in a cooldown after being cut, or is banned for a while. Each refusal carries `retry_after`. A client
//! (or an attacker) that retries at once would wake the room object for every attempt — an HTTP request
//! into the object, a storage read, a response — only to be refused the same way. The Worker keeps this memo
//! per isolate: a refusal with `retry_after` is remembered for that long under `(room address, user)`, and
//! attempts in that time are answered from the memo without a subrequest.
//!
//! Invariants:
//! - an entry lives for the `retry_after` the room gave, but at most [`MAX_REMEMBER_S`]: the room may lift a
//!   refusal early (clearing the room wipes bans and cooldowns; a closed tab frees a connection slot), so
//!   the memo delays an admission by at most that much beyond the room's own answer, while still absorbing
//!   all but one attempt in every few seconds of a flood;
//! - a repeated refusal's `Retry-After` counts down to the time the room announced, not to the entry's end;
//! - the memo is bounded: at `capacity` entries, expired ones go first, then the one that ends soonest;
//! - it is a cache: losing it (a new isolate) only means the room answers again.

use crate::Timestamp;
use std::collections::HashMap;

/// Entries one isolate keeps at most.
pub const DEFAULT_CAPACITY: usize = 4096;

/// The longest a refusal is repeated without asking the room again, in seconds.
pub const MAX_REMEMBER_S: u64 = 5;

/// A remembered refusal: the response to repeat and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status of the room's answer.
    pub status: u16,
    /// The room's JSON body, repeated verbatim.
    pub body: String,
    /// When the memo stops repeating it (and asks the room again).
    pub until: Timestamp,
    /// When the room said the refusal ends.
    pub retry_at: Timestamp,
}

impl Refusal {
    /// Whole seconds until the room's announced end at `now`, at least 1 (for `Retry-After`).
    pub fn retry_after_s(&self, now: Timestamp) -> u64 {
        self.retry_at.since(now).div_ceil(1000).max(1)
    }
}

/// Refusals by `(room address, user)`.
#[derive(Debug)]
pub struct RefusalMemo {
    entries: HashMap<(String, String), Refusal>,
    capacity: usize,
}

impl Default for RefusalMemo {
    fn default() -> Self {
        RefusalMemo::new(DEFAULT_CAPACITY)
    }
}

impl RefusalMemo {
    /// An empty memo of at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        RefusalMemo { entries: HashMap::new(), capacity: capacity.max(1) }
    }

    /// The refusal that still applies to `user` in `room` at `now`; an expired one is dropped.
    pub fn check(&mut self, room: &str, user: &str, now: Timestamp) -> Option<Refusal> {
        let key = (room.to_owned(), user.to_owned());
        match self.entries.get(&key) {
            Some(refusal) if refusal.until > now => Some(refusal.clone()),
            Some(_) => {
                self.entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers a refusal of `retry_after_s` seconds for that long, at most [`MAX_REMEMBER_S`] (0 remembers
    /// nothing).
    pub fn remember(&mut self, room: &str, user: &str, status: u16, body: String, retry_after_s: u64, now: Timestamp) {
        if retry_after_s == 0 {
            return;
        }
        let key = (room.to_owned(), user.to_owned());
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, r| r.until > now);
            if self.entries.len() >= self.capacity {
                let soonest = self.entries.iter().min_by_key(|(_, r)| r.until).map(|(k, _)| k.clone());
                if let Some(soonest) = soonest {
                    self.entries.remove(&soonest);
                }
            }
        }
        let until = now.plus_ms(retry_after_s.min(MAX_REMEMBER_S) * 1000);
        let retry_at = now.plus_ms(retry_after_s.saturating_mul(1000));
        self.entries.insert(key, Refusal { status, body, until, retry_at });
    }

    /// Forgets what is remembered for `user` in `room` (the room admitted them after all).
    pub fn forget(&mut self, room: &str, user: &str) {
        self.entries.remove(&(room.to_owned(), user.to_owned()));
    }

    /// Entries held now (expired ones included until they are touched).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_applies_for_its_retry_after_and_no_longer() {
        let mut memo = RefusalMemo::default();
        memo.remember("t/r", "ann", 429, "{}".into(), 2, Timestamp(1_000));
        let hit = memo.check("t/r", "ann", Timestamp(1_500)).expect("remembered");
        assert_eq!((hit.status, hit.retry_after_s(Timestamp(1_500))), (429, 2));
        assert_eq!(hit.retry_after_s(Timestamp(2_999)), 1);
        assert!(memo.check("t/r", "ann", Timestamp(3_000)).is_none(), "expired at until");
        assert!(memo.is_empty(), "an expired entry is dropped when touched");
    }

    #[test]
    fn refusals_are_per_room_and_user() {
        let mut memo = RefusalMemo::default();
        memo.remember("t/r", "ann", 429, "{}".into(), 5, Timestamp(0));
        assert!(memo.check("t/r", "bob", Timestamp(1)).is_none());
        assert!(memo.check("t/other", "ann", Timestamp(1)).is_none());
        assert!(memo.check("u/r", "ann", Timestamp(1)).is_none());
        memo.forget("t/r", "ann");
        assert!(memo.check("t/r", "ann", Timestamp(1)).is_none());
    }

    #[test]
    fn a_long_refusal_is_repeated_for_a_few_seconds_then_asked_again() {
        let mut memo = RefusalMemo::default();
        // A ten-minute ban: repeated for MAX_REMEMBER_S, saying when the ban ends.
        memo.remember("t/r", "ann", 403, "{}".into(), 600, Timestamp(0));
        let hit = memo.check("t/r", "ann", Timestamp(1_000)).expect("remembered");
        assert_eq!(hit.retry_after_s(Timestamp(1_000)), 599);
        assert!(memo.check("t/r", "ann", Timestamp(MAX_REMEMBER_S * 1000)).is_none(), "the room is asked again");
    }

    #[test]
    fn zero_retry_after_is_not_remembered() {
        let mut memo = RefusalMemo::default();
        memo.remember("t/r", "ann", 429, "{}".into(), 0, Timestamp(0));
        assert!(memo.is_empty());
    }

    #[test]
    fn a_full_memo_drops_expired_entries_then_the_one_ending_soonest() {
        let mut memo = RefusalMemo::new(3);
        memo.remember("r", "a", 429, "a".into(), 1, Timestamp(0)); // until 1,000
        memo.remember("r", "b", 429, "b".into(), 4, Timestamp(0)); // until 4,000
        memo.remember("r", "c", 429, "c".into(), 3, Timestamp(0)); // until 3,000
                                                                   // At 2,000 "a" has expired: it makes room.
        memo.remember("r", "d", 429, "d".into(), 5, Timestamp(2_000));
        assert_eq!(memo.len(), 3);
        assert!(memo.check("r", "b", Timestamp(2_000)).is_some());
        // Nothing expired: the soonest ("c", until 3,000) goes.
        memo.remember("r", "e", 429, "e".into(), 5, Timestamp(2_000));
        assert_eq!(memo.len(), 3);
        assert!(memo.check("r", "c", Timestamp(2_000)).is_none());
        assert!(memo.check("r", "b", Timestamp(2_000)).is_some());
        // Refreshing a held key never evicts another.
        memo.remember("r", "e", 429, "e2".into(), 30, Timestamp(2_000));
        assert_eq!(memo.len(), 3);
        assert_eq!(memo.check("r", "e", Timestamp(2_000)).map(|r| r.body), Some("e2".to_owned()));
    }
}
