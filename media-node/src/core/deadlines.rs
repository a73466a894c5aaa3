//! When each session next needs `Input::Timeout`.
//!
//! str0m ends every drain of `poll_output` with `Output::Timeout(at)`: the instant that `Rtc` next wants time
//! advanced. Keeping those in an ordered set means a timer tick touches only the sessions that are due, rather
//! than advancing every session on every datagram.

use super::ids::SessionId;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// An ordered set of per-session deadlines.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    ordered: BTreeSet<(Instant, SessionId)>,
    current: HashMap<SessionId, Instant>,
}

impl Deadlines {
    /// Sets (or moves) the deadline of `session`.
    pub(crate) fn set(&mut self, session: SessionId, at: Instant) {
        if let Some(previous) = self.current.insert(session, at) {
            if previous == at {
                return;
            }
            self.ordered.remove(&(previous, session));
        }
        self.ordered.insert((at, session));
    }

    /// Forgets `session`.
    pub(crate) fn remove(&mut self, session: SessionId) {
        if let Some(previous) = self.current.remove(&session) {
            self.ordered.remove(&(previous, session));
        }
    }

    /// The earliest deadline, if any session has one.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.ordered.first().map(|(at, _)| *at)
    }

    /// Removes and returns the sessions due at `now`, earliest first. A session gets its next deadline from the
    /// drain that follows its timeout.
    pub(crate) fn take_due(&mut self, now: Instant, into: &mut Vec<SessionId>) {
        while let Some(&(at, session)) = self.ordered.first() {
            if at > now {
                break;
            }
            self.ordered.pop_first();
            self.current.remove(&session);
            into.push(session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_due_sessions_are_taken_in_order() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let (a, b, c) = (SessionId::from_u64(1), SessionId::from_u64(2), SessionId::from_u64(3));
        let mut deadlines = Deadlines::default();
        deadlines.set(a, ms(30));
        deadlines.set(b, ms(10));
        deadlines.set(c, ms(20));
        deadlines.set(a, ms(5)); // moved earlier
        assert_eq!(deadlines.next(), Some(ms(5)));

        let mut due = Vec::new();
        deadlines.take_due(ms(15), &mut due);
        assert_eq!(due, vec![a, b]);
        assert_eq!(deadlines.next(), Some(ms(20)));

        deadlines.remove(c);
        assert_eq!(deadlines.next(), None);
        due.clear();
        deadlines.take_due(ms(100), &mut due);
        assert!(due.is_empty());
    }
}
