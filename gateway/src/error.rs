//! The gateway's one error type.
//!
//! Every failure a WHIP/WHEP request can meet is a variant here, with its
//! meaning spelt out; `http::response::error_response` is the only place
//! that turns one into a status code.

use vigil_control::{ControlError, InvalidName};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body's `Content-Type` is not the one this method takes.
    #[error("expected Content-Type {expected}")]
    UnsupportedContentType {
        /// The content type this request needs.
        expected: &'static str,
    },
    /// The body is larger than the configured limit.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request body did not arrive in full in time.
    #[error("request body not received within {} s", after.as_secs_f32())]
    BodyTimeout {
        /// The limit.
        after: std::time::Duration,
    },
    /// The SDP offer could not be parsed, or is not an offer WebRTC can answer.
    #[error("malformed SDP: {0}")]
    MalformedSdp(String),
    /// A query parameter has a value Vigil does not understand.
    #[error("bad query parameter: {0}")]
    BadQuery(String),
    /// The trickle-ice-sdpfrag body could not be parsed.
    #[error("malformed ICE fragment: {0}")]
    MalformedFragment(String),
    /// The offer is well-formed but asks for media Vigil does not take
    /// (no usable codec, more than one audio or video track, wrong direction).
    #[error("unsupported media: {0}")]
    UnsupportedMedia(String),
    /// A room or stream name in the URL is not acceptable.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// No such route.
    #[error("not found")]
    RouteNotFound,
    /// The method is not defined on this resource.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No live session has this id (never existed, deleted, or reaped).
    #[error("no such session")]
    SessionNotFound,
    /// A WHEP request for a stream nobody publishes yet.
    #[error("stream {stream} in room {room} is not being published")]
    NotPublished {
        /// Room name.
        room: String,
        /// Stream name.
        stream: String,
    },
    /// A WHIP request for a stream that already has a publisher.
    #[error("stream {stream} in room {room} already has a publisher")]
    AlreadyPublished {
        /// Room name.
        room: String,
        /// Stream name.
        stream: String,
    },
    /// A PATCH without `If-Match`.
    #[error("If-Match is required on PATCH")]
    PreconditionRequired,
    /// A PATCH whose `If-Match` names another ICE session.
    #[error("If-Match does not match the current ICE session")]
    PreconditionFailed,
    /// The WebRTC stack failed on our side (socket bind, DTLS setup).
    #[error("media engine error: {0}")]
    Internal(String),
    /// One client (an address, a token) asks for more than its share:
    /// too many offers too fast, or too many sessions (429).
    #[error("too many requests: {what}")]
    TooManyRequests {
        /// Which limit.
        what: &'static str,
        /// When a retry can succeed.
        retry_after: std::time::Duration,
    },
    /// The server as a whole is at its configured capacity (503).
    #[error("over capacity: {what}")]
    Overloaded {
        /// Which limit.
        what: &'static str,
        /// When a retry may succeed.
        retry_after: std::time::Duration,
    },
    /// The server is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// The control plane refused the session: no or a bad token (401), a
    /// token that does not allow it (403), an unknown room (404), a full
    /// room (503).
    #[error(transparent)]
    Refused(#[from] ControlError),
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
