//! What the control plane asks of the other nodes of a deployment
//! (docs/cluster.md). A node hosts only its own sessions; an operation
//! on a participant (hang up, mute, call) may concern sessions another
//! node hosts. [`Control`](crate::Control) carries it out here and, through
//! [`Peers`], on every other live node, each doing exactly what it would
//! do for a request of its own ([`Control::run_here`](crate::Control::run_here)),
//! and combines the outcomes. Without peers (a single node) nothing
//! changes. The gateway implements [`Peers`] over Redis pub/sub.

use serde::{Deserialize, Serialize};

use crate::core::ControlError;
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
    /// Ring `callee` to play `caller`'s stream (Call).
    Call {
        /// The room.
        room: String,
        /// Who calls (publishes).
        caller: String,
        /// Who is called.
        callee: String,
    },
    /// End `callee`'s call (EndCall).
    EndCall {
        /// The room.
        room: String,
        /// Who was called.
        callee: String,
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
