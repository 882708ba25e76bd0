//! The web console end to end, in headless Chromium (Debian's
//! `/usr/bin/chromium` driven by playwright-core, fake camera and
//! microphone): `tests/browser/console_e2e.mjs` plays a dispatcher and a
//! field user in two browser contexts against a Vigil with authentication on,
//! and reports what the browsers decoded and showed; this test asserts on it.
//!
//! The steps: sign in with the link `vigil` prints (`/console/#key=...`);
//! create a room (1.5 s stall alarm) and a token on the rooms page; the field
//! user opens the join link and goes live; the dispatcher's wall grows a tile
//! whose video decodes frames; "Call back" makes the field user's page play
//! the dispatcher's camera; stopping the field user's tracks raises a stalled
//! badge on the tile and a row in the alarm panel, announced by a tone and a
//! desktop notification (both counted by a stand-in the driver installs),
//! which one click acknowledges; "Hang up" makes the field user's page say so and stop
//! for good. The standalone `/watch` player plays the stream as well. Then
//! the error paths: a wrong admin key, an expired join link, a camera the
//! browser denies, a room deleted under a live field user, and that room's
//! join link opened again (the page says the room is closed up front).
//!
//! Vigil runs with its default ICE address, 127.0.0.1, and Chromium without
//! `--allow-loopback-in-peer-connection`, as on a newcomer's machine: the
//! browser gathers no loopback candidate, but pairs its own non-loopback
//! address with Vigil's 127.0.0.1 candidate. So that address is private, the
//! test runs in a network namespace of its own (`vigil_tests::netns`: a veth
//! pair, nothing connected outside). Screenshots of each step land in
//! `artifacts/console/` (git-ignored); the README's picture of the wall is
//! one of them.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;
use vigil_gateway::Credentials;
use vigil_tests::browser::assert_driver_ok;
use vigil_tests::{base_url, eventually, netns};

/// The whole driver run, every step included (each step has its own 20 s bound).
const DRIVER_LIMIT: Duration = Duration::from_secs(240);

#[test]
fn dispatcher_and_field_user_in_chromium() {
    let driver = netns::browser_driver("console_e2e.mjs");
    let browser_dir = driver.parent().expect("tests/browser").to_owned();
    let artifacts = vigil_tests::browser::artifacts_dir("console");

    netns::run(move || async move {
        // Vigil's defaults (ICE on 127.0.0.1), as a newcomer runs it.
        let vigil = vigil_tests::start_server(|config| config.insecure_no_auth = false).await;
        let Credentials::AdminKey { key, .. } = &vigil.credentials else {
            panic!("authentication is on, so there is an admin key");
        };
        let driver = Command::new("node")
            .arg(&driver)
            .args([
                "--base",
                &base_url(&vigil),
                "--key",
                key,
                "--stall-ms",
                "1500",
            ])
            .arg("--artifacts")
            .arg(&artifacts)
            .current_dir(&browser_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(DRIVER_LIMIT, driver)
            .await
            .unwrap_or_else(|_| panic!("the console driver took more than {DRIVER_LIMIT:?}"))
            .expect("run node");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("the driver printed no result ({e}): {stdout}\n--- stderr ---\n{stderr}")
        });
        let r = &parsed["result"];
        assert_driver_ok("console e2e", r, &stderr);
        let s = &r["steps"];

        // The dispatcher's tile plays the field user: a picture, and decoding goes on.
        let tile = &s["tile"];
        assert!(tile["first"]["width"].as_u64() > Some(0), "tile: {tile}");
        assert!(
            tile["second"]["frames"].as_u64() > tile["first"]["frames"].as_u64(),
            "the tile's video stopped decoding: {tile}"
        );
        assert_eq!(tile["status"], "playing", "{tile}");
        assert_eq!(s["fieldName"], "field-1", "the name comes from the token");
        // "Add a camera" opened a second field user: the wall has both.
        let second = &s["secondTile"];
        assert!(
            second["second"]["frames"].as_u64() > second["first"]["frames"].as_u64(),
            "the second tile is not decoding: {second}"
        );
        assert_eq!(
            s["tiles"].as_array().map(Vec::len),
            Some(2),
            "{}",
            s["tiles"]
        );
        assert!(
            s["token"]["obsServer"]
                .as_str()
                .is_some_and(|url| url.ends_with("/whip/site-1/field-1")),
            "{}",
            s["token"]
        );
        assert!(
            s["token"]["tokenId"]
                .as_str()
                .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())),
            "the token's id, to revoke it: {}",
            s["token"]
        );

        // The standalone player page plays the stream too.
        let player = &s["player"];
        assert!(
            player["second"]["frames"].as_u64() > player["first"]["frames"].as_u64(),
            "the /watch player is not decoding: {player}"
        );

        // A second dispatcher is a presence, not a camera.
        let other = &s["otherDispatcher"];
        let name = other["name"].as_str().expect("second dispatcher's name");
        assert!(name.starts_with("dispatcher-"), "{other}");
        assert!(
            other["presence"].as_str().is_some_and(|p| p.contains(name)),
            "{other}"
        );
        assert!(
            other["tiles"]
                .as_array()
                .is_some_and(|tiles| tiles.len() == 2 && !tiles.iter().any(|t| t == name)),
            "the wall shows the two cameras and no dispatcher tile: {other}"
        );

        // Calling back: the field user's page decodes the dispatcher's camera.
        let call = &s["call"];
        assert!(call["first"]["width"].as_u64() > Some(0), "call: {call}");
        assert!(
            call["second"]["frames"].as_u64() > call["first"]["frames"].as_u64(),
            "the call stopped decoding: {call}"
        );

        // Ending the call: the field page says so and stops playing it; the
        // dispatcher's camera and microphone are off again.
        let ended = &s["callEnded"];
        assert_eq!(ended["note"], "The call ended.", "{ended}");
        assert_eq!(ended["dispatcherLiveTracks"], 0, "{ended}");
        assert_eq!(ended["callButton"], "Call back", "{ended}");

        // Stopping the field user's media raised the stalled badge within a
        // few seconds (1.5 s threshold plus sampling and delivery).
        let stalled = s["stalledBadgeMs"].as_u64().expect("stalled badge time");
        assert!(stalled < 6000, "stalled badge after {stalled} ms");
        assert!(
            s["alarmLogged"]
                .as_str()
                .is_some_and(|text| text.contains("field-1") && text.contains("stalled")),
            "{}",
            s["alarmLogged"]
        );
        // The alarm panel: announced by a tone and (opted in) a desktop
        // notification, acknowledged by the signed-in admin, kept after it
        // ended.
        let panel = &s["alarmPanel"];
        assert!(
            panel["alerts"]["oscillators"].as_u64() > Some(0),
            "no tone: {panel}"
        );
        assert!(
            panel["alerts"]["notifications"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n["title"]
                    .as_str()
                    .is_some_and(|t| t.contains("field-1") && t.contains("stalled")))),
            "no notification: {panel}"
        );
        assert_eq!(panel["acknowledgedBy"], "admin", "{panel}");
        assert!(
            panel["row"]
                .as_str()
                .is_some_and(|t| t.contains("seen by admin")),
            "{panel}"
        );
        assert!(
            panel["logged"]
                .as_str()
                .is_some_and(|t| t.contains("admin acknowledged field-1: stalled")),
            "{panel}"
        );
        assert!(
            panel["clearedRow"]
                .as_str()
                .is_some_and(|t| t.contains("ended") && t.contains("seen by admin")),
            "{panel}"
        );

        // Hung up: the page says so, stopped its media, and stays stopped.
        let hung = &s["hungUp"];
        assert!(
            hung["text"]
                .as_str()
                .is_some_and(|text| text.contains("hung up")),
            "{hung}"
        );
        assert_eq!(hung["after3s"]["state"], "hung-up", "{hung}");
        assert_eq!(hung["after3s"]["ownVideo"], false, "{hung}");
        assert_eq!(hung["after3s"]["callVisible"], false, "{hung}");
        assert!(
            hung["reloaded"]
                .as_str()
                .is_some_and(|text| text.contains("kept out")),
            "a reload after the hang-up is refused, saying why: {hung}"
        );
        // The wall says who is kept out and for how long; "Let back in"
        // ends the ban and the same page goes live again.
        assert!(
            hung["keptOut"]
                .as_str()
                .is_some_and(|t| t.contains("Kept out") && t.contains("(10 min)")),
            "{hung}"
        );
        assert!(hung["backIn"].is_string(), "{hung}");

        // Errors are told to the person.
        let errors = &r["errors"];
        assert!(
            errors["wrongKey"]
                .as_str()
                .is_some_and(|t| t.contains("Not accepted")),
            "{errors}"
        );
        assert!(
            errors["expiredLink"]
                .as_str()
                .is_some_and(|t| t.contains("expired")),
            "{errors}"
        );
        assert!(
            errors["cameraDenied"]
                .as_str()
                .is_some_and(|t| t.contains("denied")),
            "{errors}"
        );
        assert!(
            errors["roomDeleted"]
                .as_str()
                .is_some_and(|t| t.contains("room was closed")),
            "{errors}"
        );
        // Its join link, opened again, says so up front: no "Go live" to
        // press and fail.
        let again = &errors["deletedRoomLink"];
        assert!(
            again["text"]
                .as_str()
                .is_some_and(|t| t.contains("is closed")),
            "{again}"
        );
        assert_eq!(again["goLiveVisible"], false, "{again}");

        // With the browser gone, every session it opened is gone too.
        eventually(Duration::from_secs(10), "all sessions closed", || async {
            let stats = vigil.sfu.stats().await.ok()?;
            (stats.publishers == 0 && stats.viewers == 0).then_some(())
        })
        .await;
        vigil.shutdown().await;
    });
}
