//! `vigil.v1.RoomService`.

use tonic::{Request, Response, Status};
use vigil_proto::v1 as pb;
use vigil_proto::v1::room_service_server::RoomService;

use std::time::Duration;

use super::{bearer, convert};
use crate::core::{Control, RECENT_ALARMS};

/// The service. Creating, listing and deleting rooms needs the admin key;
/// what concerns one room also takes a token with that room's `admin` grant.
pub struct Rooms {
    control: Control,
}

impl Rooms {
    pub fn new(control: Control) -> Self {
        Rooms { control }
    }

    fn admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        Ok(self.control.check_admin(bearer(request))?)
    }

    async fn room_admin<T>(&self, request: &Request<T>, room: &str) -> Result<(), Status> {
        Ok(self.control.check_room_admin(bearer(request), room).await?)
    }
}

#[tonic::async_trait]
impl RoomService for Rooms {
    async fn create_room(
        &self,
        request: Request<pb::CreateRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        self.admin(&request)?;
        let req = request.into_inner();
        let view = self
            .control
            .create_room(
                &req.name,
                convert::limits(req.limits),
                convert::alarm_rules(req.alarm_rules),
            )
            .await?;
        Ok(Response::new(convert::room(view)))
    }

    async fn get_room(
        &self,
        request: Request<pb::GetRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        self.room_admin(&request, &request.get_ref().name).await?;
        let view = self.control.room(&request.into_inner().name).await?;
        Ok(Response::new(convert::room(view)))
    }

    async fn update_room(
        &self,
        request: Request<pb::UpdateRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        self.admin(&request)?;
        let req = request.into_inner();
        let update = convert::room_update(&req)?;
        let view = self.control.update_room(&req.name, update).await?;
        Ok(Response::new(convert::room(view)))
    }

    async fn list_rooms(
        &self,
        request: Request<pb::ListRoomsRequest>,
    ) -> Result<Response<pb::ListRoomsResponse>, Status> {
        self.admin(&request)?;
        let req = request.into_inner();
        let size = page_size(req.page_size);
        let after = page_after(&req.page_token)?;
        // One more than the page: whether there is a next one.
        let mut rooms = self.control.rooms_after(after, size + 1).await?;
        let next_page_token = next_token(&mut rooms, size, |room| room.spec.name.to_string());
        Ok(Response::new(pb::ListRoomsResponse {
            rooms: rooms.into_iter().map(convert::room).collect(),
            next_page_token,
        }))
    }

    async fn delete_room(
        &self,
        request: Request<pb::DeleteRoomRequest>,
    ) -> Result<Response<pb::DeleteRoomResponse>, Status> {
        self.admin(&request)?;
        let closed = self.control.delete_room(&request.into_inner().name).await?;
        Ok(Response::new(pb::DeleteRoomResponse {
            sessions_closed: closed as u32,
        }))
    }

    async fn list_participants(
        &self,
        request: Request<pb::ListParticipantsRequest>,
    ) -> Result<Response<pb::ListParticipantsResponse>, Status> {
        self.room_admin(&request, &request.get_ref().room).await?;
        let req = request.into_inner();
        let size = page_size(req.page_size);
        let after = page_after(&req.page_token)?;
        let mut participants = self.control.participants(&req.room).await?;
        participants.sort_by(|a, b| a.identity.cmp(&b.identity));
        participants.retain(|p| after.is_none_or(|after| p.identity.as_str() > after));
        participants.truncate(size + 1);
        let next_page_token = next_token(&mut participants, size, |p| p.identity.clone());
        Ok(Response::new(pb::ListParticipantsResponse {
            participants: participants.into_iter().map(convert::participant).collect(),
            next_page_token,
        }))
    }

    async fn get_stream_stats(
        &self,
        request: Request<pb::GetStreamStatsRequest>,
    ) -> Result<Response<pb::StreamStats>, Status> {
        self.room_admin(&request, &request.get_ref().room).await?;
        let req = request.into_inner();
        let view = self.control.stream_stats(&req.room, &req.stream).await?;
        Ok(Response::new(convert::stream_stats(view)))
    }

    async fn list_alarms(
        &self,
        request: Request<pb::ListAlarmsRequest>,
    ) -> Result<Response<pb::ListAlarmsResponse>, Status> {
        self.room_admin(&request, &request.get_ref().room).await?;
        let req = request.into_inner();
        let recent = req
            .recent_seconds
            .map_or(RECENT_ALARMS, |secs| Duration::from_secs(secs.into()));
        let alarms = self.control.alarms(&req.room, recent).await?;
        Ok(Response::new(pb::ListAlarmsResponse {
            alarms: alarms.into_iter().map(convert::alarm).collect(),
        }))
    }

    async fn acknowledge_alarm(
        &self,
        request: Request<pb::AcknowledgeAlarmRequest>,
    ) -> Result<Response<pb::AcknowledgeAlarmResponse>, Status> {
        let req = request.get_ref();
        let by = self
            .control
            .room_admin_name(bearer(&request), &req.room)
            .await?;
        let alarm = self
            .control
            .acknowledge_alarm(&req.room, req.alarm_id, &by)
            .await?;
        Ok(Response::new(pb::AcknowledgeAlarmResponse {
            alarm: Some(convert::alarm(alarm)),
        }))
    }

    async fn hang_up(
        &self,
        request: Request<pb::HangUpRequest>,
    ) -> Result<Response<pb::HangUpResponse>, Status> {
        self.room_admin(&request, &request.get_ref().room).await?;
        let req = request.into_inner();
        let ban = (req.ban_seconds > 0).then(|| Duration::from_secs(req.ban_seconds.into()));
        let closed = self.control.hang_up(&req.room, &req.identity, ban).await?;
        Ok(Response::new(pb::HangUpResponse {
            sessions_closed: closed as u32,
        }))
    }

    async fn lift_ban(
        &self,
        request: Request<pb::LiftBanRequest>,
    ) -> Result<Response<pb::LiftBanResponse>, Status> {
        self.room_admin(&request, &request.get_ref().room).await?;
        let req = request.into_inner();
        let lifted = self.control.lift_ban(&req.room, &req.identity).await?;
        Ok(Response::new(pb::LiftBanResponse { lifted }))
    }

    async fn mute_track(
        &self,
        request: Request<pb::MuteTrackRequest>,
    ) -> Result<Response<pb::MuteTrackResponse>, Status> {
        self.room_admin(&request, &request.get_ref().room).await?;
        let req = request.into_inner();
        let kind = convert::track_kind_from(req.kind)?;
        self.control
            .mute(&req.room, &req.identity, kind, req.muted)
            .await?;
        Ok(Response::new(pb::MuteTrackResponse {}))
    }

    async fn call(
        &self,
        request: Request<pb::CallRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        self.room_admin(&request, &request.get_ref().room).await?;
        let req = request.into_inner();
        let call = self
            .control
            .call(&req.room, &req.caller, &req.callee)
            .await?;
        Ok(Response::new(pb::CallResponse {
            whep_path: call.whep_path,
            call_id: call.call_id,
        }))
    }

    async fn end_call(
        &self,
        request: Request<pb::EndCallRequest>,
    ) -> Result<Response<pb::EndCallResponse>, Status> {
        self.room_admin(&request, &request.get_ref().room).await?;
        let req = request.into_inner();
        let closed = self.control.end_call(&req.room, &req.callee).await?;
        Ok(Response::new(pb::EndCallResponse {
            sessions_closed: closed as u32,
        }))
    }

    async fn add_camera(
        &self,
        request: Request<pb::AddCameraRequest>,
    ) -> Result<Response<pb::Camera>, Status> {
        self.room_admin(&request, &request.get_ref().room).await?;
        let mut req = request.into_inner();
        let (room, identity) = (
            std::mem::take(&mut req.room),
            std::mem::take(&mut req.identity),
        );
        let camera = convert::new_camera(req)?;
        let view = self.control.add_camera(&room, &identity, camera).await?;
        Ok(Response::new(convert::camera(view)))
    }

    async fn update_camera(
        &self,
        request: Request<pb::UpdateCameraRequest>,
    ) -> Result<Response<pb::Camera>, Status> {
        self.room_admin(&request, &request.get_ref().room).await?;
        let mut req = request.into_inner();
        let (room, identity) = (
            std::mem::take(&mut req.room),
            std::mem::take(&mut req.identity),
        );
        let update = convert::camera_update(req)?;
        let view = self.control.update_camera(&room, &identity, update).await?;
        Ok(Response::new(convert::camera(view)))
    }

    async fn remove_camera(
        &self,
        request: Request<pb::RemoveCameraRequest>,
    ) -> Result<Response<pb::RemoveCameraResponse>, Status> {
        self.room_admin(&request, &request.get_ref().room).await?;
        let req = request.into_inner();
        self.control.remove_camera(&req.room, &req.identity).await?;
        Ok(Response::new(pb::RemoveCameraResponse {}))
    }

    async fn list_cameras(
        &self,
        request: Request<pb::ListCamerasRequest>,
    ) -> Result<Response<pb::ListCamerasResponse>, Status> {
        self.room_admin(&request, &request.get_ref().room).await?;
        let cameras = self.control.cameras(&request.into_inner().room).await?;
        Ok(Response::new(pb::ListCamerasResponse {
            cameras: cameras.into_iter().map(convert::camera).collect(),
        }))
    }
}

/// A page when the client asks for none (`page_size` 0), and the most.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn page_size(asked: u32) -> usize {
    match asked as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

/// Page tokens are `a:` and the last key of the previous page (opaque to
/// clients; stable, since rooms and identities are listed in key order).
const TOKEN_PREFIX: &str = "a:";

fn page_after(token: &str) -> Result<Option<&str>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix(TOKEN_PREFIX)
        .filter(|key| !key.is_empty())
        .map(Some)
        .ok_or_else(|| Status::invalid_argument("page_token is not one this server gave"))
}

/// Cuts `items` (fetched one past the page) to `size`, and the token of the
/// next page if there was more.
fn next_token<T>(items: &mut Vec<T>, size: usize, key: impl Fn(&T) -> String) -> String {
    if items.len() <= size {
        return String::new();
    }
    items.truncate(size);
    items
        .last()
        .map(|last| format!("{TOKEN_PREFIX}{}", key(last)))
        .unwrap_or_default()
}
