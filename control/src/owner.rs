//! The control owner's state machine: rooms, sessions, published streams
//! and their alarms. Only [`Owner::run`]'s task touches it; see
//! [`crate::Control`] for the handle. Cameras are in [`cameras`].

mod cameras;
mod reload;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::alarm_log::{AlarmLog, AlarmRecord};
use crate::alarms::{AlarmChange, StreamAlarms};
use crate::bus::EventBus;
use crate::camera::CameraSpec;
use crate::core::{
    CallView, ControlError, EndedCall, Msg, ParticipantView, Result, RoomView, StreamStatsView,
    TrackView, unix_ms,
};
use crate::event::{Alarm, CallEndReason, EventKind, LeaveReason, SessionRole, TrackKind};
use crate::issued::{Issued, IssuedToken};
use crate::media::{MediaPlane, StreamSample};
use crate::names::{RoomName, StreamName};
use crate::room::{AlarmRules, Limits, RoomSpec, RoomUpdate};
use crate::stats::StatsWindow;
use crate::store::Store;
use crate::token::{Action, Claims, TokenError};

/// How long a call rings without the callee playing the caller before it
/// ends (`NOT_ANSWERED`).
pub const RING_TIMEOUT: Duration = Duration::from_secs(30);

struct SessionInfo {
    room: RoomName,
    stream: StreamName,
    role: SessionRole,
    identity: String,
    since_ms: u64,
    /// ICE and DTLS are up; a viewer holds a seat only from then on.
    connected: bool,
}

/// What the owner asks of the media plane, done after the message that
/// called for it (the owner never waits on the media plane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Close one session, reporting `reason`.
    Close {
        session: String,
        reason: LeaveReason,
    },
    /// Pull a camera (again, with these settings).
    StartCamera(CameraSpec),
    /// Stop pulling a camera.
    StopCamera {
        room: RoomName,
        identity: StreamName,
    },
}

struct PublishedStream {
    session: String,
    identity: String,
    tracks: BTreeMap<TrackKind, TrackView>,
    alarms: StreamAlarms,
    /// Samples for the live statistics.
    stats: StatsWindow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallPhase {
    /// Asked; the callee has not played the caller yet.
    Ringing,
    /// The callee's player of the caller's stream is connected.
    Connected,
}

/// A call: the callee plays the caller's stream (a dispatcher calling a
/// field user back). One per callee; the room owns them.
struct Call {
    id: String,
    caller: String,
    phase: CallPhase,
    rang_at: Instant,
}

struct RoomState {
    spec: RoomSpec,
    /// Created by an admin (persisted), not implicitly by a first publish.
    managed: bool,
    /// Deleted, waiting for its sessions to end.
    closing: bool,
    /// Deleted by this node (not at another one, which announces it): it
    /// publishes `RoomDeleted` once the room is empty.
    deleted_here: bool,
    sessions: HashMap<String, ()>,
    streams: BTreeMap<StreamName, PublishedStream>,
    /// Admitted sessions still negotiating, by ticket: they count against
    /// the limits until they start or give up, so simultaneous requests
    /// cannot overshoot a limit.
    reserved: HashMap<u64, (SessionRole, StreamName)>,
    full: bool,
    /// Calls by callee.
    calls: BTreeMap<String, Call>,
    /// Identities admitted with the room's admin grant (dispatchers), while
    /// they have sessions.
    dispatchers: HashSet<String>,
    /// Its cameras, by identity (only a managed room has any).
    cameras: BTreeMap<StreamName, cameras::CameraEntry>,
}

impl RoomState {
    fn new(spec: RoomSpec, managed: bool) -> Self {
        RoomState {
            spec,
            managed,
            closing: false,
            deleted_here: false,
            sessions: HashMap::new(),
            streams: BTreeMap::new(),
            reserved: HashMap::new(),
            full: false,
            calls: BTreeMap::new(),
            dispatchers: HashSet::new(),
            cameras: BTreeMap::new(),
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
    /// The tokens issued and not yet expired, as the store keeps them.
    issued: Issued,
    /// An instant and the wall clock then: turns the `now` handed to the
    /// owner into milliseconds since the Unix epoch, the unit bans are
    /// stored in (so they outlast a restart), while tests drive time.
    epoch: (Instant, u64),
    /// Asked of the media plane by the last message.
    effects: Vec<Effect>,
}

impl Owner {
    /// Builds the owner over the rooms, alarms, tokens and cameras loaded
    /// from `store`; the cameras are to be pulled as soon as it runs (its
    /// first effects).
    pub(crate) fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        open_rooms: bool,
        specs: Vec<RoomSpec>,
        alarms: Vec<AlarmRecord>,
        issued: Vec<IssuedToken>,
        cameras: Vec<CameraSpec>,
    ) -> Self {
        let rooms = specs
            .into_iter()
            .map(|spec| (spec.name.clone(), RoomState::new(spec, true)))
            .collect();
        let shared = store.shared();
        let mut owner = Owner {
            next_ticket: 1,
            store,
            bus,
            open_rooms,
            rooms,
            sessions: HashMap::new(),
            alarm_log: AlarmLog::load(alarms, unix_ms(), shared),
            issued: Issued::load(issued),
            epoch: (Instant::now(), unix_ms()),
            effects: Vec::new(),
        };
        owner.prune_issued(&[]);
        owner.load_cameras(cameras);
        owner
    }

    /// Forgets the issued tokens that expired, and those with the ids
    /// `also`, in memory and in the store. A failed delete is only logged:
    /// an expired token is refused anyway, and the next prune retries.
    fn prune_issued(&mut self, also: &[String]) {
        let mut gone = self.issued.prune(unix_ms() / 1000);
        gone.extend_from_slice(also);
        if gone.is_empty() {
            return;
        }
        if let Err(e) = self.store.update_issued_tokens(&[], &gone) {
            tracing::warn!("cannot delete expired tokens from the store (retried later): {e}");
        }
    }

    /// Handles messages until shutdown, or until every sender is gone.
    pub(crate) async fn run(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<Msg>,
        media: Arc<dyn MediaPlane>,
    ) {
        // The cameras loaded from the store.
        self.apply_effects(&media);
        while let Some(msg) = inbox.recv().await {
            if let Msg::Shutdown { reply } = msg {
                // Dropping `self` closes the store (releasing its file lock)
                // and the inbox, which ends the sampler.
                drop(self);
                let _ = reply.send(());
                return;
            }
            self.handle(msg, Instant::now());
            self.apply_effects(&media);
        }
    }

    /// Hands the media plane what the last message asked of it. Starting
    /// and stopping cameras return at once, so they are called here, in
    /// order (a camera removed and added again is stopped first); closing
    /// a session is awaited in a task of its own.
    fn apply_effects(&mut self, media: &Arc<dyn MediaPlane>) {
        for effect in self.effects.drain(..) {
            match effect {
                Effect::Close { session, reason } => {
                    let media = media.clone();
                    tokio::spawn(async move {
                        media.close_session(&session, reason).await;
                    });
                }
                Effect::StartCamera(spec) => media.start_camera(spec),
                Effect::StopCamera { room, identity } => media.stop_camera(&room, &identity),
            }
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
            Msg::CameraStatus {
                room,
                identity,
                status,
            } => self.camera_status(&room, &identity, status, now),
            Msg::AddCamera { spec, reply } => {
                let _ = reply.send(self.add_camera(spec, now));
            }
            Msg::UpdateCamera {
                room,
                identity,
                update,
                reply,
            } => {
                let _ = reply.send(self.update_camera(&room, &identity, &update));
            }
            Msg::RemoveCamera {
                room,
                identity,
                reply,
            } => {
                let _ = reply.send(self.remove_camera(&room, &identity));
            }
            Msg::ListCameras { room, reply } => {
                let _ = reply.send(self.list_cameras(&room));
            }
            Msg::CreateRoom { spec, reply } => {
                let _ = reply.send(self.create_room(spec));
            }
            Msg::UpdateRoom {
                name,
                update,
                reply,
            } => {
                let _ = reply.send(self.update_room(&name, &update));
            }
            Msg::GetRoom { name, reply } => {
                let found = self
                    .catch_up_room(&name, now)
                    .and_then(|()| self.live_room(&name).map(|room| self.view(room)));
                let _ = reply.send(found);
            }
            Msg::ListRooms {
                after,
                limit,
                reply,
            } => {
                use std::ops::Bound;
                let start = after.map_or(Bound::Unbounded, Bound::Excluded);
                let rooms = self
                    .rooms
                    .range((start, Bound::Unbounded))
                    .map(|(_, room)| room)
                    .filter(|room| !room.closing)
                    .take(limit)
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
            Msg::StreamStats {
                room,
                stream,
                reply,
            } => {
                let _ = reply.send(self.stream_stats(&room, &stream));
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
                if let Err(e) = self.refuse_camera(&room, &identity) {
                    let _ = reply.send(Err(e));
                    return;
                }
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
            Msg::Ban {
                room,
                identity,
                until,
                reply,
            } => {
                let banned = self
                    .refuse_camera(&room, &identity)
                    .and_then(|()| self.ban(&room, identity, until, now));
                let _ = reply.send(banned);
            }
            Msg::Confirm {
                room,
                identity,
                claims,
                reply,
            } => {
                let confirmed = self
                    .honours(claims.as_ref())
                    .and_then(|()| self.check_ban(&room, &identity, now));
                let _ = reply.send(confirmed);
            }
            Msg::LiftBan {
                room,
                identity,
                reply,
            } => {
                let _ = reply.send(self.lift_ban(&room, &identity, now));
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
                caller_elsewhere,
                reply,
            } => {
                let _ = reply.send(self.call(&room, caller, callee, caller_elsewhere, now));
            }
            Msg::EndCall {
                room,
                callee,
                reply,
            } => {
                let _ = reply.send(self.end_call(&room, &callee));
            }
            Msg::IssueToken { token, reply } => {
                let _ = reply.send(self.issue_token(token));
            }
            Msg::RevokeToken { room, id, reply } => {
                let revoked = self
                    .catch_up_token(&id, now)
                    .and_then(|()| self.revoke_token(&room, &id));
                let _ = reply.send(revoked);
            }
            Msg::RevokeRoomTokens { room, reply } => {
                let _ = reply.send(self.revoke_room_tokens(&room));
            }
            Msg::CheckToken { claims, reply } => {
                let checked = self
                    .catch_up_room(&claims.room, now)
                    .and_then(|()| self.check_token(&claims));
                let _ = reply.send(checked);
            }
            Msg::Admit {
                room,
                stream,
                role,
                identity,
                via_call,
                dispatcher,
                claims,
                reply,
            } => {
                let admitted = self
                    .catch_up_room(&room, now)
                    .and_then(|()| self.honours(claims.as_ref()))
                    .and_then(|()| {
                        self.admit(room.clone(), &stream, role, &identity, via_call, now)
                    });
                if admitted.is_ok()
                    && dispatcher
                    && let Some(room) = self.rooms.get_mut(&room)
                {
                    room.dispatchers.insert(identity);
                }
                let _ = reply.send(admitted);
            }
            Msg::Release { room, ticket } => self.release(&room, ticket),
            Msg::Reload { what, reply } => {
                let _ = reply.send(self.reload(what, now));
            }
            Msg::NodeLost { sessions } => self.node_lost(sessions),
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
            Msg::SessionConnected { session } => self.session_connected(&session),
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
            Msg::Samples { samples, at } => {
                self.evaluate_alarms(samples, at);
                self.evaluate_cameras(at);
                self.expire_calls(at);
            }
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

    /// Changes a room's settings (persisted first) and tells its watchers.
    /// Alarm rules are read at every evaluation and limits at every
    /// admission, so both apply from the next one; a raised limit may clear
    /// ROOM_FULL at once. An implicit room (open mode) becomes managed, as
    /// with CreateRoom: settings given to it are kept.
    fn update_room(&mut self, name: &RoomName, update: &RoomUpdate) -> Result<RoomView> {
        let room = self.live_room(name)?;
        let spec = update.apply(&room.spec);
        if spec != room.spec || !room.managed {
            self.store.put_room(&spec)?;
            let event = EventKind::RoomUpdated {
                limits: spec.limits,
                alarms: spec.alarms,
            };
            let room = self.rooms.get_mut(name).expect("checked live above");
            room.spec = spec;
            room.managed = true;
            self.publish(name, None, event);
            if let Some(cleared) = self.no_longer_full(name) {
                self.publish(name, None, cleared);
            }
        }
        let room = self.live_room(name)?;
        Ok(self.view(room))
    }

    /// Whether a token (its signature and expiry checked) opens its room as
    /// it is now: the room exists and is the incarnation it was issued for,
    /// and the token was not revoked, alone or with the room's others.
    /// [`check_token`](Self::check_token) for a request's claims, if it
    /// has any (open mode has none).
    fn honours(&self, claims: Option<&Claims>) -> Result<()> {
        claims.map_or(Ok(()), |claims| self.check_token(claims))
    }

    fn check_token(&self, claims: &Claims) -> Result<()> {
        let room = self.live_room(&claims.room)?;
        if claims.inc != room.spec.incarnation {
            return Err(TokenError::EarlierRoom(claims.room.clone()).into());
        }
        if claims.rgen < room.spec.token_generation {
            return Err(TokenError::RevokedWithRoom(claims.room.clone()).into());
        }
        if let Some(id) = claims
            .jti
            .as_deref()
            .filter(|id| self.issued.is_revoked(id))
        {
            return Err(TokenError::Revoked(id.to_owned()).into());
        }
        Ok(())
    }

    /// Records a token about to be signed for a live room, in the store
    /// before it is handed out (a token that could not be revoked after a
    /// restart is not issued); answers the room's incarnation and token
    /// generation for its claims.
    fn issue_token(&mut self, mut token: IssuedToken) -> Result<(u64, u32)> {
        let spec = &self.live_room(&token.room)?.spec;
        let stamp = (spec.incarnation, spec.token_generation);
        token.incarnation = spec.incarnation;
        self.prune_issued(&[]);
        self.store
            .update_issued_tokens(std::slice::from_ref(&token), &[])?;
        self.issued.insert(token);
        Ok(stamp)
    }

    /// Revokes the token `id` of `room` (persisted first) and tells the
    /// room; answers its identity, whose sessions are to be hung up, or
    /// `None` if it was revoked already or the identity is a camera's (a
    /// camera holds no token: its stream is not the token holder's).
    fn revoke_token(&mut self, room: &RoomName, id: &str) -> Result<Option<String>> {
        let incarnation = self.live_room(room)?.spec.incarnation;
        let token = self
            .issued
            .get(room, incarnation, id)
            .ok_or_else(|| {
                ControlError::NotFound(format!("room {room} issued no token {id} (or it expired)"))
            })?
            .clone();
        if token.revoked_at_ms.is_some() {
            return Ok(None);
        }
        let revoked = IssuedToken {
            revoked_at_ms: Some(unix_ms()),
            ..token
        };
        self.store
            .update_issued_tokens(std::slice::from_ref(&revoked), &[])?;
        let identity = revoked.identity.clone();
        self.issued.insert(revoked);
        self.publish(
            room,
            Some(&identity),
            EventKind::TokensRevoked {
                token_id: Some(id.to_owned()),
            },
        );
        Ok((!self.is_camera_identity(room, &identity)).then_some(identity))
    }

    /// `at` in milliseconds since the Unix epoch.
    fn unix_ms_at(&self, at: Instant) -> u64 {
        let (then, then_ms) = self.epoch;
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match at.checked_duration_since(then) {
            Some(later) => then_ms.saturating_add(millis(later)),
            None => then_ms.saturating_sub(millis(then - at)),
        }
    }

    /// Keeps `identity` out of the room until `until`; a managed room
    /// stores the ban first, so it outlasts a restart.
    fn ban(
        &mut self,
        name: &RoomName,
        identity: String,
        until: Instant,
        now: Instant,
    ) -> Result<()> {
        let (now_ms, until_ms) = (self.unix_ms_at(now), self.unix_ms_at(until));
        let mut spec = self.live_room(name)?.spec.clone();
        spec.bans.retain(|_, ends| *ends > now_ms);
        spec.bans.insert(identity, until_ms);
        self.store_spec(name, spec)?;
        self.publish_bans(name, now_ms);
        Ok(())
    }

    /// Refuses a banned identity, saying for how long.
    fn check_ban(&self, room_name: &RoomName, identity: &str, now: Instant) -> Result<()> {
        let now_ms = self.unix_ms_at(now);
        let Some(until_ms) = self
            .rooms
            .get(room_name)
            .and_then(|r| r.spec.bans.get(identity))
            .filter(|until_ms| **until_ms > now_ms)
        else {
            return Ok(());
        };
        let left = (until_ms - now_ms).div_ceil(1000);
        Err(ControlError::PermissionDenied(format!(
            "{identity} was hung up and is kept out of room {room_name} for another {left} s"
        )))
    }

    /// Ends `identity`'s ban (stored first); false if it had none in force.
    fn lift_ban(&mut self, name: &RoomName, identity: &str, now: Instant) -> Result<bool> {
        let now_ms = self.unix_ms_at(now);
        let mut spec = self.live_room(name)?.spec.clone();
        let Some(until_ms) = spec.bans.remove(identity) else {
            return Ok(false);
        };
        self.store_spec(name, spec)?;
        let banned = until_ms > now_ms;
        if banned {
            self.publish_bans(name, now_ms);
        }
        Ok(banned)
    }

    /// Replaces a live room's spec, a managed room's in the store first.
    fn store_spec(&mut self, name: &RoomName, spec: RoomSpec) -> Result<()> {
        let room = self
            .rooms
            .get_mut(name)
            .expect("checked live by the caller");
        if room.managed {
            self.store.put_room(&spec)?;
        }
        room.spec = spec;
        Ok(())
    }

    /// Tells the room's watchers who is kept out now.
    fn publish_bans(&mut self, name: &RoomName, now_ms: u64) {
        let Some(room) = self.rooms.get(name) else {
            return;
        };
        let bans = room.spec.bans_in_force(now_ms);
        self.publish(name, None, EventKind::BansChanged { bans });
    }

    /// Moves the room to its next token generation (persisted first), so
    /// that every token issued so far is refused; answers the identities
    /// with sessions in the room, to be hung up, but its cameras, which
    /// hold no token.
    fn revoke_room_tokens(&mut self, name: &RoomName) -> Result<Vec<String>> {
        let room = self.live_room(name)?;
        let spec = RoomSpec {
            token_generation: room.spec.token_generation.saturating_add(1),
            ..room.spec.clone()
        };
        let mut identities: Vec<String> = room
            .sessions
            .keys()
            .filter_map(|s| self.sessions.get(s))
            .filter(|info| !self.is_camera_identity(name, &info.identity))
            .map(|info| info.identity.clone())
            .collect();
        identities.sort();
        identities.dedup();
        self.store_spec(name, spec)?;
        self.publish(name, None, EventKind::TokensRevoked { token_id: None });
        Ok(identities)
    }

    fn delete_room(&mut self, name: &RoomName) -> Result<()> {
        self.live_room(name)?;
        // Its cameras first: one left in the store would come back with a
        // room created under the same name after a restart.
        self.forget_cameras(name)?;
        let room = self.rooms.get(name).expect("checked live above");
        if room.managed {
            self.store.delete_room(name)?;
        }
        self.close_room(name, true);
        Ok(())
    }

    /// Closes a live room deleted from the store, here (`here`: this node
    /// announces it once empty, and forgets its tokens in the store) or at
    /// another node: its calls end, its tokens are forgotten, and it goes
    /// once its sessions (which the caller closes) have ended.
    fn close_room(&mut self, name: &RoomName, here: bool) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        room.closing = true;
        room.deleted_here = here;
        let calls = std::mem::take(&mut room.calls);
        for (callee, call) in calls {
            self.end_call_event(name, callee, call, CallEndReason::RoomClosed);
        }
        // Its tokens are dead: a room created under its name has another
        // incarnation.
        let forgotten = self.issued.forget_room(name);
        if here {
            self.prune_issued(&forgotten);
        }
        self.drop_if_finished(name);
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
            let announce = room.deleted_here;
            self.rooms.remove(name);
            if announce {
                self.publish(name, None, EventKind::RoomDeleted);
            }
        } else if !room.managed {
            self.rooms.remove(name);
        }
    }

    /// A published stream's live statistics, with its viewer count.
    fn stream_stats(&self, room_name: &RoomName, stream: &StreamName) -> Result<StreamStatsView> {
        let room = self.live_room(room_name)?;
        let not_published =
            || ControlError::NotFound(format!("nobody publishes {stream} in room {room_name}"));
        let published = room.streams.get(stream).ok_or_else(not_published)?;
        let viewer_count = room
            .sessions
            .keys()
            .filter_map(|s| self.sessions.get(s))
            .filter(|s| s.role == SessionRole::Viewer && s.stream == *stream)
            .count() as u32;
        Ok(StreamStatsView {
            room: room_name.clone(),
            stream: stream.clone(),
            identity: published.identity.clone(),
            viewer_count,
            stats: published.stats.stats(),
        })
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
                    dispatcher: room.dispatchers.contains(&info.identity),
                    camera: false,
                });
            view.connected_since_unix_ms = view.connected_since_unix_ms.min(info.since_ms);
            match info.role {
                SessionRole::Publisher => {
                    view.publishing = true;
                    // A WHIP publisher of a camera's stream is refused, so
                    // its publisher is the camera.
                    view.camera |= room.cameras.contains_key(&info.stream);
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

    /// Rings `callee` for `caller`: the caller must publish, the callee
    /// must be in the room and not in someone else's call; the same caller
    /// calling again rings again (the callee's page may have reloaded).
    fn call(
        &mut self,
        room_name: &RoomName,
        caller: String,
        callee: String,
        caller_elsewhere: bool,
        now: Instant,
    ) -> Result<CallView> {
        for who in [&caller, &callee] {
            self.refuse_camera(room_name, who)?;
        }
        let room = self.live_room(room_name)?;
        let caller_stream = StreamName::new(&caller)?;
        let publishing = caller_elsewhere
            || room
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
        if callee == caller {
            return Err(ControlError::InvalidArgument(format!(
                "{caller} cannot call itself"
            )));
        }
        let sessions = || {
            room.sessions
                .keys()
                .filter_map(|s| self.sessions.get(s))
                .filter(|info| info.identity == callee)
        };
        if sessions().next().is_none() {
            return Err(ControlError::NotFound(format!(
                "{callee} is not in room {room_name}: only a participant who publishes or plays can be called"
            )));
        }
        let already_playing =
            sessions().any(|info| info.role == SessionRole::Viewer && info.stream == caller_stream);
        let whep_path = format!("/whep/{room_name}/{caller}");
        let (id, ring, connected) = match room.calls.get(&callee) {
            Some(call) if call.caller != caller => {
                return Err(ControlError::FailedPrecondition(format!(
                    "{callee} is already in a call with {}: end that call first",
                    call.caller
                )));
            }
            Some(call) => (call.id.clone(), call.phase == CallPhase::Ringing, false),
            None => (new_call_id(), true, already_playing),
        };
        let room = self.rooms.get_mut(room_name).expect("checked live above");
        let call = room.calls.entry(callee.clone()).or_insert_with(|| Call {
            id: id.clone(),
            caller: caller.clone(),
            phase: CallPhase::Ringing,
            rang_at: now,
        });
        if ring {
            call.rang_at = now;
            self.publish(
                room_name,
                Some(&callee),
                EventKind::CallRequested {
                    call_id: id.clone(),
                    caller: caller.clone(),
                    callee: callee.clone(),
                    whep_path: whep_path.clone(),
                },
            );
        }
        // A callee already watching the caller is in the call at once.
        if connected {
            self.call_connected(room_name, &callee);
        }
        Ok(CallView {
            call_id: id,
            whep_path,
        })
    }

    /// `callee`'s call is on: its player of the caller connected.
    fn call_connected(&mut self, room_name: &RoomName, callee: &str) {
        let Some(call) = self
            .rooms
            .get_mut(room_name)
            .and_then(|r| r.calls.get_mut(callee))
            .filter(|c| c.phase == CallPhase::Ringing)
        else {
            return;
        };
        call.phase = CallPhase::Connected;
        let kind = EventKind::CallConnected {
            call_id: call.id.clone(),
            caller: call.caller.clone(),
            callee: callee.to_owned(),
        };
        self.publish(room_name, Some(callee), kind);
    }

    fn end_call_event(
        &mut self,
        room: &RoomName,
        callee: String,
        call: Call,
        reason: CallEndReason,
    ) {
        self.publish(
            room,
            Some(&callee),
            EventKind::CallEnded {
                call_id: call.id,
                caller: call.caller,
                callee: callee.clone(),
                reason,
            },
        );
    }

    /// Ends `callee`'s call for `reason`, if it has one matching `which`.
    fn end_call_if(
        &mut self,
        room_name: &RoomName,
        callee: &str,
        which: impl FnOnce(&Call) -> bool,
        reason: CallEndReason,
    ) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        if !room.calls.get(callee).is_some_and(which) {
            return;
        }
        if let Some(call) = room.calls.remove(callee) {
            self.end_call_event(room_name, callee.to_owned(), call, reason);
        }
    }

    /// EndCall: forgets the call and says whose media to close.
    fn end_call(&mut self, room_name: &RoomName, callee: &str) -> Result<EndedCall> {
        self.live_room(room_name)?;
        let room = self.rooms.get_mut(room_name).expect("checked live above");
        let call = room
            .calls
            .remove(callee)
            .ok_or_else(|| ControlError::NotFound(format!("{callee} is in no call")))?;
        let caller_idle = !room.calls.values().any(|c| c.caller == call.caller);
        let caller = StreamName::new(&call.caller)?;
        self.end_call_event(room_name, callee.to_owned(), call, CallEndReason::Ended);
        Ok(EndedCall {
            caller,
            caller_idle,
        })
    }

    /// Ends the calls that rang for [`RING_TIMEOUT`] unanswered.
    fn expire_calls(&mut self, now: Instant) {
        let expired: Vec<(RoomName, String)> = self
            .rooms
            .iter()
            .flat_map(|(name, room)| {
                room.calls
                    .iter()
                    .filter(|(_, c)| {
                        c.phase == CallPhase::Ringing
                            && now.saturating_duration_since(c.rang_at) >= RING_TIMEOUT
                    })
                    .map(|(callee, _)| (name.clone(), callee.clone()))
            })
            .collect();
        for (room, callee) in expired {
            self.end_call_if(&room, &callee, |_| true, CallEndReason::NotAnswered);
        }
    }

    /// How a session's end affects calls: the callee's player of the caller
    /// ending ends the call; so does the callee leaving the room, or the
    /// caller's stream ending, while it rings.
    fn calls_after_session_ended(&mut self, info: &SessionInfo, reason: LeaveReason) {
        let room_name = &info.room;
        let Some(room) = self.rooms.get(room_name) else {
            return;
        };
        match info.role {
            SessionRole::Viewer => {
                let still_playing = room.sessions.keys().any(|s| {
                    self.sessions.get(s).is_some_and(|i| {
                        i.identity == info.identity
                            && i.role == SessionRole::Viewer
                            && i.stream == info.stream
                    })
                });
                if !still_playing {
                    let why = if reason == LeaveReason::PublisherGone {
                        CallEndReason::CallerLeft
                    } else {
                        CallEndReason::CalleeLeft
                    };
                    let caller = info.stream.as_str();
                    self.end_call_if(
                        room_name,
                        &info.identity,
                        |c| c.caller == caller && c.phase == CallPhase::Connected,
                        why,
                    );
                }
            }
            // A stream taken over by the same identity goes on. A caller
            // whose network dropped (timed out) may come back within the
            // republish grace, so a call that is on waits for it; one that
            // still rings, or a caller that left on purpose (DELETE, its
            // page closed or reloaded, hung up), ends the call now.
            SessionRole::Publisher if reason != LeaveReason::Replaced => {
                let dropped = reason == LeaveReason::TimedOut;
                let ended: Vec<String> = room
                    .calls
                    .iter()
                    .filter(|(_, c)| {
                        c.caller == info.identity && (c.phase == CallPhase::Ringing || !dropped)
                    })
                    .map(|(callee, _)| callee.clone())
                    .collect();
                for callee in ended {
                    self.end_call_if(room_name, &callee, |_| true, CallEndReason::CallerLeft);
                }
            }
            SessionRole::Publisher => {}
        }
        let Some(room) = self.rooms.get(room_name) else {
            return;
        };
        let present = room.sessions.keys().any(|s| {
            self.sessions
                .get(s)
                .is_some_and(|i| i.identity == info.identity)
        });
        if !present {
            self.end_call_if(
                room_name,
                &info.identity,
                |c| c.phase == CallPhase::Ringing,
                CallEndReason::CalleeLeft,
            );
        }
    }

    fn admit(
        &mut self,
        room_name: RoomName,
        stream: &StreamName,
        role: SessionRole,
        identity: &str,
        via_call: bool,
        now: Instant,
    ) -> Result<u64> {
        self.check_ban(&room_name, identity, now)?;
        if role == SessionRole::Publisher {
            self.refuse_camera_stream(&room_name, stream)?;
        }
        if via_call {
            // The token lacks the subscribe grant: only a callee playing
            // its caller gets in.
            let called = self
                .rooms
                .get(&room_name)
                .and_then(|r| r.calls.get(identity))
                .is_some_and(|c| c.caller == stream.as_str());
            if !called {
                return Err(TokenError::MissingGrant(Action::Subscribe).into());
            }
        }
        if !self.rooms.contains_key(&room_name) {
            if !self.open_rooms {
                return Err(ControlError::NotFound(format!("no room {room_name}")));
            }
            let spec = RoomSpec {
                name: room_name.clone(),
                limits: Limits::default(),
                alarms: AlarmRules::default(),
                created_at_ms: unix_ms(),
                // Implicit rooms exist only without tokens.
                incarnation: 0,
                token_generation: 0,
                bans: Default::default(),
            };
            self.rooms
                .insert(room_name.clone(), RoomState::new(spec, false));
        }
        let room = self.live_room(&room_name)?;
        let full = Self::limit_reached(room, role, stream, |s| self.seated_viewer(s));
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

    /// If the room was full and is now under both its limits (a session
    /// ended, a limit was raised), forgets it was full and answers the
    /// event that clears its ROOM_FULL alarm.
    fn no_longer_full(&mut self, room_name: &RoomName) -> Option<EventKind> {
        let room = self.rooms.get(room_name)?;
        let still_full = [SessionRole::Publisher, SessionRole::Viewer]
            .iter()
            .any(|role| {
                // A stream name nobody uses, so the publisher check counts seats.
                Self::limit_reached(
                    room,
                    *role,
                    &StreamName::new("-").expect("valid name"),
                    |s| self.seated_viewer(s),
                )
                .is_some()
            });
        if !room.full || still_full {
            return None;
        }
        if let Some(room) = self.rooms.get_mut(room_name) {
            room.full = false;
        }
        Some(EventKind::AlarmCleared {
            alarm: Alarm::RoomFull,
            stream: None,
            alarm_id: self.alarm_log.clear(room_name, Alarm::RoomFull, None),
        })
    }

    /// A viewer that holds a seat: one that connected. Viewers still
    /// connecting hold none, so offers that never connect cannot keep a
    /// room full; the last to connect into a full room is turned away
    /// ([`Owner::session_connected`]).
    fn seated_viewer(&self, session: &str) -> bool {
        self.sessions
            .get(session)
            .is_some_and(|s| s.role == SessionRole::Viewer && s.connected)
    }

    /// A session connected: a viewer takes its seat, or, when the viewers
    /// that connected before it filled the room, is closed (`ROOM_FULL`)
    /// and the room's ROOM_FULL alarm raised.
    fn session_connected(&mut self, session: &str) {
        let Some(info) = self.sessions.get(session) else {
            return;
        };
        if info.connected {
            return;
        }
        let (room_name, identity, role) = (info.room.clone(), info.identity.clone(), info.role);
        let max = self
            .rooms
            .get(&room_name)
            .and_then(|room| room.spec.limits.max_viewers);
        let seated = self.rooms.get(&room_name).map_or(0, |room| {
            room.sessions
                .keys()
                .filter(|s| self.seated_viewer(s))
                .count()
        });
        if role == SessionRole::Viewer && max.is_some_and(|max| seated >= max as usize) {
            self.effects.push(Effect::Close {
                session: session.to_owned(),
                reason: LeaveReason::RoomFull,
            });
            let already = self.rooms.get(&room_name).is_some_and(|room| room.full);
            if let Some(room) = self.rooms.get_mut(&room_name) {
                room.full = true;
            }
            if !already {
                self.publish(
                    &room_name,
                    Some(&identity),
                    EventKind::AlarmRaised {
                        alarm: Alarm::RoomFull,
                        stream: None,
                        detail: format!("{identity} turned away: max viewers connected before it"),
                    },
                );
            }
            return;
        }
        if let Some(info) = self.sessions.get_mut(session) {
            info.connected = true;
        }
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
        let dispatcher = room.dispatchers.contains(&identity);
        if role == SessionRole::Publisher {
            room.streams.insert(
                stream.clone(),
                PublishedStream {
                    session: session.clone(),
                    identity: identity.clone(),
                    tracks: BTreeMap::new(),
                    alarms: StreamAlarms::new(now),
                    stats: StatsWindow::default(),
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
                connected: false,
            },
        );
        self.publish(
            &room_name,
            Some(&identity),
            EventKind::ParticipantJoined {
                role,
                stream: stream.clone(),
                dispatcher,
            },
        );
        // The callee playing its caller: the call is on.
        let calling = self
            .rooms
            .get(&room_name)
            .and_then(|r| r.calls.get(&identity))
            .is_some_and(|c| c.caller == stream.as_str());
        if role == SessionRole::Viewer && calling {
            self.call_connected(&room_name, &identity);
        }
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
        events.extend(self.no_longer_full(&room_name));
        for kind in events {
            self.publish(&room_name, Some(&info.identity), kind);
        }
        self.calls_after_session_ended(&info, reason);
        if let Some(room) = self.rooms.get_mut(&room_name) {
            let sessions = &self.sessions;
            let present = room
                .sessions
                .keys()
                .any(|s| sessions.get(s).is_some_and(|i| i.identity == info.identity));
            if !present {
                room.dispatchers.remove(&info.identity);
            }
        }
        self.drop_if_finished(&room_name);
    }

    /// Another node died: its sessions leave, and the alarms still open on
    /// the streams it published end (nobody else would end them).
    fn node_lost(&mut self, sessions: Vec<crate::peers::LostSession>) {
        for lost in sessions {
            if lost.role == SessionRole::Publisher {
                for (alarm_id, alarm) in self.alarm_log.open_for(&lost.room, &lost.stream) {
                    self.publish(
                        &lost.room,
                        Some(&lost.identity),
                        EventKind::AlarmCleared {
                            alarm,
                            stream: Some(lost.stream.clone()),
                            alarm_id,
                        },
                    );
                }
            }
            self.publish(
                &lost.room,
                Some(&lost.identity),
                EventKind::ParticipantLeft {
                    role: lost.role,
                    stream: lost.stream,
                    reason: LeaveReason::NodeLost,
                },
            );
        }
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
            published.stats.push(now, sample.tracks, sample.viewers);
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

/// A call's id: 64 random bits in hex.
fn new_call_id() -> String {
    format!("{:016x}", rand::random::<u64>())
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

    pub(super) struct Harness {
        pub(super) owner: Owner,
        pub(super) bus: Arc<MemoryBus>,
        pub(super) store: Arc<MemoryStore>,
        pub(super) t0: Instant,
    }

    pub(super) fn room() -> RoomName {
        RoomName::new("site").unwrap()
    }

    pub(super) fn stream(name: &str) -> StreamName {
        StreamName::new(name).unwrap()
    }

    impl Harness {
        pub(super) fn new(limits: Limits) -> Harness {
            let bus = Arc::new(MemoryBus::default());
            let spec = RoomSpec {
                name: room(),
                limits,
                alarms: AlarmRules {
                    stall_after: Duration::from_secs(1),
                    ..AlarmRules::default()
                },
                created_at_ms: 0,
                incarnation: 7,
                token_generation: 0,
                bans: Default::default(),
            };
            let store = Arc::new(MemoryStore::default());
            let owner = Owner::new(
                store.clone(),
                bus.clone(),
                false,
                vec![spec],
                Vec::new(),
                Vec::new(),
                Vec::new(),
            );
            Harness {
                owner,
                bus,
                store,
                t0: Instant::now(),
            }
        }

        pub(super) fn ask<T>(&mut self, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> T {
            let (tx, mut rx) = oneshot::channel();
            self.owner.handle(make(tx), self.t0);
            rx.try_recv().expect("the owner replies at once")
        }

        pub(super) fn admit(
            &mut self,
            stream_name: &str,
            role: SessionRole,
            identity: &str,
        ) -> Result<u64> {
            self.ask(|reply| Msg::Admit {
                room: room(),
                stream: stream(stream_name),
                role,
                identity: identity.into(),
                via_call: false,
                dispatcher: false,
                claims: None,
                reply,
            })
        }

        /// The admitted request finished negotiating (its `Admission` dropped).
        pub(super) fn release(&mut self, ticket: u64) {
            self.owner.handle(
                Msg::Release {
                    room: room(),
                    ticket,
                },
                self.t0,
            );
        }

        pub(super) fn ban(&mut self, identity: &str, until: Instant) -> Result<()> {
            self.ask(|reply| Msg::Ban {
                room: room(),
                identity: identity.into(),
                until,
                reply,
            })
        }

        pub(super) fn call(&mut self, caller: &str, callee: &str) -> Result<CallView> {
            self.ask(|reply| Msg::Call {
                room: room(),
                caller: caller.into(),
                callee: callee.into(),
                caller_elsewhere: false,
                reply,
            })
        }

        pub(super) fn start(
            &mut self,
            session: &str,
            stream_name: &str,
            role: SessionRole,
            identity: &str,
        ) {
            self.start_unconnected(session, stream_name, role, identity);
            self.connect(session);
        }

        /// A session that negotiated but has not connected (yet).
        pub(super) fn start_unconnected(
            &mut self,
            session: &str,
            stream_name: &str,
            role: SessionRole,
            identity: &str,
        ) {
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

        pub(super) fn connect(&mut self, session: &str) {
            self.owner.handle(
                Msg::SessionConnected {
                    session: session.into(),
                },
                self.t0,
            );
        }

        pub(super) fn end(&mut self, session: &str, reason: LeaveReason) {
            self.owner.handle(
                Msg::SessionEnded {
                    session: session.into(),
                    reason,
                },
                self.t0,
            );
        }

        /// Every event so far.
        pub(super) fn events(&self) -> Vec<Event> {
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
            via_call: false,
            dispatcher: false,
            claims: None,
            reply,
        });
        assert!(matches!(result, Err(ControlError::NotFound(_))));
        assert!(h.admit("cam", SessionRole::Publisher, "cam").is_ok());
    }

    fn claims(room_name: &str, incarnation: u64) -> Claims {
        let grants = crate::token::Grants {
            publish: true,
            subscribe: true,
            admin: false,
        };
        let room = RoomName::new(room_name).unwrap();
        Claims::new(
            "cam",
            &room,
            incarnation,
            grants,
            0,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn a_token_opens_only_the_incarnation_of_the_room_it_was_issued_for() {
        let mut h = Harness::new(Limits::default());
        let check =
            |h: &mut Harness, claims: Claims| h.ask(|reply| Msg::CheckToken { claims, reply });
        assert!(check(&mut h, claims("site", 7)).is_ok());
        let earlier = check(&mut h, claims("site", 6));
        assert!(
            matches!(&earlier, Err(ControlError::Unauthenticated(m)) if m.contains("earlier room named site")),
            "{earlier:?}"
        );
        assert!(matches!(
            check(&mut h, claims("elsewhere", 7)),
            Err(ControlError::NotFound(_))
        ));
        let admit = |h: &mut Harness, incarnation| {
            h.ask(|reply| Msg::Admit {
                room: room(),
                stream: stream("cam"),
                role: SessionRole::Publisher,
                identity: "cam".into(),
                via_call: false,
                dispatcher: false,
                claims: Some(claims("site", incarnation)),
                reply,
            })
        };
        assert!(matches!(
            admit(&mut h, 0),
            Err(ControlError::Unauthenticated(_))
        ));
        assert!(admit(&mut h, 7).is_ok());
    }

    impl Harness {
        /// Issues a token (as CreateToken does) and returns its claims.
        fn issue(&mut self, id: &str, identity: &str) -> Claims {
            let now = unix_ms() / 1000;
            let record = IssuedToken {
                id: id.into(),
                room: room(),
                incarnation: 0,
                identity: identity.into(),
                expires_at: now + 3600,
                revoked_at_ms: None,
            };
            let (inc, rgen) = self
                .ask(|reply| Msg::IssueToken {
                    token: record,
                    reply,
                })
                .unwrap();
            Claims {
                inc,
                rgen,
                jti: Some(id.into()),
                sub: identity.into(),
                iat: now,
                exp: now + 3600,
                ..claims("site", inc)
            }
        }

        fn check(&mut self, claims: &Claims) -> Result<()> {
            let claims = claims.clone();
            self.ask(|reply| Msg::CheckToken { claims, reply })
        }
    }

    #[test]
    fn a_revoked_token_is_refused_and_names_its_identity_once() {
        let mut h = Harness::new(Limits::default());
        let a = h.issue("token-a", "cam-1");
        let b = h.issue("token-b", "cam-1");
        assert_eq!(
            h.store.issued_tokens().unwrap().len(),
            2,
            "kept in the store"
        );
        h.start("s1", "cam-1", SessionRole::Publisher, "cam-1");
        let revoke = |h: &mut Harness, id: &str| {
            h.ask(|reply| Msg::RevokeToken {
                room: room(),
                id: id.into(),
                reply,
            })
        };
        assert_eq!(revoke(&mut h, "token-a").unwrap().as_deref(), Some("cam-1"));
        let refused = h.check(&a);
        assert!(
            matches!(&refused, Err(ControlError::Unauthenticated(m)) if m.contains("(token-a) was revoked")),
            "{refused:?}"
        );
        assert!(h.check(&b).is_ok(), "another token of the same identity");
        // Again: nothing more to do.
        assert_eq!(revoke(&mut h, "token-a").unwrap(), None);
        assert!(matches!(
            revoke(&mut h, "token-x"),
            Err(ControlError::NotFound(_))
        ));
        let revoked: Vec<_> = h
            .events()
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::TokensRevoked { .. }))
            .collect();
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].identity.as_deref(), Some("cam-1"));

        // A new owner over the same store (a restart) still refuses it.
        let restarted = Owner::new(
            h.store.clone(),
            h.bus.clone(),
            false,
            vec![h.owner.rooms[&room()].spec.clone()],
            Vec::new(),
            h.store.issued_tokens().unwrap(),
            Vec::new(),
        );
        assert!(restarted.check_token(&a).is_err());
        assert!(restarted.check_token(&b).is_ok());
    }

    #[test]
    fn revoking_every_token_of_a_room_spares_the_ones_issued_after() {
        let mut h = Harness::new(Limits::default());
        let before = h.issue("token-a", "cam-1");
        h.start("s1", "cam-1", SessionRole::Publisher, "cam-1");
        h.start("s2", "cam-1", SessionRole::Viewer, "dispatcher");
        let present = h
            .ask(|reply| Msg::RevokeRoomTokens {
                room: room(),
                reply,
            })
            .unwrap();
        assert_eq!(present, ["cam-1", "dispatcher"]);
        let refused = h.check(&before);
        assert!(
            matches!(&refused, Err(ControlError::Unauthenticated(m)) if m.contains("every token issued for room site")),
            "{refused:?}"
        );
        // Tokens without an id (issued before ids existed) too.
        assert!(h.check(&claims("site", 7)).is_err());
        let after = h.issue("token-b", "cam-1");
        assert!(h.check(&after).is_ok());
        assert_eq!(h.store.rooms().unwrap()[0].token_generation, 1, "stored");
    }

    #[test]
    fn expired_and_deleted_rooms_tokens_are_forgotten() {
        let mut h = Harness::new(Limits::default());
        h.issue("token-a", "cam-1");
        let expired = IssuedToken {
            id: "old".into(),
            room: room(),
            incarnation: 7,
            identity: "cam-1".into(),
            expires_at: 1,
            revoked_at_ms: Some(1),
        };
        h.store
            .update_issued_tokens(std::slice::from_ref(&expired), &[])
            .unwrap();
        // Loading them (a restart) forgets the expired one, in the store too.
        h.owner = Owner::new(
            h.store.clone(),
            h.bus.clone(),
            false,
            vec![h.owner.rooms[&room()].spec.clone()],
            Vec::new(),
            h.store.issued_tokens().unwrap(),
            Vec::new(),
        );
        h.issue("token-b", "cam-2");
        let ids = |h: &Harness| {
            let mut ids: Vec<String> = h
                .store
                .issued_tokens()
                .unwrap()
                .into_iter()
                .map(|t| t.id)
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&h), ["token-a", "token-b"]);
        h.ask(|reply| Msg::DeleteRoom {
            name: room(),
            reply,
        })
        .unwrap();
        assert!(ids(&h).is_empty());
    }

    #[test]
    fn only_connected_viewers_hold_seats_and_the_last_to_connect_is_turned_away() {
        let mut h = Harness::new(Limits {
            max_publishers: None,
            max_viewers: Some(2),
        });
        h.start("p", "cam", SessionRole::Publisher, "cam");
        // Three offers that never connect (junk, or viewers still
        // connecting): none holds a seat, so a real viewer is admitted.
        for (i, who) in ["junk-1", "junk-2", "junk-3"].iter().enumerate() {
            let ticket = h.admit("cam", SessionRole::Viewer, who).expect("admitted");
            h.release(ticket);
            h.start_unconnected(&format!("j{i}"), "cam", SessionRole::Viewer, who);
        }
        let ticket = h
            .admit("cam", SessionRole::Viewer, "real-1")
            .expect("admitted");
        h.release(ticket);
        h.start_unconnected("r1", "cam", SessionRole::Viewer, "real-1");
        h.connect("r1");
        assert!(h.owner.effects.is_empty(), "{:?}", h.owner.effects);
        // One of the others connects: it takes the second seat.
        h.connect("j0");
        assert!(h.owner.effects.is_empty(), "{:?}", h.owner.effects);
        // The room is full now: new offers are refused, and one that was
        // admitted earlier and connects now is turned away.
        assert!(h.admit("cam", SessionRole::Viewer, "real-2").is_err());
        h.connect("j1");
        assert_eq!(
            h.owner.effects.drain(..).collect::<Vec<_>>(),
            [Effect::Close {
                session: "j1".into(),
                reason: LeaveReason::RoomFull
            }]
        );
        assert!(
            h.events().iter().any(|e| matches!(
                &e.kind,
                EventKind::AlarmRaised {
                    alarm: Alarm::RoomFull,
                    ..
                }
            )),
            "ROOM_FULL raised"
        );
        // A seat given back (the real viewer left) admits again.
        h.end("r1", LeaveReason::Left);
        h.end("j1", LeaveReason::RoomFull);
        h.admit("cam", SessionRole::Viewer, "real-2")
            .expect("a seat is free");
    }

    #[test]
    fn an_update_is_stored_announced_and_a_raised_limit_clears_room_full() {
        let mut h = Harness::new(Limits {
            max_publishers: None,
            max_viewers: Some(1),
        });
        h.start("p", "cam", SessionRole::Publisher, "cam");
        h.start("v1", "cam", SessionRole::Viewer, "viewer-1");
        assert!(h.admit("cam", SessionRole::Viewer, "viewer-2").is_err());
        let update = |h: &mut Harness, update: RoomUpdate| {
            h.ask(|reply| Msg::UpdateRoom {
                name: room(),
                update,
                reply,
            })
        };
        let view = update(
            &mut h,
            RoomUpdate {
                max_viewers: Some(Some(2)),
                stall_after: Some(Duration::from_millis(700)),
                ..RoomUpdate::default()
            },
        )
        .unwrap();
        assert_eq!(view.spec.limits.max_viewers, Some(2));
        assert_eq!(view.spec.limits.max_publishers, None, "kept");
        assert_eq!(view.spec.alarms.stall_after, Duration::from_millis(700));
        assert_eq!(
            view.spec.alarms.min_bitrate_bps,
            AlarmRules::default().min_bitrate_bps,
            "kept"
        );
        assert_eq!(h.store.rooms().unwrap(), vec![view.spec.clone()], "stored");
        let kinds: Vec<EventKind> = h
            .events()
            .into_iter()
            .rev()
            .take(2)
            .map(|e| e.kind)
            .collect();
        assert!(
            matches!(
                kinds[0],
                EventKind::AlarmCleared {
                    alarm: Alarm::RoomFull,
                    ..
                }
            ),
            "{kinds:?}"
        );
        assert!(
            matches!(kinds[1], EventKind::RoomUpdated { limits, .. } if limits.max_viewers == Some(2))
        );
        assert!(h.admit("cam", SessionRole::Viewer, "viewer-2").is_ok());

        // Nothing to change: nothing announced.
        let before = h.events().len();
        update(&mut h, RoomUpdate::default()).unwrap();
        assert_eq!(h.events().len(), before);
        // A limit removed.
        let view = update(
            &mut h,
            RoomUpdate {
                max_viewers: Some(None),
                ..RoomUpdate::default()
            },
        )
        .unwrap();
        assert_eq!(view.spec.limits.max_viewers, None);
        assert!(matches!(
            h.ask(|reply| Msg::UpdateRoom {
                name: RoomName::new("elsewhere").unwrap(),
                update: RoomUpdate::default(),
                reply,
            }),
            Err(ControlError::NotFound(_))
        ));
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
        assert!(
            h.ask(|reply| Msg::ListRooms {
                after: None,
                limit: usize::MAX,
                reply
            })
            .is_empty()
        );
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
                tracks: Vec::new(),
                viewers: Vec::new(),
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
                tracks: Vec::new(),
                viewers: Vec::new(),
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
            tracks: Vec::new(),
            viewers: Vec::new(),
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
    fn a_call_needs_a_publishing_caller_and_a_present_callee() {
        let mut h = Harness::new(Limits::default());
        assert!(matches!(
            h.call("dispatcher", "field-1"),
            Err(ControlError::FailedPrecondition(_))
        ));
        h.start("d1", "dispatcher", SessionRole::Publisher, "dispatcher");
        // Nobody called field-1 is in the room.
        assert!(matches!(
            h.call("dispatcher", "field-1"),
            Err(ControlError::NotFound(_))
        ));
        assert!(matches!(
            h.call("dispatcher", ""),
            Err(ControlError::InvalidArgument(_))
        ));
        assert!(matches!(
            h.call("dispatcher", "dispatcher"),
            Err(ControlError::InvalidArgument(_))
        ));
        h.start("f1", "field-1", SessionRole::Publisher, "field-1");
        let call = h.call("dispatcher", "field-1").unwrap();
        assert_eq!(call.whep_path, "/whep/site/dispatcher");
        let request = h.events().into_iter().last().unwrap();
        assert_eq!(request.identity.as_deref(), Some("field-1"));
        assert_eq!(
            request.kind,
            EventKind::CallRequested {
                call_id: call.call_id,
                caller: "dispatcher".into(),
                callee: "field-1".into(),
                whep_path: "/whep/site/dispatcher".into(),
            }
        );
    }

    /// The call events after `from`, as (kind name, callee, reason).
    fn call_events(h: &Harness, from: usize) -> Vec<String> {
        h.events()
            .into_iter()
            .skip(from)
            .filter_map(|e| match e.kind {
                EventKind::CallRequested { callee, .. } => Some(format!("ringing {callee}")),
                EventKind::CallConnected { callee, .. } => Some(format!("connected {callee}")),
                EventKind::CallEnded { callee, reason, .. } => {
                    Some(format!("ended {callee} {reason:?}"))
                }
                _ => None,
            })
            .collect()
    }

    fn two_dispatchers_and_a_field_user() -> Harness {
        let mut h = Harness::new(Limits::default());
        h.start("d1", "dispatcher-a", SessionRole::Publisher, "dispatcher-a");
        h.start("d2", "dispatcher-b", SessionRole::Publisher, "dispatcher-b");
        h.start("f1", "field-1", SessionRole::Publisher, "field-1");
        h
    }

    #[test]
    fn a_call_rings_connects_when_the_callee_plays_and_ends_when_it_stops() {
        let mut h = two_dispatchers_and_a_field_user();
        let from = h.events().len();
        let call = h.call("dispatcher-a", "field-1").unwrap();
        // Watching another stream is not answering.
        h.start("v0", "dispatcher-b", SessionRole::Viewer, "field-1");
        h.start("v1", "dispatcher-a", SessionRole::Viewer, "field-1");
        // Calling again while connected neither rings nor makes a new call.
        assert_eq!(h.call("dispatcher-a", "field-1").unwrap(), call);
        h.end("v1", LeaveReason::Left);
        assert_eq!(
            call_events(&h, from),
            [
                "ringing field-1",
                "connected field-1",
                "ended field-1 CalleeLeft"
            ]
        );
        // Over: a new call has a new id.
        let again = h.call("dispatcher-a", "field-1").unwrap();
        assert_ne!(again.call_id, call.call_id);
    }

    #[test]
    fn one_call_per_callee_and_end_call_says_whose_stream_to_stop() {
        let mut h = two_dispatchers_and_a_field_user();
        h.start("f2", "field-2", SessionRole::Publisher, "field-2");
        h.call("dispatcher-a", "field-1").unwrap();
        assert!(matches!(
            h.call("dispatcher-b", "field-1"),
            Err(ControlError::FailedPrecondition(_))
        ));
        h.call("dispatcher-a", "field-2").unwrap();
        let from = h.events().len();
        let end = |h: &mut Harness, callee: &str| {
            h.ask(|reply| Msg::EndCall {
                room: room(),
                callee: callee.into(),
                reply,
            })
        };
        // dispatcher-a still calls field-2: its stream stays.
        let ended = end(&mut h, "field-1").unwrap();
        assert_eq!(ended.caller.as_str(), "dispatcher-a");
        assert!(!ended.caller_idle);
        assert!(matches!(
            end(&mut h, "field-1"),
            Err(ControlError::NotFound(_))
        ));
        // Its last call: the caller's stream is closed too.
        assert!(end(&mut h, "field-2").unwrap().caller_idle);
        assert_eq!(
            call_events(&h, from),
            ["ended field-1 Ended", "ended field-2 Ended"]
        );
        // Now dispatcher-b may call field-1.
        h.call("dispatcher-b", "field-1").unwrap();
    }

    #[test]
    fn a_ringing_call_ends_when_either_side_leaves_or_nobody_answers() {
        let mut h = two_dispatchers_and_a_field_user();
        h.start("f2", "field-2", SessionRole::Publisher, "field-2");
        h.start("f3", "field-3", SessionRole::Publisher, "field-3");
        h.call("dispatcher-a", "field-1").unwrap();
        h.call("dispatcher-b", "field-2").unwrap();
        let from = h.events().len();
        h.end("f1", LeaveReason::TimedOut);
        h.end("d2", LeaveReason::Left);
        assert_eq!(
            call_events(&h, from),
            ["ended field-1 CalleeLeft", "ended field-2 CallerLeft"]
        );

        h.call("dispatcher-a", "field-3").unwrap();
        let from = h.events().len();
        h.owner.handle(
            Msg::Samples {
                samples: Vec::new(),
                at: h.t0 + RING_TIMEOUT - Duration::from_millis(1),
            },
            h.t0,
        );
        assert!(call_events(&h, from).is_empty());
        h.owner.handle(
            Msg::Samples {
                samples: Vec::new(),
                at: h.t0 + RING_TIMEOUT,
            },
            h.t0,
        );
        assert_eq!(call_events(&h, from), ["ended field-3 NotAnswered"]);
    }

    #[test]
    fn a_call_that_is_on_ends_when_the_caller_leaves_but_waits_out_a_drop() {
        let mut h = two_dispatchers_and_a_field_user();
        h.start("f2", "field-2", SessionRole::Publisher, "field-2");
        h.call("dispatcher-a", "field-1").unwrap();
        h.start("v1", "dispatcher-a", SessionRole::Viewer, "field-1");
        h.call("dispatcher-b", "field-2").unwrap();
        h.start("v2", "dispatcher-b", SessionRole::Viewer, "field-2");
        let from = h.events().len();
        // dispatcher-a's network drops: the call waits for the grace.
        h.end("d1", LeaveReason::TimedOut);
        assert!(call_events(&h, from).is_empty());
        // dispatcher-b reloads its wall (its WHIP session is closed).
        h.end("d2", LeaveReason::Left);
        assert_eq!(call_events(&h, from), ["ended field-2 CallerLeft"]);
    }

    #[test]
    fn a_takeover_of_the_callers_stream_keeps_the_call() {
        let mut h = two_dispatchers_and_a_field_user();
        h.call("dispatcher-a", "field-1").unwrap();
        let from = h.events().len();
        h.end("d1", LeaveReason::Replaced);
        h.start(
            "d1b",
            "dispatcher-a",
            SessionRole::Publisher,
            "dispatcher-a",
        );
        h.start("v1", "dispatcher-a", SessionRole::Viewer, "field-1");
        assert_eq!(call_events(&h, from), ["connected field-1"]);
        // The caller's stream never comes back: the callee's player is
        // closed as PublisherGone, which ends the call as CallerLeft.
        h.end("v1", LeaveReason::PublisherGone);
        assert_eq!(
            call_events(&h, from),
            ["connected field-1", "ended field-1 CallerLeft"]
        );
    }

    #[test]
    fn only_a_callee_plays_its_caller_without_the_subscribe_grant() {
        let mut h = two_dispatchers_and_a_field_user();
        let via_call = |h: &mut Harness, stream_name: &str| {
            h.ask(|reply| Msg::Admit {
                room: room(),
                stream: stream(stream_name),
                role: SessionRole::Viewer,
                identity: "field-1".into(),
                via_call: true,
                dispatcher: false,
                claims: None,
                reply,
            })
        };
        assert!(matches!(
            via_call(&mut h, "dispatcher-a"),
            Err(ControlError::PermissionDenied(_))
        ));
        h.call("dispatcher-a", "field-1").unwrap();
        assert!(via_call(&mut h, "dispatcher-a").is_ok());
        assert!(matches!(
            via_call(&mut h, "dispatcher-b"),
            Err(ControlError::PermissionDenied(_))
        ));
    }

    #[test]
    fn a_banned_identity_is_refused_until_the_ban_ends() {
        let mut h = Harness::new(Limits::default());
        let until = h.t0 + Duration::from_secs(60);
        h.ban("field-1", until).unwrap();
        for role in [SessionRole::Publisher, SessionRole::Viewer] {
            let refused = h.admit("field-1", role, "field-1");
            assert!(
                matches!(&refused, Err(ControlError::PermissionDenied(m)) if m.contains("60 s")),
                "{refused:?}"
            );
        }
        // Others are not affected.
        assert!(
            h.admit("field-2", SessionRole::Publisher, "field-2")
                .is_ok()
        );
        // After the ban: welcome back.
        let later = h.ask(|reply| Msg::Admit {
            room: room(),
            stream: stream("field-1"),
            role: SessionRole::Publisher,
            identity: "field-1".into(),
            via_call: false,
            dispatcher: false,
            claims: None,
            reply,
        });
        assert!(later.is_err(), "the harness' clock is still t0");
        let (tx, mut rx) = oneshot::channel();
        h.owner.handle(
            Msg::Admit {
                room: room(),
                stream: stream("field-1"),
                role: SessionRole::Publisher,
                identity: "field-1".into(),
                via_call: false,
                dispatcher: false,
                claims: None,
                reply: tx,
            },
            until,
        );
        assert!(rx.try_recv().unwrap().is_ok());
    }

    #[test]
    fn identities_admitted_with_the_admin_grant_are_dispatchers() {
        let mut h = Harness::new(Limits::default());
        for (identity, dispatcher) in [("dispatcher-a", true), ("field-1", false)] {
            h.ask(|reply| Msg::Admit {
                room: room(),
                stream: stream(identity),
                role: SessionRole::Publisher,
                identity: identity.into(),
                via_call: false,
                dispatcher,
                claims: None,
                reply,
            })
            .unwrap();
            h.start(identity, identity, SessionRole::Publisher, identity);
        }
        let joined: Vec<(Option<String>, bool)> = h
            .events()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::ParticipantJoined { dispatcher, .. } => Some((e.identity, dispatcher)),
                _ => None,
            })
            .collect();
        assert_eq!(
            joined,
            [
                (Some("dispatcher-a".into()), true),
                (Some("field-1".into()), false)
            ]
        );
        let listed: Vec<(String, bool)> = h
            .ask(|reply| Msg::Participants {
                room: room(),
                reply,
            })
            .unwrap()
            .into_iter()
            .map(|p| (p.identity, p.dispatcher))
            .collect();
        assert_eq!(
            listed,
            [("dispatcher-a".into(), true), ("field-1".into(), false)]
        );
        // Gone, then back with a field token: a camera now.
        h.end("dispatcher-a", LeaveReason::Left);
        h.admit("dispatcher-a", SessionRole::Publisher, "dispatcher-a")
            .unwrap();
        h.start("d2", "dispatcher-a", SessionRole::Publisher, "dispatcher-a");
        assert!(matches!(
            h.events().last().map(|e| &e.kind),
            Some(EventKind::ParticipantJoined {
                dispatcher: false,
                ..
            })
        ));
    }

    #[test]
    fn deleting_the_room_ends_its_calls() {
        let mut h = two_dispatchers_and_a_field_user();
        h.call("dispatcher-a", "field-1").unwrap();
        let from = h.events().len();
        h.ask(|reply| Msg::DeleteRoom {
            name: room(),
            reply,
        })
        .unwrap();
        assert_eq!(call_events(&h, from), ["ended field-1 RoomClosed"]);
    }
}
