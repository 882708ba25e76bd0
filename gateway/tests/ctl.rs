//! `vigil ctl` end to end: the real `vigil` binary serves on loopback ports
//! with authentication on and a data directory of its own, and `vigil ctl`
//! runs against it as a process. Every check reads what ctl printed
//! (stdout, stderr) and its exit status.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use vigil_control::store::{admin_key_path, load_or_create_secrets, read_admin_key};
use vigil_control::token::{Grants, TokenSigner};

/// How long anything here may take before the test fails.
const LIMIT: Duration = Duration::from_secs(30);

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// Environment that would change what ctl connects to or sends.
const CTL_ENV: [&str; 3] = ["VIGIL_SERVER", "VIGIL_ADMIN_KEY", "VIGIL_DATA_DIR"];

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("vigil-ctl-{tag}-{}-{n}", std::process::id()));
        // A leftover of an earlier run with the same pid would skew the test.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Cleanup only; a failure leaves a directory in /tmp, nothing worse.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Lines of a child's output, read on a thread of their own.
struct Lines(mpsc::Receiver<String>);

impl Lines {
    fn new(output: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Reads to the end even once nobody listens: a closed pipe
            // would make the child's next println! panic.
            for line in BufReader::new(output).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        Lines(rx)
    }

    /// The next line; panics naming `what` if none comes within [`LIMIT`].
    fn next(&self, what: &str) -> String {
        self.0
            .recv_timeout(LIMIT)
            .unwrap_or_else(|e| panic!("no line from {what}: {e}"))
    }

    /// Skips lines until one that `pick` accepts.
    /// Panics naming `what` and the lines skipped if none comes.
    fn find<T>(&self, what: &str, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + LIMIT;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .0
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no {what}: {e}; lines before: {skipped:?}"));
            if let Some(found) = pick(&line) {
                return found;
            }
            skipped.push(line);
        }
    }
}

/// A running `vigil` with tokens required, on ephemeral loopback ports.
struct Server {
    child: Child,
    http: SocketAddr,
    grpc: SocketAddr,
    /// `http`, or `https` with TLS on.
    scheme: &'static str,
    data_dir: TempDir,
    /// Where ctl runs, so its default `--data-dir data` finds nothing real.
    cwd: TempDir,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let data_dir = TempDir::new("data");
        let mut child = Command::new(VIGIL)
            .args([
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
            .arg(&data_dir.0)
            // Warnings, errors and panics reach the test's output: a feed
            // that ends early says why on the server's side too.
            .args(["--log-level", "warn"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start vigil");
        let stdout = Lines::new(child.stdout.take().expect("piped stdout"));
        let (http, scheme) = stdout.find("WHIP address", |line| {
            // "WHIP publish: http[s]://127.0.0.1:PORT/whip/<room>/<stream> ..."
            let rest = line.strip_prefix("WHIP publish: ")?;
            let (scheme, rest) = match rest.strip_prefix("https://") {
                Some(rest) => ("https", rest),
                None => ("http", rest.strip_prefix("http://")?),
            };
            Some((rest.split('/').next()?.parse().ok()?, scheme))
        });
        let grpc = stdout.find("gRPC address", |line| {
            // "gRPC control: [https://]127.0.0.1:PORT (health, ...)"
            let rest = line.strip_prefix("gRPC control: ")?;
            let rest = rest.strip_prefix("https://").unwrap_or(rest);
            rest.split(' ').next()?.parse().ok()
        });
        // The reader thread keeps draining stdout, so the pipe never fills.
        Server {
            child,
            http,
            grpc,
            scheme,
            data_dir,
            cwd: TempDir::new("cwd"),
        }
    }

    fn data_dir(&self) -> &Path {
        &self.data_dir.0
    }

    /// `vigil ctl --server <this one> --data-dir <data_dir>`, without any
    /// ctl setting from the environment.
    fn ctl_in(&self, data_dir: &Path) -> Command {
        let mut command = Command::new(VIGIL);
        command
            .current_dir(&self.cwd.0)
            .arg("ctl")
            .arg("--server")
            .arg(format!("{}://{}", self.scheme, self.grpc))
            .arg("--data-dir")
            .arg(data_dir);
        for name in CTL_ENV {
            command.env_remove(name);
        }
        command
    }

    /// Runs `vigil ctl <args>` with this server's data directory.
    fn ctl(&self, args: &[&str]) -> Outcome {
        run(self.ctl_in(self.data_dir()).args(args))
    }

    /// Starts `vigil ctl <args>` (a `watch`) in the background.
    fn spawn_ctl(&self, args: &[&str]) -> Background {
        let mut child = self
            .ctl_in(self.data_dir())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vigil ctl");
        Background {
            stdout: Lines::new(child.stdout.take().expect("piped stdout")),
            stderr: Lines::new(child.stderr.take().expect("piped stderr")),
            child,
        }
    }

    /// Sends `signal` to the server.
    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // It may have exited already (a test signalled it).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `vigil ctl` still running, with its output read line by line.
struct Background {
    child: Child,
    stdout: Lines,
    stderr: Lines,
}

impl Background {
    /// Waits until the watch has subscribed (it says so on stderr).
    fn wait_watching(&self) {
        self.stderr.find("'watching' on stderr", |line| {
            line.starts_with("watching events").then_some(())
        });
    }

    /// The next stdout line as JSON.
    fn next_json(&self) -> Value {
        let line = self.stdout.next("vigil ctl --json watch");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a finished `vigil ctl` did.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// Asserts it succeeded.
    fn ok(self) -> Outcome {
        assert_eq!(self.code, Some(0), "vigil ctl failed: {self:?}");
        self
    }

    /// Asserts it failed with `code`, saying so in one line on stderr and
    /// nothing on stdout.
    fn failed(self, code: i32) -> Outcome {
        assert_eq!(self.code, Some(code), "{self:?}");
        assert_eq!(self.stdout, "", "{self:?}");
        assert_eq!(self.stderr.lines().count(), 1, "{self:?}");
        assert!(self.stderr.starts_with("vigil ctl: "), "{self:?}");
        self
    }

    /// Stdout as one JSON document.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{:?} is not JSON: {e}", self.stdout))
    }

    /// The first word of each stdout line.
    fn first_words(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .map(|line| line.split(' ').next().unwrap_or_default())
            .collect()
    }
}

/// Runs `command` to completion (killing it after [`LIMIT`]).
fn run(command: &mut Command) -> Outcome {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vigil ctl");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).expect("read output");
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for vigil ctl") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vigil ctl {command:?} still running after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The HTTP status of a WHIP POST whose body is no SDP offer: a token the
/// server accepts gets as far as the offer (400), others stop at 401/403.
fn whip_status(http: SocketAddr, path: &str, token: Option<&str>) -> u16 {
    let mut conn = TcpStream::connect(http).expect("connect to HTTP");
    conn.set_read_timeout(Some(LIMIT)).expect("read timeout");
    let body = "not an offer";
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/sdp\r\n{auth}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut response = String::new();
    conn.read_to_string(&mut response).expect("read response");
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

#[test]
fn rooms_are_created_listed_shown_and_deleted() {
    let server = Server::start(&[]);
    let created = server
        .ctl(&[
            "room",
            "create",
            "site-1",
            "--max-viewers",
            "5",
            "--stall-after-ms",
            "2000",
        ])
        .ok();
    assert!(
        created.stdout.starts_with(
            "site-1 publishers=0 viewers=0 max_publishers=- max_viewers=5 stall_after_ms=2000 \
             min_bitrate_bps=50000 max_keyframe_interval_ms=5000 created="
        ),
        "{created:?}"
    );
    server.ctl(&["room", "create", "site-2"]).ok();
    let again = server.ctl(&["room", "create", "site-1"]).failed(1);
    assert!(
        again.stderr.starts_with("vigil ctl: already exists: "),
        "{again:?}"
    );

    let listed = server.ctl(&["room", "list"]).ok();
    assert_eq!(listed.first_words(), ["site-1", "site-2"], "{listed:?}");
    let listed = server.ctl(&["room", "list", "--json"]).ok().json();
    let names: Vec<&str> = listed["rooms"]
        .as_array()
        .expect("rooms array")
        .iter()
        .map(|room| room["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["site-1", "site-2"], "{listed}");

    let room = server.ctl(&["--json", "room", "get", "site-1"]).ok().json();
    assert_eq!(room["name"], "site-1");
    assert_eq!(room["limits"]["max_viewers"], 5);
    assert_eq!(room["limits"]["max_publishers"], Value::Null);
    assert_eq!(room["alarm_rules"]["stall_after_ms"], 2000);
    assert_eq!(room["alarm_rules"]["min_bitrate_bps"], 50000, "default");
    assert_eq!(room["publishers"], 0);
    assert_eq!(room["viewers"], 0);
    let created_ms = room["created_at_unix_ms"].as_u64().expect("created_at");
    assert!(created_ms.abs_diff(now_unix() * 1000) < 60_000, "{room}");

    let deleted = server.ctl(&["room", "delete", "site-1"]).ok();
    assert_eq!(deleted.stdout, "deleted site-1 sessions_closed=0\n");
    let deleted = server.ctl(&["--json", "room", "delete", "site-2"]).ok();
    assert_eq!(deleted.json(), serde_json::json!({ "sessions_closed": 0 }));
    let empty = server.ctl(&["room", "list"]).ok();
    assert_eq!(empty.stdout, "");
    assert_eq!(empty.stderr, "no rooms\n");
    let empty = server.ctl(&["room", "list", "--json"]).ok();
    assert_eq!(empty.json(), serde_json::json!({ "rooms": [] }));
}

#[test]
fn an_unknown_room_is_one_line_on_stderr_and_exit_1() {
    let server = Server::start(&[]);
    let missing = server.ctl(&["room", "get", "nowhere"]).failed(1);
    assert!(
        missing.stderr.starts_with("vigil ctl: not found: ") && missing.stderr.contains("nowhere"),
        "{missing:?}"
    );
    let missing = server.ctl(&["participants", "nowhere"]).failed(1);
    assert!(missing.stderr.contains("not found"), "{missing:?}");
    let missing = server
        .ctl(&["token", "create", "nowhere", "cam-1", "--publish"])
        .failed(1);
    assert!(missing.stderr.contains("not found"), "{missing:?}");
}

#[test]
fn a_token_from_ctl_is_signed_by_the_server_and_opens_whip() {
    let server = Server::start(&[]);
    server.ctl(&["room", "create", "site-1"]).ok();
    let made = server
        .ctl(&[
            "token",
            "create",
            "site-1",
            "cam-1",
            "--publish",
            "--ttl-secs",
            "600",
        ])
        .ok();
    // The token alone on stdout, for `TOKEN=$(vigil ctl token create ...)`.
    assert_eq!(made.stdout.lines().count(), 1, "{made:?}");
    let token = made.stdout.trim();
    assert!(
        made.stderr.contains("whip_path=/whip/site-1/cam-1"),
        "{made:?}"
    );

    let (secrets, created) = load_or_create_secrets(server.data_dir()).expect("secrets");
    assert!(!created.any(), "the server created the secrets");
    let claims = TokenSigner::new(&secrets.signing_secret)
        .verify(token, now_unix())
        .expect("signed with the server's secret");
    assert_eq!(claims.sub, "cam-1");
    assert_eq!(claims.room.as_str(), "site-1");
    assert_eq!(
        claims.grants,
        Grants {
            publish: true,
            subscribe: false,
            admin: false
        }
    );
    assert_eq!(claims.exp - claims.iat, 600);

    // The server takes it: past authentication to the (bad) offer for its
    // own stream, refused for another stream and without it.
    assert_eq!(
        whip_status(server.http, "/whip/site-1/cam-1", Some(token)),
        400
    );
    assert_eq!(
        whip_status(server.http, "/whip/site-1/cam-2", Some(token)),
        403
    );
    assert_eq!(whip_status(server.http, "/whip/site-1/cam-1", None), 401);

    let made = server
        .ctl(&[
            "--json",
            "token",
            "create",
            "site-1",
            "dispatcher",
            "--subscribe",
            "--admin",
        ])
        .ok()
        .json();
    assert_eq!(made["whip_path"], "/whip/site-1/dispatcher");
    let expires = made["expires_at_unix"].as_u64().expect("expires_at_unix");
    assert!(expires.abs_diff(now_unix() + 86_400) < 60, "{made}");
    let dispatcher = made["token"].as_str().expect("token");
    let claims = TokenSigner::new(&secrets.signing_secret)
        .verify(dispatcher, now_unix())
        .expect("signed with the server's secret");
    assert!(claims.grants.admin && claims.grants.subscribe && !claims.grants.publish);
    // A dispatcher's token administers its room with ctl, nothing more.
    let empty = TempDir::new("no-key");
    run(server
        .ctl_in(&empty.0)
        .args(["--admin-key", dispatcher, "participants", "site-1"]))
    .ok();
    let refused = run(server
        .ctl_in(&empty.0)
        .args(["--admin-key", dispatcher, "room", "list"]))
    .failed(1);
    assert!(refused.stderr.contains("unauthenticated"), "{refused:?}");
}

#[test]
fn tokens_are_revoked_by_id_or_all_at_once() {
    let server = Server::start(&[]);
    server.ctl(&["room", "create", "site-1"]).ok();
    let made = server
        .ctl(&["token", "create", "site-1", "cam-1", "--publish"])
        .ok();
    let token = made.stdout.trim().to_owned();
    // The id with the other notes on stderr: `token_id=… expires=… whip_path=…`.
    let id = made
        .stderr
        .split_whitespace()
        .find_map(|field| field.strip_prefix("token_id="))
        .unwrap_or_else(|| panic!("no token_id: {made:?}"))
        .to_owned();
    assert_eq!(id.len(), 32, "{made:?}");
    // Admitted (then 400 for the offer), until revoked (401).
    let path = "/whip/site-1/cam-1";
    assert_eq!(whip_status(server.http, path, Some(&token)), 400);
    let revoked = server.ctl(&["token", "revoke", "site-1", &id]).ok();
    assert_eq!(
        revoked.stdout,
        format!("revoked token {id} in site-1 sessions_closed=0\n")
    );
    assert_eq!(whip_status(server.http, path, Some(&token)), 401);
    let unknown = server
        .ctl(&[
            "token",
            "revoke",
            "site-1",
            "0123456789abcdef0123456789abcdef",
        ])
        .failed(1);
    assert!(unknown.stderr.contains("not found"), "{unknown:?}");

    let made = server
        .ctl(&["--json", "token", "create", "site-1", "cam-2", "--publish"])
        .ok()
        .json();
    assert_eq!(made["token_id"].as_str().map(str::len), Some(32), "{made}");
    let token = made["token"].as_str().expect("token").to_owned();
    let path = "/whip/site-1/cam-2";
    assert_eq!(whip_status(server.http, path, Some(&token)), 400);
    let revoked = server
        .ctl(&["--json", "token", "revoke", "site-1", "--all"])
        .ok()
        .json();
    assert_eq!(revoked["sessions_closed"], 0, "{revoked}");
    assert_eq!(whip_status(server.http, path, Some(&token)), 401);
    let after = server
        .ctl(&["token", "create", "site-1", "cam-2", "--publish"])
        .ok();
    assert_eq!(
        whip_status(server.http, path, Some(after.stdout.trim())),
        400
    );
    let text = server.ctl(&["token", "revoke", "site-1", "--all"]).ok();
    assert_eq!(
        text.stdout,
        "revoked every token of site-1 sessions_closed=0\n"
    );

    // One token or all of them: exactly one of the two.
    for args in [
        &["token", "revoke", "site-1"][..],
        &["token", "revoke", "site-1", &id, "--all"],
    ] {
        let outcome = server.ctl(args);
        assert_eq!(outcome.code, Some(2), "{args:?}: {outcome:?}");
    }
}

#[test]
fn room_update_changes_only_what_it_is_given() {
    let server = Server::start(&[]);
    server
        .ctl(&["room", "create", "site-1", "--max-viewers", "5"])
        .ok();
    let updated = server
        .ctl(&[
            "room",
            "update",
            "site-1",
            "--max-publishers",
            "3",
            "--max-viewers",
            "none",
            "--stall-ms",
            "1500",
        ])
        .ok();
    assert!(
        updated.stdout.starts_with(
            "site-1 publishers=0 viewers=0 max_publishers=3 max_viewers=- stall_after_ms=1500 \
             min_bitrate_bps=50000 max_keyframe_interval_ms=5000 created="
        ),
        "{updated:?}"
    );
    let updated = server
        .ctl(&[
            "--json",
            "room",
            "update",
            "site-1",
            "--keyframe-wait-ms",
            "0",
            "--min-bitrate-bps",
            "20000",
        ])
        .ok()
        .json();
    assert_eq!(updated["alarm_rules"]["max_keyframe_interval_ms"], 0);
    assert_eq!(updated["alarm_rules"]["min_bitrate_bps"], 20000);
    assert_eq!(updated["alarm_rules"]["stall_after_ms"], 1500, "kept");
    assert_eq!(updated["limits"]["max_publishers"], 3, "kept");
    let got = server.ctl(&["--json", "room", "get", "site-1"]).ok().json();
    assert_eq!(got, updated);

    server
        .ctl(&["room", "update", "nowhere", "--max-viewers", "1"])
        .failed(1);
    for args in [
        &["room", "update", "site-1"][..],
        &["room", "update", "site-1", "--max-viewers", "many"],
    ] {
        let outcome = server.ctl(args);
        assert_eq!(outcome.code, Some(2), "{args:?}: {outcome:?}");
    }
}

#[test]
fn an_empty_room_has_no_participants() {
    let server = Server::start(&[]);
    server.ctl(&["room", "create", "site-1"]).ok();
    let listed = server.ctl(&["participants", "site-1"]).ok();
    assert_eq!(listed.stdout, "");
    assert_eq!(listed.stderr, "no participants in site-1\n");
    let listed = server.ctl(&["--json", "participants", "site-1"]).ok();
    assert_eq!(listed.json(), serde_json::json!({ "participants": [] }));
}

#[test]
fn watch_prints_the_events_other_ctl_calls_cause_until_the_server_stops() {
    let server = Server::start(&[]);
    let json = server.spawn_ctl(&["--json", "watch", "site-1"]);
    let mut text = server.spawn_ctl(&["watch"]);
    json.wait_watching();
    text.wait_watching();

    server.ctl(&["room", "create", "other"]).ok();
    server.ctl(&["room", "create", "site-1"]).ok();
    server.ctl(&["room", "delete", "site-1"]).ok();

    // Filtered to site-1: `other` never shows.
    let created = json.next_json();
    assert_eq!(created["room"], "site-1", "{created}");
    assert_eq!(created["room_created"], serde_json::json!({}), "{created}");
    let deleted = json.next_json();
    assert_eq!(deleted["room"], "site-1", "{deleted}");
    assert_eq!(deleted["room_deleted"], serde_json::json!({}), "{deleted}");
    let created_id = created["id"].as_u64().expect("id");
    let deleted_id = deleted["id"].as_u64().expect("id");
    assert!(deleted_id > created_id);

    // Unfiltered, as text: `#ID TIME ROOM IDENTITY KIND`.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let line = text.stdout.next("vigil ctl watch");
        let words: Vec<&str> = line.split(' ').collect();
        assert_eq!(words.len(), 5, "{line}");
        assert!(words[0].starts_with('#'), "{line}");
        assert!(words[1].ends_with('Z'), "{line}");
        assert_eq!(words[3], "-", "{line}");
        seen.push(format!("{} {} {}", words[0], words[2], words[4]));
    }
    assert_eq!(
        seen[1..],
        [
            format!("#{created_id} site-1 room_created"),
            format!("#{deleted_id} site-1 room_deleted"),
        ]
    );
    assert!(seen[0].ends_with(" other room_created"), "{seen:?}");

    // Resuming after the creation replays the deletion first.
    let resumed = server.spawn_ctl(&[
        "watch",
        "site-1",
        "--json",
        "--after-id",
        &created_id.to_string(),
    ]);
    let replayed = resumed.next_json();
    assert_eq!(replayed["id"], deleted_id, "{replayed}");
    assert!(replayed["room_deleted"].is_object(), "{replayed}");

    // The server's shutdown ends the feed; ctl says where to resume.
    server.signal(libc::SIGTERM);
    let last = text.stderr.find("the end of the feed", |line| {
        line.strip_prefix("the server ended the feed; resume with --after-id ")
            .map(str::to_owned)
    });
    assert_eq!(last, deleted_id.to_string());
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = text.child.try_wait().expect("wait for vigil ctl") {
            break status;
        }
        assert!(Instant::now() < deadline, "watch still running");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn the_admin_key_comes_from_the_flag_the_environment_or_the_data_dir() {
    let server = Server::start(&[]);
    let key = read_admin_key(server.data_dir())
        .expect("readable")
        .expect("the server wrote its key");
    let empty = TempDir::new("no-key");

    // The data directory's key (what every other test here relies on).
    server.ctl(&["room", "create", "site-1"]).ok();
    // VIGIL_ADMIN_KEY, with a data directory that has no key.
    let listed = run(server
        .ctl_in(&empty.0)
        .env("VIGIL_ADMIN_KEY", &key)
        .args(["room", "list"]))
    .ok();
    assert_eq!(listed.first_words(), ["site-1"]);
    // --admin-key wins over VIGIL_ADMIN_KEY.
    run(server
        .ctl_in(&empty.0)
        .env("VIGIL_ADMIN_KEY", "wrong")
        .args(["--admin-key", &key, "room", "list"]))
    .ok();
    // VIGIL_ADMIN_KEY wins over the data directory: a wrong one is refused.
    let refused = run(server
        .ctl_in(server.data_dir())
        .env("VIGIL_ADMIN_KEY", "wrong")
        .args(["room", "list"]))
    .failed(1);
    assert!(
        refused.stderr.starts_with("vigil ctl: unauthenticated: ")
            && refused
                .stderr
                .contains("the key from --admin-key or VIGIL_ADMIN_KEY was refused"),
        "{refused:?}"
    );
    // No key anywhere: the error names every way to give one.
    let missing = run(server.ctl_in(&empty.0).args(["room", "list"])).failed(1);
    let key_file = admin_key_path(&empty.0).display().to_string();
    for needle in [
        "unauthenticated",
        "--admin-key",
        "VIGIL_ADMIN_KEY",
        &key_file,
    ] {
        assert!(missing.stderr.contains(needle), "{needle}: {missing:?}");
    }
    // VIGIL_SERVER and VIGIL_DATA_DIR stand for the flags.
    let mut bare = Command::new(VIGIL);
    bare.current_dir(&server.cwd.0)
        .env("VIGIL_SERVER", server.grpc.to_string())
        .env("VIGIL_DATA_DIR", server.data_dir())
        .env_remove("VIGIL_ADMIN_KEY")
        .args(["ctl", "room", "list"]);
    assert_eq!(run(&mut bare).ok().first_words(), ["site-1"]);

    // A server without authentication needs no key at all.
    let open = Server::start(&["--insecure-no-auth"]);
    assert!(read_admin_key(open.data_dir()).expect("readable").is_none());
    open.ctl(&["room", "create", "demo"]).ok();
    assert_eq!(open.ctl(&["room", "list"]).ok().first_words(), ["demo"]);
}

#[test]
fn an_unreachable_server_exits_3() {
    // A port nobody listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let cwd = TempDir::new("cwd");
    let mut command = Command::new(VIGIL);
    command
        .current_dir(&cwd.0)
        .env_remove("VIGIL_SERVER")
        .args([
            "ctl",
            "--server",
            &format!("127.0.0.1:{port}"),
            "room",
            "list",
        ]);
    let unreachable = run(&mut command).failed(3);
    assert!(
        unreachable.stderr.starts_with(&format!(
            "vigil ctl: cannot reach the Vigil server at http://127.0.0.1:{port}: "
        )),
        "{unreachable:?}"
    );
    assert!(
        unreachable.stderr.contains("Connection refused"),
        "{unreachable:?}"
    );
}

/// With `--tls-self-signed`, `vigil ctl --server https://...` trusts the
/// CA the server keeps in the data directory; without that CA the
/// certificate is refused (exit 3, unreachable), so the check is real.
#[test]
fn ctl_speaks_https_trusting_the_data_directory_ca() {
    let server = Server::start(&["--tls-self-signed"]);
    assert_eq!(server.scheme, "https");
    server.ctl(&["room", "create", "site-1"]).ok();
    let listed = server.ctl(&["room", "list"]).ok();
    assert_eq!(listed.first_words(), ["site-1"], "{listed:?}");

    let key = std::fs::read_to_string(server.data_dir().join("admin.key")).unwrap();
    let elsewhere = TempDir::new("no-ca");
    let refused =
        run(server
            .ctl_in(&elsewhere.0)
            .args(["--admin-key", key.trim(), "room", "list"]));
    assert_eq!(refused.code, Some(3), "{refused:?}");
    assert!(
        refused.stderr.contains("certificate") || refused.stderr.contains("Certificate"),
        "{refused:?}"
    );
    // Given the CA explicitly, it works from anywhere.
    let ca = server.data_dir().join("tls").join("ca.pem");
    let listed = run(server.ctl_in(&elsewhere.0).args([
        "--admin-key",
        key.trim(),
        "--tls-ca",
        ca.to_str().unwrap(),
        "room",
        "list",
    ]));
    assert_eq!(listed.code, Some(0), "{listed:?}");
}

#[test]
fn usage_errors_exit_2_and_help_lists_every_command() {
    let vigil = |args: &[&str]| {
        let mut command = Command::new(VIGIL);
        command.args(args).env("VIGIL_ADMIN_KEY", "secret-in-env");
        run(&mut command)
    };
    for args in [
        &["ctl"][..],
        &["ctl", "room", "frobnicate"],
        &["ctl", "mute", "site-1", "cam-1", "smell"],
        &["ctl", "--server", "ftp://vigil.example", "room", "list"],
        // A server flag before `ctl` would be ignored: refused instead.
        &["--grpc-listen", "127.0.0.1:1", "ctl", "room", "list"],
    ] {
        let outcome = vigil(args);
        assert_eq!(outcome.code, Some(2), "{args:?}: {outcome:?}");
        assert!(!outcome.stderr.is_empty(), "{args:?}: {outcome:?}");
    }
    let help = vigil(&["ctl", "--help"]).ok();
    for command in [
        "room",
        "token",
        "participants",
        "hang-up",
        "unban",
        "mute",
        "call",
        "camera",
        "watch",
    ] {
        assert!(help.stdout.contains(command), "{command}: {}", help.stdout);
    }
    assert!(help.stdout.contains("VIGIL_ADMIN_KEY"), "{}", help.stdout);
    assert!(!help.stdout.contains("secret-in-env"), "{}", help.stdout);
    let help = vigil(&["--help"]).ok();
    assert!(help.stdout.contains("--drain-secs"), "{}", help.stdout);
    assert!(help.stdout.contains("ctl"), "{}", help.stdout);
}
