//! Scratch: an RTSP camera through Vigil to a WHEP viewer.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_control::camera::{CameraSpec, CameraTransport};
use vigil_control::{RoomName, StreamName};
use vigil_tests::peers::Viewer;
use vigil_tests::{base_url, eventually, start_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_plays() {
    let mut server = Command::new("/usr/bin/python3")
        .args([
            "/work/cam-rtsp/tests/rtsp/server.py",
            "--port",
            "0",
            "--video",
            "h264",
            "--audio",
            "pcmu",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().strip_prefix("READY ").unwrap().to_owned();
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    vigil.cameras.start_camera(CameraSpec {
        room: RoomName::new("site").unwrap(),
        identity: StreamName::new("gate").unwrap(),
        url,
        username: String::new(),
        password: String::new(),
        transport: CameraTransport::Tcp,
        on_demand: false,
        created_at_ms: 0,
    });
    let viewer = eventually(Duration::from_secs(10), "WHEP 201", || async {
        Viewer::connect(&base, "site", "gate").await.ok()
    })
    .await;
    viewer.peer.wait_connected().await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprintln!(
            "video {} audio {} stats {:?}",
            viewer.video().len(),
            viewer.audio_count(),
            vigil.sfu.stats().await
        );
    }
    let video = viewer.video();
    eprintln!(
        "video {} audio {} first keyframe {}",
        video.len(),
        viewer.audio_count(),
        video[0].keyframe_start()
    );
    eprintln!("codecs {:?}", viewer.received.lock().unwrap().codecs);
    server.kill().unwrap();
    vigil.shutdown().await;
}
