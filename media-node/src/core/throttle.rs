//! Rate limit for keyframe requests.
//!
//! Every subscriber that joins, switches layer or loses packets wants a keyframe, and a PLI storm makes the
//! publisher's encoder spend its whole bitrate on keyframes. Requests to one publisher layer are therefore let
//! through at most once per interval; the requests in between are satisfied by the same keyframe.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Lets one event per key through per `interval`.
#[derive(Debug)]
pub(crate) struct Throttle<K> {
    interval: Duration,
    last: HashMap<K, Instant>,
}

impl<K: Hash + Eq> Throttle<K> {
    pub(crate) fn new(interval: Duration) -> Self {
        Throttle { interval, last: HashMap::new() }
    }

    /// Whether an event for `key` may happen at `now`; records it if so.
    pub(crate) fn allow(&mut self, key: K, now: Instant) -> bool {
        match self.last.get(&key) {
            Some(at) if now.saturating_duration_since(*at) < self.interval => false,
            _ => {
                self.last.insert(key, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_key_per_interval() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut throttle = Throttle::new(Duration::from_millis(500));
        assert!(throttle.allow("h", ms(0)));
        assert!(!throttle.allow("h", ms(100)));
        assert!(throttle.allow("l", ms(100)), "keys are independent");
        assert!(!throttle.allow("h", ms(499)));
        assert!(throttle.allow("h", ms(500)));
        assert!(!throttle.allow("h", ms(900)));
        assert!(throttle.allow("h", ms(1000)));
    }
}
