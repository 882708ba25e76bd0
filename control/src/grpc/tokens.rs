//! `vigil.v1.TokenService`.

use std::time::Duration;

use tonic::{Request, Response, Status};
use vigil_proto::v1 as pb;
use vigil_proto::v1::token_service_server::TokenService;

use super::{bearer, convert};
use crate::core::Control;

/// Default token lifetime: a day.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The service; needs the admin key. Revoking lives here, with issuing:
/// a room's admin token may run the room, not mint or kill credentials.
pub struct Tokens {
    control: Control,
}

impl Tokens {
    pub fn new(control: Control) -> Self {
        Tokens { control }
    }
}

#[tonic::async_trait]
impl TokenService for Tokens {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        self.control.check_admin(bearer(&request))?;
        let req = request.into_inner();
        let ttl = req
            .ttl_seconds
            .map_or(DEFAULT_TTL, |s| Duration::from_secs(s.into()));
        let issued = self
            .control
            .create_token(&req.room, &req.identity, convert::grants(req.grants), ttl)
            .await?;
        Ok(Response::new(pb::CreateTokenResponse {
            token: issued.token,
            expires_at_unix: issued.expires_at as i64,
            whip_path: format!("/whip/{}/{}", req.room, req.identity),
            token_id: issued.id,
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        self.control.check_admin(bearer(&request))?;
        let req = request.into_inner();
        if req.token_id.is_empty() {
            return Err(Status::invalid_argument("token_id is required"));
        }
        let closed = self.control.revoke_token(&req.room, &req.token_id).await?;
        Ok(Response::new(pb::RevokeTokenResponse {
            sessions_closed: closed as u32,
        }))
    }

    async fn revoke_room_tokens(
        &self,
        request: Request<pb::RevokeRoomTokensRequest>,
    ) -> Result<Response<pb::RevokeRoomTokensResponse>, Status> {
        self.control.check_admin(bearer(&request))?;
        let closed = self
            .control
            .revoke_room_tokens(&request.into_inner().room)
            .await?;
        Ok(Response::new(pb::RevokeRoomTokensResponse {
            sessions_closed: closed as u32,
        }))
    }
}
