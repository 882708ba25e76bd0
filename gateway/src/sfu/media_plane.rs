//! The forwarding core as the control plane sees it: the gateway's side of
//! `vigil_control::media::MediaPlane`, the SFU and the cameras' pullers.

use vigil_control::event::{LeaveReason, TrackKind};
use vigil_control::media::{MediaPlane, StreamSample};
use vigil_control::{RoomName, StreamName};

use crate::camera::Cameras;
use crate::sfu::Sfu;
use crate::sfu::registry::{CloseReason, Msg};

/// What the control plane drives: the SFU's sessions and the cameras.
pub struct Plane {
    /// The forwarding core.
    pub sfu: Sfu,
    /// The cameras' pullers.
    pub cameras: Cameras,
}

#[async_trait::async_trait]
impl MediaPlane for Plane {
    fn start_camera(&self, spec: vigil_control::camera::CameraSpec) {
        self.cameras.start_camera(spec);
    }

    fn stop_camera(&self, room: &RoomName, identity: &StreamName) {
        self.cameras.stop_camera(room, identity);
    }

    async fn hang_up(&self, room: &RoomName, identity: &str, reason: LeaveReason) -> usize {
        let reason = match reason {
            LeaveReason::RoomClosed => CloseReason::RoomClosed,
            _ => CloseReason::HungUp,
        };
        self.sfu
            .ask(|reply| Msg::CloseParticipant {
                room: room.clone(),
                identity: Some(identity.to_owned()),
                reason,
                reply,
            })
            .await
            .unwrap_or(0)
    }

    async fn close_session(&self, session: &str, reason: LeaveReason) -> bool {
        let Some(session) = crate::sfu::SessionId::parse(session) else {
            return false;
        };
        let reason = match reason {
            LeaveReason::RoomFull => CloseReason::RoomFull,
            _ => CloseReason::HungUp,
        };
        self.sfu
            .ask(|reply| Msg::Close {
                session,
                reason,
                reply: Some(reply),
            })
            .await
            .unwrap_or(false)
    }

    async fn end_call(
        &self,
        room: &RoomName,
        caller: &StreamName,
        callee: &str,
        stop_caller: bool,
    ) -> usize {
        self.sfu
            .ask(|reply| Msg::EndCall {
                room: room.clone(),
                caller: caller.clone(),
                callee: callee.to_owned(),
                stop_caller,
                reply,
            })
            .await
            .unwrap_or(0)
    }

    async fn close_room(&self, room: &RoomName) -> usize {
        self.sfu
            .ask(|reply| Msg::CloseParticipant {
                room: room.clone(),
                identity: None,
                reason: CloseReason::RoomClosed,
                reply,
            })
            .await
            .unwrap_or(0)
    }

    async fn mute(
        &self,
        room: &RoomName,
        stream: &StreamName,
        kind: TrackKind,
        muted: bool,
    ) -> bool {
        self.sfu
            .ask(|reply| Msg::Mute {
                room: room.clone(),
                stream: stream.clone(),
                kind: kind.into(),
                muted,
                reply,
            })
            .await
            .unwrap_or(false)
    }

    async fn sample(&self) -> Vec<StreamSample> {
        self.sfu
            .ask(|reply| Msg::Sample { reply })
            .await
            .unwrap_or_default()
    }
}
