//! Managed rooms: the settings an admin gives a room when creating it, and
//! changes to them (UpdateRoom).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::names::RoomName;

/// Capacity limits of a room; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most publishers (streams) at once.
    pub max_publishers: Option<u32>,
    /// Most viewer sessions at once, across all streams.
    pub max_viewers: Option<u32>,
}

/// When a room's streams raise alarms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmRules {
    /// A stream that has sent no media for this long is stalled.
    #[serde(with = "millis")]
    pub stall_after: Duration,
    /// A publisher whose bitrate over the last window is below this (bits per
    /// second) is low; 0 disables the rule.
    pub min_bitrate_bps: u64,
    /// A keyframe asked of a watched video stream's publisher that has not
    /// come after this long alarms; zero disables the rule. How far apart
    /// the publisher's keyframes are does not matter (see
    /// [`crate::alarms`]). Stored (and sent, as `max_keyframe_interval_ms`)
    /// under the name it had when it meant the interval between keyframes,
    /// so stored rooms and older clients keep working.
    #[serde(with = "millis", rename = "max_keyframe_interval")]
    pub keyframe_wait: Duration,
}

impl Default for AlarmRules {
    fn default() -> Self {
        AlarmRules {
            stall_after: Duration::from_secs(3),
            min_bitrate_bps: 50_000,
            // A browser answers a request within about 100 ms; an encoder
            // that ignores requests (OBS, FFmpeg) at its next keyframe, 1-4 s
            // on a sensible GOP, plus up to 500 ms of coalescing and 500 ms
            // of sampling. Longer, and a joining viewer's picture is frozen
            // long enough for a person to notice.
            keyframe_wait: Duration::from_secs(5),
        }
    }
}

/// A room as an admin defined it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSpec {
    /// The room's name (its id).
    pub name: RoomName,
    /// Capacity limits.
    pub limits: Limits,
    /// Alarm thresholds.
    pub alarms: AlarmRules,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Which room of this name it is: drawn at random when the room is
    /// created, and carried by every token issued for it, so that a room
    /// deleted and created again does not honour the first one's tokens.
    /// 0 for rooms stored before incarnations existed (and implicit rooms,
    /// which take no tokens); those keep honouring the tokens issued
    /// before, which carry no incarnation either.
    #[serde(default)]
    pub incarnation: u64,
    /// The generation of its tokens: revoking every token of the room
    /// (RevokeRoomTokens) moves it on, and tokens of an earlier generation
    /// (claim `rgen`) are refused. 0 for a new room.
    #[serde(default)]
    pub token_generation: u32,
    /// Identities hung up with a ban (HangUp's `ban_seconds`), and when
    /// each ban ends, in milliseconds since the Unix epoch: stored with the
    /// room, so a restart does not let a kicked identity back in. Ended
    /// bans are dropped when the next one is recorded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bans: BTreeMap<String, u64>,
}

impl RoomSpec {
    /// The bans still in force at `now_ms`, by identity.
    pub fn bans_in_force(&self, now_ms: u64) -> Vec<(String, u64)> {
        self.bans
            .iter()
            .filter(|(_, until_ms)| **until_ms > now_ms)
            .map(|(identity, until_ms)| (identity.clone(), *until_ms))
            .collect()
    }

    /// A new incarnation: random, never 0 (the legacy value), and below
    /// 2^53 so that it reads back exactly wherever a token's claims are
    /// parsed as JSON numbers (JavaScript's are doubles).
    pub fn new_incarnation() -> u64 {
        (rand::random::<u64>() >> 11).max(1)
    }
}

/// What UpdateRoom changes: each field set replaces the room's, each
/// `None` keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomUpdate {
    /// `Some(None)` removes the limit.
    pub max_publishers: Option<Option<u32>>,
    /// `Some(None)` removes the limit.
    pub max_viewers: Option<Option<u32>>,
    /// See [`AlarmRules::stall_after`].
    pub stall_after: Option<Duration>,
    /// See [`AlarmRules::min_bitrate_bps`].
    pub min_bitrate_bps: Option<u64>,
    /// See [`AlarmRules::keyframe_wait`].
    pub keyframe_wait: Option<Duration>,
}

impl RoomUpdate {
    /// `spec` with this update's changes.
    pub fn apply(&self, spec: &RoomSpec) -> RoomSpec {
        let (limits, alarms) = (spec.limits, spec.alarms);
        RoomSpec {
            limits: Limits {
                max_publishers: self.max_publishers.unwrap_or(limits.max_publishers),
                max_viewers: self.max_viewers.unwrap_or(limits.max_viewers),
            },
            alarms: AlarmRules {
                stall_after: self.stall_after.unwrap_or(alarms.stall_after),
                min_bitrate_bps: self.min_bitrate_bps.unwrap_or(alarms.min_bitrate_bps),
                keyframe_wait: self.keyframe_wait.unwrap_or(alarms.keyframe_wait),
            },
            ..spec.clone()
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
