//! WHIP/WHEP request handlers: check, call the SFU once, answer.

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use vigil_control::event::SessionRole;
use vigil_control::{RoomName, StreamName};

use super::AppState;
use super::response::{
    Body, ENDPOINT_CORS_METHODS, ENDPOINT_METHODS, SESSION_METHODS, empty, error_response,
    ice_server_links, with_cors,
};
use super::sdpfrag::SdpFrag;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::sfu::layers::LayerChoice;
use crate::sfu::{PatchOutcome, SessionId};

const SDP: &str = "application/sdp";
const SDP_FRAG: &str = "application/trickle-ice-sdpfrag";

/// Which protocol an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// WHIP ingest.
    Publish,
    /// WHEP playback.
    Play,
}

/// `/whip/{room}/{stream}` and `/whep/{room}/{stream}`.
pub async fn endpoint(
    req: Request<Incoming>,
    state: &AppState,
    client: IpAddr,
    role: Role,
    room: &str,
    stream: &str,
) -> Response<Body> {
    match *req.method() {
        Method::POST => create_session(req, state, client, role, room, stream)
            .await
            .unwrap_or_else(|e| error_response(&e, ENDPOINT_METHODS)),
        Method::OPTIONS => options(&req, state, ENDPOINT_CORS_METHODS),
        // RFC 9725 §4.1: the endpoint has no representation, GET/HEAD are 2xx without content.
        Method::GET | Method::HEAD => empty(StatusCode::NO_CONTENT, ENDPOINT_METHODS),
        _ => error_response(&Error::MethodNotAllowed, ENDPOINT_METHODS),
    }
}

/// Offers answered at once per media thread. Answering is CPU work
/// (`rtc`'s negotiation, ≈ 1 ms) between waits on the room owner, the
/// shard and admission; with every request of a join storm in flight at
/// once, each wait sends a request to the back of the runtime's queue,
/// behind the answering of all the others, and nearly every answer leaves
/// at the end of the storm. A few at a time, first come first served (a
/// fair semaphore), the first viewers are answered, and connect, while
/// later ones still wait. docs/performance.md ("Answering in turn").
pub const NEGOTIATIONS_PER_CORE: usize = 2;

async fn create_session(
    req: Request<Incoming>,
    state: &AppState,
    client: IpAddr,
    role: Role,
    room: &str,
    stream: &str,
) -> Result<Response<Body>> {
    let room = RoomName::new(room)?;
    let stream = StreamName::new(stream)?;
    require_content_type(req.headers(), SDP)?;
    let layer = layer_choice(req.uri().query())?;
    // Every limit before anything is spent on the request (docs/operations.md).
    state
        .limiter
        .check_post(client, std::time::Instant::now())?;
    if let Some(cluster) = &state.cluster {
        if let Some(redirect) = place(cluster, state, req.uri()).await? {
            return Ok(redirect);
        }
        // One publisher per stream in the whole deployment.
        if role == Role::Publish
            && let Some(node) = cluster.publisher_elsewhere(&room, &stream).await
        {
            tracing::info!(%room, %stream, node = node.id, "WHIP refused: published at another node");
            return Err(Error::AlreadyPublished {
                room: room.to_string(),
                stream: stream.to_string(),
            });
        }
    }
    let session_role = match role {
        Role::Publish => SessionRole::Publisher,
        Role::Play => SessionRole::Viewer,
    };
    // Holds a seat against the room's limits until this handler returns.
    let admission = state
        .control
        .admit(&room, &stream, session_role, bearer(req.headers()))
        .await?;
    let slot = state.limiter.open_session(client, bearer(req.headers()))?;
    let offer = read_text(req, &state.config, Error::MalformedSdp).await?;
    if role == Role::Play {
        // An on-demand camera is pulled now; the offer is answered once it
        // is published (its codecs are known). Before the turn: other
        // offers are answered meanwhile.
        state.cameras.demand(&room, &stream).await;
        // Likewise a stream published at another node is relayed here.
        state.relays.demand(&room, &stream).await;
    }
    let _turn = state
        .negotiations
        .acquire()
        .await
        .map_err(|_closed| Error::ShuttingDown)?;
    let identity = admission.identity.clone();
    let created = match role {
        Role::Publish => {
            // A token proves who publishes, so the same identity may take
            // its stream over (a phone back from a network drop); in open
            // mode a second publisher is refused.
            let may_replace = state.control.auth_required();
            let sfu = &state.sfu;
            sfu.publish(room, stream, identity, may_replace, offer, Some(slot))
                .await?
        }
        Role::Play => {
            let sfu = &state.sfu;
            sfu.play(room, stream, identity, offer, layer, Some(slot))
                .await?
        }
    };
    // Revoked or banned while it negotiated: refused after all, and the
    // session just made goes (revocations after this check hang it up).
    if let Err(refused) = state.control.confirm(&admission).await {
        let _ = state.sfu.delete(&created.session).await;
        return Err(refused.into());
    }
    drop(admission);
    let mut response = with_cors(Response::new(Body::from(created.answer)), ENDPOINT_METHODS);
    *response.status_mut() = StatusCode::CREATED;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    headers.insert(
        header::LOCATION,
        header_value(&format!("/sessions/{}", created.session))?,
    );
    headers.insert(header::ETAG, header_value(&created.etag)?);
    headers.insert("accept-patch", HeaderValue::from_static(SDP_FRAG));
    for link in ice_server_links(&state.config.ice_servers) {
        headers.append(header::LINK, link);
    }
    Ok(response)
}

/// In a deployment, a node at its capacity sends a new WHIP/WHEP POST to
/// the least loaded node with room (307: the client POSTs the same offer
/// there; RFC 9725 §4.5), or refuses it (503) when every node is full.
async fn place(
    cluster: &crate::cluster::Cluster,
    state: &AppState,
    uri: &hyper::Uri,
) -> Result<Option<Response<Body>>> {
    let sessions = state
        .sfu
        .stats()
        .await
        .map_or(0, |s| s.publishers + s.viewers);
    match cluster.placement(sessions) {
        crate::cluster::Placement::Here => Ok(None),
        crate::cluster::Placement::Elsewhere(node) => {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            let location = format!("{}{path}", node.url.trim_end_matches('/'));
            tracing::info!(to = node.id, sessions, "at capacity: redirecting a POST");
            let mut response = with_cors(Response::new(Body::default()), ENDPOINT_METHODS);
            *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            response
                .headers_mut()
                .insert(header::LOCATION, header_value(&location)?);
            Ok(Some(response))
        }
        crate::cluster::Placement::Full => Err(Error::Overloaded {
            what: "every node of the deployment is at its capacity",
            retry_after: std::time::Duration::from_secs(5),
        }),
    }
}

/// The simulcast layer a WHEP viewer asks for with `?layer=high|mid|low|<rid>`
/// (other parameters are ignored; WHIP ignores it).
fn layer_choice(query: Option<&str>) -> Result<LayerChoice> {
    let Some(value) = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("layer="))
    else {
        return Ok(LayerChoice::default());
    };
    LayerChoice::parse(value).ok_or_else(|| {
        Error::BadQuery(format!(
            "layer={value}: expected high, mid, low or a rid (letters, digits, - and _)"
        ))
    })
}

/// `/sessions/{id}`.
pub async fn session(req: Request<Incoming>, state: &AppState, id: &str) -> Response<Body> {
    let result = async {
        let id = SessionId::parse(id).ok_or(Error::SessionNotFound)?;
        // A client sent here by a redirect may resolve its session URL
        // against the node it first asked: send it on to the node that
        // hosts the session.
        if let Some(cluster) = &state.cluster
            && !state.sfu.exists(&id).await?
            && let Some(node) = cluster.session_host(id.as_str()).await
        {
            let location = format!("{}/sessions/{id}", node.url.trim_end_matches('/'));
            let mut response = with_cors(Response::new(Body::default()), SESSION_METHODS);
            *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            response
                .headers_mut()
                .insert(header::LOCATION, header_value(&location)?);
            return Ok(response);
        }
        match *req.method() {
            Method::PATCH => patch(req, state, &id).await,
            // RFC 9725 §4.3.1: entity-tags are ignored on DELETE.
            Method::DELETE => match state.sfu.delete(&id).await? {
                true => Ok(empty(StatusCode::OK, SESSION_METHODS)),
                false => Err(Error::SessionNotFound),
            },
            Method::GET | Method::HEAD => match state.sfu.exists(&id).await? {
                true => Ok(empty(StatusCode::NO_CONTENT, SESSION_METHODS)),
                false => Err(Error::SessionNotFound),
            },
            Method::OPTIONS => Ok(options(&req, state, SESSION_METHODS)),
            _ => Err(Error::MethodNotAllowed),
        }
    }
    .await;
    result.unwrap_or_else(|e| error_response(&e, SESSION_METHODS))
}

async fn patch(req: Request<Incoming>, state: &AppState, id: &SessionId) -> Result<Response<Body>> {
    require_content_type(req.headers(), SDP_FRAG)?;
    // One browser library sends the entity-tag as `ETag:` instead of `If-Match:`.
    let if_match = req
        .headers()
        .get(header::IF_MATCH)
        .or_else(|| req.headers().get(header::ETAG))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned());
    let body = read_text(req, &state.config, Error::MalformedFragment).await?;
    let frag = SdpFrag::parse(&body).map_err(|e| Error::MalformedFragment(e.to_string()))?;
    match state.sfu.patch(id, frag, if_match.as_deref()).await? {
        // RFC 9725 §4.3.2: 204, no body, no ETag.
        PatchOutcome::Trickled => Ok(empty(StatusCode::NO_CONTENT, SESSION_METHODS)),
        PatchOutcome::Restarted { fragment, etag } => {
            let mut response = with_cors(Response::new(Body::from(fragment)), SESSION_METHODS);
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP_FRAG));
            headers.insert(header::ETAG, header_value(&etag)?);
            Ok(response)
        }
    }
}

/// OPTIONS: CORS preflight, or (without `Access-Control-Request-Method`)
/// a discovery request that also gets the ICE servers (RFC 9725 §4.6).
fn options(req: &Request<Incoming>, state: &AppState, allow: &'static str) -> Response<Body> {
    let mut response = empty(StatusCode::OK, allow);
    let headers = response.headers_mut();
    headers.insert("accept-post", HeaderValue::from_static(SDP));
    headers.insert("accept-patch", HeaderValue::from_static(SDP_FRAG));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match, ETag"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    let preflight = req
        .headers()
        .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if !preflight {
        for link in ice_server_links(&state.config.ice_servers) {
            headers.append(header::LINK, link);
        }
    }
    response
}

/// The token of `Authorization: Bearer <token>`. A bare value without a
/// scheme is taken as the token too: Eyevinn's WHEP player sends its key
/// verbatim.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        Some(_) => return None,
        None => value,
    };
    (!token.is_empty()).then_some(token)
}

fn require_content_type(headers: &HeaderMap, expected: &'static str) -> Result<()> {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    match media_type {
        Some(t) if t.eq_ignore_ascii_case(expected) => Ok(()),
        _ => Err(Error::UnsupportedContentType { expected }),
    }
}

/// Reads a UTF-8 body of at most `config.max_body_bytes`, arriving within
/// `config.http_body_timeout`.
async fn read_text(
    req: Request<Incoming>,
    config: &Config,
    malformed: fn(String) -> Error,
) -> Result<String> {
    let limit = config.max_body_bytes;
    let body_timeout = config.http_body_timeout;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Error::BodyTooLarge { limit });
    }
    let collected =
        tokio::time::timeout(body_timeout, Limited::new(req.into_body(), limit).collect())
            .await
            .map_err(|_| Error::BodyTimeout {
                after: body_timeout,
            })?;
    let bytes: Bytes = collected
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Error::BodyTooLarge { limit }
            } else {
                malformed(format!("reading body: {e}"))
            }
        })?
        .to_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed("body is not UTF-8".into()))
}

fn header_value(s: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(s).map_err(|e| Error::Internal(format!("header value: {e}")))
}
