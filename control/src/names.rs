//! Validated names of rooms and streams.
//!
//! Both come from URL path segments (`/whip/{room}/{stream}`) typed by people
//! and pasted into OBS, so the alphabet is kept to what survives a URL, a
//! shell and a log line without quoting.

use std::fmt;

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A name was empty, too long, or used a character outside `[A-Za-z0-9_.-]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} name {name:?}: use 1 to 64 of A-Z a-z 0-9 _ . -")]
pub struct InvalidName {
    /// "room" or "stream".
    pub what: &'static str,
    /// The rejected input, truncated for display.
    pub name: String,
}

fn validate(what: &'static str, name: &str) -> Result<(), InvalidName> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidName {
            what,
            name: name.chars().take(MAX_NAME_LEN + 8).collect(),
        })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $ty::new(&s).map_err(serde::de::Error::custom)
            }
        }

        impl $ty {
            /// Validates `name` and wraps it.
            pub fn new(name: &str) -> Result<Self, InvalidName> {
                validate($what, name).map(|()| Self(name.to_owned()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// The name of a room: the unit a dispatcher watches.
    RoomName,
    "room"
);
name_type!(
    /// The name of a stream inside a room: one publisher's audio and video.
    StreamName,
    "stream"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_url_safe_names() {
        for ok in ["a", "room-1", "cam_2.front", &"x".repeat(MAX_NAME_LEN)] {
            assert_eq!(RoomName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_empty_long_dots_and_other_characters() {
        let long = "x".repeat(MAX_NAME_LEN + 1);
        for bad in ["", ".", "..", "a/b", "a b", "é", "a%20", &long] {
            let err = StreamName::new(bad).unwrap_err();
            assert_eq!(err.what, "stream");
        }
    }
}
