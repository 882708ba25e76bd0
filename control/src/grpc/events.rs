//! `vigil.v1.EventService`: the live event and alarm feed.

use std::pin::Pin;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vigil_proto::v1 as pb;
use vigil_proto::v1::event_service_server::EventService;

use super::{bearer, convert};
use crate::core::{Control, ControlError, WatchScope};
use crate::event::EventKind;
use crate::names::RoomName;
use crate::token::Claims;

/// Events buffered per watcher before the forwarding task waits for it.
const WATCHER_BUFFER: usize = 256;

/// The service. The admin key sees every room (filters optional); a
/// participant token sees its own room's events about itself, plus the
/// room-wide ones, and only while that room exists (`NOT_FOUND` after it
/// was deleted).
pub struct Events {
    control: Control,
    stop: watch::Receiver<bool>,
}

impl Events {
    pub fn new(control: Control, stop: watch::Receiver<bool>) -> Self {
        Events { control, stop }
    }

    /// Whose events the credential may see, and for a participant token
    /// its claims, checked again when tokens of its room are revoked.
    async fn scope(
        &self,
        bearer: Option<&str>,
        req: &pb::WatchRequest,
    ) -> Result<(WatchScope, Option<Claims>), Status> {
        let optional = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let room = optional(&req.room)
            .map(|r| RoomName::new(&r))
            .transpose()
            .map_err(ControlError::from)?;
        if self.control.check_admin(bearer).is_ok() {
            let scope = WatchScope {
                room,
                identity: optional(&req.identity),
                participant: false,
            };
            return Ok((scope, None));
        }
        let token = bearer.ok_or_else(|| {
            Status::unauthenticated("the admin key or a participant token is required")
        })?;
        let claims = self.control.verify_token(token).await?;
        if room.as_ref().is_some_and(|r| *r != claims.room) {
            return Err(Status::permission_denied("token is for another room"));
        }
        let scope = WatchScope {
            room: Some(claims.room.clone()),
            identity: (!claims.grants.admin).then(|| claims.sub.clone()),
            participant: true,
        };
        Ok((scope, Some(claims)))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for Events {
    type WatchStream = EventStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (scope, claims) = self.scope(bearer(&request), request.get_ref()).await?;
        // A token outlives its room: a join link for a deleted room must say
        // so before its page offers to go live, not after.
        if scope.participant
            && let Some(room) = &scope.room
        {
            self.control.room(room.as_str()).await?;
        }
        let control = self.control.clone();
        let subscription = self.control.watch(request.get_ref().after_id);
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            if let Some(oldest) = subscription.gap
                && tx.send(Ok(convert::gap(oldest))).await.is_err()
            {
                return;
            }
            for event in subscription.replay {
                if scope.admits(&event) && tx.send(Ok(convert::event(event))).await.is_err() {
                    return;
                }
            }
            let mut live = subscription.live;
            loop {
                let event = tokio::select! {
                    // In this order: events published before the stop
                    // (sessions closed at shutdown) still go out.
                    biased;
                    event = live.recv() => event,
                    _ = stop.wait_for(|stopped| *stopped) => return,
                    // The watcher went away.
                    () = tx.closed() => return,
                };
                let (item, recheck) = match event {
                    Ok(event) if scope.admits(&event) => {
                        let revoked = matches!(event.kind, EventKind::TokensRevoked { .. });
                        (convert::event(event), revoked)
                    }
                    Ok(_) => continue,
                    // This watcher fell behind the bus: say so, keep going
                    // (if its token was not revoked among what it missed).
                    Err(broadcast::error::RecvError::Lagged(_)) => (convert::gap(0), true),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(Ok(item)).await.is_err() {
                    return;
                }
                // Tokens of the room were revoked: a participant's feed
                // goes on only if its own token is still honoured.
                if recheck
                    && let Some(claims) = &claims
                    && let Err(refused) = control.honoured(claims.clone()).await
                {
                    // The watcher may be gone already; the feed ends anyway.
                    let _ = tx.send(Err(refused.into())).await;
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
