//! Moderation and the admin API: shared by moderators' frames and the admin HTTP endpoints.
//!
//! Authority: a moderator acts only on participants whose role is at most its own, and grants at most its
//! own role; on itself it may tighten restrictions but not lift them (no self-unmute, no self-granted
//! permission). The admin API acts with `admin` authority.

use super::config::{RoomSettings, SettingsPatch};
use super::store::{Grant, ModerationRecord};
use super::{effective, internal, next_epoch, Room, TimerKey};
use crate::ids::UserId;
use crate::protocol::{
    close, ApiError, ChatMessage, ErrorCode, LeaveReason, MediaKind, NodeInfo, Participant, PermsPatch, Role, Sender,
    ServerFrame,
};
use crate::room::store::RoomStore;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Who performs a moderation action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Actor {
    /// A participant with `perms.moderate`.
    Member { id: UserId, role: Role },
    /// The admin HTTP API.
    Admin,
}

impl Actor {
    fn role(&self) -> Role {
        match self {
            Actor::Member { role, .. } => *role,
            Actor::Admin => Role::Admin,
        }
    }
}

/// `GET /v1/rooms/{room}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub room: String,
    pub epoch: String,
    pub seq: u64,
    pub participants: Vec<Participant>,
    pub connections: usize,
    pub settings: RoomSettings,
    /// The node the room's media is placed on, if any.
    pub media: Option<NodeInfo>,
}

impl<S: RoomStore> Room<S> {
    fn authorize(&self, actor: &Actor, target: &UserId) -> Result<Participant, ApiError> {
        let target = self.participant(target)?;
        if target.role > actor.role() {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("a {} cannot moderate a {}", actor.role().as_str(), target.role.as_str()),
            ));
        }
        Ok(target)
    }

    /// A moderator acting on itself may tighten its own restrictions but not lift them: otherwise a teacher
    /// muted or restricted by an admin (or a moderator by a peer) could undo the decision at once.
    fn refuse_self_lift(actor: &Actor, target: &UserId, lifts: bool, what: &str) -> Result<(), ApiError> {
        match actor {
            Actor::Member { id, .. } if id == target && lifts => Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("you cannot {what} yourself; another moderator (or an admin) can"),
            )),
            _ => Ok(()),
        }
    }

    /// A decision stands against moderators below the one who made it: a lift (unmute, a permission or a
    /// higher role granted) needs at least the decider's role. Without it a teacher could undo at once what an
    /// admin decided about another teacher.
    fn refuse_lift_below_decider(
        actor: &Actor,
        moderation: &ModerationRecord,
        lifts: bool,
        what: &str,
    ) -> Result<(), ApiError> {
        match moderation.decided_by {
            Some(decider) if lifts && actor.role() < decider => Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "this participant's restrictions were decided with the {decider} role; a {} cannot {what} \
                     them, someone with the {decider} role can",
                    actor.role().as_str(),
                    decider = decider.as_str()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// A moderator grants only permissions it has itself: otherwise a student whose token adds `moderate`
    /// (a teaching assistant) could hand `moderate` and `screen_share` to other students, and two of them
    /// could lift each other past anything the room decided.
    fn refuse_grant_beyond_own(&self, actor: &Actor, patch: &PermsPatch) -> Result<(), ApiError> {
        let Actor::Member { id, .. } = actor else { return Ok(()) };
        let own = self.participant(id)?.perms;
        let beyond: Vec<&str> = [
            ("chat", patch.chat, own.chat),
            ("stream", patch.stream, own.stream),
            ("screen_share", patch.screen_share, own.screen_share),
            ("moderate", patch.moderate, own.moderate),
        ]
        .into_iter()
        .filter(|(_, granted, has)| *granted == Some(true) && !has)
        .map(|(name, _, _)| name)
        .collect();
        if beyond.is_empty() {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("you cannot grant {}: you do not have it yourself", beyond.join(", ")),
        ))
    }

    /// The role `user`'s token grants (its role in force, `current`, if the room holds no grant for it).
    fn granted_role(&self, user: &UserId, current: &Participant) -> Role {
        self.members.get(user).map_or(current.role, |member| member.record.grant.role)
    }

    fn moderation_of(&self, user: &UserId) -> Result<ModerationRecord, ApiError> {
        Ok(self.store.moderation(user).map_err(internal)?.unwrap_or_default())
    }

    /// Removes `target` (close 4003 on every connection) and bans it for the kick ban period. Returns the
    /// `seq` of its `participant.left`.
    pub(crate) fn kick_as(&mut self, actor: &Actor, target: &UserId, now: Timestamp) -> Result<u64, ApiError> {
        self.authorize(actor, target)?;
        let mut moderation = self.moderation_of(target)?;
        let until = now.plus_ms(self.limits.kick_ban_ms);
        moderation.banned_until = Some(until);
        self.store.put_moderation(target, &moderation).map_err(internal)?;
        self.keep_until(until)?;
        let conns: Vec<_> = self.members.get(target).map(|m| m.conns.iter().copied().collect()).unwrap_or_default();
        for conn in conns {
            self.close_conn(conn, close::KICKED, "removed by a moderator", LeaveReason::Kicked, now);
        }
        self.control_kick(target);
        Ok(self.meta.seq)
    }

    /// Changes `target`'s role and/or permissions (kept for the room's lifetime, also across reconnects).
    pub(crate) fn update_as(
        &mut self,
        actor: &Actor,
        target: &UserId,
        role: Option<Role>,
        perms: Option<PermsPatch>,
        now: Timestamp,
    ) -> Result<Option<u64>, ApiError> {
        let current = self.authorize(actor, target)?;
        if role.is_none() && perms.is_none() {
            return Err(ApiError::new(ErrorCode::BadRequest, "participant.update needs a role or perms"));
        }
        if let Some(role) = role.filter(|r| *r > actor.role()) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("a {} cannot grant the {} role", actor.role().as_str(), role.as_str()),
            ));
        }
        let grants = perms.is_some_and(|p| [p.chat, p.stream, p.screen_share, p.moderate].contains(&Some(true)));
        Self::refuse_self_lift(actor, target, grants, "grant permissions to")?;
        if let Some(patch) = perms {
            self.refuse_grant_beyond_own(actor, &patch)?;
        }
        let mut moderation = self.moderation_of(target)?;
        let raises = role.is_some_and(|r| r > current.role);
        Self::refuse_lift_below_decider(actor, &moderation, grants || raises, "lift")?;
        if let Some(role) = role {
            moderation.role = Some(role);
        }
        if let Some(perms) = perms {
            moderation.perms = moderation.perms.merged(&perms);
        }
        moderation.decided(actor.role(), self.granted_role(target, &current));
        self.store.put_moderation(target, &moderation).map_err(internal)?;
        self.recompute(target, &moderation, None, now)
    }

    /// Mutes or unmutes one media kind of `target`.
    pub(crate) fn mute_as(
        &mut self,
        actor: &Actor,
        target: &UserId,
        kind: MediaKind,
        muted: bool,
        now: Timestamp,
    ) -> Result<Option<u64>, ApiError> {
        let current = self.authorize(actor, target)?;
        Self::refuse_self_lift(actor, target, !muted, "unmute")?;
        let mut moderation = self.moderation_of(target)?;
        Self::refuse_lift_below_decider(actor, &moderation, !muted, "lift")?;
        moderation.muted.set(kind, muted);
        moderation.decided(actor.role(), self.granted_role(target, &current));
        self.store.put_moderation(target, &moderation).map_err(internal)?;
        let seq = self.recompute(target, &moderation, None, now)?;
        // A mute that changed the participant went out with its `perms` command (`control_perms` re-asserts
        // every mute); an unmute, or a mute that changed nothing, is sent on its own.
        if !muted || seq.is_none() {
            self.control_mute(target, kind, muted);
        }
        Ok(seq)
    }

    /// A connection of `user` refreshed its token: its grant (and maybe name) changes.
    pub(crate) fn regrant(
        &mut self,
        user: &UserId,
        grant: Grant,
        name: Option<String>,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        let Some(member) = self.members.get_mut(user) else { return Ok(()) };
        member.record.grant = grant;
        let mut moderation = self.moderation_of(user)?;
        if moderation.decided_by.is_some() && !moderation.restricts(grant.role) {
            // The new token grants no more than the decisions left it (a demotion now matches the grant): nothing
            // is restricted any more, so nobody's authority is needed to lift anything.
            moderation.decided_by = None;
            self.store.put_moderation(user, &moderation).map_err(internal)?;
        }
        self.recompute(user, &moderation, name, now)?;
        Ok(())
    }

    /// Recomputes `user`'s role, permissions and mutes; logs `participant.updated` when anything changed.
    /// Returns that event's `seq`, or `None` when nothing changed (the ack then names no event).
    fn recompute(
        &mut self,
        user: &UserId,
        moderation: &ModerationRecord,
        name: Option<String>,
        now: Timestamp,
    ) -> Result<Option<u64>, ApiError> {
        let Some(member) = self.members.get(user) else { return Ok(None) };
        let mut record = member.record.clone();
        let (role, perms) = effective(&record.grant, moderation);
        let p = &mut record.participant;
        let before = p.clone();
        p.role = role;
        p.perms = perms;
        p.muted = moderation.muted;
        if let Some(name) = name {
            p.name = name;
        }
        // Whatever may no longer be published stops being published.
        p.media.audio &= perms.stream && !p.muted.audio;
        p.media.video &= perms.stream && !p.muted.video;
        p.media.screen &= perms.screen_share && !p.muted.screen;
        if *p == before {
            self.save_member_record(record)?;
            return Ok(None);
        }
        let perms_changed = p.perms != before.perms || p.muted != before.muted;
        self.save_member_record(record)?;
        let seq = self.log_participant_updated(user, now)?;
        if perms_changed {
            self.control_perms(user);
        }
        Ok(Some(seq))
    }

    /// Admin API: clears the room. Log, history, participants and every moderation decision are wiped, a new
    /// epoch starts, and every connection gets `room.cleared` and is closed with 4004. Settings are kept.
    pub fn clear(&mut self, now: Timestamp) -> Result<String, ApiError> {
        self.run_timers(now);
        self.clear_as(&Actor::Admin, now)
    }

    /// Clears the room on behalf of `actor`. A clear closes everyone's connection, so a moderator may clear
    /// only a room in which nobody present has a higher role, as for a kick. And a clear is not a way around a
    /// decision: a moderator's clear keeps every moderation decision (bans, cooldowns, mutes, roles and
    /// permissions granted or taken); the admin API's clear wipes them too.
    pub(super) fn clear_as(&mut self, actor: &Actor, now: Timestamp) -> Result<String, ApiError> {
        if let Some(above) = self.members.values().map(|m| &m.record.participant).find(|p| p.role > actor.role()) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "a {} cannot clear the room while {} \"{}\" (role {}) is in it; ask them, or use the admin API",
                    actor.role().as_str(),
                    above.name,
                    above.id,
                    above.role.as_str()
                ),
            ));
        }
        let result = self.clear_inner(actor, now);
        if matches!(&result, Err(e) if e.code == ErrorCode::Internal) {
            self.poisoned = true;
        }
        result
    }

    fn clear_inner(&mut self, actor: &Actor, now: Timestamp) -> Result<String, ApiError> {
        let keep_moderation = matches!(actor, Actor::Member { .. });
        self.store.wipe(keep_moderation).map_err(internal)?;
        if !keep_moderation {
            self.meta.bans_until = None;
        }
        self.end_media();
        self.meta.epoch = next_epoch(Some(&self.meta.epoch), now);
        self.meta.seq = 0;
        self.meta.empty_since = Some(now);
        self.store.save_meta(&self.meta).map_err(internal)?;
        let epoch = self.meta.epoch.clone();
        self.broadcast(None, &ServerFrame::RoomCleared { epoch: epoch.clone() });
        self.flush_all();
        self.coalescer.reset();
        let conns: Vec<_> = self.conns.keys().copied().collect();
        for conn in conns {
            self.outbox.push_back(super::Output::Close {
                conn,
                code: close::ROOM_CLEARED,
                reason: "room cleared".to_owned(),
            });
        }
        self.conns.clear();
        self.members.clear();
        self.timers.clear();
        self.timers.set(TimerKey::RoomCleanup, now.plus_ms(self.limits.idle_room_ttl_ms));
        Ok(epoch)
    }

    /// Admin API: the room's state.
    pub fn info(&mut self, now: Timestamp) -> RoomInfo {
        self.run_timers(now);
        RoomInfo {
            room: self.meta.address.clone(),
            epoch: self.meta.epoch.clone(),
            seq: self.meta.seq,
            participants: self.participants(),
            connections: self.conns.len(),
            settings: self.meta.settings.clone(),
            media: self.meta.media.clone(),
        }
    }

    /// Admin API: removes a participant and bans it for the kick ban period.
    pub fn kick(&mut self, target: &UserId, now: Timestamp) -> Result<u64, ApiError> {
        self.run_timers(now);
        let result = self.kick_as(&Actor::Admin, target, now);
        self.poisoned |= matches!(&result, Err(e) if e.code == ErrorCode::Internal);
        result
    }

    /// Admin API: an announcement, posted as a chat message from the `system` user.
    pub fn announce(&mut self, text: &str, name: &str, now: Timestamp) -> Result<ChatMessage, ApiError> {
        self.run_timers(now);
        let result = self.announce_inner(text, name, now);
        self.poisoned |= matches!(&result, Err(e) if e.code == ErrorCode::Internal);
        result
    }

    fn announce_inner(&mut self, text: &str, name: &str, now: Timestamp) -> Result<ChatMessage, ApiError> {
        self.check_chat_text(text)?;
        let seq = self.meta.seq + 1;
        let message = ChatMessage {
            id: self.message_id(seq),
            seq,
            from: Sender { id: UserId::system(), name: name.to_owned(), role: Role::Admin },
            text: text.to_owned(),
            reply_to: None,
            ts: now,
            edited_at: None,
        };
        if self.effective_settings().persist_messages {
            self.store.put_message(&message).map_err(internal)?;
        }
        let logged = message.clone();
        self.log_event(None, now, |seq, ts| ServerFrame::ChatMessage { seq, ts, message: logged })?;
        self.start_idle_period_if_empty(now)?;
        Ok(message)
    }

    /// A page of chat history: the newest `limit` messages before `before`, oldest first, and whether older
    /// ones exist.
    pub fn history(&self, before: Option<u64>, limit: Option<u32>) -> Result<(Vec<ChatMessage>, bool), ApiError> {
        let max = self.limits.history_page_max;
        let limit = limit.unwrap_or(50);
        if limit == 0 || limit > max {
            return Err(ApiError::new(ErrorCode::BadRequest, format!("limit must be 1 to {max}")));
        }
        let mut page = self.store.messages_before(before, limit + 1).map_err(internal)?;
        let has_more = page.len() > limit as usize;
        if has_more {
            page.remove(0);
        }
        Ok((page, has_more))
    }

    /// Admin API: changes the room's settings (capacity, history, persistence).
    pub fn update_settings(&mut self, patch: &SettingsPatch) -> Result<RoomSettings, ApiError> {
        let mut settings = self.meta.settings.clone();
        settings.apply(patch).map_err(|m| ApiError::new(ErrorCode::BadRequest, m))?;
        self.meta.settings = settings;
        self.store.save_meta(&self.meta).map_err(|e| {
            self.poisoned = true;
            internal(e)
        })?;
        // A lowered history limit applies at once, not at the next trim; history turned off keeps nothing (the
        // messages it kept would otherwise stay readable and editable).
        let effective = self.effective_settings();
        let keep = if effective.persist_messages { effective.history_limit } else { 0 };
        self.store.trim_messages(keep).map_err(|e| {
            self.poisoned = true;
            internal(e)
        })?;
        Ok(self.meta.settings.clone())
    }
}
