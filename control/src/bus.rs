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

/// The retained history and the live tail of a feed whose events arrive
/// in id order: what [`EventBus::subscribe`] answers from. [`MemoryBus`]
/// appends what it publishes; a shared bus appends what it reads back from
/// the shared feed, so both replay and report gaps alike.
pub struct Feed {
    // A std Mutex: held for a few instructions, never across an await, and it
    // keeps history order and broadcast order the same.
    inner: Mutex<FeedInner>,
    live: broadcast::Sender<Event>,
}

struct FeedInner {
    /// The id after the last event appended (or the first id to expect).
    next_id: u64,
    history: VecDeque<Event>,
}

impl Feed {
    /// An empty feed whose first event will have an id of at least
    /// `next_id` (a watcher resuming below it hears of a gap).
    pub fn new(next_id: u64) -> Feed {
        Feed {
            inner: Mutex::new(FeedInner {
                next_id,
                history: VecDeque::with_capacity(HISTORY),
            }),
            live: broadcast::channel(HISTORY).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeedInner> {
        // A poisoned lock means a panic while pushing to a VecDeque; the data
        // is still consistent, so keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `event` and sends it to live watchers; false (and nothing
    /// done) unless its id is above every id appended before, so an event
    /// read twice is kept once.
    pub fn push(&self, event: Event) -> bool {
        let mut inner = self.lock();
        if event.id < inner.next_id && !inner.history.is_empty() {
            return false;
        }
        inner.next_id = event.id + 1;
        if inner.history.len() == HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(event.clone());
        // No receivers is normal (nobody watching).
        let _ = self.live.send(event);
        true
    }

    /// The id of the last event appended, if any.
    pub fn last_id(&self) -> Option<u64> {
        self.lock().history.back().map(|e| e.id)
    }

    /// The retained events after `after`, a gap if some before them are no
    /// longer retained, and the live tail from there on.
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        let inner = self.lock();
        // Subscribing under the lock: nothing can be appended between the
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

/// The single-machine bus.
pub struct MemoryBus {
    /// Held while an event is numbered and appended, so that ids and feed
    /// order agree.
    ids: Mutex<Ids>,
    feed: Feed,
    /// Where ids handed out are reserved, so that they keep increasing
    /// across restarts; `None`: ids start at 1 with each process.
    store: Option<Arc<dyn Store>>,
}

struct Ids {
    next_id: u64,
    /// With a store: the first id not reserved there yet.
    reserved_until: u64,
}

impl Default for MemoryBus {
    fn default() -> Self {
        MemoryBus::starting_at(1, 1, None)
    }
}

impl MemoryBus {
    fn starting_at(next_id: u64, reserved_until: u64, store: Option<Arc<dyn Store>>) -> MemoryBus {
        MemoryBus {
            ids: Mutex::new(Ids {
                next_id,
                reserved_until,
            }),
            feed: Feed::new(next_id),
            store,
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
}

/// Milliseconds since the Unix epoch, an event's time.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl EventBus for MemoryBus {
    fn publish(&self, room: RoomName, identity: Option<String>, kind: EventKind) -> Event {
        // Poisoned: a panic between two integer updates; they still hold.
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = &self.store
            && ids.next_id >= ids.reserved_until
        {
            let until = ids.next_id + ID_BLOCK;
            // Failing, ids still increase in this process; only a restart
            // could then reuse some. Not worth refusing the event for.
            if let Err(e) = store.set_next_event_id(until) {
                tracing::error!("cannot reserve event ids up to {until}: {e}");
            }
            ids.reserved_until = until;
        }
        let event = Event {
            id: ids.next_id,
            at_unix_ms: unix_ms(),
            room,
            identity,
            kind,
        };
        ids.next_id += 1;
        self.feed.push(event.clone());
        event
    }

    fn subscribe(&self, after: Option<u64>) -> Subscription {
        self.feed.subscribe(after)
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

    fn event(id: u64) -> Event {
        Event {
            id,
            at_unix_ms: 0,
            room: room(),
            identity: None,
            kind: EventKind::RoomCreated,
        }
    }

    #[test]
    fn a_feed_keeps_an_event_read_twice_once() {
        let feed = Feed::new(1);
        assert!(feed.push(event(5)));
        assert!(!feed.push(event(5)), "read again after a reconnect");
        assert!(!feed.push(event(4)));
        assert!(feed.push(event(9)), "ids may jump (another node's)");
        assert_eq!(feed.last_id(), Some(9));
        let sub = feed.subscribe(Some(5));
        assert_eq!(sub.replay, vec![event(9)]);
        assert_eq!(sub.gap, None);
    }

    #[test]
    fn a_feed_started_above_the_shared_counter_reports_older_ids_as_a_gap() {
        // A node that starts while the shared feed holds 40..=50 loads them;
        // a watcher that saw 10 missed 11..=39.
        let feed = Feed::new(40);
        for id in 40..=50 {
            feed.push(event(id));
        }
        assert_eq!(feed.subscribe(Some(10)).gap, Some(40));
        assert_eq!(feed.subscribe(Some(39)).gap, None);
        assert_eq!(feed.subscribe(Some(45)).replay.len(), 5);
        // Empty, with the counter at 60: only a watcher below 60 missed some.
        let empty = Feed::new(61);
        assert_eq!(empty.subscribe(Some(10)).gap, Some(61));
        assert_eq!(empty.subscribe(Some(60)).gap, None);
    }
}
