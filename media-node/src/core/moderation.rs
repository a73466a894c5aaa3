//! What the edge's moderators decided about participants, remembered for the media tokens issued before.
//!
//! A control command (kick, mute, perms) changes the sessions that exist when it arrives. The participant's
//! media token, though, stays valid until it expires (minutes, up to a day), and a client may open a new
//! session with it: without a memory, a kicked intruder would come straight back and a muted student would
//! reconnect unmuted. So the node remembers each decision with its wall-clock second, and a new session
//! whose token was issued at or before that second (`iat`; a token without `iat` counts as older than every
//! decision) gets the decision applied: refused after a kick, the decided perms and mutes otherwise. A token
//! the edge issues after the decision already says what the room decided, so it is taken as it is.
//!
//! Decisions are forgotten after [`REMEMBER_FOR`] (longer than the longest media token the edge issues) and
//! the memo holds at most [`MAX_DECISIONS`]; only the edge (with `NODE_SECRET`) can add to it.

use homeroom_shared::auth::MediaPerms;
use homeroom_shared::protocol::{MediaFlags, MediaKind};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a decision is remembered: the edge's longest media-token lifetime (`MEDIA_TOKEN_TTL_SECS` ≤ 24 h).
pub const REMEMBER_FOR: Duration = Duration::from_secs(24 * 3600);

/// The most decisions remembered; beyond it the oldest is forgotten first.
pub const MAX_DECISIONS: usize = 100_000;

/// The decisions about one participant of one room.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Wall-clock second of the latest decision.
    pub at_secs: u64,
    recorded: Option<Instant>,
    pub kicked: bool,
    pub muted: MediaFlags,
    /// Perms that replace the token's.
    pub perms: Option<MediaPerms>,
}

/// What a new session gets from the memo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The token was issued after every decision (or there is none): as the token says.
    AsIssued,
    /// The participant was kicked after the token was issued.
    Kicked,
    /// The token predates decisions that still apply: these mutes, and these perms instead of the token's.
    Restricted { muted: MediaFlags, perms: Option<MediaPerms> },
}

/// The memo (see the module docs), keyed by tenant-scoped room and participant.
#[derive(Debug, Default)]
pub struct ModerationMemo {
    decisions: HashMap<(String, String), Decision>,
}

impl ModerationMemo {
    fn entry(&mut self, room: &str, participant: &str, now: Instant, at_secs: u64) -> &mut Decision {
        if self.decisions.len() >= MAX_DECISIONS && !self.decisions.contains_key(&key(room, participant)) {
            self.forget_oldest();
        }
        let decision = self.decisions.entry(key(room, participant)).or_default();
        decision.at_secs = decision.at_secs.max(at_secs);
        decision.recorded = Some(now);
        decision
    }

    pub fn kicked(&mut self, room: &str, participant: &str, now: Instant, at_secs: u64) {
        self.entry(room, participant, now, at_secs).kicked = true;
    }

    pub fn muted(&mut self, room: &str, participant: &str, kind: MediaKind, muted: bool, now: Instant, at_secs: u64) {
        self.entry(room, participant, now, at_secs).muted.set(kind, muted);
    }

    pub fn perms(&mut self, room: &str, participant: &str, perms: MediaPerms, now: Instant, at_secs: u64) {
        self.entry(room, participant, now, at_secs).perms = Some(perms);
    }

    /// The room closed: its decisions end with it (the edge re-admits everyone with fresh tokens).
    pub fn room_closed(&mut self, room: &str) {
        self.decisions.retain(|(r, _), _| r != room);
    }

    /// What a new session of `participant` in `room`, with a token issued at `issued_secs`, gets.
    pub fn admission(&self, room: &str, participant: &str, issued_secs: Option<u64>) -> Admission {
        let Some(decision) = self.decisions.get(&key(room, participant)) else { return Admission::AsIssued };
        if issued_secs.is_some_and(|iat| iat > decision.at_secs) {
            return Admission::AsIssued;
        }
        if decision.kicked {
            return Admission::Kicked;
        }
        Admission::Restricted { muted: decision.muted, perms: decision.perms }
    }

    /// Forgets decisions older than [`REMEMBER_FOR`].
    pub fn prune(&mut self, now: Instant) {
        self.decisions.retain(|_, d| d.recorded.is_some_and(|at| now.saturating_duration_since(at) < REMEMBER_FOR));
    }

    pub fn len(&self) -> usize {
        self.decisions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty()
    }

    fn forget_oldest(&mut self) {
        let oldest = self.decisions.iter().min_by_key(|(_, d)| d.recorded).map(|(k, _)| k.clone());
        if let Some(oldest) = oldest {
            self.decisions.remove(&oldest);
        }
    }
}

fn key(room: &str, participant: &str) -> (String, String) {
    (room.to_owned(), participant.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: MediaPerms = MediaPerms { audio: true, video: true, screen: true, subscribe: true };

    #[test]
    fn decisions_apply_to_tokens_issued_up_to_their_second() {
        let now = Instant::now();
        let mut memo = ModerationMemo::default();
        assert_eq!(memo.admission("t/math", "bob", Some(100)), Admission::AsIssued);
        memo.kicked("t/math", "bob", now, 1_000);
        assert_eq!(memo.admission("t/math", "bob", Some(999)), Admission::Kicked);
        assert_eq!(memo.admission("t/math", "bob", Some(1_000)), Admission::Kicked, "the same second counts");
        assert_eq!(memo.admission("t/math", "bob", None), Admission::Kicked, "no iat: older than everything");
        assert_eq!(memo.admission("t/math", "bob", Some(1_001)), Admission::AsIssued, "a newer token");
        assert_eq!(memo.admission("t/art", "bob", Some(1)), Admission::AsIssued, "another room");
        assert_eq!(memo.admission("t/math", "eve", Some(1)), Admission::AsIssued, "another participant");
    }

    #[test]
    fn mutes_and_perms_restrict_older_tokens() {
        let now = Instant::now();
        let mut memo = ModerationMemo::default();
        memo.muted("t/math", "amy", MediaKind::Audio, true, now, 50);
        let screen_off = MediaPerms { screen: false, ..ALL };
        memo.perms("t/math", "amy", screen_off, now, 60);
        let mut muted = MediaFlags::default();
        muted.set(MediaKind::Audio, true);
        assert_eq!(memo.admission("t/math", "amy", Some(40)), Admission::Restricted { muted, perms: Some(screen_off) });
        memo.muted("t/math", "amy", MediaKind::Audio, false, now, 70);
        assert_eq!(
            memo.admission("t/math", "amy", Some(40)),
            Admission::Restricted { muted: MediaFlags::default(), perms: Some(screen_off) },
            "an unmute lifts the remembered mute"
        );
        memo.room_closed("t/math");
        assert!(memo.is_empty());
    }

    #[test]
    fn old_decisions_are_forgotten_and_the_memo_is_bounded() {
        let start = Instant::now();
        let mut memo = ModerationMemo::default();
        memo.kicked("t/math", "bob", start, 10);
        memo.prune(start + REMEMBER_FOR - Duration::from_secs(1));
        assert_eq!(memo.len(), 1);
        memo.prune(start + REMEMBER_FOR);
        assert!(memo.is_empty());

        for i in 0..MAX_DECISIONS + 10 {
            memo.kicked("t/big", &format!("u{i}"), start + Duration::from_millis(i as u64), 10);
        }
        assert_eq!(memo.len(), MAX_DECISIONS);
        assert_eq!(memo.admission("t/big", "u0", Some(1)), Admission::AsIssued, "the oldest went first");
        assert_eq!(memo.admission("t/big", &format!("u{}", MAX_DECISIONS + 9), Some(1)), Admission::Kicked);
    }
}
