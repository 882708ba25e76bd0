//! State survives a restart: with a data directory and no configured
//! secrets, the generated admin key and signing key are kept (mode 0600),
//! rooms keep their settings, tokens issued before still publish, revoked
//! ones stay revoked, banned identities stay banned, event ids keep
//! increasing, and alarms are kept with their times.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use vigil_gateway::{Credentials, Vigil};
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::conformance::obs_offer;
use vigil_tests::control::{Clients, Watcher, clients, secure_server, with_bearer};
use vigil_tests::http_client::post_sdp_as;
use vigil_tests::peers::Publisher;
use vigil_tests::{TempDir, base_url};

const ROOM: &str = "site-1";

/// A secure server whose secrets come from `dir` (created on first start).
async fn server_on(dir: &Path) -> Vigil {
    let dir = dir.to_owned();
    secure_server(move |c| {
        c.data_dir = Some(dir);
        c.secrets = None;
    })
    .await
}

fn admin_key(vigil: &Vigil) -> (String, bool) {
    match &vigil.credentials {
        Credentials::AdminKey { key, generated, .. } => (key.clone(), *generated),
        Credentials::None => panic!("a secure server has an admin key"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_secrets_and_tokens_survive_a_restart() {
    let dir = TempDir::new("restart");

    // First start: the keys are generated.
    let vigil = server_on(dir.path()).await;
    let (key, generated) = admin_key(&vigil);
    assert!(generated, "first start generates the admin key");
    assert!(!key.is_empty());
    let mut c = clients(&vigil).await;
    let created = c
        .rooms
        .create_room(with_bearer(
            pb::CreateRoomRequest {
                name: ROOM.into(),
                limits: Some(pb::RoomLimits {
                    max_publishers: Some(3),
                    max_viewers: Some(7),
                }),
                alarm_rules: Some(pb::AlarmRules {
                    stall_after_ms: Some(1500),
                    min_bitrate_bps: Some(20_000),
                    max_keyframe_interval_ms: Some(4000),
                }),
            },
            &key,
        ))
        .await
        .expect("CreateRoom with the generated key")
        .into_inner();
    let token = c
        .tokens
        .create_token(with_bearer(
            pb::CreateTokenRequest {
                room: ROOM.into(),
                identity: "alice".into(),
                grants: Some(pb::Grants {
                    publish: true,
                    ..Default::default()
                }),
                ttl_seconds: None,
            },
            &key,
        ))
        .await
        .expect("CreateToken")
        .into_inner()
        .token;
    drop(c);
    vigil.shutdown().await;

    // Second start on the same directory: everything is loaded.
    let vigil = server_on(dir.path()).await;
    let (reloaded, generated) = admin_key(&vigil);
    assert!(!generated, "second start loads the admin key");
    assert_eq!(reloaded, key, "the admin key survives the restart");

    let mut c = clients(&vigil).await;
    let got = c
        .rooms
        .get_room(with_bearer(pb::GetRoomRequest { name: ROOM.into() }, &key))
        .await
        .expect("GetRoom after the restart")
        .into_inner();
    assert_eq!(
        got, created,
        "the room and its settings survive the restart"
    );
    let listed = c
        .rooms
        .list_rooms(with_bearer(pb::ListRoomsRequest::default(), &key))
        .await
        .expect("ListRooms")
        .into_inner();
    let names: Vec<_> = listed.rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [ROOM]);

    let publisher = Publisher::connect_as(&base_url(&vigil), ROOM, "alice", &token)
        .await
        .unwrap_or_else(|r| {
            panic!(
                "a token from before the restart still publishes: {} {}",
                r.status, r.body
            )
        });
    assert_eq!(publisher.delete().await, 200);

    for file in ["admin.key", "signing.key"] {
        let path = dir.path().join(file);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file} has mode {:o}", mode & 0o777);
    }
    let stored_key = std::fs::read_to_string(dir.path().join("admin.key")).expect("admin.key");
    assert_eq!(stored_key.trim(), key, "admin.key holds the admin key");
    drop(c);
    vigil.shutdown().await;
}

/// The id of the `RoomCreated` event for a room named `name`, created now.
async fn create_room_event_id(vigil: &Vigil, key: &str, name: &str) -> u64 {
    let mut watcher = Watcher::start(vigil, key, pb::WatchRequest::default()).await;
    let mut c = clients(vigil).await;
    c.rooms
        .create_room(with_bearer(
            pb::CreateRoomRequest {
                name: name.into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("CreateRoom");
    watcher
        .wait_for(Duration::from_secs(5), "RoomCreated", |e| {
            (e.room == name && matches!(e.kind, Some(Kind::RoomCreated(_)))).then_some(e.id)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ids_keep_increasing_across_a_restart() {
    let dir = TempDir::new("restart");
    let vigil = server_on(dir.path()).await;
    let (key, _) = admin_key(&vigil);
    let before = create_room_event_id(&vigil, &key, "before").await;
    vigil.shutdown().await;

    let vigil = server_on(dir.path()).await;
    let after = create_room_event_id(&vigil, &key, "after").await;
    assert!(
        after > before,
        "event id {after} after the restart, {before} before: a watcher resuming from \
         {before} would miss it"
    );
    vigil.shutdown().await;
}

/// A server on `dir`, its admin key and clients, with `ROOM` created with
/// `request`'s settings.
async fn first_start_with_room(
    dir: &TempDir,
    request: pb::CreateRoomRequest,
) -> (Vigil, String, Clients) {
    let vigil = server_on(dir.path()).await;
    let (key, _) = admin_key(&vigil);
    let mut c = clients(&vigil).await;
    c.rooms
        .create_room(with_bearer(
            pb::CreateRoomRequest {
                name: ROOM.into(),
                ..request
            },
            &key,
        ))
        .await
        .expect("CreateRoom");
    (vigil, key, c)
}

async fn publish_token(vigil: &Vigil, key: &str, identity: &str) -> String {
    issue(vigil, key, identity).await.token
}

/// CreateToken for `identity` in `ROOM`, with the publish grant.
async fn issue(vigil: &Vigil, key: &str, identity: &str) -> pb::CreateTokenResponse {
    let request = pb::CreateTokenRequest {
        room: ROOM.into(),
        identity: identity.into(),
        grants: Some(pb::Grants {
            publish: true,
            ..Default::default()
        }),
        ttl_seconds: None,
    };
    clients(vigil)
        .await
        .tokens
        .create_token(with_bearer(request, key))
        .await
        .expect("CreateToken")
        .into_inner()
}

async fn list_alarms(vigil: &Vigil, key: &str) -> Vec<pb::Alarm> {
    let request = pb::ListAlarmsRequest {
        room: ROOM.into(),
        recent_seconds: None,
    };
    clients(vigil)
        .await
        .rooms
        .list_alarms(with_bearer(request, key))
        .await
        .expect("ListAlarms")
        .into_inner()
        .alarms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_survive_a_restart_with_their_times_and_acknowledgements() {
    let dir = TempDir::new("restart");
    let request = pb::CreateRoomRequest {
        limits: Some(pb::RoomLimits {
            max_publishers: Some(1),
            max_viewers: None,
        }),
        ..Default::default()
    };
    let (vigil, key, mut c) = first_start_with_room(&dir, request).await;
    let alice = publish_token(&vigil, &key, "alice").await;
    let bob = publish_token(&vigil, &key, "bob").await;

    // Alice fills the room; Bob is refused: ROOM_FULL, acknowledged.
    let first = Publisher::connect_as(&base_url(&vigil), ROOM, "alice", &alice)
        .await
        .unwrap_or_else(|r| panic!("alice: {} {}", r.status, r.body));
    let refused = Publisher::connect_as(&base_url(&vigil), ROOM, "bob", &bob)
        .await
        .err()
        .expect("bob is refused");
    assert_eq!(refused.status, 503);
    let before = list_alarms(&vigil, &key).await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].kind, pb::AlarmKind::RoomFull as i32);
    assert_eq!(before[0].identity, "bob");
    c.rooms
        .acknowledge_alarm(with_bearer(
            pb::AcknowledgeAlarmRequest {
                room: ROOM.into(),
                alarm_id: before[0].id,
            },
            &key,
        ))
        .await
        .expect("AcknowledgeAlarm");
    drop(first);
    drop(c);
    // Shutting down closes Alice's session, which ends the alarm.
    vigil.shutdown().await;

    let vigil = server_on(dir.path()).await;
    let after = list_alarms(&vigil, &key).await;
    assert_eq!(after.len(), 1, "{after:?}");
    let kept = &after[0];
    assert_eq!(
        (kept.id, kept.raised_at_unix_ms, kept.detail.as_str()),
        (
            before[0].id,
            before[0].raised_at_unix_ms,
            before[0].detail.as_str()
        ),
        "the same alarm, raised when it was"
    );
    let cleared = kept.cleared_at_unix_ms.expect("cleared by the shutdown");
    assert!(cleared >= kept.raised_at_unix_ms);
    assert_eq!(
        kept.acknowledged.as_ref().map(|a| a.by.as_str()),
        Some("admin")
    );

    // A new alarm after the restart gets a new id.
    let _alice = Publisher::connect_as(&base_url(&vigil), ROOM, "alice", &alice)
        .await
        .unwrap_or_else(|r| panic!("alice again: {} {}", r.status, r.body));
    assert!(
        Publisher::connect_as(&base_url(&vigil), ROOM, "bob", &bob)
            .await
            .is_err()
    );
    let now = list_alarms(&vigil, &key).await;
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now[0].id > kept.id, "ids {} then {}", kept.id, now[0].id);
    assert_eq!(now[0].cleared_at_unix_ms, None);
    vigil.shutdown().await;
}

/// What a WHIP POST of OBS's offer with `token` comes to: 201 once the
/// token is admitted, 401 if it is refused.
async fn whip_status(vigil: &Vigil, identity: &str, token: &str) -> (u16, String) {
    let url = format!("{}/whip/{ROOM}/{identity}", base_url(vigil));
    let response = post_sdp_as(&url, &obs_offer(), Some(token)).await;
    (response.status, response.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_and_bans_survive_a_restart() {
    let dir = TempDir::new("restart");
    let (vigil, key, mut c) = first_start_with_room(&dir, Default::default()).await;
    let alice = issue(&vigil, &key, "alice").await;
    let bob = issue(&vigil, &key, "bob").await;
    c.tokens
        .revoke_token(with_bearer(
            pb::RevokeTokenRequest {
                room: ROOM.into(),
                token_id: alice.token_id.clone(),
            },
            &key,
        ))
        .await
        .expect("RevokeToken");
    // Dave is hung up with a ten-minute ban (whether or not he is live).
    let dave = issue(&vigil, &key, "dave").await;
    c.rooms
        .hang_up(with_bearer(
            pb::HangUpRequest {
                room: ROOM.into(),
                identity: "dave".into(),
                ban_seconds: 600,
            },
            &key,
        ))
        .await
        .expect("HangUp with a ban");
    drop(c);
    vigil.shutdown().await;

    // Alice's token stays revoked, Dave stays banned; Bob's still opens
    // the room.
    let vigil = server_on(dir.path()).await;
    let (status, body) = whip_status(&vigil, "alice", &alice.token).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("was revoked"), "{body}");
    let (status, body) = whip_status(&vigil, "dave", &dave.token).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("kept out of room"), "{body}");
    assert_eq!(whip_status(&vigil, "bob", &bob.token).await.0, 201);

    // Every token of the room, then a restart: Bob's is refused too, and
    // a token issued after the revocation works.
    let mut c = clients(&vigil).await;
    c.tokens
        .revoke_room_tokens(with_bearer(
            pb::RevokeRoomTokensRequest { room: ROOM.into() },
            &key,
        ))
        .await
        .expect("RevokeRoomTokens");
    let carol = issue(&vigil, &key, "carol").await;
    drop(c);
    vigil.shutdown().await;
    let vigil = server_on(dir.path()).await;
    let (status, body) = whip_status(&vigil, "bob", &bob.token).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("every token issued for room"), "{body}");
    assert_eq!(whip_status(&vigil, "carol", &carol.token).await.0, 201);
    vigil.shutdown().await;
}
