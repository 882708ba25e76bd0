//! Running a headless-Chromium driver script (`tests/browser/*.mjs`) from a
//! test: the script prints JSON lines on stdout (progress events, then
//! `{"result": ...}`) and diagnostics on stderr, which is kept for failure
//! messages.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::netns;

/// `artifacts/{name}/` at the repository root (git-ignored), where browser
/// tests leave screenshots and their drivers' full results.
pub fn artifacts_dir(name: &str) -> PathBuf {
    netns::tests_dir()
        .parent()
        .expect("the tests crate sits in the workspace")
        .join("artifacts")
        .join(name)
}

/// A running driver script.
pub struct BrowserDriver {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
    started: Instant,
    limit: Duration,
}

impl BrowserDriver {
    /// Starts `node tests/browser/{script} {args}` (checking Chromium, Node
    /// and playwright-core first); everything it does must end within
    /// `limit`. It is killed if the test ends first.
    pub fn spawn(script: &str, args: Vec<OsString>, limit: Duration) -> BrowserDriver {
        let script = netns::browser_driver(script);
        let mut child = Command::new("node")
            .arg(&script)
            .args(args)
            .current_dir(script.parent().expect("browser dir"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start node");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let stdin = child.stdin.take();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("stderr")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        BrowserDriver {
            child,
            stdout,
            stdin,
            stderr,
            started: Instant::now(),
            limit,
        }
    }

    /// The driver's stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// Time since the driver started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The next JSON line on stdout, within what is left of the limit.
    pub async fn next(&mut self) -> Value {
        let limit = self.limit;
        let left = limit.saturating_sub(self.started.elapsed());
        let line = match tokio::time::timeout(left, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => {
                let status = self.child.wait().await;
                panic!(
                    "chromium driver exited ({status:?}) without a result\n--- driver stderr ---\n{}",
                    self.stderr()
                )
            }
            Ok(Err(e)) => panic!("reading the chromium driver's stdout: {e}"),
            Err(_) => panic!(
                "chromium driver gave no result within {limit:?}\n--- driver stderr ---\n{}",
                self.stderr()
            ),
        };
        serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "chromium driver printed a line that is not JSON ({e}): {line}\n--- driver stderr ---\n{}",
                self.stderr()
            )
        })
    }

    /// Reads lines until `{"result": ...}`, handing each `{"event": ...}`
    /// name to `on_event`; then waits (briefly) for the process to exit and
    /// returns the result.
    pub async fn result(&mut self, mut on_event: impl FnMut(&str, Duration)) -> Value {
        loop {
            let line = self.next().await;
            if let Some(event) = line["event"].as_str() {
                on_event(event, self.elapsed());
            }
            if let Some(result) = line.get("result") {
                let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
                return result.clone();
            }
        }
    }

    /// Writes `line` to the driver's stdin (a driver that waits for the
    /// test, e.g. to restart the server, reads it as the go-ahead).
    pub async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the driver's stdin is open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to the driver");
        stdin.flush().await.expect("flush the driver's stdin");
    }

    /// Writes a line to the driver's stdin (once; a holding driver takes it
    /// as "go on").
    pub async fn release(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            stdin
                .write_all(b"stop\n")
                .await
                .expect("write to the driver");
        }
    }
}

/// A driver's arguments: `--name value` for each pair, then `--artifacts DIR`.
pub fn driver_args(pairs: &[(&str, &str)], artifacts: PathBuf) -> Vec<OsString> {
    pairs
        .iter()
        .flat_map(|(name, value)| [OsString::from(format!("--{name}")), OsString::from(value)])
        .chain([OsString::from("--artifacts"), artifacts.into_os_string()])
        .collect()
}

/// Prints what a driver's steps measured, then fails unless it reported
/// `ok`, with the step it failed at, its error, its pages' console and its
/// stderr.
pub fn assert_driver_ok(what: &str, result: &Value, stderr: &str) {
    eprintln!(
        "{what} in Chromium {}: {}",
        result["browserVersion"].as_str().unwrap_or("?"),
        serde_json::to_string_pretty(&result["steps"]).unwrap_or_default()
    );
    assert!(
        result["ok"] == true,
        "the driver failed at `{}`: {}\n--- page console ---\n{}\n--- stderr ---\n{stderr}",
        result["step"],
        result["error"],
        result["console"]
    );
}

/// Frames a video decoded between two samples of a driver's `decoding`
/// (`{"first": {"frames": ..}, "second": {..}}`, 1.5 s apart).
pub fn progress(sample: &Value) -> i64 {
    let frames = |at: &str| sample[at]["frames"].as_i64().unwrap_or(0);
    frames("second") - frames("first")
}

/// Asserts that a sample of a driver's `decoding` shows a picture whose
/// frame count grew: `what` is decoding.
pub fn decodes(sample: &Value, what: &str) {
    assert!(
        sample["second"]["width"].as_u64() > Some(0),
        "{what}: no picture: {sample}"
    );
    assert!(progress(sample) > 0, "{what}: not decoding: {sample}");
}

/// `value` as text, or a failure naming `what`.
pub fn text<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no text in {value}"))
}
