//! `GET /metrics` during a live stream: the counters move with the media,
//! the session gauges and request counts say what happened, and the whole
//! exposition passes Prometheus' own checker (`promtool check metrics`:
//! it parses every line and lints names, units and `_total` suffixes).
//! With `--metrics-listen` the metrics move to their own address.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use vigil_tests::http_client::request;
use vigil_tests::peers::{Publisher, Viewer};
use vigil_tests::{base_url, eventually, start_server};

/// The value of the series `series` (name and labels exactly as
/// exposed, e.g. `vigil_sessions{role="viewer"}`).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
}

/// Runs `promtool check metrics` on `text`; panics with its complaints.
async fn promtool_check(text: &str) {
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; ./test.sh installs it)");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(text.as_bytes()).await.expect("write");
    drop(stdin);
    let out = child.wait_with_output().await.expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn scrape(url: &str) -> String {
    let response = request("GET", url, &[], "").await;
    assert_eq!(response.status, 200, "{url}: {}", response.body);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    response.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_live_stream_and_pass_promtool() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let url = format!("{base}/metrics");

    let idle = scrape(&url).await;
    promtool_check(&idle).await;
    assert_eq!(value(&idle, "vigil_forwarded_packets_total"), Some(0.0));
    assert_eq!(
        value(&idle, "vigil_sessions{role=\"publisher\"}"),
        Some(0.0)
    );

    let mut publisher = Publisher::connect(&base, "site", "cam").await;
    publisher.start_media();
    let viewer = Viewer::connect(&base, "site", "cam")
        .await
        .unwrap_or_else(|r| panic!("WHEP: {} {}", r.status, r.body));
    viewer.peer.wait_connected().await;
    viewer.wait_keyframes(2).await;

    let first = scrape(&url).await;
    // The viewer's packets were counted by the time it had them.
    let forwarded = value(&first, "vigil_forwarded_packets_total").expect("forwarded packets");
    assert!(forwarded > 0.0, "forwarded {forwarded}");
    let received = eventually(Duration::from_secs(5), "more packets forwarded", || {
        let url = url.clone();
        async move {
            let later = scrape(&url).await;
            let now = value(&later, "vigil_forwarded_packets_total")?;
            (now > forwarded).then_some(later)
        }
    })
    .await;
    promtool_check(&received).await;

    for (series, expected) in [
        ("vigil_sessions{role=\"publisher\"}", 1.0),
        ("vigil_sessions{role=\"viewer\"}", 1.0),
        ("vigil_sessions_started_total{role=\"publisher\"}", 1.0),
        ("vigil_sessions_started_total{role=\"viewer\"}", 1.0),
        ("vigil_rooms", 1.0),
        ("vigil_streams", 1.0),
    ] {
        assert_eq!(value(&received, series), Some(expected), "{series}");
    }
    assert!(value(&received, "vigil_forwarded_bytes_total").unwrap_or(0.0) > 10_000.0);
    assert!(value(&received, "vigil_media_datagrams_received_total").unwrap_or(0.0) > 0.0);
    // The WHIP and WHEP POSTs, by route and status, never by room.
    for route in ["/whip/{room}/{stream}", "/whep/{room}/{stream}"] {
        let series = format!(
            "vigil_http_request_duration_seconds_count{{method=\"POST\",route=\"{route}\",status=\"201\"}}"
        );
        assert_eq!(value(&received, &series), Some(1.0), "{series}");
    }
    assert!(
        !received.contains("site") && !received.contains("cam"),
        "no room or stream name in the labels"
    );

    // gRPC calls, by method and status code.
    let mut clients = vigil_tests::control::clients(&vigil).await;
    clients
        .rooms
        .list_rooms(vigil_proto::v1::ListRoomsRequest::default())
        .await
        .expect("ListRooms");
    let missing = clients
        .rooms
        .get_room(vigil_proto::v1::GetRoomRequest {
            name: "nowhere".into(),
        })
        .await
        .expect_err("no such room");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let grpc = scrape(&url).await;
    for (method, code) in [("ListRooms", "OK"), ("GetRoom", "NOT_FOUND")] {
        let series = format!(
            "vigil_grpc_request_duration_seconds_count{{code=\"{code}\",method=\"vigil.v1.RoomService/{method}\"}}"
        );
        assert_eq!(value(&grpc, &series), Some(1.0), "{series}\n{grpc}");
    }

    // The viewer leaves: counted with its reason.
    let deleted = request("DELETE", &viewer.session.url, &[], "").await;
    assert_eq!(deleted.status, 200);
    let after = scrape(&url).await;
    assert_eq!(
        value(
            &after,
            "vigil_sessions_closed_total{reason=\"deleted\",role=\"viewer\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(value(&after, "vigil_sessions{role=\"viewer\"}"), Some(0.0));
    promtool_check(&after).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_them_on_their_own_address_only() {
    let vigil = start_server(|config| {
        config.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let metrics = vigil.metrics_addr.expect("bound metrics address");
    let text = scrape(&format!("http://{metrics}/metrics")).await;
    assert!(text.contains("vigil_sessions"), "{text}");
    let elsewhere = request("GET", &format!("http://{metrics}/healthz"), &[], "").await;
    assert_eq!(elsewhere.status, 404);
    let main_port = request("GET", &format!("{}/metrics", base_url(&vigil)), &[], "").await;
    assert_eq!(main_port.status, 404, "not on the HTTP port any more");
    let head = request("HEAD", &format!("http://{metrics}/metrics"), &[], "").await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let post = request("POST", &format!("http://{metrics}/metrics"), &[], "").await;
    assert_eq!(post.status, 405);
}
