//! `--otlp-endpoint`: a WHIP publish and a WHEP play reach a test OTLP
//! collector (the collector's gRPC services from the OpenTelemetry protocol
//! definitions, served by this test) as linked spans, and the metrics as
//! OTLP metrics; the JSON log lines of a session carry the same ids.
//!
//! The server is the `vigil` binary: spans go through the process's global
//! `tracing` subscriber. SIGTERM ends it, which flushes both exporters.

use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use vigil_proto::v1 as pb;
use vigil_proto::v1::room_service_client::RoomServiceClient;
use vigil_tests::http_client::request;
use vigil_tests::otlp::Collector;
use vigil_tests::peers::{Publisher, Viewer};
use vigil_tests::process::VigilProcess;

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn string(span: &Span, key: &str) -> Option<String> {
    match attribute(&span.attributes, key)? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(span: &Span, key: &str) -> Option<i64> {
    match attribute(&span.attributes, key)? {
        Value::IntValue(v) => Some(*v),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The one span named `name`; panics listing every name otherwise.
fn one<'a>(spans: &'a [Span], name: &str, also: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name && also(s)).collect();
    assert_eq!(
        found.len(),
        1,
        "one span {name:?}; spans: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

fn event_names(span: &Span) -> Vec<&str> {
    span.events.iter().map(|e| e.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_and_a_play_reach_the_collector_as_linked_spans_and_metrics() {
    let collector = Collector::default();
    let endpoint = format!("http://{}", collector.start().await);
    let mut vigil =
        VigilProcess::start(&["--otlp-endpoint", &endpoint, "--log-format", "json"]).await;
    let base = vigil.base_url();

    let mut publisher = Publisher::connect(&base, "site", "cam").await;
    publisher.start_media();
    let viewer = Viewer::connect(&base, "site", "cam")
        .await
        .unwrap_or_else(|r| panic!("WHEP: {} {}", r.status, r.body));
    viewer.peer.wait_connected().await;
    viewer.wait_keyframes(2).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", vigil.grpc))
        .expect("endpoint")
        .connect()
        .await
        .expect("gRPC connect");
    let mut rooms = RoomServiceClient::new(channel);
    rooms
        .list_rooms(pb::ListRoomsRequest::default())
        .await
        .expect("ListRooms");
    let missing = rooms
        .get_room(pb::GetRoomRequest {
            name: "nowhere".into(),
        })
        .await
        .expect_err("no such room");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let deleted = request("DELETE", &viewer.session.url, &[], "").await;
    assert_eq!(deleted.status, 200);
    // A caller that traces itself (W3C Trace Context) gets Vigil's span
    // in its trace.
    let traced = request(
        "GET",
        &format!("{base}/readyz"),
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
        "",
    )
    .await;
    assert_eq!(traced.status, 200);
    // The viewer's close is handled before the server stops.
    tokio::time::sleep(Duration::from_millis(300)).await;

    vigil.signal(libc::SIGTERM);
    let status = vigil
        .exit_within(Duration::from_secs(15))
        .await
        .expect("vigil exits");
    assert!(status.success(), "exit {status}");
    let spans = collector.spans();

    // The WHIP POST and the publisher's session, its child.
    let whip = one(&spans, "POST /whip/{room}/{stream}", |_| true);
    assert_eq!(whip.kind, SpanKind::Server as i32);
    assert_eq!(
        int(whip, "http.response.status_code"),
        Some(201),
        "{:?}",
        whip.attributes
    );
    assert_eq!(string(whip, "url.path").as_deref(), Some("/whip/site/cam"));
    let publisher_span = one(&spans, "session publisher", |_| true);
    assert_eq!(
        publisher_span.parent_span_id, whip.span_id,
        "child of its POST"
    );
    assert_eq!(publisher_span.trace_id, whip.trace_id);
    for (key, expected) in [
        ("vigil.room", "site"),
        ("vigil.stream", "cam"),
        ("vigil.role", "publisher"),
        ("vigil.close_reason", "shutdown"),
    ] {
        assert_eq!(
            string(publisher_span, key).as_deref(),
            Some(expected),
            "{key}"
        );
    }
    let session_id = string(publisher_span, "vigil.session").expect("session id");
    assert!(session_id.len() >= 16, "{session_id}");
    assert!(string(publisher_span, "vigil.participant").is_some());
    let steps = event_names(publisher_span);
    for step in [
        "ICE connected",
        "DTLS up: session connected",
        "first packet: forwarding track",
        "session closed",
    ] {
        assert!(
            steps.contains(&step),
            "publisher step {step:?} in {steps:?}"
        );
    }
    let negotiate = one(&spans, "negotiate", |s| {
        s.parent_span_id == publisher_span.span_id
    });
    assert_eq!(negotiate.trace_id, publisher_span.trace_id);

    // The WHEP POST and the viewer's session, linked to the publisher's.
    let whep = one(&spans, "POST /whep/{room}/{stream}", |_| true);
    assert_eq!(int(whep, "http.response.status_code"), Some(201));
    let viewer_span = one(&spans, "session viewer", |_| true);
    assert_eq!(viewer_span.parent_span_id, whep.span_id);
    assert_eq!(
        string(viewer_span, "vigil.close_reason").as_deref(),
        Some("deleted")
    );
    assert!(
        viewer_span.links.iter().any(|link| {
            link.span_id == publisher_span.span_id && link.trace_id == publisher_span.trace_id
        }),
        "the viewer's session links to the publisher's: {:?}",
        viewer_span.links
    );
    let readyz = one(&spans, "GET /readyz", |_| true);
    assert_eq!(hex(&readyz.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&readyz.parent_span_id), "00f067aa0ba902b7");
    let delete = one(&spans, "DELETE /sessions/{id}", |_| true);
    assert_eq!(int(delete, "http.response.status_code"), Some(200));

    // gRPC calls, with their status codes.
    let list = one(&spans, "vigil.v1.RoomService/ListRooms", |_| true);
    assert_eq!(string(list, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(string(list, "rpc.method").as_deref(), Some("ListRooms"));
    assert_eq!(int(list, "rpc.grpc.status_code"), Some(0));
    let get = one(&spans, "vigil.v1.RoomService/GetRoom", |_| true);
    assert_eq!(
        int(get, "rpc.grpc.status_code"),
        Some(tonic::Code::NotFound as i64)
    );

    let resources = collector.resources.lock().unwrap().clone();
    assert!(
        resources.iter().any(|r| {
            matches!(attribute(r, "service.name"), Some(Value::StringValue(s)) if s == "vigil")
        }),
        "service.name is vigil"
    );

    // The metrics, pushed at shutdown at the latest.
    let metrics = collector.metrics.lock().unwrap().clone();
    let largest = |name: &str| {
        metrics
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, values)| values.iter().copied())
            .fold(None, |max: Option<f64>, v| {
                Some(max.map_or(v, |m| m.max(v)))
            })
    };
    let forwarded = largest("vigil_forwarded_packets").expect("vigil_forwarded_packets exported");
    assert!(forwarded > 0.0, "forwarded {forwarded}");
    assert!(largest("vigil_sessions_started").unwrap_or(0.0) >= 1.0);
    assert!(
        metrics
            .iter()
            .any(|(name, _)| name == "vigil_grpc_request_duration_seconds"),
        "gRPC requests exported"
    );

    // The JSON log: the publisher's lifecycle lines carry its session's
    // fields and trace id.
    let trace_id = hex(&publisher_span.trace_id);
    let lines: Vec<serde_json::Value> = vigil
        .log_lines()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let ice = lines
        .iter()
        .find(|line| {
            line["fields"]["message"] == "ICE connected"
                && line["span"]["vigil.session"] == session_id.as_str()
        })
        .expect("the publisher's ICE connected line, in its session span");
    assert_eq!(ice["span"]["trace_id"], trace_id.as_str(), "{ice}");
    assert_eq!(ice["span"]["vigil.role"], "publisher", "{ice}");
}
