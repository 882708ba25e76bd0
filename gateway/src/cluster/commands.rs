//! Commands between nodes ([`vigil_control::peers::Peers`] over Redis
//! pub/sub): a node publishes an operation on `keys::COMMANDS`; every
//! other node carries it out on the sessions it hosts
//! ([`Control::run_here`]) and answers on the sender's `keys::replies`
//! channel. The sender waits for every live node's answer, at most
//! [`ANSWER_WITHIN`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use vigil_control::Control;
use vigil_control::peers::{PeerCode, PeerError, PeerOp, PeerOutcome, Peers};

use super::keys;
use super::link::Link;
use super::membership::Membership;

/// How long a node waits for the others' answers.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(1);

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    id: u64,
    from: String,
    op: PeerOp,
}

#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    id: u64,
    node: String,
    result: Result<PeerOutcome, PeerError>,
}

type Waiting = Mutex<HashMap<u64, mpsc::UnboundedSender<Answer>>>;

/// This node's side of the commands.
pub struct Commands {
    link: Arc<Link>,
    directory: Arc<super::directory::Directory>,
    membership: Membership,
    next_id: AtomicU64,
    // A std Mutex: held to insert or remove one entry, never across an await.
    waiting: Arc<Waiting>,
}

impl Commands {
    /// Starts listening for the others' commands (carried out with
    /// `control`) and for answers to this node's.
    pub fn start(
        link: Arc<Link>,
        directory: Arc<super::directory::Directory>,
        membership: Membership,
        control: Control,
        stopped: watch::Receiver<bool>,
    ) -> Arc<Commands> {
        let waiting: Arc<Waiting> = Arc::default();
        tokio::spawn(listen(
            link.clone(),
            membership.me().to_owned(),
            control,
            waiting.clone(),
            stopped,
        ));
        Arc::new(Commands {
            link,
            directory,
            membership,
            next_id: AtomicU64::new(rand::random::<u32>() as u64),
            waiting,
        })
    }
}

fn unavailable(message: String) -> Result<PeerOutcome, PeerError> {
    Err(PeerError {
        code: PeerCode::Unavailable,
        message,
    })
}

#[async_trait::async_trait]
impl Peers for Commands {
    async fn run(&self, op: &PeerOp) -> Vec<Result<PeerOutcome, PeerError>> {
        let others = self.membership.others();
        if others.is_empty() {
            return Vec::new();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&self.waiting).insert(id, tx);
        let request = Request {
            id,
            from: self.membership.me().to_owned(),
            op: op.clone(),
        };
        let text = serde_json::to_string(&request).unwrap_or_default();
        let sent: redis::RedisResult<i64> = self
            .link
            .run(|mut conn| async move { conn.publish(keys::COMMANDS, text).await })
            .await;
        let mut results = Vec::new();
        match sent {
            Err(e) => results.push(unavailable(format!("Redis unreachable: {e}"))),
            Ok(_) => {
                let mut pending: Vec<String> = others.into_iter().map(|n| n.id).collect();
                let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
                while !pending.is_empty() {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(answer)) => {
                            pending.retain(|node| *node != answer.node);
                            results.push(answer.result);
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
                for node in pending {
                    tracing::warn!(node, ?op, "a node did not answer within {ANSWER_WITHIN:?}");
                    results.push(unavailable(format!("node {node} did not answer")));
                }
            }
        }
        lock(&self.waiting).remove(&id);
        results
    }

    async fn published_elsewhere(&self, room: &vigil_control::RoomName, stream: &str) -> bool {
        let Ok(stream) = vigil_control::StreamName::new(stream) else {
            return false;
        };
        self.directory
            .publisher_node(room, &stream)
            .await
            .is_some_and(|node| {
                node != self.membership.me() && self.membership.node(&node).is_some()
            })
    }

    fn is_relay(&self, identity: &str) -> bool {
        identity
            .strip_prefix(super::RELAY_PREFIX)
            .is_some_and(|node| self.membership.node(node).is_some())
    }
}

fn lock(
    waiting: &Waiting,
) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<Answer>>> {
    // Poisoned only by a panic between insert and remove; the map is fine.
    waiting.lock().unwrap_or_else(|p| p.into_inner())
}

async fn listen(
    link: Arc<Link>,
    me: String,
    control: Control,
    waiting: Arc<Waiting>,
    mut stopped: watch::Receiver<bool>,
) {
    let replies = keys::replies(&me);
    let mut backoff = Duration::from_millis(100);
    loop {
        let subscribed = async {
            let mut pubsub = link.client().get_async_pubsub().await?;
            pubsub.subscribe(keys::COMMANDS).await?;
            pubsub.subscribe(&replies).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            made = subscribed => made,
            _ = stopped.wait_for(|stop| *stop) => return,
        };
        let mut stream = match pubsub {
            Ok(pubsub) => {
                backoff = Duration::from_millis(100);
                pubsub.into_on_message()
            }
            Err(e) => {
                tracing::debug!("commands: cannot subscribe (retrying in {backoff:?}): {e}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped.wait_for(|stop| *stop) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                msg = stream.next() => msg,
                _ = stopped.wait_for(|stop| *stop) => return,
            };
            let Some(msg) = msg else {
                tracing::warn!("commands: the pub/sub connection closed; subscribing again");
                break;
            };
            let Ok(text) = msg.get_payload::<String>() else {
                continue;
            };
            if msg.get_channel_name() == keys::COMMANDS {
                match serde_json::from_str::<Request>(&text) {
                    Ok(request) if request.from != me => {
                        tokio::spawn(carry_out(
                            link.clone(),
                            me.clone(),
                            control.clone(),
                            request,
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("commands: a request that does not parse: {e}"),
                }
            } else if let Ok(answer) = serde_json::from_str::<Answer>(&text)
                && let Some(tx) = lock(&waiting).get(&answer.id)
            {
                // The asker stopped waiting (timeout) if this fails.
                let _ = tx.send(answer);
            }
        }
    }
}

async fn carry_out(link: Arc<Link>, me: String, control: Control, request: Request) {
    let result = control
        .run_here(&request.op)
        .await
        .map_err(|e| PeerError::from(&e));
    tracing::info!(from = request.from, op = ?request.op, ?result, "command from another node");
    let answer = Answer {
        id: request.id,
        node: me,
        result,
    };
    let text = serde_json::to_string(&answer).unwrap_or_default();
    let to = keys::replies(&request.from);
    let sent: redis::RedisResult<i64> = link
        .run(|mut conn| async move { conn.publish(to, text).await })
        .await;
    if let Err(e) = sent {
        tracing::warn!("commands: could not answer {}: {e}", request.from);
    }
}
