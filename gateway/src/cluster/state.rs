//! A node's shared control-plane state, put together at start
//! ([`connect`]): the store, the event bus, the secrets and the listener
//! for other nodes' changes, all on the deployment's Redis
//! (docs/cluster-state.md).

use std::sync::Arc;

use vigil_control::Control;
use vigil_control::bus::EventBus;
use vigil_control::store::{Secrets, Store, StoreError};

use super::bus::RedisBus;
use super::changes::{Listener, NotifyingStore};
use super::keys;
use super::store::RedisStore;
use crate::config::ClusterConfig;

/// What [`connect`] made.
pub struct Shared {
    /// The store (writes tell the other nodes).
    pub store: Arc<dyn Store>,
    /// The event bus.
    pub bus: Arc<dyn EventBus>,
    /// The deployment's secrets when the configuration gives none, and
    /// whether this node created them (its first start, anywhere).
    pub secrets: Option<(Secrets, bool)>,
    listener: Listener,
}

/// Why a node could not join its deployment at start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot use Redis at {url} (--redis-url; it must be reachable when a node starts): {source}"
)]
pub struct ConnectError {
    /// `--redis-url`, without a password.
    pub url: String,
    /// What failed.
    pub source: StoreError,
}

/// Connects to the deployment's Redis; fails if it does not answer now
/// (a node that cannot reach it would serve rooms it does not know). With
/// `shared_secrets`, the secrets come from Redis too.
pub async fn connect(
    cluster: &ClusterConfig,
    shared_secrets: bool,
) -> Result<Shared, ConnectError> {
    let failed = |source| ConnectError {
        url: redacted(&cluster.redis_url),
        source,
    };
    let url = cluster.redis_url.clone();
    // Blocking connects: off the async threads.
    let (store, secrets) = tokio::task::spawn_blocking(move || {
        let store = RedisStore::connect(&url)?;
        let secrets = if shared_secrets {
            Some(super::secrets::shared(store.link())?)
        } else {
            None
        };
        // The data is here from now on (see keys::SEEDED).
        store
            .link()
            .run(|c| redis::cmd("SET").arg(keys::SEEDED).arg(1).query::<()>(c))?;
        Ok::<_, StoreError>((store, secrets))
    })
    .await
    .map_err(|e| failed(StoreError::Database(format!("connecting: {e}"))))?
    .map_err(failed)?;
    let client = store.link().client().clone();
    let bus = RedisBus::start(client.clone()).await.map_err(failed)?;
    let store = Arc::new(store);
    Ok(Shared {
        store: Arc::new(NotifyingStore::new(store, cluster.node_id.clone())),
        bus: Arc::new(bus),
        listener: Listener {
            client,
            node: cluster.node_id.clone(),
            secrets: secrets.as_ref().map(|(s, _)| s.clone()),
        },
        secrets,
    })
}

impl Shared {
    /// Starts applying the other nodes' changes to `control`, until it
    /// stops.
    pub fn listen(self, control: &Control) {
        self.listener.spawn(control.clone());
    }
}

/// `url` without the password it may carry, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}
