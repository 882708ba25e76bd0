//! The web console: a single-page app built from `gateway/console` (its
//! `dist/` is committed, see docs/console.md) and embedded in the binary, so
//! nothing but `vigil` is needed at run time.
//!
//! Every console route serves the same `index.html`; the page reads its
//! path (`/console/...`, `/join/{room}`, `/watch/{room}/{stream}`) and talks
//! to the control plane with gRPC-web on this same origin.

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};

use super::response::Body;
use crate::config::PublicUrl;
use crate::error::Error;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("../../console/dist/", $name)),
        }
    };
}

const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");

/// What `/assets/{name}` serves.
const ASSETS: &[Asset] = &[
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// Where the page may load from and connect to: only this origin (media
/// arrives over WebRTC, which `connect-src` does not govern).
const CSP: &str = "default-src 'self'; img-src 'self' data:; media-src 'self' blob: mediastream:; \
                   style-src 'self'; script-src 'self'; connect-src 'self'; base-uri 'none'; \
                   form-action 'self'";

/// Which pages another site may put in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Console and join pages carry credentials and buttons that act:
    /// never framed (clickjacking).
    Deny,
    /// The standalone player is meant to be embedded.
    Allow,
}

/// The app's page (GET/HEAD), for any console route.
pub fn page(method: &Method, framing: Framing) -> Response<Body> {
    let mut response = file(method, &INDEX);
    let frame_ancestors = match framing {
        Framing::Deny => "'none'",
        Framing::Allow => "*",
    };
    if let Ok(value) = HeaderValue::from_str(&format!("{CSP}; frame-ancestors {frame_ancestors}")) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    // Tokens travel in the URL fragment, which is never sent; this keeps
    // the page's own path out of other sites' logs as well.
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `/assets/{name}`.
pub fn asset(method: &Method, name: &str) -> Response<Body> {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => file(method, asset),
        None => super::response::error_response(&Error::RouteNotFound, "GET, HEAD"),
    }
}

/// `/console/config.json`: `{"publicUrl": "https://..." | null}`, the base
/// of the join and OBS links the console hands out (`--public-url`; `null`:
/// the page's own origin). Nothing secret: any page may read it.
pub fn config(method: &Method, public_url: Option<&PublicUrl>) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return super::response::error_response(&Error::MethodNotAllowed, "GET, HEAD");
    }
    let json = serde_json::json!({ "publicUrl": public_url.map(PublicUrl::as_str) }).to_string();
    let length = json.len();
    let body = if method == Method::HEAD {
        Body::default()
    } else {
        Body::from(json)
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `/ca.crt`: the `--tls-self-signed` CA, DER, with the type Android and
/// iOS offer to install as a trusted certificate. Public by nature (a
/// certificate, no key).
pub fn ca_certificate(method: &Method, der: &[u8]) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return super::response::error_response(&Error::MethodNotAllowed, "GET, HEAD");
    }
    let body = if method == Method::HEAD {
        Body::default()
    } else {
        Body::new(Bytes::copy_from_slice(der))
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-x509-ca-cert"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(der.len()));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"vigil-ca.crt\""),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `/`: the console.
pub fn redirect_to_console() -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/console/"));
    response
}

fn file(method: &Method, asset: &Asset) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return super::response::error_response(&Error::MethodNotAllowed, "GET, HEAD");
    }
    let body = if method == Method::HEAD {
        Body::default()
    } else {
        Body::new(Bytes::from_static(asset.bytes))
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.bytes.len()));
    // Names carry no hash: revalidate, a new binary may serve new files.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_loads_is_embedded() {
        let index = std::str::from_utf8(INDEX.bytes).unwrap();
        for name in ["app.js", "app.css", "favicon.svg"] {
            assert!(index.contains(&format!("/assets/{name}")), "{name}");
            assert_eq!(asset(&Method::GET, name).status(), StatusCode::OK);
        }
        assert_eq!(asset(&Method::GET, "nope.js").status(), 404);
    }

    #[test]
    fn only_the_player_may_be_framed() {
        let csp = |framing| {
            page(&Method::GET, framing).headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert!(csp(Framing::Deny).ends_with("frame-ancestors 'none'"));
        assert!(csp(Framing::Allow).ends_with("frame-ancestors *"));
    }
}
