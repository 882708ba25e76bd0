//! Three things that happen at a dispatcher's desk, in headless Chromium
//! (`tests/browser/console_desk.mjs` drives the wall and the join pages;
//! this test runs Vigil with tokens required, follows the room's events
//! with the admin key, and asserts on what the browsers decoded and showed,
//! lined up with what the server said):
//!
//! - **Takeover**: a field user is live from its join page; the same link
//!   (same token) goes live from a fresh browser context without a DELETE
//!   of the first session, as a phone back from a network drop would. The
//!   server accepts it at once and ends the first session as `REPLACED`;
//!   the first page says another page took over and stops for good, the
//!   second stays live, and the wall's one tile of the stream plays on
//!   (never "reconnecting…", "offline" or a second tile). The second
//!   page's event feed lags 0.5 s behind its WHIP exchange, so the
//!   `REPLACED` leave reaches it after its answer: it must still know that
//!   leave was of the session it took over, not its own.
//! - **Wall reload mid-call**: the dispatcher calls the field user back and
//!   the field page plays the dispatcher; then the wall is reloaded. The
//!   old page's camera session ends with a DELETE as the page goes, which
//!   is the caller leaving on purpose, so the server ends the call
//!   (`CALLER_LEFT`, docs/api.md): the camera does not restart by itself.
//!   The field page stops playing and says the dispatcher left; the
//!   reloaded wall shows no call and its camera off, and never showed the
//!   call as on after the server ended it; calling again from it works.
//! - **Publish-only callee**: a token that grants publish but not
//!   subscribe. Called back, its page plays the dispatcher all the same
//!   (the call is its grant) and says nothing of a missing grant.
//!
//! Vigil and Chromium run in a network namespace of their own, as in
//! `console_chromium.rs`. Screenshots land in `artifacts/console-desk/`.

use std::time::Duration;

use serde_json::Value;
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::browser::{
    BrowserDriver, artifacts_dir, assert_driver_ok, decodes, driver_args, text,
};
use vigil_tests::control::{ADMIN_KEY, Scene, publish_and_subscribe};
use vigil_tests::netns;

const ROOM: &str = "site-1";
/// The field user of the takeover and the reload.
const FIELD: &str = "field-1";
/// The field user whose token grants publish only.
const PUBLISH_ONLY: &str = "field-2";
/// Every step included (each has a 30 s bound; the whole run takes well under a minute).
const DRIVER_LIMIT: Duration = Duration::from_secs(180);

#[test]
fn takeover_wall_reload_and_publish_only_callee() {
    let artifacts = artifacts_dir("console-desk");
    netns::run(move || async move {
        let mut scene = Scene::new(ROOM).await;
        let field = scene.token(FIELD, publish_and_subscribe()).await;
        let publish_only = scene
            .token(
                PUBLISH_ONLY,
                pb::Grants {
                    publish: true,
                    ..Default::default()
                },
            )
            .await;
        let mut watcher = scene.watch_room().await;

        let args = driver_args(
            &[
                ("base", &scene.base),
                ("key", ADMIN_KEY),
                ("room", ROOM),
                ("field", &field),
                ("publish-only", &publish_only),
            ],
            artifacts,
        );
        let mut driver = BrowserDriver::spawn("console_desk.mjs", args, DRIVER_LIMIT);
        let r = driver
            .result(|event, _| panic!("unexpected driver event {event}"))
            .await;
        assert_driver_ok("console desk", &r, &driver.stderr());
        let events = watcher.drain();
        let s = &r["steps"];
        takeover(&s["takeover"], &events);
        let caller = reload(&s["reload"], &events);
        publish_only_callee(&s["publishOnly"], &events, &caller);
        scene.shutdown().await;
    });
}

/// Unix ms a step recorded under `key`.
fn ms(step: &Value, key: &str) -> i64 {
    step[key]
        .as_i64()
        .unwrap_or_else(|| panic!("no {key} in {step}"))
}

/// The events about `identity` from `from` to `to` (Unix ms, inclusive).
fn about<'a>(events: &'a [pb::Event], identity: &str, from: i64, to: i64) -> Vec<&'a pb::Event> {
    events
        .iter()
        .filter(|e| e.identity == identity && (from..=to).contains(&e.at_unix_ms))
        .collect()
}

/// A call event in words: `requested CALLER`, `connected CALLER`,
/// `ended CALLER REASON`.
fn call_event(event: &pb::Event) -> Option<String> {
    match event.kind.as_ref()? {
        Kind::CallRequested(c) => Some(format!("requested {}", c.caller)),
        Kind::CallConnected(c) => Some(format!("connected {}", c.caller)),
        Kind::CallEnded(c) => Some(format!("ended {} {:?}", c.caller, c.reason())),
        _ => None,
    }
}

/// The wall's recorded changes of a tile (`{at, identity, count, state, call, button}`).
fn wall_log(step: &Value) -> &Vec<Value> {
    step["wall"]
        .as_array()
        .unwrap_or_else(|| panic!("no wall recording in {step}"))
}

fn takeover(s: &Value, events: &[pb::Event]) {
    decodes(&s["before"], "the tile before the takeover");

    // Accepted at once: no "already has a publisher", live in seconds.
    assert_eq!(s["second"]["error"], "", "the second page was refused: {s}");
    assert_eq!(s["second"]["state"], "live", "{s}");
    let live = s["secondLiveMs"].as_u64().expect("secondLiveMs");
    assert!(live < 10_000, "the second page went live after {live} ms");

    // The first page says why it stopped, and stays stopped.
    assert_eq!(s["first"]["state"], "replaced", "{s}");
    assert!(
        text(&s["first"]["text"], "first page").contains("another page or device"),
        "{s}"
    );
    let later = &s["later"];
    assert_eq!(later["first"]["state"], "replaced", "{later}");
    assert_eq!(
        later["firstOwnVideo"], false,
        "the replaced page still holds its camera: {later}"
    );
    // The second page did not take its own takeover for someone else's.
    assert_eq!(later["second"]["state"], "live", "{later}");

    // The wall's tile decodes on, the same one, alone.
    decodes(&s["tile"], "the tile after the takeover");
    assert_eq!(s["tile"]["state"], "playing", "{s}");
    decodes(&later["tile"], "the tile 3 s after the takeover");
    assert_eq!(later["tile"]["status"], "playing", "{later}");
    assert_eq!(later["tiles"], serde_json::json!([FIELD]), "{later}");
    // What the tile showed when the second page went live, then each change.
    let shown = wall_log(s);
    assert_eq!(
        shown.first().map(|e| &e["state"]),
        Some(&"playing".into()),
        "{shown:?}"
    );
    for shown in shown {
        assert_eq!(
            shown["count"], 1,
            "the wall showed {shown} during the takeover"
        );
        let state = shown["state"].as_str().unwrap_or_default();
        assert!(
            !["reconnecting", "offline"].contains(&state),
            "the tile said {state} during the takeover: {shown}"
        );
    }

    // What the server did: one REPLACED leave of the first session, one
    // new publisher session, nothing else ended.
    let window = about(events, FIELD, ms(s, "at"), ms(s, "doneAt"));
    let publisher = pb::SessionRole::Publisher as i32;
    let leaves: Vec<_> = window
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::ParticipantLeft(l)) if l.role == publisher => Some(l.reason()),
            _ => None,
        })
        .collect();
    assert_eq!(leaves, [pb::LeaveReason::Replaced], "{window:?}");
    let joins = window
        .iter()
        .filter(|e| matches!(&e.kind, Some(Kind::ParticipantJoined(j)) if j.role == publisher))
        .count();
    assert_eq!(joins, 1, "{window:?}");
}

/// Checks the reload; returns the dispatcher's identity (the caller).
fn reload(s: &Value, events: &[pb::Event]) -> String {
    // Before the reload: the field page plays the dispatcher, the tile
    // says "in call".
    decodes(&s["call"], "the field page's call before the reload");
    assert_eq!(s["before"]["inCall"], true, "{s}");
    assert_eq!(s["before"]["button"], "End call", "{s}");
    let caller = text(&s["caller"]["state"], "the wall's camera")
        .strip_prefix("live as ")
        .unwrap_or_else(|| panic!("the wall's camera is not live while calling: {s}"))
        .to_owned();

    // The server's side: the reload ended the call as the caller leaving.
    let calls: Vec<String> = about(events, FIELD, ms(&s["call"], "at"), ms(s, "doneAt"))
        .into_iter()
        .filter_map(call_event)
        .collect();
    assert_eq!(
        calls,
        [
            format!("requested {caller}"),
            format!("connected {caller}"),
            format!("ended {caller} CallerLeft"),
            format!("requested {caller}"),
            format!("connected {caller}"),
            format!("ended {caller} Ended"),
        ],
        "the calls to {FIELD}"
    );
    let ended_at = events
        .iter()
        .find(|e| matches!(&e.kind, Some(Kind::CallEnded(c)) if c.callee == FIELD))
        .map(|e| e.at_unix_ms)
        .expect("the first call's end");
    assert!(ended_at >= ms(s, "at"), "the call ended before the reload");
    let reconnected_at = events
        .iter()
        .filter(|e| matches!(&e.kind, Some(Kind::CallConnected(c)) if c.callee == FIELD))
        .map(|e| e.at_unix_ms)
        .nth(1)
        .expect("the second call's start");

    // The field page stopped playing and says who left; it is still live.
    let field = &s["field"];
    assert_eq!(field["videoVisible"], false, "{field}");
    assert_eq!(field["playing"], false, "{field}");
    assert_eq!(
        field["note"],
        format!("The call ended: {caller} left."),
        "{field}"
    );
    assert_eq!(field["status"]["state"], "live", "{field}");

    // The reloaded wall: the tile plays, shows no call, the camera is off.
    decodes(&s["tile"], "the tile after the reload");
    let after = &s["after"];
    assert_eq!(after["inCall"], false, "{after}");
    assert_eq!(after["ringing"], false, "{after}");
    assert_eq!(after["button"], "Call back", "{after}");
    assert_eq!(after["camera"]["state"], "camera off", "{after}");
    assert_eq!(after["camera"]["liveTracks"], 0, "{after}");
    // From its first moment it never showed a call before calling again,
    // and every "in call" came after the server's new CallConnected.
    let shown = wall_log(s);
    assert!(
        shown.iter().any(|e| e["call"] == "in call"),
        "the recording has the second call: {shown:?}"
    );
    for shown in shown {
        assert!(shown["count"].as_u64() <= Some(1), "two tiles: {shown}");
        let at = shown["at"].as_i64().unwrap_or_default();
        match shown["call"].as_str() {
            Some("in call") => assert!(
                at >= reconnected_at,
                "the reloaded wall showed a call the server had ended: {shown}"
            ),
            Some(other) => assert!(
                at >= ms(&s["again"], "at"),
                "the reloaded wall showed `{other}` before calling: {shown}"
            ),
            None => {}
        }
    }
    // Its panel has the history: the call, and why it ended.
    let ended = format!("Call of {caller} to {FIELD} ended (caller left)");
    assert!(
        s["events"].as_array().is_some_and(|lines| lines
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.ends_with(&ended)))),
        "`{ended}` is not in the reloaded panel: {}",
        s["events"]
    );

    // Calling again from the reloaded wall: same identity, a new camera.
    decodes(&s["again"], "the field page's second call");
    assert_eq!(
        s["againCaller"]["state"],
        format!("live as {caller}"),
        "{s}"
    );
    assert_eq!(s["againEnded"]["note"], "The call ended.", "{s}");
    caller
}

fn publish_only_callee(s: &Value, events: &[pb::Event], caller: &str) {
    decodes(&s["tile"], "the publish-only user's tile");
    let call = &s["call"];
    decodes(call, "the publish-only user's call");
    let page = text(&call["shown"]["page"], "the publish-only page");
    assert!(
        !page.contains("does not grant"),
        "the page speaks of a grant: {page}"
    );
    assert_eq!(call["shown"]["error"], "", "{call}");
    assert_eq!(
        call["shown"]["note"],
        format!("{caller} is calling: you can see and hear them."),
        "{call}"
    );
    assert_eq!(s["status"]["state"], "live", "{s}");
    assert_eq!(s["ended"]["note"], "The call ended.", "{s}");

    // The server let it play the caller as itself, during the call.
    let window = about(events, PUBLISH_ONLY, ms(call, "at"), ms(s, "doneAt"));
    let calls: Vec<String> = window.iter().copied().filter_map(call_event).collect();
    assert_eq!(
        calls,
        [
            format!("requested {caller}"),
            format!("connected {caller}"),
            format!("ended {caller} Ended"),
        ],
        "the calls to {PUBLISH_ONLY}"
    );
    let viewer = pb::SessionRole::Viewer as i32;
    assert!(
        window.iter().any(|e| matches!(&e.kind,
            Some(Kind::ParticipantJoined(j)) if j.role == viewer && j.stream == caller)),
        "{PUBLISH_ONLY} never played {caller}: {window:?}"
    );
}
