//! WHIP and WHEP signalling as RFC 9725 defines it, nothing server-specific:
//! POST an SDP offer, read the answer and `Location` from the 201, DELETE
//! the session when done.

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The URL is not http:// on a loopback address.
    #[error("{0}: only http:// URLs on this machine's loopback are measured")]
    NotLoopback(String),
    /// Connecting or sending failed.
    #[error("request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    /// The response body could not be read.
    #[error("reading the response: {0}")]
    Body(#[from] hyper::Error),
    /// The server answered with something other than what the spec asks for.
    #[error("{request}: {status} {body}")]
    Status {
        /// Method and URL.
        request: String,
        status: StatusCode,
        body: String,
    },
    /// A 201 without a usable `Location`.
    #[error("201 without a valid Location header")]
    Location,
}

/// Cloneable: one connection pool shared by all concurrent joins.
#[derive(Clone)]
pub struct Signal {
    client: Client<HttpConnector, Full<Bytes>>,
    token: Option<String>,
}

/// A created WHIP/WHEP session.
#[derive(Debug)]
pub struct Session {
    pub answer: String,
    pub location: Uri,
}

impl Signal {
    pub fn new(token: Option<String>) -> Signal {
        Signal {
            client: Client::builder(TokioExecutor::new()).build_http(),
            token,
        }
    }

    /// POSTs `offer` to a WHIP or WHEP endpoint.
    pub async fn create(&self, url: &Uri, offer: String) -> Result<Session, SignalError> {
        let request = self
            .request(Method::POST, url)
            .header(CONTENT_TYPE, "application/sdp")
            .body(Full::new(Bytes::from(offer)))
            .expect("method, URI and headers are valid");
        let response = self.client.request(request).await?;
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.into_body().collect().await?.to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        if status != StatusCode::CREATED {
            return Err(SignalError::Status {
                request: format!("POST {url}"),
                status,
                body,
            });
        }
        let location = location
            .and_then(|l| resolve(url, &l))
            .ok_or(SignalError::Location)?;
        Ok(Session {
            answer: body,
            location,
        })
    }

    /// Ends a session (any 2xx is success).
    pub async fn delete(&self, location: &Uri) -> Result<(), SignalError> {
        let request = self
            .request(Method::DELETE, location)
            .body(Full::new(Bytes::new()))
            .expect("method, URI and headers are valid");
        let response = self.client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(SignalError::Status {
                request: format!("DELETE {location}"),
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(())
    }

    fn request(&self, method: Method, url: &Uri) -> hyper::http::request::Builder {
        let builder = Request::builder().method(method).uri(url.clone());
        match &self.token {
            Some(token) => builder.header(AUTHORIZATION, format!("Bearer {token}")),
            None => builder,
        }
    }
}

/// Parses an endpoint URL, refusing anything but http:// on loopback: the
/// tool reads the server's CPU from /proc, so the server is on this machine.
pub fn loopback_url(url: &str) -> Result<Uri, SignalError> {
    let refuse = || SignalError::NotLoopback(url.to_owned());
    let uri: Uri = url.parse().map_err(|_| refuse())?;
    let host = uri.host().ok_or_else(refuse)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if uri.scheme_str() != Some("http") || !loopback {
        return Err(refuse());
    }
    Ok(uri)
}

/// Resolves a `Location` against the endpoint URL (RFC 3986 §5.2, for the
/// forms servers send: absolute URL, absolute path, relative path).
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    if location.contains("://") {
        let uri: Uri = location.parse().ok()?;
        // The session lives on the same origin; anything else is not ours to call.
        return (uri.authority() == base.authority()).then_some(uri);
    }
    let path = if location.starts_with('/') {
        location.to_owned()
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(dir, _)| dir);
        format!("{dir}/{location}")
    };
    Uri::builder()
        .scheme(base.scheme()?.clone())
        .authority(base.authority()?.clone())
        .path_and_query(path)
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_forms_resolve_against_the_endpoint() {
        let base: Uri = "http://127.0.0.1:8080/whep/site/cam".parse().unwrap();
        let resolved = |l: &str| resolve(&base, l).map(|u| u.to_string());
        assert_eq!(
            resolved("/sessions/ab12").as_deref(),
            Some("http://127.0.0.1:8080/sessions/ab12")
        );
        assert_eq!(
            resolved("cam/ab12").as_deref(),
            Some("http://127.0.0.1:8080/whep/site/cam/ab12")
        );
        assert_eq!(
            resolved("http://127.0.0.1:8080/r/1").as_deref(),
            Some("http://127.0.0.1:8080/r/1")
        );
        assert_eq!(resolved("http://10.0.0.1:8080/r/1"), None);
    }

    #[test]
    fn only_loopback_http_endpoints_are_accepted() {
        assert!(loopback_url("http://127.0.0.1:18080/whip/a/b").is_ok());
        assert!(loopback_url("http://localhost/whip/a/b").is_ok());
        assert!(loopback_url("http://[::1]:80/whep/a/b").is_ok());
        assert!(loopback_url("http://10.1.2.3/whip/a/b").is_err());
        assert!(loopback_url("https://127.0.0.1/whip/a/b").is_err());
        assert!(loopback_url("not a url").is_err());
    }
}
