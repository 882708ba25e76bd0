//! [`RedisBus`]: the event feed as one Redis stream ([`keys::EVENTS`]),
//! numbered by Redis so that ids increase across the whole deployment.
//!
//! Publishing is one Lua script ([`PUBLISH`]): INCR [`keys::EVENT_ID`],
//! raised above the largest id this node has seen (and the stream's last)
//! if it is not above already, so a Redis that lost its data never hands
//! out an old id again; then XADD with entry id `{id}-1`, trimmed to about
//! [`HISTORY`] entries. It is a blocking call, as the owner needs the id.
//!
//! Watchers are served from a local [`Feed`] (history and live tail, as
//! [`vigil_control::bus::MemoryBus`] has), fed by one reader task that
//! XREADs the stream in order: this node's own events come back that way
//! too, so every node's watchers see the stream's order.
//!
//! Redis away: a publish that fails is queued (at most [`QUEUE_LIMIT`],
//! the oldest dropped and counted) and returned with id 0, "not numbered
//! yet"; later ones queue behind it, and a task writes the queue out in
//! order once Redis answers. The reader reconnects with a backoff of at
//! most a second and continues after the last id it read.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, RedisError};
use vigil_control::RoomName;
use vigil_control::bus::{EventBus, Feed, HISTORY, Subscription, unix_ms};
use vigil_control::event::{Event, EventKind};
use vigil_control::store::StoreError;

use super::keys;
use super::store::Link;

/// Events kept while Redis is away; beyond it the oldest are dropped.
pub const QUEUE_LIMIT: usize = 10_000;

/// How long the reader's XREAD waits for new entries before asking again.
const BLOCK: Duration = Duration::from_secs(1);

/// Longest wait between two attempts to reach Redis again.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Queued events written per turn of the flusher (the owner's publishes
/// wait for a turn).
const FLUSH_BATCH: usize = 200;

/// KEYS: counter, stream. ARGV: the largest id this node has seen, the
/// history length, the event as JSON with `"id":0` first. Returns the id.
/// The event's JSON gets the id spliced in, so an entry is whole by itself.
const PUBLISH: &str = r#"
local floor = tonumber(ARGV[1])
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last > 0 then
  local top = tonumber(string.match(last[1][1], '^(%d+)'))
  if top and top > floor then floor = top end
end
local id = redis.call('INCR', KEYS[1])
if id <= floor then
  id = floor + 1
  redis.call('SET', KEYS[1], id)
end
local sid = string.format('%d', id)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], sid .. '-1',
  'e', '{"id":' .. sid .. string.sub(ARGV[3], 8))
return id
"#;

/// KEYS: counter. ARGV: the largest id this node has seen. Raises the
/// counter to it (a Redis that came back empty), never lowers it.
const RAISE: &str = r#"
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
"#;

/// The JSON an event is sent to [`PUBLISH`] as: its id 0, first.
const UNNUMBERED: &str = r#"{"id":0,"#;

/// The shared event bus of a node.
pub struct RedisBus {
    writer: Arc<Writer>,
    feed: Arc<Feed>,
}

/// Publishes, or queues while Redis is away.
struct Writer {
    link: Link,
    script: redis::Script,
    /// The largest event id this node published or read.
    seen: Arc<AtomicU64>,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    /// Events not written yet, oldest first: a sequence number (to tell
    /// whether the one being written is still first) and the JSON.
    pending: VecDeque<(u64, String)>,
    next_seq: u64,
    /// Dropped because the queue was full, since start.
    dropped: u64,
}

impl RedisBus {
    /// Loads the stream's retained entries, then starts the reader and the
    /// flusher; fails unless Redis answers now.
    pub async fn start(client: redis::Client) -> Result<RedisBus, StoreError> {
        let unavailable = |e: RedisError| StoreError::Unavailable(format!("Redis: {e}"));
        let mut connection = reader_connection(&client).await.map_err(unavailable)?;
        let counter: Option<u64> = connection.get(keys::EVENT_ID).await.map_err(unavailable)?;
        let retained: StreamRangeReply = connection
            .xrange_all(keys::EVENTS)
            .await
            .map_err(unavailable)?;
        let events: Vec<Event> = retained.ids.iter().filter_map(decode_entry).collect();
        let counter = counter.unwrap_or(0);
        let first = events.first().map_or(counter + 1, |e| e.id);
        let feed = Arc::new(Feed::new(first));
        for event in events {
            feed.push(event);
        }
        let seen = Arc::new(AtomicU64::new(counter.max(feed.last_id().unwrap_or(0))));
        let writer = Arc::new(Writer {
            link: Link::from_client(client.clone()),
            script: redis::Script::new(PUBLISH),
            seen: seen.clone(),
            queue: Mutex::new(Queue::default()),
        });
        tokio::spawn(read(client, Arc::downgrade(&feed), seen));
        tokio::spawn(flush(Arc::downgrade(&writer)));
        Ok(RedisBus { writer, feed })
    }
}

impl EventBus for RedisBus {
    fn publish(&self, room: RoomName, identity: Option<String>, kind: EventKind) -> Event {
        let mut event = Event {
            id: 0,
            at_unix_ms: unix_ms(),
            room,
            identity,
            kind,
        };
        let json = match serde_json::to_string(&event) {
            Ok(json) if json.starts_with(UNNUMBERED) => json,
            // Event's first field is its id, and strings always encode.
            Ok(_) | Err(_) => {
                tracing::error!("an event does not encode as expected; not published");
                return event;
            }
        };
        event.id = self.writer.publish(json);
        event
    }

    fn subscribe(&self, after: Option<u64>) -> Subscription {
        self.feed.subscribe(after)
    }
}

impl Writer {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Poisoned: a panic between VecDeque operations; still consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `json` to the stream and answers its id, or queues it and
    /// answers 0: behind others already queued (to keep the order), or
    /// when Redis does not answer.
    fn publish(&self, json: String) -> u64 {
        let mut queue = self.lock();
        if queue.pending.is_empty() {
            match self.write(&json) {
                Ok(id) => return id,
                Err(e @ StoreError::Unavailable(_)) => {
                    tracing::warn!("event queued until Redis answers: {e}");
                }
                // Redis answered and refused: retrying would not help.
                Err(e) => {
                    tracing::error!("event not published, Redis refused it: {e}");
                    return 0;
                }
            }
        }
        if queue.pending.len() == QUEUE_LIMIT {
            queue.pending.pop_front();
            queue.dropped += 1;
            if queue.dropped == 1 || queue.dropped.is_multiple_of(1000) {
                tracing::warn!(
                    dropped = queue.dropped,
                    "Redis away for long: the oldest queued events are dropped"
                );
            }
        }
        let seq = queue.next_seq;
        queue.next_seq += 1;
        queue.pending.push_back((seq, json));
        0
    }

    fn write(&self, json: &str) -> Result<u64, StoreError> {
        let floor = self.seen.load(Ordering::Relaxed);
        let id: u64 = self.link.run(|c| {
            self.script
                .key(keys::EVENT_ID)
                .key(keys::EVENTS)
                .arg(floor)
                .arg(HISTORY)
                .arg(json)
                .invoke(c)
        })?;
        self.seen.fetch_max(id, Ordering::Relaxed);
        Ok(id)
    }

    /// Writes out up to [`FLUSH_BATCH`] queued events, in order, stopping
    /// at the first failure. The queue is not locked while one is
    /// written, so a slow Redis does not stall the owner's publishes
    /// (which queue behind while the queue is not empty). Only this task
    /// removes written events, so the order holds.
    fn flush_some(&self) {
        for _ in 0..FLUSH_BATCH {
            let Some((seq, json)) = self.lock().pending.front().cloned() else {
                return;
            };
            match self.write(&json) {
                Ok(_) => {}
                Err(StoreError::Unavailable(_)) => return,
                // Redis answered and refused it: it would block the queue
                // for good.
                Err(e) => tracing::error!("queued event dropped, Redis refused it: {e}"),
            }
            let mut queue = self.lock();
            // Still first, unless dropped meanwhile for room.
            if queue
                .pending
                .front()
                .is_some_and(|(first, _)| *first == seq)
            {
                queue.pending.pop_front();
            }
        }
    }

    fn has_queued(&self) -> bool {
        !self.lock().pending.is_empty()
    }
}

/// Writes out the queue whenever it holds events, until the bus is gone.
async fn flush(writer: Weak<Writer>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(writer) = writer.upgrade() else {
            return;
        };
        if writer.has_queued() {
            // Blocking calls: off the async threads. A panic in it is a
            // bug reported by the runtime; the next turn retries.
            let _ = tokio::task::spawn_blocking(move || writer.flush_some()).await;
        }
    }
}

async fn reader_connection(client: &redis::Client) -> Result<MultiplexedConnection, RedisError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        // Above BLOCK: an XREAD that waits out BLOCK is an answer.
        .set_response_timeout(Some(BLOCK * 3));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Reads the stream in order into `feed`, reconnecting as needed, until
/// the bus is gone.
async fn read(client: redis::Client, feed: Weak<Feed>, seen: Arc<AtomicU64>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(alive) = feed.upgrade() else {
            return;
        };
        drop(alive);
        match read_connected(&client, &feed, &seen).await {
            Ok(()) => return,
            Err(e) => tracing::warn!("event feed reader: {e}; reconnecting"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's worth of [`read`]: `Ok` once the bus is gone.
async fn read_connected(
    client: &redis::Client,
    feed: &Weak<Feed>,
    seen: &AtomicU64,
) -> Result<(), RedisError> {
    let mut connection = reader_connection(client).await?;
    // A Redis that came back empty must number above what this node saw,
    // whichever node publishes first.
    redis::Script::new(RAISE)
        .key(keys::EVENT_ID)
        .arg(seen.load(Ordering::Relaxed))
        .invoke_async::<()>(&mut connection)
        .await?;
    let options = StreamReadOptions::default()
        .block(BLOCK.as_millis() as usize)
        .count(1000);
    // The last entry read, so that one that does not decode is passed.
    let mut after = match feed.upgrade() {
        Some(feed) => feed
            .last_id()
            .map_or_else(|| "0-0".to_owned(), |id| format!("{id}-1")),
        None => return Ok(()),
    };
    loop {
        let reply: Option<StreamReadReply> = connection
            .xread_options(&[keys::EVENTS], &[&after], &options)
            .await?;
        let Some(feed) = feed.upgrade() else {
            return Ok(());
        };
        for entry in reply.iter().flat_map(|r| &r.keys).flat_map(|k| &k.ids) {
            after.clone_from(&entry.id);
            if let Some(event) = decode_entry(entry) {
                seen.fetch_max(event.id, Ordering::Relaxed);
                feed.push(event);
            }
        }
    }
}

/// The event of a stream entry; its id is the entry's (`{id}-1`).
fn decode_entry(entry: &redis::streams::StreamId) -> Option<Event> {
    let id: u64 = entry.id.split('-').next()?.parse().ok()?;
    let json: String = entry.get("e")?;
    match serde_json::from_str::<Event>(&json) {
        Ok(mut event) => {
            event.id = id;
            Some(event)
        }
        Err(e) => {
            tracing::warn!(entry = %entry.id, "skipping an event that does not decode: {e}");
            None
        }
    }
}
