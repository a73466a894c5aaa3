//! What the edge's moderators decided about participants, remembered for the media tokens issued before.
//!
//! A control command (kick, mute, perms) changes the sessions that exist when it arrives. The participant's
//! media token, though, stays valid until it expires (minutes, up to a day), and a client may open a new
//! session with it: without a memory, a kicked intruder would come straight back and a muted student would
//! reconnect unmuted. So the node remembers each decision with its second on the edge's clock (the control
//! token's `iat`), and a new session whose token was issued at or before that second (its `iat`, on the same
//! clock; a token without `iat` counts as older than every decision) gets that decision applied: refused after
//! a kick, the decided mute or perms otherwise. Each decision keeps its own time, so a later mute does not
//! revive an old kick. What the edge decided before it issued a token is in the token already.
//!
//! A `close_room` (the room was cleared, or wiped after being empty) ends every decision about the room and
//! is remembered itself: a token issued before the close's second opens no session in the room any more, so
//! a cleared class is not rejoined — unseen by the edge, which no longer lists the holder — with a media token
//! from before the clear. A token of the close's own second is let in: the edge's fresh tokens after a clear
//! may share that second, and refusing them would be worse than the one-second window it leaves.
//!
//! Decisions are forgotten after [`REMEMBER_FOR`] (longer than the longest media token the edge issues) and
//! the memo holds at most [`MAX_DECISIONS`] decisions and as many closed rooms; only the edge (with `NODE_SECRET`) can add to it.

use homeroom_shared::auth::MediaPerms;
use homeroom_shared::protocol::{MediaFlags, MediaKind};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a decision is remembered: the edge's longest media-token lifetime (`MEDIA_TOKEN_TTL_SECS` ≤ 24 h).
pub const REMEMBER_FOR: Duration = Duration::from_secs(24 * 3600);

/// The most decisions remembered, and separately the most closed rooms; beyond it the oldest is forgotten
/// first.
pub const MAX_DECISIONS: usize = 100_000;

/// The decisions about one participant of one room, each with the wall-clock second it was made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    recorded: Option<Instant>,
    kicked_at: Option<u64>,
    /// Per kind (audio, video, screen): the latest mute or unmute and when.
    mutes: [Option<(bool, u64)>; 3],
    /// The latest perms that replace the token's, and when.
    perms: Option<(MediaPerms, u64)>,
}

fn slot(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
        MediaKind::Screen => 2,
    }
}

const KINDS: [MediaKind; 3] = [MediaKind::Audio, MediaKind::Video, MediaKind::Screen];

/// What a new session gets from the memo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The token was issued after every decision (or there is none): as the token says.
    AsIssued,
    /// The participant was kicked after the token was issued.
    Kicked,
    /// The room was closed after the token was issued.
    RoomClosed,
    /// Decisions made since the token was issued: these mutes, and these perms instead of the token's.
    Restricted { muted: MediaFlags, perms: Option<MediaPerms> },
}

/// The memo (see the module docs), keyed by tenant-scoped room and participant.
#[derive(Debug, Default)]
pub struct ModerationMemo {
    decisions: HashMap<(String, String), Decision>,
    /// Closed rooms: when the close was recorded here, and its second on the edge's clock.
    closed: HashMap<String, (Instant, u64)>,
}

impl ModerationMemo {
    fn entry(&mut self, room: &str, participant: &str, now: Instant) -> &mut Decision {
        if self.decisions.len() >= MAX_DECISIONS && !self.decisions.contains_key(&key(room, participant)) {
            self.forget_oldest();
        }
        let decision = self.decisions.entry(key(room, participant)).or_default();
        decision.recorded = Some(now);
        decision
    }

    pub fn kicked(&mut self, room: &str, participant: &str, now: Instant, at_secs: u64) {
        let decision = self.entry(room, participant, now);
        decision.kicked_at = Some(decision.kicked_at.map_or(at_secs, |at| at.max(at_secs)));
    }

    /// Remembers a mute or unmute decided at `at_secs`; returns whether it stands, i.e. is not older than the
    /// decision about that kind already remembered (of the same second: the later arrival wins).
    pub fn muted(
        &mut self,
        room: &str,
        participant: &str,
        kind: MediaKind,
        muted: bool,
        now: Instant,
        at_secs: u64,
    ) -> bool {
        let decision = self.entry(room, participant, now);
        let Some(mute) = decision.mutes.get_mut(slot(kind)) else { return false };
        if mute.is_some_and(|(_, at)| at > at_secs) {
            return false;
        }
        *mute = Some((muted, at_secs));
        true
    }

    /// Remembers the perms decided at `at_secs`; returns whether they stand (as [`ModerationMemo::muted`]).
    pub fn perms(&mut self, room: &str, participant: &str, perms: MediaPerms, now: Instant, at_secs: u64) -> bool {
        let decision = self.entry(room, participant, now);
        if decision.perms.is_some_and(|(_, at)| at > at_secs) {
            return false;
        }
        decision.perms = Some((perms, at_secs));
        true
    }

    /// The room closed at second `at_secs`: its decisions end with it (the edge re-admits everyone with fresh
    /// tokens), and tokens issued before that second are refused from now on.
    pub fn room_closed(&mut self, room: &str, now: Instant, at_secs: u64) {
        self.decisions.retain(|(r, _), _| r != room);
        if self.closed.len() >= MAX_DECISIONS && !self.closed.contains_key(room) {
            let oldest = self.closed.iter().min_by_key(|(_, (recorded, _))| *recorded).map(|(r, _)| r.clone());
            if let Some(oldest) = oldest {
                self.closed.remove(&oldest);
            }
        }
        let at = self.closed.get(room).map_or(at_secs, |(_, at)| (*at).max(at_secs));
        self.closed.insert(room.to_owned(), (now, at));
    }

    /// What a new session of `participant` in `room`, with a token issued at `issued_secs`, gets: each
    /// decision made in or after the token's second applies (older ones are in the token already), and so
    /// does a mute still in force of a kind the token does not permit.
    pub fn admission(
        &self,
        room: &str,
        participant: &str,
        issued_secs: Option<u64>,
        token_perms: MediaPerms,
    ) -> Admission {
        if self.closed.get(room).is_some_and(|(_, at)| issued_secs.is_none_or(|iat| iat < *at)) {
            return Admission::RoomClosed;
        }
        let Some(decision) = self.decisions.get(&key(room, participant)) else { return Admission::AsIssued };
        let applies = |at: u64| issued_secs.is_none_or(|iat| iat <= at);
        if decision.kicked_at.is_some_and(applies) {
            return Admission::Kicked;
        }
        let mut muted = MediaFlags::default();
        let mut any = false;
        for kind in KINDS {
            if let Some(Some((flag, at))) = decision.mutes.get(slot(kind)) {
                // A mute in force also applies to a newer token that does not permit the kind: the edge issued
                // it during the mute (folded into its perms), and without the remembered mute a later `perms`
                // command, which carries permissions and not mutes, would lift it. A newer token that permits
                // the kind was issued after an unmute.
                if applies(*at) || (*flag && !token_perms.permits(kind)) {
                    muted.set(kind, *flag);
                    any = true;
                }
            }
        }
        let perms = decision.perms.filter(|(_, at)| applies(*at)).map(|(perms, _)| perms);
        if any || perms.is_some() {
            Admission::Restricted { muted, perms }
        } else {
            Admission::AsIssued
        }
    }

    /// Forgets decisions older than [`REMEMBER_FOR`].
    pub fn prune(&mut self, now: Instant) {
        self.decisions.retain(|_, d| d.recorded.is_some_and(|at| now.saturating_duration_since(at) < REMEMBER_FOR));
        self.closed.retain(|_, (recorded, _)| now.saturating_duration_since(*recorded) < REMEMBER_FOR);
    }

    /// Decisions and closed rooms remembered.
    pub fn len(&self) -> usize {
        self.decisions.len() + self.closed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty() && self.closed.is_empty()
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
        assert_eq!(memo.admission("t/math", "bob", Some(100), ALL), Admission::AsIssued);
        memo.kicked("t/math", "bob", now, 1_000);
        assert_eq!(memo.admission("t/math", "bob", Some(999), ALL), Admission::Kicked);
        assert_eq!(memo.admission("t/math", "bob", Some(1_000), ALL), Admission::Kicked, "the same second counts");
        assert_eq!(memo.admission("t/math", "bob", None, ALL), Admission::Kicked, "no iat: older than everything");
        assert_eq!(memo.admission("t/math", "bob", Some(1_001), ALL), Admission::AsIssued, "a newer token");
        assert_eq!(memo.admission("t/art", "bob", Some(1), ALL), Admission::AsIssued, "another room");
        assert_eq!(memo.admission("t/math", "eve", Some(1), ALL), Admission::AsIssued, "another participant");
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
        assert_eq!(
            memo.admission("t/math", "amy", Some(40), ALL),
            Admission::Restricted { muted, perms: Some(screen_off) }
        );
        memo.muted("t/math", "amy", MediaKind::Audio, false, now, 70);
        assert_eq!(
            memo.admission("t/math", "amy", Some(40), ALL),
            Admission::Restricted { muted: MediaFlags::default(), perms: Some(screen_off) },
            "an unmute lifts the remembered mute"
        );
        assert_eq!(
            memo.admission("t/math", "amy", Some(65), ALL),
            Admission::Restricted { muted: MediaFlags::default(), perms: None },
            "the perms of second 60 are in a token of second 65 already"
        );
        memo.room_closed("t/math", now, 80);
        assert_eq!(memo.len(), 1, "the decisions end with the room; the close is remembered");
    }

    #[test]
    fn a_closed_room_refuses_tokens_issued_before_the_close() {
        let now = Instant::now();
        let mut memo = ModerationMemo::default();
        memo.kicked("t/math", "bob", now, 100);
        memo.room_closed("t/math", now, 200);
        assert_eq!(memo.admission("t/math", "amy", Some(150), ALL), Admission::RoomClosed, "issued before the clear");
        assert_eq!(memo.admission("t/math", "bob", Some(90), ALL), Admission::RoomClosed);
        assert_eq!(memo.admission("t/math", "amy", None, ALL), Admission::RoomClosed, "no iat: older than the close");
        assert_eq!(memo.admission("t/math", "amy", Some(200), ALL), Admission::AsIssued, "the edge's fresh tokens");
        assert_eq!(
            memo.admission("t/math", "bob", Some(201), ALL),
            Admission::AsIssued,
            "the kick ended with the room"
        );
        assert_eq!(memo.admission("t/art", "amy", Some(1), ALL), Admission::AsIssued, "another room");
        memo.room_closed("t/math", now, 150);
        assert_eq!(memo.admission("t/math", "amy", Some(170), ALL), Admission::RoomClosed, "a close never moves back");
        memo.prune(now + REMEMBER_FOR);
        assert!(memo.is_empty(), "closes are forgotten like decisions");
    }

    #[test]
    fn a_decision_older_than_the_remembered_one_does_not_stand() {
        let now = Instant::now();
        let mut memo = ModerationMemo::default();
        assert!(memo.muted("t/math", "amy", MediaKind::Audio, false, now, 104));
        assert!(!memo.muted("t/math", "amy", MediaKind::Audio, true, now, 100), "a late mute of second 100");
        assert_eq!(
            memo.admission("t/math", "amy", Some(90), ALL),
            Admission::Restricted { muted: MediaFlags::default(), perms: None },
            "the unmute stands"
        );
        assert!(memo.muted("t/math", "amy", MediaKind::Audio, true, now, 104), "the same second: the later wins");
        assert!(memo.muted("t/math", "amy", MediaKind::Video, true, now, 50), "each kind keeps its own time");
        let screen_off = MediaPerms { screen: false, ..ALL };
        assert!(memo.perms("t/math", "amy", ALL, now, 200));
        assert!(!memo.perms("t/math", "amy", screen_off, now, 150));
        let mut muted = MediaFlags::default();
        muted.set(MediaKind::Audio, true);
        muted.set(MediaKind::Video, true);
        assert_eq!(memo.admission("t/math", "amy", Some(40), ALL), Admission::Restricted { muted, perms: Some(ALL) });
    }

    #[test]
    fn each_decision_keeps_its_own_time() {
        // Kicked at 100, back after the ban with a token of 200, muted at 300: the kick does not apply to the
        // token of 200, the mute does; to a token of 301 only if that token does not permit audio.
        let now = Instant::now();
        let mut memo = ModerationMemo::default();
        memo.kicked("t/math", "bob", now, 100);
        memo.muted("t/math", "bob", MediaKind::Audio, true, now, 300);
        let mut muted = MediaFlags::default();
        muted.set(MediaKind::Audio, true);
        assert_eq!(memo.admission("t/math", "bob", Some(200), ALL), Admission::Restricted { muted, perms: None });
        assert_eq!(memo.admission("t/math", "bob", Some(90), ALL), Admission::Kicked);
        assert_eq!(memo.admission("t/math", "bob", Some(301), ALL), Admission::AsIssued, "issued after an unmute");
        let no_audio = MediaPerms { audio: false, ..ALL };
        assert_eq!(
            memo.admission("t/math", "bob", Some(301), no_audio),
            Admission::Restricted { muted, perms: None },
            "issued during the mute: the mute stays, so that a later perms command cannot lift it"
        );
        memo.muted("t/math", "bob", MediaKind::Audio, false, now, 400);
        assert_eq!(memo.admission("t/math", "bob", Some(401), no_audio), Admission::AsIssued, "lifted");
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
        let mut closes = ModerationMemo::default();
        for i in 0..MAX_DECISIONS + 10 {
            closes.room_closed(&format!("t/r{i}"), start + Duration::from_millis(i as u64), 10);
        }
        assert_eq!(closes.len(), MAX_DECISIONS, "closed rooms are bounded too");
        assert_eq!(closes.admission("t/r0", "amy", Some(1), ALL), Admission::AsIssued, "the oldest is forgotten");
        assert_eq!(closes.admission(&format!("t/r{}", MAX_DECISIONS + 9), "amy", Some(1), ALL), Admission::RoomClosed);
        assert_eq!(memo.admission("t/big", "u0", Some(1), ALL), Admission::AsIssued, "the oldest went first");
        assert_eq!(memo.admission("t/big", &format!("u{}", MAX_DECISIONS + 9), Some(1), ALL), Admission::Kicked);
    }
}
