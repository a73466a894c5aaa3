//! Time as the cores see it: milliseconds since the Unix epoch, always passed in by the adapter.
//!
//! The cores never read a clock (`std::time::Instant::now()` panics on `wasm32-unknown-unknown`, and a clock
//! inside the core would make tests nondeterministic).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A point in time, in milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (the unit of JWT `exp`/`nbf`).
    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// The instant `secs` seconds after the Unix epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }

    /// This instant plus `ms` milliseconds, saturating.
    pub const fn plus_ms(self, ms: u64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub const fn since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// This instant rounded down to a whole second (used for `last_seen`, persisted at most once a second).
    pub const fn floor_to_second(self) -> Self {
        Timestamp(self.0 - self.0 % 1000)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// Exponential backoff: `first_ms` after the first failure in a row, doubling with each further one, never
/// above `max_ms`.
pub fn backoff_ms(failures: u32, first_ms: u64, max_ms: u64) -> u64 {
    let doublings = failures.saturating_sub(1).min(32);
    first_ms.saturating_mul(1u64 << doublings).min(max_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_failure_up_to_its_cap() {
        let waits: Vec<u64> = (1..=7).map(|n| backoff_ms(n, 2_000, 60_000)).collect();
        assert_eq!(waits, [2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]);
        assert_eq!(backoff_ms(0, 2_000, 60_000), 2_000, "no failure counted yet: the first wait");
        assert_eq!(backoff_ms(u32::MAX, 2_000, 60_000), 60_000, "no overflow");
    }
}
