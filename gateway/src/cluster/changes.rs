//! Change notifications: after a node writes shared state that every
//! node's control owner holds in memory (rooms with their bans and token
//! generations, issued tokens, alarms), it publishes a small message on
//! [`keys::CHANGES`]; every other node's listener turns it into a
//! [`Control::reload`] of just that.
//!
//! The write and its notice are two commands: if Redis goes away between
//! them, the notice is lost, but the listeners' connections broke too, and
//! a listener that reconnects reloads everything once. The owner knows
//! nothing of this: [`NotifyingStore`] wraps the store it writes through.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;
use vigil_control::alarm_log::AlarmRecord;
use vigil_control::camera::CameraSpec;
use vigil_control::issued::IssuedToken;
use vigil_control::reload::Reload;
use vigil_control::room::RoomSpec;
use vigil_control::store::{Secrets, Store, StoreError};
use vigil_control::{Control, RoomName, StreamName};

use super::keys;
use super::store::RedisStore;

/// Longest wait between two attempts to reach Redis again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One notice on [`keys::CHANGES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The node that wrote (which ignores its own notices).
    pub node: String,
    /// What it wrote.
    #[serde(flatten)]
    pub change: Change,
}

/// What a node wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Change {
    /// A room was created or changed (settings, bans, token generation).
    RoomUpdated {
        /// Its name.
        room: String,
    },
    /// A room was deleted.
    RoomDeleted {
        /// Its name.
        room: String,
    },
    /// Issued tokens were written (issued, revoked) or deleted.
    TokensChanged {
        /// Their ids.
        ids: Vec<String>,
    },
    /// Alarm records were written or deleted.
    AlarmsChanged {
        /// Their ids.
        ids: Vec<u64>,
    },
    /// A room's cameras changed. No node acts on it yet: which node pulls
    /// a camera is decided by the camera placement (docs/cluster.md).
    CamerasChanged {
        /// Its name.
        room: String,
    },
}

/// A [`RedisStore`] that tells the other nodes after each write.
pub struct NotifyingStore {
    inner: Arc<RedisStore>,
    node: String,
}

impl NotifyingStore {
    /// Wraps `inner` for the node `node`.
    pub fn new(inner: Arc<RedisStore>, node: String) -> NotifyingStore {
        NotifyingStore { inner, node }
    }

    fn notify(&self, change: Change) {
        let notice = Notice {
            node: self.node.clone(),
            change,
        };
        let Ok(message) = serde_json::to_string(&notice) else {
            return; // Strings and numbers always encode.
        };
        let sent = self
            .inner
            .link()
            .run(|c| redis::Commands::publish::<_, _, ()>(c, keys::CHANGES, message));
        if let Err(e) = sent {
            // Written but not told: the others reload everything when
            // their listeners reconnect (Redis was away for them too).
            tracing::warn!("cannot tell the other nodes of a change: {e}");
        }
    }
}

impl Store for NotifyingStore {
    fn put_room(&self, room: &RoomSpec) -> Result<(), StoreError> {
        self.inner.put_room(room)?;
        self.notify(Change::RoomUpdated {
            room: room.name.to_string(),
        });
        Ok(())
    }
    fn room(&self, name: &RoomName) -> Result<Option<RoomSpec>, StoreError> {
        self.inner.room(name)
    }
    fn rooms(&self) -> Result<Vec<RoomSpec>, StoreError> {
        self.inner.rooms()
    }
    fn delete_room(&self, name: &RoomName) -> Result<bool, StoreError> {
        let existed = self.inner.delete_room(name)?;
        self.notify(Change::RoomDeleted {
            room: name.to_string(),
        });
        Ok(existed)
    }
    fn next_event_id(&self) -> Result<u64, StoreError> {
        self.inner.next_event_id()
    }
    fn set_next_event_id(&self, next: u64) -> Result<(), StoreError> {
        self.inner.set_next_event_id(next)
    }
    fn alarms(&self) -> Result<Vec<AlarmRecord>, StoreError> {
        self.inner.alarms()
    }
    fn update_alarms(&self, put: &[AlarmRecord], delete: &[u64]) -> Result<(), StoreError> {
        self.inner.update_alarms(put, delete)?;
        let ids = put.iter().map(|a| a.id).chain(delete.iter().copied());
        self.notify(Change::AlarmsChanged { ids: ids.collect() });
        Ok(())
    }
    fn issued_tokens(&self) -> Result<Vec<IssuedToken>, StoreError> {
        self.inner.issued_tokens()
    }
    fn update_issued_tokens(
        &self,
        put: &[IssuedToken],
        delete: &[String],
    ) -> Result<(), StoreError> {
        self.inner.update_issued_tokens(put, delete)?;
        let ids = put
            .iter()
            .map(|t| t.id.clone())
            .chain(delete.iter().cloned());
        self.notify(Change::TokensChanged { ids: ids.collect() });
        Ok(())
    }
    fn cameras(&self) -> Result<Vec<CameraSpec>, StoreError> {
        self.inner.cameras()
    }
    fn put_camera(&self, camera: &CameraSpec) -> Result<(), StoreError> {
        self.inner.put_camera(camera)?;
        self.notify(Change::CamerasChanged {
            room: camera.room.to_string(),
        });
        Ok(())
    }
    fn delete_camera(&self, room: &RoomName, identity: &StreamName) -> Result<bool, StoreError> {
        let existed = self.inner.delete_camera(room, identity)?;
        self.notify(Change::CamerasChanged {
            room: room.to_string(),
        });
        Ok(existed)
    }
    fn shared(&self) -> bool {
        self.inner.shared()
    }
    fn issued_tokens_by_id(&self, ids: &[String]) -> Result<Vec<IssuedToken>, StoreError> {
        self.inner.issued_tokens_by_id(ids)
    }
    fn alarms_by_id(&self, ids: &[u64]) -> Result<Vec<AlarmRecord>, StoreError> {
        self.inner.alarms_by_id(ids)
    }
}

/// What a notice asks of this node's owner, if anything.
fn reload_for(change: Change) -> Option<Reload> {
    match change {
        Change::RoomUpdated { room } | Change::RoomDeleted { room } => {
            RoomName::new(&room).ok().map(Reload::Room)
        }
        Change::TokensChanged { ids } => Some(Reload::Tokens(ids)),
        Change::AlarmsChanged { ids } => Some(Reload::Alarms(ids)),
        Change::CamerasChanged { room } => RoomName::new(&room).ok().map(Reload::Cameras),
    }
}

/// The listener's settings.
pub struct Listener {
    /// The deployment's Redis.
    pub client: redis::Client,
    /// This node (its own notices are skipped).
    pub node: String,
    /// The secrets this node signs with when they are the deployment's
    /// (from Redis), written back if Redis lost them.
    pub secrets: Option<Secrets>,
}

impl Listener {
    /// Listens until the control plane stops: one task per node.
    pub fn spawn(self, control: Control) {
        tokio::spawn(async move {
            tokio::select! {
                () = control.stopped() => {}
                () = self.listen(&control) => {}
            }
        });
    }

    async fn listen(&self, control: &Control) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let mut pubsub = self.client.get_async_pubsub().await.ok();
            let subscribed = match pubsub.as_mut() {
                Some(pubsub) => pubsub.subscribe(keys::CHANGES).await.is_ok(),
                None => false,
            };
            match pubsub {
                Some(mut pubsub) if subscribed => {
                    backoff = Duration::from_millis(50);
                    // Notices may have been missed: while Redis was away,
                    // or, the first time, between loading the store at
                    // start and subscribing now.
                    self.catch_up(control).await;
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        self.handle(control, message.get_payload_bytes()).await;
                    }
                    tracing::warn!("lost the Redis change notices; reconnecting");
                }
                Some(_) | None => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn handle(&self, control: &Control, payload: &[u8]) {
        let notice: Notice = match serde_json::from_slice(payload) {
            Ok(notice) => notice,
            Err(e) => {
                tracing::warn!("ignoring a change notice that does not decode: {e}");
                return;
            }
        };
        if notice.node == self.node {
            return;
        }
        let Some(what) = reload_for(notice.change) else {
            return;
        };
        if let Err(e) = control.reload(what).await {
            tracing::warn!(from = %notice.node, "cannot apply another node's change: {e}");
        }
    }

    /// After a reconnect: reloads everything, writing this node's state
    /// back first if Redis lost its data ([`keys::SEEDED`] gone), then
    /// marks the data as there.
    async fn catch_up(&self, control: &Control) {
        let lost = match self.client.get_multiplexed_async_connection().await {
            Ok(mut c) => !c.exists::<_, bool>(keys::SEEDED).await.unwrap_or(true),
            Err(_) => false,
        };
        if lost && let Some(secrets) = &self.secrets {
            let client = self.client.clone();
            let secrets = secrets.clone();
            // Blocking calls: off the async threads.
            let restored =
                tokio::task::spawn_blocking(move || super::secrets::restore(&client, &secrets))
                    .await;
            if !matches!(restored, Ok(Ok(()))) {
                tracing::warn!("cannot write the shared secrets back to Redis");
            }
        }
        match control.reload(Reload::Everything { restore: lost }).await {
            Ok(closed) => tracing::info!(
                closed,
                lost,
                "reloaded the shared state on subscribing to change notices"
            ),
            Err(e) => tracing::warn!("cannot reload the shared state: {e}"),
        }
        if let Ok(mut c) = self.client.get_multiplexed_async_connection().await {
            // Lost again, the next reconnect says so.
            let _: Result<(), _> = c.set(keys::SEEDED, 1).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_small_flat_json() {
        let notice = Notice {
            node: "n1".into(),
            change: Change::RoomDeleted {
                room: "lobby".into(),
            },
        };
        let json = serde_json::to_string(&notice).unwrap();
        assert_eq!(
            json,
            r#"{"node":"n1","what":"room_deleted","room":"lobby"}"#
        );
        assert_eq!(serde_json::from_str::<Notice>(&json).unwrap(), notice);
        assert_eq!(
            reload_for(Change::TokensChanged {
                ids: vec!["a".into()]
            }),
            Some(Reload::Tokens(vec!["a".into()]))
        );
    }
}
