//! `vigil ctl`'s commands on live sessions, against a server with a real
//! WebRTC publisher: `participants` lists it with its tracks, `stats`
//! shows its stream's figures, `mute` and `--unmute` change its video
//! track, `call` asks another participant to play it, `hang-up` closes it, and `vigil ctl watch` prints each of those
//! events as a line. (`gateway/tests/ctl.rs` covers the rest of `vigil ctl`
//! with the binary as the server; this one needs real peers.)

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use vigil_proto::v1 as pb;
use vigil_tests::control::{ADMIN_KEY, Scene};
use vigil_tests::eventually;
use vigil_tests::process::vigil_binary;

const ROOM: &str = "site-1";
const LIMIT: Duration = Duration::from_secs(20);

/// `vigil ctl` for `scene`'s server with the admin key, nothing from the
/// environment.
fn ctl(scene: &Scene) -> Command {
    let mut command = Command::new(vigil_binary());
    command
        .arg("ctl")
        .arg("--server")
        .arg(format!("http://{}", scene.vigil.grpc_addr))
        .arg("--admin-key")
        .arg(ADMIN_KEY)
        .env_remove("VIGIL_SERVER")
        .env_remove("VIGIL_DATA_DIR")
        .kill_on_drop(true);
    command
}

/// Runs `vigil ctl <args>`, asserts it succeeded, returns its stdout.
async fn ok(scene: &Scene, args: &[&str]) -> String {
    let output = tokio::time::timeout(LIMIT, ctl(scene).args(args).output())
        .await
        .unwrap_or_else(|_| panic!("vigil ctl {args:?} still running after {LIMIT:?}"))
        .expect("run vigil ctl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "vigil ctl {args:?}: {}: {stdout} {stderr}",
        output.status
    );
    stdout
}

/// `vigil ctl watch ROOM`, subscribed, its lines read as they come.
struct Watch {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Watch {
    async fn start(scene: &Scene) -> Watch {
        let mut child = ctl(scene)
            .args(["watch", ROOM])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vigil ctl watch");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut stderr = BufReader::new(stderr).lines();
        // It says so once the server has subscribed it: nothing after is missed.
        let watching = tokio::time::timeout(LIMIT, stderr.next_line())
            .await
            .expect("watch started in time")
            .expect("read stderr");
        assert_eq!(
            watching.as_deref(),
            Some("watching events (Ctrl-C to stop)")
        );
        let stdout = child.stdout.take().expect("piped stdout");
        Watch {
            _child: child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// Skips lines until one whose kind and fields (after `#ID TIME ROOM
    /// IDENTITY`) start with `expected`; returns the identity column.
    async fn until(&mut self, expected: &str) -> String {
        let read = async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .expect("read watch output")
                    .expect("watch still running");
                let words: Vec<&str> = line.splitn(5, ' ').collect();
                assert_eq!(words.len(), 5, "{line}");
                assert_eq!(words[2], ROOM, "{line}");
                if words[4].starts_with(expected) {
                    return words[3].to_owned();
                }
            }
        };
        tokio::time::timeout(LIMIT, read)
            .await
            .unwrap_or_else(|_| panic!("no `{expected}` line within {LIMIT:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_mute_call_and_hang_up_with_ctl() {
    let mut scene = Scene::new(ROOM).await;
    let mut watch = Watch::start(&scene).await;
    let _publisher = scene.publisher("field-1").await;
    // Only someone in the room can be called.
    let _dispatcher = scene.publisher("dispatcher").await;
    eventually(LIMIT, "field-1's video track listed", || async {
        let participants = scene.participants().await;
        let field = participants.iter().find(|p| p.identity == "field-1")?;
        field
            .tracks
            .iter()
            .any(|t| t.kind == pb::TrackKind::Video as i32)
            .then_some(())
    })
    .await;

    let listed = ok(&scene, &["participants", ROOM]).await;
    let line = listed
        .lines()
        .find(|line| line.starts_with("field-1 "))
        .unwrap_or_else(|| panic!("field-1 not listed: {listed}"));
    assert!(line.contains(" publishing=true "), "{line}");
    assert!(
        line.contains(" tracks=") && line.contains("video/"),
        "{line}"
    );

    // `stats`: the stream's line, then one per track.
    let stats = ok(&scene, &["stats", ROOM, "field-1"]).await;
    assert!(stats.starts_with("field-1 viewers=0 "), "{stats}");
    let video = stats
        .lines()
        .find(|line| line.starts_with("track video "))
        .unwrap_or_else(|| panic!("no video track line: {stats}"));
    assert!(
        video.contains(" codec=video/H264 ") && video.contains(" size=320x240 "),
        "{video}"
    );
    let stats: Value =
        serde_json::from_str(&ok(&scene, &["--json", "stats", ROOM, "field-1"]).await)
            .expect("JSON");
    assert_eq!(stats["stream"], "field-1", "{stats}");
    assert!(
        stats["tracks"].as_array().is_some_and(|t| t
            .iter()
            .any(|t| t["kind"] == "TRACK_KIND_VIDEO" && t["packets_received"].as_u64() > Some(0))),
        "{stats}"
    );

    assert_eq!(
        ok(&scene, &["mute", ROOM, "field-1", "video"]).await,
        "muted video of field-1 in site-1\n"
    );
    let listed: Value =
        serde_json::from_str(&ok(&scene, &["--json", "participants", ROOM]).await).expect("JSON");
    let field = listed["participants"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["identity"] == "field-1"))
        .unwrap_or_else(|| panic!("field-1 not listed: {listed}"));
    let video = field["tracks"]
        .as_array()
        .and_then(|tracks| tracks.iter().find(|t| t["kind"] == "TRACK_KIND_VIDEO"))
        .unwrap_or_else(|| panic!("no video track: {field}"));
    assert_eq!(video["muted"], true, "{field}");
    assert_eq!(
        ok(&scene, &["mute", ROOM, "field-1", "video", "--unmute"]).await,
        "unmuted video of field-1 in site-1\n"
    );

    let called = ok(&scene, &["call", ROOM, "field-1", "dispatcher"]).await;
    let call_id = called
        .strip_prefix("called dispatcher call_id=")
        .and_then(|rest| rest.strip_suffix(" whep_path=/whep/site-1/field-1\n"))
        .unwrap_or_else(|| panic!("{called}"));
    assert_eq!(call_id.len(), 16, "{called}");
    assert_eq!(
        ok(&scene, &["hang-up", ROOM, "field-1", "--ban-secs", "600"]).await,
        "hung up field-1 in site-1 sessions_closed=1\n"
    );
    assert_eq!(
        ok(&scene, &["unban", ROOM, "field-1"]).await,
        "lifted the ban on field-1 in site-1\n"
    );
    assert_eq!(
        ok(&scene, &["unban", ROOM, "field-1"]).await,
        "field-1 was not banned in site-1\n"
    );

    // The same story as `vigil ctl watch` told it, in order.
    let joined = watch
        .until("participant_joined role=publisher stream=field-1")
        .await;
    assert_eq!(joined, "field-1");
    watch.until("track_published kind=video codec=video/").await;
    watch.until("track_muted kind=video muted=true").await;
    watch.until("track_muted kind=video muted=false").await;
    let callee = watch
        .until(&format!(
            "call_requested call_id={call_id} caller=field-1 callee=dispatcher whep_path=/whep/site-1/field-1"
        ))
        .await;
    assert_eq!(callee, "dispatcher");
    // Hanging the caller up ends its ringing call.
    watch
        .until("participant_left role=publisher stream=field-1 reason=hung_up")
        .await;
    watch
        .until(&format!(
            "call_ended call_id={call_id} caller=field-1 callee=dispatcher reason=caller_left"
        ))
        .await;
}

/// `vigil ctl alarms` lists a stall alarm of a real stream, `vigil ctl ack`
/// acknowledges it, and the list then says who saw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_are_listed_and_acknowledged_with_ctl() {
    let request = pb::CreateRoomRequest {
        alarm_rules: Some(pb::AlarmRules {
            stall_after_ms: Some(1000),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut scene = Scene::with_room(ROOM, request, |_| {}).await;
    let mut publisher = scene.publisher("field-1").await;
    publisher.stop_media();
    let line = eventually(LIMIT, "a stall alarm listed", || async {
        let listed = ok(&scene, &["alarms", ROOM]).await;
        listed
            .lines()
            .find(|l| l.contains(" stalled stream=field-1 "))
            .map(str::to_owned)
    })
    .await;
    assert!(line.contains(" cleared=active acknowledged=no "), "{line}");
    let id = line
        .strip_prefix('#')
        .and_then(|rest| rest.split_once(' '))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("no id: {line}"));

    let acked = ok(&scene, &["ack", ROOM, &id]).await;
    assert!(acked.contains(" acknowledged=admin@"), "{acked}");
    let listed: Value =
        serde_json::from_str(&ok(&scene, &["--json", "alarms", ROOM]).await).expect("JSON");
    let alarm = listed["alarms"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|a| a["id"].as_u64().map(|n| n.to_string()).as_deref() == Some(id.as_str()))
        })
        .unwrap_or_else(|| panic!("alarm {id} not listed: {listed}"));
    assert_eq!(alarm["kind"], "ALARM_KIND_STALLED", "{alarm}");
    assert_eq!(alarm["acknowledged"]["by"], "admin", "{alarm}");

    let missing = ctl(&scene)
        .args(["ack", ROOM, "999999"])
        .output()
        .await
        .expect("run vigil ctl");
    assert_eq!(
        missing.status.code(),
        Some(1),
        "an unknown alarm is an error"
    );
}
