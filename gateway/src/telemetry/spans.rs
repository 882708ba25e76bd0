//! The spans of a session's life.
//!
//! A WHIP or WHEP POST runs in its `http` span. The session it creates gets
//! a `session` span, a child of that POST's span, which lives as long as
//! the session: the room owner keeps it, logs each step of the session in
//! it (ICE connected, DTLS up, first packet, closed) and records why it
//! closed before dropping it. Answering the offer is its child span
//! `negotiate`. A viewer's session span links to the session span of the
//! stream's publisher, so a trace tool leads from a publisher's session to
//! everyone who watched it.
//!
//! Attributes: `vigil.room`, `vigil.stream`, `vigil.session`,
//! `vigil.participant`, `vigil.role`, and at the end `vigil.close_reason`.
//! The same fields appear on every log line of the session (with
//! `--log-format json`, in its `span` object), and `trace_id` too when
//! traces are exported, so a log line leads to its trace.

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// A new session's span (see the module documentation), a child of the
/// current span (the POST's).
pub fn session(
    role: &'static str,
    room: &dyn std::fmt::Display,
    stream: &dyn std::fmt::Display,
    session: &str,
    identity: &str,
) -> tracing::Span {
    let span = tracing::info_span!(
        target: "vigil::session",
        "session",
        otel.name = %format_args!("session {role}"),
        otel.kind = "internal",
        vigil.room = %room,
        vigil.stream = %stream,
        vigil.session = %session,
        vigil.participant = %identity,
        vigil.role = role,
        vigil.close_reason = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        error.message = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let context = span.context();
    let trace = context.span().span_context().trace_id();
    if trace != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace));
    }
    span
}

/// Marks a session span whose POST failed (the session never started):
/// its error, and `vigil.close_reason = "not_started"`.
pub fn not_started(span: &tracing::Span, error: &dyn std::fmt::Display) {
    span.record("vigil.close_reason", "not_started")
        .record("otel.status_code", "ERROR")
        .record("error.message", tracing::field::display(error));
}

/// Links `viewer`'s session span to `publisher`'s (no-op without traces).
pub fn link(viewer: &tracing::Span, publisher: &tracing::Span) {
    let context = publisher.context();
    let publisher = context.span().span_context().clone();
    if publisher.is_valid() {
        viewer.add_link(publisher);
    }
}

/// Makes `span` (a request's) continue the caller's trace when the request
/// carries W3C Trace Context (`traceparent`), so a client that traces
/// itself sees Vigil's spans in its own trace. No header: nothing changes.
pub fn continue_trace(span: &tracing::Span, headers: &hyper::HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let context = TraceContextPropagator::new().extract(&Headers(headers));
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// HTTP headers as OpenTelemetry's propagators read them.
struct Headers<'a>(&'a hyper::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}
