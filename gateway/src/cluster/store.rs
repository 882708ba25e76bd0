//! [`RedisStore`]: the control plane's durable state in the hashes of
//! [`keys`], as the same JSON the embedded store writes.
//!
//! The [`Store`] trait is synchronous and called from the control owner's
//! task, as redb's disk writes are: one blocking connection behind a std
//! Mutex, with short timeouts so that Redis being away costs the owner at
//! most [`TIMEOUT`] now and then, never a hang. A failure drops the
//! connection (the next call connects again, at most once per
//! [`RETRY_AFTER`]: meanwhile calls fail at once) and becomes
//! [`StoreError::Unavailable`], which callers see as gRPC `UNAVAILABLE` or
//! HTTP 503.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::{Commands, Connection, RedisError};
use vigil_control::alarm_log::AlarmRecord;
use vigil_control::camera::CameraSpec;
use vigil_control::issued::IssuedToken;
use vigil_control::room::RoomSpec;
use vigil_control::store::{
    Store, StoreError, camera_key, decode, decode_alarm, decode_camera, decode_issued, encode,
};
use vigil_control::{RoomName, StreamName};

use super::keys;

/// Longest a connect, a read or a write waits for Redis.
pub const TIMEOUT: Duration = Duration::from_millis(500);

/// After a failure, how long calls fail at once before one connects again,
/// so that an unreachable Redis does not cost every call a timeout.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One blocking connection to Redis that reconnects after a failure.
pub struct Link {
    client: redis::Client,
    state: Mutex<LinkState>,
}

struct LinkState {
    connection: Option<Connection>,
    /// No connect before this, after a failure.
    retry_at: Option<Instant>,
}

impl Link {
    /// A link to the Redis at `url` (checked, not connected yet).
    pub fn new(url: &str) -> Result<Link, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Database(format!("bad --redis-url: {e}")))?;
        Ok(Link::from_client(client))
    }

    /// A link through `client`.
    pub fn from_client(client: redis::Client) -> Link {
        Link {
            client,
            state: Mutex::new(LinkState {
                connection: None,
                retry_at: None,
            }),
        }
    }

    /// The client it connects with.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // Poisoned: a panic inside redis-rs mid-command; the connection is
        // dropped below on the next error, the rest is two plain fields.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the connection (connecting first if needed). An error
    /// drops the connection: after a timeout or a broken pipe the
    /// protocol state is unknown.
    pub fn run<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, StoreError> {
        let mut state = self.lock();
        if state.connection.is_none() {
            if state.retry_at.is_some_and(|at| Instant::now() < at) {
                return Err(StoreError::Unavailable(
                    "Redis did not answer a moment ago (retrying shortly)".into(),
                ));
            }
            match self.connect() {
                Ok(connection) => {
                    state.connection = Some(connection);
                    state.retry_at = None;
                }
                Err(e) => {
                    state.retry_at = Some(Instant::now() + RETRY_AFTER);
                    return Err(unavailable(&e));
                }
            }
        }
        let connection = state.connection.as_mut().expect("connected above");
        match f(connection) {
            Ok(value) => Ok(value),
            Err(e) => {
                state.connection = None;
                if is_transient(&e) {
                    state.retry_at = Some(Instant::now() + RETRY_AFTER);
                    Err(unavailable(&e))
                } else {
                    Err(StoreError::Database(format!("Redis: {e}")))
                }
            }
        }
    }

    fn connect(&self) -> Result<Connection, RedisError> {
        let connection = self.client.get_connection_with_timeout(TIMEOUT)?;
        connection.set_read_timeout(Some(TIMEOUT))?;
        connection.set_write_timeout(Some(TIMEOUT))?;
        Ok(connection)
    }
}

/// Whether `e` says Redis is away (worth retrying) rather than that it
/// refused the command.
pub fn is_transient(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

fn unavailable(e: &RedisError) -> StoreError {
    StoreError::Unavailable(format!("Redis: {e}"))
}

/// The control plane's state in Redis.
pub struct RedisStore {
    link: Link,
}

impl RedisStore {
    /// A store on the Redis at `url`; fails unless Redis answers now.
    pub fn connect(url: &str) -> Result<RedisStore, StoreError> {
        let store = RedisStore {
            link: Link::new(url)?,
        };
        store.link.run(|c| redis::cmd("PING").query::<String>(c))?;
        Ok(store)
    }

    /// Its connection, for what shares it (change notifications).
    pub fn link(&self) -> &Link {
        &self.link
    }
}

fn encoding(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Database(format!("encoding {what}: {e}"))
}

/// Decodes every value of a hash with `decode`, in key order.
fn decode_all<T>(
    mut entries: Vec<(String, Vec<u8>)>,
    decode: impl Fn(&str, &[u8]) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.iter().map(|(k, v)| decode(k, v)).collect()
}

impl Store for RedisStore {
    fn put_room(&self, room: &RoomSpec) -> Result<(), StoreError> {
        let value = encode(room)?;
        self.link
            .run(|c| c.hset::<_, _, _, ()>(keys::ROOMS, room.name.as_str(), value))
    }

    fn room(&self, name: &RoomName) -> Result<Option<RoomSpec>, StoreError> {
        let value: Option<Vec<u8>> = self.link.run(|c| c.hget(keys::ROOMS, name.as_str()))?;
        value.map(|v| decode(name.as_str(), &v)).transpose()
    }

    fn rooms(&self) -> Result<Vec<RoomSpec>, StoreError> {
        // Sorted by key, which is `RoomName`'s order too.
        let entries = self.link.run(|c| c.hgetall(keys::ROOMS))?;
        decode_all(entries, decode)
    }

    fn delete_room(&self, name: &RoomName) -> Result<bool, StoreError> {
        let removed: u64 = self.link.run(|c| c.hdel(keys::ROOMS, name.as_str()))?;
        Ok(removed > 0)
    }

    /// Unused with Redis: [`super::bus::RedisBus`] numbers events with
    /// [`keys::EVENT_ID`]. Answers the id after that counter, which is
    /// what this means there too.
    fn next_event_id(&self) -> Result<u64, StoreError> {
        let last: Option<u64> = self.link.run(|c| c.get(keys::EVENT_ID))?;
        Ok(last.unwrap_or(0) + 1)
    }

    /// Unused with Redis (see [`RedisStore::next_event_id`]); raises the
    /// counter to `next - 1` if it is below, never lowers it.
    fn set_next_event_id(&self, next: u64) -> Result<(), StoreError> {
        let floor = next.saturating_sub(1);
        self.link.run(|c| {
            redis::Script::new(
                "if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then \
                 redis.call('SET', KEYS[1], ARGV[1]) end return 1",
            )
            .key(keys::EVENT_ID)
            .arg(floor)
            .invoke::<()>(c)
        })
    }

    fn alarms(&self) -> Result<Vec<AlarmRecord>, StoreError> {
        let entries: Vec<(u64, Vec<u8>)> = self.link.run(|c| c.hgetall(keys::ALARMS))?;
        let mut alarms = entries
            .iter()
            .map(|(id, v)| decode_alarm(*id, v))
            .collect::<Result<Vec<_>, _>>()?;
        alarms.sort_by_key(|a| a.id);
        Ok(alarms)
    }

    fn update_alarms(&self, put: &[AlarmRecord], delete: &[u64]) -> Result<(), StoreError> {
        let values = put
            .iter()
            .map(|a| serde_json::to_vec(a).map(|v| (a.id, v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| encoding("alarm", e))?;
        // One MULTI: all of it or none, as redb's one transaction.
        self.link.run(|c| {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (id, value) in &values {
                pipe.hset(keys::ALARMS, id, value).ignore();
            }
            if !delete.is_empty() {
                pipe.hdel(keys::ALARMS, delete).ignore();
            }
            pipe.query::<()>(c)
        })
    }

    fn issued_tokens(&self) -> Result<Vec<IssuedToken>, StoreError> {
        let entries = self.link.run(|c| c.hgetall(keys::TOKENS))?;
        decode_all(entries, decode_issued)
    }

    fn update_issued_tokens(
        &self,
        put: &[IssuedToken],
        delete: &[String],
    ) -> Result<(), StoreError> {
        let values = put
            .iter()
            .map(|t| serde_json::to_vec(t).map(|v| (t.id.as_str(), v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| encoding("issued token", e))?;
        self.link.run(|c| {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (id, value) in &values {
                pipe.hset(keys::TOKENS, *id, value).ignore();
            }
            if !delete.is_empty() {
                pipe.hdel(keys::TOKENS, delete).ignore();
            }
            pipe.query::<()>(c)
        })
    }

    fn cameras(&self) -> Result<Vec<CameraSpec>, StoreError> {
        let entries = self.link.run(|c| c.hgetall(keys::CAMERAS))?;
        decode_all(entries, decode_camera)
    }

    fn put_camera(&self, camera: &CameraSpec) -> Result<(), StoreError> {
        let value = serde_json::to_vec(camera).map_err(|e| encoding("camera", e))?;
        let key = camera_key(&camera.room, &camera.identity);
        self.link
            .run(|c| c.hset::<_, _, _, ()>(keys::CAMERAS, key, value))
    }

    fn delete_camera(&self, room: &RoomName, identity: &StreamName) -> Result<bool, StoreError> {
        let removed: u64 = self
            .link
            .run(|c| c.hdel(keys::CAMERAS, camera_key(room, identity)))?;
        Ok(removed > 0)
    }

    fn shared(&self) -> bool {
        true
    }

    fn issued_tokens_by_id(&self, ids: &[String]) -> Result<Vec<IssuedToken>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = self
            .link
            .run(|c| redis::cmd("HMGET").arg(keys::TOKENS).arg(ids).query(c))?;
        ids.iter()
            .zip(values)
            .filter_map(|(id, v)| v.map(|v| decode_issued(id, &v)))
            .collect()
    }

    fn alarms_by_id(&self, ids: &[u64]) -> Result<Vec<AlarmRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = self
            .link
            .run(|c| redis::cmd("HMGET").arg(keys::ALARMS).arg(ids).query(c))?;
        ids.iter()
            .zip(values)
            .filter_map(|(id, v)| v.map(|v| decode_alarm(*id, &v)))
            .collect()
    }
}
