//! The event bus: one ordered feed of [`Event`]s with a bounded history, so
//! a watcher that reconnects can resume from the last id it saw.
//!
//! [`EventBus`] is the boundary a multi-node deployment replaces (a Redis
//! stream has the same shape: ids, bounded history, live tail); the
//! in-process [`MemoryBus`] serves a single machine.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use crate::event::{Event, EventKind};
use crate::names::RoomName;
use crate::store::{Store, StoreError};

/// Event ids reserved in the store at a time: a restart skips at most this
/// many, and the store is written once per this many events.
pub const ID_BLOCK: u64 = 1000;

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
    /// Where ids handed out are reserved, so that they keep increasing
    /// across restarts; `None`: ids start at 1 with each process.
    ids: Option<Arc<dyn Store>>,
}

struct Inner {
    next_id: u64,
    /// With a store: the first id not reserved there yet.
    reserved_until: u64,
    history: VecDeque<Event>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        MemoryBus::starting_at(1, 1, None)
    }
}

impl MemoryBus {
    fn starting_at(next_id: u64, reserved_until: u64, ids: Option<Arc<dyn Store>>) -> MemoryBus {
        MemoryBus {
            inner: Mutex::new(Inner {
                next_id,
                reserved_until,
                history: VecDeque::with_capacity(HISTORY),
            }),
            live: broadcast::channel(HISTORY).0,
            ids,
        }
    }

    /// A bus whose event ids continue above every id an earlier run with
    /// `store` handed out, so a watcher resuming from its last id after a
    /// server restart neither misses nor repeats events (it gets a gap
    /// instead: the history did not survive). Ids are reserved in the store
    /// [`ID_BLOCK`] at a time, before they are used.
    pub fn resuming(store: Arc<dyn Store>) -> Result<MemoryBus, StoreError> {
        let first = store.next_event_id()?.max(1);
        store.set_next_event_id(first + ID_BLOCK)?;
        Ok(MemoryBus::starting_at(first, first + ID_BLOCK, Some(store)))
    }

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
        if let Some(store) = &self.ids
            && inner.next_id >= inner.reserved_until
        {
            let until = inner.next_id + ID_BLOCK;
            // Failing, ids still increase in this process; only a restart
            // could then reuse some. Not worth refusing the event for.
            if let Err(e) = store.set_next_event_id(until) {
                tracing::error!("cannot reserve event ids up to {until}: {e}");
            }
            inner.reserved_until = until;
        }
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
    use crate::store::MemoryStore;

    #[test]
    fn ids_continue_across_buses_on_one_store() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let first = MemoryBus::resuming(store.clone()).unwrap();
        let mut last = 0;
        // Past one reserved block, so the reservation moves on the way.
        for _ in 0..ID_BLOCK + 5 {
            last = first.publish(room(), None, EventKind::RoomCreated).id;
        }
        assert_eq!(last, ID_BLOCK + 5);
        // A restart: a new bus on the same store.
        let second = MemoryBus::resuming(store).unwrap();
        let next = second.publish(room(), None, EventKind::RoomCreated).id;
        assert!(next > last, "{next} after a restart, {last} before");
        assert!(
            next <= last + 1 + ID_BLOCK,
            "skipped at most a block: {next}"
        );
    }

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
