//! The keyframe alarm means a viewer asked for a keyframe and it did not
//! come: a browser-like publisher, which sends a keyframe only when asked,
//! never raises it however far apart its keyframes are; an encoder that
//! ignores requests raises it once a request has waited for the room's
//! threshold, and the keyframe that finally comes clears it.

use std::time::{Duration, Instant};

use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::control::{Scene, Watcher};
use vigil_tests::peers::{Keyframes, Publisher};

const ROOM: &str = "site-1";
/// The room's keyframe threshold, short so the test is quick. Until issue
/// 13 the same field was the longest allowed interval between keyframes,
/// which the browser-like publisher below exceeds many times over.
const WAIT_MS: u32 = 1500;

async fn scene() -> Scene {
    let request = pb::CreateRoomRequest {
        alarm_rules: Some(pb::AlarmRules {
            max_keyframe_interval_ms: Some(WAIT_MS),
            // Only delta frames go out between keyframes here, a low
            // bitrate; this test is about keyframes alone.
            min_bitrate_bps: Some(0),
            ..Default::default()
        }),
        ..Default::default()
    };
    Scene::with_room(ROOM, request, |_| {}).await
}

fn keyframe_alarm(event: &pb::Event) -> Option<String> {
    match &event.kind {
        Some(Kind::AlarmRaised(a)) if a.kind == pb::AlarmKind::KeyframeInterval as i32 => {
            Some(format!("{}: {}", a.stream, a.detail))
        }
        _ => None,
    }
}

/// The keyframe alarms raised among what `watcher` received so far.
fn keyframe_alarms(watcher: &mut Watcher) -> Vec<String> {
    watcher.drain().iter().filter_map(keyframe_alarm).collect()
}

/// When `publisher` sent each keyframe: the first of its packets that
/// start one (an H264 keyframe's SPS/PPS and IDR can each count as a start),
/// a frame's packets being written within microseconds of each other.
fn keyframes_sent(publisher: &Publisher) -> Vec<Instant> {
    let sent = publisher.sent.lock().expect("sent log");
    let mut times: Vec<Instant> = Vec::new();
    for packet in sent.video.iter().filter(|p| p.keyframe_start) {
        let same_frame = times
            .last()
            .is_some_and(|t| packet.at.duration_since(*t) < Duration::from_millis(10));
        if !same_frame {
            times.push(packet.at);
        }
    }
    times
}

fn longest_gap(times: &[Instant], until: Instant) -> Duration {
    times
        .iter()
        .chain([&until])
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1].duration_since(*w[0]))
        .max()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_sends_keyframes_only_when_asked_never_alarms() {
    let mut scene = scene().await;
    let mut watcher = scene.watch_room().await;
    let wait = Duration::from_millis(WAIT_MS.into());
    let publisher = scene
        .publisher_with("browser-1", Keyframes::OnRequest)
        .await;

    // Alone: nobody asks, so one keyframe at the start and none since.
    tokio::time::sleep(3 * wait).await;
    // A viewer joins (the server asks for a keyframe for it), then loses
    // its picture three times (a PLI each); each request is answered
    // within a frame.
    let viewer = scene.viewer("browser-1", "dispatcher").await;
    tokio::time::sleep(3 * wait).await;
    for _ in 0..3 {
        viewer.request_keyframe().await;
        tokio::time::sleep(wait).await;
    }
    tokio::time::sleep(wait).await;

    let requests = publisher.sent.lock().expect("sent log").keyframe_requests;
    let keyframes = keyframes_sent(&publisher);
    let gap = longest_gap(&keyframes, Instant::now());
    eprintln!(
        "browser-like publisher: {} keyframes sent, {requests} requests received, \
         longest time without a keyframe {gap:?}",
        keyframes.len()
    );
    assert!(
        requests >= 2,
        "the join and the viewer's PLIs reached the publisher ({requests})"
    );
    assert!(
        keyframes.len() <= requests + 1,
        "the publisher sent keyframes it was not asked for: {} for {requests} requests",
        keyframes.len()
    );
    // What the alarm used to measure: far over its threshold.
    assert!(
        gap > 2 * wait,
        "the keyframes were never far enough apart to test anything ({gap:?})"
    );
    let raised = keyframe_alarms(&mut watcher);
    assert!(
        raised.is_empty(),
        "keyframe alarm raised for a publisher that answered every request: {raised:?}"
    );
    let listed = scene.participant("browser-1").await;
    assert!(
        listed.active_alarms.is_empty(),
        "active alarms: {:?}",
        listed.active_alarms
    );
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_keyframe_request_alarms_until_the_keyframe_comes() {
    let mut scene = scene().await;
    let mut watcher = scene.watch_room().await;
    let wait = Duration::from_millis(WAIT_MS.into());
    let publisher = scene.publisher_with("encoder-1", Keyframes::Never).await;

    // A viewer joins: it starts on the cached first keyframe, and the
    // server asks the publisher for a fresh one, which never comes.
    let viewer = scene.viewer("encoder-1", "dispatcher").await;
    let asked_at = viewer.video()[0].at;
    let detail = watcher
        .wait_for(
            wait + Duration::from_secs(5),
            "AlarmRaised KEYFRAME_INTERVAL",
            keyframe_alarm,
        )
        .await;
    let delay = asked_at.elapsed();
    eprintln!("KEYFRAME_INTERVAL raised {delay:?} after the viewer's request: {detail:?}");
    assert!(
        publisher.sent.lock().expect("sent log").keyframe_requests >= 1,
        "the server asked the publisher for a keyframe"
    );
    assert!(
        detail.starts_with("encoder-1: a keyframe asked for"),
        "{detail}"
    );
    assert!(
        delay + Duration::from_millis(200) >= wait,
        "raised {delay:?} after the request, before the {wait:?} threshold"
    );
    assert!(
        delay <= wait + Duration::from_millis(1500),
        "raised {delay:?} after the request; the threshold is {wait:?}"
    );
    let listed = scene.participant("encoder-1").await;
    assert!(
        listed
            .active_alarms
            .contains(&(pb::AlarmKind::KeyframeInterval as i32)),
        "active alarms while waiting: {:?}",
        listed.active_alarms
    );

    // More requests while it waits do not raise it again.
    viewer.request_keyframe().await;
    tokio::time::sleep(wait).await;
    assert_eq!(keyframe_alarms(&mut watcher), Vec::<String>::new());

    publisher.send_keyframe();
    let sent = Instant::now();
    watcher
        .wait_for(
            Duration::from_secs(5),
            "AlarmCleared KEYFRAME_INTERVAL",
            |e| match &e.kind {
                Some(Kind::AlarmCleared(a)) if a.kind == pb::AlarmKind::KeyframeInterval as i32 => {
                    (a.stream == "encoder-1").then_some(())
                }
                _ => None,
            },
        )
        .await;
    let delay = sent.elapsed();
    eprintln!("KEYFRAME_INTERVAL cleared {delay:?} after the keyframe was sent");
    assert!(
        delay <= Duration::from_millis(1500),
        "cleared after {delay:?}"
    );
    scene.shutdown().await;
}
