//! A span and a measurement for every gRPC and gRPC-web call.
//!
//! [`ObserveLayer`] wraps the control services on both ports. Each call
//! runs in a `grpc` span (OpenTelemetry's RPC conventions: `rpc.system`,
//! `rpc.service`, `rpc.method`, `rpc.grpc.status_code`) and, once its
//! status is known, is reported to [`CallMetrics`]. The status of a call
//! that answers at once is in its response headers ("trailers-only"); a
//! unary answer or a stream carries it in its trailers, so the response
//! body is watched for them. A stream the client drops ends `CANCELLED`.
//!
//! The method label is the request path (`vigil.v1.RoomService/CreateRoom`)
//! only for methods that exist: a call the router does not know ends
//! `UNIMPLEMENTED` and is labelled `unknown`, so clients cannot grow the
//! label set.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use tonic::Code;
use tracing::Instrument as _;

/// Where calls are counted (the gateway's metrics).
pub trait CallMetrics: Send + Sync + 'static {
    /// A call to `method` (`unknown` for one that does not exist) ended
    /// with `code` after `took`.
    fn call_ended(&self, method: &str, code: Code, took: Duration);
}

/// Where a call's span may pick up the caller's trace from its headers
/// (W3C Trace Context); the gateway's, which knows OpenTelemetry.
pub type ContinueTrace = fn(&tracing::Span, &http::HeaderMap);

/// Wraps a gRPC router: a span per call, and [`CallMetrics`] told of each.
#[derive(Clone, Default)]
pub struct ObserveLayer {
    metrics: Option<Arc<dyn CallMetrics>>,
    continue_trace: Option<ContinueTrace>,
}

impl ObserveLayer {
    /// Reports calls to `metrics` (spans are made either way), and lets
    /// `continue_trace` parent each call's span.
    pub fn new(
        metrics: Option<Arc<dyn CallMetrics>>,
        continue_trace: Option<ContinueTrace>,
    ) -> ObserveLayer {
        ObserveLayer {
            metrics,
            continue_trace,
        }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.metrics.clone(),
            continue_trace: self.continue_trace,
        }
    }
}

/// See [`ObserveLayer`].
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Option<Arc<dyn CallMetrics>>,
    continue_trace: Option<ContinueTrace>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Observe<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().trim_start_matches('/').to_owned();
        let (service, method) = path.split_once('/').unwrap_or((path.as_str(), ""));
        let span = tracing::info_span!(
            target: "vigil::grpc",
            "grpc",
            otel.name = %path,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        if let Some(continue_trace) = self.continue_trace {
            continue_trace(&span, request.headers());
        }
        let call = Call {
            path,
            started: Instant::now(),
            span: span.clone(),
            metrics: self.metrics.clone(),
        };
        let response = self.inner.call(request);
        Box::pin(
            async move {
                let response = response.await?;
                let (parts, body) = response.into_parts();
                if let Some(code) = status_in(&parts.headers) {
                    call.end(code);
                    return Ok(http::Response::from_parts(parts, body));
                }
                let body = Watched {
                    inner: body,
                    call: Some(call),
                };
                Ok(http::Response::from_parts(
                    parts,
                    tonic::body::Body::new(body),
                ))
            }
            .instrument(span),
        )
    }
}

/// The `grpc-status` in a header map.
fn status_in(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
}

/// A call whose status is not known yet.
struct Call {
    path: String,
    started: Instant,
    span: tracing::Span,
    metrics: Option<Arc<dyn CallMetrics>>,
}

impl Call {
    fn end(self, code: Code) {
        let took = self.started.elapsed();
        self.span
            .record("rpc.grpc.status_code", code as i32)
            .record(
                "otel.status_code",
                if code == Code::Ok { "OK" } else { "ERROR" },
            );
        let method = if code == Code::Unimplemented {
            "unknown"
        } else {
            self.path.as_str()
        };
        if let Some(metrics) = &self.metrics {
            metrics.call_ended(method, code, took);
        }
    }
}

/// A response body watched for the trailers that carry the status.
struct Watched {
    inner: tonic::body::Body,
    call: Option<Call>,
}

impl Body for Watched {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in)
                    && let Some(call) = self.call.take()
                {
                    call.end(code);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let code = status.code();
                if let Some(call) = self.call.take() {
                    call.end(code);
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = self.call.take() {
                    call.end(Code::Unknown);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // The client went away (or the server stopped) before the end.
        if let Some(call) = self.call.take() {
            call.end(Code::Cancelled);
        }
    }
}
