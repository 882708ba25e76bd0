//! IP cameras from the console, in headless Chromium
//! (`tests/browser/console_cameras.mjs` drives the rooms page and the
//! wall; this test checks the server's copy at each step).
//!
//! The admin adds an RTSP camera with a user name and a password through
//! the rooms page's form. Its URL points at a closed port in the test's
//! namespace (`rtsp://127.0.0.1:9/cam`), so it never goes live. The list
//! shows it with the URL as the server masks it
//! (`rtsp://admin:***@127.0.0.1:9/cam`), and the password is in neither
//! page's markup, text or inputs. Adding it again is refused by the server
//! (ALREADY_EXISTS), and the form says so where it was filled in. The wall
//! has a tile for it, live or not, with "Mute" but without "Call back" or
//! "Hang up", and its "camera offline" alarm in the list and as the tile's
//! badge (the room's `stall_after` is 1 s; a camera that is connecting is
//! offline). The wall's event panel has one line of the camera's state,
//! however often it was tried again. The admin edits it:
//! another closed port, UDP, the password field left empty, which keeps the
//! stored password (the server still has one, and the masked URL still
//! shows `***`). While that form is open and half typed, the test adds a
//! second camera over gRPC (on demand, no credentials): both pages show it
//! from the feed alone, and the form is still there, focused, with what was
//! typed. Removing the first camera (after the confirmation) takes it off
//! the list and the wall, and the server forgets it; the second stays.
//!
//! The gateway's puller finds nothing at the camera's address, so its
//! state reaches UNREACHABLE in the list and on the tile, before and after
//! the edit.
//!
//! Vigil and Chromium run in a network namespace of their own, as in
//! `console_chromium.rs`. Screenshots land in `artifacts/console-cameras/`.

use std::time::Duration;

use serde_json::Value;
use vigil_proto::v1 as pb;
use vigil_tests::browser::{BrowserDriver, artifacts_dir, assert_driver_ok, driver_args, text};
use vigil_tests::control::{ADMIN_KEY, Scene, admin};
use vigil_tests::netns;

const ROOM: &str = "site-1";
const CAMERA: &str = "gate";
/// Added over gRPC while the page edits [`CAMERA`].
const OTHER: &str = "door";
/// Unlike anything else on the pages, so that finding it anywhere is a leak.
const PASSWORD: &str = "pw-7Qx9-never-shown";
const DRIVER_LIMIT: Duration = Duration::from_secs(180);

#[test]
fn cameras_added_edited_and_removed_from_the_console() {
    cameras_from_the_console(true);
}

/// The room's cameras as the server lists them.
async fn cameras(scene: &Scene) -> Vec<pb::Camera> {
    scene
        .clients
        .rooms
        .clone()
        .list_cameras(admin(pb::ListCamerasRequest { room: ROOM.into() }))
        .await
        .expect("ListCameras")
        .into_inner()
        .cameras
}

fn cameras_from_the_console(puller: bool) {
    let artifacts = artifacts_dir(if puller {
        "console-cameras-unreachable"
    } else {
        "console-cameras"
    });
    netns::run(move || async move {
        let room = pb::CreateRoomRequest {
            alarm_rules: Some(pb::AlarmRules {
                stall_after_ms: Some(1000),
                ..Default::default()
            }),
            ..Default::default()
        };
        let scene = Scene::with_room(ROOM, room, |_| {}).await;
        let args = driver_args(
            &[
                ("base", &scene.base),
                ("key", ADMIN_KEY),
                ("room", ROOM),
                ("camera", CAMERA),
                ("other", OTHER),
                ("password", PASSWORD),
                ("puller", if puller { "yes" } else { "no" }),
            ],
            artifacts,
        );
        let mut driver = BrowserDriver::spawn("console_cameras.mjs", args, DRIVER_LIMIT);
        let mut server_edited = None;
        let r = loop {
            let line = driver.next().await;
            match line["event"].as_str() {
                Some("add-other") => {
                    scene
                        .clients
                        .rooms
                        .clone()
                        .add_camera(admin(pb::AddCameraRequest {
                            room: ROOM.into(),
                            identity: OTHER.into(),
                            url: "rtsp://127.0.0.1:11/door".into(),
                            on_demand: true,
                            ..Default::default()
                        }))
                        .await
                        .expect("AddCamera");
                    driver.send("added").await;
                }
                Some("edited") => {
                    server_edited = Some(cameras(&scene).await);
                    driver.send("checked").await;
                }
                Some("removed") => {
                    let left: Vec<String> = cameras(&scene)
                        .await
                        .into_iter()
                        .map(|c| c.identity)
                        .collect();
                    assert_eq!(left, [OTHER], "removed on the page, not on the server");
                    driver.send("checked").await;
                }
                Some(other) => panic!("unexpected driver event {other}"),
                None => {}
            }
            if let Some(result) = line.get("result") {
                break result.clone();
            }
        };
        assert_driver_ok("console cameras", &r, &driver.stderr());
        let s = &r["steps"];

        let added = &s["added"];
        assert_eq!(added["url"], "rtsp://admin:***@127.0.0.1:9/cam", "{added}");
        assert_eq!(
            (&added["transport"], &added["onDemand"]),
            (&Value::from("TCP"), &Value::from("no")),
            "{added}"
        );
        // Connecting, or already past it with the puller.
        assert!(
            ["connecting", "unreachable"].contains(&text(&added["state"], "state")),
            "{added}"
        );
        assert_eq!(s["addedLeaks"], Value::Array(vec![]), "the rooms page");
        assert_eq!(s["wallLeaks"], Value::Array(vec![]), "the wall");
        let duplicate = text(&s["duplicate"], "the second add's error");
        assert!(
            duplicate.contains("already has a camera named gate"),
            "{duplicate}"
        );

        let tile = &s["tile"];
        assert_eq!(tile["isCamera"], true, "{tile}");
        let actions: Vec<&str> = tile["actions"]
            .as_array()
            .expect("the tile's buttons")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            !actions.contains(&"call") && !actions.contains(&"hangup"),
            "a camera takes no call and is not hung up: {tile}"
        );
        assert!(
            actions.contains(&"mute-video") && actions.contains(&"mute-audio"),
            "{tile}"
        );
        assert!(
            text(&tile["notice"], "the tile's notice").starts_with("connecting")
                || tile["cameraState"] == "unreachable",
            "a camera that is not live says so over its picture: {tile}"
        );
        let alarm = text(&s["alarm"], "the alarm row");
        assert!(alarm.contains("gate: camera offline"), "{alarm}");
        assert_eq!(s["alarmBadge"], "camera offline", "the tile's badge");

        if puller {
            let unreachable = &s["unreachable"];
            assert_eq!(
                unreachable["listed"]["state"], "unreachable",
                "{unreachable}"
            );
            assert!(
                !text(&unreachable["listed"]["detail"], "the list's detail").is_empty(),
                "the server's reason is shown: {unreachable}"
            );
            assert_eq!(
                unreachable["tile"]["cameraState"], "unreachable",
                "{unreachable}"
            );
            assert!(
                text(&unreachable["tile"]["notice"], "the tile's notice")
                    .starts_with("unreachable"),
                "{unreachable}"
            );
            assert_eq!(s["tileAfterEdit"]["cameraState"], "unreachable", "{s}");
        }

        let password = &s["editPassword"];
        assert_eq!(
            (
                &password["type"],
                &password["value"],
                &password["placeholder"]
            ),
            (
                &Value::from("password"),
                &Value::from(""),
                &Value::from("(unchanged)")
            ),
            "{password}"
        );
        let edited = &s["edited"];
        assert_eq!(
            edited["url"], "rtsp://admin:***@127.0.0.1:10/cam2",
            "an empty password field keeps the password: {edited}"
        );
        assert_eq!(edited["transport"], "UDP", "{edited}");
        let other = &s["other"];
        assert_eq!(
            other["listed"]["url"], "rtsp://127.0.0.1:11/door",
            "{other}"
        );
        assert_eq!(other["listed"]["onDemand"], "yes", "{other}");
        assert_eq!(other["tile"]["isCamera"], true, "{other}");
        let survived = &s["editSurvived"];
        assert_eq!(
            (&survived["value"], &survived["focused"]),
            (&Value::from("rtsp://127.0.0.1:10/cam2"), &Value::from(true)),
            "the list was read again under a half-typed edit: {survived}"
        );
        let server = server_edited.expect("the driver reported its edit");
        let Some(camera) = server.iter().find(|c| c.identity == CAMERA) else {
            panic!("{CAMERA} after the edit: {server:?}");
        };
        assert_eq!(camera.url, "rtsp://admin:***@127.0.0.1:10/cam2");
        assert_eq!(camera.username, "admin");
        assert!(camera.has_password, "the empty field kept the password");
        assert_eq!(camera.transport(), pb::CameraTransport::Udp);
        assert!(!camera.on_demand);
        assert_eq!(s["tileAfterEdit"]["isCamera"], true, "{s}");

        let removed = &s["removed"];
        let list = text(&removed["list"], "the list");
        assert!(list.contains(OTHER) && !list.contains(CAMERA), "{removed}");
        assert_eq!(removed["tiles"], Value::from(vec![OTHER]), "{removed}");
        let events: Vec<&str> = removed["events"]
            .as_array()
            .expect("the wall's events")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            events.iter().any(|e| e.ends_with("Camera gate removed")),
            "{removed}"
        );
        // Connecting, then unreachable, again at each retry and after the
        // edit: one line in the panel, its last state.
        let states = events
            .iter()
            .filter(|e| e.contains("Camera gate: "))
            .count();
        assert_eq!(states, 1, "{events:#?}");
        scene.shutdown().await;
    });
}
