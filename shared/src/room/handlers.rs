//! Client frames: limits, parsing, idempotency, and one handler per request type.

use super::admin::Actor;
use super::{internal, Output, Room, TimerKey, Urgency};
use crate::ids::{ConnId, UserId};
use crate::protocol::{
    close, parse_client_frame, peek_rid, Ack, ApiError, ChatMessage, ClientRequest, ErrorCode, LeaveReason, MediaFlags,
    Sender, ServerFrame, Status,
};
use crate::room::store::RoomStore;
use crate::time::Timestamp;
use std::sync::Arc;

/// What a handled request answers.
enum Reply {
    /// `ack` (sent only when the request had a `rid`).
    Ack { seq: Option<u64>, id: Option<String>, exp: Option<u64> },
    /// A reply frame of its own (it carries the `rid` itself).
    Frame(ServerFrame),
    /// Nothing more (the handler already answered).
    Done,
}

impl Reply {
    fn ok() -> Self {
        Reply::Ack { seq: None, id: None, exp: None }
    }
    fn logged(seq: u64) -> Self {
        Reply::Ack { seq: Some(seq), id: None, exp: None }
    }
}

/// Requests whose successful reply is stored per `(user, rid)`, so a retry has no second effect.
fn is_tracked(request: &ClientRequest) -> bool {
    matches!(
        request,
        ClientRequest::ChatSend { .. }
            | ClientRequest::ChatEdit { .. }
            | ClientRequest::ChatDelete { .. }
            | ClientRequest::Hand { .. }
            | ClientRequest::MediaState { .. }
            | ClientRequest::ParticipantKick { .. }
            | ClientRequest::ParticipantUpdate { .. }
            | ClientRequest::ParticipantMute { .. }
    )
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Forbidden, message)
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}

impl<S: RoomStore> Room<S> {
    /// A text frame from `conn`. Never fails: problems become error frames (and, for sustained abuse or a
    /// frame beyond the hard size limit, a close).
    pub fn receive(&mut self, conn: ConnId, text: &str, now: Timestamp) {
        self.run_timers(now);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let limits = &self.limits;
        if text.len() > limits.hard_max_frame_bytes as usize {
            let reason =
                format!("frame of {} bytes is far beyond the {} byte limit", text.len(), limits.max_frame_bytes);
            self.close_conn(conn, close::TOO_LARGE, &reason, LeaveReason::Policy, now);
            return;
        }
        if text == "ping" {
            // Straight to the outbox: `pong` is not JSON, so it must never be queued into a batch array.
            self.outbox.push_back(Output::Send { to: vec![conn], text: Arc::from("pong") });
            return;
        }
        if text.len() > limits.max_frame_bytes as usize {
            let error = ApiError::new(
                ErrorCode::TooLarge,
                format!("frame of {} bytes exceeds the {} byte limit", text.len(), limits.max_frame_bytes),
            );
            self.send_error(conn, peek_rid(text), error);
            self.strike(conn, now);
            return;
        }
        if !c.bucket.try_take(1, now.as_millis()) {
            let error = ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "too many frames: at most {} per second with bursts of {}; this frame was dropped",
                    limits.rate_per_sec, limits.rate_burst
                ),
            );
            self.send_error(conn, peek_rid(text), error);
            self.strike(conn, now);
            return;
        }
        let user = c.record.user.clone();
        let frame = match parse_client_frame(text) {
            Ok(frame) => frame,
            Err(e) => {
                self.send_error(conn, e.rid, e.error);
                self.strike(conn, now);
                return;
            }
        };
        if let Err(e) = self.touch(&user, now) {
            self.fail(conn, frame.rid, e);
            return;
        }
        let tracked = is_tracked(&frame.request);
        if let (true, Some(rid)) = (tracked, frame.rid.as_deref()) {
            match self.store.reply(&user, rid) {
                Ok(Some(reply)) => {
                    self.emit(vec![conn], Arc::from(reply), Urgency::Prompt);
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    self.fail(conn, frame.rid, internal(e));
                    return;
                }
            }
        }
        let rid = frame.rid;
        match self.handle(conn, &user, rid.as_deref(), frame.request, now) {
            Ok(Reply::Ack { seq, id, exp }) => {
                let Some(rid) = rid else { return };
                let text = ServerFrame::Ack(Ack { rid: rid.clone(), seq, id, exp }).to_json();
                if tracked {
                    // A reply that cannot be stored only weakens idempotency; rebuild the room from storage.
                    self.poisoned |= self.store.put_reply(&user, &rid, &text).is_err();
                    self.replies_stored += 1;
                    // The count lives in memory and starts over at every wake-up: trimming on the first reply
                    // of each life too keeps the table within the limit + 63 however often the room sleeps.
                    if self.replies_stored == 1 || self.replies_stored.is_multiple_of(64) {
                        self.poisoned |= self.store.trim_replies(self.limits.reply_limit).is_err();
                    }
                }
                if self.conns.contains_key(&conn) {
                    self.emit(vec![conn], Arc::from(text), Urgency::Prompt);
                }
            }
            Ok(Reply::Frame(frame)) => self.send(conn, &frame),
            Ok(Reply::Done) => {}
            Err(e) => self.fail(conn, rid, e),
        }
    }

    /// A binary frame from `conn`: the protocol is JSON text only.
    pub fn receive_binary(&mut self, conn: ConnId, len: usize, now: Timestamp) {
        self.run_timers(now);
        if !self.conns.contains_key(&conn) {
            return;
        }
        if len > self.limits.hard_max_frame_bytes as usize {
            // The same hard limit as a text frame: close 4009 and the cool-down, not a strike.
            let reason = format!("frame of {len} bytes is far beyond the {} byte limit", self.limits.max_frame_bytes);
            self.close_conn(conn, close::TOO_LARGE, &reason, LeaveReason::Policy, now);
            return;
        }
        let error = bad_request(format!("binary frames ({len} bytes) are not supported; send JSON text frames"));
        self.send_error(conn, None, error);
        self.strike(conn, now);
    }

    fn fail(&mut self, conn: ConnId, rid: Option<String>, error: ApiError) {
        self.poisoned |= error.code == ErrorCode::Internal;
        if self.conns.contains_key(&conn) {
            self.send_error(conn, rid, error);
        }
    }

    /// Counts a refused frame against `conn`; too many close it with 4008.
    fn strike(&mut self, conn: ConnId, now: Timestamp) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.strikes.drain(1, now.as_millis()) {
            let reason = "too many refused frames (rate limit, malformed or oversized); slow down and reconnect";
            self.close_conn(conn, close::POLICY, reason, LeaveReason::Policy, now);
        }
    }

    /// Records activity of `user`: `last_seen` (persisted at most once a second) and back from auto-idle.
    fn touch(&mut self, user: &UserId, now: Timestamp) -> Result<(), ApiError> {
        let Some(member) = self.members.get(user) else { return Ok(()) };
        let seen = now.floor_to_second();
        let record = &member.record;
        if record.participant.last_seen == seen && !record.auto_idle {
            return Ok(());
        }
        let mut record = record.clone();
        record.participant.last_seen = seen;
        let back = record.auto_idle;
        if back {
            record.auto_idle = false;
            record.participant.status = Status::Active;
        }
        self.save_member_record(record)?;
        self.schedule_member(user);
        if back {
            self.broadcast(None, &ServerFrame::Presence { id: user.clone(), status: Status::Active, last_seen: seen });
        }
        Ok(())
    }

    fn handle(
        &mut self,
        conn: ConnId,
        user: &UserId,
        rid: Option<&str>,
        request: ClientRequest,
        now: Timestamp,
    ) -> Result<Reply, ApiError> {
        match request {
            ClientRequest::ChatSend { text, reply_to } => self.chat_send(user, text, reply_to, now),
            ClientRequest::ChatEdit { id, text } => self.chat_edit(user, &id, text, now),
            ClientRequest::ChatDelete { id } => self.chat_delete(user, &id, now),
            ClientRequest::ChatRead { seq } => self.chat_read(conn, user, seq),
            ClientRequest::Typing { active } => self.typing(conn, user, active, now),
            ClientRequest::Presence { status } => self.presence(conn, user, status),
            ClientRequest::Hand { raised } => self.hand(user, raised, now),
            ClientRequest::Reaction { emoji } => self.reaction(conn, user, emoji),
            ClientRequest::Cursor { line, column } => {
                self.cursor(conn, user, line, column, now);
                Ok(Reply::ok())
            }
            ClientRequest::History { before, limit } => {
                let (messages, has_more) = self.history(before, limit)?;
                Ok(Reply::Frame(ServerFrame::History { rid: rid.map(str::to_owned), messages, has_more }))
            }
            ClientRequest::MediaJoin { region } => {
                self.media_join(conn, rid, region, now)?;
                Ok(Reply::Done)
            }
            ClientRequest::MediaState { audio, video, screen } => {
                self.media_state(user, MediaFlags { audio, video, screen }, now)
            }
            ClientRequest::AuthRefresh { token } => self.auth_refresh(conn, user, &token, now),
            ClientRequest::RoomClear => {
                let actor = self.actor(user, "room.clear")?;
                // The ack must precede the `room.cleared` and close the clear sends, but only if it worked:
                // everything queued goes out first, then the ack is slotted in ahead of what the clear sent.
                self.flush_all();
                let ack_at = self.outbox.len();
                self.clear_as(&actor, now)?;
                if let Some(rid) = rid {
                    let ack = ServerFrame::Ack(Ack { rid: rid.to_owned(), seq: None, id: None, exp: None });
                    self.outbox.insert(ack_at, Output::Send { to: vec![conn], text: Arc::from(ack.to_json()) });
                }
                Ok(Reply::Done)
            }
            ClientRequest::ParticipantKick { id } => {
                let actor = self.actor(user, "participant.kick")?;
                if id == *user {
                    return Err(bad_request("you cannot kick yourself; close the connection instead"));
                }
                Ok(Reply::logged(self.kick_as(&actor, &id, now)?))
            }
            ClientRequest::ParticipantUpdate { id, role, perms } => {
                let actor = self.actor(user, "participant.update")?;
                Ok(Reply::Ack { seq: self.update_as(&actor, &id, role, perms, now)?, id: None, exp: None })
            }
            ClientRequest::ParticipantMute { id, kind, muted } => {
                let actor = self.actor(user, "participant.mute")?;
                Ok(Reply::Ack { seq: self.mute_as(&actor, &id, kind, muted, now)?, id: None, exp: None })
            }
        }
    }

    fn sender(&self, user: &UserId) -> Result<Sender, ApiError> {
        let p = self.participant(user)?;
        Ok(Sender { id: p.id, name: p.name, role: p.role })
    }

    pub(super) fn check_chat_text(&self, text: &str) -> Result<(), ApiError> {
        if text.trim().is_empty() {
            return Err(bad_request("chat text is empty"));
        }
        let chars = text.chars().count();
        let max = self.limits.max_chat_chars as usize;
        if chars > max {
            return Err(ApiError::new(
                ErrorCode::TooLarge,
                format!("chat text is {chars} characters; the limit is {max}"),
            ));
        }
        Ok(())
    }

    fn check_message_id(id: &str) -> Result<(), ApiError> {
        if id.is_empty() || id.len() > 64 {
            return Err(bad_request("message id must be 1 to 64 characters"));
        }
        Ok(())
    }

    fn chat_send(
        &mut self,
        user: &UserId,
        text: String,
        reply_to: Option<String>,
        now: Timestamp,
    ) -> Result<Reply, ApiError> {
        if !self.participant(user)?.perms.chat {
            return Err(forbidden("you may not chat in this room (perms.chat is off)"));
        }
        self.check_chat_text(&text)?;
        let persist = self.effective_settings().persist_messages;
        if let Some(parent) = &reply_to {
            Self::check_message_id(parent)?;
            if persist && self.store.message(parent).map_err(internal)?.is_none() {
                return Err(ApiError::new(ErrorCode::NotFound, format!("reply_to: no message \"{parent}\"")));
            }
        }
        let from = self.sender(user)?;
        let seq = self.meta.seq + 1;
        let message = ChatMessage { id: self.message_id(seq), seq, from, text, reply_to, ts: now, edited_at: None };
        if persist {
            self.store.put_message(&message).map_err(internal)?;
        }
        let id = message.id.clone();
        self.log_event(None, now, |seq, ts| ServerFrame::ChatMessage { seq, ts, message })?;
        // The message is logged and sent: from here the request has succeeded, and failing it would let a
        // retry with the same `rid` log the message twice. A storage failure still drops the room's cache.
        if self.members.get(user).is_some_and(|m| m.record.typing_until.is_some())
            && self.stop_typing(user, None).is_err()
        {
            self.poisoned = true;
        }
        Ok(Reply::Ack { seq: Some(seq), id: Some(id), exp: None })
    }

    /// The message `id`, if `user` may change it: its author, or a moderator whose role is at least the
    /// author's (the moderation authority rule: a teacher cannot rewrite an admin's announcement).
    fn editable_message(&self, user: &UserId, id: &str) -> Result<ChatMessage, ApiError> {
        Self::check_message_id(id)?;
        let message =
            self.store.message(id).map_err(internal)?.ok_or_else(|| {
                ApiError::new(ErrorCode::NotFound, format!("no message \"{id}\" in this room's history"))
            })?;
        let me = self.participant(user)?;
        if me.perms.moderate {
            if message.from.id != *user && message.from.role > me.role {
                return Err(forbidden(format!(
                    "a {} cannot change a message from a {}",
                    me.role.as_str(),
                    message.from.role.as_str()
                )));
            }
            return Ok(message);
        }
        if message.from.id != *user {
            return Err(forbidden("only the author or a moderator may change this message"));
        }
        if !me.perms.chat {
            return Err(forbidden("your chat permission was revoked, so you cannot change your messages either"));
        }
        Ok(message)
    }

    fn chat_edit(&mut self, user: &UserId, id: &str, text: String, now: Timestamp) -> Result<Reply, ApiError> {
        let mut message = self.editable_message(user, id)?;
        self.check_chat_text(&text)?;
        message.text = text;
        message.edited_at = Some(now);
        self.store.put_message(&message).map_err(internal)?;
        let id = message.id.clone();
        let seq = self.log_event(None, now, |seq, ts| ServerFrame::ChatEdited { seq, ts, message })?;
        Ok(Reply::Ack { seq: Some(seq), id: Some(id), exp: None })
    }

    fn chat_delete(&mut self, user: &UserId, id: &str, now: Timestamp) -> Result<Reply, ApiError> {
        let message = self.editable_message(user, id)?;
        self.store.delete_message(&message.id).map_err(internal)?;
        let id = message.id;
        let deleted = id.clone();
        let seq = self.log_event(None, now, |seq, ts| ServerFrame::ChatDeleted { seq, ts, id: deleted })?;
        Ok(Reply::Ack { seq: Some(seq), id: Some(id), exp: None })
    }

    fn chat_read(&mut self, conn: ConnId, user: &UserId, seq: u64) -> Result<Reply, ApiError> {
        if seq > self.meta.seq {
            return Err(bad_request(format!("seq {seq} is beyond the room's latest seq {}", self.meta.seq)));
        }
        let Some(member) = self.members.get(user) else { return Ok(Reply::ok()) };
        if seq > member.record.participant.last_read {
            let mut record = member.record.clone();
            record.participant.last_read = seq;
            self.save_member_record(record)?;
            self.broadcast(Some(conn), &ServerFrame::Read { id: user.clone(), seq });
        }
        Ok(Reply::ok())
    }

    fn typing(&mut self, conn: ConnId, user: &UserId, active: bool, now: Timestamp) -> Result<Reply, ApiError> {
        let Some(member) = self.members.get(user) else { return Ok(Reply::ok()) };
        if active && !member.record.participant.perms.chat {
            return Err(forbidden("you may not chat in this room (perms.chat is off)"));
        }
        let was_typing = member.record.typing_until.is_some();
        if !active {
            if was_typing {
                // Like `typing {active: true}`, the sender's own connection is not told what it said.
                self.stop_typing(user, Some(conn))?;
            }
            return Ok(Reply::ok());
        }
        let mut record = member.record.clone();
        let until = now.plus_ms(self.limits.typing_ttl_ms);
        record.typing_until = Some(until);
        self.save_member_record(record)?;
        self.timers.set(TimerKey::Typing(user.clone()), until);
        if !was_typing {
            self.broadcast(Some(conn), &ServerFrame::Typing { id: user.clone(), active: true });
        }
        Ok(Reply::ok())
    }

    fn presence(&mut self, conn: ConnId, user: &UserId, status: Status) -> Result<Reply, ApiError> {
        let Some(member) = self.members.get(user) else { return Ok(Reply::ok()) };
        let mut record = member.record.clone();
        let changed = record.participant.status != status;
        record.participant.status = status;
        record.auto_idle = false;
        let last_seen = record.participant.last_seen;
        self.save_member_record(record)?;
        self.schedule_member(user);
        if changed {
            self.broadcast(Some(conn), &ServerFrame::Presence { id: user.clone(), status, last_seen });
        }
        Ok(Reply::ok())
    }

    fn hand(&mut self, user: &UserId, raised: bool, now: Timestamp) -> Result<Reply, ApiError> {
        let Some(member) = self.members.get(user) else { return Ok(Reply::ok()) };
        if member.record.participant.hand_raised == raised {
            return Ok(Reply::ok());
        }
        let mut record = member.record.clone();
        record.participant.hand_raised = raised;
        self.save_member_record(record)?;
        Ok(Reply::logged(self.log_participant_updated(user, now)?))
    }

    fn reaction(&mut self, conn: ConnId, user: &UserId, emoji: String) -> Result<Reply, ApiError> {
        // A reaction is free text to everyone, so whoever may not chat may not react either.
        if !self.participant(user)?.perms.chat {
            return Err(forbidden("you may not react in this room (perms.chat is off)"));
        }
        let chars = emoji.chars().count();
        let max = self.limits.max_reaction_chars as usize;
        if chars == 0 || chars > max || emoji.chars().any(char::is_control) {
            return Err(bad_request(format!("a reaction is 1 to {max} characters without control characters")));
        }
        self.broadcast(Some(conn), &ServerFrame::Reaction { id: user.clone(), emoji });
        Ok(Reply::ok())
    }

    fn cursor(&mut self, conn: ConnId, user: &UserId, line: u32, column: u32, now: Timestamp) {
        let interval = self.limits.cursor_interval_ms;
        let Some(member) = self.members.get_mut(user) else { return };
        let slot = &mut member.cursor;
        let free = slot.last_sent.is_none_or(|at| now.since(at) >= interval);
        if free && slot.pending.is_none() {
            slot.last_sent = Some(now);
            self.broadcast(Some(conn), &ServerFrame::Cursor { id: user.clone(), line, column });
        } else {
            slot.pending = Some((conn, line, column));
            let at = slot.last_sent.unwrap_or(now).plus_ms(interval);
            self.timers.set(TimerKey::CursorFlush(user.clone()), at);
        }
    }

    fn media_state(&mut self, user: &UserId, media: MediaFlags, now: Timestamp) -> Result<Reply, ApiError> {
        let p = self.participant(user)?;
        for (on, kind) in [
            (media.audio, crate::protocol::MediaKind::Audio),
            (media.video, crate::protocol::MediaKind::Video),
            (media.screen, crate::protocol::MediaKind::Screen),
        ] {
            if !on {
                continue;
            }
            if p.muted.get(kind) {
                return Err(forbidden(format!("a moderator muted your {}", kind.as_str())));
            }
            let allowed =
                if kind == crate::protocol::MediaKind::Screen { p.perms.screen_share } else { p.perms.stream };
            if !allowed {
                return Err(forbidden(format!("you may not publish {} in this room", kind.as_str())));
            }
        }
        if p.media == media {
            return Ok(Reply::ok());
        }
        let Some(member) = self.members.get(user) else { return Ok(Reply::ok()) };
        let mut record = member.record.clone();
        record.participant.media = media;
        self.save_member_record(record)?;
        Ok(Reply::logged(self.log_participant_updated(user, now)?))
    }

    fn auth_refresh(&mut self, conn: ConnId, user: &UserId, token: &str, now: Timestamp) -> Result<Reply, ApiError> {
        let identity = self.keys.user.verify_user(token, now).map_err(|e| e.to_api())?;
        if identity.user != *user {
            return Err(forbidden("the new token is for another user"));
        }
        // Fail closed: a room that does not know its own address cannot check the token's scope.
        let (Some(tenant), Some(room)) = (&self.tenant, &self.room_id) else {
            return Err(ApiError::new(
                ErrorCode::Internal,
                "this room does not know its address, so it cannot check a new token; reconnect with it instead",
            ));
        };
        if *tenant != identity.tenant {
            return Err(forbidden("the new token is for another tenant"));
        }
        if !identity.may_enter(room) {
            return Err(forbidden("the new token does not allow this room"));
        }
        let Some(c) = self.conns.get_mut(&conn) else { return Ok(Reply::Done) };
        c.record.exp = identity.exp;
        c.record.warned = false;
        c.record.name = identity.name.clone();
        c.record.role = identity.role;
        c.record.perms = identity.perms;
        let record = c.record.clone();
        self.schedule_token(&record);
        self.outbox.push_back(Output::Attach { record });
        let grant = super::store::Grant { role: identity.role, perms: identity.perms };
        self.regrant(user, grant, Some(identity.name), now)?;
        Ok(Reply::Ack { seq: None, id: None, exp: Some(identity.exp) })
    }

    fn actor(&self, user: &UserId, request: &str) -> Result<Actor, ApiError> {
        self.require_moderator(user, request)?;
        Ok(Actor::Member { id: user.clone(), role: self.participant(user)?.role })
    }

    fn require_moderator(&self, user: &UserId, request: &str) -> Result<(), ApiError> {
        if self.participant(user)?.perms.moderate {
            Ok(())
        } else {
            Err(forbidden(format!("{request} needs the moderate permission (a teacher, or perms.moderate)")))
        }
    }
}
