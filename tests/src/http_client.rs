//! A minimal HTTP/1.1 client for WHIP/WHEP requests.

use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A response, fully read.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body as text.
    pub body: String,
}

impl HttpResponse {
    /// A header's value as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }
}

/// The CAs `https://` URLs are checked against (Vigil's self-signed CA in
/// the TLS tests); none: every https request fails verification.
static TRUSTED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Makes [`request`] (and every helper built on it, such as the WHIP/WHEP
/// peers) trust `ca_der` for `https://` URLs, in this test process.
pub fn trust(ca_der: &[u8]) {
    TRUSTED.lock().unwrap().push(ca_der.to_vec());
}

/// A TLS client configuration trusting only [`trust`]ed CAs, offering
/// the ALPN protocols `alpn`.
pub fn tls_client_config(alpn: &[&[u8]]) -> tokio_rustls::rustls::ClientConfig {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for der in TRUSTED.lock().unwrap().iter() {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .expect("a trusted CA");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .expect("default versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Sends `req` over a new TLS connection to its URL's host.
async fn send_tls(
    req: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let uri = req.uri().clone();
    let host = uri
        .host()
        .ok_or("no host")?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    let name =
        tokio_rustls::rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
    let connector =
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls_client_config(&[b"http/1.1"])));
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// Sends one request and reads the whole response; `https://` URLs go
/// over TLS, trusting the CAs given to [`trust`].
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> HttpResponse {
    try_request(method, url, headers, body)
        .await
        .expect("HTTP request")
}

/// [`request`], with a failure to connect or to complete TLS returned.
pub async fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<HttpResponse, String> {
    let mut builder = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("method"))
        .uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let req = builder.body(Full::new(body.into())).expect("request");
    let response = if url.starts_with("https://") {
        send_tls(req).await?
    } else {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        client.request(req).await.map_err(|e| e.to_string())?
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// GETs `url` and returns the body's bytes (panics unless 200).
pub async fn request_bytes(url: &str) -> Vec<u8> {
    let req = Request::builder()
        .uri(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = if url.starts_with("https://") {
        send_tls(req).await.expect("HTTPS request")
    } else {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        client.request(req).await.expect("HTTP request")
    };
    assert_eq!(response.status(), 200, "GET {url}");
    response
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes()
        .to_vec()
}

/// POSTs an SDP offer.
pub async fn post_sdp(url: &str, offer: &str) -> HttpResponse {
    request(
        "POST",
        url,
        &[("content-type", "application/sdp")],
        offer.to_owned(),
    )
    .await
}

/// POSTs an SDP offer with `Authorization: Bearer <token>` when given.
pub async fn post_sdp_as(url: &str, offer: &str, token: Option<&str>) -> HttpResponse {
    let authorization = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/sdp")];
    if let Some(value) = &authorization {
        headers.push(("authorization", value));
    }
    request("POST", url, &headers, offer.to_owned()).await
}
