//! The control plane's handle: rooms, participants and alarms are held by
//! one owner task (`owner.rs`) and changed only by messages.
//!
//! [`Control`] is the cloneable handle the gRPC services and the gateway use.
//! Checks that need no state (token signatures, the admin key) run in the
//! caller; everything that reads or changes rooms goes to the owner task,
//! which never awaits anything but its inbox. Calls into the media plane
//! (hang up, mute, close a room, sample counters) are made by the handle or
//! by the sampler task, never by the owner, so the two owners cannot wait on
//! each other.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

use crate::alarm_log::AlarmRecord;
use crate::alarms::AlarmKind;
use crate::bus::{EventBus, Subscription};
use crate::camera::{CameraSpec, CameraUpdate, CameraView, NewCamera};
use crate::event::{LeaveReason, SessionRole, TrackKind};
use crate::issued::{IssuedToken, new_token_id};
use crate::media::{MediaPlane, StreamSample};
use crate::names::{InvalidName, RoomName, StreamName};
use crate::owner::Owner;
use crate::peers::{PeerOp, PeerOutcome, Peers};
use crate::room::{AlarmRules, Limits, RoomSpec, RoomUpdate};
use crate::store::{Store, StoreError};
use crate::token::{Action, Claims, Grants, TokenError, TokenSigner};

/// How often stream counters are sampled for alarms (an alarm is seen
/// within `stall_after` plus this).
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

/// How far back `ListAlarms` looks for cleared alarms unless asked.
pub const RECENT_ALARMS: Duration = Duration::from_secs(3600);

/// How long a relay's token opens a room: it is checked once, when the
/// relay's WHEP request is admitted.
pub const RELAY_TOKEN_TTL: Duration = Duration::from_secs(60);

/// Longest token lifetime an admin may ask for.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Why a control request failed. Mapped once to gRPC statuses and once to
/// HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A request field is missing or malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// No or a bad credential: the admin key or a valid token is needed.
    #[error("{0}")]
    Unauthenticated(String),
    /// The credential is valid but does not allow this.
    #[error("{0}")]
    PermissionDenied(String),
    /// No such room, participant or track.
    #[error("{0}")]
    NotFound(String),
    /// A room of that name exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The room is at its publisher or viewer limit.
    #[error("room {room} is full ({what})")]
    RoomFull {
        /// The room.
        room: String,
        /// Which limit.
        what: &'static str,
    },
    /// The request makes no sense in the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The durable store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The control plane is shutting down.
    #[error("control plane unavailable")]
    Unavailable,
}

impl From<InvalidName> for ControlError {
    fn from(e: InvalidName) -> Self {
        ControlError::InvalidArgument(e.to_string())
    }
}

impl From<TokenError> for ControlError {
    fn from(e: TokenError) -> Self {
        if e.is_forbidden() {
            ControlError::PermissionDenied(e.to_string())
        } else {
            ControlError::Unauthenticated(e.to_string())
        }
    }
}

/// Shorthand.
pub type Result<T, E = ControlError> = std::result::Result<T, E>;

/// Who may do what.
#[derive(Clone)]
pub enum Auth {
    /// Admin RPCs need `admin_key`; WHIP/WHEP need tokens signed by `signer`.
    Tokens {
        /// Signs and checks participant tokens.
        signer: Arc<TokenSigner>,
        /// The admin key.
        admin_key: String,
    },
    /// No credentials anywhere, rooms created on first use (local demos).
    Open,
}

/// A call that rings (or is on): what `Call` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallView {
    /// Names the call in its events.
    pub call_id: String,
    /// What the callee plays: `/whep/{room}/{caller}`.
    pub whep_path: String,
}

/// A call `EndCall` ended: whose media to close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedCall {
    /// Whose stream the callee played.
    pub caller: StreamName,
    /// Whether the caller is in no other call (its stream is closed too).
    pub caller_idle: bool,
}

/// A token CreateToken signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// The JWT.
    pub token: String,
    /// Its id (claim `jti`), to revoke it.
    pub id: String,
    /// Its expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// A room with its live counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomView {
    /// Definition.
    pub spec: RoomSpec,
    /// Streams being published.
    pub publishers: u32,
    /// Viewer sessions.
    pub viewers: u32,
}

/// One published track.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrackView {
    /// Audio or video.
    pub kind: TrackKind,
    /// Mime type.
    pub codec: String,
    /// Forwarding stopped by an admin.
    pub muted: bool,
}

/// A participant as `ListParticipants` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParticipantView {
    /// Identity.
    pub identity: String,
    /// Publishes its stream now.
    pub publishing: bool,
    /// Its published tracks.
    pub tracks: Vec<TrackView>,
    /// Viewers of its stream.
    pub viewer_count: u32,
    /// Its stream's bitrate, bits per second.
    pub bitrate_bps: u64,
    /// Start of its oldest current session, ms since the Unix epoch.
    pub connected_since_unix_ms: u64,
    /// Streams it plays.
    pub watching: Vec<StreamName>,
    /// Alarms active on its stream.
    pub active_alarms: Vec<AlarmKind>,
    /// It joined with the room's admin grant: a dispatcher, not a camera.
    pub dispatcher: bool,
    /// It is a camera (AddCamera) publishing its stream.
    pub camera: bool,
}

/// A published stream's live statistics as `GetStreamStats` shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStatsView {
    /// Its room.
    pub room: RoomName,
    /// The stream.
    pub stream: StreamName,
    /// Its publisher.
    pub identity: String,
    /// Viewer sessions playing it now.
    pub viewer_count: u32,
    /// The statistics; `None` until the first sample after it started
    /// (within 500 ms).
    pub stats: Option<crate::stats::StreamStats>,
}

/// Whose events a watcher may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchScope {
    /// Only this room.
    pub room: Option<RoomName>,
    /// Only events about this identity (plus room-wide ones when a
    /// participant watches its own feed).
    pub identity: Option<String>,
    /// A participant's own feed: room-wide events are included.
    pub participant: bool,
}

impl WatchScope {
    /// Whether `event` belongs in this feed.
    pub fn admits(&self, event: &crate::event::Event) -> bool {
        if self.room.as_ref().is_some_and(|room| *room != event.room) {
            return false;
        }
        match (&self.identity, &event.identity) {
            (None, _) => true,
            (Some(want), Some(about)) => want == about,
            (Some(_), None) => self.participant,
        }
    }
}

pub(crate) type Reply<T> = oneshot::Sender<T>;

/// Messages to the owner.
pub(crate) enum Msg {
    /// A camera's puller reported its state (a fact, no reply).
    CameraStatus {
        room: RoomName,
        identity: StreamName,
        status: crate::camera::CameraStatus,
    },
    AddCamera {
        spec: CameraSpec,
        reply: Reply<Result<CameraView>>,
    },
    UpdateCamera {
        room: RoomName,
        identity: StreamName,
        update: CameraUpdate,
        reply: Reply<Result<CameraView>>,
    },
    RemoveCamera {
        room: RoomName,
        identity: StreamName,
        reply: Reply<Result<()>>,
    },
    ListCameras {
        room: RoomName,
        reply: Reply<Result<Vec<CameraView>>>,
    },
    CreateRoom {
        spec: RoomSpec,
        reply: Reply<Result<RoomView>>,
    },
    /// Another node died with these sessions (a fact, no reply).
    NodeLost {
        sessions: Vec<crate::peers::LostSession>,
    },
    /// Another node changed the shared store: read it again.
    Reload {
        what: crate::reload::Reload,
        reply: Reply<Result<crate::reload::Reloaded>>,
    },
    GetRoom {
        name: RoomName,
        reply: Reply<Result<RoomView>>,
    },
    UpdateRoom {
        name: RoomName,
        update: RoomUpdate,
        reply: Reply<Result<RoomView>>,
    },
    ListRooms {
        /// Rooms named after this one (a page's start).
        after: Option<RoomName>,
        /// At most this many.
        limit: usize,
        reply: Reply<Vec<RoomView>>,
    },
    DeleteRoom {
        name: RoomName,
        reply: Reply<Result<()>>,
    },
    Participants {
        room: RoomName,
        reply: Reply<Result<Vec<ParticipantView>>>,
    },
    StreamStats {
        room: RoomName,
        stream: StreamName,
        reply: Reply<Result<StreamStatsView>>,
    },
    ListAlarms {
        room: RoomName,
        /// Cleared alarms count from this time on (ms since the Unix epoch).
        since_ms: u64,
        reply: Reply<Result<Vec<AlarmRecord>>>,
    },
    AcknowledgeAlarm {
        room: RoomName,
        id: u64,
        by: String,
        reply: Reply<Result<AlarmRecord>>,
    },
    HasParticipant {
        room: RoomName,
        identity: String,
        reply: Reply<Result<()>>,
    },
    /// Refuse `identity`'s new sessions in `room` until `until`.
    Ban {
        room: RoomName,
        identity: String,
        until: Instant,
        reply: Reply<Result<()>>,
    },
    /// An admitted session has started: is it still welcome? (Its token
    /// may have been revoked, or its identity banned, while it negotiated.)
    Confirm {
        room: RoomName,
        identity: String,
        claims: Option<Claims>,
        reply: Reply<Result<()>>,
    },
    /// End `identity`'s ban in `room`; answers whether it had one.
    LiftBan {
        room: RoomName,
        identity: String,
        reply: Reply<Result<bool>>,
    },
    HasTrack {
        room: RoomName,
        stream: StreamName,
        kind: TrackKind,
        reply: Reply<Result<()>>,
    },
    Muted {
        room: RoomName,
        stream: StreamName,
        kind: TrackKind,
        muted: bool,
    },
    Call {
        room: RoomName,
        caller: String,
        callee: String,
        /// The caller publishes at another node of the deployment.
        caller_elsewhere: bool,
        reply: Reply<Result<CallView>>,
    },
    EndCall {
        room: RoomName,
        callee: String,
        reply: Reply<Result<EndedCall>>,
    },
    /// Records a token about to be signed (its incarnation is filled in);
    /// replies with the room's incarnation and token generation.
    IssueToken {
        token: IssuedToken,
        reply: Reply<Result<(u64, u32)>>,
    },
    /// Revokes one token; replies with its identity, or `None` if it was
    /// revoked already.
    RevokeToken {
        room: RoomName,
        id: String,
        reply: Reply<Result<Option<String>>>,
    },
    /// Revokes every token of the room so far; replies with the identities
    /// that have sessions in it.
    RevokeRoomTokens {
        room: RoomName,
        reply: Reply<Result<Vec<String>>>,
    },
    /// Whether the room of a token (signature and expiry checked) still
    /// honours it.
    CheckToken {
        claims: Claims,
        reply: Reply<Result<()>>,
    },
    Admit {
        room: RoomName,
        stream: StreamName,
        role: SessionRole,
        identity: String,
        /// The token lacks the subscribe grant: admitted only if `identity`
        /// is called by `stream`'s publisher (the call is the grant).
        via_call: bool,
        /// The token has the room's admin grant: a dispatcher.
        dispatcher: bool,
        /// The token's claims (signature and expiry checked), for the room
        /// to check it still honours it; `None` in open mode.
        claims: Option<Claims>,
        reply: Reply<Result<u64>>,
    },
    Release {
        room: RoomName,
        ticket: u64,
    },
    Shutdown {
        reply: Reply<()>,
    },
    SessionStarted {
        session: String,
        room: RoomName,
        stream: StreamName,
        role: SessionRole,
        identity: String,
    },
    SessionEnded {
        session: String,
        reason: LeaveReason,
    },
    SessionConnected {
        session: String,
    },
    TrackPublished {
        session: String,
        kind: TrackKind,
        codec: String,
    },
    /// Counters sampled at `at` (the sampler's tick, not the time the owner
    /// reads the message, so intervals between samples are exact).
    Samples {
        samples: Vec<StreamSample>,
        at: Instant,
    },
}

/// The sending half for facts from the media plane, created before the
/// control plane starts so the gateway can be built first.
#[derive(Clone)]
pub struct Facts(
    mpsc::UnboundedSender<Msg>,
    Option<Arc<dyn crate::peers::SessionObserver>>,
);

/// The receiving half, handed to [`Control::start`].
pub struct Inbox(mpsc::UnboundedReceiver<Msg>);

/// Creates the channel between the media plane and the control owner.
pub fn channel() -> (Facts, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Facts(tx, None), Inbox(rx))
}

impl Facts {
    /// The same facts, also told to `observer` as sessions start and end
    /// (a deployment's directory of sessions).
    pub fn observed_by(self, observer: Arc<dyn crate::peers::SessionObserver>) -> Facts {
        Facts(self.0, Some(observer))
    }

    fn send(&self, msg: Msg) {
        // Fails only after the control plane stopped; facts are moot then.
        let _ = self.0.send(msg);
    }

    /// A WHIP or WHEP session started (its answer was sent).
    pub fn session_started(
        &self,
        session: &str,
        room: &RoomName,
        stream: &StreamName,
        role: SessionRole,
        identity: &str,
    ) {
        if let Some(observer) = &self.1 {
            observer.started(session, room, stream, role, identity);
        }
        self.send(Msg::SessionStarted {
            session: session.to_owned(),
            room: room.clone(),
            stream: stream.clone(),
            role,
            identity: identity.to_owned(),
        });
    }

    /// A session's ICE and DTLS are up: a viewer takes its seat now.
    pub fn session_connected(&self, session: &str) {
        self.send(Msg::SessionConnected {
            session: session.to_owned(),
        });
    }

    /// A session ended.
    pub fn session_ended(&self, session: &str, reason: LeaveReason) {
        if let Some(observer) = &self.1 {
            observer.ended(session);
        }
        self.send(Msg::SessionEnded {
            session: session.to_owned(),
            reason,
        });
    }

    /// A camera's puller reports where the camera is.
    pub fn camera_status(
        &self,
        room: &RoomName,
        identity: &StreamName,
        status: crate::camera::CameraStatus,
    ) {
        self.send(Msg::CameraStatus {
            room: room.clone(),
            identity: identity.clone(),
            status,
        });
    }

    /// A publisher's track started arriving.
    pub fn track_published(&self, session: &str, kind: TrackKind, codec: &str) {
        self.send(Msg::TrackPublished {
            session: session.to_owned(),
            kind,
            codec: codec.to_owned(),
        });
    }
}

/// A request admitted to start a session. Until it is dropped (when the
/// session has started, or negotiation failed, or the client went away) it
/// holds a seat against the room's limits.
pub struct Admission {
    /// Who the session belongs to.
    pub identity: String,
    /// The token's claims, checked again by [`Control::confirm`].
    claims: Option<Claims>,
    room: RoomName,
    ticket: u64,
    owner: mpsc::UnboundedSender<Msg>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        // After shutdown there is nothing left to release.
        let _ = self.owner.send(Msg::Release {
            room: self.room.clone(),
            ticket: self.ticket,
        });
    }
}

/// Handle to the control plane.
#[derive(Clone)]
pub struct Control {
    tx: mpsc::UnboundedSender<Msg>,
    media: Arc<dyn MediaPlane>,
    bus: Arc<dyn EventBus>,
    auth: Auth,
    /// The other nodes of a deployment, once the cluster is wired.
    peers: Arc<std::sync::OnceLock<Arc<dyn Peers>>>,
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unix_secs() -> u64 {
    unix_ms() / 1000
}

impl Control {
    /// Loads rooms and cameras from `store` and starts the owner (which
    /// asks the media plane to pull the cameras) and the sampler.
    pub fn start(
        facts: &Facts,
        inbox: Inbox,
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        media: Arc<dyn MediaPlane>,
        auth: Auth,
    ) -> Result<Control> {
        let specs = store.rooms()?;
        let alarms = store.alarms()?;
        let issued = store.issued_tokens()?;
        let cameras = store.cameras()?;
        let owner = Owner::new(
            store,
            bus.clone(),
            matches!(auth, Auth::Open),
            specs,
            alarms,
            issued,
            cameras,
        );
        tokio::spawn(owner.run(inbox.0, media.clone()));
        tokio::spawn(sample(media.clone(), facts.0.clone()));
        Ok(Control {
            tx: facts.0.clone(),
            media,
            bus,
            auth,
            peers: Default::default(),
        })
    }

    /// Joins a deployment: HangUp, MuteTrack, Call and EndCall act on the
    /// sessions of every node from now on. Set once; later calls are
    /// ignored.
    pub fn set_peers(&self, peers: Arc<dyn Peers>) {
        if self.peers.set(peers).is_err() {
            tracing::warn!("peers were set already");
        }
    }

    fn peers(&self) -> Option<&Arc<dyn Peers>> {
        self.peers.get()
    }

    /// Carries out another node's operation on the sessions this node
    /// hosts, exactly as for a request of its own.
    pub async fn run_here(&self, op: &PeerOp) -> Result<PeerOutcome> {
        match op {
            PeerOp::HangUp { room, identity } => {
                let closed = self.hang_up_here(&RoomName::new(room)?, identity).await?;
                Ok(PeerOutcome::Closed {
                    sessions: closed as u64,
                })
            }
            PeerOp::Mute {
                room,
                identity,
                video,
                muted,
            } => {
                let kind = if *video {
                    TrackKind::Video
                } else {
                    TrackKind::Audio
                };
                self.mute_here(&RoomName::new(room)?, identity, kind, *muted)
                    .await?;
                Ok(PeerOutcome::Done)
            }
            PeerOp::Call {
                room,
                caller,
                callee,
                caller_elsewhere,
            } => {
                let call = self
                    .call_here(RoomName::new(room)?, caller, callee, *caller_elsewhere)
                    .await?;
                Ok(PeerOutcome::Rings {
                    call_id: call.call_id,
                    whep_path: call.whep_path,
                })
            }
            PeerOp::EndCall { room, callee } => {
                let closed = self.end_call_here(&RoomName::new(room)?, callee).await?;
                Ok(PeerOutcome::Closed {
                    sessions: closed as u64,
                })
            }
            PeerOp::StopCaller { room, caller } => {
                let closed = self
                    .media
                    .end_call(&RoomName::new(room)?, &StreamName::new(caller)?, "", true)
                    .await;
                Ok(PeerOutcome::Closed {
                    sessions: closed as u64,
                })
            }
            PeerOp::Participants { room } => Ok(PeerOutcome::Participants {
                participants: self.participants_here(&RoomName::new(room)?).await?,
            }),
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Msg) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| ControlError::Unavailable)?;
        rx.await.map_err(|_| ControlError::Unavailable)
    }

    /// Whether credentials are required.
    pub fn auth_required(&self) -> bool {
        matches!(self.auth, Auth::Tokens { .. })
    }

    /// Checks an admin bearer credential (nothing to check in open mode).
    pub fn check_admin(&self, bearer: Option<&str>) -> Result<()> {
        let Auth::Tokens { admin_key, .. } = &self.auth else {
            return Ok(());
        };
        let bearer = bearer.ok_or_else(|| {
            ControlError::Unauthenticated(
                "the admin key is required (authorization: Bearer <key>)".into(),
            )
        })?;
        if constant_time_eq(bearer.as_bytes(), admin_key.as_bytes()) {
            Ok(())
        } else {
            Err(ControlError::Unauthenticated("wrong admin key".into()))
        }
    }

    /// Checks a credential for one room's administration (participants,
    /// hang-up, mute, call): the admin key, or a token with the `admin`
    /// grant for that room (a dispatcher signed in with a token) that the
    /// room still honours.
    pub async fn check_room_admin(&self, bearer: Option<&str>, room: &str) -> Result<()> {
        self.room_admin_name(bearer, room).await.map(|_| ())
    }

    /// Like [`Control::check_room_admin`], and says who the caller is, for
    /// the record: the token's identity, "admin" for the admin key,
    /// "anonymous" without authentication.
    pub async fn room_admin_name(&self, bearer: Option<&str>, room: &str) -> Result<String> {
        if self.check_admin(bearer).is_ok() {
            let name = if self.auth_required() {
                "admin"
            } else {
                "anonymous"
            };
            return Ok(name.into());
        }
        let (Auth::Tokens { signer, .. }, Some(token)) = (&self.auth, bearer) else {
            return Err(ControlError::Unauthenticated(
                "the admin key or a room admin token is required (authorization: Bearer <credential>)"
                    .into(),
            ));
        };
        let claims = signer.authorize(
            token,
            &RoomName::new(room)?,
            Action::Admin,
            None,
            unix_secs(),
        )?;
        self.honoured(claims).await.map(|claims| claims.sub)
    }

    /// Checks a participant token (signature, expiry, and that its room
    /// still honours it) and returns its claims.
    pub async fn verify_token(&self, token: &str) -> Result<Claims> {
        match &self.auth {
            Auth::Tokens { signer, .. } => self.honoured(signer.verify(token, unix_secs())?).await,
            Auth::Open => Err(ControlError::FailedPrecondition(
                "tokens are not used: the server runs without authentication".into(),
            )),
        }
    }

    /// Asks the owner whether the room of a token whose signature and
    /// expiry were checked still honours it: the same incarnation of the
    /// room, not revoked. A token for a room that does not exist is
    /// `NotFound`.
    pub(crate) async fn honoured(&self, claims: Claims) -> Result<Claims> {
        self.ask(|reply| Msg::CheckToken {
            claims: claims.clone(),
            reply,
        })
        .await??;
        Ok(claims)
    }

    /// Decides whether a WHIP (`Publisher`) or WHEP (`Viewer`) request may
    /// start a session, and as whom. With tokens, `bearer` must open `room`
    /// for the action (a publisher publishes its own identity's stream) and
    /// the room must exist; open mode creates rooms on first use.
    pub async fn admit(
        &self,
        room: &RoomName,
        stream: &StreamName,
        role: SessionRole,
        bearer: Option<&str>,
    ) -> Result<Admission> {
        let (identity, via_call, dispatcher, claims) = match &self.auth {
            Auth::Tokens { signer, admin_key } => {
                let token = bearer.ok_or(TokenError::Missing)?;
                let action = match role {
                    SessionRole::Publisher => Action::Publish,
                    SessionRole::Viewer => Action::Subscribe,
                };
                let publishing = (role == SessionRole::Publisher).then_some(stream);
                let now = unix_secs();
                match signer.authorize(token, room, action, publishing, now) {
                    Ok(claims) => (claims.sub.clone(), false, claims.grants.admin, Some(claims)),
                    // A callee plays its caller with its own token, granted
                    // or not: the owner admits it only during the call.
                    // (`authorize` checked the signature and the room before
                    // the grant.)
                    Err(TokenError::MissingGrant(Action::Subscribe)) => {
                        let claims = signer.verify(token, now)?;
                        (claims.sub.clone(), true, false, Some(claims))
                    }
                    // Operators paste the key they were shown where a token
                    // belongs; "malformed" would not tell them.
                    Err(_) if constant_time_eq(token.as_bytes(), admin_key.as_bytes()) => {
                        return Err(ControlError::Unauthenticated(admin_key_as_media_token(
                            room, stream, role,
                        )));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Auth::Open => match role {
                SessionRole::Publisher => (stream.to_string(), false, false, None),
                SessionRole::Viewer => (
                    format!("viewer-{:06x}", rand::random::<u32>() & 0xff_ffff),
                    false,
                    false,
                    None,
                ),
            },
        };
        let ticket = self
            .ask(|reply| Msg::Admit {
                room: room.clone(),
                stream: stream.clone(),
                role,
                identity: identity.clone(),
                via_call,
                dispatcher,
                claims: claims.clone(),
                reply,
            })
            .await??;
        Ok(Admission {
            identity,
            claims,
            room: room.clone(),
            ticket,
            owner: self.tx.clone(),
        })
    }

    /// Stops the owner and the sampler; the store is closed when they end.
    /// Facts already sent (sessions closed at shutdown) are handled first.
    pub async fn shutdown(&self) {
        let _ = self.ask(|reply| Msg::Shutdown { reply }).await;
    }

    /// Creates a room.
    pub async fn create_room(
        &self,
        name: &str,
        limits: Limits,
        alarms: AlarmRules,
    ) -> Result<RoomView> {
        let spec = RoomSpec {
            name: RoomName::new(name)?,
            limits,
            alarms,
            created_at_ms: unix_ms(),
            incarnation: RoomSpec::new_incarnation(),
            token_generation: 0,
            bans: Default::default(),
        };
        self.ask(|reply| Msg::CreateRoom { spec, reply }).await?
    }

    /// One room.
    pub async fn room(&self, name: &str) -> Result<RoomView> {
        let name = RoomName::new(name)?;
        self.ask(|reply| Msg::GetRoom { name, reply }).await?
    }

    /// Changes a room's limits and alarm rules (what `update` sets); they
    /// apply from the next admission and the next evaluation.
    pub async fn update_room(&self, name: &str, update: RoomUpdate) -> Result<RoomView> {
        let name = RoomName::new(name)?;
        self.ask(|reply| Msg::UpdateRoom {
            name,
            update,
            reply,
        })
        .await?
    }

    /// Every room, by name.
    pub async fn rooms(&self) -> Result<Vec<RoomView>> {
        self.ask(|reply| Msg::ListRooms {
            after: None,
            limit: usize::MAX,
            reply,
        })
        .await
    }

    /// Up to `limit` rooms in name order, those named after `after`.
    pub async fn rooms_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<RoomView>> {
        let after = after.map(RoomName::new).transpose()?;
        self.ask(|reply| Msg::ListRooms {
            after,
            limit,
            reply,
        })
        .await
    }

    /// Deletes a room and hangs up everyone in it; returns how many sessions
    /// were closed.
    pub async fn delete_room(&self, name: &str) -> Result<usize> {
        let name = RoomName::new(name)?;
        self.ask(|reply| Msg::DeleteRoom {
            name: name.clone(),
            reply,
        })
        .await??;
        Ok(self.media.close_room(&name).await)
    }

    /// The participants of a room.
    pub async fn participants(&self, room: &str) -> Result<Vec<ParticipantView>> {
        let room = RoomName::new(room)?;
        let here = self.participants_here(&room).await;
        let Some(peers) = self.peers() else {
            return here;
        };
        let there = peers
            .run(&PeerOp::Participants {
                room: room.to_string(),
            })
            .await;
        crate::peers::merge_participants(here, there, |identity| peers.is_relay(identity))
    }

    /// The participants of `room` with sessions on this node.
    async fn participants_here(&self, room: &RoomName) -> Result<Vec<ParticipantView>> {
        let room = room.clone();
        self.ask(|reply| Msg::Participants { room, reply }).await?
    }

    /// A published stream's live statistics.
    pub async fn stream_stats(&self, room: &str, stream: &str) -> Result<StreamStatsView> {
        let room = RoomName::new(room)?;
        let stream = StreamName::new(stream)?;
        self.ask(|reply| Msg::StreamStats {
            room,
            stream,
            reply,
        })
        .await?
    }

    /// A room's active alarms and those cleared in the last `recent`, newest
    /// first.
    pub async fn alarms(&self, room: &str, recent: Duration) -> Result<Vec<AlarmRecord>> {
        let room = RoomName::new(room)?;
        let since_ms = unix_ms().saturating_sub(recent.as_millis() as u64);
        self.ask(|reply| Msg::ListAlarms {
            room,
            since_ms,
            reply,
        })
        .await?
    }

    /// Records that `by` saw alarm `id` of `room` (the first time only) and
    /// tells every watcher; returns the alarm.
    pub async fn acknowledge_alarm(&self, room: &str, id: u64, by: &str) -> Result<AlarmRecord> {
        let room = RoomName::new(room)?;
        self.ask(|reply| Msg::AcknowledgeAlarm {
            room,
            id,
            by: by.to_owned(),
            reply,
        })
        .await?
    }

    /// Closes every session of a participant.
    /// With `ban`, the identity's new sessions in the room are refused for
    /// that long (and it need not be in the room now).
    pub async fn hang_up(
        &self,
        room: &str,
        identity: &str,
        ban: Option<Duration>,
    ) -> Result<usize> {
        let room = RoomName::new(room)?;
        if let Some(ban) = ban {
            if identity.is_empty() {
                return Err(ControlError::InvalidArgument("identity is required".into()));
            }
            let until = Instant::now() + ban;
            self.ask(|reply| Msg::Ban {
                room: room.clone(),
                identity: identity.to_owned(),
                until,
                reply,
            })
            .await??;
        }
        let here = if ban.is_some() {
            Ok(self
                .media
                .hang_up(&room, identity, LeaveReason::HungUp)
                .await)
        } else {
            self.hang_up_here(&room, identity).await
        };
        let Some(peers) = self.peers() else {
            return here;
        };
        let op = PeerOp::HangUp {
            room: room.to_string(),
            identity: identity.to_owned(),
        };
        crate::peers::total_closed(here, peers.run(&op).await)
    }

    /// HangUp on this node's sessions: `NotFound` if it hosts none of
    /// `identity`'s.
    async fn hang_up_here(&self, room: &RoomName, identity: &str) -> Result<usize> {
        self.ask(|reply| Msg::HasParticipant {
            room: room.clone(),
            identity: identity.to_owned(),
            reply,
        })
        .await??;
        Ok(self
            .media
            .hang_up(room, identity, LeaveReason::HungUp)
            .await)
    }

    /// Checks an admitted request again once its session has started (and
    /// the media plane has reported it): a token revoked, or an identity
    /// banned, while the request negotiated is refused now, with the same
    /// error admission would give. Whatever comes after this check finds
    /// the session in the room and hangs it up, so none slips through.
    pub async fn confirm(&self, admission: &Admission) -> Result<()> {
        self.ask(|reply| Msg::Confirm {
            room: admission.room.clone(),
            identity: admission.identity.clone(),
            claims: admission.claims.clone(),
            reply,
        })
        .await?
    }

    /// Ends `identity`'s ban in `room` (HangUp's `ban_seconds`); false if it
    /// had none.
    pub async fn lift_ban(&self, room: &str, identity: &str) -> Result<bool> {
        let room = RoomName::new(room)?;
        self.ask(|reply| Msg::LiftBan {
            room,
            identity: identity.to_owned(),
            reply,
        })
        .await?
    }

    /// Stops or resumes forwarding a publisher's track.
    pub async fn mute(
        &self,
        room: &str,
        identity: &str,
        kind: TrackKind,
        muted: bool,
    ) -> Result<()> {
        let room = RoomName::new(room)?;
        let here = self.mute_here(&room, identity, kind, muted).await;
        match (here, self.peers()) {
            (Err(e @ ControlError::NotFound(_)), Some(peers)) => {
                let op = PeerOp::Mute {
                    room: room.to_string(),
                    identity: identity.to_owned(),
                    video: kind == TrackKind::Video,
                    muted,
                };
                crate::peers::first_done(e, peers.run(&op).await).map(|_| ())
            }
            (here, _) => here,
        }
    }

    /// MuteTrack on a stream this node hosts: `NotFound` if it does not.
    async fn mute_here(
        &self,
        room: &RoomName,
        identity: &str,
        kind: TrackKind,
        muted: bool,
    ) -> Result<()> {
        let room = room.clone();
        let stream = StreamName::new(identity)?;
        self.ask(|reply| Msg::HasTrack {
            room: room.clone(),
            stream: stream.clone(),
            kind,
            reply,
        })
        .await??;
        if !self.media.mute(&room, &stream, kind, muted).await {
            return Err(ControlError::NotFound(format!(
                "{identity} has no {kind:?} track"
            )));
        }
        // Recorded after the media plane acted, so the event states a fact.
        self.tx
            .send(Msg::Muted {
                room,
                stream,
                kind,
                muted,
            })
            .map_err(|_| ControlError::Unavailable)
    }

    /// Rings `callee`: asks it to play `caller`'s stream.
    pub async fn call(&self, room: &str, caller: &str, callee: &str) -> Result<CallView> {
        let room = RoomName::new(room)?;
        let Some(peers) = self.peers() else {
            return self.call_here(room, caller, callee, false).await;
        };
        // The call lives at the callee's node; the caller may publish at
        // another (the callee plays it through a relay there).
        let caller_elsewhere = peers.published_elsewhere(&room, caller).await;
        let here = self
            .call_here(room.clone(), caller, callee, caller_elsewhere)
            .await;
        match here {
            Err(e @ (ControlError::NotFound(_) | ControlError::FailedPrecondition(_))) => {
                let op = PeerOp::Call {
                    room: room.to_string(),
                    caller: caller.to_owned(),
                    callee: callee.to_owned(),
                    caller_elsewhere: caller_elsewhere || self.publishes_here(&room, caller).await,
                };
                match crate::peers::first_done(e, peers.run(&op).await)? {
                    PeerOutcome::Rings { call_id, whep_path } => {
                        Ok(CallView { call_id, whep_path })
                    }
                    other => Err(ControlError::FailedPrecondition(format!(
                        "a node answered Call with {other:?}"
                    ))),
                }
            }
            here => here,
        }
    }

    /// Call, where this node hosts the callee (and the caller's stream,
    /// unless `caller_elsewhere`).
    async fn call_here(
        &self,
        room: RoomName,
        caller: &str,
        callee: &str,
        caller_elsewhere: bool,
    ) -> Result<CallView> {
        self.ask(|reply| Msg::Call {
            room,
            caller: caller.to_owned(),
            callee: callee.to_owned(),
            caller_elsewhere,
            reply,
        })
        .await?
    }

    /// Whether `identity` publishes its stream in `room` at this node.
    async fn publishes_here(&self, room: &RoomName, identity: &str) -> bool {
        self.participants_here(room)
            .await
            .is_ok_and(|list| list.iter().any(|p| p.identity == identity && p.publishing))
    }

    /// Ends `callee`'s call and closes its media: the callee's playback of
    /// the caller and, unless the caller is in another call, the caller's
    /// stream. Returns how many sessions were closed.
    pub async fn end_call(&self, room: &str, callee: &str) -> Result<usize> {
        let room = RoomName::new(room)?;
        let here = self.end_call_here(&room, callee).await;
        match (here, self.peers()) {
            (Err(e @ ControlError::NotFound(_)), Some(peers)) => {
                let op = PeerOp::EndCall {
                    room: room.to_string(),
                    callee: callee.to_owned(),
                };
                match crate::peers::first_done(e, peers.run(&op).await)? {
                    PeerOutcome::Closed { sessions } => Ok(sessions as usize),
                    _ => Ok(0),
                }
            }
            (here, _) => here,
        }
    }

    /// EndCall, where this node holds the call.
    async fn end_call_here(&self, room: &RoomName, callee: &str) -> Result<usize> {
        let room = room.clone();
        let ended = self
            .ask(|reply| Msg::EndCall {
                room: room.clone(),
                callee: callee.to_owned(),
                reply,
            })
            .await??;
        let mut closed = self
            .media
            .end_call(&room, &ended.caller, callee, ended.caller_idle)
            .await;
        // The caller may publish at another node (a call across nodes).
        if ended.caller_idle
            && let Some(peers) = self.peers()
        {
            let op = PeerOp::StopCaller {
                room: room.to_string(),
                caller: ended.caller.to_string(),
            };
            for outcome in peers.run(&op).await {
                if let Ok(PeerOutcome::Closed { sessions }) = outcome {
                    closed += sessions as usize;
                }
            }
        }
        Ok(closed)
    }

    /// A short-lived token with which another node's relay plays `room`'s
    /// streams here as `identity` (docs/cluster.md): signed with the
    /// deployment's shared secret, for the room's current incarnation and
    /// token generation, not kept (it is checked once, at admission).
    /// `None` in open mode, where no token is needed.
    pub async fn relay_token(&self, room: &RoomName, identity: &str) -> Result<Option<String>> {
        let Auth::Tokens { signer, .. } = &self.auth else {
            return Ok(None);
        };
        let spec = self.room(room.as_str()).await?.spec;
        let grants = Grants {
            subscribe: true,
            ..Grants::default()
        };
        let mut claims = Claims::new(
            identity,
            room,
            spec.incarnation,
            grants,
            unix_secs(),
            RELAY_TOKEN_TTL,
        );
        claims.rgen = spec.token_generation;
        Ok(Some(signer.sign(&claims)?))
    }

    /// Signs a participant token for an existing room (admin mode only):
    /// it carries the room's incarnation and token generation, and an id
    /// under which the server keeps it until it expires.
    pub async fn create_token(
        &self,
        room: &str,
        identity: &str,
        grants: Grants,
        ttl: Duration,
    ) -> Result<NewToken> {
        let Auth::Tokens { signer, .. } = &self.auth else {
            return Err(ControlError::FailedPrecondition(
                "the server runs without authentication; tokens are not needed".into(),
            ));
        };
        let room = RoomName::new(room)?;
        if identity.is_empty() || identity.len() > 64 {
            return Err(ControlError::InvalidArgument(
                "identity must be 1-64 characters".into(),
            ));
        }
        if grants.publish {
            // A publisher publishes the stream named after it.
            StreamName::new(identity)?;
        }
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(ControlError::InvalidArgument(
                "ttl must be between 1 s and 366 days".into(),
            ));
        }
        // The room must exist (a token for a typo would fail only at
        // publish time), and the token is recorded, to be revoked by its id,
        // before it is handed out.
        let mut claims = Claims::new(identity, &room, 0, grants, unix_secs(), ttl);
        let id = new_token_id();
        let record = IssuedToken {
            id: id.clone(),
            room: room.clone(),
            incarnation: 0,
            identity: identity.to_owned(),
            expires_at: claims.exp,
            revoked_at_ms: None,
        };
        let (incarnation, generation) = self
            .ask(|reply| Msg::IssueToken {
                token: record,
                reply,
            })
            .await??;
        claims.inc = incarnation;
        claims.rgen = generation;
        claims.jti = Some(id.clone());
        Ok(NewToken {
            token: signer.sign(&claims)?,
            id,
            expires_at: claims.exp,
        })
    }

    /// Revokes one token of `room` by its id and hangs up its identity's
    /// sessions in the room; returns how many were closed (none if it was
    /// revoked already).
    pub async fn revoke_token(&self, room: &str, id: &str) -> Result<usize> {
        let room = RoomName::new(room)?;
        let identity = self
            .ask(|reply| Msg::RevokeToken {
                room: room.clone(),
                id: id.to_owned(),
                reply,
            })
            .await??;
        Ok(match identity {
            Some(identity) => {
                self.media
                    .hang_up(&room, &identity, LeaveReason::HungUp)
                    .await
            }
            None => 0,
        })
    }

    /// Revokes every token issued for `room` so far and hangs up everyone
    /// in it; returns how many sessions were closed.
    pub async fn revoke_room_tokens(&self, room: &str) -> Result<usize> {
        let room = RoomName::new(room)?;
        let identities = self
            .ask(|reply| Msg::RevokeRoomTokens {
                room: room.clone(),
                reply,
            })
            .await??;
        let mut closed = 0;
        for identity in identities {
            closed += self
                .media
                .hang_up(&room, &identity, LeaveReason::HungUp)
                .await;
        }
        Ok(closed)
    }

    /// Adds a camera to a room (in open mode, a room it names that is not
    /// managed yet becomes managed, so the camera outlasts a restart):
    /// stored, then pulled by the media plane. Answers it as it starts
    /// (connecting, or idle when on demand).
    pub async fn add_camera(
        &self,
        room: &str,
        identity: &str,
        camera: NewCamera,
    ) -> Result<CameraView> {
        let room = RoomName::new(room)?;
        let identity = StreamName::new(identity)?;
        let spec = camera
            .into_spec(room, identity, unix_ms())
            .map_err(ControlError::InvalidArgument)?;
        self.ask(|reply| Msg::AddCamera { spec, reply }).await?
    }

    /// Changes a camera's settings (stored first); a change to how it is
    /// reached makes the media plane pull it again.
    pub async fn update_camera(
        &self,
        room: &str,
        identity: &str,
        update: CameraUpdate,
    ) -> Result<CameraView> {
        let room = RoomName::new(room)?;
        let identity = StreamName::new(identity)?;
        self.ask(|reply| Msg::UpdateCamera {
            room,
            identity,
            update,
            reply,
        })
        .await?
    }

    /// Forgets a camera (in the store first) and stops pulling it, which
    /// closes its viewers.
    pub async fn remove_camera(&self, room: &str, identity: &str) -> Result<()> {
        let room = RoomName::new(room)?;
        let identity = StreamName::new(identity)?;
        self.ask(|reply| Msg::RemoveCamera {
            room,
            identity,
            reply,
        })
        .await?
    }

    /// A room's cameras, by identity.
    pub async fn cameras(&self, room: &str) -> Result<Vec<CameraView>> {
        let room = RoomName::new(room)?;
        self.ask(|reply| Msg::ListCameras { room, reply }).await?
    }

    /// Reads again what another node changed in a shared store and applies
    /// it here as the same request made here would have: sessions of a
    /// room deleted there are closed, an identity whose token was revoked
    /// (or who was banned) there is hung up. Returns how many sessions
    /// were closed.
    pub async fn reload(&self, what: crate::reload::Reload) -> Result<usize> {
        let done = self.ask(|reply| Msg::Reload { what, reply }).await??;
        let mut closed = 0;
        for room in &done.closed_rooms {
            closed += self.media.close_room(room).await;
        }
        for (room, identity) in &done.hang_ups {
            closed += self
                .media
                .hang_up(room, identity, LeaveReason::HungUp)
                .await;
        }
        Ok(closed)
    }

    /// Reports the sessions of a node that stopped heartbeating: each
    /// leaves (`NODE_LOST`), and the alarms of the streams it published
    /// are cleared. Called by the one node that reaps it.
    pub fn report_node_lost(&self, sessions: Vec<crate::peers::LostSession>) {
        // Fails only after shutdown; nothing to report then.
        let _ = self.tx.send(Msg::NodeLost { sessions });
    }

    /// Resolves once the control plane has stopped (tasks serving it end
    /// then).
    pub async fn stopped(&self) {
        self.tx.closed().await;
    }

    /// Subscribes to the event feed, replaying after `after`.
    pub fn watch(&self, after: Option<u64>) -> Subscription {
        self.bus.subscribe(after)
    }
}

/// Why the admin key opens no WHIP/WHEP session, and how to get what does.
/// ASCII only: it also goes into the `WWW-Authenticate` header.
fn admin_key_as_media_token(room: &RoomName, stream: &StreamName, role: SessionRole) -> String {
    let (command, what) = match role {
        SessionRole::Publisher => (format!("{room} {stream} --publish"), "publish"),
        SessionRole::Viewer => (format!("{room} <viewer-name> --subscribe"), "play"),
    };
    format!(
        "this is the admin key, which is not a media token: to {what}, send a participant \
         token, e.g. from `vigil ctl token create {command}` or the console's Token button"
    )
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Samples the media plane's counters and hands them to the owner.
async fn sample(media: Arc<dyn MediaPlane>, owner: mpsc::UnboundedSender<Msg>) {
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let at = tick.tick().await.into_std();
        let samples = media.sample().await;
        if owner.send(Msg::Samples { samples, at }).is_err() {
            return;
        }
    }
}
