//! A test IP camera: `tests/rtsp/server.py` (GStreamer's RTSP server) run
//! as a child process on 127.0.0.1, for the RTSP ingest tests (issue 16).
//! It can be killed (a camera losing power) and restarted on the same
//! port with the same media.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The interpreter with GStreamer's Python bindings (Debian's `python3-gi`,
/// installed by test.sh): the `python3` on PATH may be another build
/// without them.
const PYTHON: &str = "/usr/bin/python3";

/// How long the server may take to print `READY`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// The camera's video.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtspVideo {
    /// `tests/fixtures/video.h264` looped (320x240, 30 fps, an IDR with
    /// SPS/PPS every second).
    H264,
    /// A test pattern encoded by x265 (320x240, 30 fps, GOP 30).
    H265,
    /// No video track.
    None,
}

/// The camera's audio: a 440 Hz tone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtspAudio {
    /// G.711 µ-law, 8 kHz mono (payload type 0).
    Pcmu,
    /// G.711 A-law, 8 kHz mono (payload type 8).
    Pcma,
    /// Opus, 48 kHz stereo.
    Opus,
    /// AAC-LC, 16 kHz mono, as `mpeg4-generic` (RFC 3640), as cameras send.
    Aac,
    /// No audio track.
    None,
}

impl RtspVideo {
    fn arg(self) -> &'static str {
        match self {
            RtspVideo::H264 => "h264",
            RtspVideo::H265 => "h265",
            RtspVideo::None => "none",
        }
    }
}

impl RtspAudio {
    fn arg(self) -> &'static str {
        match self {
            RtspAudio::Pcmu => "pcmu",
            RtspAudio::Pcma => "pcma",
            RtspAudio::Opus => "opus",
            RtspAudio::Aac => "aac",
            RtspAudio::None => "none",
        }
    }
}

/// What the camera serves.
#[derive(Clone, Debug)]
pub struct RtspOptions {
    pub video: RtspVideo,
    pub audio: RtspAudio,
    /// With `password`: RTSP Digest authentication required (401 without).
    pub user: Option<String>,
    pub password: Option<String>,
    /// `None`: a port the kernel chooses (kept across [`RtspServer::restart`]).
    pub port: Option<u16>,
}

impl Default for RtspOptions {
    /// H.264 and PCMU, no authentication, any port.
    fn default() -> Self {
        RtspOptions {
            video: RtspVideo::H264,
            audio: RtspAudio::Pcmu,
            user: None,
            password: None,
            port: None,
        }
    }
}

/// A running test camera; killed when dropped.
pub struct RtspServer {
    child: Option<Child>,
    /// Client connections it has accepted, across restarts.
    connections: Arc<AtomicUsize>,
    options: RtspOptions,
    port: u16,
    url: String,
}

/// `tests/rtsp/server.py`
pub fn server_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rtsp/server.py")
}

impl RtspServer {
    /// Starts the camera and waits until it listens; panics with its
    /// stderr if it does not within 15 s.
    pub async fn start(options: RtspOptions) -> RtspServer {
        let port = options.port.unwrap_or(0);
        let connections = Arc::new(AtomicUsize::new(0));
        let (child, url) = spawn(&options, port, connections.clone()).await;
        let port = url
            .strip_prefix("rtsp://127.0.0.1:")
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in the camera's URL {url}"));
        RtspServer {
            child: Some(child),
            connections,
            options,
            port,
            url,
        }
    }

    /// `rtsp://127.0.0.1:PORT/cam`, without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `rtsp://USER:PASSWORD@127.0.0.1:PORT/cam` (the plain URL without
    /// credentials).
    pub fn url_with_credentials(&self) -> String {
        match (&self.options.user, &self.options.password) {
            (Some(user), Some(password)) => {
                self.url
                    .replacen("rtsp://", &format!("rtsp://{user}:{password}@"), 1)
            }
            _ => self.url.clone(),
        }
    }

    /// How many client connections it has accepted (an RTSP client makes
    /// one per attempt), across restarts.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Its TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it with SIGKILL, as a camera losing power: no TEARDOWN, no
    /// RTCP BYE; connections are reset by the kernel.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL; an error means it already exited, which is the goal.
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts it again on the same port with the same options (killing it
    /// first if it still runs).
    pub async fn restart(&mut self) {
        self.kill().await;
        let (child, url) = spawn(&self.options, self.port, self.connections.clone()).await;
        assert_eq!(url, self.url, "the camera came back on another URL");
        self.child = Some(child);
    }

    /// Whether its process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // kill_on_drop would do it too; an error means it already exited.
            let _ = child.start_kill();
        }
    }
}

/// Spawns the script and returns it with the URL it printed.
async fn spawn(options: &RtspOptions, port: u16, connections: Arc<AtomicUsize>) -> (Child, String) {
    let mut command = Command::new(PYTHON);
    command
        .arg(server_script())
        .args(["--port", &port.to_string()])
        .args(["--video", options.video.arg()])
        .args(["--audio", options.audio.arg()]);
    if let Some(user) = &options.user {
        command.args(["--user", user]);
    }
    if let Some(password) = &options.password {
        command.args(["--password", password]);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {PYTHON} {}: {e}", server_script().display()));

    // Its stderr, into the test's output and kept for a panic message.
    let stderr = child.stderr.take().expect("piped stderr");
    let kept = Arc::new(Mutex::new(String::new()));
    let log = kept.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[rtsp] {line}");
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            log.push_str(&line);
            log.push('\n');
        }
    });

    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(READY_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(url) = line.strip_prefix("READY ") {
                return Some(url.to_string());
            }
            eprintln!("[rtsp stdout] {line}");
        }
        None
    })
    .await;
    let url = match ready {
        Ok(Some(url)) => url,
        outcome => {
            let _ = child.start_kill(); // already dead, or about to be
            let status = child.wait().await.ok();
            // Let the stderr reader catch up with what the process wrote.
            tokio::time::sleep(Duration::from_millis(100)).await;
            panic!(
                "the RTSP test camera ({PYTHON} {} {options:?}) did not print READY ({}; exit {status:?}); \
                 its stderr:\n{}",
                server_script().display(),
                if outcome.is_err() {
                    "timed out"
                } else {
                    "stdout closed"
                },
                kept.lock().unwrap_or_else(|e| e.into_inner())
            )
        }
    };
    // Keep reading, so the pipe never fills, counting the clients.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if line == "CLIENT" {
                connections.fetch_add(1, Ordering::SeqCst);
            } else {
                eprintln!("[rtsp stdout] {line}");
            }
        }
    });
    (child, url)
}
