//! Cameras over gRPC and `vigil ctl`: AddCamera, ListCameras, UpdateCamera
//! and RemoveCamera against a real server, with their errors; no password
//! ever leaves the server; a camera is not a person (HangUp refuses it,
//! WHIP may not take its stream); a camera that is not live raises
//! CAMERA_OFFLINE; cameras outlast a restart.
//!
//! Nothing here asserts a live state: the cameras point at a closed port.

use std::process::Output;
use std::time::Duration;

use tokio::process::Command;
use tonic::Code;
use vigil_gateway::Vigil;
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_proto::v1::room_service_client::RoomServiceClient;
use vigil_tests::TempDir;
use vigil_tests::control::{
    ADMIN_KEY, Scene, Watcher, admin, clients, publish_and_subscribe, secure_server, with_bearer,
};
use vigil_tests::peers::Publisher;
use vigil_tests::process::vigil_binary;

const ROOM: &str = "site-1";
const PASSWORD: &str = "s3cret-pass";
/// Port 9 (discard) on loopback: nothing answers, so the camera stays
/// offline.
const URL: &str = "rtsp://admin:s3cret-pass@127.0.0.1:9/stream1";
const LIMIT: Duration = Duration::from_secs(10);

fn add_request(identity: &str, url: &str) -> pb::AddCameraRequest {
    pb::AddCameraRequest {
        room: ROOM.into(),
        identity: identity.into(),
        url: url.into(),
        ..Default::default()
    }
}

/// A camera's settings, without what its puller reports.
fn settings(camera: &pb::Camera) -> pb::Camera {
    pb::Camera {
        state: 0,
        state_detail: String::new(),
        state_since_unix_ms: 0,
        tracks: Vec::new(),
        ..camera.clone()
    }
}

/// Asserts that `message` carries the password nowhere, in any field
/// (prost's `Debug` shows every field).
fn no_password(message: &impl std::fmt::Debug) {
    let shown = format!("{message:?}");
    assert!(
        !shown.contains(PASSWORD),
        "the password left the server: {shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_are_added_listed_updated_and_removed() {
    let mut scene = Scene::with_room(
        ROOM,
        pb::CreateRoomRequest {
            alarm_rules: Some(pb::AlarmRules {
                stall_after_ms: Some(1000),
                ..Default::default()
            }),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let mut watcher = scene.watch_room().await;
    let mut rooms = scene.clients.rooms.clone();

    let added = rooms
        .add_camera(admin(add_request("gate", URL)))
        .await
        .expect("AddCamera")
        .into_inner();
    no_password(&added);
    assert_eq!(added.url, "rtsp://admin:***@127.0.0.1:9/stream1");
    assert_eq!(added.username, "admin");
    assert!(added.has_password);
    assert_eq!(added.transport, pb::CameraTransport::Tcp as i32);
    assert_eq!(added.state, pb::CameraState::Connecting as i32);
    let changed = watcher
        .wait_for(LIMIT, "CameraStateChanged of gate", |e| match &e.kind {
            Some(Kind::CameraStateChanged(c)) if e.identity == "gate" => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(changed.state, pb::CameraState::Connecting as i32);

    let listed = rooms
        .list_cameras(admin(pb::ListCamerasRequest { room: ROOM.into() }))
        .await
        .expect("ListCameras")
        .into_inner();
    no_password(&listed);
    // The settings as added; the state is the puller's by now (port 9
    // refuses the connection).
    assert_eq!(
        listed.cameras.iter().map(settings).collect::<Vec<_>>(),
        vec![settings(&added)]
    );

    // Not live within the room's stall_after (1 s): CAMERA_OFFLINE, listed
    // with the room's alarms.
    let raised = watcher
        .wait_for(LIMIT, "CAMERA_OFFLINE raised", |e| match &e.kind {
            Some(Kind::AlarmRaised(a)) if a.kind == pb::AlarmKind::CameraOffline as i32 => {
                Some((e.id, a.clone()))
            }
            _ => None,
        })
        .await;
    assert_eq!(raised.1.stream, "gate");
    assert!(
        raised.1.detail.starts_with("camera gate "),
        "{:?}",
        raised.1.detail
    );
    let alarms = rooms
        .list_alarms(admin(pb::ListAlarmsRequest {
            room: ROOM.into(),
            recent_seconds: None,
        }))
        .await
        .expect("ListAlarms")
        .into_inner()
        .alarms;
    assert!(alarms.iter().any(|a| a.id == raised.0), "{alarms:?}");

    // Errors.
    let code = |r: Result<tonic::Response<pb::Camera>, tonic::Status>| {
        r.map(|_| ()).expect_err("refused").code()
    };
    let again = rooms.add_camera(admin(add_request("gate", URL))).await;
    assert_eq!(code(again), Code::AlreadyExists);
    let http = rooms
        .add_camera(admin(add_request("yard", "http://127.0.0.1/")))
        .await;
    assert_eq!(code(http), Code::InvalidArgument);
    let name = rooms.add_camera(admin(add_request("a gate", URL))).await;
    assert_eq!(code(name), Code::InvalidArgument);
    let elsewhere = rooms
        .add_camera(admin(pb::AddCameraRequest {
            room: "nowhere".into(),
            ..add_request("gate", URL)
        }))
        .await;
    assert_eq!(code(elsewhere), Code::NotFound);
    let anonymous = rooms
        .add_camera(tonic::Request::new(add_request("yard", URL)))
        .await;
    assert_eq!(code(anonymous), Code::Unauthenticated);
    let unknown = rooms
        .update_camera(admin(pb::UpdateCameraRequest {
            room: ROOM.into(),
            identity: "yard".into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(code(unknown), Code::NotFound);

    // A camera is not a person.
    let hang_up = rooms
        .hang_up(admin(pb::HangUpRequest {
            room: ROOM.into(),
            identity: "gate".into(),
            ban_seconds: 0,
        }))
        .await
        .expect_err("HangUp of a camera");
    assert_eq!(hang_up.code(), Code::FailedPrecondition);
    assert!(hang_up.message().contains("RemoveCamera"), "{hang_up:?}");
    let token = scene.token("gate", publish_and_subscribe()).await;
    match Publisher::connect_as(&scene.base, ROOM, "gate", &token).await {
        Ok(_) => panic!("WHIP took a camera's stream"),
        Err(refused) => assert_eq!(refused.status, 409, "{}", refused.body),
    }

    // A room admin token manages the room's cameras too.
    let dispatcher = scene
        .token(
            "dispatcher",
            pb::Grants {
                admin: true,
                ..Default::default()
            },
        )
        .await;
    let updated = rooms
        .update_camera(with_bearer(
            pb::UpdateCameraRequest {
                room: ROOM.into(),
                identity: "gate".into(),
                url: Some("rtsp://127.0.0.1:9/stream2".into()),
                transport: Some(pb::CameraTransport::Udp as i32),
                on_demand: Some(true),
                ..Default::default()
            },
            &dispatcher,
        ))
        .await
        .expect("UpdateCamera")
        .into_inner();
    no_password(&updated);
    assert_eq!(updated.url, "rtsp://admin:***@127.0.0.1:9/stream2");
    assert_eq!(updated.transport, pb::CameraTransport::Udp as i32);
    assert!(updated.on_demand && updated.has_password);
    let cleared = rooms
        .update_camera(admin(pb::UpdateCameraRequest {
            room: ROOM.into(),
            identity: "gate".into(),
            username: Some(String::new()),
            password: Some(String::new()),
            ..Default::default()
        }))
        .await
        .expect("UpdateCamera")
        .into_inner();
    assert_eq!(cleared.url, "rtsp://127.0.0.1:9/stream2");
    assert!(!cleared.has_password);

    // A dispatcher's wall (its admin-grant token) sees the camera's events.
    let mut wall = Watcher::start(
        &scene.vigil,
        &dispatcher,
        pb::WatchRequest {
            room: ROOM.into(),
            ..Default::default()
        },
    )
    .await;
    rooms
        .remove_camera(admin(pb::RemoveCameraRequest {
            room: ROOM.into(),
            identity: "gate".into(),
        }))
        .await
        .expect("RemoveCamera");
    wall.wait_for(LIMIT, "CameraRemoved on the wall", |e| {
        matches!(e.kind, Some(Kind::CameraRemoved(_))).then_some(())
    })
    .await;
    watcher
        .wait_for(LIMIT, "CAMERA_OFFLINE cleared", |e| match &e.kind {
            Some(Kind::AlarmCleared(c)) if c.alarm_id == raised.0 => Some(()),
            _ => None,
        })
        .await;
    watcher
        .wait_for(LIMIT, "CameraRemoved of gate", |e| match &e.kind {
            Some(Kind::CameraRemoved(_)) if e.identity == "gate" => Some(()),
            _ => None,
        })
        .await;
    let listed = rooms
        .list_cameras(admin(pb::ListCamerasRequest { room: ROOM.into() }))
        .await
        .expect("ListCameras")
        .into_inner();
    assert!(listed.cameras.is_empty());
    let gone = rooms
        .remove_camera(admin(pb::RemoveCameraRequest {
            room: ROOM.into(),
            identity: "gate".into(),
        }))
        .await
        .expect_err("RemoveCamera twice");
    assert_eq!(gone.code(), Code::NotFound);
    scene.shutdown().await;
}

/// `vigil ctl` for `vigil` with the admin key, nothing from the
/// environment but `env`.
async fn ctl(vigil: &Vigil, args: &[&str], env: &[(&str, &str)]) -> Output {
    let run = Command::new(vigil_binary())
        .arg("ctl")
        .arg("--server")
        .arg(format!("http://{}", vigil.grpc_addr))
        .arg("--admin-key")
        .arg(ADMIN_KEY)
        .args(args)
        .env_remove("VIGIL_SERVER")
        .env_remove("VIGIL_DATA_DIR")
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("vigil ctl {args:?} still running after {LIMIT:?}"))
        .expect("run vigil ctl")
}

/// Runs `vigil ctl`, asserts it succeeded and printed no password, and
/// returns its stdout.
async fn ok(vigil: &Vigil, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = ctl(vigil, args, env).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "vigil ctl {args:?}: {}: {stdout} {stderr}",
        output.status
    );
    assert!(
        !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
        "{stdout} {stderr}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_with_ctl() {
    let scene = Scene::new(ROOM).await;
    let vigil = &scene.vigil;
    let env = [("GATE_PASSWORD", PASSWORD)];

    let added = ok(
        vigil,
        &[
            "camera",
            "add",
            ROOM,
            "gate",
            "rtsp://127.0.0.1:9/stream1",
            "--username",
            "admin",
            "--password-env",
            "GATE_PASSWORD",
        ],
        &env,
    )
    .await;
    assert!(added.starts_with("gate state=connecting "), "{added}");
    assert!(
        added.contains(" url=rtsp://admin:***@127.0.0.1:9/stream1 ")
            && added.contains(" has_password=true ")
            && added.contains(" transport=tcp ")
            && added.contains(" on_demand=false "),
        "{added}"
    );

    let listed = ok(vigil, &["--json", "camera", "list", ROOM], &[]).await;
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    let gate = &listed["cameras"][0];
    assert_eq!(gate["identity"], "gate");
    assert_eq!(gate["has_password"], true);
    assert!(
        ["CAMERA_STATE_CONNECTING", "CAMERA_STATE_UNREACHABLE"]
            .contains(&gate["state"].as_str().unwrap_or_default()),
        "{gate}"
    );
    assert_eq!(gate["url"], "rtsp://admin:***@127.0.0.1:9/stream1");

    let updated = ok(
        vigil,
        &[
            "camera",
            "update",
            ROOM,
            "gate",
            "--udp",
            "--on-demand",
            "true",
        ],
        &[],
    )
    .await;
    assert!(
        updated.contains(" transport=udp ") && updated.contains(" on_demand=true "),
        "{updated}"
    );

    // Refusals exit 1 and say why; a missing variable is a usage error.
    let twice = ctl(
        vigil,
        &["camera", "add", ROOM, "gate", "rtsp://127.0.0.1:9/"],
        &[],
    )
    .await;
    assert_eq!(twice.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("camera gate"));
    let unset = ctl(
        vigil,
        &[
            "camera",
            "add",
            ROOM,
            "yard",
            "rtsp://127.0.0.1:9/",
            "--password-env",
            "VIGIL_TEST_NO_SUCH_VARIABLE",
        ],
        &[],
    )
    .await;
    assert_eq!(unset.status.code(), Some(2));

    let removed = ok(vigil, &["camera", "remove", ROOM, "gate"], &[]).await;
    assert_eq!(removed.trim(), format!("removed camera gate from {ROOM}"));
    let listed = ok(vigil, &["camera", "list", ROOM], &[]).await;
    assert_eq!(listed, "");
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_outlast_a_restart() {
    let dir = TempDir::new("cameras-restart");
    let start = || {
        let dir = dir.path().to_owned();
        secure_server(move |c| c.data_dir = Some(dir))
    };
    let vigil = start().await;
    let mut c = clients(&vigil).await;
    vigil_tests::control::create_room(&mut c, ROOM).await;
    c.rooms
        .add_camera(admin(add_request("gate", URL)))
        .await
        .expect("AddCamera");
    vigil.shutdown().await;

    let vigil = start().await;
    let mut rooms = RoomServiceClient::new(vigil_tests::control::channel(&vigil).await);
    let listed = rooms
        .list_cameras(admin(pb::ListCamerasRequest { room: ROOM.into() }))
        .await
        .expect("ListCameras after the restart")
        .into_inner();
    assert_eq!(listed.cameras.len(), 1, "{listed:?}");
    let gate = &listed.cameras[0];
    assert_eq!(gate.url, "rtsp://admin:***@127.0.0.1:9/stream1");
    assert!(gate.has_password);
    let mut watcher = Watcher::start(
        &vigil,
        ADMIN_KEY,
        pb::WatchRequest {
            room: ROOM.into(),
            ..Default::default()
        },
    )
    .await;
    rooms
        .delete_room(admin(pb::DeleteRoomRequest { name: ROOM.into() }))
        .await
        .expect("DeleteRoom");
    watcher
        .wait_for(LIMIT, "RoomDeleted", |e| {
            matches!(e.kind, Some(Kind::RoomDeleted(_))).then_some(())
        })
        .await;
    vigil.shutdown().await;

    // Deleted with its room: nothing comes back.
    let vigil = start().await;
    let mut c = clients(&vigil).await;
    vigil_tests::control::create_room(&mut c, ROOM).await;
    let listed = c
        .rooms
        .list_cameras(admin(pb::ListCamerasRequest { room: ROOM.into() }))
        .await
        .expect("ListCameras")
        .into_inner();
    assert!(listed.cameras.is_empty(), "{listed:?}");
    vigil.shutdown().await;
}
