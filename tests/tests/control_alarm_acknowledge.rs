//! A room keeps its alarms with their raised and cleared times
//! (ListAlarms); a dispatcher acknowledges one (AcknowledgeAlarm), every
//! wall hears who did, and the alarm stays listed as active until its cause
//! ends.

use std::time::Duration;

use tonic::Code;
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::control::{ADMIN_KEY, Scene, Watcher, admin, subscribe_only, with_bearer};
use vigil_tests::eventually;

const ROOM: &str = "site-1";

fn list_request(recent_seconds: Option<u32>) -> pb::ListAlarmsRequest {
    pb::ListAlarmsRequest {
        room: ROOM.into(),
        recent_seconds,
    }
}

async fn list(scene: &Scene) -> Vec<pb::Alarm> {
    scene
        .clients
        .rooms
        .clone()
        .list_alarms(admin(list_request(None)))
        .await
        .expect("ListAlarms")
        .into_inner()
        .alarms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_alarm_stays_listed_until_cleared_and_every_wall_hears_who() {
    let request = pb::CreateRoomRequest {
        alarm_rules: Some(pb::AlarmRules {
            stall_after_ms: Some(1000),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut scene = Scene::with_room(ROOM, request, |_| {}).await;
    let dispatcher = scene
        .token(
            "dispatcher-1",
            pb::Grants {
                admin: true,
                ..Default::default()
            },
        )
        .await;
    // Two walls: the admin's, and a dispatcher's signed in with its token.
    let mut admin_wall = scene.watch_room().await;
    let mut dispatcher_wall = Watcher::start(
        &scene.vigil,
        &dispatcher,
        pb::WatchRequest {
            room: ROOM.into(),
            ..Default::default()
        },
    )
    .await;
    let mut publisher = scene.publisher("field-1").await;
    eventually(Duration::from_secs(10), "field-1's bitrate", || async {
        (scene.participant("field-1").await.bitrate_bps > 0).then_some(())
    })
    .await;
    assert!(list(&scene).await.is_empty(), "no alarm while media flows");

    publisher.stop_media();
    let (raised_id, raised_at) = admin_wall
        .wait_for(
            Duration::from_secs(10),
            "AlarmRaised STALLED",
            |e| match &e.kind {
                Some(Kind::AlarmRaised(a)) if a.kind == pb::AlarmKind::Stalled as i32 => {
                    Some((e.id, e.at_unix_ms))
                }
                _ => None,
            },
        )
        .await;
    let listed = list(&scene).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let alarm = &listed[0];
    assert_eq!(alarm.id, raised_id, "named by the raising event");
    assert_eq!(alarm.kind, pb::AlarmKind::Stalled as i32);
    assert_eq!(
        (alarm.stream.as_str(), alarm.identity.as_str()),
        ("field-1", "field-1")
    );
    assert_eq!(alarm.raised_at_unix_ms, raised_at);
    assert_eq!(alarm.cleared_at_unix_ms, None);
    assert!(alarm.detail.starts_with("no media for"), "{}", alarm.detail);
    assert_eq!(alarm.acknowledged, None);

    // A viewer's token may not acknowledge; an unknown alarm is not found.
    let viewer = scene.token("viewer-1", subscribe_only()).await;
    let mut rooms = scene.clients.rooms.clone();
    let ack = |id: u64| pb::AcknowledgeAlarmRequest {
        room: ROOM.into(),
        alarm_id: id,
    };
    let refused = rooms
        .acknowledge_alarm(with_bearer(ack(raised_id), &viewer))
        .await
        .expect_err("a viewer acknowledging");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let unknown = rooms
        .acknowledge_alarm(with_bearer(ack(raised_id + 1000), &dispatcher))
        .await
        .expect_err("an unknown alarm");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    let acked = rooms
        .acknowledge_alarm(with_bearer(ack(raised_id), &dispatcher))
        .await
        .expect("AcknowledgeAlarm")
        .into_inner()
        .alarm
        .expect("the alarm");
    let acknowledgement = acked.acknowledged.clone().expect("acknowledged");
    assert_eq!(acknowledgement.by, "dispatcher-1");
    assert!(acknowledgement.at_unix_ms >= raised_at);
    assert_eq!(acked.cleared_at_unix_ms, None, "still active");
    for (wall, name) in [
        (&mut admin_wall, "admin"),
        (&mut dispatcher_wall, "dispatcher"),
    ] {
        let heard = wall
            .wait_for(Duration::from_secs(5), "AlarmAcknowledged", |e| {
                match &e.kind {
                    Some(Kind::AlarmAcknowledged(a)) => Some(a.clone()),
                    _ => None,
                }
            })
            .await;
        assert_eq!(heard.alarm_id, raised_id, "{name}'s wall");
        assert_eq!(heard.by, "dispatcher-1", "{name}'s wall");
        assert_eq!(heard.stream, "field-1", "{name}'s wall");
    }
    // The admin key acknowledging again changes nothing.
    let again = rooms
        .acknowledge_alarm(admin(ack(raised_id)))
        .await
        .expect("AcknowledgeAlarm again")
        .into_inner()
        .alarm
        .expect("the alarm");
    assert_eq!(again.acknowledged, Some(acknowledgement.clone()));
    assert_eq!(
        list(&scene).await,
        vec![acked.clone()],
        "listed, acknowledged"
    );

    publisher.start_media();
    let cleared = admin_wall
        .wait_for(
            Duration::from_secs(5),
            "AlarmCleared STALLED",
            |e| match &e.kind {
                Some(Kind::AlarmCleared(a)) => Some((a.alarm_id, e.at_unix_ms)),
                _ => None,
            },
        )
        .await;
    assert_eq!(cleared.0, raised_id, "the clearing names the alarm");
    let listed = list(&scene).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].cleared_at_unix_ms, Some(cleared.1));
    assert_eq!(listed[0].acknowledged, Some(acknowledgement));
    let mut more_acknowledgements = 0;
    dispatcher_wall
        .wait_for(Duration::from_secs(5), "AlarmCleared", |e| match &e.kind {
            Some(Kind::AlarmAcknowledged(_)) => {
                more_acknowledgements += 1;
                None
            }
            Some(Kind::AlarmCleared(_)) => Some(()),
            _ => None,
        })
        .await;
    assert_eq!(more_acknowledgements, 0, "acknowledging again told nobody");
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_alarms_needs_a_room_admin_and_a_known_room() {
    let mut scene = Scene::new(ROOM).await;
    let viewer = scene.token("viewer-1", subscribe_only()).await;
    let mut rooms = scene.clients.rooms.clone();
    let refused = rooms
        .list_alarms(with_bearer(list_request(None), &viewer))
        .await
        .expect_err("a viewer listing alarms");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let unknown = rooms
        .list_alarms(with_bearer(
            pb::ListAlarmsRequest {
                room: "nowhere".into(),
                recent_seconds: Some(60),
            },
            ADMIN_KEY,
        ))
        .await
        .expect_err("an unknown room");
    assert_eq!(unknown.code(), Code::NotFound);
    scene.shutdown().await;
}
