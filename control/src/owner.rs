//! The control owner's state machine: rooms, sessions, published streams
//! and their alarms. Only [`Owner::run`]'s task touches it; see
//! [`crate::Control`] for the handle.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::alarm_log::{AlarmLog, AlarmRecord};
use crate::alarms::{AlarmChange, StreamAlarms};
use crate::bus::EventBus;
use crate::core::{ControlError, Msg, ParticipantView, Result, RoomView, TrackView, unix_ms};
use crate::event::{Alarm, EventKind, LeaveReason, SessionRole, TrackKind};
use crate::media::StreamSample;
use crate::names::{RoomName, StreamName};
use crate::room::{AlarmRules, Limits, RoomSpec};
use crate::store::Store;

struct SessionInfo {
    room: RoomName,
    stream: StreamName,
    role: SessionRole,
    identity: String,
    since_ms: u64,
}

struct PublishedStream {
    session: String,
    identity: String,
    tracks: BTreeMap<TrackKind, TrackView>,
    alarms: StreamAlarms,
}

struct RoomState {
    spec: RoomSpec,
    /// Created by an admin (persisted), not implicitly by a first publish.
    managed: bool,
    /// Deleted, waiting for its sessions to end.
    closing: bool,
    sessions: HashMap<String, ()>,
    streams: BTreeMap<StreamName, PublishedStream>,
    /// Admitted sessions still negotiating, by ticket: they count against
    /// the limits until they start or give up, so simultaneous requests
    /// cannot overshoot a limit.
    reserved: HashMap<u64, (SessionRole, StreamName)>,
    full: bool,
}

impl RoomState {
    fn new(spec: RoomSpec, managed: bool) -> Self {
        RoomState {
            spec,
            managed,
            closing: false,
            sessions: HashMap::new(),
            streams: BTreeMap::new(),
            reserved: HashMap::new(),
            full: false,
        }
    }
}

/// The control plane's state, owned by one task.
pub(crate) struct Owner {
    next_ticket: u64,
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    open_rooms: bool,
    rooms: BTreeMap<RoomName, RoomState>,
    sessions: HashMap<String, SessionInfo>,
    /// Every alarm raised, with its times, as the store keeps it.
    alarm_log: AlarmLog,
}

impl Owner {
    /// Builds the owner over the rooms and alarms loaded from `store`.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        open_rooms: bool,
        specs: Vec<RoomSpec>,
        alarms: Vec<AlarmRecord>,
    ) -> Self {
        let rooms = specs
            .into_iter()
            .map(|spec| (spec.name.clone(), RoomState::new(spec, true)))
            .collect();
        Owner {
            next_ticket: 1,
            store,
            bus,
            open_rooms,
            rooms,
            sessions: HashMap::new(),
            alarm_log: AlarmLog::load(alarms, unix_ms()),
        }
    }

    /// Handles messages until shutdown, or until every sender is gone.
    pub(crate) async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Msg>) {
        while let Some(msg) = inbox.recv().await {
            if let Msg::Shutdown { reply } = msg {
                // Dropping `self` closes the store (releasing its file lock)
                // and the inbox, which ends the sampler.
                drop(self);
                let _ = reply.send(());
                return;
            }
            self.handle(msg, Instant::now());
        }
    }

    /// Publishes an event; an alarm it raises or clears goes into the alarm
    /// log, with the event's id and time.
    fn publish(&mut self, room: &RoomName, identity: Option<&str>, kind: EventKind) {
        let event = self
            .bus
            .publish(room.clone(), identity.map(str::to_owned), kind);
        self.alarm_log.observe(&event);
    }

    fn live_room(&self, name: &RoomName) -> Result<&RoomState> {
        self.rooms
            .get(name)
            .filter(|room| !room.closing)
            .ok_or_else(|| ControlError::NotFound(format!("no room {name}")))
    }

    fn view(&self, room: &RoomState) -> RoomView {
        let viewers = room
            .sessions
            .keys()
            .filter(|s| {
                self.sessions
                    .get(*s)
                    .is_some_and(|i| i.role == SessionRole::Viewer)
            })
            .count();
        RoomView {
            spec: room.spec.clone(),
            publishers: room.streams.len() as u32,
            viewers: viewers as u32,
        }
    }

    fn handle(&mut self, msg: Msg, now: Instant) {
        self.handle_msg(msg, now);
        // One write for whatever alarms the message changed; a failure is
        // retried with the next message's.
        if let Err(e) = self.alarm_log.flush(&*self.store, unix_ms()) {
            tracing::warn!("cannot store alarms (kept in memory, retried): {e}");
        }
    }

    fn handle_msg(&mut self, msg: Msg, now: Instant) {
        // Replies are best effort: a caller that gave up dropped its receiver.
        match msg {
            Msg::CreateRoom { spec, reply } => {
                let _ = reply.send(self.create_room(spec));
            }
            Msg::GetRoom { name, reply } => {
                let _ = reply.send(self.live_room(&name).map(|room| self.view(room)));
            }
            Msg::ListRooms { reply } => {
                let rooms = self
                    .rooms
                    .values()
                    .filter(|room| !room.closing)
                    .map(|room| self.view(room))
                    .collect();
                let _ = reply.send(rooms);
            }
            Msg::DeleteRoom { name, reply } => {
                let _ = reply.send(self.delete_room(&name));
            }
            Msg::Participants { room, reply } => {
                let _ = reply.send(self.participants(&room));
            }
            Msg::ListAlarms {
                room,
                since_ms,
                reply,
            } => {
                let alarms = self
                    .live_room(&room)
                    .map(|_| self.alarm_log.list(&room, since_ms));
                let _ = reply.send(alarms);
            }
            Msg::AcknowledgeAlarm {
                room,
                id,
                by,
                reply,
            } => {
                let _ = reply.send(self.acknowledge_alarm(&room, id, &by));
            }
            Msg::HasParticipant {
                room,
                identity,
                reply,
            } => {
                let found = self.live_room(&room).map(|_| {
                    self.sessions
                        .values()
                        .any(|s| s.room == room && s.identity == identity)
                });
                let _ = reply.send(match found {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(ControlError::NotFound(format!(
                        "{identity} is not in room {room}"
                    ))),
                    Err(e) => Err(e),
                });
            }
            Msg::HasTrack {
                room,
                stream,
                kind,
                reply,
            } => {
                let found = self.live_room(&room).map(|r| {
                    r.streams
                        .get(&stream)
                        .is_some_and(|s| s.tracks.contains_key(&kind))
                });
                let _ = reply.send(match found {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(ControlError::NotFound(format!(
                        "{stream} publishes no {kind:?} track in {room}"
                    ))),
                    Err(e) => Err(e),
                });
            }
            Msg::Muted {
                room,
                stream,
                kind,
                muted,
            } => {
                if let Some(track) = self
                    .rooms
                    .get_mut(&room)
                    .and_then(|r| r.streams.get_mut(&stream))
                    .and_then(|s| s.tracks.get_mut(&kind))
                {
                    track.muted = muted;
                    self.publish(
                        &room,
                        Some(stream.as_str()),
                        EventKind::TrackMuted { kind, muted },
                    );
                }
            }
            Msg::Call {
                room,
                caller,
                callee,
                reply,
            } => {
                let _ = reply.send(self.call(&room, caller, callee));
            }
            Msg::Admit {
                room,
                stream,
                role,
                identity,
                reply,
            } => {
                let _ = reply.send(self.admit(room, &stream, role, &identity));
            }
            Msg::Release { room, ticket } => self.release(&room, ticket),
            // Handled by `run`; here only for a direct caller (tests).
            Msg::Shutdown { reply } => {
                let _ = reply.send(());
            }
            Msg::SessionStarted {
                session,
                room,
                stream,
                role,
                identity,
            } => {
                self.session_started(session, room, stream, role, identity, now);
            }
            Msg::SessionEnded { session, reason } => self.session_ended(&session, reason),
            Msg::TrackPublished {
                session,
                kind,
                codec,
            } => {
                let Some(info) = self.sessions.get(&session) else {
                    return;
                };
                let (room, stream) = (info.room.clone(), info.stream.clone());
                let Some(published) = self
                    .rooms
                    .get_mut(&room)
                    .and_then(|r| r.streams.get_mut(&stream))
                else {
                    return;
                };
                published.tracks.insert(
                    kind,
                    TrackView {
                        kind,
                        codec: codec.clone(),
                        muted: false,
                    },
                );
                let identity = published.identity.clone();
                self.publish(
                    &room,
                    Some(&identity),
                    EventKind::TrackPublished { kind, codec },
                );
            }
            Msg::Samples { samples, at } => self.evaluate_alarms(samples, at),
        }
    }

    fn create_room(&mut self, spec: RoomSpec) -> Result<RoomView> {
        if let Some(existing) = self.rooms.get(&spec.name)
            && (existing.managed || existing.closing)
        {
            return Err(ControlError::AlreadyExists(format!(
                "room {} exists",
                spec.name
            )));
        }
        self.store.put_room(&spec)?;
        let name = spec.name.clone();
        // An implicit room (open mode) becomes managed and keeps its sessions.
        match self.rooms.get_mut(&name) {
            Some(room) => {
                room.spec = spec;
                room.managed = true;
            }
            None => {
                self.rooms.insert(name.clone(), RoomState::new(spec, true));
            }
        }
        self.publish(&name, None, EventKind::RoomCreated);
        let room = self.live_room(&name)?;
        Ok(self.view(room))
    }

    fn delete_room(&mut self, name: &RoomName) -> Result<()> {
        let room = self
            .rooms
            .get_mut(name)
            .filter(|room| !room.closing)
            .ok_or_else(|| ControlError::NotFound(format!("no room {name}")))?;
        if room.managed {
            self.store.delete_room(name)?;
        }
        room.closing = true;
        self.drop_if_finished(name);
        Ok(())
    }

    /// Forgets a closing room once its last session ended, and an implicit
    /// room once it is empty.
    fn drop_if_finished(&mut self, name: &RoomName) {
        let Some(room) = self.rooms.get(name) else {
            return;
        };
        if !room.sessions.is_empty() || !room.reserved.is_empty() {
            return;
        }
        if room.closing {
            self.rooms.remove(name);
            self.publish(name, None, EventKind::RoomDeleted);
        } else if !room.managed {
            self.rooms.remove(name);
        }
    }

    fn participants(&self, room_name: &RoomName) -> Result<Vec<ParticipantView>> {
        let room = self.live_room(room_name)?;
        let mut by_identity: BTreeMap<&str, ParticipantView> = BTreeMap::new();
        for session in room.sessions.keys() {
            let Some(info) = self.sessions.get(session) else {
                continue;
            };
            let view = by_identity
                .entry(&info.identity)
                .or_insert_with(|| ParticipantView {
                    identity: info.identity.clone(),
                    publishing: false,
                    tracks: Vec::new(),
                    viewer_count: 0,
                    bitrate_bps: 0,
                    connected_since_unix_ms: info.since_ms,
                    watching: Vec::new(),
                    active_alarms: Vec::new(),
                });
            view.connected_since_unix_ms = view.connected_since_unix_ms.min(info.since_ms);
            match info.role {
                SessionRole::Publisher => {
                    view.publishing = true;
                    if let Some(published) = room.streams.get(&info.stream) {
                        view.tracks = published.tracks.values().cloned().collect();
                        view.bitrate_bps = published.alarms.bitrate_bps();
                        view.active_alarms = published.alarms.active();
                    }
                }
                SessionRole::Viewer => view.watching.push(info.stream.clone()),
            }
        }
        for info in room.sessions.keys().filter_map(|s| self.sessions.get(s)) {
            if info.role == SessionRole::Viewer
                && let Some(publisher) = room.streams.get(&info.stream)
                && let Some(view) = by_identity.get_mut(publisher.identity.as_str())
            {
                view.viewer_count += 1;
            }
        }
        Ok(by_identity.into_values().collect())
    }

    /// Writes the first acknowledgement of alarm `id` to the store, then
    /// tells every watcher; a later one changes nothing.
    fn acknowledge_alarm(&mut self, room: &RoomName, id: u64, by: &str) -> Result<AlarmRecord> {
        self.live_room(room)?;
        let (record, first) = self
            .alarm_log
            .acknowledgement(room, id, by, unix_ms())
            .ok_or_else(|| ControlError::NotFound(format!("room {room} has no alarm {id}")))?;
        if first {
            self.store
                .update_alarms(std::slice::from_ref(&record), &[])?;
            self.alarm_log.apply(record.clone());
            self.publish(
                room,
                record.identity.as_deref(),
                EventKind::AlarmAcknowledged {
                    alarm_id: id,
                    alarm: record.alarm,
                    stream: record.stream.clone(),
                    by: by.to_owned(),
                },
            );
        }
        Ok(record)
    }

    fn call(&mut self, room_name: &RoomName, caller: String, callee: String) -> Result<String> {
        let room = self.live_room(room_name)?;
        let caller_stream = StreamName::new(&caller)?;
        let publishing = room
            .streams
            .get(&caller_stream)
            .is_some_and(|s| s.identity == caller);
        if !publishing {
            return Err(ControlError::FailedPrecondition(format!(
                "{caller} is not publishing in {room_name}: publish first, then call"
            )));
        }
        if callee.is_empty() {
            return Err(ControlError::InvalidArgument("callee is required".into()));
        }
        let whep_path = format!("/whep/{room_name}/{caller}");
        self.publish(
            room_name,
            Some(&callee),
            EventKind::CallRequested {
                caller,
                callee: callee.clone(),
                whep_path: whep_path.clone(),
            },
        );
        Ok(whep_path)
    }

    fn admit(
        &mut self,
        room_name: RoomName,
        stream: &StreamName,
        role: SessionRole,
        identity: &str,
    ) -> Result<u64> {
        if !self.rooms.contains_key(&room_name) {
            if !self.open_rooms {
                return Err(ControlError::NotFound(format!("no room {room_name}")));
            }
            let spec = RoomSpec {
                name: room_name.clone(),
                limits: Limits::default(),
                alarms: AlarmRules::default(),
                created_at_ms: unix_ms(),
            };
            self.rooms
                .insert(room_name.clone(), RoomState::new(spec, false));
        }
        let room = self.live_room(&room_name)?;
        let full = Self::limit_reached(room, role, stream, |s| self.is_viewer(s));
        let Some(what) = full else {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            if let Some(room) = self.rooms.get_mut(&room_name) {
                room.reserved.insert(ticket, (role, stream.clone()));
            }
            return Ok(ticket);
        };
        let already = room.full;
        if let Some(room) = self.rooms.get_mut(&room_name) {
            room.full = true;
        }
        if !already {
            self.publish(
                &room_name,
                Some(identity),
                EventKind::AlarmRaised {
                    alarm: Alarm::RoomFull,
                    stream: None,
                    detail: format!("{identity} refused: {what} reached"),
                },
            );
        }
        Err(ControlError::RoomFull {
            room: room_name.to_string(),
            what,
        })
    }

    fn is_viewer(&self, session: &str) -> bool {
        self.sessions
            .get(session)
            .is_some_and(|s| s.role == SessionRole::Viewer)
    }

    /// Which limit one more `role` session would break, counting sessions
    /// still negotiating.
    fn limit_reached(
        room: &RoomState,
        role: SessionRole,
        stream: &StreamName,
        is_viewer: impl Fn(&str) -> bool,
    ) -> Option<&'static str> {
        let limits = room.spec.limits;
        match role {
            SessionRole::Publisher => {
                let mut streams: std::collections::HashSet<&StreamName> =
                    room.streams.keys().collect();
                streams.extend(
                    room.reserved
                        .values()
                        .filter(|(r, _)| *r == SessionRole::Publisher)
                        .map(|(_, s)| s),
                );
                let taken = streams.len() as u32;
                limits
                    .max_publishers
                    .filter(|max| taken >= *max && !streams.contains(stream))
                    .map(|_| "max publishers")
            }
            SessionRole::Viewer => {
                let viewers = room.sessions.keys().filter(|s| is_viewer(s)).count()
                    + room
                        .reserved
                        .values()
                        .filter(|(r, _)| *r == SessionRole::Viewer)
                        .count();
                limits
                    .max_viewers
                    .filter(|max| viewers as u32 >= *max)
                    .map(|_| "max viewers")
            }
        }
    }

    /// An admitted request finished negotiating (its session started, or it
    /// failed): its reservation no longer counts.
    fn release(&mut self, room: &RoomName, ticket: u64) {
        if let Some(room) = self.rooms.get_mut(room) {
            room.reserved.remove(&ticket);
        }
        self.drop_if_finished(room);
    }

    fn session_started(
        &mut self,
        session: String,
        room_name: RoomName,
        stream: StreamName,
        role: SessionRole,
        identity: String,
        now: Instant,
    ) {
        let Some(room) = self.rooms.get_mut(&room_name).filter(|r| !r.closing) else {
            return;
        };
        room.sessions.insert(session.clone(), ());
        if role == SessionRole::Publisher {
            room.streams.insert(
                stream.clone(),
                PublishedStream {
                    session: session.clone(),
                    identity: identity.clone(),
                    tracks: BTreeMap::new(),
                    alarms: StreamAlarms::new(now),
                },
            );
        }
        self.sessions.insert(
            session,
            SessionInfo {
                room: room_name.clone(),
                stream: stream.clone(),
                role,
                identity: identity.clone(),
                since_ms: unix_ms(),
            },
        );
        self.publish(
            &room_name,
            Some(&identity),
            EventKind::ParticipantJoined { role, stream },
        );
    }

    fn session_ended(&mut self, session: &str, reason: LeaveReason) {
        let Some(info) = self.sessions.remove(session) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&info.room) else {
            return;
        };
        room.sessions.remove(session);
        let mut events = Vec::new();
        let own_stream = info.role == SessionRole::Publisher
            && room
                .streams
                .get(&info.stream)
                .is_some_and(|s| s.session == session);
        if own_stream && let Some(published) = room.streams.remove(&info.stream) {
            for kind in published.tracks.keys() {
                events.push(EventKind::TrackUnpublished { kind: *kind });
            }
            for kind in published.alarms.active() {
                let alarm = Alarm::Stream(kind);
                let stream = Some(info.stream.clone());
                events.push(EventKind::AlarmCleared {
                    alarm_id: self.alarm_log.clear(&info.room, alarm, stream.as_ref()),
                    alarm,
                    stream,
                });
            }
        }
        events.push(EventKind::ParticipantLeft {
            role: info.role,
            stream: info.stream.clone(),
            reason,
        });
        let room_name = info.room.clone();
        let room = &self.rooms[&room_name];
        let still_full = [SessionRole::Publisher, SessionRole::Viewer]
            .iter()
            .any(|role| {
                // A stream name nobody uses, so the publisher check counts seats.
                Self::limit_reached(
                    room,
                    *role,
                    &StreamName::new("-").expect("valid name"),
                    |s| self.is_viewer(s),
                )
                .is_some()
            });
        if room.full && !still_full {
            if let Some(room) = self.rooms.get_mut(&room_name) {
                room.full = false;
            }
            events.push(EventKind::AlarmCleared {
                alarm: Alarm::RoomFull,
                stream: None,
                alarm_id: self.alarm_log.clear(&room_name, Alarm::RoomFull, None),
            });
        }
        for kind in events {
            self.publish(&room_name, Some(&info.identity), kind);
        }
        self.drop_if_finished(&room_name);
    }

    fn evaluate_alarms(&mut self, samples: Vec<StreamSample>, now: Instant) {
        let mut events = Vec::new();
        for sample in samples {
            let Some(room) = self.rooms.get_mut(&sample.room) else {
                continue;
            };
            let rules = room.spec.alarms;
            // The keyframe rule needs to know whether anyone watches.
            let viewers = room
                .sessions
                .keys()
                .filter_map(|s| self.sessions.get(s))
                .filter(|s| s.role == SessionRole::Viewer && s.stream == sample.stream)
                .count();
            let Some(published) = room.streams.get_mut(&sample.stream) else {
                continue;
            };
            for change in published
                .alarms
                .evaluate(sample.counters, viewers, &rules, now)
            {
                let kind = match change {
                    AlarmChange::Raised { kind, detail } => EventKind::AlarmRaised {
                        alarm: Alarm::Stream(kind),
                        stream: Some(sample.stream.clone()),
                        detail,
                    },
                    AlarmChange::Cleared { kind } => EventKind::AlarmCleared {
                        alarm: Alarm::Stream(kind),
                        stream: Some(sample.stream.clone()),
                        alarm_id: self.alarm_log.clear(
                            &sample.room,
                            Alarm::Stream(kind),
                            Some(&sample.stream),
                        ),
                    },
                };
                events.push((sample.room.clone(), published.identity.clone(), kind));
            }
        }
        for (room, identity, kind) in events {
            self.publish(&room, Some(&identity), kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;
    use crate::alarms::{AlarmKind, StreamCounters};
    use crate::bus::MemoryBus;
    use crate::event::Event;
    use crate::store::MemoryStore;

    struct Harness {
        owner: Owner,
        bus: Arc<MemoryBus>,
        store: Arc<MemoryStore>,
        t0: Instant,
    }

    fn room() -> RoomName {
        RoomName::new("site").unwrap()
    }

    fn stream(name: &str) -> StreamName {
        StreamName::new(name).unwrap()
    }

    impl Harness {
        fn new(limits: Limits) -> Harness {
            let bus = Arc::new(MemoryBus::default());
            let spec = RoomSpec {
                name: room(),
                limits,
                alarms: AlarmRules {
                    stall_after: Duration::from_secs(1),
                    ..AlarmRules::default()
                },
                created_at_ms: 0,
            };
            let store = Arc::new(MemoryStore::default());
            let owner = Owner::new(store.clone(), bus.clone(), false, vec![spec], Vec::new());
            Harness {
                owner,
                bus,
                store,
                t0: Instant::now(),
            }
        }

        fn ask<T>(&mut self, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> T {
            let (tx, mut rx) = oneshot::channel();
            self.owner.handle(make(tx), self.t0);
            rx.try_recv().expect("the owner replies at once")
        }

        fn admit(&mut self, stream_name: &str, role: SessionRole, identity: &str) -> Result<u64> {
            self.ask(|reply| Msg::Admit {
                room: room(),
                stream: stream(stream_name),
                role,
                identity: identity.into(),
                reply,
            })
        }

        fn start(&mut self, session: &str, stream_name: &str, role: SessionRole, identity: &str) {
            self.owner.handle(
                Msg::SessionStarted {
                    session: session.into(),
                    room: room(),
                    stream: stream(stream_name),
                    role,
                    identity: identity.into(),
                },
                self.t0,
            );
        }

        fn end(&mut self, session: &str, reason: LeaveReason) {
            self.owner.handle(
                Msg::SessionEnded {
                    session: session.into(),
                    reason,
                },
                self.t0,
            );
        }

        /// Every event so far.
        fn events(&self) -> Vec<Event> {
            self.bus.subscribe(Some(0)).replay
        }
    }

    #[test]
    fn unknown_rooms_are_refused_when_rooms_are_managed() {
        let mut h = Harness::new(Limits::default());
        let result = h.ask(|reply| Msg::Admit {
            room: RoomName::new("elsewhere").unwrap(),
            stream: stream("cam"),
            role: SessionRole::Publisher,
            identity: "cam".into(),
            reply,
        });
        assert!(matches!(result, Err(ControlError::NotFound(_))));
        assert!(h.admit("cam", SessionRole::Publisher, "cam").is_ok());
    }

    #[test]
    fn a_full_room_refuses_and_alarms_once_then_clears() {
        let mut h = Harness::new(Limits {
            max_publishers: Some(1),
            max_viewers: None,
        });
        h.start("s1", "cam-1", SessionRole::Publisher, "cam-1");
        for _ in 0..2 {
            assert!(matches!(
                h.admit("cam-2", SessionRole::Publisher, "cam-2"),
                Err(ControlError::RoomFull { .. })
            ));
        }
        let raised = |e: &Event| {
            matches!(
                e.kind,
                EventKind::AlarmRaised {
                    alarm: Alarm::RoomFull,
                    ..
                }
            )
        };
        assert_eq!(
            h.events().iter().filter(|e| raised(e)).count(),
            1,
            "raised once"
        );
        h.end("s1", LeaveReason::Left);
        assert!(h.events().iter().any(|e| matches!(
            e.kind,
            EventKind::AlarmCleared {
                alarm: Alarm::RoomFull,
                ..
            }
        )));
        assert!(h.admit("cam-2", SessionRole::Publisher, "cam-2").is_ok());
    }

    #[test]
    fn requests_still_negotiating_hold_their_seat() {
        let mut h = Harness::new(Limits {
            max_publishers: Some(1),
            max_viewers: Some(1),
        });
        let first = h.admit("cam-1", SessionRole::Publisher, "cam-1").unwrap();
        assert!(matches!(
            h.admit("cam-2", SessionRole::Publisher, "cam-2"),
            Err(ControlError::RoomFull { .. })
        ));
        h.owner.handle(
            Msg::Release {
                room: room(),
                ticket: first,
            },
            h.t0,
        );
        assert!(h.admit("cam-2", SessionRole::Publisher, "cam-2").is_ok());
        let viewer = h.admit("cam-2", SessionRole::Viewer, "v1").unwrap();
        assert!(h.admit("cam-2", SessionRole::Viewer, "v2").is_err());
        // Started, then released: the session itself now holds the seat.
        h.start("v1", "cam-2", SessionRole::Viewer, "v1");
        h.owner.handle(
            Msg::Release {
                room: room(),
                ticket: viewer,
            },
            h.t0,
        );
        assert!(h.admit("cam-2", SessionRole::Viewer, "v2").is_err());
    }

    #[test]
    fn session_facts_become_participant_and_track_events() {
        let mut h = Harness::new(Limits::default());
        h.start("s1", "cam", SessionRole::Publisher, "cam");
        h.owner.handle(
            Msg::TrackPublished {
                session: "s1".into(),
                kind: TrackKind::Video,
                codec: "video/H264".into(),
            },
            h.t0,
        );
        h.start("v1", "cam", SessionRole::Viewer, "dispatcher");
        let participants = h
            .ask(|reply| Msg::Participants {
                room: room(),
                reply,
            })
            .unwrap();
        let cam = participants.iter().find(|p| p.identity == "cam").unwrap();
        assert!(cam.publishing);
        assert_eq!(cam.viewer_count, 1);
        assert_eq!(cam.tracks[0].codec, "video/H264");
        let dispatcher = participants
            .iter()
            .find(|p| p.identity == "dispatcher")
            .unwrap();
        assert_eq!(dispatcher.watching, vec![stream("cam")]);

        h.end("s1", LeaveReason::HungUp);
        let kinds: Vec<_> = h.events().into_iter().map(|e| e.kind).collect();
        assert!(kinds.contains(&EventKind::TrackUnpublished {
            kind: TrackKind::Video
        }));
        assert!(kinds.contains(&EventKind::ParticipantLeft {
            role: SessionRole::Publisher,
            stream: stream("cam"),
            reason: LeaveReason::HungUp,
        }));
    }

    #[test]
    fn a_deleted_room_is_gone_at_once_and_reported_deleted_when_empty() {
        let mut h = Harness::new(Limits::default());
        h.start("s1", "cam", SessionRole::Publisher, "cam");
        h.ask(|reply| Msg::DeleteRoom {
            name: room(),
            reply,
        })
        .unwrap();
        assert!(h.ask(|reply| Msg::ListRooms { reply }).is_empty());
        assert!(
            !h.events().iter().any(|e| e.kind == EventKind::RoomDeleted),
            "sessions first"
        );
        h.end("s1", LeaveReason::RoomClosed);
        let kinds: Vec<_> = h.events().into_iter().map(|e| e.kind).collect();
        let left = kinds
            .iter()
            .position(|k| matches!(k, EventKind::ParticipantLeft { .. }));
        let deleted = kinds.iter().position(|k| *k == EventKind::RoomDeleted);
        assert!(left < deleted && deleted.is_some(), "{kinds:?}");
    }

    #[test]
    fn a_silent_stream_raises_a_stall_alarm_about_its_publisher() {
        let mut h = Harness::new(Limits::default());
        h.start("s1", "cam", SessionRole::Publisher, "field-1");
        let sample = |packets, at| Msg::Samples {
            samples: vec![StreamSample {
                room: room(),
                stream: stream("cam"),
                counters: StreamCounters {
                    packets,
                    bytes: packets * 1000,
                    keyframes: 1,
                    has_video: true,
                    ..StreamCounters::default()
                },
            }],
            at,
        };
        for ms in [500, 1000, 1600] {
            let at = h.t0 + Duration::from_millis(ms);
            h.owner.handle(sample(10, at), at);
        }
        let raised = h
            .events()
            .into_iter()
            .find(|e| matches!(e.kind, EventKind::AlarmRaised { .. }))
            .expect("stall raised");
        assert_eq!(raised.identity.as_deref(), Some("field-1"));
        assert!(matches!(
            raised.kind,
            EventKind::AlarmRaised {
                alarm: Alarm::Stream(AlarmKind::Stalled),
                ..
            }
        ));
    }

    #[test]
    fn an_unanswered_keyframe_request_alarms_only_while_someone_watches() {
        let mut h = Harness::new(Limits::default());
        h.start("s1", "cam", SessionRole::Publisher, "field-1");
        // Media flows; one keyframe request is never answered.
        let t0 = h.t0;
        let sample = |step: u64| {
            let at = t0 + Duration::from_millis(500 * step);
            let counters = StreamCounters {
                packets: step,
                bytes: step * 40_000,
                keyframes: 1,
                keyframe_requests: 1,
                keyframe_requests_answered: 0,
                has_video: true,
            };
            let samples = vec![StreamSample {
                room: room(),
                stream: stream("cam"),
                counters,
            }];
            (Msg::Samples { samples, at }, at)
        };
        let keyframe_alarms = |h: &Harness| {
            h.events()
                .into_iter()
                .filter(|e| {
                    matches!(
                        e.kind,
                        EventKind::AlarmRaised {
                            alarm: Alarm::Stream(AlarmKind::KeyframeInterval),
                            ..
                        }
                    )
                })
                .count()
        };
        for step in 1..=20 {
            let (msg, at) = sample(step);
            h.owner.handle(msg, at);
        }
        assert_eq!(keyframe_alarms(&h), 0, "nobody watches");

        h.start("v1", "cam", SessionRole::Viewer, "dispatcher");
        // A viewer of another stream does not count; this one does.
        h.start("v2", "other", SessionRole::Viewer, "supervisor");
        for step in 21..=40 {
            let (msg, at) = sample(step);
            h.owner.handle(msg, at);
        }
        assert_eq!(keyframe_alarms(&h), 1, "raised once the viewer waited");
    }

    /// Samples `cam` at `at`: media while `flowing`, else the same
    /// counters as before (silence).
    fn cam_sample(h: &mut Harness, packets: u64, at: Instant) {
        let samples = vec![StreamSample {
            room: room(),
            stream: stream("cam"),
            counters: StreamCounters {
                packets,
                bytes: packets * 10_000,
                has_video: true,
                ..StreamCounters::default()
            },
        }];
        h.owner.handle(Msg::Samples { samples, at }, at);
    }

    #[test]
    fn alarms_are_kept_with_their_times_and_acknowledged_once() {
        let mut h = Harness::new(Limits::default());
        h.start("s1", "cam", SessionRole::Publisher, "field-1");
        let t0 = h.t0;
        let ms = |n: u64| t0 + Duration::from_millis(n);
        cam_sample(&mut h, 10, ms(500));
        cam_sample(&mut h, 10, ms(1600)); // stall_after is 1 s here
        let raised = h
            .events()
            .into_iter()
            .find(|e| matches!(e.kind, EventKind::AlarmRaised { .. }))
            .expect("stall raised");
        let list = |h: &mut Harness, since_ms| {
            h.ask(|reply| Msg::ListAlarms {
                room: room(),
                since_ms,
                reply,
            })
            .unwrap()
        };
        let listed = list(&mut h, u64::MAX);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].id, raised.id, "named by the raising event");
        assert_eq!(listed[0].raised_at_ms, raised.at_unix_ms);
        assert_eq!(listed[0].identity.as_deref(), Some("field-1"));
        assert_eq!(listed[0].cleared_at_ms, None);
        assert_eq!(h.store.alarms().unwrap(), listed, "in the store");

        let ack = |h: &mut Harness, id, by: &str| {
            h.ask(|reply| Msg::AcknowledgeAlarm {
                room: room(),
                id,
                by: by.into(),
                reply,
            })
        };
        let acked = ack(&mut h, raised.id, "dispatcher-1").unwrap();
        assert_eq!(acked.acknowledged.as_ref().unwrap().by, "dispatcher-1");
        assert_eq!(acked.cleared_at_ms, None, "still active");
        let again = ack(&mut h, raised.id, "dispatcher-2").unwrap();
        assert_eq!(
            again.acknowledged, acked.acknowledged,
            "the first one stays"
        );
        assert!(matches!(
            ack(&mut h, raised.id + 100, "dispatcher-1"),
            Err(ControlError::NotFound(_))
        ));
        let acknowledged: Vec<_> = h
            .events()
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::AlarmAcknowledged { .. }))
            .collect();
        assert_eq!(acknowledged.len(), 1, "{acknowledged:?}");
        assert_eq!(
            acknowledged[0].kind,
            EventKind::AlarmAcknowledged {
                alarm_id: raised.id,
                alarm: Alarm::Stream(AlarmKind::Stalled),
                stream: Some(stream("cam")),
                by: "dispatcher-1".into(),
            }
        );
        assert_eq!(acknowledged[0].identity.as_deref(), Some("field-1"));
        assert_eq!(
            h.store.alarms().unwrap()[0].acknowledged,
            acked.acknowledged
        );

        // Media resumes: cleared, naming the alarm; listed as recent.
        cam_sample(&mut h, 20, ms(2100));
        let cleared = h.events().into_iter().last().unwrap();
        assert_eq!(
            cleared.kind,
            EventKind::AlarmCleared {
                alarm: Alarm::Stream(AlarmKind::Stalled),
                stream: Some(stream("cam")),
                alarm_id: raised.id,
            }
        );
        let listed = list(&mut h, 0);
        assert_eq!(listed[0].cleared_at_ms, Some(cleared.at_unix_ms));
        assert_eq!(listed[0].acknowledged, acked.acknowledged);
        assert!(
            list(&mut h, cleared.at_unix_ms + 1).is_empty(),
            "not recent"
        );
        assert_eq!(h.store.alarms().unwrap(), listed);
    }

    #[test]
    fn a_full_room_alarm_is_kept_and_cleared_by_id() {
        let mut h = Harness::new(Limits {
            max_publishers: Some(1),
            max_viewers: None,
        });
        h.start("s1", "cam-1", SessionRole::Publisher, "cam-1");
        assert!(h.admit("cam-2", SessionRole::Publisher, "cam-2").is_err());
        h.end("s1", LeaveReason::Left);
        let events = h.events();
        let raised = events
            .iter()
            .find(|e| matches!(e.kind, EventKind::AlarmRaised { .. }))
            .unwrap();
        assert!(events.iter().any(|e| e.kind
            == EventKind::AlarmCleared {
                alarm: Alarm::RoomFull,
                stream: None,
                alarm_id: raised.id,
            }));
        let stored = h.store.alarms().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(
            stored[0].identity.as_deref(),
            Some("cam-2"),
            "the one refused"
        );
        assert!(stored[0].cleared_at_ms.is_some());
    }

    #[test]
    fn a_call_needs_a_publishing_caller_and_is_addressed_to_the_callee() {
        let mut h = Harness::new(Limits::default());
        let call = |h: &mut Harness| {
            h.ask(|reply| Msg::Call {
                room: room(),
                caller: "dispatcher".into(),
                callee: "field-1".into(),
                reply,
            })
        };
        assert!(matches!(
            call(&mut h),
            Err(ControlError::FailedPrecondition(_))
        ));
        h.start("d1", "dispatcher", SessionRole::Publisher, "dispatcher");
        assert_eq!(call(&mut h).unwrap(), "/whep/site/dispatcher");
        let request = h.events().into_iter().last().unwrap();
        assert_eq!(request.identity.as_deref(), Some("field-1"));
    }
}
