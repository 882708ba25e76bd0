//! The gRPC side of `vigil ctl`: one connection, the credential sent with
//! every request, and one method per RPC that returns the response message
//! or a [`CtlError`] that says what to do about it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status, Streaming};
use vigil_control::store::{StoreError, admin_key_path, read_admin_key};
use vigil_proto::v1 as pb;
use vigil_proto::v1::event_service_client::EventServiceClient;
use vigil_proto::v1::room_service_client::RoomServiceClient;
use vigil_proto::v1::token_service_client::TokenServiceClient;

use super::{CtlError, ServerUrl};

/// How long connecting may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2 pings on an idle connection, so a `watch` whose server vanished
/// (no FIN: a crash of its host, a dropped route) ends instead of waiting forever.
const KEEP_ALIVE: Duration = Duration::from_secs(20);

/// The bearer credential, and where it came from (for the error message
/// when the server refuses it).
pub struct Credential {
    header: Option<MetadataValue<Ascii>>,
    origin: Origin,
}

/// Where [`Credential`] came from.
enum Origin {
    /// `--admin-key` or `VIGIL_ADMIN_KEY`.
    Given,
    /// The data directory's key file.
    File(PathBuf),
    /// None: the data directory has no key file (a server that keeps its
    /// data elsewhere, or runs with `--insecure-no-auth`).
    Missing(PathBuf),
    /// None: the key file is there but cannot be read.
    Unreadable(StoreError),
}

impl Credential {
    /// `given` (the flag, or the environment) if set, else the key in
    /// `data_dir`, else none: an `--insecure-no-auth` server needs none, and
    /// a secure one refuses the request with a message that says where the
    /// key was looked for.
    pub fn resolve(given: Option<String>, data_dir: &Path) -> Result<Credential, CtlError> {
        let (key, origin) = match given {
            Some(key) => (Some(key), Origin::Given),
            None => match read_admin_key(data_dir) {
                Ok(Some(key)) => (Some(key), Origin::File(admin_key_path(data_dir))),
                Ok(None) => (None, Origin::Missing(admin_key_path(data_dir))),
                Err(e) => (None, Origin::Unreadable(e)),
            },
        };
        let header = key
            .map(|key| {
                if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(CtlError::BadKey);
                }
                format!("Bearer {key}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| CtlError::BadKey)
            })
            .transpose()?;
        Ok(Credential { header, origin })
    }

    /// What to tell the operator when the server refused the credential.
    fn hint(&self) -> String {
        const HOW: &str = "pass --admin-key, set VIGIL_ADMIN_KEY, or point --data-dir at the server's data directory";
        match &self.origin {
            Origin::Given => "the key from --admin-key or VIGIL_ADMIN_KEY was refused".into(),
            Origin::File(path) => format!(
                "the key read from {} was refused (is that the server's data directory?)",
                path.display()
            ),
            Origin::Missing(path) => {
                format!("no admin key: {HOW} (there is no {})", path.display())
            }
            Origin::Unreadable(e) => format!("no admin key: cannot read it ({e}); {HOW}"),
        }
    }
}

/// A connection to one server, with the credential for every request.
pub struct Client {
    channel: Channel,
    credential: Credential,
}

impl Client {
    /// Connects now, so an unreachable server is reported as such rather
    /// than as the first RPC's error.
    /// `https://` trusts the system's CAs and `tls_ca` (PEM) if given.
    pub async fn connect(
        server: &ServerUrl,
        tls_ca: Option<&Path>,
        credential: Credential,
    ) -> Result<Client, CtlError> {
        let unreachable = |cause: String| CtlError::Unreachable {
            server: server.clone(),
            cause,
        };
        let mut endpoint =
            Endpoint::from_shared(server.to_string()).map_err(|e| unreachable(chain(&e)))?;
        if server.is_https() {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(path) = tls_ca {
                let pem = std::fs::read(path)
                    .map_err(|e| unreachable(format!("cannot read {}: {e}", path.display())))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| unreachable(chain(&e)))?;
        }
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(KEEP_ALIVE)
            .connect()
            .await
            .map_err(|e| unreachable(chain(&e)))?;
        Ok(Client {
            channel,
            credential,
        })
    }

    fn rooms(&self) -> RoomServiceClient<Channel> {
        RoomServiceClient::new(self.channel.clone())
    }

    /// `message` with `authorization: Bearer <credential>`, if there is one.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(header) = &self.credential.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        request
    }

    /// The error for `status`, with a hint when the credential is the likely cause.
    fn refused(&self, status: Status) -> CtlError {
        let hint = matches!(
            status.code(),
            Code::Unauthenticated | Code::PermissionDenied
        )
        .then(|| self.credential.hint());
        CtlError::Refused { status, hint }
    }

    /// RoomService.AddCamera.
    pub async fn add_camera(&self, request: pb::AddCameraRequest) -> Result<pb::Camera, CtlError> {
        let response = self.rooms().add_camera(self.request(request)).await;
        self.answer(response)
    }

    /// RoomService.UpdateCamera.
    pub async fn update_camera(
        &self,
        request: pb::UpdateCameraRequest,
    ) -> Result<pb::Camera, CtlError> {
        let response = self.rooms().update_camera(self.request(request)).await;
        self.answer(response)
    }

    /// RoomService.RemoveCamera.
    pub async fn remove_camera(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<pb::RemoveCameraResponse, CtlError> {
        let request = pb::RemoveCameraRequest {
            room: room.into(),
            identity: identity.into(),
        };
        let response = self.rooms().remove_camera(self.request(request)).await;
        self.answer(response)
    }

    /// RoomService.ListCameras.
    pub async fn list_cameras(&self, room: &str) -> Result<pb::ListCamerasResponse, CtlError> {
        let request = pb::ListCamerasRequest { room: room.into() };
        let response = self.rooms().list_cameras(self.request(request)).await;
        self.answer(response)
    }

    /// RoomService.CreateRoom.
    pub async fn create_room(&self, request: pb::CreateRoomRequest) -> Result<pb::Room, CtlError> {
        let response = self.rooms().create_room(self.request(request)).await;
        self.answer(response)
    }

    /// RoomService.UpdateRoom.
    pub async fn update_room(&self, request: pb::UpdateRoomRequest) -> Result<pb::Room, CtlError> {
        let response = self.rooms().update_room(self.request(request)).await;
        self.answer(response)
    }

    /// RoomService.GetRoom.
    pub async fn room(&self, name: &str) -> Result<pb::Room, CtlError> {
        let request = pb::GetRoomRequest { name: name.into() };
        let response = self.rooms().get_room(self.request(request)).await;
        self.answer(response)
    }

    /// RoomService.ListRooms, every page: all rooms in one response.
    pub async fn list_rooms(&self) -> Result<pb::ListRoomsResponse, CtlError> {
        let mut all = pb::ListRoomsResponse::default();
        loop {
            let request = pb::ListRoomsRequest {
                page_size: 1000,
                page_token: std::mem::take(&mut all.next_page_token),
            };
            let response = self.rooms().list_rooms(self.request(request)).await;
            let page = self.answer(response)?;
            all.rooms.extend(page.rooms);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            all.next_page_token = page.next_page_token;
        }
    }

    /// RoomService.DeleteRoom.
    pub async fn delete_room(&self, name: &str) -> Result<pb::DeleteRoomResponse, CtlError> {
        let request = pb::DeleteRoomRequest { name: name.into() };
        let response = self.rooms().delete_room(self.request(request)).await;
        self.answer(response)
    }

    /// RoomService.ListParticipants, every page.
    pub async fn list_participants(
        &self,
        room: &str,
    ) -> Result<pb::ListParticipantsResponse, CtlError> {
        let mut all = pb::ListParticipantsResponse::default();
        loop {
            let request = pb::ListParticipantsRequest {
                room: room.into(),
                page_size: 1000,
                page_token: std::mem::take(&mut all.next_page_token),
            };
            let response = self.rooms().list_participants(self.request(request)).await;
            let page = self.answer(response)?;
            all.participants.extend(page.participants);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            all.next_page_token = page.next_page_token;
        }
    }

    /// RoomService.GetStreamStats.
    pub async fn stream_stats(
        &self,
        room: &str,
        stream: &str,
    ) -> Result<pb::StreamStats, CtlError> {
        let request = pb::GetStreamStatsRequest {
            room: room.into(),
            stream: stream.into(),
        };
        let response = self.rooms().get_stream_stats(self.request(request)).await;
        self.answer(response)
    }

    /// RoomService.ListAlarms.
    pub async fn list_alarms(
        &self,
        room: &str,
        recent_seconds: Option<u32>,
    ) -> Result<pb::ListAlarmsResponse, CtlError> {
        let request = pb::ListAlarmsRequest {
            room: room.into(),
            recent_seconds,
        };
        let response = self.rooms().list_alarms(self.request(request)).await;
        self.answer(response)
    }

    /// RoomService.AcknowledgeAlarm.
    pub async fn acknowledge_alarm(
        &self,
        room: &str,
        alarm_id: u64,
    ) -> Result<pb::AcknowledgeAlarmResponse, CtlError> {
        let request = pb::AcknowledgeAlarmRequest {
            room: room.into(),
            alarm_id,
        };
        let response = self.rooms().acknowledge_alarm(self.request(request)).await;
        self.answer(response)
    }

    /// RoomService.HangUp.
    pub async fn hang_up(
        &self,
        room: &str,
        identity: &str,
        ban_seconds: u32,
    ) -> Result<pb::HangUpResponse, CtlError> {
        let request = pb::HangUpRequest {
            room: room.into(),
            identity: identity.into(),
            ban_seconds,
        };
        let response = self.rooms().hang_up(self.request(request)).await;
        self.answer(response)
    }

    /// RoomService.LiftBan.
    pub async fn lift_ban(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<pb::LiftBanResponse, CtlError> {
        let request = pb::LiftBanRequest {
            room: room.into(),
            identity: identity.into(),
        };
        let response = self.rooms().lift_ban(self.request(request)).await;
        self.answer(response)
    }

    /// RoomService.MuteTrack.
    pub async fn mute_track(
        &self,
        room: &str,
        identity: &str,
        kind: pb::TrackKind,
        muted: bool,
    ) -> Result<pb::MuteTrackResponse, CtlError> {
        let request = pb::MuteTrackRequest {
            room: room.into(),
            identity: identity.into(),
            kind: kind.into(),
            muted,
        };
        let response = self.rooms().mute_track(self.request(request)).await;
        self.answer(response)
    }

    /// RoomService.Call.
    pub async fn call(
        &self,
        room: &str,
        caller: &str,
        callee: &str,
    ) -> Result<pb::CallResponse, CtlError> {
        let request = pb::CallRequest {
            room: room.into(),
            caller: caller.into(),
            callee: callee.into(),
        };
        let response = self.rooms().call(self.request(request)).await;
        self.answer(response)
    }

    /// RoomService.EndCall.
    pub async fn end_call(
        &self,
        room: &str,
        callee: &str,
    ) -> Result<pb::EndCallResponse, CtlError> {
        let request = pb::EndCallRequest {
            room: room.into(),
            callee: callee.into(),
        };
        let response = self.rooms().end_call(self.request(request)).await;
        self.answer(response)
    }

    /// TokenService.CreateToken.
    pub async fn create_token(
        &self,
        request: pb::CreateTokenRequest,
    ) -> Result<pb::CreateTokenResponse, CtlError> {
        let mut tokens = TokenServiceClient::new(self.channel.clone());
        let response = tokens.create_token(self.request(request)).await;
        self.answer(response)
    }

    /// TokenService.RevokeToken.
    pub async fn revoke_token(
        &self,
        room: &str,
        token_id: &str,
    ) -> Result<pb::RevokeTokenResponse, CtlError> {
        let request = pb::RevokeTokenRequest {
            room: room.into(),
            token_id: token_id.into(),
        };
        let mut tokens = TokenServiceClient::new(self.channel.clone());
        let response = tokens.revoke_token(self.request(request)).await;
        self.answer(response)
    }

    /// TokenService.RevokeRoomTokens.
    pub async fn revoke_room_tokens(
        &self,
        room: &str,
    ) -> Result<pb::RevokeRoomTokensResponse, CtlError> {
        let request = pb::RevokeRoomTokensRequest { room: room.into() };
        let mut tokens = TokenServiceClient::new(self.channel.clone());
        let response = tokens.revoke_room_tokens(self.request(request)).await;
        self.answer(response)
    }

    /// EventService.Watch: the feed, once the server has subscribed it.
    pub async fn watch(&self, request: pb::WatchRequest) -> Result<Streaming<pb::Event>, CtlError> {
        let mut events = EventServiceClient::new(self.channel.clone());
        let response = events.watch(self.request(request)).await;
        self.answer(response)
    }

    /// The feed's next event, `None` once the server ended it.
    pub async fn next_event(
        &self,
        events: &mut Streaming<pb::Event>,
    ) -> Result<Option<pb::Event>, CtlError> {
        events
            .message()
            .await
            .map_err(|status| self.refused(status))
    }

    fn answer<T>(&self, response: Result<tonic::Response<T>, Status>) -> Result<T, CtlError> {
        response
            .map(tonic::Response::into_inner)
            .map_err(|status| self.refused(status))
    }
}

/// One line for a refused RPC: `not found: no room site-9`, and the hint.
pub fn describe(status: &Status, hint: Option<&str>) -> String {
    let mut line = format!("{}: {}", code_words(status.code()), status.message());
    if let Some(hint) = hint {
        line.push_str("; ");
        line.push_str(hint);
    }
    // One line, whatever the server put in its message.
    line.replace(['\n', '\r'], " ")
}

/// `NotFound` → `not found`: gRPC's code name, as words.
fn code_words(code: Code) -> String {
    let mut words = String::new();
    for c in format!("{code:?}").chars() {
        if c.is_ascii_uppercase() && !words.is_empty() {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    words
}

/// An error with its sources, `transport error: ...: Connection refused`:
/// tonic's own message alone says only "transport error".
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper repeats its inner error in its own message at times.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_one_line() {
        let status = Status::not_found("no room\nsite-9");
        assert_eq!(describe(&status, None), "not found: no room site-9");
        let status = Status::unauthenticated("wrong admin key");
        assert_eq!(
            describe(&status, Some("the key was refused")),
            "unauthenticated: wrong admin key; the key was refused"
        );
        assert_eq!(code_words(Code::PermissionDenied), "permission denied");
    }

    #[test]
    fn a_given_key_must_fit_a_header() {
        let dir = Path::new("/nonexistent-vigil-data");
        assert!(matches!(
            Credential::resolve(Some("two words".into()), dir),
            Err(CtlError::BadKey)
        ));
        assert!(matches!(
            Credential::resolve(Some(String::new()), dir),
            Err(CtlError::BadKey)
        ));
        let none = Credential::resolve(None, dir).unwrap();
        assert!(none.header.is_none());
        let path = admin_key_path(dir).display().to_string();
        assert!(none.hint().contains(&path), "{}", none.hint());
        assert!(none.hint().contains("--admin-key"));
        assert!(none.hint().contains("VIGIL_ADMIN_KEY"));
    }
}
