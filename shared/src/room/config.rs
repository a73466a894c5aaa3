//! Limits and settings of rooms.
//!
//! [`Limits`] are deployment-wide (Worker vars, see `docs/protocol.md`); [`RoomSettings`] are per-room
//! overrides set through the admin API and kept in the room's storage.

use serde::{Deserialize, Serialize};

/// Deployment-wide limits and defaults. `Limits::default()` is what a deployment without vars gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Default most participants per room (moderators may exceed it). Var `ROOM_CAPACITY`.
    pub capacity: u32,
    /// Default number of chat messages a room keeps. Var `HISTORY_LIMIT`.
    pub history_limit: u32,
    /// Default for keeping chat history at all. Var `PERSIST_MESSAGES`.
    pub persist_messages: bool,
    /// Messages in the `welcome` snapshot. Var `WELCOME_HISTORY`.
    pub welcome_history: u32,
    /// Logged events kept for resume. Var `LOG_LIMIT`.
    pub log_limit: u32,
    /// `rid` replies kept for idempotency. Var `REPLY_LIMIT`.
    pub reply_limit: u32,
    /// A room nobody is connected to is wiped after this long. Var `IDLE_ROOM_TTL_SECS`.
    pub idle_room_ttl_ms: u64,
    /// A kicked user may not rejoin for this long. Var `KICK_BAN_SECS`.
    pub kick_ban_ms: u64,
    /// `typing` expires this long after the last refresh. Var `TYPING_TTL_MS`.
    pub typing_ttl_ms: u64,
    /// At most one `cursor` per participant per this interval; the latest is sent at its end.
    pub cursor_interval_ms: u64,
    /// A participant without activity for this long is shown `idle`. Var `IDLE_AFTER_SECS`.
    pub idle_after_ms: u64,
    /// `auth.expiring` is sent this long before a token expires. Var `TOKEN_WARNING_SECS`.
    pub token_warning_ms: u64,
    /// Largest accepted text frame; larger ones get `too_large`. Var `MAX_FRAME_BYTES`.
    pub max_frame_bytes: u32,
    /// A frame larger than this closes the connection with 4009.
    pub hard_max_frame_bytes: u32,
    /// Longest chat message, in characters. Var `MAX_CHAT_CHARS`.
    pub max_chat_chars: u32,
    /// Longest reaction, in characters.
    pub max_reaction_chars: u32,
    /// Token bucket per connection: burst. Var `RATE_BURST`.
    pub rate_burst: u32,
    /// Token bucket per connection: refill per second. Var `RATE_PER_SEC`.
    pub rate_per_sec: u32,
    /// Refused frames (rate limited, malformed, oversized) a connection may accumulate before it is closed
    /// with 4008; they are forgiven at `strike_refill_per_sec`. Var `ABUSE_STRIKES`.
    pub abuse_strikes: u32,
    pub strike_refill_per_sec: u32,
    /// A user cut for abuse (4008/4009) may not reconnect for this long (0: no cool-down). Var
    /// `ABUSE_COOLDOWN_SECS`.
    pub abuse_cooldown_ms: u64,
    /// Connections one user may hold in one room. Var `MAX_CONNECTIONS_PER_USER`.
    pub max_conns_per_user: u32,
    /// Connects one user may make in a row before it is refused (`rate_limited`); one more is allowed every
    /// `join_refill_secs`. Every connect costs the room a `welcome` and, for a returning user, a joined and a
    /// left broadcast to everyone. Vars `JOIN_BURST`, `JOIN_REFILL_SECS`.
    pub join_burst: u32,
    pub join_refill_secs: u32,
    /// Largest `history` page.
    pub history_page_max: u32,
    /// How often clients should send `ping`.
    pub ping_interval_ms: u64,
    /// Lifetime of media tokens. Var `MEDIA_TOKEN_TTL_SECS`.
    pub media_token_ttl_ms: u64,
    /// How long the media of a participant who left (its last connection closed) goes on before the room
    /// ends it on the node, unless the participant is back: a signalling blip need not cut the call, and
    /// someone who left does not stay on camera unseen by the room. Var `MEDIA_LEAVE_GRACE_SECS`.
    pub media_leave_grace_ms: u64,
    /// Flush window for coalescing frames in busy rooms (0: off). Var `COALESCE_MS`.
    pub coalesce_ms: u64,
    /// Rooms with fewer connections never coalesce. Var `COALESCE_MIN_CONNECTIONS`.
    pub coalesce_min_conns: u32,
    /// Frames per second a busy room's sends and flushes may cost, with two flushes of credit: a big room that
    /// has spent it gets windows longer than `coalesce_ms` (0: never stretch). Var `COALESCE_FRAMES_PER_SEC`.
    pub coalesce_frames_per_sec: u32,
    /// The share of the room's thread (percent) its flushes may take once a big flush has been timed: the
    /// frame budget then follows the host's measured cost per frame instead of staying at
    /// `coalesce_frames_per_sec` (which remains the budget until the first measurement; 0: the budget stays
    /// fixed). Var `COALESCE_FLUSH_DUTY_PCT`.
    pub coalesce_flush_duty_pct: u32,
    /// Frames per second a busy room's flushes of membership churn alone (joins, leaves, presence, read
    /// marks) may cost: such a queue is held up to 250 ms to stay within it, and goes out sooner with the next
    /// chat message (0: churn is flushed like everything else). Var `COALESCE_LAZY_FRAMES_PER_SEC`.
    pub coalesce_lazy_frames_per_sec: u32,
    /// How many connections one step of a busy room's flush writes: a flush with conversation in it (not
    /// membership churn alone) goes out as a sweep over the
    /// connections, a step at a time (the adapter yields between steps), and each step takes every text
    /// queued meanwhile for the connections it writes (0: a flush is written to everyone at once, and what
    /// arrives meanwhile waits for the next window). Var `COALESCE_SWEEP_CONNECTIONS`.
    pub coalesce_sweep_conns: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            capacity: 100,
            history_limit: 500,
            persist_messages: true,
            welcome_history: 50,
            log_limit: 1000,
            reply_limit: 2000,
            idle_room_ttl_ms: 30 * 60 * 1000,
            kick_ban_ms: 10 * 60 * 1000,
            typing_ttl_ms: 5000,
            cursor_interval_ms: 50,
            idle_after_ms: 5 * 60 * 1000,
            token_warning_ms: 60 * 1000,
            max_frame_bytes: 16 * 1024,
            hard_max_frame_bytes: 256 * 1024,
            max_chat_chars: 4000,
            max_reaction_chars: 16,
            rate_burst: 30,
            rate_per_sec: 10,
            abuse_strikes: 20,
            strike_refill_per_sec: 2,
            abuse_cooldown_ms: 30_000,
            max_conns_per_user: 8,
            join_burst: 20,
            join_refill_secs: 3,
            history_page_max: 100,
            ping_interval_ms: 30_000,
            media_token_ttl_ms: 5 * 60 * 1000,
            media_leave_grace_ms: 30_000,
            coalesce_ms: 20,
            coalesce_min_conns: 50,
            coalesce_frames_per_sec: 10_000,
            coalesce_flush_duty_pct: 50,
            coalesce_lazy_frames_per_sec: 2_000,
            coalesce_sweep_conns: crate::outbox::CHUNK as u32,
        }
    }
}

/// A Worker var that could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Worker var {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

impl Limits {
    /// Limits from Worker vars: `var(name)` returns a var's value if set. Unset vars keep the defaults.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Limits, ConfigError> {
        let mut l = Limits::default();
        let num = |name: &'static str, min: u64, max: u64| -> Result<Option<u64>, ConfigError> {
            let Some(value) = var(name) else { return Ok(None) };
            match value.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(ConfigError { name, value, reason: format!("expected a whole number from {min} to {max}") }),
            }
        };
        let to_u32 = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        if let Some(n) = num("ROOM_CAPACITY", 1, 100_000)? {
            l.capacity = to_u32(n);
        }
        if let Some(n) = num("HISTORY_LIMIT", 0, 100_000)? {
            l.history_limit = to_u32(n);
        }
        if let Some(n) = num("WELCOME_HISTORY", 0, 1000)? {
            l.welcome_history = to_u32(n);
        }
        if let Some(n) = num("LOG_LIMIT", 10, 1_000_000)? {
            l.log_limit = to_u32(n);
        }
        if let Some(n) = num("REPLY_LIMIT", 10, 1_000_000)? {
            l.reply_limit = to_u32(n);
        }
        if let Some(n) = num("IDLE_ROOM_TTL_SECS", 1, 30 * 24 * 3600)? {
            l.idle_room_ttl_ms = n * 1000;
        }
        if let Some(n) = num("KICK_BAN_SECS", 0, 30 * 24 * 3600)? {
            l.kick_ban_ms = n * 1000;
        }
        if let Some(n) = num("TYPING_TTL_MS", 100, 600_000)? {
            l.typing_ttl_ms = n;
        }
        if let Some(n) = num("IDLE_AFTER_SECS", 1, 24 * 3600)? {
            l.idle_after_ms = n * 1000;
        }
        if let Some(n) = num("TOKEN_WARNING_SECS", 0, 3600)? {
            l.token_warning_ms = n * 1000;
        }
        if let Some(n) = num("MAX_FRAME_BYTES", 256, 1_000_000)? {
            l.max_frame_bytes = to_u32(n);
            l.hard_max_frame_bytes = l.hard_max_frame_bytes.max(l.max_frame_bytes);
        }
        if let Some(n) = num("MAX_CHAT_CHARS", 1, 100_000)? {
            l.max_chat_chars = to_u32(n);
        }
        if let Some(n) = num("RATE_BURST", 1, 1_000_000)? {
            l.rate_burst = to_u32(n);
        }
        if let Some(n) = num("RATE_PER_SEC", 1, 1_000_000)? {
            l.rate_per_sec = to_u32(n);
        }
        if let Some(n) = num("ABUSE_STRIKES", 1, 1_000_000)? {
            l.abuse_strikes = to_u32(n);
        }
        if let Some(n) = num("ABUSE_COOLDOWN_SECS", 0, 24 * 3600)? {
            l.abuse_cooldown_ms = n * 1000;
        }
        if let Some(n) = num("MAX_CONNECTIONS_PER_USER", 1, 10_000)? {
            l.max_conns_per_user = to_u32(n);
        }
        if let Some(n) = num("JOIN_BURST", 1, 1_000_000)? {
            l.join_burst = to_u32(n);
        }
        if let Some(n) = num("JOIN_REFILL_SECS", 1, 3600)? {
            l.join_refill_secs = to_u32(n);
        }
        if let Some(n) = num("MEDIA_TOKEN_TTL_SECS", 10, 24 * 3600)? {
            l.media_token_ttl_ms = n * 1000;
        }
        if let Some(n) = num("MEDIA_LEAVE_GRACE_SECS", 0, 3600)? {
            l.media_leave_grace_ms = n * 1000;
        }
        if let Some(n) = num("COALESCE_MS", 0, 1000)? {
            l.coalesce_ms = n;
        }
        if let Some(n) = num("COALESCE_MIN_CONNECTIONS", 1, 1_000_000)? {
            l.coalesce_min_conns = to_u32(n);
        }
        if let Some(n) = num("COALESCE_FRAMES_PER_SEC", 0, 10_000_000)? {
            l.coalesce_frames_per_sec = to_u32(n);
        }
        if let Some(n) = num("COALESCE_FLUSH_DUTY_PCT", 0, 90)? {
            l.coalesce_flush_duty_pct = to_u32(n);
        }
        if let Some(n) = num("COALESCE_LAZY_FRAMES_PER_SEC", 0, 10_000_000)? {
            l.coalesce_lazy_frames_per_sec = to_u32(n);
        }
        if let Some(n) = num("COALESCE_SWEEP_CONNECTIONS", 0, 1_000_000)? {
            l.coalesce_sweep_conns = to_u32(n);
        }
        if let Some(value) = var("PERSIST_MESSAGES") {
            l.persist_messages = match value.trim() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(ConfigError {
                        name: "PERSIST_MESSAGES",
                        value,
                        reason: "expected true or false".into(),
                    })
                }
            };
        }
        Ok(l)
    }
}

/// Per-room overrides of the deployment defaults (admin API `POST /v1/rooms/{room}/settings`).
/// `None` means "use the deployment default".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist_messages: Option<bool>,
}

/// A change to [`RoomSettings`]: absent fields stay, `null` resets a field to the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    #[serde(default, deserialize_with = "some_or_null")]
    pub capacity: Option<Option<u32>>,
    #[serde(default, deserialize_with = "some_or_null")]
    pub history_limit: Option<Option<u32>>,
    #[serde(default, deserialize_with = "some_or_null")]
    pub persist_messages: Option<Option<bool>>,
}

fn some_or_null<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl RoomSettings {
    /// Applies `patch`; refuses values outside sane bounds.
    pub fn apply(&mut self, patch: &SettingsPatch) -> Result<(), String> {
        if let Some(Some(c)) = patch.capacity {
            if !(1..=100_000).contains(&c) {
                return Err(format!("capacity must be 1..=100000, got {c}"));
            }
        }
        if let Some(Some(h)) = patch.history_limit {
            if h > 100_000 {
                return Err(format!("history_limit must be 0..=100000, got {h}"));
            }
        }
        if let Some(c) = patch.capacity {
            self.capacity = c;
        }
        if let Some(h) = patch.history_limit {
            self.history_limit = h;
        }
        if let Some(p) = patch.persist_messages {
            self.persist_messages = p;
        }
        Ok(())
    }
}

/// Limits with a room's settings applied: what the room actually enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Effective {
    pub capacity: u32,
    pub history_limit: u32,
    pub persist_messages: bool,
}

impl Effective {
    /// The settings in force for a room.
    pub fn of(limits: &Limits, settings: &RoomSettings) -> Self {
        Effective {
            capacity: settings.capacity.unwrap_or(limits.capacity),
            history_limit: settings.history_limit.unwrap_or(limits.history_limit),
            persist_messages: settings.persist_messages.unwrap_or(limits.persist_messages) && {
                settings.history_limit.unwrap_or(limits.history_limit) > 0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_override_defaults_and_bad_values_are_named() {
        let vars = |name: &str| match name {
            "ROOM_CAPACITY" => Some("30".to_owned()),
            "PERSIST_MESSAGES" => Some("false".to_owned()),
            "COALESCE_LAZY_FRAMES_PER_SEC" => Some("0".to_owned()),
            "COALESCE_FLUSH_DUTY_PCT" => Some("0".to_owned()),
            "COALESCE_SWEEP_CONNECTIONS" => Some("0".to_owned()),
            _ => None,
        };
        let l = Limits::from_vars(vars).unwrap();
        assert_eq!(l.coalesce_sweep_conns, 0);
        assert_eq!(Limits::default().coalesce_sweep_conns, 64);
        assert_eq!(l.capacity, 30);
        assert!(!l.persist_messages);
        assert_eq!(l.coalesce_lazy_frames_per_sec, 0);
        assert_eq!(Limits::default().coalesce_lazy_frames_per_sec, 2_000);
        assert_eq!((l.coalesce_flush_duty_pct, Limits::default().coalesce_flush_duty_pct), (0, 50));
        let too_busy = Limits::from_vars(|n| (n == "COALESCE_FLUSH_DUTY_PCT").then(|| "95".to_owned()));
        assert_eq!(too_busy.unwrap_err().name, "COALESCE_FLUSH_DUTY_PCT", "at most 90 % of the thread");
        let err = Limits::from_vars(|n| (n == "RATE_BURST").then(|| "lots".to_owned())).unwrap_err();
        assert_eq!(err.name, "RATE_BURST");
        assert_eq!(
            err.to_string(),
            "Worker var RATE_BURST=\"lots\" is invalid: expected a whole number from 1 to 1000000",
            "the message says what would do"
        );
    }

    #[test]
    fn settings_patch_sets_and_resets() {
        let mut s = RoomSettings::default();
        let p: SettingsPatch = serde_json::from_str(r#"{"capacity": 3}"#).unwrap();
        s.apply(&p).unwrap();
        assert_eq!(s.capacity, Some(3));
        let p: SettingsPatch = serde_json::from_str(r#"{"capacity": null}"#).unwrap();
        s.apply(&p).unwrap();
        assert_eq!(s.capacity, None);
        let p: SettingsPatch = serde_json::from_str(r#"{"capacity": 0}"#).unwrap();
        assert!(s.apply(&p).is_err());
        assert!(serde_json::from_str::<SettingsPatch>(r#"{"capcity": 1}"#).is_err());
    }
}
