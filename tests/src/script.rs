//! External test clients (Python, Node.js) that report on stdout as JSON
//! lines: one object per line, `{"error": ...}` for a failure. A [`Script`]
//! reads those lines, keeps stderr for failure messages, and is killed when
//! dropped.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Fails unless `python3` runs and can import aiortc.
pub fn require_aiortc() {
    crate::netns::require_program("python3", "install Python 3 (Debian package python3)");
    let output = std::process::Command::new("python3")
        .args(["-c", "import aiortc, av"])
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "python3 cannot import aiortc: run ./test.sh, or pip install -r \
         tests/interop/requirements.txt (aiortc 1.16.0)\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// How long a script may take to report its next line.
pub const REPORT_LIMIT: Duration = Duration::from_secs(40);

/// A running client script.
pub struct Script {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl Script {
    /// A Python script from `tests/interop/aiortc/` (unbuffered, leaving no
    /// `__pycache__` in the source tree).
    pub fn python(label: &str, script: &str, args: &[&str]) -> Script {
        let path = crate::netns::tests_dir()
            .join("interop/aiortc")
            .join(script);
        let mut command = Command::new("python3");
        command.args(["-u", "-B"]).arg(&path).args(args);
        Script::spawn(label, &path, command)
    }

    /// A Node.js script, at `path` under `tests/`.
    pub fn node(label: &str, path: &str, args: &[&str]) -> Script {
        let path = crate::netns::tests_dir().join(path);
        let mut command = Command::new("node");
        command.arg(&path).args(args);
        Script::spawn(label, &path, command)
    }

    fn spawn(label: &str, path: &Path, mut command: Command) -> Script {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{label}: start {}: {e}", path.display()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr piped");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                sink.lock()
                    .expect("stderr")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Script {
            label: label.to_owned(),
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().expect("stdout piped")).lines(),
            child,
            stderr,
        }
    }

    /// The script's name in messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The script's stderr so far (its last 4000 characters).
    pub fn stderr(&self) -> String {
        let all = self.stderr.lock().expect("stderr").clone();
        let start = all.char_indices().rev().nth(3999).map_or(0, |(i, _)| i);
        all[start..].to_owned()
    }

    /// Fails the test, with the script's stderr.
    pub fn fail(&self, step: &str, what: &str) -> ! {
        panic!(
            "{}: {step}: {what}\n--- stderr of {} ---\n{}",
            self.label,
            self.label,
            self.stderr()
        );
    }

    /// The next JSON line the script prints; fails on an `error` report, on
    /// exit and after [`REPORT_LIMIT`].
    pub async fn report(&mut self, step: &str) -> Report {
        let mut other = Vec::new();
        loop {
            let line = match tokio::time::timeout(REPORT_LIMIT, self.stdout.next_line()).await {
                Err(_) => self.fail(step, &format!("no report in {REPORT_LIMIT:?}")),
                Ok(Err(e)) => self.fail(step, &format!("reading stdout: {e}")),
                Ok(Ok(None)) => {
                    let status = self.child.wait().await.ok();
                    self.fail(
                        step,
                        &format!("exited ({status:?}) without a report; stdout: {other:?}"),
                    )
                }
                Ok(Ok(Some(line))) => line,
            };
            let Ok(Value::Object(fields)) = serde_json::from_str(&line) else {
                other.push(line);
                continue;
            };
            eprintln!("{} reports: {line}", self.label);
            let report = Report {
                label: self.label.clone(),
                fields,
            };
            if let Some(Value::String(error)) = report.fields.get("error") {
                // The scripts name themselves with the label they are given.
                let prefix = format!("{}: ", self.label);
                self.fail(step, error.strip_prefix(&prefix).unwrap_or(error));
            }
            return report;
        }
    }

    /// The next report whose `event` is `event`, skipping others.
    pub async fn event(&mut self, event: &str) -> Report {
        loop {
            let report = self.report(event).await;
            if report.fields.get("event").and_then(Value::as_str) == Some(event) {
                return report;
            }
        }
    }

    /// Writes one line to the script's stdin.
    pub async fn send_line(&mut self, line: &str) {
        let Some(stdin) = self.stdin.as_mut() else {
            self.fail("stdin", "stdin is closed");
        };
        let written = stdin.write_all(format!("{line}\n").as_bytes()).await;
        if let Err(e) = written.and(stdin.flush().await) {
            self.fail("stdin", &format!("writing: {e}"));
        }
    }

    /// Closes stdin: the scripts take it as their cue to stop.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits for a clean exit.
    pub async fn exits_cleanly(mut self, step: &str) {
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(status) => self.fail(step, &format!("exited with {status:?}")),
            Err(_) => self.fail(step, "did not exit within 15 s"),
        }
    }
}

/// One JSON object a script printed.
pub struct Report {
    /// The label of the script that printed it.
    pub label: String,
    /// The object's fields.
    pub fields: serde_json::Map<String, Value>,
}

impl Report {
    /// A numeric field; fails the test if it is missing.
    pub fn num(&self, key: &str) -> f64 {
        self.fields
            .get(key)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{}: report field {key} is not a number", self.label))
    }

    /// A string field; fails the test if it is missing.
    pub fn str(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{}: report field {key} is not a string", self.label))
    }
}
