//! `vigil.v1.TokenService`.

use std::time::Duration;

use tonic::{Request, Response, Status};
use vigil_proto::v1 as pb;
use vigil_proto::v1::token_service_server::TokenService;

use super::{bearer, convert};
use crate::core::Control;

/// Default token lifetime: a day.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The service; needs the admin key.
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
        let (token, expires_at) = self
            .control
            .create_token(&req.room, &req.identity, convert::grants(req.grants), ttl)
            .await?;
        Ok(Response::new(pb::CreateTokenResponse {
            token,
            expires_at_unix: expires_at as i64,
            whip_path: format!("/whip/{}/{}", req.room, req.identity),
        }))
    }
}
