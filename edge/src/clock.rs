//! The edge's clock: the only place the edge reads time.

use homeroom_shared::Timestamp;

/// Now, in milliseconds since the Unix epoch (`Date.now()`).
pub fn now() -> Timestamp {
    let ms = worker::js_sys::Date::now();
    Timestamp(if ms.is_finite() && ms > 0.0 { ms as u64 } else { 0 })
}
