//! The web console tells the truth when things go wrong, in headless
//! Chromium (`tests/browser/console_reconnect.mjs` drives a dispatcher's
//! wall and two field users; this test runs Vigil, restarts it when the
//! driver asks, and asserts on what the browsers decoded and showed):
//!
//! - the dispatcher mutes a field user's video: that user's page says so;
//! - a field user's tab crashes (no DELETE, no DTLS close): its tile says
//!   "reconnecting…" over a frozen picture within the ICE timeouts, then
//!   "offline" after the republish grace (3 s here), and stays on the wall;
//!   a `/watch` player of the stream says the same; the user comes back
//!   from a new page and the tile decodes again;
//! - the wall is reloaded: its event panel lists the events from before;
//! - Vigil stops and starts again on the same ports and data directory:
//!   the wall shows its "server unreachable" banner while it is down and
//!   clears it after, the field pages go live again by themselves, and both
//!   tiles decode new frames. It stays down for 5 s, so their tries meet a
//!   closed port and back off.
//!
//! Vigil and Chromium run in a network namespace of their own, as in
//! `console_chromium.rs`. Screenshots land in `artifacts/console-reconnect/`.

use std::time::Duration;

use serde_json::Value;
use vigil_gateway::{Config, Vigil};
use vigil_tests::browser::{
    BrowserDriver, artifacts_dir, assert_driver_ok, decodes, driver_args, progress, text,
};
use vigil_tests::control::{
    ADMIN_KEY, clients, create_room, publish_and_subscribe, secure_server, token,
};
use vigil_tests::{TempDir, base_url, netns};

const ROOM: &str = "site-1";
/// Every step included: two ICE timeouts, the grace, a restart with backoff.
const DRIVER_LIMIT: Duration = Duration::from_secs(300);
/// The server's republish grace in this test.
const GRACE: Duration = Duration::from_secs(3);

/// A secure server keeping its rooms in `dir`, with a short republish grace.
async fn server(dir: &TempDir, tweak: impl FnOnce(&mut Config)) -> Vigil {
    let dir = dir.path().to_owned();
    secure_server(move |config| {
        config.data_dir = Some(dir);
        config.republish_grace = GRACE;
        tweak(config);
    })
    .await
}

#[test]
fn pictures_stay_honest_through_drops_and_restarts() {
    let artifacts = artifacts_dir("console-reconnect");
    netns::run(move || async move {
        let dir = TempDir::new("console-reconnect");
        let mut vigil = server(&dir, |_| {}).await;
        let mut c = clients(&vigil).await;
        create_room(&mut c, ROOM).await;
        let field1 = token(&mut c, ROOM, "field-1", publish_and_subscribe()).await;
        let field2 = token(&mut c, ROOM, "field-2", publish_and_subscribe()).await;
        drop(c);

        let base = base_url(&vigil);
        let args = driver_args(
            &[
                ("base", &base),
                ("key", ADMIN_KEY),
                ("room", ROOM),
                ("field1", &field1),
                ("field2", &field2),
            ],
            artifacts,
        );
        let mut driver = BrowserDriver::spawn("console_reconnect.mjs", args, DRIVER_LIMIT);
        let (http, grpc) = (vigil.http_addr, vigil.grpc_addr);
        let r = loop {
            let line = driver.next().await;
            match line["event"].as_str() {
                Some("stop-server") => {
                    eprintln!("stopping Vigil at {:?}", driver.elapsed());
                    vigil.shutdown().await;
                    driver.send("stopped").await;
                    // Parked until the restart: nothing serves meanwhile.
                    vigil = loop {
                        let line = driver.next().await;
                        if line["event"] == "start-server" {
                            break server(&dir, |config| {
                                config.http_listen = http;
                                config.grpc_listen = grpc;
                            })
                            .await;
                        }
                        if let Some(result) = line.get("result") {
                            panic!("the driver ended while the server was down: {result}");
                        }
                    };
                    eprintln!("Vigil started again at {:?}", driver.elapsed());
                    driver.send("started").await;
                }
                Some(other) => panic!("unexpected driver event {other}"),
                None => {}
            }
            if let Some(result) = line.get("result") {
                break result.clone();
            }
        };
        assert_driver_ok("console reconnect", &r, &driver.stderr());
        check(&r["steps"]);
        vigil.shutdown().await;
    });
}

fn check(s: &Value) {
    decodes(&s["live"]["field1"], "field-1's tile");
    decodes(&s["live"]["field2"], "field-2's tile");
    assert_eq!(s["watchBefore"], "playing", "the /watch player");

    // Muted by the dispatcher: the page stops claiming it is seen.
    let muted = text(&s["muted"]["text"], "muted note");
    assert!(
        muted.contains("camera off") && !muted.contains("can see you"),
        "{muted}"
    );
    let unmuted = text(&s["unmuted"]["text"], "unmuted note");
    assert_eq!(unmuted, "Live: the dispatcher can see you");

    // The drop: "reconnecting…" over a frozen picture once ICE gave up
    // (4 s + 4 s here), then "offline" after the grace; the tile stays.
    let drop = &s["drop"];
    let reconnecting = drop["reconnectingMs"].as_u64().expect("reconnectingMs");
    assert!(
        reconnecting < 20_000,
        "reconnecting after {reconnecting} ms"
    );
    let frozen = &drop["reconnecting"];
    assert_eq!(
        progress(frozen),
        0,
        "a dropped camera's tile decodes nothing new: {frozen}"
    );
    assert_eq!(frozen["status"], "reconnecting…", "{frozen}");
    assert!(
        text(&frozen["notice"], "reconnecting notice").contains("frozen"),
        "the frozen picture is marked: {frozen}"
    );
    let offline = drop["offlineMs"].as_u64().expect("offlineMs");
    assert!(
        offline > reconnecting && offline < reconnecting + GRACE.as_millis() as u64 + 5_000,
        "offline {offline} ms after the drop, reconnecting at {reconnecting} ms"
    );
    assert_eq!(drop["offline"]["status"], "offline", "{drop}");
    assert_eq!(drop["removeVisible"], true, "{drop}");
    assert_eq!(
        drop["tilesWhileOffline"],
        serde_json::json!(["field-1", "field-2"]),
        "an offline camera stays on the wall"
    );
    assert!(
        text(&drop["watchReconnecting"], "watch page").contains("reconnecting"),
        "{drop}"
    );
    assert!(
        text(&drop["watchOffline"], "watch page").contains("offline"),
        "{drop}"
    );

    // Back from a new page: the same tile plays, and so does /watch.
    decodes(&s["back"], "field-2's tile after its return");
    assert_eq!(s["back"]["status"], "playing", "{}", s["back"]);
    decodes(&s["back"]["watch"], "the /watch player after the return");

    // After a reload the panel has the events from before it.
    let events: Vec<&str> = s["reload"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for earlier in [
        "field-1 started publishing",
        "field-2 stopped publishing (timed out)",
        "field-1: video muted",
    ] {
        assert!(
            events.iter().any(|e| e.contains(earlier)),
            "`{earlier}` missing after the reload: {events:?}"
        );
    }
    decodes(&s["reload"]["field1"], "field-1's tile after the reload");
    decodes(&s["reload"]["field2"], "field-2's tile after the reload");

    // The restart: a banner while down, field pages live again by
    // themselves, tiles decoding again.
    let restart = &s["restart"];
    assert!(
        text(&restart["banner"], "banner").contains("unreachable"),
        "{restart}"
    );
    assert_eq!(
        restart["fieldWhileDown"]["state"], "reconnecting",
        "{restart}"
    );
    assert_eq!(restart["fieldBanner"], true, "{restart}");
    // 5 s later the server is still down: still trying, still saying so.
    assert_eq!(restart["bannerAfter5s"], true, "{restart}");
    assert_eq!(
        restart["fieldAfter5s"]["state"], "reconnecting",
        "{restart}"
    );
    assert!(
        text(&restart["fieldAfter5s"]["text"], "field page").contains("cannot be reached"),
        "{restart}"
    );
    let tile = restart["tileReconnectingMs"].as_u64().unwrap_or(u64::MAX);
    assert!(tile < 10_000, "the tile said reconnecting after {tile} ms");
    // Backoff is capped at 10 s: both the feed and the field pages are
    // back within one period of it plus their own work.
    for key in ["bannerClearedMs", "field1LiveMs", "field2LiveMs"] {
        let ms = restart[key].as_u64().unwrap_or(u64::MAX);
        assert!(ms < 20_000, "{key}: {ms} ms after the restart");
    }
    decodes(&restart["field1"], "field-1's tile after the restart");
    decodes(&restart["field2"], "field-2's tile after the restart");
    assert_eq!(restart["fieldBannerAfter"], false, "{restart}");
}
