//! The wall clock, read only by the adapters (token expiry and heartbeat tokens); the cores take time as input.

use homeroom_shared::Timestamp;
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now() -> Timestamp {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Timestamp(u64::try_from(millis).unwrap_or(u64::MAX))
}
