//! RTSP IP cameras as publishers (docs/cameras.md).
//!
//! The control plane keeps which cameras each room has (stored, with their
//! credentials) and asks, through `MediaPlane::start_camera` and
//! `stop_camera`, for each to be pulled or not. [`Cameras`] is the handle
//! to the task that owns the pullers: one [`puller`] task per camera, which
//! connects with retina, publishes the camera's playable tracks through
//! [`crate::sfu::Sfu::publish_local`] (so WHEP, the wall, statistics, mute
//! and the stream alarms treat it as any publisher) and reports its states
//! back as facts. Changing a camera's settings replaces its puller: the
//! old session ends and the new one takes its viewers over as on a
//! publisher's return.
//!
//! Media path: retina hands over each RTP packet; H.264 goes through
//! [`h264::Fitter`] (parameter sets before each IDR, packets cut to
//! WebRTC's size), audio passes as it is; [`clock`] maps timestamps; the
//! packets enter the publisher's shard as a local publisher's input.

pub mod clock;
pub mod describe;
pub mod h264;
pub mod puller;

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use vigil_control::camera::CameraSpec;
use vigil_control::{Facts, RoomName, StreamName};

use crate::sfu::Sfu;

/// How long a WHEP request for an on-demand camera waits for it to be
/// published.
pub const DEMAND_WAIT: Duration = Duration::from_secs(10);

enum Msg {
    Start(CameraSpec),
    Stop(RoomName, StreamName),
    Demand {
        room: RoomName,
        stream: StreamName,
        reply: oneshot::Sender<Option<oneshot::Receiver<()>>>,
    },
    Shutdown(oneshot::Sender<()>),
    /// From now on pull only the cameras that [`owner_of`] gives `me`
    /// among the live nodes `nodes` names (a deployment).
    Place {
        nodes: watch::Receiver<Vec<String>>,
        me: String,
    },
}

struct Running {
    commands: mpsc::UnboundedSender<puller::Command>,
    task: JoinHandle<()>,
    on_demand: bool,
}

/// Handle to the cameras' owner task.
#[derive(Clone)]
pub struct Cameras {
    tx: mpsc::UnboundedSender<Msg>,
}

impl Cameras {
    /// Starts the owner task; cameras publish through `sfu` and report to
    /// `facts`.
    pub fn start(sfu: Sfu, facts: Facts) -> Cameras {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(sfu, facts, rx));
        Cameras { tx }
    }

    /// Pulls `spec`'s camera, replacing a puller of the same camera.
    pub fn start_camera(&self, spec: CameraSpec) {
        let _stopped = self.tx.send(Msg::Start(spec));
    }

    /// Stops pulling a camera.
    pub fn stop_camera(&self, room: &RoomName, identity: &StreamName) {
        let _stopped = self.tx.send(Msg::Stop(room.clone(), identity.clone()));
    }

    /// Before a WHEP request for `room`/`stream`: if it is an on-demand
    /// camera, has it pulled and waits until it is published (or failed,
    /// or [`DEMAND_WAIT`] passed). Returns at once for anything else.
    pub async fn demand(&self, room: &RoomName, stream: &StreamName) {
        let (reply, answer) = oneshot::channel();
        let asked = self.tx.send(Msg::Demand {
            room: room.clone(),
            stream: stream.clone(),
            reply,
        });
        if asked.is_err() {
            return;
        }
        if let Ok(Some(published)) = answer.await {
            let _ = tokio::time::timeout(DEMAND_WAIT, published).await;
        }
    }

    /// In a deployment: pulls only the cameras this node (`me`) owns among
    /// the live nodes `nodes` names, and takes over or lets go of cameras as
    /// nodes come and go. Until `nodes` names any node, pulls none.
    pub fn place_by(&self, nodes: watch::Receiver<Vec<String>>, me: String) {
        let _stopped = self.tx.send(Msg::Place { nodes, me });
    }

    /// Stops every puller (their sessions end) and waits for them.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(reply)).is_ok() {
            let _ = done.await;
        }
    }
}

/// The node that pulls the camera `room/identity` among `nodes`: the one
/// with the highest hash of (node, camera) (rendezvous hashing), so every
/// node decides alike without talking, and a node leaving or joining moves
/// only its own share of the cameras.
pub fn owner_of<'a>(
    room: &RoomName,
    identity: &StreamName,
    nodes: &'a [String],
) -> Option<&'a String> {
    use std::hash::{Hash, Hasher};
    nodes.iter().max_by_key(|node| {
        // SipHash with fixed keys: the same on every node of one build.
        #[allow(deprecated)]
        let mut hasher = std::hash::SipHasher::new();
        (node.as_str(), room.as_str(), identity.as_str()).hash(&mut hasher);
        hasher.finish()
    })
}

type Key = (RoomName, StreamName);

/// Which cameras this node pulls.
struct Placement {
    nodes: watch::Receiver<Vec<String>>,
    me: String,
}

impl Placement {
    fn mine(&self, key: &Key) -> bool {
        owner_of(&key.0, &key.1, &self.nodes.borrow()).is_some_and(|owner| *owner == self.me)
    }
}

async fn changed(placement: &mut Option<Placement>) {
    if let Some(p) = placement
        && p.nodes.changed().await.is_ok()
    {
        return;
    }
    // No deployment (or its membership ended): nothing will change.
    std::future::pending().await
}

fn start(spec: CameraSpec, sfu: &Sfu, facts: &Facts) -> Running {
    tracing::info!(room = %spec.room, camera = %spec.identity, url = %spec.masked_url(), on_demand = spec.on_demand, "camera pulled here");
    let (commands, rx) = mpsc::unbounded_channel();
    let on_demand = spec.on_demand;
    let task = tokio::spawn(puller::run(spec, sfu.clone(), facts.clone(), rx));
    Running {
        commands,
        task,
        on_demand,
    }
}

async fn run(sfu: Sfu, facts: Facts, mut inbox: mpsc::UnboundedReceiver<Msg>) {
    let mut running: HashMap<Key, Running> = HashMap::new();
    // Every camera the control plane asked for, pulled here or not.
    let mut configured: HashMap<Key, CameraSpec> = HashMap::new();
    let mut placement: Option<Placement> = None;
    loop {
        let msg = tokio::select! {
            msg = inbox.recv() => match msg {
                Some(msg) => msg,
                None => return,
            },
            () = changed(&mut placement) => {
                let Some(p) = &placement else { continue };
                for (key, spec) in &configured {
                    match (p.mine(key), running.contains_key(key)) {
                        (true, false) => {
                            running.insert(key.clone(), start(spec.clone(), &sfu, &facts));
                        }
                        (false, true) => {
                            if let Some(old) = running.remove(key) {
                                tracing::info!(room = %key.0, camera = %key.1, "camera now pulled by another node");
                                stop(old).await;
                            }
                        }
                        _ => {}
                    }
                }
                continue;
            }
        };
        match msg {
            Msg::Place { nodes, me } => {
                let p = Placement { nodes, me };
                let gone: Vec<Key> = running.keys().filter(|k| !p.mine(k)).cloned().collect();
                for key in gone {
                    if let Some(old) = running.remove(&key) {
                        stop(old).await;
                    }
                }
                for (key, spec) in &configured {
                    if p.mine(key) && !running.contains_key(key) {
                        running.insert(key.clone(), start(spec.clone(), &sfu, &facts));
                    }
                }
                placement = Some(p);
            }
            Msg::Start(spec) => {
                let key = (spec.room.clone(), spec.identity.clone());
                if let Some(old) = running.remove(&key) {
                    stop(old).await;
                }
                configured.insert(key.clone(), spec.clone());
                if placement.as_ref().is_none_or(|p| p.mine(&key)) {
                    running.insert(key, start(spec, &sfu, &facts));
                }
            }
            Msg::Stop(room, identity) => {
                configured.remove(&(room.clone(), identity.clone()));
                if let Some(old) = running.remove(&(room.clone(), identity.clone())) {
                    stop(old).await;
                    tracing::info!(%room, camera = %identity, "camera removed");
                    sfu.close_stream(&room, &identity).await;
                }
            }
            Msg::Demand {
                room,
                stream,
                reply,
            } => {
                let waiter = running
                    .get(&(room, stream))
                    .filter(|r| r.on_demand)
                    .and_then(|r| {
                        let (tx, rx) = oneshot::channel();
                        r.commands.send(puller::Command::Demand(tx)).ok()?;
                        Some(rx)
                    });
                let _ = reply.send(waiter);
            }
            Msg::Shutdown(reply) => {
                for (_, old) in running.drain() {
                    stop(old).await;
                }
                let _ = reply.send(());
                return;
            }
        }
    }
}

/// Ends a puller: its task is aborted (dropping its RTSP session and its
/// publisher session) and awaited.
async fn stop(old: Running) {
    drop(old.commands);
    old.task.abort();
    let _ = old.task.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("node{i}")).collect()
    }

    #[test]
    fn every_node_places_a_camera_alike_and_a_leaving_node_moves_only_its_own() {
        let room = RoomName::new("city").unwrap();
        let cameras: Vec<StreamName> = (0..300)
            .map(|i| StreamName::new(&format!("cam-{i}")).unwrap())
            .collect();
        let three = names(3);
        let before: Vec<&String> = cameras
            .iter()
            .map(|c| owner_of(&room, c, &three).unwrap())
            .collect();
        for node in &three {
            let share = before.iter().filter(|o| **o == node).count();
            assert!((60..=140).contains(&share), "{node} pulls {share} of 300");
        }
        // node2 leaves: its cameras move, nobody else's does.
        let two = vec!["node1".to_owned(), "node3".to_owned()];
        for (camera, old) in cameras.iter().zip(&before) {
            let new = owner_of(&room, camera, &two).unwrap();
            if *old != "node2" {
                assert_eq!(new, *old, "{camera} moved though its node stayed");
            }
        }
        assert_eq!(owner_of(&room, &cameras[0], &[]), None);
    }
}
