//! The `vigil` binary itself: its flags and its exit on a signal. (Having
//! this integration test also makes `cargo test --workspace` build the
//! binary, which the end-to-end suite in `tests/` runs as a process.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn help_names_the_drain_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("--help")
        .output()
        .expect("run vigil --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--drain-secs"), "{help}");
}

#[test]
fn an_idle_server_exits_zero_on_sigterm_and_on_sigint() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = std::env::temp_dir().join(format!(
            "vigil-binary-{}-{signal}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
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
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start vigil");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        // The last address line: it listens and its signal handler is set.
        assert!(
            lines.any(|l| l.expect("stdout line").starts_with("gRPC control:")),
            "vigil printed its gRPC address"
        );
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for vigil") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "vigil still running after signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = std::fs::remove_dir_all(&dir);
        assert!(status.success(), "exit after signal {signal}: {status}");
    }
}
