//! Which nodes are alive: each node writes its heartbeat (`keys::node`,
//! with its URL and load) every [`HEARTBEAT`] with a TTL of
//! [`HEARTBEAT_TTL`], and reads everyone's. A node whose heartbeat expired
//! is dead: the first node to take `keys::reaping` reports each of its
//! sessions gone (`ParticipantLeft`, reason `NODE_LOST`) in the shared
//! feed, removes its stream entries and forgets it. Every node tells its
//! own subscribers (the relays pulling from it) at once.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use vigil_control::event::SessionRole;
use vigil_control::peers::LostSession;
use vigil_control::{Control, RoomName, StreamName};

use super::directory;
use super::keys;
use super::link::Link;
use crate::sfu::Sfu;

/// How often a node writes its heartbeat and looks at the others'.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a heartbeat lives: a node silent this long is dead (the
/// liveness window; docs/cluster.md).
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(3);

/// How long a node must have reached Redis without a break before it may
/// judge others dead: after an outage every heartbeat has expired, and the
/// others need a beat to write theirs again.
const SETTLE: Duration = Duration::from_secs(4);

/// How long one node holds the right to report a dead node's sessions.
const REAP_LOCK: Duration = Duration::from_secs(10);

/// A node as its heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its id (`--node-id`).
    pub id: String,
    /// Its HTTP base URL for the other nodes (`--node-url`).
    pub url: String,
    /// Sessions it hosts (publishers and viewers).
    pub sessions: u64,
    /// Sessions it takes before redirecting (0: no limit).
    pub capacity: u64,
}

impl NodeInfo {
    /// Sessions per capacity, in thousandths (0 without a capacity): how
    /// placement and relay trees compare nodes.
    pub fn load(&self) -> u64 {
        (self.sessions * 1000)
            .checked_div(self.capacity)
            .unwrap_or(0)
    }

    /// Whether it takes another session.
    pub fn has_room(&self) -> bool {
        self.capacity == 0 || self.sessions < self.capacity
    }
}

/// This node's view of the deployment.
#[derive(Clone)]
pub struct Membership {
    live: watch::Receiver<Vec<NodeInfo>>,
    ids: watch::Receiver<Vec<String>>,
    lost: broadcast::Sender<String>,
    me: String,
}

impl Membership {
    /// Starts heartbeating as `me` and watching the others.
    pub fn start(
        link: Arc<Link>,
        me: NodeInfo,
        sfu: Sfu,
        control: Control,
        directory: Arc<super::directory::Directory>,
        ids_tx: watch::Sender<Vec<String>>,
        stopped: watch::Receiver<bool>,
    ) -> Membership {
        let (live_tx, live) = watch::channel(Vec::new());
        let ids = ids_tx.subscribe();
        let (lost, _) = broadcast::channel(64);
        let membership = Membership {
            live,
            ids,
            lost: lost.clone(),
            me: me.id.clone(),
        };
        let context = Context {
            link,
            sfu,
            control,
            directory,
        };
        tokio::spawn(run(context, me, (live_tx, ids_tx), lost, stopped));
        membership
    }

    /// The live nodes (this one included), as last read.
    pub fn live(&self) -> Vec<NodeInfo> {
        self.live.borrow().clone()
    }

    /// The live nodes other than this one.
    pub fn others(&self) -> Vec<NodeInfo> {
        self.live
            .borrow()
            .iter()
            .filter(|n| n.id != self.me)
            .cloned()
            .collect()
    }

    /// A live node by id.
    pub fn node(&self, id: &str) -> Option<NodeInfo> {
        self.live.borrow().iter().find(|n| n.id == id).cloned()
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The live nodes' ids, sorted, changed only when a node comes or goes.
    pub fn ids(&self) -> watch::Receiver<Vec<String>> {
        self.ids.clone()
    }

    /// Tells of each node found dead, by id.
    pub fn lost(&self) -> broadcast::Receiver<String> {
        self.lost.subscribe()
    }
}

struct Context {
    link: Arc<Link>,
    sfu: Sfu,
    control: Control,
    directory: Arc<super::directory::Directory>,
}

async fn run(
    context: Context,
    mut me: NodeInfo,
    (live_tx, ids_tx): (watch::Sender<Vec<NodeInfo>>, watch::Sender<Vec<String>>),
    lost: broadcast::Sender<String>,
    mut stopped: watch::Receiver<bool>,
) {
    let Context {
        link,
        sfu,
        control,
        directory,
    } = context;
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut away = false;
    // Since when Redis has answered every heartbeat.
    let mut reachable_since = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => break,
        }
        if let Ok(stats) = sfu.stats().await {
            me.sessions = (stats.publishers + stats.viewers) as u64;
        }
        match beat(&link, &me).await {
            Ok((live, dead)) => {
                if away {
                    tracing::info!("Redis answers again: heartbeats resumed");
                    away = false;
                    reachable_since = tokio::time::Instant::now();
                    directory.resync();
                }
                let dead = if reachable_since.elapsed() >= SETTLE {
                    dead
                } else {
                    Vec::new()
                };
                let ids: Vec<String> = live.iter().map(|n| n.id.clone()).collect();
                ids_tx.send_if_modified(|old| {
                    let changed = *old != ids;
                    if changed {
                        *old = ids;
                    }
                    changed
                });
                live_tx.send_replace(live);
                for node in dead {
                    // Every node tells its relays; one reports the sessions.
                    let _ = lost.send(node.clone());
                    if let Err(e) = reap(&link, &me.id, &node, &control).await {
                        tracing::warn!(
                            node,
                            "reporting a dead node's sessions failed (retried): {e}"
                        );
                    }
                }
            }
            Err(e) => {
                if !away {
                    tracing::warn!("Redis unreachable: no heartbeat, sessions go on: {e}");
                    away = true;
                }
                link.reset().await;
            }
        }
    }
    // Leaving on purpose: the others need not wait for the TTL.
    let id = me.id.clone();
    let left: redis::RedisResult<()> = link
        .run(|mut conn| async move {
            let _: () = conn.del(keys::node(&id)).await?;
            conn.srem(keys::NODES, &id).await
        })
        .await;
    if let Err(e) = left {
        tracing::debug!("could not remove this node's heartbeat: {e}");
    }
}

/// Writes `me`'s heartbeat and reads everyone's: the live nodes and the
/// ids whose heartbeat expired.
async fn beat(link: &Link, me: &NodeInfo) -> redis::RedisResult<(Vec<NodeInfo>, Vec<String>)> {
    let text = serde_json::to_string(me).unwrap_or_default();
    let mut conn = link.conn().await?;
    let _: () = redis::pipe()
        .set_options(
            keys::node(&me.id),
            text,
            redis::SetOptions::default()
                .with_expiration(redis::SetExpiry::PX(HEARTBEAT_TTL.as_millis() as u64)),
        )
        .ignore()
        .sadd(keys::NODES, &me.id)
        .ignore()
        .query_async(&mut conn)
        .await?;
    let ids: Vec<String> = conn.smembers(keys::NODES).await?;
    let beats: Vec<Option<String>> = if ids.is_empty() {
        Vec::new()
    } else {
        redis::cmd("MGET")
            .arg(ids.iter().map(|id| keys::node(id)).collect::<Vec<_>>())
            .query_async(&mut conn)
            .await?
    };
    let mut live = Vec::new();
    let mut dead = Vec::new();
    for (id, beat) in ids.into_iter().zip(beats) {
        match beat.and_then(|text| serde_json::from_str::<NodeInfo>(&text).ok()) {
            Some(info) => live.push(info),
            None if id != me.id => dead.push(id),
            None => {}
        }
    }
    live.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((live, dead))
}

/// Reports `dead`'s sessions gone, if this node is the one to.
async fn reap(link: &Link, me: &str, dead: &str, control: &Control) -> redis::RedisResult<()> {
    let mut conn = link.conn().await?;
    let mine: Option<String> = conn
        .set_options(
            keys::reaping(dead),
            me,
            redis::SetOptions::default()
                .conditional_set(redis::ExistenceCheck::NX)
                .with_expiration(redis::SetExpiry::PX(REAP_LOCK.as_millis() as u64)),
        )
        .await?;
    if mine.is_none() {
        return Ok(());
    }
    let sessions: Vec<(String, String)> = conn.hgetall(keys::node_sessions(dead)).await?;
    tracing::warn!(
        node = dead,
        sessions = sessions.len(),
        "node lost (no heartbeat for {HEARTBEAT_TTL:?}): reporting its sessions gone"
    );
    let mut left = Vec::new();
    for (_, text) in &sessions {
        let Some(entry) = directory::decode(text) else {
            continue;
        };
        let (Ok(room), Ok(stream)) = (RoomName::new(&entry.room), StreamName::new(&entry.stream))
        else {
            continue;
        };
        if entry.publisher {
            // Only if it still names the dead node (the publisher may be
            // back elsewhere already).
            redis::Script::new(directory::DELETE_IF_MINE)
                .key(keys::stream(room.as_str(), stream.as_str()))
                .arg(dead)
                .invoke_async::<i64>(&mut conn)
                .await?;
        }
        let role = if entry.publisher {
            SessionRole::Publisher
        } else {
            SessionRole::Viewer
        };
        left.push(LostSession {
            room,
            stream,
            identity: entry.identity,
            role,
        });
    }
    control.report_node_lost(left);
    let _: () = redis::pipe()
        .del(keys::node_sessions(dead))
        .ignore()
        .srem(keys::NODES, dead)
        .ignore()
        .query_async(&mut conn)
        .await?;
    Ok(())
}
