//! `GET /metrics`: every metric in Prometheus' text format, on the HTTP
//! port, or alone on `--metrics-listen` (which then serves nothing else).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};
use tokio::net::TcpListener;

use super::response::{self, Body};
use crate::telemetry::Telemetry;

/// The content type of Prometheus' text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The answer to `method` on `/metrics`.
pub async fn respond(method: &Method, telemetry: &Telemetry) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut refused = response::empty(StatusCode::METHOD_NOT_ALLOWED, "GET, HEAD");
        refused
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return refused;
    }
    let text = telemetry.prometheus_text().await;
    let length = text.len();
    let body = if method == Method::HEAD {
        Body::default()
    } else {
        Body::new(Bytes::from(text))
    };
    let mut answer = Response::new(body);
    let headers = answer.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer
}

/// Serves `/metrics` alone on `listener` until `shutdown` resolves; any
/// other path is 404.
pub async fn serve(
    listener: TcpListener,
    telemetry: Arc<Telemetry>,
    shutdown: impl Future<Output = ()>,
) {
    let header_timeout = Duration::from_secs(10);
    super::serve_plain(listener, header_timeout, shutdown, move |req| {
        let telemetry = telemetry.clone();
        async move {
            if req.uri().path() == "/metrics" {
                respond(req.method(), &telemetry).await
            } else {
                response::empty(StatusCode::NOT_FOUND, "GET, HEAD")
            }
        }
    })
    .await;
}
