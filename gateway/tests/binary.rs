//! The `vigil` binary itself: its flags, what it prints and logs, and its
//! exit on a signal. (Having this integration test also makes `cargo test
//! --workspace` build the binary, which the end-to-end suite in `tests/`
//! runs as a process.)

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A data directory of its own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    /// `name` is unique among this file's tests.
    fn new(name: &str) -> TempDir {
        TempDir(std::env::temp_dir().join(format!("vigil-binary-{name}-{}", std::process::id())))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one `vigil` run wrote, and how it ended.
#[derive(Debug)]
struct Run {
    stdout: String,
    stderr: String,
    success: bool,
}

impl Run {
    /// The stdout line that starts with `prefix`.
    fn line(&self, prefix: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in {self:#?}"))
    }
}

/// Runs `vigil` on loopback ephemeral ports with data directory `data` and
/// `extra` flags (authentication on unless `extra` turns it off), stops it
/// with SIGTERM once it has printed its addresses, and returns all it wrote.
/// The logging variables of this environment are removed; `env` sets some.
fn run_and_stop(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--media-listen",
            "127.0.0.1:0",
            "--media-threads",
            "1",
            "--drain-secs",
            "5",
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .env_remove("RUST_LOG")
        .env_remove("VIGIL_LOG_LEVEL")
        .env_remove("VIGIL_PUBLIC_URL")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vigil");
    let mut stderr_pipe = child.stderr.take().expect("piped stderr");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let mut stdout = String::new();
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut signalled = false;
    // Everything printed at start is printed before the signal is awaited,
    // so reading on to the end gets it all.
    for line in lines.by_ref() {
        let line = line.expect("stdout line");
        stdout.push_str(&line);
        stdout.push('\n');
        if !signalled && line.starts_with("gRPC control:") {
            // SAFETY: kill(2) on our own child, not yet reaped.
            assert_eq!(
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
                0
            );
            signalled = true;
        }
    }
    let status = child.wait().expect("wait for vigil");
    Run {
        stdout,
        stderr: stderr.join().expect("stderr reader"),
        success: status.success(),
    }
}

#[test]
fn the_admin_key_is_printed_only_by_the_start_that_made_it() {
    let data = TempDir::new("key");
    let first = run_and_stop(&data.0, &[], &[]);
    assert!(first.success, "{first:#?}");
    let key = std::fs::read_to_string(data.0.join("admin.key")).expect("the key file");
    let key = key.trim();
    assert!(
        first
            .line("Web console:")
            .ends_with(&format!("/console/#key={key}")),
        "{first:#?}"
    );
    assert!(first.stdout.contains(&format!("  {key}\n")), "{first:#?}");

    let second = run_and_stop(&data.0, &[], &[]);
    assert!(second.success, "{second:#?}");
    for (stream, text) in [("stdout", &second.stdout), ("stderr", &second.stderr)] {
        assert!(
            !text.contains(key),
            "the second start printed the key on {stream}: {second:#?}"
        );
    }
    let path = data.0.join("admin.key").display().to_string();
    assert!(second.line("Admin key:").contains(&path), "{second:#?}");
    let console = second.line("Web console:");
    assert!(!console.contains("#key="), "{second:#?}");
    assert!(console.contains(&path), "{second:#?}");
}

#[test]
fn printed_links_use_the_public_url() {
    let data = TempDir::new("public-url");
    // Never contacted: it only goes into what is printed.
    let run = run_and_stop(
        &data.0,
        &["--public-url", "https://vigil.example.net/"],
        &[],
    );
    assert!(run.success, "{run:#?}");
    for (prefix, link) in [
        (
            "WHIP publish:",
            "https://vigil.example.net/whip/<room>/<stream>",
        ),
        (
            "WHEP play:",
            "https://vigil.example.net/whep/<room>/<stream>",
        ),
        ("Web console:", "https://vigil.example.net/console/#key="),
    ] {
        assert!(run.line(prefix).contains(link), "{prefix} {run:#?}");
    }
    // The same from the environment, in open mode.
    let run = run_and_stop(
        &data.0,
        &["--insecure-no-auth"],
        &[("VIGIL_PUBLIC_URL", "http://desk.lan:8080")],
    );
    assert_eq!(
        run.line("Web console:"),
        "Web console:  http://desk.lan:8080/console/"
    );
    assert!(
        run.stderr.contains("WARNING: --insecure-no-auth"),
        "{run:#?}"
    );
}

#[test]
fn a_public_url_with_a_path_is_refused_before_anything_listens() {
    let output = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["--public-url", "https://vigil.example.net/vigil"])
        .output()
        .expect("run vigil");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("has a path") && stderr.contains("e.g. https://vigil.example.net"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "{output:?}");
}

#[test]
fn logs_go_to_stderr_in_plain_text_at_the_chosen_level() {
    let data = TempDir::new("logs");
    let info = |run: &Run| run.stderr.lines().filter(|l| l.contains(" INFO ")).count();

    let default = run_and_stop(&data.0, &["--insecure-no-auth"], &[]);
    assert!(default.success, "{default:#?}");
    assert!(
        default.stderr.contains("vigil listening on"),
        "{default:#?}"
    );
    assert!(default.stderr.contains("shut down"), "{default:#?}");
    for (stream, text) in [("stdout", &default.stdout), ("stderr", &default.stderr)] {
        assert!(
            !text.contains('\x1b'),
            "an ANSI escape on a piped {stream}: {text:?}"
        );
    }
    assert!(
        !default.stdout.contains(" INFO "),
        "logs on stdout: {default:#?}"
    );

    let quiet = run_and_stop(&data.0, &["--insecure-no-auth", "--log-level", "warn"], &[]);
    assert!(quiet.success, "{quiet:#?}");
    assert_eq!(info(&quiet), 0, "{quiet:#?}");
    let quiet = run_and_stop(
        &data.0,
        &["--insecure-no-auth"],
        &[("VIGIL_LOG_LEVEL", "warn")],
    );
    assert_eq!(info(&quiet), 0, "{quiet:#?}");

    // RUST_LOG, when set, wins over the flag.
    let rust_log = run_and_stop(
        &data.0,
        &["--insecure-no-auth", "--log-level", "warn"],
        &[("RUST_LOG", "info")],
    );
    assert!(info(&rust_log) >= 2, "{rust_log:#?}");
}

#[test]
fn help_names_the_flags() {
    let output = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("--help")
        .output()
        .expect("run vigil --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in ["--drain-secs", "--public-url", "--log-level"] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
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
