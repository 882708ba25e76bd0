//! What another node changed in the shared store, for this node's owner to
//! read again ([`crate::Control::reload`]).
//!
//! A node's owner keeps rooms (settings, bans, token generations), issued
//! tokens and alarms in memory and writes them through to the store; with a
//! store that several nodes share, a node that wrote something tells the
//! others (`gateway::cluster::changes`), and each re-reads what changed
//! and applies it to its own sessions: a room deleted elsewhere closes its
//! sessions here, a token revoked elsewhere hangs up its identity here.
//! Events are not published again: the node that made the change did.

use crate::names::RoomName;

/// What to read again from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// One room: created, updated (limits, alarm rules, bans, token
    /// generation) or deleted.
    Room(RoomName),
    /// These issued tokens: issued, revoked, or forgotten.
    Tokens(Vec<String>),
    /// These alarms: raised, cleared, acknowledged, or pruned.
    Alarms(Vec<u64>),
    /// One room's cameras: added, changed or removed.
    Cameras(RoomName),
    /// Everything (notifications may have been missed while the store was
    /// away). With `restore`, the store lost its data (Redis restarted
    /// without persistence): what this node holds is written back first,
    /// so the rooms of sessions still running do not vanish.
    Everything {
        /// Write this node's rooms, tokens, alarms and cameras back first.
        restore: bool,
    },
}

/// What a reload asks of the media plane, as the same request made here
/// would have.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Reloaded {
    /// Rooms deleted elsewhere (or recreated): close their sessions here.
    pub(crate) closed_rooms: Vec<RoomName>,
    /// Identities whose token was revoked, or who were banned, elsewhere:
    /// hang up their sessions here.
    pub(crate) hang_ups: Vec<(RoomName, String)>,
}
