//! IP cameras as room members: what an admin configures (stored), and the
//! states the gateway's RTSP puller reports (events, the offline alarm).
//!
//! The control owner keeps each room's cameras and their last reported
//! status; it asks the media plane to pull a camera
//! ([`crate::media::MediaPlane::start_camera`]) when one is added, changed
//! or loaded at start, and to stop ([`crate::media::MediaPlane::stop_camera`])
//! when one is removed. The puller reports back with
//! [`crate::Facts::camera_status`]. A camera publishes like any publisher
//! (its stream is its identity), so sessions, tracks, statistics, mute and
//! the stream alarms apply to it unchanged.

use serde::{Deserialize, Serialize};

use crate::event::TrackKind;
use crate::names::{RoomName, StreamName};

/// How RTP is carried from the camera.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraTransport {
    /// Interleaved on the RTSP TCP connection (the default).
    #[default]
    Tcp,
    /// RTP and RTCP over UDP.
    Udp,
}

/// A camera as an admin configured it. The password is kept here and in
/// the store, and never returned by an RPC or written to a log: use
/// [`CameraSpec::masked_url`] to show where it is.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraSpec {
    /// The room it is in.
    pub room: RoomName,
    /// Its identity, which is also the stream name viewers play.
    pub identity: StreamName,
    /// `rtsp://host[:port]/path`, without credentials.
    pub url: String,
    /// User name to log in with; empty for none.
    #[serde(default)]
    pub username: String,
    /// Password; empty for none.
    #[serde(default)]
    pub password: String,
    /// How RTP is carried.
    #[serde(default)]
    pub transport: CameraTransport,
    /// Pulled only while someone watches it.
    #[serde(default)]
    pub on_demand: bool,
    /// When it was added, ms since the Unix epoch.
    #[serde(default)]
    pub created_at_ms: u64,
}

impl std::fmt::Debug for CameraSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraSpec")
            .field("room", &self.room)
            .field("identity", &self.identity)
            .field("url", &self.masked_url())
            .field("transport", &self.transport)
            .field("on_demand", &self.on_demand)
            .finish_non_exhaustive()
    }
}

impl CameraSpec {
    /// The URL to show: with the user name, and `***` for a password
    /// (`rtsp://admin:***@10.0.0.7/stream1`).
    pub fn masked_url(&self) -> String {
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return self.url.clone();
        };
        match (self.username.is_empty(), self.password.is_empty()) {
            (true, true) => self.url.clone(),
            (false, true) => format!("{scheme}://{}@{rest}", self.username),
            (_, false) => format!("{scheme}://{}:***@{rest}", self.username),
        }
    }
}

/// Splits credentials out of a URL (`rtsp://user:pass@host/path` →
/// (`rtsp://host/path`, user, pass)), so they are stored apart and the URL
/// can be shown. A URL without them comes back as it is, with empty ones.
/// Refuses anything but `rtsp://` with a host (the RTSP client, retina,
/// has no TLS: `rtsps://` is refused with a sentence saying so).
pub fn split_credentials(url: &str) -> Result<(String, String, String), String> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{url:?} is not a URL (rtsp://host/path)"));
    };
    let scheme_lower = scheme.to_ascii_lowercase();
    if scheme_lower == "rtsps" {
        return Err("RTSP over TLS (rtsps://) is not supported: use rtsp://".into());
    }
    if scheme_lower != "rtsp" {
        return Err(format!(
            "a camera's URL starts with rtsp://, not {scheme}://"
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    let (user, pass) = match userinfo {
        Some(info) => match info.split_once(':') {
            Some((user, pass)) => (percent_decode(user), percent_decode(pass)),
            None => (percent_decode(info), String::new()),
        },
        None => (String::new(), String::new()),
    };
    Ok((format!("{scheme_lower}://{host}{path}"), user, pass))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        if bytes[i] == b'%'
            && let Some(Ok(byte)) = hex.map(|h| u8::from_str_radix(h, 16))
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a camera is (reported by the puller).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    /// On demand and nobody watches: not pulled.
    Idle,
    /// Connecting, or waiting to reconnect.
    #[default]
    Connecting,
    /// Pulled and published.
    Live,
    /// Cannot be reached, refused the connection or stopped sending.
    Unreachable,
    /// Refused the credentials.
    Unauthorised,
    /// Offers no track WebRTC viewers can play.
    UnsupportedCodec,
}

impl CameraState {
    /// Whether the camera counts as offline (the alarm's condition): not
    /// live, and not idle on purpose.
    pub fn offline(self) -> bool {
        !matches!(self, CameraState::Live | CameraState::Idle)
    }

    /// Its name in logs and alarm details.
    pub fn label(self) -> &'static str {
        match self {
            CameraState::Idle => "idle",
            CameraState::Connecting => "connecting",
            CameraState::Live => "live",
            CameraState::Unreachable => "unreachable",
            CameraState::Unauthorised => "unauthorised",
            CameraState::UnsupportedCodec => "unsupported codec",
        }
    }
}

/// One of a camera's tracks as it described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraTrack {
    /// Audio or video.
    pub kind: TrackKind,
    /// `video/H264`, `audio/PCMU`, `video/H265`, `audio/MPEG4-GENERIC`…
    pub codec: String,
    /// WebRTC viewers can play it (so it is published).
    pub playable: bool,
}

/// What the puller reports about a camera.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CameraStatus {
    /// Its state.
    pub state: CameraState,
    /// Why, for a person (an error, or what is pulled).
    pub detail: String,
    /// Its tracks, from its last description (empty before one).
    pub tracks: Vec<CameraTrack>,
}

/// What AddCamera asks for, before it is checked.
#[derive(Clone, Default)]
pub struct NewCamera {
    /// `rtsp://`, possibly with credentials in it.
    pub url: String,
    /// User name to log in with; empty for none (or the URL's).
    pub username: String,
    /// Password; empty for none (or the URL's).
    pub password: String,
    /// How RTP is carried.
    pub transport: CameraTransport,
    /// Pulled only while someone watches it.
    pub on_demand: bool,
}

impl std::fmt::Debug for NewCamera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCamera")
            .field("username", &self.username)
            .field("transport", &self.transport)
            .field("on_demand", &self.on_demand)
            .finish_non_exhaustive()
    }
}

impl NewCamera {
    /// The camera to store: its URL checked, and credentials found in the
    /// URL taken out of it (they win over `username` and `password`).
    pub fn into_spec(
        self,
        room: RoomName,
        identity: StreamName,
        created_at_ms: u64,
    ) -> Result<CameraSpec, String> {
        let (url, url_user, url_pass) = split_credentials(&self.url)?;
        Ok(CameraSpec {
            room,
            identity,
            url,
            username: if url_user.is_empty() {
                self.username
            } else {
                url_user
            },
            password: if url_pass.is_empty() {
                self.password
            } else {
                url_pass
            },
            transport: self.transport,
            on_demand: self.on_demand,
            created_at_ms,
        })
    }
}

/// What UpdateCamera changes: the fields present; the others are kept.
#[derive(Clone, Default)]
pub struct CameraUpdate {
    /// A new URL; credentials in it win over `username` and `password`.
    pub url: Option<String>,
    /// A new user name (empty: none).
    pub username: Option<String>,
    /// A new password (empty: none).
    pub password: Option<String>,
    /// How RTP is carried.
    pub transport: Option<CameraTransport>,
    /// Pulled only while someone watches it.
    pub on_demand: Option<bool>,
}

impl std::fmt::Debug for CameraUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraUpdate")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("transport", &self.transport)
            .field("on_demand", &self.on_demand)
            .finish_non_exhaustive()
    }
}

impl CameraUpdate {
    /// `spec` with this update applied; an error for a URL that is not a
    /// camera's.
    pub fn apply(&self, spec: &CameraSpec) -> Result<CameraSpec, String> {
        let mut next = spec.clone();
        if let Some(username) = &self.username {
            next.username.clone_from(username);
        }
        if let Some(password) = &self.password {
            next.password.clone_from(password);
        }
        if let Some(url) = &self.url {
            let (url, user, pass) = split_credentials(url)?;
            next.url = url;
            if !user.is_empty() {
                next.username = user;
            }
            if !pass.is_empty() {
                next.password = pass;
            }
        }
        if let Some(transport) = self.transport {
            next.transport = transport;
        }
        if let Some(on_demand) = self.on_demand {
            next.on_demand = on_demand;
        }
        Ok(next)
    }
}

impl CameraSpec {
    /// Whether the puller must start again to pull `self` after `before`:
    /// anything it connects with changed.
    pub fn pulled_differently(&self, before: &CameraSpec) -> bool {
        self.url != before.url
            || self.username != before.username
            || self.password != before.password
            || self.transport != before.transport
            || self.on_demand != before.on_demand
    }
}

/// A camera as ListCameras shows it: its settings without the password,
/// and its last reported status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraView {
    /// Its room.
    pub room: RoomName,
    /// Its identity (and stream name).
    pub identity: StreamName,
    /// The URL with the password masked ([`CameraSpec::masked_url`]).
    pub masked_url: String,
    /// The user name it logs in with.
    pub username: String,
    /// Whether a password is stored.
    pub has_password: bool,
    /// How RTP is carried.
    pub transport: CameraTransport,
    /// Pulled only while someone watches it.
    pub on_demand: bool,
    /// When it was added, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Its last reported status.
    pub status: CameraStatus,
    /// Since when it has been in that state, ms since the Unix epoch.
    pub since_ms: u64,
}

impl CameraView {
    /// The view of `spec` in `status` since `since_ms`.
    pub fn new(spec: &CameraSpec, status: &CameraStatus, since_ms: u64) -> Self {
        CameraView {
            room: spec.room.clone(),
            identity: spec.identity.clone(),
            masked_url: spec.masked_url(),
            username: spec.username.clone(),
            has_password: !spec.password.is_empty(),
            transport: spec.transport,
            on_demand: spec.on_demand,
            created_at_ms: spec.created_at_ms,
            status: status.clone(),
            since_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str, user: &str, pass: &str) -> CameraSpec {
        CameraSpec {
            room: RoomName::new("site").unwrap(),
            identity: StreamName::new("gate").unwrap(),
            url: url.into(),
            username: user.into(),
            password: pass.into(),
            transport: CameraTransport::Tcp,
            on_demand: false,
            created_at_ms: 0,
        }
    }

    #[test]
    fn credentials_are_split_out_and_the_password_masked() {
        let (url, user, pass) = split_credentials("RTSP://admin:p%40ss@10.0.0.7:554/s1").unwrap();
        assert_eq!(url, "rtsp://10.0.0.7:554/s1");
        assert_eq!((user.as_str(), pass.as_str()), ("admin", "p@ss"));
        let camera = spec(&url, &user, &pass);
        assert_eq!(camera.masked_url(), "rtsp://admin:***@10.0.0.7:554/s1");
        assert!(!format!("{camera:?}").contains("p@ss"));
        assert_eq!(spec("rtsp://h/", "", "").masked_url(), "rtsp://h/");
        assert_eq!(spec("rtsp://h/", "u", "").masked_url(), "rtsp://u@h/");
    }

    #[test]
    fn url_credentials_win_over_the_fields() {
        let new = NewCamera {
            url: "rtsp://cam:secret@10.0.0.7/s1".into(),
            username: "other".into(),
            password: "other-pass".into(),
            ..NewCamera::default()
        };
        let spec = new
            .into_spec(
                RoomName::new("site").unwrap(),
                StreamName::new("gate").unwrap(),
                5,
            )
            .unwrap();
        assert_eq!(spec.url, "rtsp://10.0.0.7/s1");
        assert_eq!(
            (spec.username.as_str(), spec.password.as_str()),
            ("cam", "secret")
        );
        let new = NewCamera {
            url: "http://10.0.0.7/".into(),
            ..NewCamera::default()
        };
        let refused = new.into_spec(
            RoomName::new("site").unwrap(),
            StreamName::new("gate").unwrap(),
            5,
        );
        assert!(refused.is_err());
    }

    #[test]
    fn an_update_sets_what_it_names_and_says_whether_to_pull_again() {
        let before = spec("rtsp://h/a", "u", "p");
        let same = CameraUpdate::default().apply(&before).unwrap();
        assert_eq!(same, before);
        assert!(!same.pulled_differently(&before));
        let moved = CameraUpdate {
            url: Some("rtsp://h/b".into()),
            ..CameraUpdate::default()
        }
        .apply(&before)
        .unwrap();
        assert_eq!(
            (moved.url.as_str(), moved.password.as_str()),
            ("rtsp://h/b", "p")
        );
        assert!(moved.pulled_differently(&before));
        let with_creds = CameraUpdate {
            url: Some("rtsp://v:w@h/a".into()),
            password: Some("ignored".into()),
            ..CameraUpdate::default()
        }
        .apply(&before)
        .unwrap();
        assert_eq!(
            (with_creds.username.as_str(), with_creds.password.as_str()),
            ("v", "w")
        );
        let demand = CameraUpdate {
            on_demand: Some(true),
            ..CameraUpdate::default()
        }
        .apply(&before)
        .unwrap();
        assert!(demand.pulled_differently(&before));
        let update = CameraUpdate {
            password: Some("hunter2".into()),
            ..CameraUpdate::default()
        };
        assert!(!format!("{update:?}").contains("hunter2"));
        assert!(
            CameraUpdate {
                url: Some("gate".into()),
                ..CameraUpdate::default()
            }
            .apply(&before)
            .is_err()
        );
    }

    #[test]
    fn only_rtsp_urls_with_a_host_are_cameras() {
        assert!(split_credentials("http://h/x").is_err());
        assert!(
            split_credentials("rtsps://h/x")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(split_credentials("rtsp:///x").is_err());
        assert!(split_credentials("gate").is_err());
        assert_eq!(
            split_credentials("rtsp://cam").unwrap(),
            ("rtsp://cam".into(), String::new(), String::new())
        );
    }
}
