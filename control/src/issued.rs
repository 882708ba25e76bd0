//! The tokens the server issued, kept (in the store too) until they
//! expire, so that one can be revoked by its id and its revocation outlives
//! a restart.
//!
//! A record is written when CreateToken signs the token, before it is
//! handed out, and removed once the token has expired (it is refused on its
//! expiry then, revoked or not) or its room was deleted (a new room of the
//! same name has another incarnation, which refuses it too). Tokens issued
//! before token ids existed have no record and cannot be revoked one by
//! one; revoking every token of their room does refuse them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::names::RoomName;
use crate::token::CLOCK_SKEW_SECS;

/// One token the server issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    /// Its id (claim `jti`): 128 random bits in hex.
    pub id: String,
    /// The room it opens.
    pub room: RoomName,
    /// The room's incarnation it was issued for.
    pub incarnation: u64,
    /// Its identity (`sub`): whose sessions revoking it hangs up.
    pub identity: String,
    /// Its expiry (`exp`), seconds since the Unix epoch.
    pub expires_at: u64,
    /// When it was revoked, ms since the Unix epoch.
    pub revoked_at_ms: Option<u64>,
}

impl IssuedToken {
    /// Whether it is refused on its expiry alone at `now_unix`, so nothing
    /// needs to be remembered about it any more.
    fn expired(&self, now_unix: u64) -> bool {
        now_unix >= self.expires_at.saturating_add(CLOCK_SKEW_SECS)
    }
}

/// A new token id: 128 random bits in hex.
pub fn new_token_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The issued tokens not yet expired, by id.
#[derive(Debug, Default)]
pub struct Issued {
    tokens: HashMap<String, IssuedToken>,
}

impl Issued {
    /// The records loaded from the store.
    pub fn load(records: Vec<IssuedToken>) -> Self {
        Issued {
            tokens: records.into_iter().map(|t| (t.id.clone(), t)).collect(),
        }
    }

    /// The ids of the records expired at `now_unix`, which it forgets; the
    /// caller deletes them from the store.
    pub fn prune(&mut self, now_unix: u64) -> Vec<String> {
        let expired: Vec<String> = self
            .tokens
            .values()
            .filter(|t| t.expired(now_unix))
            .map(|t| t.id.clone())
            .collect();
        for id in &expired {
            self.tokens.remove(id);
        }
        expired
    }

    /// Records a token (new, or revoked since).
    pub fn insert(&mut self, token: IssuedToken) {
        self.tokens.insert(token.id.clone(), token);
    }

    /// The token of this id issued for `incarnation` of `room`, if kept.
    pub fn get(&self, room: &RoomName, incarnation: u64, id: &str) -> Option<&IssuedToken> {
        self.tokens
            .get(id)
            .filter(|t| t.room == *room && t.incarnation == incarnation)
    }

    /// Whether the token of this id was revoked.
    pub fn is_revoked(&self, id: &str) -> bool {
        self.tokens
            .get(id)
            .is_some_and(|t| t.revoked_at_ms.is_some())
    }

    /// Forgets the token of this id (deleted from the store elsewhere).
    pub fn remove(&mut self, id: &str) {
        self.tokens.remove(id);
    }

    /// Every token kept.
    pub fn all(&self) -> impl Iterator<Item = &IssuedToken> {
        self.tokens.values()
    }

    /// Forgets the tokens of a deleted room; returns their ids.
    pub fn forget_room(&mut self, room: &RoomName) -> Vec<String> {
        let ids: Vec<String> = self
            .tokens
            .values()
            .filter(|t| t.room == *room)
            .map(|t| t.id.clone())
            .collect();
        for id in &ids {
            self.tokens.remove(id);
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str, room: &str, expires_at: u64) -> IssuedToken {
        IssuedToken {
            id: id.into(),
            room: RoomName::new(room).unwrap(),
            incarnation: 7,
            identity: "cam-1".into(),
            expires_at,
            revoked_at_ms: None,
        }
    }

    #[test]
    fn records_are_kept_until_their_token_expires() {
        let mut issued = Issued::load(vec![token("a", "site", 100), token("b", "site", 200)]);
        assert!(issued.prune(100).is_empty(), "the clock skew still applies");
        assert_eq!(issued.prune(100 + CLOCK_SKEW_SECS), ["a"]);
        let site = RoomName::new("site").unwrap();
        assert!(issued.get(&site, 7, "a").is_none());
        assert!(issued.get(&site, 7, "b").is_some());
        assert!(issued.get(&site, 8, "b").is_none(), "another incarnation");
    }

    #[test]
    fn a_revoked_token_is_known_as_such_and_a_deleted_room_forgets_its_tokens() {
        let mut issued = Issued::default();
        issued.insert(token("a", "site", 100));
        issued.insert(token("b", "other", 100));
        assert!(!issued.is_revoked("a"));
        issued.insert(IssuedToken {
            revoked_at_ms: Some(5),
            ..token("a", "site", 100)
        });
        assert!(issued.is_revoked("a"));
        assert!(!issued.is_revoked("unknown"));
        assert_eq!(issued.forget_room(&RoomName::new("site").unwrap()), ["a"]);
        assert!(!issued.is_revoked("a"));
        assert_eq!(new_token_id().len(), 32);
    }
}
