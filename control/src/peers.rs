//! What the control plane asks of the other nodes of a deployment
//! (docs/cluster.md). A node hosts only its own sessions; an operation
//! on a participant (hang up, mute, call) may concern sessions another
//! node hosts. [`Control`](crate::Control) carries it out here and, through
//! [`Peers`], on every other live node, each doing exactly what it would
//! do for a request of its own ([`Control::run_here`](crate::Control::run_here)),
//! and combines the outcomes. Without peers (a single node) nothing
//! changes. The gateway implements [`Peers`] over Redis pub/sub.

use serde::{Deserialize, Serialize};

use crate::core::{ControlError, ParticipantView};
use crate::event::SessionRole;
use crate::names::{RoomName, StreamName};

/// An operation on sessions, carried out by a node on the sessions it hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum PeerOp {
    /// Close every session of `identity` in `room` (HangUp).
    HangUp {
        /// The room.
        room: String,
        /// Whose sessions.
        identity: String,
    },
    /// Stop or resume forwarding a track of `identity`'s stream.
    Mute {
        /// The room.
        room: String,
        /// The publisher.
        identity: String,
        /// `true` for video, `false` for audio.
        video: bool,
        /// Muted now?
        muted: bool,
    },
    /// Ring `callee` to play `caller`'s stream (Call), at the node that
    /// hosts the callee.
    Call {
        /// The room.
        room: String,
        /// Who calls (publishes).
        caller: String,
        /// Who is called.
        callee: String,
        /// The caller publishes at another node than the callee's.
        #[serde(default)]
        caller_elsewhere: bool,
    },
    /// A call ended at another node: close the caller's stream here, if
    /// it publishes here (reason `CALL_ENDED`).
    StopCaller {
        /// The room.
        room: String,
        /// The caller.
        caller: String,
    },
    /// End `callee`'s call (EndCall).
    EndCall {
        /// The room.
        room: String,
        /// Who was called.
        callee: String,
    },
    /// List the room's participants with sessions on that node.
    Participants {
        /// The room.
        room: String,
    },
}

/// What a node did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum PeerOutcome {
    /// Closed this many sessions (HangUp, EndCall).
    Closed {
        /// How many.
        sessions: u64,
    },
    /// Done (Mute).
    Done,
    /// The call rings (Call).
    Rings {
        /// Its id.
        call_id: String,
        /// What the callee plays.
        whep_path: String,
    },
    /// Its participants of the room (Participants).
    Participants {
        /// As that node's ListParticipants shows them.
        participants: Vec<ParticipantView>,
    },
}

/// Why a node did not: the error's kind and its sentence, enough to give
/// the caller the same status a local failure would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerError {
    /// The kind, as [`ControlError`] names it.
    pub code: PeerCode,
    /// The sentence.
    pub message: String,
}

/// The kinds of [`PeerError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerCode {
    /// Nothing of the kind on that node.
    NotFound,
    /// Not in the state the operation needs.
    FailedPrecondition,
    /// A malformed field.
    InvalidArgument,
    /// Not allowed.
    PermissionDenied,
    /// That node could not answer (shutting down, store unreachable).
    Unavailable,
}

impl From<&ControlError> for PeerError {
    fn from(e: &ControlError) -> Self {
        let code = match e {
            ControlError::NotFound(_) => PeerCode::NotFound,
            ControlError::FailedPrecondition(_) | ControlError::AlreadyExists(_) => {
                PeerCode::FailedPrecondition
            }
            ControlError::InvalidArgument(_) => PeerCode::InvalidArgument,
            ControlError::PermissionDenied(_) | ControlError::Unauthenticated(_) => {
                PeerCode::PermissionDenied
            }
            ControlError::RoomFull { .. } => PeerCode::FailedPrecondition,
            ControlError::Store(_) | ControlError::Unavailable => PeerCode::Unavailable,
        };
        PeerError {
            code,
            message: e.to_string(),
        }
    }
}

impl From<PeerError> for ControlError {
    fn from(e: PeerError) -> Self {
        match e.code {
            PeerCode::NotFound => ControlError::NotFound(e.message),
            PeerCode::FailedPrecondition => ControlError::FailedPrecondition(e.message),
            PeerCode::InvalidArgument => ControlError::InvalidArgument(e.message),
            PeerCode::PermissionDenied => ControlError::PermissionDenied(e.message),
            PeerCode::Unavailable => ControlError::Unavailable,
        }
    }
}

/// The other live nodes of a deployment.
#[async_trait::async_trait]
pub trait Peers: Send + Sync + 'static {
    /// Runs `op` on every other live node and returns what each did; a node
    /// that does not answer in time is left out (and logged).
    async fn run(&self, op: &PeerOp) -> Vec<Result<PeerOutcome, PeerError>>;

    /// Whether `identity` is a node's relay (a viewer session that
    /// plumbs a stream to another node, not a person).
    fn is_relay(&self, identity: &str) -> bool;

    /// Whether another node publishes `room`'s stream `stream`.
    async fn published_elsewhere(&self, room: &RoomName, stream: &str) -> bool;
}

/// A session of a node that died, as the deployment's directory had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostSession {
    /// Its room.
    pub room: RoomName,
    /// The stream it published or played.
    pub stream: StreamName,
    /// Whose.
    pub identity: String,
    /// Publisher or viewer.
    pub role: SessionRole,
}

/// Sessions as they start and end on this node, for a deployment's
/// directory (which node hosts which session and publishes which stream).
pub trait SessionObserver: Send + Sync + 'static {
    /// A session started (its answer was sent).
    fn started(
        &self,
        session: &str,
        room: &RoomName,
        stream: &StreamName,
        role: SessionRole,
        identity: &str,
    );
    /// A session ended.
    fn ended(&self, session: &str);
}

/// Combines the local outcome of a HangUp-like operation with the peers':
/// the sessions closed everywhere, or, when no node found anything, the
/// local error (`Unavailable` if some node could not be asked: it may
/// host them).
pub(crate) fn total_closed(
    here: Result<usize, ControlError>,
    there: Vec<Result<PeerOutcome, PeerError>>,
) -> Result<usize, ControlError> {
    let mut found = here.is_ok();
    let mut total = *here.as_ref().unwrap_or(&0);
    let mut unavailable = false;
    for outcome in there {
        match outcome {
            Ok(PeerOutcome::Closed { sessions }) => {
                found = true;
                total += sessions as usize;
            }
            Err(PeerError {
                code: PeerCode::Unavailable,
                ..
            }) => unavailable = true,
            _ => {}
        }
    }
    match here {
        _ if found => Ok(total),
        Err(ControlError::NotFound(_)) if unavailable => Err(ControlError::Unavailable),
        here => here,
    }
}

/// The first node that did it, else the local error (for operations on
/// the one node that hosts the stream or the call).
pub(crate) fn first_done(
    here: ControlError,
    there: Vec<Result<PeerOutcome, PeerError>>,
) -> Result<PeerOutcome, ControlError> {
    let mut unavailable = false;
    for outcome in there {
        match outcome {
            Ok(done) => return Ok(done),
            Err(PeerError {
                code: PeerCode::Unavailable,
                ..
            }) => unavailable = true,
            // A more telling refusal from the node that hosts the stream
            // (e.g. "is in another call") beats "not found here".
            Err(e) if e.code != PeerCode::NotFound && matches!(here, ControlError::NotFound(_)) => {
                return Err(e.into());
            }
            Err(_) => {}
        }
    }
    if unavailable && matches!(here, ControlError::NotFound(_)) {
        // The node that has it may be the one that could not be asked.
        return Err(ControlError::Unavailable);
    }
    Err(here)
}

/// One room's participants across nodes: a participant with sessions on
/// several nodes is one entry (publishing anywhere, watching what it
/// watches anywhere, since its oldest session), its publisher's node
/// gives its tracks, bitrate and alarms, and a stream's viewers are those
/// at its node, relays excluded, plus those at the nodes its relays feed.
/// Relays themselves are not listed. A node that could not be asked is
/// left out (it was logged).
pub(crate) fn merge_participants(
    here: Result<Vec<ParticipantView>, ControlError>,
    there: Vec<Result<PeerOutcome, PeerError>>,
    is_relay: impl Fn(&str) -> bool,
) -> Result<Vec<ParticipantView>, ControlError> {
    let mut lists = Vec::new();
    let mut found = false;
    let mut first_error = None;
    match here {
        Ok(list) => {
            found = true;
            lists.push(list);
        }
        Err(e) => first_error = Some(e),
    }
    for outcome in there {
        if let Ok(PeerOutcome::Participants { participants }) = outcome {
            found = true;
            lists.push(participants);
        }
    }
    if !found {
        return Err(first_error.unwrap_or_else(|| ControlError::NotFound("no such room".into())));
    }
    // Per node: how many relays watch each stream there (they count as its
    // viewers there), and how many people watch it there.
    let mut merged: std::collections::BTreeMap<String, ParticipantView> = Default::default();
    let mut relayed: std::collections::BTreeMap<StreamName, u32> = Default::default();
    let mut watchers: std::collections::BTreeMap<StreamName, u32> = Default::default();
    let mut published_at: std::collections::BTreeMap<StreamName, usize> = Default::default();
    for (node, list) in lists.iter().enumerate() {
        for p in list {
            if p.publishing
                && let Ok(stream) = StreamName::new(&p.identity)
            {
                published_at.insert(stream, node);
            }
        }
    }
    for (node, list) in lists.into_iter().enumerate() {
        for p in list {
            if is_relay(&p.identity) {
                // Counted among the viewers at the stream's own node only
                // (a relay fed by a relay is a viewer of neither).
                for stream in &p.watching {
                    if published_at.get(stream) == Some(&node) {
                        *relayed.entry(stream.clone()).or_default() += 1;
                    }
                }
                continue;
            }
            for stream in &p.watching {
                if published_at.get(stream) != Some(&node) {
                    *watchers.entry(stream.clone()).or_default() += 1;
                }
            }
            match merged.get_mut(&p.identity) {
                None => {
                    merged.insert(p.identity.clone(), p);
                }
                Some(m) => {
                    if p.publishing {
                        m.publishing = true;
                        m.tracks = p.tracks;
                        m.viewer_count = p.viewer_count;
                        m.bitrate_bps = p.bitrate_bps;
                        m.active_alarms = p.active_alarms;
                    }
                    m.connected_since_unix_ms =
                        m.connected_since_unix_ms.min(p.connected_since_unix_ms);
                    for stream in p.watching {
                        if !m.watching.contains(&stream) {
                            m.watching.push(stream);
                        }
                    }
                    m.dispatcher |= p.dispatcher;
                    m.camera |= p.camera;
                }
            }
        }
    }
    Ok(merged
        .into_values()
        .map(|mut p| {
            if p.publishing
                && let Ok(stream) = StreamName::new(&p.identity)
            {
                let relays = relayed.get(&stream).copied().unwrap_or(0);
                let elsewhere = watchers.get(&stream).copied().unwrap_or(0);
                p.viewer_count = p.viewer_count.saturating_sub(relays) + elsewhere;
            }
            p.watching.sort();
            p
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hang_up_counts_sessions_everywhere_and_is_not_found_only_if_nowhere() {
        let nf = || ControlError::NotFound("x is not in r".into());
        let closed = |n| Ok(PeerOutcome::Closed { sessions: n });
        let missing = || {
            Err(PeerError {
                code: PeerCode::NotFound,
                message: "no".into(),
            })
        };
        assert_eq!(total_closed(Ok(1), vec![closed(2), missing()]).unwrap(), 3);
        assert_eq!(
            total_closed(Err(nf()), vec![missing(), closed(1)]).unwrap(),
            1
        );
        assert!(matches!(
            total_closed(Err(nf()), vec![missing(), missing()]),
            Err(ControlError::NotFound(_))
        ));
        let away = || {
            Err(PeerError {
                code: PeerCode::Unavailable,
                message: "Redis unreachable".into(),
            })
        };
        assert!(matches!(
            total_closed(Err(nf()), vec![away()]),
            Err(ControlError::Unavailable)
        ));
        assert_eq!(total_closed(Ok(2), vec![away()]).unwrap(), 2);
    }

    #[test]
    fn the_node_hosting_the_stream_answers_for_it() {
        let nf = || ControlError::NotFound("no stream here".into());
        assert_eq!(
            first_done(nf(), vec![Ok(PeerOutcome::Done)]).unwrap(),
            PeerOutcome::Done
        );
        let busy = PeerError {
            code: PeerCode::FailedPrecondition,
            message: "in another call".into(),
        };
        assert!(matches!(
            first_done(nf(), vec![Err(busy)]),
            Err(ControlError::FailedPrecondition(m)) if m == "in another call"
        ));
        assert!(matches!(
            first_done(nf(), vec![]),
            Err(ControlError::NotFound(_))
        ));
    }

    fn person(
        identity: &str,
        publishing: bool,
        viewers: u32,
        watching: &[&str],
    ) -> ParticipantView {
        ParticipantView {
            identity: identity.into(),
            publishing,
            tracks: Vec::new(),
            viewer_count: viewers,
            bitrate_bps: 0,
            connected_since_unix_ms: 100,
            watching: watching
                .iter()
                .map(|s| StreamName::new(s).unwrap())
                .collect(),
            active_alarms: Vec::new(),
            dispatcher: false,
            camera: false,
        }
    }

    #[test]
    fn participants_across_nodes_are_one_list_without_relays() {
        // node A: cam publishes; one person and two relays watch it.
        let a = vec![
            person("cam", true, 3, &[]),
            person("desk", false, 0, &["cam"]),
            person("node-b", false, 0, &["cam"]),
            person("node-c", false, 0, &["cam"]),
        ];
        // node B: two people watch cam through B's relay; desk also has a
        // session here.
        let b = vec![
            person("wall-1", false, 0, &["cam"]),
            person("desk", false, 0, &["cam"]),
        ];
        // node C: one person.
        let c = vec![person("wall-2", false, 0, &["cam"])];
        let there = vec![
            Ok(PeerOutcome::Participants { participants: b }),
            Ok(PeerOutcome::Participants { participants: c }),
            Err(PeerError {
                code: PeerCode::Unavailable,
                message: "node d did not answer".into(),
            }),
        ];
        let merged = merge_participants(Ok(a), there, |id| id.starts_with("node-")).unwrap();
        let names: Vec<&str> = merged.iter().map(|p| p.identity.as_str()).collect();
        assert_eq!(names, ["cam", "desk", "wall-1", "wall-2"]);
        // desk at A, wall-1 and desk at B, wall-2 at C: four sessions.
        assert_eq!(merged[0].viewer_count, 4);
    }

    #[test]
    fn ops_travel_as_json() {
        let op = PeerOp::Mute {
            room: "r".into(),
            identity: "cam".into(),
            video: true,
            muted: true,
        };
        let text = serde_json::to_string(&op).unwrap();
        assert_eq!(serde_json::from_str::<PeerOp>(&text).unwrap(), op);
    }
}
