//! The deployment's directory: which node hosts which session, and which
//! node publishes which stream (`keys::node_sessions`, `keys::stream`).
//!
//! Sessions are told to [`Directory`] as they start and end (it observes
//! the control plane's facts); one task writes them to Redis in order. If
//! Redis is away the task keeps the node's sessions in memory and writes
//! them all again once it answers (a restarted Redis may have lost them),
//! then every 30 s, so the directory heals by itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use vigil_control::event::SessionRole;
use vigil_control::peers::SessionObserver;
use vigil_control::{RoomName, StreamName};

use super::keys;
use super::link::Link;

/// How often the node writes its whole directory again.
pub const RESYNC_EVERY: Duration = Duration::from_secs(30);

/// A session as the directory keeps it (`keys::node_sessions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// Its room.
    pub room: String,
    /// The stream it publishes or plays.
    pub stream: String,
    /// Whose.
    pub identity: String,
    /// Publisher (else viewer).
    pub publisher: bool,
}

enum Change {
    Started(String, SessionEntry),
    Ended(String),
    /// Redis was away: write everything again (it may have lost it).
    Resync,
}

/// Deletes a stream's directory entry only if it still names the node
/// (ARGV[1]): a publisher that moved to another node keeps its new entry.
pub(super) const DELETE_IF_MINE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// The observer handed to the control plane's facts, and the lookups.
pub struct Directory {
    tx: mpsc::UnboundedSender<Change>,
    link: Arc<Link>,
    node: String,
}

impl Directory {
    /// Starts the writing task for node `node`.
    pub fn start(link: Arc<Link>, node: String) -> Arc<Directory> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(link.clone(), node.clone(), rx));
        Arc::new(Directory { tx, link, node })
    }

    /// The node that publishes `room`/`stream`, if the directory names one
    /// (alive or not: the caller checks).
    pub async fn publisher_node(&self, room: &RoomName, stream: &StreamName) -> Option<String> {
        let key = keys::stream(room.as_str(), stream.as_str());
        let found: redis::RedisResult<Option<String>> = self
            .link
            .run(|mut conn| async move { conn.get(key).await })
            .await;
        match found {
            Ok(node) => node,
            Err(e) => {
                tracing::warn!(%room, %stream, "stream directory unreachable: {e}");
                None
            }
        }
    }

    /// Writes this node's whole directory again soon (Redis came back and
    /// may have lost it).
    pub fn resync(&self) {
        // Fails only after the task ended (shutdown).
        let _ = self.tx.send(Change::Resync);
    }

    /// Which of `nodes` hosts `session`, by their directories.
    pub async fn session_node(&self, session: &str, nodes: &[String]) -> Option<String> {
        if nodes.is_empty() {
            return None;
        }
        let mut pipe = redis::pipe();
        for node in nodes {
            pipe.hexists(keys::node_sessions(node), session);
        }
        let found: redis::RedisResult<Vec<bool>> = self
            .link
            .run(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await;
        match found {
            Ok(found) => nodes
                .iter()
                .zip(found)
                .find_map(|(node, here)| here.then(|| node.clone())),
            Err(e) => {
                tracing::warn!("session directory unreachable: {e}");
                None
            }
        }
    }

    /// Records that this node relays `room`/`stream` (`on`) or no longer
    /// does, in the background; a failure is only logged (the entry is
    /// a hint: a reader checks the node is alive and has room).
    pub fn set_relaying(&self, room: &RoomName, stream: &StreamName, on: bool) {
        let key = keys::relays(room.as_str(), stream.as_str());
        let (link, node) = (self.link.clone(), self.node.clone());
        tokio::spawn(async move {
            let done: redis::RedisResult<()> = link
                .run(|mut conn| async move {
                    if on {
                        conn.sadd(key, node).await
                    } else {
                        conn.srem(key, node).await
                    }
                })
                .await;
            if let Err(e) = done {
                tracing::debug!("relay directory: {e}");
            }
        });
    }

    /// The nodes that say they relay `room`/`stream`.
    pub async fn relaying_nodes(&self, room: &RoomName, stream: &StreamName) -> Vec<String> {
        let key = keys::relays(room.as_str(), stream.as_str());
        self.link
            .run(|mut conn| async move { conn.smembers(key).await })
            .await
            .unwrap_or_default()
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }
}

impl SessionObserver for Directory {
    fn started(
        &self,
        session: &str,
        room: &RoomName,
        stream: &StreamName,
        role: SessionRole,
        identity: &str,
    ) {
        let entry = SessionEntry {
            room: room.to_string(),
            stream: stream.to_string(),
            identity: identity.to_owned(),
            publisher: role == SessionRole::Publisher,
        };
        // Fails only after the task ended (shutdown).
        let _ = self.tx.send(Change::Started(session.to_owned(), entry));
    }

    fn ended(&self, session: &str) {
        // As above.
        let _ = self.tx.send(Change::Ended(session.to_owned()));
    }
}

async fn write(link: Arc<Link>, node: String, mut rx: mpsc::UnboundedReceiver<Change>) {
    let mut sessions: HashMap<String, SessionEntry> = HashMap::new();
    // Streams this node stopped publishing whose entries are still to be
    // deleted (kept across an outage).
    let mut unpublished: Vec<(String, String)> = Vec::new();
    let mut pending: Vec<Change> = Vec::new();
    let mut in_sync = false;
    let mut resync = tokio::time::interval(RESYNC_EVERY);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            change = rx.recv() => match change {
                Some(change) => pending.push(change),
                None => return,
            },
            _ = resync.tick() => in_sync = false,
        }
        while let Ok(change) = rx.try_recv() {
            pending.push(change);
        }
        // The memory copy first: it is what a full write writes.
        let mut writes = Vec::new();
        for change in pending.drain(..) {
            match change {
                Change::Resync => in_sync = false,
                Change::Started(session, entry) => {
                    sessions.insert(session.clone(), entry.clone());
                    writes.push((session, Some(entry)));
                }
                Change::Ended(session) => {
                    if let Some(entry) = sessions.remove(&session) {
                        if entry.publisher {
                            unpublished.push((entry.room.clone(), entry.stream.clone()));
                        }
                        writes.push((session, None));
                    }
                }
            }
        }
        // A stream published again here keeps its entry.
        unpublished.retain(|(room, stream)| {
            !sessions
                .values()
                .any(|e| e.publisher && e.room == *room && e.stream == *stream)
        });
        let result = if in_sync {
            write_changes(&link, &node, &sessions, &writes, &mut unpublished).await
        } else {
            write_all(&link, &node, &sessions, &mut unpublished).await
        };
        match result {
            Ok(()) => in_sync = true,
            Err(e) => {
                if in_sync {
                    tracing::warn!(
                        "session directory: Redis unreachable, writing it all again when it answers: {e}"
                    );
                }
                in_sync = false;
                link.reset().await;
                // Try again soon even if no session changes meanwhile.
                tokio::time::sleep(Duration::from_millis(500)).await;
                resync.reset_immediately();
            }
        }
    }
}

async fn write_changes(
    link: &Link,
    node: &str,
    sessions: &HashMap<String, SessionEntry>,
    writes: &[(String, Option<SessionEntry>)],
    unpublished: &mut Vec<(String, String)>,
) -> redis::RedisResult<()> {
    if writes.is_empty() && unpublished.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    let hash = keys::node_sessions(node);
    for (session, entry) in writes {
        match entry {
            // Started and ended within this batch: only its end is written.
            Some(_) if !sessions.contains_key(session) => {
                pipe.hdel(&hash, session).ignore();
            }
            Some(entry) => {
                pipe.hset(&hash, session, encode(entry)).ignore();
                if entry.publisher {
                    pipe.set(keys::stream(&entry.room, &entry.stream), node)
                        .ignore();
                }
            }
            None => {
                pipe.hdel(&hash, session).ignore();
            }
        }
    }
    let script = redis::Script::new(DELETE_IF_MINE);
    let mut conn = link.conn().await?;
    // Deletes first: a stream that moved within the batch is set after.
    delete_unpublished(&mut conn, &script, node, unpublished).await?;
    pipe.query_async::<()>(&mut conn).await
}

async fn write_all(
    link: &Link,
    node: &str,
    sessions: &HashMap<String, SessionEntry>,
    unpublished: &mut Vec<(String, String)>,
) -> redis::RedisResult<()> {
    let hash = keys::node_sessions(node);
    let mut pipe = redis::pipe();
    pipe.atomic().del(&hash).ignore();
    for (session, entry) in sessions {
        pipe.hset(&hash, session, encode(entry)).ignore();
        if entry.publisher {
            pipe.set(keys::stream(&entry.room, &entry.stream), node)
                .ignore();
        }
    }
    let script = redis::Script::new(DELETE_IF_MINE);
    let mut conn = link.conn().await?;
    delete_unpublished(&mut conn, &script, node, unpublished).await?;
    pipe.query_async::<()>(&mut conn).await
}

async fn delete_unpublished(
    conn: &mut redis::aio::MultiplexedConnection,
    script: &redis::Script,
    node: &str,
    unpublished: &mut Vec<(String, String)>,
) -> redis::RedisResult<()> {
    while let Some((room, stream)) = unpublished.last() {
        script
            .key(keys::stream(room, stream))
            .arg(node)
            .invoke_async::<i64>(conn)
            .await?;
        unpublished.pop();
    }
    Ok(())
}

fn encode(entry: &SessionEntry) -> String {
    // A struct of strings and a bool always encodes.
    serde_json::to_string(entry).unwrap_or_default()
}

/// Reads a directory entry written by [`Directory`].
pub fn decode(text: &str) -> Option<SessionEntry> {
    serde_json::from_str(text).ok()
}
