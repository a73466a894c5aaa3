//! The room's deadlines: one ordered set, so the next alarm is always `O(log n)` away.

use crate::ids::{ConnId, UserId};
use crate::time::Timestamp;
use std::collections::{BTreeMap, BTreeSet};

/// What a deadline is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum TimerKey {
    /// The room has been empty for the idle TTL: wipe it.
    RoomCleanup,
    /// A connection's token expires soon: send `auth.expiring`.
    TokenWarning(ConnId),
    /// A connection's token expired: close it with 4001.
    TokenExpiry(ConnId),
    /// A participant's `typing` expires.
    Typing(UserId),
    /// A participant's pending `cursor` may be sent.
    CursorFlush(UserId),
    /// A participant has been inactive long enough to be shown idle.
    Idle(UserId),
    /// A participant who left holding a media token has not come back: end its media on the node.
    MediaLeave(UserId),
}

/// Deadlines by key, and the same ordered by time.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    by_key: BTreeMap<TimerKey, Timestamp>,
    queue: BTreeSet<(Timestamp, TimerKey)>,
}

impl Timers {
    /// Sets (or moves) the deadline of `key`.
    pub(crate) fn set(&mut self, key: TimerKey, at: Timestamp) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.queue.remove(&(old, key.clone()));
        }
        self.queue.insert((at, key));
    }

    /// Removes the deadline of `key`, if any.
    pub(crate) fn cancel(&mut self, key: &TimerKey) {
        if let Some(old) = self.by_key.remove(key) {
            self.queue.remove(&(old, key.clone()));
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Timestamp> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest deadline that is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Timestamp) -> Option<TimerKey> {
        let (at, _) = self.queue.first()?;
        if *at > now {
            return None;
        }
        let (_, key) = self.queue.pop_first()?;
        self.by_key.remove(&key);
        Some(key)
    }

    /// Forgets every deadline.
    pub(crate) fn clear(&mut self) {
        self.by_key.clear();
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_pop_in_order_and_move() {
        let mut t = Timers::default();
        t.set(TimerKey::RoomCleanup, Timestamp(30));
        t.set(TimerKey::TokenExpiry(ConnId(1)), Timestamp(10));
        t.set(TimerKey::TokenExpiry(ConnId(1)), Timestamp(20));
        assert_eq!(t.next(), Some(Timestamp(20)));
        assert_eq!(t.pop_due(Timestamp(19)), None);
        assert_eq!(t.pop_due(Timestamp(25)), Some(TimerKey::TokenExpiry(ConnId(1))));
        t.cancel(&TimerKey::RoomCleanup);
        assert_eq!(t.next(), None);
    }
}
