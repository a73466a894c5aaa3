//! When the node registry tries again to tell a room that its media node was lost, and when it stops.
//!
//! A notice is stored when a node's lease ends and deleted when its room answered. One that failed (the room
//! was unreachable or answered 5xx) is tried again: soon while it is young, since the room's clients are
//! waiting for `media.moved`; less often as it ages, since every attempt is a subrequest to a room that keeps
//! failing. After [`GIVE_UP_AFTER_MS`] it is dropped: by then every client of the room has seen its WebRTC
//! connection to the dead node fail and asked for media again by itself, so the notice has nothing left to do.

use crate::Timestamp;

/// The first retries come this soon after a failure.
pub const FIRST_RETRY_MS: u64 = 2_000;
/// Retries never come further apart than this.
pub const LONGEST_RETRY_MS: u64 = 30_000;
/// A notice this old that still failed is dropped.
pub const GIVE_UP_AFTER_MS: u64 = 10 * 60_000;

/// What becomes of a notice whose room could not be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at this time.
    RetryAt(Timestamp),
    /// Drop it (and log that it was dropped).
    GiveUp,
}

/// Decides for a notice stored at `lost_at` (`None`: stored by a version that did not record it, so treated as
/// new) whose room just failed at `now`. The wait is a quarter of the notice's age, from [`FIRST_RETRY_MS`] to
/// [`LONGEST_RETRY_MS`]: about 30 attempts in the first ten minutes instead of 300 at a fixed 2 s.
pub fn after_failure(lost_at: Option<Timestamp>, now: Timestamp) -> AfterFailure {
    let age = lost_at.map_or(0, |lost| now.since(lost));
    if age >= GIVE_UP_AFTER_MS {
        return AfterFailure::GiveUp;
    }
    AfterFailure::RetryAt(now.plus_ms((age / 4).clamp(FIRST_RETRY_MS, LONGEST_RETRY_MS)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOST: Timestamp = Timestamp(1_700_000_000_000);

    fn attempts_until_given_up(lost_at: Timestamp) -> (usize, Vec<u64>) {
        let mut now = lost_at;
        let mut waits = Vec::new();
        while let AfterFailure::RetryAt(next) = after_failure(Some(lost_at), now) {
            waits.push(next.since(now));
            now = next;
            assert!(waits.len() < 1_000, "a failing room must be given up on");
        }
        (waits.len(), waits)
    }

    #[test]
    fn a_young_notice_is_retried_soon_and_an_old_one_less_often() {
        assert_eq!(after_failure(Some(LOST), LOST), AfterFailure::RetryAt(LOST.plus_ms(FIRST_RETRY_MS)));
        let a_minute = LOST.plus_ms(60_000);
        assert_eq!(after_failure(Some(LOST), a_minute), AfterFailure::RetryAt(a_minute.plus_ms(15_000)));
        let five_minutes = LOST.plus_ms(300_000);
        assert_eq!(after_failure(Some(LOST), five_minutes), AfterFailure::RetryAt(five_minutes.plus_ms(30_000)));
        // A notice from a version that did not date it counts as new; a clock step back does not underflow.
        assert_eq!(after_failure(None, a_minute), AfterFailure::RetryAt(a_minute.plus_ms(FIRST_RETRY_MS)));
        assert_eq!(after_failure(Some(a_minute), LOST), AfterFailure::RetryAt(LOST.plus_ms(FIRST_RETRY_MS)));
    }

    #[test]
    fn a_room_that_always_fails_is_given_up_on_after_ten_minutes_of_bounded_retries() {
        let (attempts, waits) = attempts_until_given_up(LOST);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "the waits only grow: {waits:?}");
        assert!(waits.iter().all(|w| (FIRST_RETRY_MS..=LONGEST_RETRY_MS).contains(w)), "{waits:?}");
        assert!((25..=40).contains(&attempts), "{attempts} attempts in ten minutes: {waits:?}");
        assert_eq!(after_failure(Some(LOST), LOST.plus_ms(GIVE_UP_AFTER_MS)), AfterFailure::GiveUp);
        assert!(matches!(after_failure(Some(LOST), LOST.plus_ms(GIVE_UP_AFTER_MS - 1)), AfterFailure::RetryAt(_)));
    }
}
