//! The event bus: one ordered feed of [`Event`]s with a bounded history, so
//! a watcher that reconnects can resume from the last id it saw.
//!
//! [`EventBus`] is the boundary a multi-node deployment replaces (a Redis
//! stream has the same shape: ids, bounded history, live tail); the
//! in-process [`MemoryBus`] serves a single machine.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use crate::event::{Event, EventKind};
use crate::names::RoomName;

/// Events retained for resuming watchers.
pub const HISTORY: usize = 4096;

/// A watcher's view of the bus.
pub struct Subscription {
    /// Retained events after the requested id, oldest first.
    pub replay: Vec<Event>,
    /// Set when the requested id is older than the history: events were lost,
    /// and this is the oldest id still retained.
    pub gap: Option<u64>,
    /// Events published after `replay`.
    pub live: broadcast::Receiver<Event>,
}

/// Publishes events and lets watchers subscribe.
pub trait EventBus: Send + Sync + 'static {
    /// Appends an event (assigning its id and time) and returns it.
    fn publish(&self, room: RoomName, identity: Option<String>, kind: EventKind) -> Event;
    /// Subscribes, replaying retained events after `after` first.
    fn subscribe(&self, after: Option<u64>) -> Subscription;
}

/// The single-machine bus.
pub struct MemoryBus {
    // A std Mutex: held for a few instructions, never across an await, and it
    // keeps history order and broadcast order the same.
    inner: Mutex<Inner>,
    live: broadcast::Sender<Event>,
}

struct Inner {
    next_id: u64,
    history: VecDeque<Event>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        MemoryBus {
            inner: Mutex::new(Inner {
                next_id: 1,
                history: VecDeque::with_capacity(HISTORY),
            }),
            live: broadcast::channel(HISTORY).0,
        }
    }
}

impl MemoryBus {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock means a panic while pushing to a VecDeque; the data
        // is still consistent, so keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl EventBus for MemoryBus {
    fn publish(&self, room: RoomName, identity: Option<String>, kind: EventKind) -> Event {
        let mut inner = self.lock();
        let event = Event {
            id: inner.next_id,
            at_unix_ms: unix_ms(),
            room,
            identity,
            kind,
        };
        inner.next_id += 1;
        if inner.history.len() == HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(event.clone());
        // No receivers is normal (nobody watching).
        let _ = self.live.send(event.clone());
        event
    }

    fn subscribe(&self, after: Option<u64>) -> Subscription {
        let inner = self.lock();
        // Subscribing under the lock: nothing can be published between the
        // replay and the live tail.
        let live = self.live.subscribe();
        let Some(after) = after else {
            return Subscription {
                replay: Vec::new(),
                gap: None,
                live,
            };
        };
        let oldest = inner.history.front().map_or(inner.next_id, |e| e.id);
        let gap = (after + 1 < oldest && after + 1 < inner.next_id).then_some(oldest);
        let replay = inner
            .history
            .iter()
            .filter(|e| e.id > after)
            .cloned()
            .collect();
        Subscription { replay, gap, live }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> RoomName {
        RoomName::new("r").unwrap()
    }

    #[test]
    fn ids_increase_and_resume_replays_what_was_missed() {
        let bus = MemoryBus::default();
        let first = bus.publish(room(), None, EventKind::RoomCreated);
        let second = bus.publish(room(), None, EventKind::RoomDeleted);
        assert!(second.id > first.id);
        let sub = bus.subscribe(Some(first.id));
        assert_eq!(sub.replay, vec![second]);
        assert_eq!(sub.gap, None);
    }

    #[tokio::test]
    async fn live_events_follow_the_replay_without_loss() {
        let bus = MemoryBus::default();
        bus.publish(room(), None, EventKind::RoomCreated);
        let mut sub = bus.subscribe(Some(0));
        let third = bus.publish(room(), None, EventKind::RoomDeleted);
        assert_eq!(sub.replay.len(), 1);
        assert_eq!(sub.live.recv().await.unwrap(), third);
    }

    #[test]
    fn resuming_before_the_history_reports_a_gap() {
        let bus = MemoryBus::default();
        for _ in 0..HISTORY + 10 {
            bus.publish(room(), None, EventKind::RoomCreated);
        }
        let sub = bus.subscribe(Some(1));
        assert_eq!(sub.gap, Some(11));
        assert_eq!(sub.replay.len(), HISTORY);
    }
}
