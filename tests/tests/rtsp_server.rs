//! The test camera (`tests/rtsp/server.py`, tests/src/rtsp.rs) checked with
//! an independent client, FFmpeg, before any Vigil code relies on it: each
//! variant offers the codecs it claims, video frames flow at real time,
//! wrong credentials get 401, and after a kill it serves again on the same
//! URL once restarted.

use std::time::{Duration, Instant};

use tokio::process::Command;
use vigil_tests::rtsp::{RtspAudio, RtspOptions, RtspServer, RtspVideo};

/// What `ffprobe -rtsp_transport tcp` reports: the codec names in stream
/// order, or its error output.
async fn probe(url: &str) -> Result<Vec<String>, String> {
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        Command::new("ffprobe")
            .args(["-v", "error", "-rtsp_transport", "tcp"])
            .args(["-show_entries", "stream=codec_name", "-of", "csv=p=0"])
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("ffprobe finished within 20 s")
    .expect("run ffprobe (Debian's ffmpeg, installed by test.sh)");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Decodes 60 video frames (2 s of the camera's 30 fps) with FFmpeg and
/// returns how long that took.
async fn decode_60_frames(url: &str) -> Duration {
    let start = Instant::now();
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i"])
            .arg(url)
            .args(["-map", "0:v", "-frames:v", "60", "-f", "null", "-"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("ffmpeg decoded 60 frames within 20 s")
    .expect("run ffmpeg");
    assert!(
        output.status.success(),
        "ffmpeg failed on {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    start.elapsed()
}

async fn assert_serves(video: RtspVideo, audio: RtspAudio, expected: &[&str]) {
    let camera = RtspServer::start(RtspOptions {
        video,
        audio,
        ..RtspOptions::default()
    })
    .await;
    let codecs = probe(camera.url()).await.expect("ffprobe reads the camera");
    assert_eq!(codecs, expected, "{video:?} + {audio:?}");
    // 60 frames at 30 fps: 2 s of stream, paced in real time (not a file
    // read at full speed), and not stalled.
    let took = decode_60_frames(camera.url()).await;
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "60 frames of {video:?} in {took:?}"
    );
}

#[tokio::test]
async fn h264_and_pcmu() {
    assert_serves(RtspVideo::H264, RtspAudio::Pcmu, &["h264", "pcm_mulaw"]).await;
}

#[tokio::test]
async fn h264_and_opus() {
    assert_serves(RtspVideo::H264, RtspAudio::Opus, &["h264", "opus"]).await;
}

#[tokio::test]
async fn h265_and_aac() {
    assert_serves(RtspVideo::H265, RtspAudio::Aac, &["hevc", "aac"]).await;
}

#[tokio::test]
async fn wrong_credentials_get_401() {
    let camera = RtspServer::start(RtspOptions {
        user: Some("viewer".into()),
        password: Some("s3cret".into()),
        ..RtspOptions::default()
    })
    .await;
    assert_eq!(
        probe(&camera.url_with_credentials()).await.as_deref(),
        Ok(&["h264".to_string(), "pcm_mulaw".to_string()][..]),
        "the right credentials are accepted"
    );
    let wrong = camera.url().replacen("rtsp://", "rtsp://viewer:wrong@", 1);
    let refused = probe(&wrong)
        .await
        .expect_err("a wrong password is refused");
    assert!(refused.contains("401"), "ffprobe said: {refused}");
    let anonymous = probe(camera.url())
        .await
        .expect_err("no credentials are refused");
    assert!(anonymous.contains("401"), "ffprobe said: {anonymous}");
}

#[tokio::test]
async fn serves_again_after_kill_and_restart() {
    let mut camera = RtspServer::start(RtspOptions::default()).await;
    let url = camera.url().to_string();
    assert!(probe(&url).await.is_ok());
    // A client pulling when the power goes, as Vigil will be.
    let mut pulling = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i"])
        .arg(&url)
        .args(["-f", "null", "-"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run ffmpeg");
    decode_60_frames(&url).await;
    assert!(
        pulling.try_wait().expect("ffmpeg's status").is_none(),
        "the puller stopped while the camera ran"
    );

    camera.kill().await;
    assert!(!camera.is_running());
    tokio::time::timeout(Duration::from_secs(10), pulling.wait())
        .await
        .expect("the puller noticed the camera died")
        .expect("ffmpeg's status");
    let refused = probe(&url).await.expect_err("a dead camera serves nothing");
    assert!(
        refused.contains("Connection refused"),
        "ffprobe said: {refused}"
    );

    camera.restart().await;
    assert_eq!(camera.url(), url, "same port after the restart");
    assert_eq!(
        probe(&url).await.as_deref(),
        Ok(&["h264".to_string(), "pcm_mulaw".to_string()][..])
    );
    decode_60_frames(&url).await;
}
