//! The owner's cameras: each room keeps its cameras by identity, with the
//! status the puller last reported, and raises CAMERA_OFFLINE for one that
//! has been offline for the room's `stall_after`.
//!
//! Settings are written to the store before they are applied; the media
//! plane is asked to pull or stop through [`Effect`]s, never awaited.
//! A camera publishes like anyone (sessions, tracks, stream alarms); what
//! is camera-specific here is its status, its alarm, and that it is not a
//! person: HangUp and Call refuse it, and a WHIP publisher may not take its
//! stream.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Effect, Owner, RoomState};
use crate::camera::{CameraSpec, CameraState, CameraStatus, CameraUpdate, CameraView};
use crate::core::{ControlError, Result, unix_ms};
use crate::event::{Alarm, EventKind, SessionRole};
use crate::names::{RoomName, StreamName};
use crate::room::{AlarmRules, Limits, RoomSpec};

/// One camera of a room, as the owner keeps it.
pub(super) struct CameraEntry {
    spec: CameraSpec,
    status: CameraStatus,
    /// When its state last changed, ms since the Unix epoch.
    since_ms: u64,
    /// Since when it has been offline, on the owner's clock; `None` while
    /// it is live or idle.
    offline_since: Option<Instant>,
    /// Its CAMERA_OFFLINE alarm is active.
    alarmed: bool,
}

impl CameraEntry {
    /// A camera just added or loaded, at `now`: connecting, or idle when
    /// pulled on demand, until the puller says otherwise.
    fn new(spec: CameraSpec, now: Instant, now_ms: u64) -> Self {
        let state = if spec.on_demand {
            CameraState::Idle
        } else {
            CameraState::Connecting
        };
        CameraEntry {
            spec,
            status: CameraStatus {
                state,
                ..CameraStatus::default()
            },
            since_ms: now_ms,
            offline_since: state.offline().then_some(now),
            alarmed: false,
        }
    }

    fn view(&self) -> CameraView {
        CameraView::new(&self.spec, &self.status, self.since_ms)
    }

    fn state_event(&self) -> EventKind {
        EventKind::CameraStateChanged {
            state: self.status.state,
            detail: self.status.detail.clone(),
            tracks: self.status.tracks.clone(),
        }
    }
}

/// What a dispatcher reads on the wall when a camera is offline.
fn offline_detail(identity: &StreamName, status: &CameraStatus) -> String {
    let what = match status.state {
        CameraState::Unauthorised => "refuses its credentials",
        CameraState::UnsupportedCodec => "offers no playable track",
        _ => "unreachable",
    };
    let detail = if status.detail.is_empty() {
        status.state.label()
    } else {
        &status.detail
    };
    format!("camera {identity} {what}: {detail}")
}

impl Owner {
    /// Attaches the cameras loaded from the store to their rooms and asks
    /// for each to be pulled. One whose room is gone is skipped (a room
    /// deletion that failed half way).
    pub(super) fn load_cameras(&mut self, cameras: Vec<CameraSpec>) {
        let (now, now_ms) = self.epoch;
        for spec in cameras {
            let Some(room) = self.rooms.get_mut(&spec.room) else {
                tracing::warn!(room = %spec.room, camera = %spec.identity, "camera of an unknown room not loaded");
                continue;
            };
            self.effects.push(Effect::StartCamera(spec.clone()));
            room.cameras
                .insert(spec.identity.clone(), CameraEntry::new(spec, now, now_ms));
        }
    }

    /// The room a camera is added to, live and managed (stored, so its
    /// cameras outlast a restart). In open mode, where rooms come and go
    /// with their sessions, a room that is not managed yet becomes managed,
    /// as UpdateRoom makes it.
    fn camera_room(&mut self, name: &RoomName) -> Result<()> {
        let existing = self.rooms.get(name).filter(|room| !room.closing);
        if existing.is_some_and(|room| room.managed) {
            return Ok(());
        }
        if !self.open_rooms {
            return Err(ControlError::NotFound(format!("no room {name}")));
        }
        let spec = match existing {
            Some(room) => room.spec.clone(),
            None => RoomSpec {
                name: name.clone(),
                limits: Limits::default(),
                alarms: AlarmRules::default(),
                created_at_ms: unix_ms(),
                incarnation: RoomSpec::new_incarnation(),
                token_generation: 0,
                bans: Default::default(),
            },
        };
        self.create_room(spec).map(|_| ())
    }

    pub(super) fn add_camera(&mut self, spec: CameraSpec, now: Instant) -> Result<CameraView> {
        let (room_name, identity) = (spec.room.clone(), spec.identity.clone());
        self.camera_room(&room_name)?;
        let room = self.live_room(&room_name)?;
        if room.cameras.contains_key(&identity) {
            return Err(ControlError::AlreadyExists(format!(
                "room {room_name} has a camera {identity}"
            )));
        }
        let publishing = room.streams.contains_key(&identity)
            || room
                .reserved
                .values()
                .any(|(role, stream)| *role == SessionRole::Publisher && *stream == identity);
        if publishing {
            return Err(ControlError::FailedPrecondition(format!(
                "{identity} publishes in room {room_name}: hang it up first, or name the camera otherwise"
            )));
        }
        self.store.put_camera(&spec)?;
        tracing::info!(room = %room_name, camera = %identity, url = %spec.masked_url(), "camera added");
        self.effects.push(Effect::StartCamera(spec.clone()));
        let entry = CameraEntry::new(spec, now, self.unix_ms_at(now));
        let (view, event) = (entry.view(), entry.state_event());
        self.room_mut(&room_name).cameras.insert(identity, entry);
        self.publish(&room_name, Some(view.identity.as_str()), event);
        Ok(view)
    }

    pub(super) fn update_camera(
        &mut self,
        room_name: &RoomName,
        identity: &StreamName,
        update: &CameraUpdate,
    ) -> Result<CameraView> {
        let entry = self.camera(room_name, identity)?;
        let spec = update
            .apply(&entry.spec)
            .map_err(ControlError::InvalidArgument)?;
        if spec == entry.spec {
            return Ok(entry.view());
        }
        self.store.put_camera(&spec)?;
        if spec.pulled_differently(&entry.spec) {
            tracing::info!(room = %room_name, camera = %identity, url = %spec.masked_url(), "camera changed: pulled again");
            self.effects.push(Effect::StartCamera(spec.clone()));
        }
        let entry = self.camera_mut(room_name, identity);
        entry.spec = spec;
        Ok(entry.view())
    }

    pub(super) fn remove_camera(
        &mut self,
        room_name: &RoomName,
        identity: &StreamName,
    ) -> Result<()> {
        self.camera(room_name, identity)?;
        self.store.delete_camera(room_name, identity)?;
        let entry = self
            .room_mut(room_name)
            .cameras
            .remove(identity)
            .expect("checked above");
        tracing::info!(room = %room_name, camera = %identity, "camera removed");
        self.camera_gone(room_name, entry);
        self.publish(room_name, Some(identity.as_str()), EventKind::CameraRemoved);
        Ok(())
    }

    pub(super) fn list_cameras(&self, room_name: &RoomName) -> Result<Vec<CameraView>> {
        let room = self.live_room(room_name)?;
        Ok(room.cameras.values().map(CameraEntry::view).collect())
    }

    /// DeleteRoom: forgets the room's cameras (in the store first) and
    /// stops pulling them. A store failure leaves the room as it was, but
    /// for the cameras already deleted from the store, which a retry
    /// skips.
    pub(super) fn forget_cameras(&mut self, room_name: &RoomName) -> Result<()> {
        let identities: Vec<StreamName> =
            self.live_room(room_name)?.cameras.keys().cloned().collect();
        for identity in &identities {
            self.store.delete_camera(room_name, identity)?;
        }
        self.drop_cameras(room_name);
        Ok(())
    }

    /// Stops pulling a room's cameras and forgets them here (the store is
    /// the caller's business).
    pub(super) fn drop_cameras(&mut self, room_name: &RoomName) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let cameras = std::mem::take(&mut room.cameras);
        for entry in cameras.into_values() {
            self.camera_gone(room_name, entry);
        }
    }

    /// Another node added, changed or removed `room_name`'s cameras (now
    /// `specs` in the store): the same here, without the store writes and
    /// events (that node made them). The camera placement decides which
    /// node pulls each (gateway `camera::owner_of`).
    pub(super) fn cameras_changed(
        &mut self,
        room_name: &RoomName,
        specs: Vec<CameraSpec>,
        now: Instant,
    ) {
        let now_ms = self.unix_ms_at(now);
        let Some(room) = self.rooms.get_mut(room_name) else {
            return; // its room's own notice brings it
        };
        let wanted: BTreeMap<StreamName, CameraSpec> = specs
            .into_iter()
            .map(|spec| (spec.identity.clone(), spec))
            .collect();
        let gone: Vec<StreamName> = room
            .cameras
            .keys()
            .filter(|identity| !wanted.contains_key(*identity))
            .cloned()
            .collect();
        let mut effects = Vec::new();
        for (identity, spec) in wanted {
            match room.cameras.get_mut(&identity) {
                Some(entry) if entry.spec == spec => {}
                Some(entry) => {
                    if spec.pulled_differently(&entry.spec) {
                        effects.push(Effect::StartCamera(spec.clone()));
                    }
                    entry.spec = spec;
                }
                None => {
                    effects.push(Effect::StartCamera(spec.clone()));
                    room.cameras
                        .insert(identity, CameraEntry::new(spec, now, now_ms));
                }
            }
        }
        let gone: Vec<CameraEntry> = gone
            .iter()
            .filter_map(|identity| room.cameras.remove(identity))
            .collect();
        self.effects.extend(effects);
        for entry in gone {
            self.camera_gone(room_name, entry);
        }
    }

    /// Every camera's settings, for writing back to a store that lost them.
    pub(super) fn camera_specs(&self) -> Vec<CameraSpec> {
        self.rooms
            .values()
            .filter(|room| !room.closing)
            .flat_map(|room| room.cameras.values().map(|entry| entry.spec.clone()))
            .collect()
    }

    /// A camera was forgotten: stop pulling it, and clear its alarm.
    fn camera_gone(&mut self, room_name: &RoomName, entry: CameraEntry) {
        let identity = entry.spec.identity;
        self.effects.push(Effect::StopCamera {
            room: room_name.clone(),
            identity: identity.clone(),
        });
        if entry.alarmed {
            self.clear_camera_alarm(room_name, &identity);
        }
    }

    fn clear_camera_alarm(&mut self, room_name: &RoomName, identity: &StreamName) {
        let alarm_id = self
            .alarm_log
            .clear(room_name, Alarm::CameraOffline, Some(identity));
        self.publish(
            room_name,
            Some(identity.as_str()),
            EventKind::AlarmCleared {
                alarm: Alarm::CameraOffline,
                stream: Some(identity.clone()),
                alarm_id,
            },
        );
    }

    /// The puller's report: kept, and told to the room's watchers when it
    /// changed anything. An unknown camera (removed since) is ignored.
    pub(super) fn camera_status(
        &mut self,
        room_name: &RoomName,
        identity: &StreamName,
        status: CameraStatus,
        now: Instant,
    ) {
        let now_ms = self.unix_ms_at(now);
        let Some(entry) = self
            .rooms
            .get_mut(room_name)
            .filter(|room| !room.closing)
            .and_then(|room| room.cameras.get_mut(identity))
        else {
            return;
        };
        if entry.status == status {
            return;
        }
        if entry.status.state != status.state {
            entry.since_ms = now_ms;
        }
        let offline = status.state.offline();
        match (offline, entry.offline_since) {
            (true, None) => entry.offline_since = Some(now),
            (false, _) => entry.offline_since = None,
            (true, Some(_)) => {}
        }
        let clear = !offline && entry.alarmed;
        if clear {
            entry.alarmed = false;
        }
        entry.status = status;
        let event = entry.state_event();
        self.publish(room_name, Some(identity.as_str()), event);
        if clear {
            self.clear_camera_alarm(room_name, identity);
        }
    }

    /// Raises CAMERA_OFFLINE for each camera offline for its room's
    /// `stall_after` (run on every sampling tick).
    pub(super) fn evaluate_cameras(&mut self, now: Instant) {
        let mut raised = Vec::new();
        for (room_name, room) in self.rooms.iter_mut().filter(|(_, r)| !r.closing) {
            let stall_after = room.spec.alarms.stall_after;
            for (identity, entry) in &mut room.cameras {
                let due = entry
                    .offline_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= stall_after);
                if due && !entry.alarmed {
                    entry.alarmed = true;
                    let detail = offline_detail(identity, &entry.status);
                    raised.push((room_name.clone(), identity.clone(), detail));
                }
            }
        }
        for (room_name, identity, detail) in raised {
            tracing::warn!(room = %room_name, camera = %identity, "{detail}");
            self.publish(
                &room_name,
                Some(identity.as_str()),
                EventKind::AlarmRaised {
                    alarm: Alarm::CameraOffline,
                    stream: Some(identity.clone()),
                    detail,
                },
            );
        }
    }

    /// Refuses what only people do (HangUp, Call) when `identity` is one
    /// of the room's cameras.
    pub(super) fn refuse_camera(&self, room_name: &RoomName, identity: &str) -> Result<()> {
        if self.is_camera_identity(room_name, identity) {
            return Err(ControlError::FailedPrecondition(format!(
                "{identity} is a camera: RemoveCamera stops it, MuteTrack silences it"
            )));
        }
        Ok(())
    }

    /// Refuses a WHIP publisher of a camera's stream (the server pulls it).
    pub(super) fn refuse_camera_stream(
        &self,
        room_name: &RoomName,
        stream: &StreamName,
    ) -> Result<()> {
        if self.is_camera(room_name, stream) {
            return Err(ControlError::FailedPrecondition(format!(
                "stream {stream} of room {room_name} belongs to a camera, which the server pulls: publish under another name"
            )));
        }
        Ok(())
    }

    /// Whether `identity` is one of the room's cameras.
    pub(super) fn is_camera_identity(&self, room_name: &RoomName, identity: &str) -> bool {
        StreamName::new(identity)
            .ok()
            .is_some_and(|stream| self.is_camera(room_name, &stream))
    }

    fn is_camera(&self, room_name: &RoomName, identity: &StreamName) -> bool {
        self.rooms
            .get(room_name)
            .is_some_and(|room| room.cameras.contains_key(identity))
    }

    fn camera(&self, room_name: &RoomName, identity: &StreamName) -> Result<&CameraEntry> {
        self.live_room(room_name)?
            .cameras
            .get(identity)
            .ok_or_else(|| {
                ControlError::NotFound(format!("room {room_name} has no camera {identity}"))
            })
    }

    fn camera_mut(&mut self, room_name: &RoomName, identity: &StreamName) -> &mut CameraEntry {
        self.room_mut(room_name)
            .cameras
            .get_mut(identity)
            .expect("checked by the caller")
    }

    fn room_mut(&mut self, room_name: &RoomName) -> &mut RoomState {
        self.rooms
            .get_mut(room_name)
            .expect("checked live by the caller")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::super::tests::{Harness, room, stream};
    use super::*;
    use crate::bus::EventBus;
    use crate::camera::{CameraTrack, CameraTransport};
    use crate::core::Msg;
    use crate::event::{Event, LeaveReason, TrackKind};
    use crate::store::Store;

    fn spec(identity: &str, on_demand: bool) -> CameraSpec {
        CameraSpec {
            room: room(),
            identity: stream(identity),
            url: "rtsp://10.0.0.7/s1".into(),
            username: "admin".into(),
            password: "hunter2".into(),
            transport: CameraTransport::Tcp,
            on_demand,
            created_at_ms: 1,
        }
    }

    fn live() -> CameraStatus {
        CameraStatus {
            state: CameraState::Live,
            detail: "H264 1920x1080".into(),
            tracks: vec![CameraTrack {
                kind: TrackKind::Video,
                codec: "video/H264".into(),
                playable: true,
            }],
        }
    }

    fn down(state: CameraState, detail: &str) -> CameraStatus {
        CameraStatus {
            state,
            detail: detail.into(),
            tracks: Vec::new(),
        }
    }

    impl Harness {
        fn add(&mut self, spec: CameraSpec) -> Result<CameraView> {
            self.ask(|reply| Msg::AddCamera { spec, reply })
        }

        fn update(&mut self, identity: &str, update: CameraUpdate) -> Result<CameraView> {
            self.ask(|reply| Msg::UpdateCamera {
                room: room(),
                identity: stream(identity),
                update,
                reply,
            })
        }

        fn remove(&mut self, identity: &str) -> Result<()> {
            self.ask(|reply| Msg::RemoveCamera {
                room: room(),
                identity: stream(identity),
                reply,
            })
        }

        fn list(&mut self) -> Vec<CameraView> {
            self.ask(|reply| Msg::ListCameras {
                room: room(),
                reply,
            })
            .unwrap()
        }

        fn report(&mut self, identity: &str, status: CameraStatus, after: Duration) {
            let msg = Msg::CameraStatus {
                room: room(),
                identity: stream(identity),
                status,
            };
            self.owner.handle(msg, self.t0 + after);
        }

        /// The sampling tick, `after` the start.
        fn tick(&mut self, after: Duration) {
            let at = self.t0 + after;
            let msg = Msg::Samples {
                samples: Vec::new(),
                at,
            };
            self.owner.handle(msg, at);
        }

        fn effects(&mut self) -> Vec<Effect> {
            std::mem::take(&mut self.owner.effects)
        }

        fn camera_events(&self) -> Vec<Event> {
            self.events()
                .into_iter()
                .filter(|e| {
                    matches!(
                        e.kind,
                        EventKind::CameraStateChanged { .. }
                            | EventKind::CameraRemoved
                            | EventKind::AlarmRaised { .. }
                            | EventKind::AlarmCleared { .. }
                    )
                })
                .collect()
        }

        fn alarms(&mut self) -> Vec<crate::alarm_log::AlarmRecord> {
            self.ask(|reply| Msg::ListAlarms {
                room: room(),
                since_ms: 0,
                reply,
            })
            .unwrap()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_camera_added_updated_and_removed_is_stored_pulled_and_told() {
        let mut h = Harness::new(Limits::default());
        let view = h.add(spec("gate", false)).unwrap();
        assert_eq!(view.status.state, CameraState::Connecting);
        assert_eq!(view.masked_url, "rtsp://admin:***@10.0.0.7/s1");
        assert!(view.has_password);
        assert_eq!(h.store.cameras().unwrap(), vec![spec("gate", false)]);
        assert_eq!(h.effects(), vec![Effect::StartCamera(spec("gate", false))]);
        let events = h.camera_events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].identity.as_deref(), Some("gate"));
        assert!(matches!(
            &events[0].kind,
            EventKind::CameraStateChanged { state: CameraState::Connecting, detail, tracks }
                if detail.is_empty() && tracks.is_empty()
        ));

        assert!(matches!(
            h.add(spec("gate", true)),
            Err(ControlError::AlreadyExists(_))
        ));
        let elsewhere = CameraSpec {
            room: RoomName::new("elsewhere").unwrap(),
            ..spec("gate", false)
        };
        assert!(matches!(h.add(elsewhere), Err(ControlError::NotFound(_))));

        // The same settings: nothing to do.
        let same = CameraUpdate {
            username: Some("admin".into()),
            ..CameraUpdate::default()
        };
        h.update("gate", same).unwrap();
        assert!(h.effects().is_empty());
        let moved = CameraUpdate {
            url: Some("rtsp://10.0.0.8/s2".into()),
            transport: Some(CameraTransport::Udp),
            ..CameraUpdate::default()
        };
        let view = h.update("gate", moved).unwrap();
        assert_eq!(view.masked_url, "rtsp://admin:***@10.0.0.8/s2");
        let expected = CameraSpec {
            url: "rtsp://10.0.0.8/s2".into(),
            transport: CameraTransport::Udp,
            ..spec("gate", false)
        };
        assert_eq!(h.store.cameras().unwrap(), vec![expected.clone()]);
        assert_eq!(h.effects(), vec![Effect::StartCamera(expected)]);
        let bad = CameraUpdate {
            url: Some("http://10.0.0.8/".into()),
            ..CameraUpdate::default()
        };
        assert!(matches!(
            h.update("gate", bad),
            Err(ControlError::InvalidArgument(_))
        ));
        assert!(matches!(
            h.update("yard", CameraUpdate::default()),
            Err(ControlError::NotFound(_))
        ));
        assert_eq!(h.list().len(), 1);

        h.remove("gate").unwrap();
        assert!(h.store.cameras().unwrap().is_empty());
        assert_eq!(
            h.effects(),
            vec![Effect::StopCamera {
                room: room(),
                identity: stream("gate")
            }]
        );
        let last = h.camera_events().pop().unwrap();
        assert_eq!(
            (last.identity.as_deref(), &last.kind),
            (Some("gate"), &EventKind::CameraRemoved)
        );
        assert!(h.list().is_empty());
        assert!(matches!(h.remove("gate"), Err(ControlError::NotFound(_))));
    }

    #[test]
    fn reports_are_told_when_they_change_and_forgotten_for_unknown_cameras() {
        let mut h = Harness::new(Limits::default());
        h.add(spec("gate", false)).unwrap();
        h.report("gate", live(), ms(100));
        h.report("gate", live(), ms(200));
        h.report("yard", live(), ms(300));
        let events = h.camera_events();
        assert_eq!(events.len(), 2, "added, then live once: {events:?}");
        let EventKind::CameraStateChanged { state, tracks, .. } = &events[1].kind else {
            panic!("{events:?}");
        };
        assert_eq!((*state, tracks.len()), (CameraState::Live, 1));
        let view = &h.list()[0];
        assert_eq!(view.status, live());
        assert!(view.since_ms >= h.owner.unix_ms_at(h.t0 + ms(100)));
        // The detail alone changing is news too.
        h.report("gate", down(CameraState::Unreachable, "refused"), ms(400));
        h.report("gate", down(CameraState::Unreachable, "timed out"), ms(500));
        assert_eq!(h.camera_events().len(), 4);
    }

    #[test]
    fn a_camera_offline_for_stall_after_raises_one_alarm_cleared_when_live() {
        // The harness's room stalls after 1 s.
        let mut h = Harness::new(Limits::default());
        h.add(spec("gate", false)).unwrap();
        h.report(
            "gate",
            down(CameraState::Unreachable, "connection refused"),
            ms(300),
        );
        h.tick(ms(500));
        h.tick(ms(999));
        assert!(h.alarms().is_empty(), "not before stall_after");
        h.tick(ms(1000));
        h.tick(ms(1500));
        let alarms = h.alarms();
        assert_eq!(alarms.len(), 1, "{alarms:?}");
        let alarm = &alarms[0];
        assert_eq!(alarm.alarm, Alarm::CameraOffline);
        assert_eq!(alarm.stream, Some(stream("gate")));
        assert_eq!(alarm.identity.as_deref(), Some("gate"));
        assert_eq!(alarm.detail, "camera gate unreachable: connection refused");
        assert_eq!(alarm.cleared_at_ms, None);
        let acked = h.ask(|reply| Msg::AcknowledgeAlarm {
            room: room(),
            id: alarm.id,
            by: "dispatcher".into(),
            reply,
        });
        assert!(acked.unwrap().acknowledged.is_some());

        h.report("gate", live(), ms(2000));
        let alarms = h.alarms();
        assert!(alarms[0].cleared_at_ms.is_some(), "cleared when live");
        let cleared = h.camera_events().pop().unwrap();
        assert!(matches!(
            cleared.kind,
            EventKind::AlarmCleared { alarm: Alarm::CameraOffline, alarm_id, .. } if alarm_id == alarm.id
        ));

        // Offline again: counted from the new drop, and removed while raised.
        h.report("gate", down(CameraState::Unauthorised, "401"), ms(3000));
        h.tick(ms(3500));
        assert_eq!(h.alarms().len(), 1);
        h.tick(ms(4000));
        let alarms = h.alarms();
        assert_eq!(alarms.len(), 2);
        assert_eq!(alarms[0].detail, "camera gate refuses its credentials: 401");
        h.remove("gate").unwrap();
        assert!(h.alarms().iter().all(|a| a.cleared_at_ms.is_some()));
        let kinds: Vec<EventKind> = h.camera_events().into_iter().map(|e| e.kind).collect();
        assert!(matches!(
            kinds[kinds.len() - 2..],
            [
                EventKind::AlarmCleared {
                    alarm: Alarm::CameraOffline,
                    ..
                },
                EventKind::CameraRemoved
            ]
        ));
    }

    #[test]
    fn a_camera_nobody_watches_on_demand_is_not_offline() {
        let mut h = Harness::new(Limits::default());
        let view = h.add(spec("gate", true)).unwrap();
        assert_eq!(view.status.state, CameraState::Idle);
        h.tick(ms(10_000));
        assert!(h.alarms().is_empty());
        // Watched, and it cannot be reached: offline; idle again clears it.
        h.report("gate", down(CameraState::Connecting, ""), ms(10_000));
        h.tick(ms(11_000));
        assert_eq!(h.alarms()[0].detail, "camera gate unreachable: connecting");
        h.report("gate", down(CameraState::Idle, ""), ms(12_000));
        assert!(h.alarms()[0].cleared_at_ms.is_some());
        h.tick(ms(20_000));
        assert_eq!(h.alarms().len(), 1);
    }

    #[test]
    fn deleting_the_room_stops_and_forgets_its_cameras() {
        let mut h = Harness::new(Limits::default());
        h.add(spec("gate", false)).unwrap();
        h.add(spec("yard", false)).unwrap();
        h.tick(ms(1000));
        assert_eq!(h.alarms().len(), 2);
        h.effects();
        h.ask(|reply| Msg::DeleteRoom {
            name: room(),
            reply,
        })
        .unwrap();
        assert!(h.store.cameras().unwrap().is_empty());
        let stopped = h.effects();
        assert_eq!(stopped.len(), 2);
        assert!(
            stopped
                .iter()
                .all(|e| matches!(e, Effect::StopCamera { .. }))
        );
        let cleared = h
            .events()
            .into_iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    EventKind::AlarmCleared {
                        alarm: Alarm::CameraOffline,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(cleared, 2);
        // A late report from the puller changes nothing.
        let before = h.events().len();
        h.report("gate", live(), ms(1500));
        assert_eq!(h.events().len(), before);
    }

    #[test]
    fn cameras_are_not_people() {
        let mut h = Harness::new(Limits::default());
        h.add(spec("gate", false)).unwrap();
        // The puller publishes the camera's stream as the camera.
        h.start("s-gate", "gate", SessionRole::Publisher, "gate");
        h.owner.handle(
            Msg::TrackPublished {
                session: "s-gate".into(),
                kind: TrackKind::Video,
                codec: "video/H264".into(),
            },
            h.t0,
        );
        h.start("s-desk", "desk", SessionRole::Publisher, "desk");
        h.start("s-view", "gate", SessionRole::Viewer, "desk");

        let hang_up = h.ask(|reply| Msg::HasParticipant {
            room: room(),
            identity: "gate".into(),
            reply,
        });
        assert!(
            matches!(&hang_up, Err(ControlError::FailedPrecondition(m)) if m == "gate is a camera: RemoveCamera stops it, MuteTrack silences it"),
            "{hang_up:?}"
        );
        let ban = h.ban("gate", h.t0 + Duration::from_secs(60));
        assert!(matches!(ban, Err(ControlError::FailedPrecondition(_))));
        assert!(matches!(
            h.call("gate", "desk"),
            Err(ControlError::FailedPrecondition(_))
        ));
        assert!(matches!(
            h.call("desk", "gate"),
            Err(ControlError::FailedPrecondition(_))
        ));
        // MuteTrack finds its track like anyone's.
        let track = h.ask(|reply| Msg::HasTrack {
            room: room(),
            stream: stream("gate"),
            kind: TrackKind::Video,
            reply,
        });
        assert!(track.is_ok());

        // WHIP may not take a camera's stream (HTTP 409); WHEP plays it.
        let whip = h.admit("gate", SessionRole::Publisher, "gate");
        assert!(
            matches!(&whip, Err(ControlError::FailedPrecondition(m)) if m.contains("belongs to a camera")),
            "{whip:?}"
        );
        assert!(h.admit("gate", SessionRole::Viewer, "wall").is_ok());

        let participants = h
            .ask(|reply| Msg::Participants {
                room: room(),
                reply,
            })
            .unwrap();
        let camera = |who: &str| {
            participants
                .iter()
                .find(|p| p.identity == who)
                .unwrap()
                .camera
        };
        assert!(camera("gate"));
        assert!(!camera("desk"), "desk plays the camera, and is no camera");

        // Revoking the room's tokens hangs up people, not cameras.
        let hung_up = h
            .ask(|reply| Msg::RevokeRoomTokens {
                room: room(),
                reply,
            })
            .unwrap();
        assert_eq!(hung_up, ["desk"]);

        // A stream published over WHIP cannot become a camera underneath it.
        assert!(matches!(
            h.add(spec("desk", false)),
            Err(ControlError::FailedPrecondition(_))
        ));
        h.end("s-desk", LeaveReason::Left);
        h.end("s-view", LeaveReason::Left);
        assert!(h.add(spec("desk", false)).is_ok());
    }

    #[test]
    fn a_restart_loads_the_cameras_and_pulls_them() {
        let mut h = Harness::new(Limits::default());
        let room_spec = h.owner.rooms[&room()].spec.clone();
        h.add(spec("gate", false)).unwrap();
        h.add(spec("yard", true)).unwrap();
        let orphan = CameraSpec {
            room: RoomName::new("gone").unwrap(),
            ..spec("gate", false)
        };
        h.store.put_camera(&orphan).unwrap();
        h.owner = Owner::new(
            h.store.clone(),
            h.bus.clone(),
            false,
            vec![room_spec],
            Vec::new(),
            Vec::new(),
            h.store.cameras().unwrap(),
        );
        let started = h.effects();
        assert_eq!(
            started,
            vec![
                Effect::StartCamera(spec("gate", false)),
                Effect::StartCamera(spec("yard", true))
            ]
        );
        let states: Vec<CameraState> = h.list().into_iter().map(|c| c.status.state).collect();
        assert_eq!(states, [CameraState::Connecting, CameraState::Idle]);
    }

    #[test]
    fn in_open_mode_a_camera_makes_its_room_managed() {
        let bus = Arc::new(crate::bus::MemoryBus::default());
        let store = Arc::new(crate::store::MemoryStore::default());
        let mut owner = Owner::new(
            store.clone(),
            bus.clone(),
            true,
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        owner.handle(
            Msg::AddCamera {
                spec: spec("gate", false),
                reply: tx,
            },
            Instant::now(),
        );
        assert!(rx.try_recv().unwrap().is_ok());
        assert_eq!(store.rooms().unwrap()[0].name, room());
        assert_eq!(store.cameras().unwrap().len(), 1);
        let kinds: Vec<EventKind> = bus
            .subscribe(Some(0))
            .replay
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert!(matches!(
            kinds[..],
            [EventKind::RoomCreated, EventKind::CameraStateChanged { .. }]
        ));
    }

    /// A media plane that records the cameras it is asked to pull.
    #[derive(Default)]
    struct RecordingMedia {
        started: Mutex<Vec<CameraSpec>>,
        stopped: Mutex<Vec<StreamName>>,
    }

    #[async_trait::async_trait]
    impl crate::media::MediaPlane for RecordingMedia {
        async fn hang_up(&self, _: &RoomName, _: &str, _: LeaveReason) -> usize {
            0
        }
        async fn close_session(&self, _: &str, _: LeaveReason) -> bool {
            false
        }
        async fn close_room(&self, _: &RoomName) -> usize {
            0
        }
        async fn end_call(&self, _: &RoomName, _: &StreamName, _: &str, _: bool) -> usize {
            0
        }
        async fn mute(&self, _: &RoomName, _: &StreamName, _: TrackKind, _: bool) -> bool {
            true
        }
        async fn sample(&self) -> Vec<crate::media::StreamSample> {
            Vec::new()
        }
        fn start_camera(&self, spec: CameraSpec) {
            self.started.lock().unwrap().push(spec);
        }
        fn stop_camera(&self, _: &RoomName, identity: &StreamName) {
            self.stopped.lock().unwrap().push(identity.clone());
        }
    }

    #[tokio::test]
    async fn control_pulls_the_stored_cameras_at_start_and_refuses_to_treat_them_as_people() {
        let store = Arc::new(crate::store::MemoryStore::default());
        let room_spec = RoomSpec {
            name: room(),
            limits: Limits::default(),
            alarms: AlarmRules::default(),
            created_at_ms: 0,
            incarnation: 1,
            token_generation: 0,
            bans: Default::default(),
        };
        store.put_room(&room_spec).unwrap();
        store.put_camera(&spec("gate", false)).unwrap();
        let media = Arc::new(RecordingMedia::default());
        let (facts, inbox) = crate::channel();
        let control = crate::Control::start(
            &facts,
            inbox,
            store,
            Arc::new(crate::bus::MemoryBus::default()),
            media.clone(),
            crate::Auth::Open,
        )
        .unwrap();
        // The owner answers in order: once it has, it has run its start.
        let cameras = control.cameras("site").await.unwrap();
        assert_eq!(cameras.len(), 1);
        assert_eq!(*media.started.lock().unwrap(), vec![spec("gate", false)]);

        let whip = control
            .admit(&room(), &stream("gate"), SessionRole::Publisher, None)
            .await;
        assert!(matches!(whip, Err(ControlError::FailedPrecondition(_))));
        let hang_up = control.hang_up("site", "gate", None).await;
        assert!(matches!(hang_up, Err(ControlError::FailedPrecondition(_))));

        control.remove_camera("site", "gate").await.unwrap();
        // Stopping happens right after the reply, on the owner's task.
        control.cameras("site").await.unwrap();
        assert_eq!(*media.stopped.lock().unwrap(), vec![stream("gate")]);
        control.shutdown().await;
    }
}
