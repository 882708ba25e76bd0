//! DELETE ends sessions and frees everything they held: no session, stream
//! or room left, no forwarder or writer task, no socket, no runtime task.

use std::time::Duration;

use vigil_gateway::sfu::Stats;
use vigil_tests::peers::{Publisher, Viewer};
use vigil_tests::{base_url, eventually, start_server};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_frees_sessions_tasks_and_sockets() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    // Warm up lazily created process-wide state (thread pools, caches) so the
    // baseline counts only what sessions create.
    {
        let publisher = Publisher::connect(&base, "warm", "up").await;
        assert_eq!(publisher.delete().await, 200);
        publisher.peer.pc.close().await.expect("close");
    }
    eventually(Duration::from_secs(10), "warm-up cleared", || async {
        (vigil.sfu.stats().await.ok()? == Stats::default()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fds_before, tasks_before) = (open_fds(), alive_tasks());

    let mut publisher = Publisher::connect(&base, "site", "cam").await;
    publisher.start_media();
    let mut viewers = Vec::new();
    for _ in 0..3 {
        let viewer = Viewer::connect(&base, "site", "cam")
            .await
            .expect("WHEP 201");
        viewer.peer.wait_connected().await;
        viewers.push(viewer);
    }
    for viewer in &viewers {
        viewer.wait_video().await;
    }
    let live = vigil.sfu.stats().await.expect("stats");
    assert_eq!(
        (live.rooms, live.streams, live.publishers, live.viewers),
        (1, 1, 1, 3)
    );
    assert_eq!(live.forwarders, 2, "one forwarder per published track");
    assert_eq!(live.viewer_writers, 6, "one writer per viewer track");
    assert!(open_fds() > fds_before, "sessions hold sockets");

    for viewer in &viewers {
        assert_eq!(viewer.delete().await, 200, "DELETE viewer");
        assert_eq!(viewer.delete().await, 404, "second DELETE");
    }
    publisher.stop_media();
    assert_eq!(publisher.delete().await, 200, "DELETE publisher");
    assert_eq!(publisher.delete().await, 404, "second DELETE");
    for viewer in &viewers {
        viewer.peer.pc.close().await.expect("close viewer");
    }
    publisher.peer.pc.close().await.expect("close publisher");
    drop(viewers);
    drop(publisher);

    eventually(
        Duration::from_secs(10),
        "no sessions or tasks in the SFU",
        || async { (vigil.sfu.stats().await.ok()? == Stats::default()).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "sockets and runtime tasks released",
        || async { (open_fds() <= fds_before && alive_tasks() <= tasks_before).then_some(()) },
    )
    .await;
    vigil.shutdown().await;
}
