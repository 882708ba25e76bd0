//! One async connection to the deployment's Redis for this node's cluster
//! tasks (heartbeat, directory, commands), made again after it breaks.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisResult};
use tokio::sync::Mutex;

/// How long a connection attempt or a command may take: a Redis that does
/// not answer within it counts as away (the node keeps its sessions).
pub const TIMEOUT: Duration = Duration::from_millis(500);

/// A lazily (re)connected multiplexed connection.
pub struct Link {
    client: Client,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl Link {
    /// A link to `url`; nothing is connected yet.
    pub fn new(url: &str) -> RedisResult<Link> {
        Ok(Link {
            client: Client::open(url)?,
            conn: Mutex::new(None),
        })
    }

    /// The client, for pub/sub connections of its own.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The connection, connecting first if there is none. Clones share
    /// the one socket.
    pub async fn conn(&self) -> RedisResult<MultiplexedConnection> {
        let mut conn = self.conn.lock().await;
        if let Some(conn) = conn.as_ref() {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let made = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *conn = Some(made.clone());
        Ok(made)
    }

    /// Forgets the connection after an error, so the next call connects
    /// again (a multiplexed connection whose socket broke stays broken).
    pub async fn reset(&self) {
        *self.conn.lock().await = None;
    }

    /// Runs `f` on the connection; on an error the connection is dropped.
    pub async fn run<T, F, Fut>(&self, f: F) -> RedisResult<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let conn = self.conn().await?;
        let result = f(conn).await;
        if result.is_err() {
            self.reset().await;
        }
        result
    }
}
