//! Media: placement replies, media tokens, node loss, and the control commands moderation sends to the
//! room's media node. Placement itself is the registry's ([`crate::placement`]); the room asks through the
//! adapter ([`Output::PlaceMedia`]) and gets the answer back in [`Room::media_placed`].

use super::{internal, Output, Room, TimerKey};
use crate::auth::{MediaClaims, MediaPerms};
use crate::ids::{ConnId, Region, UserId};
use crate::media::{ControlCommand, MediaCaps};
use crate::placement::ClientLocation;
use crate::protocol::{ApiError, ErrorCode, MediaKind, NodeInfo, ServerFrame};
use crate::room::store::RoomStore;
use crate::time::Timestamp;

impl<S: RoomStore> Room<S> {
    /// `media.join`: asks the adapter to place the room's media (or confirm its current node).
    pub(super) fn media_join(
        &mut self,
        conn: ConnId,
        rid: Option<&str>,
        region: Option<String>,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        if let Some(region) = &region {
            Region::parse(region).map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("region: {e}")))?;
        }
        let user = self.conns.get(&conn).map(|c| c.record.user.clone());
        let member = user.as_ref().and_then(|user| self.members.get_mut(user));
        if member.is_some_and(|m| !m.media_joins.try_take(1, now.as_millis())) {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                "too many media.join: a few in a row, then one a second (the last media.assigned still holds until \
                 its expires_at)",
            ));
        }
        let record = self.conns.get(&conn).map(|c| &c.record);
        let geo = record.and_then(|r| r.geo);
        // Asking again for the node it already holds a token for is no new session (after a node loss it is).
        let current = self.meta.media.as_ref().map(|node| node.id.as_str());
        let granted = record
            .and_then(|r| self.members.get(&r.user))
            .is_some_and(|m| current.is_some() && m.record.media_node.as_deref() == current);
        let location = ClientLocation { region, geo };
        self.outbox.push_back(Output::PlaceMedia {
            conn,
            rid: rid.map(str::to_owned),
            location,
            new_session: !granted,
        });
        Ok(())
    }

    /// The registry answered a [`Output::PlaceMedia`]: reply `media.assigned` with a media token (or the error).
    pub fn media_placed(
        &mut self,
        conn: ConnId,
        rid: Option<String>,
        placed: Result<NodeInfo, ApiError>,
        now: Timestamp,
    ) {
        self.run_timers(now);
        let Some(user) = self.conns.get(&conn).map(|c| c.record.user.clone()) else {
            // The connection went away (or the room was cleared) while the registry placed the room. The
            // registry holds the placement all the same: remember it, so that a clear or the idle wipe
            // releases it rather than leaving it counted against the node until its lease ends.
            if let Ok(node) = placed {
                if let Err(e) = self.remember_node(node) {
                    self.poisoned |= e.code == ErrorCode::Internal;
                }
            }
            return;
        };
        match placed.and_then(|node| self.grant_media(&user, rid.clone(), node, now)) {
            Ok(frame) => self.send(conn, &frame),
            Err(e) => {
                self.poisoned |= e.code == ErrorCode::Internal && e.message.starts_with("room storage");
                self.send_error(conn, rid, e);
            }
        }
    }

    fn grant_media(
        &mut self,
        user: &UserId,
        rid: Option<String>,
        node: NodeInfo,
        now: Timestamp,
    ) -> Result<ServerFrame, ApiError> {
        self.remember_node(node.clone())?;
        self.note_media_granted(user, &node.id)?;
        let p = self.participant(user)?;
        let expires_at = now.as_secs() + self.limits.media_token_ttl_ms / 1000;
        let caps = MediaCaps::for_role(p.role);
        let claims = MediaClaims {
            sub: user.to_string(),
            room: self.meta.address.clone(),
            node: node.id.clone(),
            perms: MediaPerms::from_room(p.perms, p.muted),
            name: Some(p.name),
            caps: (!caps.is_unlimited()).then_some(caps),
            exp: expires_at,
            iat: Some(now.as_secs()),
        };
        let token = self.keys.media.sign(&claims).map_err(|e| e.to_api())?;
        Ok(ServerFrame::MediaAssigned { rid, node, token, expires_at })
    }

    /// Records that `user` holds a media token for `node` in this stay (stored when the node changes).
    fn note_media_granted(&mut self, user: &UserId, node: &str) -> Result<(), ApiError> {
        let Some(member) = self.members.get(user) else { return Ok(()) };
        if member.record.media_node.as_deref() == Some(node) {
            return Ok(());
        }
        let mut record = member.record.clone();
        record.media_node = Some(node.to_owned());
        self.save_member_record(record)
    }

    /// The room's media is on `node` (stored when it changes).
    fn remember_node(&mut self, node: NodeInfo) -> Result<(), ApiError> {
        if self.meta.media.as_ref() != Some(&node) {
            self.meta.media = Some(node);
            self.store.save_meta(&self.meta).map_err(internal)?;
        }
        Ok(())
    }

    /// The registry lost the room's node (`node_id`): forget it and tell everyone to `media.join` again.
    pub fn media_lost(&mut self, node_id: &str, reason: &str, now: Timestamp) {
        self.run_timers(now);
        if self.meta.media.as_ref().is_none_or(|n| n.id != node_id) {
            return;
        }
        self.meta.media = None;
        // Their sessions went with the node.
        self.forget_media_leavers();
        if self.store.save_meta(&self.meta).is_err() {
            self.poisoned = true;
        }
        self.broadcast(None, &ServerFrame::MediaMoved { reason: reason.to_owned() });
    }

    /// Drops every media grace (the room's media ended as a whole; the caller stores the meta).
    fn forget_media_leavers(&mut self) {
        for user in std::mem::take(&mut self.meta.media_leavers).into_keys() {
            self.timers.cancel(&TimerKey::MediaLeave(user));
        }
    }

    /// The node the room's media is on, if any.
    pub fn media_node(&self) -> Option<&NodeInfo> {
        self.meta.media.as_ref()
    }

    /// Queues a control command for the room's node (nothing when the room has no media).
    pub(super) fn control(&mut self, command: ControlCommand) {
        self.control_decided_at(command, None);
    }

    /// Queues `command` for the room's media node (if it has one), dated `decided_at` (`None`: when sent).
    fn control_decided_at(&mut self, command: ControlCommand, decided_at: Option<u64>) {
        if let Some(node) = self.meta.media.clone() {
            self.outbox.push_back(Output::MediaControl { node, command, decided_at });
        }
    }

    pub(super) fn control_mute(&mut self, user: &UserId, kind: MediaKind, muted: bool) {
        let room = self.meta.address.clone();
        self.control(ControlCommand::Mute { room, participant: user.to_string(), kind, muted });
    }

    pub(super) fn control_kick(&mut self, user: &UserId) {
        self.control_kick_decided_at(user, None);
    }

    /// A kick the node dates at second `decided_at` (its sessions end; media tokens issued in or before that
    /// second are refused); `None`: when it is sent.
    pub(super) fn control_kick_decided_at(&mut self, user: &UserId, decided_at: Option<u64>) {
        let command = ControlCommand::Kick { room: self.meta.address.clone(), participant: user.to_string() };
        self.control_decided_at(command, decided_at);
    }

    /// Sends `user`'s permissions to the node, then re-asserts each of its mutes.
    ///
    /// Mutes travel as `mute` commands of their own, so the node can tell a mute from a missing permission. A
    /// `perms` command replaces the sessions' permissions, and the node may not know every mute: a media token
    /// issued during a mute already carries that kind as not permitted, so the node admitted its session with
    /// no mute to remember (or the node restarted since). Re-asserting the mutes after the permissions keeps a
    /// mute in force however the node learned of it.
    pub(super) fn control_perms(&mut self, user: &UserId) {
        let Ok(p) = self.participant(user) else { return };
        let room = self.meta.address.clone();
        let perms = MediaPerms::from_room(p.perms, crate::protocol::MediaFlags::default());
        self.control(ControlCommand::Perms { room, participant: user.to_string(), perms });
        for kind in [MediaKind::Audio, MediaKind::Video, MediaKind::Screen] {
            if p.muted.get(kind) {
                self.control_mute(user, kind, true);
            }
        }
    }

    /// The room's media ends (clear, idle wipe): close it on the node and release the placement.
    pub(super) fn end_media(&mut self) {
        let room = self.meta.address.clone();
        self.control(ControlCommand::CloseRoom { room });
        self.forget_media_leavers();
        if self.meta.media.take().is_some() {
            self.outbox.push_back(Output::ReleaseMedia);
        }
    }
}
