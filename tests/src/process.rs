//! The `vigil` binary run as its own process, for what only a process has:
//! signals and an exit status.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `vigil` on ephemeral loopback ports, insecure (no tokens),
/// with a data directory of its own (removed when dropped).
pub struct VigilProcess {
    child: Child,
    /// Its HTTP address (WHIP/WHEP).
    pub http: SocketAddr,
    /// Its gRPC address.
    pub grpc: SocketAddr,
    data_dir: PathBuf,
    log_bytes: Arc<AtomicUsize>,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

/// How many of its first log lines a [`VigilProcess`] keeps to be read.
const LOG_LINES_KEPT: usize = 10_000;

/// The `vigil` binary of this build: `cargo test --workspace` builds it
/// next to the test executables' `deps` folder (the gateway package has
/// integration tests, so Cargo builds its binary before running any test).
pub fn vigil_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let binary = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("vigil"))
        .expect("target directory");
    assert!(
        binary.exists(),
        "{} is missing: run the suite with `cargo test --workspace` (README)",
        binary.display()
    );
    binary
}

impl VigilProcess {
    /// Starts `vigil` with `extra` flags and waits until it printed where
    /// it listens.
    pub async fn start(extra: &[&str]) -> VigilProcess {
        let data_dir = std::env::temp_dir().join(format!(
            "vigil-process-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut child = Command::new(vigil_binary())
            .args([
                "--insecure-no-auth",
                "--http-listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
                "--media-listen",
                "127.0.0.1:0",
                "--media-threads",
                "1",
                "--data-dir",
            ])
            .arg(&data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start vigil");
        let stderr = child.stderr.take().expect("piped stderr");
        // Its log, into the test's output (shown when a test fails), and counted.
        let log_bytes = Arc::new(AtomicUsize::new(0));
        let counted = log_bytes.clone();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                counted.fetch_add(line.len() + 1, Ordering::Relaxed);
                {
                    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                    if kept.len() < LOG_LINES_KEPT {
                        kept.push(line.clone());
                    }
                }
                eprintln!("[vigil] {line}");
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut http, mut grpc) = (None, None);
        let read = async {
            while let Some(line) = lines.next_line().await.expect("read vigil's stdout") {
                eprintln!("[vigil stdout] {line}");
                // "WHIP publish: http://127.0.0.1:PORT/whip/<room>/<stream> ..."
                if let Some(rest) = line.strip_prefix("WHIP publish: http://") {
                    http = rest.split('/').next().and_then(|a| a.parse().ok());
                }
                // "gRPC control: 127.0.0.1:PORT (health, ...)"
                if let Some(rest) = line.strip_prefix("gRPC control: ") {
                    grpc = rest.split(' ').next().and_then(|a| a.parse().ok());
                }
                if http.is_some() && grpc.is_some() {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("vigil printed its addresses");
        // Keep reading, so the pipe never fills.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[vigil stdout] {line}");
            }
        });
        VigilProcess {
            child,
            http: http.expect("HTTP address"),
            grpc: grpc.expect("gRPC address"),
            data_dir,
            log_bytes,
            log,
        }
    }

    /// Bytes it has logged (stderr) so far.
    pub fn log_bytes(&self) -> usize {
        self.log_bytes.load(Ordering::Relaxed)
    }

    /// Its log (stderr) so far, a line each (the first 10,000 lines).
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("vigil still running")
    }

    /// Its resident memory (VmRSS), in KB.
    pub fn rss_kb(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    /// Its open file descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("/proc fd")
            .count()
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id().expect("vigil still running") as libc::pid_t;
        // SAFETY: kill(2) on a child we started and have not reaped.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal})");
    }

    /// The exit status, or `None` if it is still running after `limit`.
    pub async fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .map(|status| status.expect("wait for vigil"))
    }
}

impl Drop for VigilProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
