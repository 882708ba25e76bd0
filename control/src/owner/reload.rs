//! The owner's side of [`Reload`]: what another node wrote to the shared
//! store, read again and applied to this node's rooms and sessions.
//!
//! Nothing here publishes the change's own event (`RoomUpdated`,
//! `TokensRevoked`, ...): the node that made it did, on the shared feed.
//! What this node publishes is what it does to its own sessions (their
//! `ParticipantLeft` events, a room-full alarm that a raised limit clears).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::{Owner, RoomState};
use crate::camera::CameraSpec;
use crate::core::Result;
use crate::issued::IssuedToken;
use crate::names::RoomName;
use crate::reload::{Reload, Reloaded};
use crate::room::RoomSpec;

impl Owner {
    /// Reads `what` again from the store and applies it; answers what the
    /// media plane is to close.
    pub(super) fn reload(&mut self, what: Reload, now: Instant) -> Result<Reloaded> {
        let mut out = Reloaded::default();
        match what {
            Reload::Room(name) => match self.store.room(&name)? {
                Some(spec) => self.room_changed(spec, now, &mut out),
                None => self.room_gone(&name, &mut out),
            },
            Reload::Tokens(ids) => {
                let records = self.store.issued_tokens_by_id(&ids)?;
                self.tokens_changed(&ids, records, &mut out);
            }
            Reload::Alarms(ids) => {
                let records = self.store.alarms_by_id(&ids)?;
                self.alarm_log.merge(&ids, records);
            }
            Reload::Cameras(name) => {
                let specs = self
                    .store
                    .cameras()?
                    .into_iter()
                    .filter(|c| c.room == name)
                    .collect();
                self.cameras_changed(&name, specs, now);
            }
            Reload::Everything { restore } => {
                if restore {
                    self.restore()?;
                }
                self.reload_everything(now, &mut out)?;
            }
        }
        Ok(out)
    }

    /// With a shared store, a room unknown here may have just been
    /// created at another node whose notice is still on its way: reads it
    /// before answering, so that a request right after CreateRoom
    /// elsewhere is not refused. Only requests that passed their
    /// signature check (or the admin key) get here, so an unknown name
    /// costs a read only to holders of valid credentials.
    pub(super) fn catch_up_room(&mut self, name: &RoomName, now: Instant) -> Result<()> {
        if !self.store.shared() || self.rooms.contains_key(name) {
            return Ok(());
        }
        // The store away: "no such room" would be a guess; the caller
        // answers UNAVAILABLE (503), to be retried.
        self.reload(Reload::Room(name.clone()), now).map(|_| ())
    }

    /// Like [`catch_up_room`](Self::catch_up_room), for a token issued at
    /// another node moments ago (RevokeToken right after CreateToken).
    pub(super) fn catch_up_token(&mut self, id: &str, now: Instant) -> Result<()> {
        if !self.store.shared() || self.issued.all().any(|t| t.id == id) {
            return Ok(());
        }
        self.reload(Reload::Tokens(vec![id.to_owned()]), now)
            .map(|_| ())
    }

    fn reload_everything(&mut self, now: Instant, out: &mut Reloaded) -> Result<()> {
        let specs = self.store.rooms()?;
        let stored: BTreeSet<RoomName> = specs.iter().map(|s| s.name.clone()).collect();
        let gone: Vec<RoomName> = self
            .rooms
            .iter()
            .filter(|(name, room)| room.managed && !room.closing && !stored.contains(*name))
            .map(|(name, _)| name.clone())
            .collect();
        for spec in specs {
            self.room_changed(spec, now, out);
        }
        for name in gone {
            self.room_gone(&name, out);
        }
        let tokens = self.store.issued_tokens()?;
        let mut ids: Vec<String> = self.issued.all().map(|t| t.id.clone()).collect();
        ids.extend(tokens.iter().map(|t| t.id.clone()));
        self.tokens_changed(&ids, tokens, out);
        let alarms = self.store.alarms()?;
        let mut ids: Vec<u64> = self.alarm_log.records().map(|a| a.id).collect();
        ids.extend(alarms.iter().map(|a| a.id));
        self.alarm_log.merge(&ids, alarms);
        let mut cameras: BTreeMap<RoomName, Vec<CameraSpec>> = self
            .rooms
            .iter()
            .filter(|(_, room)| room.managed && !room.closing)
            .map(|(name, _)| (name.clone(), Vec::new()))
            .collect();
        for camera in self.store.cameras()? {
            if let Some(room) = cameras.get_mut(&camera.room) {
                room.push(camera);
            }
        }
        for (room, specs) in cameras {
            self.cameras_changed(&room, specs, now);
        }
        Ok(())
    }

    /// Writes what this node holds back to a store that lost its data.
    /// Nodes doing so at once write the same shared facts; where they
    /// differ (a node that had not heard of a change yet), the last write
    /// wins, as with any two writes.
    fn restore(&mut self) -> Result<()> {
        let rooms: Vec<RoomSpec> = self
            .rooms
            .values()
            .filter(|room| room.managed && !room.closing)
            .map(|room| room.spec.clone())
            .collect();
        for spec in &rooms {
            self.store.put_room(spec)?;
        }
        let tokens: Vec<IssuedToken> = self.issued.all().cloned().collect();
        self.store.update_issued_tokens(&tokens, &[])?;
        let alarms: Vec<_> = self.alarm_log.records().cloned().collect();
        self.store.update_alarms(&alarms, &[])?;
        for camera in self.camera_specs() {
            self.store.put_camera(&camera)?;
        }
        tracing::warn!(
            rooms = rooms.len(),
            tokens = tokens.len(),
            alarms = alarms.len(),
            "the shared store had lost its data: wrote back what this node holds"
        );
        Ok(())
    }

    /// A room as another node stored it: new here, or its settings, bans
    /// and token generation replaced (its sessions, streams and calls
    /// kept). Those whose tokens it revoked, or whom it newly bans, are
    /// hung up; a raised limit may clear this node's room-full alarm.
    fn room_changed(&mut self, spec: RoomSpec, now: Instant, out: &mut Reloaded) {
        let name = spec.name.clone();
        let now_ms = self.unix_ms_at(now);
        let Some(room) = self.rooms.get(&name) else {
            self.rooms.insert(name, RoomState::new(spec, true));
            return;
        };
        if room.closing {
            // Deleted here and recreated elsewhere before this node's last
            // session of it ended: the next full reload (or change) brings
            // the new room in once the old one is gone.
            tracing::debug!(room = %name, "room recreated elsewhere while closing here");
            return;
        }
        let old = room.spec.clone();
        if old == spec && room.managed {
            return;
        }
        let identities: Vec<String> = {
            let mut ids: Vec<String> = room
                .sessions
                .keys()
                .filter_map(|s| self.sessions.get(s))
                .filter(|info| !self.is_camera_identity(&name, &info.identity))
                .map(|info| info.identity.clone())
                .collect();
            ids.sort();
            ids.dedup();
            ids
        };
        if spec.incarnation != old.incarnation {
            // Deleted and created again elsewhere while this node missed
            // the delete: its sessions were admitted to the old room.
            out.closed_rooms.push(name.clone());
        } else if spec.token_generation > old.token_generation {
            out.hang_ups
                .extend(identities.iter().map(|id| (name.clone(), id.clone())));
        } else {
            let newly_banned = spec
                .bans_in_force(now_ms)
                .into_iter()
                .filter(|(who, until)| old.bans.get(who) != Some(until))
                .map(|(who, _)| who);
            for who in newly_banned {
                if identities.contains(&who) {
                    out.hang_ups.push((name.clone(), who));
                }
            }
        }
        let limits_changed = spec.limits != old.limits;
        let room = self.rooms.get_mut(&name).expect("looked up above");
        room.spec = spec;
        room.managed = true;
        if limits_changed && let Some(cleared) = self.no_longer_full(&name) {
            self.publish(&name, None, cleared);
        }
    }

    /// A room another node deleted: what DeleteRoom does here but the
    /// store delete (done) and the `RoomDeleted` event (announced there).
    fn room_gone(&mut self, name: &RoomName, out: &mut Reloaded) {
        if !self
            .rooms
            .get(name)
            .is_some_and(|room| room.managed && !room.closing)
        {
            return;
        }
        self.drop_cameras(name);
        self.close_room(name, false);
        out.closed_rooms.push(name.clone());
    }

    /// The tokens `ids` as the store holds them now (`records`; an id
    /// without one was forgotten): a token newly revoked hangs up its
    /// identity's sessions in its room, as RevokeToken does where it is
    /// called.
    fn tokens_changed(&mut self, ids: &[String], records: Vec<IssuedToken>, out: &mut Reloaded) {
        let mut gone: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        for token in records {
            gone.remove(token.id.as_str());
            let newly_revoked = token.revoked_at_ms.is_some() && !self.issued.is_revoked(&token.id);
            let live_incarnation = self
                .live_room(&token.room)
                .is_ok_and(|room| room.spec.incarnation == token.incarnation);
            if newly_revoked
                && live_incarnation
                && !self.is_camera_identity(&token.room, &token.identity)
            {
                out.hang_ups
                    .push((token.room.clone(), token.identity.clone()));
            }
            self.issued.insert(token);
        }
        for id in gone {
            self.issued.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Harness, room};
    use crate::core::Msg;
    use crate::event::{EventKind, LeaveReason, SessionRole};
    use crate::issued::IssuedToken;
    use crate::reload::Reload;
    use crate::room::Limits;
    use crate::store::Store;

    fn reload(h: &mut Harness, what: Reload) -> crate::reload::Reloaded {
        h.ask(|reply| Msg::Reload { what, reply }).unwrap()
    }

    #[test]
    fn changes_made_elsewhere_hang_up_or_close_what_they_concern_here() {
        let mut h = Harness::new(Limits::default());
        h.start("s1", "cam-1", SessionRole::Publisher, "cam-1");
        let spec = h.owner.rooms[&room()].spec.clone();
        h.store.put_room(&spec).unwrap();

        // cam-1's token, revoked at another node.
        let token = IssuedToken {
            id: "t1".into(),
            room: room(),
            incarnation: spec.incarnation,
            identity: "cam-1".into(),
            expires_at: u64::MAX / 2,
            revoked_at_ms: None,
        };
        h.owner.issued.insert(token.clone());
        let revoked = IssuedToken {
            revoked_at_ms: Some(1),
            ..token
        };
        h.store.update_issued_tokens(&[revoked], &[]).unwrap();
        let done = reload(&mut h, Reload::Tokens(vec!["t1".into()]));
        assert_eq!(done.hang_ups, vec![(room(), "cam-1".to_owned())]);
        assert!(h.owner.issued.is_revoked("t1"));
        let again = reload(&mut h, Reload::Tokens(vec!["t1".into()]));
        assert!(again.hang_ups.is_empty(), "revoked once");

        // Every token of the room revoked elsewhere (a new generation),
        // with new limits: the sessions stay, the settings change.
        let mut next = spec.clone();
        next.token_generation += 1;
        next.limits.max_viewers = Some(3);
        h.store.put_room(&next).unwrap();
        let done = reload(&mut h, Reload::Room(room()));
        assert_eq!(done.hang_ups, vec![(room(), "cam-1".to_owned())]);
        assert_eq!(h.owner.rooms[&room()].spec, next);

        // Deleted elsewhere: closed here, announced there, not here.
        h.store.delete_room(&room()).unwrap();
        let done = reload(&mut h, Reload::Room(room()));
        assert_eq!(done.closed_rooms, vec![room()]);
        h.end("s1", LeaveReason::RoomClosed);
        assert!(!h.owner.rooms.contains_key(&room()));
        assert!(
            !h.events().iter().any(|e| e.kind == EventKind::RoomDeleted),
            "RoomDeleted is the deleting node's to publish"
        );
    }
}
