//! Every Redis key and channel a deployment uses, in one place
//! (docs/cluster.md lists them with their TTLs).

/// Hash: `admin_key`, `signing_secret` (hex). Written once, by the first
/// node (HSETNX); every node signs and checks with the same secrets.
pub const SECRETS: &str = "vigil:secrets";

/// Hash: room name → JSON `RoomSpec` (bans and token generation included).
pub const ROOMS: &str = "vigil:rooms";

/// Hash: alarm id → JSON `AlarmRecord`.
pub const ALARMS: &str = "vigil:alarms";

/// Hash: token id → JSON `IssuedToken`.
pub const TOKENS: &str = "vigil:tokens";

/// Hash: `room/identity` → JSON `CameraSpec`.
pub const CAMERAS: &str = "vigil:cameras";

/// Pub/sub: a node changed shared state that the others hold in memory
/// (JSON: which node, what, which room).
pub const CHANGES: &str = "vigil:changes";

/// Stream: the event feed, entry ids `{event id}-1`, field `e` the event
/// as JSON, trimmed to about the bus's history.
pub const EVENTS: &str = "vigil:events";

/// Counter: the last event id handed out.
pub const EVENT_ID: &str = "vigil:event-id";

/// Set: the ids of nodes that heartbeat or did (pruned when reaped).
pub const NODES: &str = "vigil:nodes";

/// String with a TTL: a node's heartbeat (JSON `NodeInfo`).
pub fn node(id: &str) -> String {
    format!("vigil:node:{id}")
}

/// Hash: a node's sessions, session id → JSON (room, stream, identity,
/// role), so that another node can report them gone if the node dies.
pub fn node_sessions(id: &str) -> String {
    format!("vigil:node-sessions:{id}")
}

/// String: the node publishing `room`/`stream` (the stream directory).
pub fn stream(room: &str, stream: &str) -> String {
    format!("vigil:stream:{room}/{stream}")
}

/// Set: the nodes that relay `room`/`stream` (pulled from its publisher's
/// node or from another relay), which may feed further nodes (a tree).
pub fn relays(room: &str, stream: &str) -> String {
    format!("vigil:relays:{room}/{stream}")
}

/// String with a TTL, set NX: the node reporting a dead node's sessions.
pub fn reaping(id: &str) -> String {
    format!("vigil:reaping:{id}")
}

/// Pub/sub: commands for every node (JSON: id, from, command).
pub const COMMANDS: &str = "vigil:commands";

/// Pub/sub: a node's answers to the commands it sent.
pub fn replies(node: &str) -> String {
    format!("vigil:replies:{node}")
}

/// String: set once the deployment's shared state is in this Redis. A node
/// that reconnects and finds it missing knows Redis lost its data
/// (restarted without persistence) and writes back what it holds.
pub const SEEDED: &str = "vigil:seeded";
