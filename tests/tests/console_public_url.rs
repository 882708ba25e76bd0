//! The links the console hands out for a token (the join link and OBS's
//! server URL) start with `--public-url` when Vigil has one, and otherwise
//! with the page's own origin, flagged when that is a loopback address only
//! this computer can open. Read from the page in headless Chromium
//! (`tests/browser/console_links.mjs`): the link building is the page's.
//!
//! Nothing contacts the public URL; the test still runs in a network
//! namespace of its own (`vigil_tests::netns`) so the browser can reach
//! nothing but this Vigil.

use std::time::Duration;

use serde_json::Value;
use vigil_gateway::Vigil;
use vigil_proto::v1 as pb;
use vigil_tests::browser::BrowserDriver;
use vigil_tests::control::{ADMIN_KEY, admin, clients, secure_server};
use vigil_tests::{base_url, netns};

const ROOM: &str = "site-1";
const IDENTITY: &str = "cam-1";
const PUBLIC_URL: &str = "https://vigil.example.net:8443";
const DRIVER_LIMIT: Duration = Duration::from_secs(60);

/// Creates `ROOM`, then reads the console's links for a new token.
async fn console_links(vigil: &Vigil) -> Value {
    clients(vigil)
        .await
        .rooms
        .create_room(admin(pb::CreateRoomRequest {
            name: ROOM.into(),
            ..Default::default()
        }))
        .await
        .expect("create the room");
    let args = [
        "--base",
        &base_url(vigil),
        "--key",
        ADMIN_KEY,
        "--room",
        ROOM,
        "--identity",
        IDENTITY,
    ];
    let mut driver = BrowserDriver::spawn(
        "console_links.mjs",
        args.iter().map(Into::into).collect(),
        DRIVER_LIMIT,
    );
    let result = driver.result(|_, _| {}).await;
    assert!(
        result["ok"] == true,
        "the driver failed at `{}`: {}\n--- page console ---\n{}\n--- stderr ---\n{}",
        result["step"],
        result["error"],
        result["console"],
        driver.stderr()
    );
    result
}

#[test]
fn join_and_obs_links_use_the_public_url() {
    netns::browser_driver("console_links.mjs");
    netns::run(|| async {
        let configured = secure_server(|config| {
            config.public_url = Some(PUBLIC_URL.parse().expect("a public URL"));
        })
        .await;
        let links = console_links(&configured).await;
        assert!(
            links["joinLink"]
                .as_str()
                .is_some_and(|l| l.starts_with(&format!("{PUBLIC_URL}/join/{ROOM}#token="))),
            "{links}"
        );
        assert_eq!(
            links["obsServer"],
            format!("{PUBLIC_URL}/whip/{ROOM}/{IDENTITY}"),
            "{links}"
        );
        assert_eq!(links["warning"], Value::Null, "{links}");
        configured.shutdown().await;

        // Without one: the page's origin, 127.0.0.1, and a warning saying so.
        let plain = secure_server(|_| {}).await;
        let base = base_url(&plain);
        let links = console_links(&plain).await;
        assert!(
            links["joinLink"]
                .as_str()
                .is_some_and(|l| l.starts_with(&format!("{base}/join/{ROOM}#token="))),
            "{links}"
        );
        assert_eq!(links["obsServer"], format!("{base}/whip/{ROOM}/{IDENTITY}"));
        let warning = links["warning"].as_str().unwrap_or_default();
        assert!(
            warning.contains(&format!("{}", plain.http_addr)) && warning.contains("--public-url"),
            "{links}"
        );
        plain.shutdown().await;
    });
}
