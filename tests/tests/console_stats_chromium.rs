//! The wall's tile shows the server's statistics of its stream, and a
//! "poor link" badge while the camera's link loses packets, in headless
//! Chromium (`tests/browser/console_stats.mjs` drives the pages).
//!
//! A field user goes live from its join link and the dispatcher's wall
//! plays it: the tile reads bitrate, picture size (the one the wall
//! decodes), frame rate and "0.0 % lost" from GetStreamStats, without the
//! badge. Then the test drops one datagram in ten (at random) arriving at
//! Vigil's media port, with an nftables rule in the test's namespace: the
//! camera's RTP loses ≈ 10 % on the way (its repairs come on its RTX
//! stream, so they do not hide the loss), the server's figure passes 5 %,
//! and the tile shows the badge (the rooms page too); without the rule, the
//! badge goes.
//!
//! Vigil and Chromium run in a network namespace of their own, as in
//! `console_chromium.rs`. Screenshots land in `artifacts/console-stats/`.

use std::time::Duration;

use serde_json::Value;
use vigil_proto::v1 as pb;
use vigil_tests::browser::{BrowserDriver, artifacts_dir, assert_driver_ok, decodes, driver_args};
use vigil_tests::control::{ADMIN_KEY, Scene, admin, publish_and_subscribe};
use vigil_tests::netns;

const ROOM: &str = "site-1";
const FIELD: &str = "field-1";
const DRIVER_LIMIT: Duration = Duration::from_secs(150);

/// What GetStreamStats says of the field user's stream now.
async fn stream_stats(scene: &Scene) -> pb::StreamStats {
    scene
        .clients
        .rooms
        .clone()
        .get_stream_stats(admin(pb::GetStreamStatsRequest {
            room: ROOM.into(),
            stream: FIELD.into(),
        }))
        .await
        .expect("GetStreamStats")
        .into_inner()
}

#[test]
fn tile_shows_stream_stats_and_a_poor_link_badge_under_loss() {
    let artifacts = artifacts_dir("console-stats");
    netns::run(move || async move {
        let mut scene = Scene::new(ROOM).await;
        let field = scene.token(FIELD, publish_and_subscribe()).await;
        let media_port = scene.vigil.sfu.media_addrs()[0].port();
        let args = driver_args(
            &[
                ("base", &scene.base),
                ("key", ADMIN_KEY),
                ("room", ROOM),
                ("field", &field),
            ],
            artifacts,
        );
        let mut driver = BrowserDriver::spawn("console_stats.mjs", args, DRIVER_LIMIT);
        let r = loop {
            let line = driver.next().await;
            match line["event"].as_str() {
                Some("lose") => {
                    eprintln!("before the loss: {:#?}", stream_stats(&scene).await);
                    netns::lose_udp_to(media_port, 10);
                    driver.send("losing").await;
                }
                Some("heal") => {
                    eprintln!("under the loss: {:#?}", stream_stats(&scene).await);
                    netns::stop_losing_udp();
                    driver.send("healed").await;
                }
                Some(other) => panic!("unexpected driver event {other}"),
                None => {}
            }
            if let Some(result) = line.get("result") {
                break result.clone();
            }
        };
        assert_driver_ok("console stats", &r, &driver.stderr());
        let s = &r["steps"];
        decodes(&s["plays"], "the field user's tile");

        let clean = &s["clean"];
        eprintln!("clean: {clean}");
        let text = clean["text"].as_str().expect("the tile's figures");
        assert!(
            text.contains("kbit/s") || text.contains("Mbit/s"),
            "{clean}"
        );
        assert!(text.contains("fps") && text.ends_with("lost"), "{clean}");
        assert!(clean["bitrate"].as_f64() > Some(10_000.0), "{clean}");
        // The tooltip has the details: each track, and the wall's own
        // player as a viewer with its reports.
        let details = clean["title"].as_str().unwrap_or_default();
        assert!(
            details.contains("video video/") && details.contains("viewer dispatcher-"),
            "{clean}"
        );
        let decoded = &clean["decoded"];
        assert!(clean["width"].as_u64() > Some(0), "{clean}");
        assert_eq!(
            (&clean["width"], &clean["height"]),
            (&decoded[0], &decoded[1]),
            "the server's picture size is the one the wall decodes: {clean}"
        );
        assert!(
            clean["loss"].as_f64() < Some(0.05),
            "lost before any was forced: {clean}"
        );
        assert_eq!(clean["poorBadge"], Value::Null, "{clean}");
        assert_eq!(clean["link"], "ok", "{clean}");

        let rooms = s["rooms"].as_str().unwrap_or_default();
        assert!(
            rooms.starts_with(FIELD) && rooms.contains(" lost"),
            "the rooms page: {rooms}"
        );
        let rooms_lossy = s["roomsLossy"].as_str().unwrap_or_default();
        assert!(
            rooms_lossy.contains("poor link"),
            "the rooms page under loss: {rooms_lossy}"
        );

        let lossy = &s["lossy"];
        eprintln!("under 10 % loss: {lossy}");
        assert_eq!(lossy["poorBadge"], "poor link", "{lossy}");
        assert_eq!(lossy["link"], "poor", "{lossy}");
        assert!(lossy["loss"].as_f64() >= Some(0.05), "{lossy}");
        let loss = lossy["loss"].as_f64().unwrap_or_default();
        assert!(
            (0.05..=0.25).contains(&loss),
            "one datagram in ten dropped: the tile says {loss}"
        );

        let healed = &s["healed"];
        eprintln!("healed: {healed}");
        assert_eq!(healed["poorBadge"], Value::Null, "{healed}");
        scene.shutdown().await;
    });
}
