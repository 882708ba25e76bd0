//! `--http-redirect-listen`: a plain-HTTP port that answers every request
//! with `308 Permanent Redirect` to the same path over HTTPS (308 keeps
//! the method and body, so a WHIP POST sent to `http://` is redirected as
//! a POST). Nothing else is served on it.

use std::future::Future;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

use super::response::Body;
use crate::config::PublicUrl;

/// Where redirects point.
#[derive(Debug, Clone)]
pub struct Target {
    /// `--public-url`: redirects go there.
    pub public_url: Option<PublicUrl>,
    /// Otherwise the request's host on this HTTPS port.
    pub https_port: u16,
}

impl Target {
    /// The HTTPS URL for a request to `host` (its `Host` header) and
    /// `path_and_query`; `None` when the host is missing or malformed.
    pub fn location(&self, host: Option<&str>, path_and_query: &str) -> Option<String> {
        if let Some(url) = &self.public_url {
            return Some(format!("{url}{path_and_query}"));
        }
        let authority: hyper::http::uri::Authority = host?.parse().ok()?;
        let host = authority.host();
        if host.is_empty() || authority.as_str().contains('@') {
            return None;
        }
        Some(match self.https_port {
            443 => format!("https://{host}{path_and_query}"),
            port => format!("https://{host}:{port}{path_and_query}"),
        })
    }
}

fn answer(req: &Request<Incoming>, target: &Target) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut response = Response::new(Body::default());
    match target
        .location(host, path)
        .and_then(|l| HeaderValue::from_str(&l).ok())
    {
        Some(location) => {
            *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
            response.headers_mut().insert(header::LOCATION, location);
        }
        None => *response.status_mut() = StatusCode::BAD_REQUEST,
    }
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    response
}

/// Redirects requests on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    target: Target,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    super::serve_plain(listener, header_timeout, shutdown, move |req| {
        let response = answer(&req, &target);
        std::future::ready(response)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_host_on_the_https_port() {
        let target = Target {
            public_url: None,
            https_port: 8443,
        };
        assert_eq!(
            target
                .location(Some("10.0.0.5:8080"), "/join/site-1?x=1")
                .as_deref(),
            Some("https://10.0.0.5:8443/join/site-1?x=1")
        );
        assert_eq!(
            target.location(Some("[fd00::5]:80"), "/").as_deref(),
            Some("https://[fd00::5]:8443/")
        );
        let standard = Target {
            public_url: None,
            https_port: 443,
        };
        assert_eq!(
            standard.location(Some("desk-7.lan"), "/").as_deref(),
            Some("https://desk-7.lan/")
        );
        assert_eq!(target.location(None, "/"), None);
        assert_eq!(target.location(Some("a b"), "/"), None);
        assert_eq!(target.location(Some("user@evil.example"), "/"), None);
    }

    #[test]
    fn the_public_url_wins() {
        let target = Target {
            public_url: Some("https://vigil.example.net".parse().unwrap()),
            https_port: 8443,
        };
        assert_eq!(
            target.location(Some("10.0.0.5"), "/whip/a/b").as_deref(),
            Some("https://vigil.example.net/whip/a/b")
        );
    }
}
