//! Every room's alarms as records: when each was raised and cleared, and
//! who acknowledged it, kept in the [`Store`] so that a wall lists the same
//! alarms after a restart.
//!
//! The owner task decides when an alarm starts and ends (the rules are in
//! [`crate::alarms`], room-full in the owner); this log only keeps the
//! account. An alarm is named by the id of the `AlarmRaised` event that
//! raised it, which is unique across restarts (the bus reserves event ids
//! in the store). Cleared alarms are kept for [`KEPT_FOR`], at most
//! [`KEPT_PER_ROOM`] per room; active ones are kept however old.
//!
//! What changed is written to the store once per owner message
//! ([`AlarmLog::flush`], one transaction); a write that fails is retried at
//! the next flush, and the log in memory stays the truth meanwhile. An
//! acknowledgement is different: it is a request, so it is written before
//! it is applied, and its caller hears of a failure.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::{Alarm, Event, EventKind};
use crate::names::{RoomName, StreamName};
use crate::store::{Store, StoreError};

/// How long a cleared alarm is kept.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

/// Most cleared alarms kept per room; the oldest go first.
pub const KEPT_PER_ROOM: usize = 1000;

/// How often cleared alarms past [`KEPT_FOR`] are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// One alarm of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmRecord {
    /// The id of the `AlarmRaised` event.
    pub id: u64,
    /// Its room.
    pub room: RoomName,
    /// Which alarm.
    pub alarm: Alarm,
    /// The stream it concerns (none for room-wide alarms).
    pub stream: Option<StreamName>,
    /// Whom it is about: the publisher, or the participant refused.
    pub identity: Option<String>,
    /// What was measured when it was raised.
    pub detail: String,
    /// When it was raised, ms since the Unix epoch.
    pub raised_at_ms: u64,
    /// When it was cleared; `None` while active.
    pub cleared_at_ms: Option<u64>,
    /// Who saw it first, and when.
    pub acknowledged: Option<Acknowledgement>,
}

/// Someone said they saw an alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// Who: a room admin token's identity, or "admin" for the admin key.
    pub by: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

/// What names an active alarm: a room has at most one of each kind per
/// stream (the rules raise a level once).
type ActiveKey = (RoomName, Alarm, Option<StreamName>);

/// The records, in memory, with what the store has not seen yet.
#[derive(Debug, Default)]
pub(crate) struct AlarmLog {
    /// By id, so oldest first.
    records: BTreeMap<u64, AlarmRecord>,
    active: HashMap<ActiveKey, u64>,
    /// Changed since the last successful flush.
    dirty: BTreeSet<u64>,
    /// Pruned since the last successful flush.
    deleted: BTreeSet<u64>,
    pruned_at_ms: u64,
}

impl AlarmLog {
    /// The log of `records` (from the store). Alarms an earlier run left
    /// active are cleared at `now_ms`: their sessions ended with that run.
    /// In a `shared` store (several nodes) an active alarm may be another
    /// node's live one, so it is left as it is.
    pub(crate) fn load(records: Vec<AlarmRecord>, now_ms: u64, shared: bool) -> Self {
        let mut log = AlarmLog::default();
        for mut record in records {
            if record.cleared_at_ms.is_none() && !shared {
                record.cleared_at_ms = Some(now_ms);
                log.dirty.insert(record.id);
            }
            log.records.insert(record.id, record);
        }
        log
    }

    /// Records what a published event did to an alarm: `AlarmRaised`
    /// starts one, named by the event's id; `AlarmCleared` gives its alarm
    /// its cleared time (the event's). Other events are ignored.
    pub(crate) fn observe(&mut self, event: &Event) {
        let (alarm, stream, detail) = match &event.kind {
            // Id 0: a shared bus could not reach its feed and queued the
            // event, to be numbered later. An alarm is named by its id, so
            // one without is not recorded (nor cleared: `clear` finds
            // nothing active and answers 0, which `close` ignores).
            EventKind::AlarmRaised { .. } if event.id == 0 => return,
            EventKind::AlarmRaised {
                alarm,
                stream,
                detail,
            } => (alarm, stream, detail),
            EventKind::AlarmCleared { alarm_id, .. } => {
                self.close(*alarm_id, event.at_unix_ms);
                return;
            }
            _ => return,
        };
        let record = AlarmRecord {
            id: event.id,
            room: event.room.clone(),
            alarm: *alarm,
            stream: stream.clone(),
            identity: event.identity.clone(),
            detail: detail.clone(),
            raised_at_ms: event.at_unix_ms,
            cleared_at_ms: None,
            acknowledged: None,
        };
        let key = (record.room.clone(), record.alarm, record.stream.clone());
        // The rules never raise an active alarm; if one were, the older
        // record is closed rather than left active forever.
        if let Some(old) = self.active.insert(key, record.id) {
            self.close(old, record.raised_at_ms);
        }
        self.dirty.insert(record.id);
        self.records.insert(record.id, record);
    }

    /// Ends the active `alarm` of `stream` in `room` and returns its id
    /// for the `AlarmCleared` event, whose time becomes its cleared time
    /// ([`AlarmLog::observe`]); 0 if none was active, which the rules rule
    /// out.
    pub(crate) fn clear(
        &mut self,
        room: &RoomName,
        alarm: Alarm,
        stream: Option<&StreamName>,
    ) -> u64 {
        let key = (room.clone(), alarm, stream.cloned());
        self.active.remove(&key).unwrap_or(0)
    }

    fn close(&mut self, id: u64, now_ms: u64) {
        if let Some(record) = self
            .records
            .get_mut(&id)
            .filter(|r| r.cleared_at_ms.is_none())
        {
            record.cleared_at_ms = Some(now_ms);
            self.dirty.insert(id);
        }
    }

    /// `room`'s alarm `id` acknowledged by `by` at `now_ms`, not applied
    /// yet (see [`AlarmLog::apply`]); `None` if the room has no such alarm.
    /// The second value says whether this is its first acknowledgement: a
    /// later one leaves the first in place.
    pub(crate) fn acknowledgement(
        &self,
        room: &RoomName,
        id: u64,
        by: &str,
        now_ms: u64,
    ) -> Option<(AlarmRecord, bool)> {
        let mut record = self.records.get(&id).filter(|r| r.room == *room)?.clone();
        if record.acknowledged.is_some() {
            return Some((record, false));
        }
        record.acknowledged = Some(Acknowledgement {
            by: by.to_owned(),
            at_ms: now_ms,
        });
        Some((record, true))
    }

    /// Replaces a record with `record` (written at the next flush, again
    /// if the caller wrote it already).
    pub(crate) fn apply(&mut self, record: AlarmRecord) {
        if let Some(kept) = self.records.get_mut(&record.id) {
            self.dirty.insert(record.id);
            *kept = record;
        }
    }

    /// Takes in what another node wrote of the alarms `ids` (`records`,
    /// re-read from the store; an id without a record was deleted there),
    /// except those changed here and not written yet, which this node's
    /// next flush writes over. Alarms this node holds active stay its own.
    pub(crate) fn merge(&mut self, ids: &[u64], records: Vec<AlarmRecord>) {
        let mut gone: BTreeSet<u64> = ids.iter().copied().collect();
        for record in records {
            gone.remove(&record.id);
            if !self.dirty.contains(&record.id) {
                self.records.insert(record.id, record);
            }
        }
        for id in gone {
            if !self.dirty.contains(&id) && !self.active.values().any(|a| *a == id) {
                self.records.remove(&id);
            }
        }
    }

    /// The alarms of `room`'s `stream` not cleared yet, whichever node
    /// raised them (ids and kinds), oldest first.
    pub(crate) fn open_for(&self, room: &RoomName, stream: &StreamName) -> Vec<(u64, Alarm)> {
        self.records
            .values()
            .filter(|r| {
                r.room == *room && r.stream.as_ref() == Some(stream) && r.cleared_at_ms.is_none()
            })
            .map(|r| (r.id, r.alarm))
            .collect()
    }

    /// Every record kept.
    pub(crate) fn records(&self) -> impl Iterator<Item = &AlarmRecord> {
        self.records.values()
    }

    /// `room`'s active alarms and those cleared at or after `since_ms`,
    /// newest first.
    pub(crate) fn list(&self, room: &RoomName, since_ms: u64) -> Vec<AlarmRecord> {
        self.records
            .values()
            .rev()
            .filter(|r| r.room == *room && r.cleared_at_ms.is_none_or(|at| at >= since_ms))
            .cloned()
            .collect()
    }

    /// Forgets cleared alarms past [`KEPT_FOR`] or beyond [`KEPT_PER_ROOM`]
    /// in their room (looked for once per [`PRUNE_EVERY`]), then writes
    /// what changed to `store` in one transaction. On failure nothing is
    /// lost: the next flush writes it.
    pub(crate) fn flush(&mut self, store: &dyn Store, now_ms: u64) -> Result<(), StoreError> {
        if now_ms.saturating_sub(self.pruned_at_ms) >= PRUNE_EVERY.as_millis() as u64 {
            self.pruned_at_ms = now_ms;
            self.prune(now_ms);
        }
        if self.dirty.is_empty() && self.deleted.is_empty() {
            return Ok(());
        }
        let put: Vec<AlarmRecord> = self
            .dirty
            .iter()
            .filter_map(|id| self.records.get(id).cloned())
            .collect();
        let deleted: Vec<u64> = self.deleted.iter().copied().collect();
        store.update_alarms(&put, &deleted)?;
        self.dirty.clear();
        self.deleted.clear();
        Ok(())
    }

    fn prune(&mut self, now_ms: u64) {
        let oldest_kept = now_ms.saturating_sub(KEPT_FOR.as_millis() as u64);
        let mut cleared_per_room: HashMap<&RoomName, usize> = HashMap::new();
        let mut gone = Vec::new();
        // Newest first, so each room's count reaches its limit at the
        // oldest ones.
        for record in self.records.values().rev() {
            let Some(cleared_at) = record.cleared_at_ms else {
                continue;
            };
            let count = cleared_per_room.entry(&record.room).or_default();
            *count += 1;
            if cleared_at < oldest_kept || *count > KEPT_PER_ROOM {
                gone.push(record.id);
            }
        }
        for id in gone {
            self.records.remove(&id);
            self.dirty.remove(&id);
            self.deleted.insert(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarms::AlarmKind;
    use crate::store::MemoryStore;

    const T0: u64 = 1_700_000_000_000;

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    fn stalled(id: u64, room_name: &str, stream: &str, at_ms: u64) -> Event {
        Event {
            id,
            at_unix_ms: at_ms,
            room: room(room_name),
            identity: Some(stream.into()),
            kind: EventKind::AlarmRaised {
                alarm: Alarm::Stream(AlarmKind::Stalled),
                stream: Some(StreamName::new(stream).unwrap()),
                detail: "no media for 3.0 s".into(),
            },
        }
    }

    fn stall_key(stream: &str) -> (Alarm, Option<StreamName>) {
        (
            Alarm::Stream(AlarmKind::Stalled),
            Some(StreamName::new(stream).unwrap()),
        )
    }

    /// Clears the stall of `stream` as the owner does: takes its id for the
    /// `AlarmCleared` event published at `at_ms`, then observes that event.
    fn clear_stall(log: &mut AlarmLog, room_name: &str, stream: &str, at_ms: u64) -> u64 {
        let (alarm, stream) = stall_key(stream);
        let alarm_id = log.clear(&room(room_name), alarm, stream.as_ref());
        log.observe(&Event {
            id: u64::MAX,
            at_unix_ms: at_ms,
            room: room(room_name),
            identity: None,
            kind: EventKind::AlarmCleared {
                alarm,
                stream,
                alarm_id,
            },
        });
        alarm_id
    }

    #[test]
    fn raised_cleared_and_acknowledged_alarms_are_written_and_listed() {
        let store = MemoryStore::default();
        let mut log = AlarmLog::default();
        log.observe(&stalled(7, "site", "cam-1", T0));
        log.observe(&stalled(9, "site", "cam-2", T0 + 1000));
        log.observe(&stalled(11, "other", "cam-1", T0 + 1000));
        log.flush(&store, T0 + 1000).unwrap();
        assert_eq!(store.alarms().unwrap().len(), 3);

        assert_eq!(clear_stall(&mut log, "site", "cam-1", T0 + 5000), 7);
        assert_eq!(
            clear_stall(&mut log, "site", "cam-1", T0 + 6000),
            0,
            "cleared once"
        );
        let (acked, first) = log
            .acknowledgement(&room("site"), 9, "dispatcher-1", T0 + 2000)
            .unwrap();
        assert!(first);
        log.apply(acked);
        let (again, first) = log
            .acknowledgement(&room("site"), 9, "dispatcher-2", T0 + 3000)
            .unwrap();
        assert!(!first);
        assert_eq!(again.acknowledged.unwrap().by, "dispatcher-1");
        assert!(
            log.acknowledgement(&room("other"), 9, "x", T0).is_none(),
            "another room's alarm"
        );
        log.flush(&store, T0 + 6000).unwrap();

        let listed = log.list(&room("site"), T0 + 5000);
        assert_eq!(
            listed.iter().map(|r| r.id).collect::<Vec<_>>(),
            [9, 7],
            "newest first, the cleared one is recent"
        );
        assert_eq!(listed[1].cleared_at_ms, Some(T0 + 5000));
        assert_eq!(listed[0].cleared_at_ms, None, "acknowledged stays active");
        assert_eq!(
            log.list(&room("site"), T0 + 5001)
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            [9]
        );
        // The store holds the same records.
        let mut stored = store.alarms().unwrap();
        stored.sort_by_key(|r| r.id);
        let mut kept: Vec<AlarmRecord> = log.records.values().cloned().collect();
        kept.sort_by_key(|r| r.id);
        assert_eq!(stored, kept);
    }

    #[test]
    fn alarms_left_active_by_a_previous_run_are_cleared_on_load() {
        let mut log = AlarmLog::default();
        log.observe(&stalled(3, "site", "cam-1", T0));
        let records: Vec<AlarmRecord> = log.records.into_values().collect();
        let store = MemoryStore::default();
        let mut log = AlarmLog::load(records, T0 + 60_000, false);
        assert_eq!(
            log.list(&room("site"), 0)[0].cleared_at_ms,
            Some(T0 + 60_000)
        );
        assert_eq!(clear_stall(&mut log, "site", "cam-1", T0), 0);
        log.flush(&store, T0 + 60_000).unwrap();
        assert_eq!(store.alarms().unwrap()[0].cleared_at_ms, Some(T0 + 60_000));
    }

    #[test]
    fn cleared_alarms_are_kept_a_day_and_a_thousand_per_room() {
        let store = MemoryStore::default();
        let mut log = AlarmLog::default();
        // 1,005 alarms raised and cleared in "site", one in "other"; then
        // one in "site" that stays active.
        for id in 1..=1005 {
            log.observe(&stalled(id, "site", "cam", T0 + id));
            clear_stall(&mut log, "site", "cam", T0 + id);
        }
        log.observe(&stalled(2000, "other", "cam", T0));
        clear_stall(&mut log, "other", "cam", T0);
        log.observe(&stalled(3000, "site", "cam", T0));
        log.flush(&store, T0 + 10_000).unwrap();
        let site = log.list(&room("site"), 0);
        assert_eq!(site.len(), 1001, "the active one and a thousand cleared");
        assert_eq!(site.last().unwrap().id, 6, "the five oldest went");
        assert_eq!(store.alarms().unwrap().len(), 1002);

        // A day later (and past the pruning interval) only the active one
        // is left; the store follows.
        let day = KEPT_FOR.as_millis() as u64;
        log.flush(&store, T0 + 10_000 + day).unwrap();
        assert_eq!(log.list(&room("site"), 0).len(), 1);
        assert!(log.list(&room("other"), 0).is_empty());
        assert_eq!(store.alarms().unwrap().len(), 1);
    }

    /// A store whose writes fail until told otherwise.
    #[derive(Default)]
    struct FlakyStore {
        inner: MemoryStore,
        failing: std::sync::atomic::AtomicBool,
    }

    impl Store for FlakyStore {
        fn put_room(&self, room: &crate::room::RoomSpec) -> Result<(), StoreError> {
            self.inner.put_room(room)
        }
        fn room(&self, name: &RoomName) -> Result<Option<crate::room::RoomSpec>, StoreError> {
            self.inner.room(name)
        }
        fn rooms(&self) -> Result<Vec<crate::room::RoomSpec>, StoreError> {
            self.inner.rooms()
        }
        fn delete_room(&self, name: &RoomName) -> Result<bool, StoreError> {
            self.inner.delete_room(name)
        }
        fn next_event_id(&self) -> Result<u64, StoreError> {
            self.inner.next_event_id()
        }
        fn set_next_event_id(&self, next: u64) -> Result<(), StoreError> {
            self.inner.set_next_event_id(next)
        }
        fn alarms(&self) -> Result<Vec<AlarmRecord>, StoreError> {
            self.inner.alarms()
        }
        fn update_alarms(&self, put: &[AlarmRecord], delete: &[u64]) -> Result<(), StoreError> {
            if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(StoreError::Database("disk full".into()));
            }
            self.inner.update_alarms(put, delete)
        }
        fn issued_tokens(&self) -> Result<Vec<crate::issued::IssuedToken>, StoreError> {
            self.inner.issued_tokens()
        }
        fn update_issued_tokens(
            &self,
            put: &[crate::issued::IssuedToken],
            delete: &[String],
        ) -> Result<(), StoreError> {
            self.inner.update_issued_tokens(put, delete)
        }
        fn cameras(&self) -> Result<Vec<crate::camera::CameraSpec>, StoreError> {
            self.inner.cameras()
        }
        fn put_camera(&self, camera: &crate::camera::CameraSpec) -> Result<(), StoreError> {
            self.inner.put_camera(camera)
        }
        fn delete_camera(
            &self,
            room: &RoomName,
            identity: &crate::names::StreamName,
        ) -> Result<bool, StoreError> {
            self.inner.delete_camera(room, identity)
        }
    }

    #[test]
    fn a_failed_write_is_retried_at_the_next_flush() {
        let store = FlakyStore::default();
        store
            .failing
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut log = AlarmLog::default();
        log.observe(&stalled(5, "site", "cam", T0));
        assert!(log.flush(&store, T0).is_err());
        assert_eq!(log.list(&room("site"), 0).len(), 1, "still listed");
        store
            .failing
            .store(false, std::sync::atomic::Ordering::Relaxed);
        log.flush(&store, T0 + 500).unwrap();
        assert_eq!(store.alarms().unwrap().len(), 1);
    }

    #[test]
    fn an_unnumbered_alarm_is_not_recorded_and_others_nodes_records_merge_in() {
        let mut log = AlarmLog::default();
        log.observe(&stalled(0, "site", "cam-1", T0));
        assert!(
            log.list(&room("site"), 0).is_empty(),
            "id 0: queued, unnumbered"
        );
        let (alarm, stream) = stall_key("cam-1");
        assert_eq!(log.clear(&room("site"), alarm, stream.as_ref()), 0);

        // This node raised 7 (not written yet); another node raised 8 and
        // acknowledged a 7 of its own view.
        log.observe(&stalled(7, "site", "cam-1", T0));
        let mut theirs = stalled_record(7);
        theirs.detail = "theirs".into();
        log.merge(&[7, 8], vec![theirs, stalled_record(8)]);
        let listed = log.list(&room("site"), 0);
        assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), [8, 7]);
        assert_ne!(listed[1].detail, "theirs", "unwritten changes here win");
        // Written now; 8 deleted there.
        log.flush(&MemoryStore::default(), T0).unwrap();
        log.merge(&[8], vec![]);
        assert_eq!(log.list(&room("site"), 0).len(), 1);
        // A shared store's active alarms may be other nodes' live ones.
        let kept = AlarmLog::load(vec![stalled_record(9)], T0, true);
        assert_eq!(kept.list(&room("site"), 0)[0].cleared_at_ms, None);
    }

    fn stalled_record(id: u64) -> AlarmRecord {
        AlarmRecord {
            id,
            room: room("site"),
            alarm: Alarm::Stream(AlarmKind::Stalled),
            stream: Some(StreamName::new("cam-2").unwrap()),
            identity: Some("cam-2".into()),
            detail: "no media".into(),
            raised_at_ms: T0,
            cleared_at_ms: None,
            acknowledged: None,
        }
    }
}
