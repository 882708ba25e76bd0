//! Helpers for control-plane tests: a server with authentication on and
//! known secrets, gRPC clients carrying the admin key, and an event watcher.

use std::time::Duration;

use tokio::sync::mpsc;
use tonic::Request;
use tonic::transport::Channel;
use vigil_control::store::Secrets;
use vigil_control::token::{Claims, Grants, TokenSigner};
use vigil_control::{RoomName, StreamName};
use vigil_gateway::{Config, Vigil};
use vigil_proto::v1 as pb;
use vigil_proto::v1::event_service_client::EventServiceClient;
use vigil_proto::v1::room_service_client::RoomServiceClient;
use vigil_proto::v1::token_service_client::TokenServiceClient;

use crate::peers::{Keyframes, Publisher, Viewer};

/// The admin key of [`secure_server`].
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";
/// The token signing secret of [`secure_server`].
pub const SIGNING_SECRET: &[u8] = b"test-signing-secret-0123456789abcdef";

/// Starts a server with tokens required and the secrets above.
pub async fn secure_server(tweak: impl FnOnce(&mut Config)) -> Vigil {
    crate::start_server(|config| {
        config.insecure_no_auth = false;
        config.secrets = Some(Secrets {
            admin_key: ADMIN_KEY.to_owned(),
            signing_secret: SIGNING_SECRET.to_vec(),
        });
        tweak(config);
    })
    .await
}

/// A channel to the server's gRPC port.
/// Over TLS when the server has it, trusting its self-signed CA.
pub async fn channel(vigil: &Vigil) -> Channel {
    let ca = vigil
        .tls
        .as_ref()
        .and_then(|tls| tls.self_signed.as_ref())
        .map(|made| std::fs::read(&made.ca).expect("the CA file"));
    let scheme = if ca.is_some() { "https" } else { "http" };
    let mut endpoint =
        Channel::from_shared(format!("{scheme}://{}", vigil.grpc_addr)).expect("gRPC URI");
    if let Some(ca) = ca {
        endpoint = endpoint
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
            )
            .expect("TLS config");
    }
    endpoint.connect().await.expect("connect to gRPC")
}

/// Every service gRPC health reports on: the server as a whole (`""`) and
/// each control service.
pub const HEALTH_SERVICES: [&str; 4] = [
    "",
    "vigil.v1.RoomService",
    "vigil.v1.EventService",
    "vigil.v1.TokenService",
];

/// What gRPC health says of each of [`HEALTH_SERVICES`], in that order.
pub async fn health(vigil: &Vigil) -> Vec<tonic_health::pb::health_check_response::ServingStatus> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel(vigil).await);
    let mut statuses = Vec::new();
    for service in HEALTH_SERVICES {
        let status = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health of {service:?}: {e}"))
            .into_inner()
            .status();
        statuses.push(status);
    }
    statuses
}

/// Wraps `message` with `authorization: Bearer <credential>`.
pub fn with_bearer<T>(message: T, credential: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {credential}")
            .parse()
            .expect("header value"),
    );
    request
}

/// Wraps `message` with the admin key.
pub fn admin<T>(message: T) -> Request<T> {
    with_bearer(message, ADMIN_KEY)
}

/// The three service clients.
pub struct Clients {
    /// RoomService.
    pub rooms: RoomServiceClient<Channel>,
    /// TokenService.
    pub tokens: TokenServiceClient<Channel>,
    /// EventService.
    pub events: EventServiceClient<Channel>,
}

/// Connects the three clients.
pub async fn clients(vigil: &Vigil) -> Clients {
    clients_on(channel(vigil).await)
}

/// Connects the three clients to the plain gRPC port at `grpc` (a server
/// in another process).
pub async fn clients_at(grpc: std::net::SocketAddr) -> Clients {
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .expect("gRPC URI")
        .connect()
        .await
        .expect("connect to gRPC");
    clients_on(channel)
}

fn clients_on(channel: Channel) -> Clients {
    Clients {
        rooms: RoomServiceClient::new(channel.clone()),
        tokens: TokenServiceClient::new(channel.clone()),
        events: EventServiceClient::new(channel),
    }
}

/// Creates a room with default settings.
pub async fn create_room(clients: &mut Clients, name: &str) -> pb::Room {
    clients
        .rooms
        .create_room(admin(pb::CreateRoomRequest {
            name: name.to_owned(),
            ..Default::default()
        }))
        .await
        .unwrap_or_else(|e| panic!("CreateRoom {name}: {e}"))
        .into_inner()
}

/// Asks the server for a token: the token, its id and paths.
pub async fn issue(
    clients: &mut Clients,
    room: &str,
    identity: &str,
    grants: pb::Grants,
) -> pb::CreateTokenResponse {
    clients
        .tokens
        .create_token(admin(pb::CreateTokenRequest {
            room: room.to_owned(),
            identity: identity.to_owned(),
            grants: Some(grants),
            ttl_seconds: None,
        }))
        .await
        .unwrap_or_else(|e| panic!("CreateToken {identity}@{room}: {e}"))
        .into_inner()
}

/// Asks the server for a token.
pub async fn token(
    clients: &mut Clients,
    room: &str,
    identity: &str,
    grants: pb::Grants,
) -> String {
    issue(clients, room, identity, grants).await.token
}

/// Publish + subscribe grants.
pub fn publish_and_subscribe() -> pb::Grants {
    pb::Grants {
        publish: true,
        subscribe: true,
        admin: false,
    }
}

/// Subscribe-only grants.
pub fn subscribe_only() -> pb::Grants {
    pb::Grants {
        subscribe: true,
        ..Default::default()
    }
}

/// Signs a token locally with the test secret, with any times, to make
/// expired or otherwise odd tokens the server would never issue. It carries
/// no room incarnation, so it opens no room created since (see
/// [`mint_in`]): use it for tokens refused before that matters.
pub fn mint(room: &str, identity: &str, grants: Grants, iat: u64, ttl: Duration) -> String {
    TokenSigner::new(SIGNING_SECRET)
        .issue(
            identity,
            &RoomName::new(room).expect("room name"),
            grants,
            iat,
            ttl,
        )
        .expect("sign token")
}

/// Like [`mint`], for `room` as the server described it: the token carries
/// its incarnation, as the server's own do.
pub fn mint_in(room: &pb::Room, identity: &str, grants: Grants, iat: u64, ttl: Duration) -> String {
    let name = RoomName::new(&room.name).expect("room name");
    let claims = Claims::new(identity, &name, room.incarnation, grants, iat, ttl);
    TokenSigner::new(SIGNING_SECRET)
        .sign(&claims)
        .expect("sign token")
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// An event feed being read in the background.
pub struct Watcher {
    events: mpsc::UnboundedReceiver<pb::Event>,
}

impl Watcher {
    /// Starts watching with `credential`.
    pub async fn start(vigil: &Vigil, credential: &str, request: pb::WatchRequest) -> Watcher {
        Self::start_at(vigil.grpc_addr, credential, request).await
    }

    /// Starts watching the gRPC port at `grpc` (a server in another
    /// process) with `credential`.
    pub async fn start_at(
        grpc: std::net::SocketAddr,
        credential: &str,
        request: pb::WatchRequest,
    ) -> Watcher {
        let channel = Channel::from_shared(format!("http://{grpc}"))
            .expect("gRPC URI")
            .connect()
            .await
            .expect("connect to gRPC");
        let mut client = EventServiceClient::new(channel);
        let mut stream = client
            .watch(with_bearer(request, credential))
            .await
            .unwrap_or_else(|e| panic!("Watch: {e}"))
            .into_inner();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(event)) = stream.message().await {
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        Watcher { events }
    }

    /// Every event until the feed ends (the server closed the stream), or
    /// `None` if it is still open after `limit`.
    pub async fn until_end(&mut self, limit: Duration) -> Option<Vec<pb::Event>> {
        tokio::time::timeout(limit, async {
            let mut events = Vec::new();
            while let Some(event) = self.events.recv().await {
                events.push(event);
            }
            events
        })
        .await
        .ok()
    }

    /// Waits for the first event that `pick` accepts, skipping the others;
    /// panics naming `what` after `limit`.
    pub async fn wait_for<T>(
        &mut self,
        limit: Duration,
        what: &str,
        mut pick: impl FnMut(&pb::Event) -> Option<T>,
    ) -> T {
        tokio::time::timeout(limit, async {
            loop {
                let event = self.events.recv().await.expect("event stream ended");
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {what} within {limit:?}"))
    }

    /// Every event received so far without waiting.
    pub fn drain(&mut self) -> Vec<pb::Event> {
        let mut events = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            events.push(event);
        }
        events
    }
}

/// Validates a stream name (identities of publishers must be stream names).
pub fn stream(name: &str) -> StreamName {
    StreamName::new(name).expect("stream name")
}

/// The usual control-plane scene: a secure server with one room, its
/// clients, and helpers to bring in participants with their own tokens.
pub struct Scene {
    /// The server.
    pub vigil: Vigil,
    /// `http://127.0.0.1:PORT` of WHIP/WHEP.
    pub base: String,
    /// gRPC clients.
    pub clients: Clients,
    /// The room's name.
    pub room: String,
}

impl Scene {
    /// A secure server (tweaked) with `room` created with `request`'s settings.
    pub async fn with_room(
        room: &str,
        request: pb::CreateRoomRequest,
        tweak: impl FnOnce(&mut Config),
    ) -> Scene {
        let vigil = secure_server(tweak).await;
        let base = crate::base_url(&vigil);
        let mut clients = clients(&vigil).await;
        clients
            .rooms
            .create_room(admin(pb::CreateRoomRequest {
                name: room.to_owned(),
                ..request
            }))
            .await
            .unwrap_or_else(|e| panic!("CreateRoom {room}: {e}"));
        Scene {
            vigil,
            base,
            clients,
            room: room.to_owned(),
        }
    }

    /// A secure server with `room` created with default settings.
    pub async fn new(room: &str) -> Scene {
        Self::with_room(room, pb::CreateRoomRequest::default(), |_| {}).await
    }

    /// An admin watcher of the room's events.
    pub async fn watch_room(&self) -> Watcher {
        Watcher::start(
            &self.vigil,
            ADMIN_KEY,
            pb::WatchRequest {
                room: self.room.clone(),
                ..Default::default()
            },
        )
        .await
    }

    /// CreateToken's whole answer for `identity` in the room.
    pub async fn issue(&mut self, identity: &str, grants: pb::Grants) -> pb::CreateTokenResponse {
        let room = self.room.clone();
        issue(&mut self.clients, &room, identity, grants).await
    }

    /// HangUp of `identity` (banned for `ban_seconds` if not 0); how many
    /// sessions it closed.
    pub async fn hang_up(&self, identity: &str, ban_seconds: u32) -> u32 {
        self.clients
            .rooms
            .clone()
            .hang_up(admin(pb::HangUpRequest {
                room: self.room.clone(),
                identity: identity.to_owned(),
                ban_seconds,
            }))
            .await
            .unwrap_or_else(|e| panic!("HangUp {identity}: {e}"))
            .into_inner()
            .sessions_closed
    }

    /// A token for `identity` in the room.
    pub async fn token(&mut self, identity: &str, grants: pb::Grants) -> String {
        let room = self.room.clone();
        token(&mut self.clients, &room, identity, grants).await
    }

    /// `identity` publishes its stream with its own token and sends media.
    pub async fn publisher(&mut self, identity: &str) -> Publisher {
        self.publisher_with(identity, Keyframes::Periodic).await
    }

    /// Like [`publisher`](Self::publisher), with keyframes sent as
    /// `keyframes` says.
    pub async fn publisher_with(&mut self, identity: &str, keyframes: Keyframes) -> Publisher {
        let token = self.token(identity, publish_and_subscribe()).await;
        let mut publisher = Publisher::connect_as(&self.base, &self.room, identity, &token)
            .await
            .unwrap_or_else(|r| panic!("WHIP {identity}: {} {}", r.status, r.body));
        publisher.keyframes(keyframes);
        publisher.start_media();
        publisher
    }

    /// `identity` plays `stream` with its own token, until video arrives.
    pub async fn viewer(&mut self, stream: &str, identity: &str) -> Viewer {
        let token = self.token(identity, subscribe_only()).await;
        let viewer = Viewer::connect_as(&self.base, &self.room, stream, Some(&token))
            .await
            .unwrap_or_else(|r| panic!("WHEP {identity} -> {stream}: {} {}", r.status, r.body));
        viewer.peer.wait_connected().await;
        viewer.wait_video().await;
        viewer
    }

    /// The room as GetRoom shows it now.
    pub async fn room_state(&self) -> pb::Room {
        self.clients
            .rooms
            .clone()
            .get_room(admin(pb::GetRoomRequest {
                name: self.room.clone(),
            }))
            .await
            .expect("GetRoom")
            .into_inner()
    }

    /// The room's participants.
    pub async fn participants(&self) -> Vec<pb::Participant> {
        self.clients
            .rooms
            .clone()
            .list_participants(admin(pb::ListParticipantsRequest {
                room: self.room.clone(),
                ..Default::default()
            }))
            .await
            .expect("ListParticipants")
            .into_inner()
            .participants
    }

    /// `identity` as the room's participant list shows it (panics if absent);
    /// takes `&self` so that it can be polled inside `eventually`.
    pub async fn participant(&self, identity: &str) -> pb::Participant {
        let participants = self.participants().await;
        participants
            .iter()
            .find(|p| p.identity == identity)
            .cloned()
            .unwrap_or_else(|| panic!("{identity} not listed in {participants:?}"))
    }

    /// Shuts the server down.
    pub async fn shutdown(self) {
        self.vigil.shutdown().await;
    }
}
