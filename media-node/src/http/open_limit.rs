//! How often one participant may open sessions in a room (`POST /v1/sessions`).
//!
//! Opening a session costs the node's one media loop more than anything a session does later: the offer is
//! parsed and a fresh DTLS certificate made. An offer that is refused after that (it parses, but cannot be
//! accepted) leaves no session behind, so the per-participant session limit does not count it. A client
//! looping on such an offer with one valid media token would keep the loop busy for everyone. A real client
//! opens a session per media join and a few more when it reconnects (backoff between attempts): each
//! participant of each room gets [`OPEN_BURST`] opens, then one per [`OPEN_REFILL_SECS`].
//!
//! The buckets live in memory, keyed by room and participant; when there are more than [`MAX_TRACKED`],
//! those that have refilled (their participants stopped opening) are forgotten first.

use homeroom_shared::room::rate::TokenBucket;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Opens a participant may make in a row.
pub(crate) const OPEN_BURST: u32 = 10;
/// After the burst, one more open per this many seconds.
pub(crate) const OPEN_REFILL_SECS: u64 = 2;
/// Buckets kept before refilled ones are forgotten.
const MAX_TRACKED: usize = 10_000;

/// The open buckets of every (room, participant).
#[derive(Debug)]
pub(crate) struct OpenLimit {
    started: Instant,
    buckets: Mutex<HashMap<(String, String), TokenBucket>>,
}

impl OpenLimit {
    pub(crate) fn new(now: Instant) -> Self {
        OpenLimit { started: now, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one open for `participant` in `room` at `now`: `Ok`, or `Err(seconds)` until the next one.
    pub(crate) fn take(&self, room: &str, participant: &str, now: Instant) -> Result<(), u64> {
        // Buckets refill in thousandths of a token per millisecond: one token per `OPEN_REFILL_SECS` is a
        // rate of one per second on a clock that runs `OPEN_REFILL_SECS` times slower.
        let now_ms = u64::try_from(now.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
            / OPEN_REFILL_SECS;
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(()); // a poisoned lock only loses the limit, never a session
        };
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, bucket| !bucket.is_full(now_ms));
            if buckets.len() >= MAX_TRACKED {
                // Ten thousand participants opening at once (each with a valid token): start everyone afresh
                // rather than scan the map on every request. The limit fails open, never closed.
                buckets.clear();
            }
        }
        let key = (room.to_owned(), participant.to_owned());
        let bucket = buckets.entry(key).or_insert_with(|| TokenBucket::full(OPEN_BURST, 1, now_ms));
        if bucket.try_take(1, now_ms) {
            Ok(())
        } else {
            Err(OPEN_REFILL_SECS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_participant_opens_a_burst_then_one_per_refill_and_others_are_not_affected() {
        let t0 = Instant::now();
        let limit = OpenLimit::new(t0);
        for _ in 0..OPEN_BURST {
            assert!(limit.take("t/math", "eve", t0).is_ok());
        }
        assert_eq!(limit.take("t/math", "eve", t0), Err(OPEN_REFILL_SECS), "the burst is spent");
        assert!(limit.take("t/math", "bob", t0).is_ok(), "another participant has its own");
        assert!(limit.take("t/art", "eve", t0).is_ok(), "and so has eve in another room");
        let later = t0 + Duration::from_secs(OPEN_REFILL_SECS);
        assert!(limit.take("t/math", "eve", later).is_ok(), "one more after a refill");
        assert!(limit.take("t/math", "eve", later).is_err());
    }

    #[test]
    fn refilled_buckets_are_forgotten_when_too_many_are_kept() {
        let t0 = Instant::now();
        let limit = OpenLimit::new(t0);
        for i in 0..MAX_TRACKED {
            limit.take("t/room", &format!("p{i}"), t0).unwrap();
        }
        let later = t0 + Duration::from_secs(OPEN_REFILL_SECS * u64::from(OPEN_BURST));
        limit.take("t/room", "newcomer", later).unwrap();
        let kept = limit.buckets.lock().unwrap().len();
        assert_eq!(kept, 1, "every refilled bucket went; the newcomer's stays");
    }
}
