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
//! - an entry never outlives the `retry_after` the room gave, so the memo can only delay an admission by
//!   what the room itself announced (a user who closes a connection waits at most that long);
//! - the memo is bounded: at `capacity` entries, expired ones go first, then the one that ends soonest;
//! - it is a cache: losing it (a new isolate) only means the room answers again.

use crate::Timestamp;
use std::collections::HashMap;

/// Entries one isolate keeps at most.
pub const DEFAULT_CAPACITY: usize = 4096;

/// A remembered refusal: the response to repeat and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status of the room's answer.
    pub status: u16,
    /// The room's JSON body, repeated verbatim.
    pub body: String,
    /// When the refusal stops applying.
    pub until: Timestamp,
}

impl Refusal {
    /// Whole seconds left at `now`, at least 1 (for `Retry-After`).
    pub fn retry_after_s(&self, now: Timestamp) -> u64 {
        self.until.since(now).div_ceil(1000).max(1)
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

    /// Remembers a refusal of `retry_after_s` seconds (0 remembers nothing).
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
        let until = now.plus_ms(retry_after_s.saturating_mul(1000));
        self.entries.insert(key, Refusal { status, body, until });
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
    fn zero_retry_after_is_not_remembered() {
        let mut memo = RefusalMemo::default();
        memo.remember("t/r", "ann", 429, "{}".into(), 0, Timestamp(0));
        assert!(memo.is_empty());
    }

    #[test]
    fn a_full_memo_drops_expired_entries_then_the_one_ending_soonest() {
        let mut memo = RefusalMemo::new(3);
        memo.remember("r", "a", 429, "a".into(), 1, Timestamp(0)); // until 1,000
        memo.remember("r", "b", 429, "b".into(), 10, Timestamp(0)); // until 10,000
        memo.remember("r", "c", 429, "c".into(), 5, Timestamp(0)); // until 5,000
                                                                   // At 2,000 "a" has expired: it makes room.
        memo.remember("r", "d", 429, "d".into(), 20, Timestamp(2_000));
        assert_eq!(memo.len(), 3);
        assert!(memo.check("r", "b", Timestamp(2_000)).is_some());
        // Nothing expired: the soonest ("c", until 5,000) goes.
        memo.remember("r", "e", 429, "e".into(), 20, Timestamp(2_000));
        assert_eq!(memo.len(), 3);
        assert!(memo.check("r", "c", Timestamp(2_000)).is_none());
        assert!(memo.check("r", "b", Timestamp(2_000)).is_some());
        // Refreshing a held key never evicts another.
        memo.remember("r", "e", 429, "e2".into(), 30, Timestamp(2_000));
        assert_eq!(memo.len(), 3);
        assert_eq!(memo.check("r", "e", Timestamp(2_000)).map(|r| r.body), Some("e2".to_owned()));
    }
}
