//! Several nodes, one deployment (issue 17; docs/cluster.md).
//!
//! Nodes started with the same `--redis-url` share, through Redis:
//! - the control plane's durable state ([`vigil_control::store::Store`]:
//!   rooms with their bans and token generations, issued tokens, alarms,
//!   cameras) and the secrets that sign tokens, so any node admits any
//!   token and answers for any room;
//! - the event feed ([`vigil_control::bus::EventBus`]): one Redis stream,
//!   ids numbered by Redis, so they increase across the deployment and a
//!   watcher resumes by id at any node;
//! - the node registry (heartbeats with a TTL) and the stream directory
//!   (which node publishes which stream), from which an edge finds the
//!   origin it relays a stream from;
//! - commands (hang up, mute, close a room, calls) as pub/sub messages that
//!   every node carries out on the sessions it hosts.
//!
//! Media never goes through Redis: a node playing a stream published
//! elsewhere pulls it once as a WHEP client of the origin (`crate::relay`).
//! Every key and channel is named in [`keys`].

pub mod bus;
pub mod changes;
pub mod keys;
pub mod secrets;
pub mod state;
pub mod store;
