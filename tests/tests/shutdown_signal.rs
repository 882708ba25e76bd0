//! Stopping is a drain, not a crash: SIGTERM (what systemd, Docker and
//! Kubernetes send) closes every session as DELETE does, tells watchers
//! why, and exits 0; while draining, new sessions are refused with 503 and
//! readiness turns false, and the sessions there keep flowing.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::peer_connection::transport::RTCDtlsTransportState;
use tonic_health::pb::health_check_response::ServingStatus;
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::control::Watcher;
use vigil_tests::http_client::request;
use vigil_tests::peers::{Publisher, Viewer, live_stream, viewer_peer};
use vigil_tests::process::VigilProcess;
use vigil_tests::{base_url, start_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_session_tells_watchers_and_exits_zero() {
    let mut vigil = VigilProcess::start(&["--drain-secs", "10"]).await;
    let base = vigil.base_url();
    let mut watcher = Watcher::start_at(vigil.grpc, "open", pb::WatchRequest::default()).await;
    let mut publisher = Publisher::connect(&base, "site", "cam").await;
    publisher.start_media();
    let mut viewers = Vec::new();
    for _ in 0..2 {
        let viewer = Viewer::connect(&base, "site", "cam")
            .await
            .unwrap_or_else(|r| panic!("WHEP: {} {}", r.status, r.body));
        viewer.peer.wait_connected().await;
        viewer.wait_video().await;
        viewers.push(viewer);
    }
    // The watcher has seen all three join before the signal.
    let mut joined = 0;
    watcher
        .wait_for(Duration::from_secs(10), "three ParticipantJoined", |e| {
            joined += usize::from(matches!(e.kind, Some(Kind::ParticipantJoined(_))));
            (joined == 3).then_some(())
        })
        .await;

    vigil.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let status = vigil
        .exit_within(Duration::from_secs(10))
        .await
        .expect("vigil exits within --drain-secs");
    eprintln!("exit {status} {:?} after SIGTERM", signalled.elapsed());
    assert!(status.success(), "exit status after SIGTERM: {status}");

    // Closed, not timed out: each client got a DTLS close_notify (its ICE
    // would take 5 s to notice a silent server, and the process is gone).
    let peers = std::iter::once(&publisher.peer).chain(viewers.iter().map(|v| &v.peer));
    for (i, peer) in peers.enumerate() {
        let closed = vigil_tests::poll_until(Duration::from_secs(2), || async {
            (peer.dtls_state().await == Some(RTCDtlsTransportState::Closed)).then_some(())
        })
        .await;
        eprintln!(
            "peer {i}: DTLS {:?}, connection {:?}, {:?} after SIGTERM",
            peer.dtls_state().await,
            *peer.state.borrow(),
            signalled.elapsed()
        );
        assert!(closed.is_some(), "peer {i} was told its connection closed");
    }

    let events = watcher
        .until_end(Duration::from_secs(5))
        .await
        .expect("the event feed ends with the server");
    let mut left: Vec<(i32, String, i32)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::ParticipantLeft(left)) => {
                Some((left.role, left.stream.clone(), left.reason))
            }
            _ => None,
        })
        .collect();
    left.sort();
    let shutdown = pb::LeaveReason::ServerShutdown as i32;
    let (publisher_role, viewer_role) = (
        pb::SessionRole::Publisher as i32,
        pb::SessionRole::Viewer as i32,
    );
    let mut expected = vec![
        (publisher_role, "cam".to_owned(), shutdown),
        (viewer_role, "cam".to_owned(), shutdown),
        (viewer_role, "cam".to_owned(), shutdown),
    ];
    expected.sort();
    assert_eq!(left, expected, "ParticipantLeft events after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_refuses_new_sessions_and_keeps_the_ones_there() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let (_publisher, viewer) = live_stream(&base, "site", "cam").await;
    let ready = request("GET", &format!("{base}/readyz"), &[], Bytes::new()).await;
    assert_eq!(ready.status, 200, "ready before draining");

    vigil.start_draining();

    let ready = request("GET", &format!("{base}/readyz"), &[], Bytes::new()).await;
    assert_eq!(ready.status, 503, "/readyz while draining");
    let alive = request("GET", &format!("{base}/healthz"), &[], Bytes::new()).await;
    assert_eq!(alive.status, 200, "/healthz: the process still answers");

    let offer = viewer_peer().await.offer().await;
    let refused = request(
        "POST",
        &format!("{base}/whep/site/cam"),
        &[("content-type", "application/sdp")],
        Bytes::from(offer),
    )
    .await;
    assert_eq!(
        refused.status, 503,
        "WHEP POST while draining: {}",
        refused.body
    );
    assert!(
        refused.headers.contains_key("retry-after"),
        "503 says when to retry"
    );

    assert_eq!(
        vigil_tests::control::health(&vigil).await,
        [ServingStatus::NotServing; 4],
        "gRPC health of {:?} while draining",
        vigil_tests::control::HEALTH_SERVICES
    );

    // The session that was there keeps receiving.
    let before = viewer.video().len();
    vigil_tests::eventually(
        Duration::from_secs(5),
        "more video while draining",
        || async { (viewer.video().len() > before + 20).then_some(()) },
    )
    .await;
    vigil.shutdown().await;
}
