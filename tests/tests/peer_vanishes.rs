//! A peer that disappears without DELETE or DTLS close (its process dies) is
//! reaped when ICE consent fails, and leaves nothing behind.

use std::time::Duration;

use vigil_gateway::sfu::Stats;
use vigil_tests::peers::{Publisher, Viewer};
use vigil_tests::{base_url, eventually, start_server};

/// Runs a publisher on its own runtime thread, then kills that runtime
/// without letting it say goodbye: its sockets close, no DTLS alert is sent.
fn publish_then_die(
    base: String,
    die: std::sync::mpsc::Receiver<()>,
) -> std::thread::JoinHandle<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let publisher = runtime.block_on(async {
            let mut publisher = Publisher::connect(&base, "r", "s").await;
            publisher.start_media();
            publisher
        });
        ready_tx.send(()).expect("ready");
        let _ = die.recv();
        // Dropping the publisher would close politely; a crash does not.
        std::mem::forget(publisher);
        runtime.shutdown_background();
    });
    ready_rx.recv().expect("publisher thread started");
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_publisher_is_reaped_and_its_viewers_released() {
    let vigil = start_server(|c| c.republish_grace = Duration::from_secs(1)).await;
    let base = base_url(&vigil);
    let (die, died) = std::sync::mpsc::channel();
    let thread = publish_then_die(base.clone(), died);
    let viewer = Viewer::connect(&base, "r", "s").await.expect("WHEP 201");
    viewer.peer.wait_connected().await;
    viewer.wait_video().await;

    die.send(()).expect("kill publisher");
    thread.join().expect("publisher thread");
    // ICE: 2 s to disconnected, 3 s more to failed (test config), then the grace.
    eventually(Duration::from_secs(20), "publisher reaped", || async {
        (vigil.sfu.stats().await.ok()?.publishers == 0).then_some(())
    })
    .await;
    viewer.peer.pc.close().await.expect("close viewer");
    eventually(Duration::from_secs(20), "everything released", || async {
        (vigil.sfu.stats().await.ok()? == Stats::default()).then_some(())
    })
    .await;
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_that_never_connects_is_reaped() {
    let vigil = start_server(|c| c.connect_timeout = Duration::from_secs(1)).await;
    let base = base_url(&vigil);
    let mut publisher = Publisher::connect(&base, "r", "s").await;
    publisher.start_media();
    // A viewer that POSTs and never applies the answer.
    let peer =
        vigil_tests::peers::ClientPeer::new(vigil_tests::peers::ClientCodecs::Defaults).await;
    for kind in [rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Video] {
        peer.pc
            .add_transceiver_from_kind(
                kind,
                Some(rtc::rtp_transceiver::RTCRtpTransceiverInit {
                    direction: rtc::rtp_transceiver::RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await
            .expect("transceiver");
    }
    let offer = peer.offer().await;
    peer.pc.close().await.expect("close");
    let response = vigil_tests::http_client::post_sdp(&format!("{base}/whep/r/s"), &offer).await;
    assert_eq!(response.status, 201);
    assert_eq!(vigil.sfu.stats().await.expect("stats").viewers, 1);
    eventually(
        Duration::from_secs(10),
        "unconnected viewer reaped",
        || async { (vigil.sfu.stats().await.ok()?.viewers == 0).then_some(()) },
    )
    .await;
    drop(publisher);
    vigil.shutdown().await;
}
