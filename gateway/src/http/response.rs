//! Building responses: the one error-to-status map, CORS, and the WHIP/WHEP
//! headers every client reads.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::config::IceServer;
use crate::error::Error;
use vigil_control::ControlError;
use vigil_control::store::StoreError;

/// The body type of every response.
pub type Body = Full<Bytes>;

/// Methods each kind of resource takes, for `Allow` and CORS.
pub const ENDPOINT_METHODS: &str = "OPTIONS, POST, GET, HEAD";
/// What an endpoint's OPTIONS lists in `Access-Control-Allow-Methods`: its
/// own methods and its sessions' (Eyevinn's whip-web-client turns trickle on
/// only when the endpoint's list has PATCH, whip-whep.md §2.4).
pub const ENDPOINT_CORS_METHODS: &str = "OPTIONS, POST, GET, HEAD, PATCH, DELETE";
/// Methods of a session resource.
pub const SESSION_METHODS: &str = "OPTIONS, PATCH, DELETE, GET, HEAD";

/// Seconds a WHEP client should wait before retrying a stream not yet live.
const RETRY_AFTER_SECS: &str = "2";

/// The status code for an error: the only place this mapping exists.
pub fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::UnsupportedContentType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
        Error::MalformedSdp(_)
        | Error::MalformedFragment(_)
        | Error::InvalidName(_)
        | Error::BadQuery(_) => StatusCode::BAD_REQUEST,
        Error::UnsupportedMedia(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::RouteNotFound | Error::SessionNotFound => StatusCode::NOT_FOUND,
        Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Error::NotPublished { .. } | Error::AlreadyPublished { .. } => StatusCode::CONFLICT,
        Error::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
        Error::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Error::ShuttingDown | Error::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Refused(refusal) => match refusal {
            ControlError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ControlError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            ControlError::RoomFull { .. }
            | ControlError::Unavailable
            | ControlError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ControlError::AlreadyExists(_) | ControlError::FailedPrecondition(_) => {
                StatusCode::CONFLICT
            }
            ControlError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        },
    }
}

/// An RFC 9457 problem document for `error`, with the headers its status needs.
pub fn error_response(error: &Error, allow: &'static str) -> Response<Body> {
    let status = status_of(error);
    let problem = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": error.to_string(),
    });
    let mut response = with_cors(Response::new(Body::from(problem.to_string())), allow);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    match error {
        Error::NotPublished { .. }
        | Error::ShuttingDown
        | Error::Refused(
            ControlError::RoomFull { .. }
            | ControlError::Unavailable
            | ControlError::Store(StoreError::Unavailable(_)),
        ) => {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        Error::TooManyRequests { retry_after, .. } | Error::Overloaded { retry_after, .. } => {
            // Whole seconds, rounded up: a client that waits that long finds room.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        Error::Refused(ControlError::Unauthenticated(detail)) => {
            // RFC 6750 §3: name the scheme, and say why the token was refused.
            let challenge = format!(
                "Bearer realm=\"vigil\", error=\"invalid_token\", error_description=\"{}\"",
                detail.replace(['"', '\\'], "'")
            );
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
        }
        Error::MethodNotAllowed => {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        Error::UnsupportedContentType { expected } => {
            // RFC 9110 §15.5.16: say what would have been accepted.
            let name = if *expected == "application/sdp" {
                "accept-post"
            } else {
                "accept-patch"
            };
            headers.insert(name, HeaderValue::from_static(expected));
        }
        _ => {}
    }
    response
}

/// An empty response with CORS headers.
pub fn empty(status: StatusCode, allow: &'static str) -> Response<Body> {
    let mut response = with_cors(Response::new(Body::default()), allow);
    *response.status_mut() = status;
    response
}

/// Adds the CORS headers a browser client needs to read our answers
/// (`Location`, `ETag` and `Link` must be exposed, see whip-whep.md §2.4).
pub fn with_cors(mut response: Response<Body>, allow: &'static str) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "Location, ETag, Link, Accept-Patch, Accept-Post, Allow, Access-Control-Allow-Methods, Retry-After",
        ),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(allow),
    );
    response
}

/// `Link: <url>; rel="ice-server"` values, one per server (OBS parses only
/// the first link of a comma-joined header, so they are never joined).
pub fn ice_server_links(servers: &[IceServer]) -> Vec<HeaderValue> {
    servers
        .iter()
        .filter_map(|server| {
            let mut link = format!("<{}>; rel=\"ice-server\"", server.url);
            if let (Some(user), Some(credential)) = (&server.username, &server.credential) {
                link.push_str(&format!(
                    "; username=\"{user}\"; credential=\"{credential}\"; credential-type=\"password\""
                ));
            }
            HeaderValue::from_str(&link).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_a_client_or_server_status() {
        let cases = [
            (
                Error::UnsupportedContentType {
                    expected: "application/sdp",
                },
                415,
            ),
            (Error::BodyTooLarge { limit: 1 }, 413),
            (
                Error::BodyTimeout {
                    after: std::time::Duration::from_secs(1),
                },
                408,
            ),
            (Error::MalformedSdp(String::new()), 400),
            (Error::BadQuery(String::new()), 400),
            (Error::UnsupportedMedia(String::new()), 422),
            (Error::SessionNotFound, 404),
            (Error::PreconditionRequired, 428),
            (Error::PreconditionFailed, 412),
            (
                Error::NotPublished {
                    room: "r".into(),
                    stream: "s".into(),
                },
                409,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(status_of(&error).as_u16(), code, "{error}");
        }
    }

    #[test]
    fn a_shared_store_away_is_a_503_to_retry_and_a_broken_one_a_500() {
        let away = Error::Refused(ControlError::Store(StoreError::Unavailable(
            "connection refused".into(),
        )));
        let response = error_response(&away, "POST");
        assert_eq!(response.status().as_u16(), 503);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        let broken = Error::Refused(ControlError::Store(StoreError::Corrupt("x".into())));
        assert_eq!(status_of(&broken).as_u16(), 500);
    }

    #[test]
    fn links_are_one_per_server() {
        let servers = [
            IceServer {
                url: "stun:a:3478".into(),
                username: None,
                credential: None,
            },
            IceServer {
                url: "turn:b:3478".into(),
                username: Some("u".into()),
                credential: Some("p".into()),
            },
        ];
        let links = ice_server_links(&servers);
        assert_eq!(links.len(), 2);
        assert_eq!(links[0], "<stun:a:3478>; rel=\"ice-server\"");
        assert!(links[1].to_str().unwrap().contains("credential=\"p\""));
    }
}
