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

use tokio::sync::{mpsc, oneshot};
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

    /// Stops every puller (their sessions end) and waits for them.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(reply)).is_ok() {
            let _ = done.await;
        }
    }
}

async fn run(sfu: Sfu, facts: Facts, mut inbox: mpsc::UnboundedReceiver<Msg>) {
    let mut running: HashMap<(RoomName, StreamName), Running> = HashMap::new();
    while let Some(msg) = inbox.recv().await {
        match msg {
            Msg::Start(spec) => {
                let key = (spec.room.clone(), spec.identity.clone());
                if let Some(old) = running.remove(&key) {
                    stop(old).await;
                }
                tracing::info!(room = %spec.room, camera = %spec.identity, url = %spec.masked_url(), on_demand = spec.on_demand, "camera added");
                let (commands, rx) = mpsc::unbounded_channel();
                let on_demand = spec.on_demand;
                let task = tokio::spawn(puller::run(spec, sfu.clone(), facts.clone(), rx));
                running.insert(
                    key,
                    Running {
                        commands,
                        task,
                        on_demand,
                    },
                );
            }
            Msg::Stop(room, identity) => {
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
