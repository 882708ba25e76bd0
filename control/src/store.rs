//! Durable state of the control plane: managed rooms, their alarms (see
//! [`crate::alarm_log`]), the tokens issued (see [`crate::issued`]) and the
//! server secrets.
//!
//! Rooms live behind the [`Store`] trait so the embedded [`RedbStore`] (one
//! file in the data directory) can be swapped for a shared one (Redis) when
//! several nodes serve the same rooms. Live sessions are not stored: they die
//! with the process that holds their peer connections.
//!
//! The methods are blocking: a redb commit waits for `fsync`. They are called
//! on admin operations, never per packet.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::alarm_log::AlarmRecord;
use crate::camera::CameraSpec;
use crate::issued::IssuedToken;
use crate::names::{RoomName, StreamName};
use crate::room::RoomSpec;

/// Room name -> `serde_json` of its [`RoomSpec`]. JSON rather than a binary
/// format so a field added to `RoomSpec` with a serde default reads old rows.
const ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("rooms");

/// Alarm id (the id of the event that raised it) -> `serde_json` of its
/// [`AlarmRecord`], JSON for the same reason as [`ROOMS`].
const ALARMS: TableDefinition<u64, &[u8]> = TableDefinition::new("alarms");

/// Token id -> `serde_json` of its [`IssuedToken`], JSON for the same
/// reason as [`ROOMS`].
const ISSUED_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("issued_tokens");

/// `room/identity` (neither name can hold a `/`) -> `serde_json` of its
/// [`CameraSpec`], JSON for the same reason as [`ROOMS`]. The password is
/// in it: the data directory is private to the server (mode 0700).
const CAMERAS: TableDefinition<&str, &[u8]> = TableDefinition::new("cameras");

/// The key of `room`'s camera `identity` in [`CAMERAS`] (and in a shared
/// store's camera hash).
pub fn camera_key(room: &RoomName, identity: &StreamName) -> String {
    format!("{room}/{identity}")
}

/// Counters that outlive a process: [`NEXT_EVENT_ID`].
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The key in [`META`] of the first event id no earlier run handed out.
const NEXT_EVENT_ID: &str = "next_event_id";

/// File holding the admin key, in the data directory.
pub const ADMIN_KEY_FILE: &str = "admin.key";
/// File holding the token signing secret (hex), in the data directory.
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// Shortest signing secret accepted from disk: HS256 wants a key at least as
/// long as its hash (RFC 7518 §3.2).
const MIN_SIGNING_SECRET_LEN: usize = 32;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file of the data directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The database refused an operation (locked by another process, disk
    /// full, I/O error underneath); kept as text so callers do not depend on
    /// the backend's error types.
    #[error("database error: {0}")]
    Database(String),
    /// Stored data could not be read back: a value that does not decode, or a
    /// secret file that was edited or truncated.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A shared store (Redis) did not answer in time or refused the
    /// connection: a passing condition, worth retrying (gRPC `UNAVAILABLE`,
    /// HTTP 503 with `Retry-After`).
    #[error("shared store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    fn io(path: &Path, source: io::Error) -> Self {
        StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Every redb error type converts into `redb::Error`; this keeps the `?`s in
/// `RedbStore` short without exposing redb in `StoreError`.
impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

macro_rules! from_redb {
    ($($ty:ty),*) => {$(
        impl From<$ty> for StoreError {
            fn from(e: $ty) -> Self {
                StoreError::from(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Server secrets, created on first start.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    /// Bearer key of the admin API, printable (hex).
    pub admin_key: String,
    /// HS256 secret for participant tokens.
    pub signing_secret: Vec<u8>,
}

impl Secrets {
    /// Whether `candidate` is the admin key, compared in constant time so the
    /// key cannot be guessed byte by byte from response times.
    pub fn is_admin_key(&self, candidate: &str) -> bool {
        let (a, b) = (self.admin_key.as_bytes(), candidate.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("admin_key", &"<redacted>")
            .field("signing_secret", &"<redacted>")
            .finish()
    }
}

/// Durable state of the control plane. Implementations are shared across tasks.
pub trait Store: Send + Sync + 'static {
    /// Inserts `room`, or replaces the room of the same name.
    fn put_room(&self, room: &RoomSpec) -> Result<(), StoreError>;
    /// The room named `name`, if there is one.
    fn room(&self, name: &RoomName) -> Result<Option<RoomSpec>, StoreError>;
    /// All rooms, sorted by name.
    fn rooms(&self) -> Result<Vec<RoomSpec>, StoreError>;
    /// Deletes the room named `name`; returns whether it existed.
    fn delete_room(&self, name: &RoomName) -> Result<bool, StoreError>;
    /// The first event id that no earlier run may have handed out (1 on a
    /// fresh store). See [`crate::bus::MemoryBus::resuming`].
    fn next_event_id(&self) -> Result<u64, StoreError>;
    /// Records that ids below `next` may have been handed out.
    fn set_next_event_id(&self, next: u64) -> Result<(), StoreError>;
    /// Every alarm kept, by id.
    fn alarms(&self) -> Result<Vec<AlarmRecord>, StoreError>;
    /// Inserts or replaces the alarms `put` and deletes those with the ids
    /// `delete`, in one write.
    fn update_alarms(&self, put: &[AlarmRecord], delete: &[u64]) -> Result<(), StoreError>;
    /// Every issued token kept (see [`crate::issued`]).
    fn issued_tokens(&self) -> Result<Vec<IssuedToken>, StoreError>;
    /// Inserts or replaces the tokens `put` and deletes those with the ids
    /// `delete`, in one write.
    fn update_issued_tokens(
        &self,
        put: &[IssuedToken],
        delete: &[String],
    ) -> Result<(), StoreError>;
    /// Every camera (AddCamera), by room and identity.
    fn cameras(&self) -> Result<Vec<CameraSpec>, StoreError>;
    /// Inserts `camera`, or replaces its room's camera of the same identity.
    fn put_camera(&self, camera: &CameraSpec) -> Result<(), StoreError>;
    /// Deletes `room`'s camera `identity`; returns whether it existed.
    fn delete_camera(&self, room: &RoomName, identity: &StreamName) -> Result<bool, StoreError>;
    /// Whether other processes (nodes) write this store too: then an alarm
    /// left active in it may be another node's live one, not one that died
    /// with an earlier run of this process.
    fn shared(&self) -> bool {
        false
    }
    /// The issued tokens of these ids that are kept (a change another node
    /// made, re-read). A shared store reads just those.
    fn issued_tokens_by_id(&self, ids: &[String]) -> Result<Vec<IssuedToken>, StoreError> {
        let mut tokens = self.issued_tokens()?;
        tokens.retain(|t| ids.contains(&t.id));
        Ok(tokens)
    }
    /// The alarms of these ids that are kept (see
    /// [`issued_tokens_by_id`](Self::issued_tokens_by_id)).
    fn alarms_by_id(&self, ids: &[u64]) -> Result<Vec<AlarmRecord>, StoreError> {
        let mut alarms = self.alarms()?;
        alarms.retain(|a| ids.contains(&a.id));
        Ok(alarms)
    }
}

/// The embedded store: one redb file.
pub struct RedbStore {
    db: Database,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the database file at `path`, creating it if missing (its
    /// directory must exist). Fails if another process has it open.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)
            .map_err(|e| StoreError::Database(format!("cannot open {}: {e}", path.display())))?;
        // Create the table now so read transactions never meet a missing one.
        let tx = db.begin_write()?;
        tx.open_table(ROOMS)?;
        tx.open_table(ALARMS)?;
        tx.open_table(ISSUED_TOKENS)?;
        tx.open_table(CAMERAS)?;
        tx.open_table(META)?;
        tx.commit()?;
        Ok(RedbStore { db })
    }
}

/// `room` as every store keeps it: `serde_json`.
pub fn encode(room: &RoomSpec) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(room).map_err(|e| StoreError::Database(format!("encoding room: {e}")))
}

/// The room stored under the name `key`, checked to be named so.
pub fn decode(key: &str, bytes: &[u8]) -> Result<RoomSpec, StoreError> {
    let room: RoomSpec = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("room {key:?}: {e}")))?;
    // The key is the name; a row whose value names another room was not
    // written by `put_room`.
    if room.name.as_str() != key {
        return Err(StoreError::Corrupt(format!(
            "room {key:?} is stored under another name ({})",
            room.name
        )));
    }
    Ok(room)
}

impl Store for RedbStore {
    fn put_room(&self, room: &RoomSpec) -> Result<(), StoreError> {
        let value = encode(room)?;
        let tx = self.db.begin_write()?;
        {
            // The table borrows the transaction; it must be gone before commit.
            let mut table = tx.open_table(ROOMS)?;
            table.insert(room.name.as_str(), value.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    fn room(&self, name: &RoomName) -> Result<Option<RoomSpec>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ROOMS)?;
        let Some(value) = table.get(name.as_str())? else {
            return Ok(None);
        };
        decode(name.as_str(), value.value()).map(Some)
    }

    fn rooms(&self) -> Result<Vec<RoomSpec>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ROOMS)?;
        // Keys are room names and redb orders `&str` keys bytewise, which is
        // `RoomName`'s order too: the result comes out sorted.
        table
            .iter()?
            .map(|entry| {
                let (key, value) = entry?;
                decode(key.value(), value.value())
            })
            .collect()
    }

    fn delete_room(&self, name: &RoomName) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let existed = {
            let mut table = tx.open_table(ROOMS)?;
            table.remove(name.as_str())?.is_some()
        };
        tx.commit()?;
        Ok(existed)
    }

    fn next_event_id(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(META)?;
        Ok(table.get(NEXT_EVENT_ID)?.map_or(1, |v| v.value()))
    }

    fn set_next_event_id(&self, next: u64) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(META)?;
            table.insert(NEXT_EVENT_ID, next)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn alarms(&self) -> Result<Vec<AlarmRecord>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ALARMS)?;
        table
            .iter()?
            .map(|entry| {
                let (key, value) = entry?;
                decode_alarm(key.value(), value.value())
            })
            .collect()
    }

    fn update_alarms(&self, put: &[AlarmRecord], delete: &[u64]) -> Result<(), StoreError> {
        let values = put
            .iter()
            .map(|alarm| {
                serde_json::to_vec(alarm)
                    .map(|value| (alarm.id, value))
                    .map_err(|e| StoreError::Database(format!("encoding alarm: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(ALARMS)?;
            for (id, value) in &values {
                table.insert(id, value.as_slice())?;
            }
            for id in delete {
                table.remove(id)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn issued_tokens(&self) -> Result<Vec<IssuedToken>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(ISSUED_TOKENS)?;
        table
            .iter()?
            .map(|entry| {
                let (key, value) = entry?;
                decode_issued(key.value(), value.value())
            })
            .collect()
    }

    fn update_issued_tokens(
        &self,
        put: &[IssuedToken],
        delete: &[String],
    ) -> Result<(), StoreError> {
        let values = put
            .iter()
            .map(|token| {
                serde_json::to_vec(token)
                    .map(|value| (token.id.as_str(), value))
                    .map_err(|e| StoreError::Database(format!("encoding issued token: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(ISSUED_TOKENS)?;
            for (id, value) in &values {
                table.insert(*id, value.as_slice())?;
            }
            for id in delete {
                table.remove(id.as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn cameras(&self) -> Result<Vec<CameraSpec>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(CAMERAS)?;
        table
            .iter()?
            .map(|entry| {
                let (key, value) = entry?;
                decode_camera(key.value(), value.value())
            })
            .collect()
    }

    fn put_camera(&self, camera: &CameraSpec) -> Result<(), StoreError> {
        let value = serde_json::to_vec(camera)
            .map_err(|e| StoreError::Database(format!("encoding camera: {e}")))?;
        let key = camera_key(&camera.room, &camera.identity);
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(CAMERAS)?;
            table.insert(key.as_str(), value.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    fn delete_camera(&self, room: &RoomName, identity: &StreamName) -> Result<bool, StoreError> {
        let key = camera_key(room, identity);
        let tx = self.db.begin_write()?;
        let existed = {
            let mut table = tx.open_table(CAMERAS)?;
            table.remove(key.as_str())?.is_some()
        };
        tx.commit()?;
        Ok(existed)
    }
}

/// The camera stored under `key` ([`camera_key`]), checked to be its.
pub fn decode_camera(key: &str, bytes: &[u8]) -> Result<CameraSpec, StoreError> {
    // The error names the key only: the value holds a password.
    let camera: CameraSpec = serde_json::from_slice(bytes).map_err(|e| {
        StoreError::Corrupt(format!(
            "camera {key}: {:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    if camera_key(&camera.room, &camera.identity) != key {
        return Err(StoreError::Corrupt(format!(
            "camera {key} is stored under another key"
        )));
    }
    Ok(camera)
}

/// The issued token stored under the id `key`, checked to be its.
pub fn decode_issued(key: &str, bytes: &[u8]) -> Result<IssuedToken, StoreError> {
    let token: IssuedToken = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("issued token {key}: {e}")))?;
    if token.id != key {
        return Err(StoreError::Corrupt(format!(
            "issued token {key} is stored under another id ({})",
            token.id
        )));
    }
    Ok(token)
}

/// The alarm stored under the id `key`, checked to be its.
pub fn decode_alarm(key: u64, bytes: &[u8]) -> Result<AlarmRecord, StoreError> {
    let alarm: AlarmRecord = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("alarm {key}: {e}")))?;
    if alarm.id != key {
        return Err(StoreError::Corrupt(format!(
            "alarm {key} is stored under another id ({})",
            alarm.id
        )));
    }
    Ok(alarm)
}

/// An in-memory store for tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    // A std Mutex is fine: it is held only for a map operation, never across
    // an `.await`, and this store serves tests, not traffic.
    rooms: Mutex<BTreeMap<RoomName, RoomSpec>>,
    next_event_id: Mutex<Option<u64>>,
    alarms: Mutex<BTreeMap<u64, AlarmRecord>>,
    issued: Mutex<BTreeMap<String, IssuedToken>>,
    cameras: Mutex<BTreeMap<(RoomName, StreamName), CameraSpec>>,
}

impl MemoryStore {
    fn rooms_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<RoomName, RoomSpec>> {
        // A panic elsewhere cannot leave the map half-updated (each operation
        // is a single map call), so a poisoned lock is still safe to use.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn put_room(&self, room: &RoomSpec) -> Result<(), StoreError> {
        self.rooms_map().insert(room.name.clone(), room.clone());
        Ok(())
    }

    fn room(&self, name: &RoomName) -> Result<Option<RoomSpec>, StoreError> {
        Ok(self.rooms_map().get(name).cloned())
    }

    fn rooms(&self) -> Result<Vec<RoomSpec>, StoreError> {
        Ok(self.rooms_map().values().cloned().collect())
    }

    fn delete_room(&self, name: &RoomName) -> Result<bool, StoreError> {
        Ok(self.rooms_map().remove(name).is_some())
    }

    fn next_event_id(&self) -> Result<u64, StoreError> {
        let next = self
            .next_event_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(next.unwrap_or(1))
    }

    fn set_next_event_id(&self, next: u64) -> Result<(), StoreError> {
        *self
            .next_event_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(next);
        Ok(())
    }

    fn alarms(&self) -> Result<Vec<AlarmRecord>, StoreError> {
        let alarms = self.alarms.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(alarms.values().cloned().collect())
    }

    fn update_alarms(&self, put: &[AlarmRecord], delete: &[u64]) -> Result<(), StoreError> {
        let mut alarms = self.alarms.lock().unwrap_or_else(PoisonError::into_inner);
        for alarm in put {
            alarms.insert(alarm.id, alarm.clone());
        }
        for id in delete {
            alarms.remove(id);
        }
        Ok(())
    }

    fn issued_tokens(&self) -> Result<Vec<IssuedToken>, StoreError> {
        let issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(issued.values().cloned().collect())
    }

    fn update_issued_tokens(
        &self,
        put: &[IssuedToken],
        delete: &[String],
    ) -> Result<(), StoreError> {
        let mut issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        for token in put {
            issued.insert(token.id.clone(), token.clone());
        }
        for id in delete {
            issued.remove(id);
        }
        Ok(())
    }

    fn cameras(&self) -> Result<Vec<CameraSpec>, StoreError> {
        let cameras = self.cameras.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(cameras.values().cloned().collect())
    }

    fn put_camera(&self, camera: &CameraSpec) -> Result<(), StoreError> {
        let mut cameras = self.cameras.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (camera.room.clone(), camera.identity.clone());
        cameras.insert(key, camera.clone());
        Ok(())
    }

    fn delete_camera(&self, room: &RoomName, identity: &StreamName) -> Result<bool, StoreError> {
        let mut cameras = self.cameras.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(cameras.remove(&(room.clone(), identity.clone())).is_some())
    }
}

/// Loads the secrets from `dir` (files [`ADMIN_KEY_FILE`] and
/// [`SIGNING_KEY_FILE`]), or creates them on first start: 32 random bytes
/// each, written as hex with mode 0600 (`dir` is created with mode 0700 if
/// missing). Returns the secrets and which of them were just created.
///
/// Each file is handled on its own, so a start interrupted between the two
/// writes completes on the next one. Existing files are never rewritten.
pub fn load_or_create_secrets(dir: &Path) -> Result<(Secrets, Created), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::io(dir, e))?;

    let admin_path = admin_key_path(dir);
    let (admin_text, admin_created) = load_or_create(&admin_path)?;
    check_admin_key(&admin_path, &admin_text)?;

    let signing_path = dir.join(SIGNING_KEY_FILE);
    let (signing_text, signing_created) = load_or_create(&signing_path)?;
    let signing_secret = match hex_decode(&signing_text) {
        Some(bytes) if bytes.len() >= MIN_SIGNING_SECRET_LEN => bytes,
        _ => {
            return Err(StoreError::Corrupt(format!(
                "{} must hold at least {MIN_SIGNING_SECRET_LEN} bytes as hex",
                signing_path.display()
            )));
        }
    };

    let secrets = Secrets {
        admin_key: admin_text,
        signing_secret,
    };
    let created = Created {
        admin_key: admin_created,
        signing_secret: signing_created,
    };
    Ok((secrets, created))
}

/// Which secrets [`load_or_create_secrets`] wrote (first start, or a file
/// removed since). The admin key is shown to the operator only when just
/// created: after that it is in its file, not in every start's output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Created {
    /// The admin key file.
    pub admin_key: bool,
    /// The token signing secret file.
    pub signing_secret: bool,
}

impl Created {
    /// Whether any was.
    pub fn any(self) -> bool {
        self.admin_key || self.signing_secret
    }
}

/// Where the server of data directory `dir` keeps its admin key.
pub fn admin_key_path(dir: &Path) -> PathBuf {
    dir.join(ADMIN_KEY_FILE)
}

/// The admin key stored in data directory `dir`, without creating anything:
/// `None` if there is none (a server that never started there, or one run
/// with `--insecure-no-auth`). For tools that act as the operator, such as
/// `vigil ctl`.
pub fn read_admin_key(dir: &Path) -> Result<Option<String>, StoreError> {
    let path = admin_key_path(dir);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    check_admin_key(&path, &text)?;
    Ok(Some(text))
}

/// The admin key is used as typed, so any printable text an operator put in
/// its file is accepted as is; anything else means the file was damaged.
fn check_admin_key(path: &Path, text: &str) -> Result<(), StoreError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(StoreError::Corrupt(format!(
            "{} must hold one line of printable ASCII",
            path.display()
        )));
    }
    Ok(())
}

/// Reads the trimmed text of `path`, or writes 32 fresh random bytes there as
/// hex. Returns the text and whether it was just created.
fn load_or_create(path: &Path) -> Result<(String, bool), StoreError> {
    match fs::read_to_string(path) {
        Ok(text) => return Ok((text.trim().to_owned(), false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(path, e)),
    }
    let text = hex_encode(&rand::random::<[u8; 32]>());
    write_new_secret(path, &text)?;
    Ok((text, true))
}

/// Writes `text` to `path` atomically: a crash leaves either no file or the
/// whole file, never an empty one that would fail every later start.
fn write_new_secret(path: &Path, text: &str) -> Result<(), StoreError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        // `create_new` so a leftover file with looser permissions is never
        // reused; mode 0600 applies from the first byte written.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| StoreError::io(&tmp, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(|e| StoreError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))
    })();
    if result.is_err() {
        // Best effort: the error being returned matters more than the leftover.
        let _ = fs::remove_file(&tmp);
    }
    result?;
    // Make the rename itself durable.
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(dir, e))?;
    }
    Ok(())
}

/// `bytes` in lowercase hex, as secrets are kept.
pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of `text` in hex; `None` unless it is hex, whole bytes.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    // Checked up front: `from_str_radix` alone would also accept a `+` sign.
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::room::{AlarmRules, Limits};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("vigil-control-{test}-{}-{n}", std::process::id()));
            // A leftover of an earlier run with the same pid would skew the test.
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            // Cleanup only; a failure leaves a directory in /tmp, nothing worse.
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn spec(name: &str, max_viewers: Option<u32>) -> RoomSpec {
        RoomSpec {
            name: RoomName::new(name).unwrap(),
            limits: Limits {
                max_publishers: Some(4),
                max_viewers,
            },
            alarms: AlarmRules {
                stall_after: Duration::from_millis(2500),
                ..AlarmRules::default()
            },
            created_at_ms: 1_700_000_000_000,
            incarnation: 0x1234_5678_9abc,
            token_generation: 0,
            bans: Default::default(),
        }
    }

    fn name(n: &str) -> RoomName {
        RoomName::new(n).unwrap()
    }

    /// One sequence of operations, run against every implementation.
    fn exercise(store: &dyn Store) {
        assert_eq!(store.rooms().unwrap(), vec![]);
        assert_eq!(store.room(&name("lobby")).unwrap(), None);

        store.put_room(&spec("lobby", None)).unwrap();
        store.put_room(&spec("b-room", Some(10))).unwrap();
        store.put_room(&spec("Zeta", None)).unwrap();
        assert_eq!(
            store.room(&name("lobby")).unwrap(),
            Some(spec("lobby", None))
        );
        let names: Vec<String> = store
            .rooms()
            .unwrap()
            .into_iter()
            .map(|r| r.name.to_string())
            .collect();
        assert_eq!(names, ["Zeta", "b-room", "lobby"]);

        // Replacing keeps one entry, with the new value.
        store.put_room(&spec("lobby", Some(3))).unwrap();
        assert_eq!(store.rooms().unwrap().len(), 3);
        assert_eq!(
            store.room(&name("lobby")).unwrap(),
            Some(spec("lobby", Some(3)))
        );

        assert!(store.delete_room(&name("lobby")).unwrap());
        assert!(!store.delete_room(&name("lobby")).unwrap());
        assert_eq!(store.room(&name("lobby")).unwrap(), None);
        assert_eq!(
            store.rooms().unwrap(),
            vec![spec("Zeta", None), spec("b-room", Some(10))]
        );

        assert_eq!(store.alarms().unwrap(), vec![]);
        store
            .update_alarms(&[alarm(12, None), alarm(3, None)], &[])
            .unwrap();
        // Replaced, deleted, and a missing id deleted: one write.
        store
            .update_alarms(&[alarm(12, Some(1_700_000_009_000))], &[3, 99])
            .unwrap();
        assert_eq!(
            store.alarms().unwrap(),
            vec![alarm(12, Some(1_700_000_009_000))]
        );

        assert_eq!(store.issued_tokens().unwrap(), vec![]);
        store
            .update_issued_tokens(&[issued("a", None), issued("b", None)], &[])
            .unwrap();
        store
            .update_issued_tokens(&[issued("b", Some(5))], &["a".into(), "zz".into()])
            .unwrap();
        assert_eq!(store.issued_tokens().unwrap(), vec![issued("b", Some(5))]);

        assert_eq!(store.cameras().unwrap(), vec![]);
        let gate = camera("b-room", "gate", "rtsp://10.0.0.7/s1");
        store.put_camera(&gate).unwrap();
        store
            .put_camera(&camera("Zeta", "gate", "rtsp://10.0.0.8/"))
            .unwrap();
        let moved = camera("b-room", "gate", "rtsp://10.0.0.9/s2");
        store.put_camera(&moved).unwrap();
        let mut cameras = store.cameras().unwrap();
        cameras.sort_by(|a, b| (&a.room, &a.identity).cmp(&(&b.room, &b.identity)));
        assert_eq!(
            cameras,
            vec![camera("Zeta", "gate", "rtsp://10.0.0.8/"), moved.clone()]
        );
        assert_eq!(cameras[1].password, "secret", "the password is stored");
        assert!(store.delete_camera(&name("Zeta"), &gate.identity).unwrap());
        assert!(!store.delete_camera(&name("Zeta"), &gate.identity).unwrap());
        assert_eq!(store.cameras().unwrap(), vec![moved]);
    }

    fn camera(room: &str, identity: &str, url: &str) -> CameraSpec {
        CameraSpec {
            room: name(room),
            identity: StreamName::new(identity).unwrap(),
            url: url.into(),
            username: "admin".into(),
            password: "secret".into(),
            transport: crate::camera::CameraTransport::Udp,
            on_demand: true,
            created_at_ms: 1_700_000_000_000,
        }
    }

    fn issued(id: &str, revoked_at_ms: Option<u64>) -> IssuedToken {
        IssuedToken {
            id: id.into(),
            room: name("lobby"),
            incarnation: 9,
            identity: "cam-1".into(),
            expires_at: 1_700_000_000,
            revoked_at_ms,
        }
    }

    fn alarm(id: u64, cleared_at_ms: Option<u64>) -> AlarmRecord {
        AlarmRecord {
            id,
            room: name("lobby"),
            alarm: crate::event::Alarm::Stream(crate::alarms::AlarmKind::KeyframeInterval),
            stream: Some(crate::names::StreamName::new("cam-1").unwrap()),
            identity: Some("cam-1".into()),
            detail: "a keyframe asked for 5.0 s ago has not come".into(),
            raised_at_ms: 1_700_000_000_000,
            cleared_at_ms,
            acknowledged: Some(crate::alarm_log::Acknowledgement {
                by: "dispatcher-1".into(),
                at_ms: 1_700_000_001_000,
            }),
        }
    }

    #[test]
    fn memory_store_round_trips() {
        exercise(&MemoryStore::default());
    }

    #[test]
    fn redb_store_round_trips() {
        let dir = TempDir::new("redb-round-trip");
        fs::create_dir_all(&dir.0).unwrap();
        exercise(&RedbStore::open(&dir.0.join("vigil.redb")).unwrap());
    }

    #[test]
    fn redb_store_survives_reopening() {
        let dir = TempDir::new("redb-reopen");
        fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("vigil.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            store.put_room(&spec("lobby", Some(7))).unwrap();
            store.put_room(&spec("gone", None)).unwrap();
            assert!(store.delete_room(&name("gone")).unwrap());
            store.update_alarms(&[alarm(5, None)], &[]).unwrap();
            store
                .update_issued_tokens(&[issued("t", Some(3))], &[])
                .unwrap();
            store
                .put_camera(&camera("lobby", "gate", "rtsp://cam/"))
                .unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.rooms().unwrap(), vec![spec("lobby", Some(7))]);
        assert_eq!(store.alarms().unwrap(), vec![alarm(5, None)]);
        assert_eq!(store.issued_tokens().unwrap(), vec![issued("t", Some(3))]);
        assert_eq!(
            store.cameras().unwrap(),
            vec![camera("lobby", "gate", "rtsp://cam/")]
        );
    }

    #[test]
    fn redb_store_is_locked_while_open() {
        let dir = TempDir::new("redb-locked");
        fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("vigil.redb");
        let _store = RedbStore::open(&path).unwrap();
        assert!(matches!(
            RedbStore::open(&path),
            Err(StoreError::Database(_))
        ));
    }

    /// A store at a new path in `dir` whose rooms table holds `rows` as
    /// they are, written beside the store's own code.
    fn store_with_raw_rooms(dir: &TempDir, rows: &[(&str, &[u8])]) -> std::path::PathBuf {
        fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("vigil.redb");
        drop(RedbStore::open(&path).unwrap());
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut table = tx.open_table(ROOMS).unwrap();
            for (key, row) in rows {
                table.insert(*key, *row).unwrap();
            }
        }
        tx.commit().unwrap();
        path
    }

    #[test]
    fn redb_store_reports_corrupt_values() {
        let dir = TempDir::new("redb-corrupt");
        // Valid JSON, but under the wrong key.
        let moved = serde_json::to_vec(&spec("elsewhere", None)).unwrap();
        let path =
            store_with_raw_rooms(&dir, &[("broken", &[0xff, 0x00, b'{']), ("moved", &moved)]);
        let store = RedbStore::open(&path).unwrap();
        for key in ["broken", "moved"] {
            assert!(
                matches!(store.room(&name(key)), Err(StoreError::Corrupt(_))),
                "{key}"
            );
        }
        assert!(matches!(store.rooms(), Err(StoreError::Corrupt(_))));
        // A corrupt row can still be deleted, which is how an operator recovers.
        assert!(store.delete_room(&name("broken")).unwrap());
    }

    #[test]
    fn a_room_stored_before_incarnations_has_incarnation_zero() {
        let dir = TempDir::new("redb-legacy-room");
        let row = br#"{"name":"lobby","limits":{"max_publishers":null,"max_viewers":2},"alarms":{"stall_after":3000,"min_bitrate_bps":50000,"max_keyframe_interval":5000},"created_at_ms":1700000000000}"#;
        let path = store_with_raw_rooms(&dir, &[("lobby", row)]);
        let room = RedbStore::open(&path)
            .unwrap()
            .room(&name("lobby"))
            .unwrap()
            .unwrap();
        assert_eq!(room.incarnation, 0);
        assert_eq!(room.limits.max_viewers, Some(2));
    }

    #[test]
    fn secrets_are_created_once_with_private_modes() {
        let tmp = TempDir::new("secrets");
        let dir = tmp.0.join("data");
        let (first, created) = load_or_create_secrets(&dir).unwrap();
        assert_eq!(
            created,
            Created {
                admin_key: true,
                signing_secret: true
            }
        );
        assert_eq!(first.signing_secret.len(), 32);
        assert_eq!(first.admin_key.len(), 64);
        assert!(first.admin_key.bytes().all(|b| b.is_ascii_hexdigit()));

        let (second, created) = load_or_create_secrets(&dir).unwrap();
        assert!(!created.any());
        assert_eq!(first, second);

        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(ADMIN_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join(SIGNING_KEY_FILE)), 0o600);
        // No temporary files left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
    }

    #[test]
    fn a_missing_secret_file_is_recreated_alone() {
        let tmp = TempDir::new("secrets-partial");
        let (first, _) = load_or_create_secrets(&tmp.0).unwrap();
        fs::remove_file(tmp.0.join(SIGNING_KEY_FILE)).unwrap();
        let (second, created) = load_or_create_secrets(&tmp.0).unwrap();
        assert!(created.signing_secret && !created.admin_key, "{created:?}");
        assert_eq!(first.admin_key, second.admin_key);
        assert_ne!(first.signing_secret, second.signing_secret);
    }

    #[test]
    fn edited_secret_files_are_corrupt() {
        let tmp = TempDir::new("secrets-corrupt");
        load_or_create_secrets(&tmp.0).unwrap();
        let signing = tmp.0.join(SIGNING_KEY_FILE);
        for bad in ["", "zz", "abc", "00ff"] {
            fs::write(&signing, bad).unwrap();
            assert!(
                matches!(load_or_create_secrets(&tmp.0), Err(StoreError::Corrupt(_))),
                "{bad:?}"
            );
        }
        fs::write(&signing, format!("{}\n", "ab".repeat(32))).unwrap();
        fs::write(tmp.0.join(ADMIN_KEY_FILE), "two words\n").unwrap();
        assert!(matches!(
            load_or_create_secrets(&tmp.0),
            Err(StoreError::Corrupt(_))
        ));
        fs::write(tmp.0.join(ADMIN_KEY_FILE), "operator-chosen-key\n").unwrap();
        let (secrets, created) = load_or_create_secrets(&tmp.0).unwrap();
        assert!(!created.any());
        assert_eq!(secrets.admin_key, "operator-chosen-key");
        assert_eq!(secrets.signing_secret, vec![0xab; 32]);
    }

    #[test]
    fn reading_the_admin_key_creates_nothing() {
        let tmp = TempDir::new("read-admin-key");
        assert!(read_admin_key(&tmp.0).unwrap().is_none());
        assert!(!admin_key_path(&tmp.0).exists());
        let (secrets, _) = load_or_create_secrets(&tmp.0).unwrap();
        assert_eq!(
            read_admin_key(&tmp.0).unwrap().as_deref(),
            Some(secrets.admin_key.as_str())
        );
        fs::write(admin_key_path(&tmp.0), "two words\n").unwrap();
        assert!(matches!(
            read_admin_key(&tmp.0),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn secrets_debug_is_redacted() {
        let secrets = Secrets {
            admin_key: "hunter2-admin".into(),
            signing_secret: b"sig-bytes".to_vec(),
        };
        let debug = format!("{secrets:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains("hunter2"));
        assert!(!debug.contains("115, 105, 103")); // "sig" as a byte list
        assert!(secrets.is_admin_key("hunter2-admin"));
        assert!(!secrets.is_admin_key("hunter2-admiN"));
        assert!(!secrets.is_admin_key("hunter2"));
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_decode(&hex_encode(&bytes)), Some(bytes));
        assert_eq!(hex_decode("ABcd"), Some(vec![0xab, 0xcd]));
        assert_eq!(hex_decode("é0"), None);
        assert_eq!(hex_decode("+1"), None);
    }
}
