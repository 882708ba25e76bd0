//! What the web console needs from the HTTP port, without a browser: its
//! embedded pages and assets, and the control API as gRPC-web on the same
//! origin (driven with tonic-web's client over HTTP/1.1, as a page's `fetch`
//! would), including the event feed's server stream and the room-scoped
//! rights of a dispatcher's `admin`-grant token.

use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tonic::Code;
use tonic_web::GrpcWebClientService;
use vigil_control::token::Grants;
use vigil_proto::v1 as pb;
use vigil_proto::v1::event_service_client::EventServiceClient;
use vigil_proto::v1::room_service_client::RoomServiceClient;
use vigil_proto::v1::token_service_client::TokenServiceClient;
use vigil_tests::base_url;
use vigil_tests::control::{ADMIN_KEY, mint_in, now_unix, secure_server, with_bearer};
use vigil_tests::http_client::request;

type WebChannel =
    GrpcWebClientService<Client<HttpConnector, tonic_web::GrpcWebCall<tonic::body::Body>>>;

/// A gRPC-web channel to the server's HTTP port (not its gRPC port).
fn web_channel() -> WebChannel {
    GrpcWebClientService::new(Client::builder(TokioExecutor::new()).build_http())
}

async fn get(url: &str) -> vigil_tests::http_client::HttpResponse {
    request("GET", url, &[], "").await
}

/// Creates rooms over gRPC-web with the admin key.
async fn create_rooms(rooms: &mut RoomServiceClient<WebChannel>, names: &[&str]) {
    for name in names {
        rooms
            .create_room(with_bearer(
                pb::CreateRoomRequest {
                    name: (*name).into(),
                    ..Default::default()
                },
                ADMIN_KEY,
            ))
            .await
            .expect("create a room over gRPC-web");
    }
}

fn origin(base: &str) -> Uri {
    base.parse().expect("base URL")
}

#[tokio::test]
async fn console_pages_and_assets_are_served_from_the_binary() {
    let vigil = secure_server(|_| {}).await;
    let base = base_url(&vigil);

    let root = get(&format!("{base}/")).await;
    assert_eq!(root.status, 303);
    assert_eq!(root.header("location"), Some("/console/"));

    for path in ["/console/", "/console/rooms/site-1", "/join/site-1"] {
        let page = get(&format!("{base}{path}")).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(
            page.header("content-type")
                .unwrap()
                .starts_with("text/html")
        );
        assert!(page.body.contains("/assets/app.js"), "{path}");
        let csp = page.header("content-security-policy").unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    }
    // The standalone player is meant for <iframe>s.
    let player = get(&format!("{base}/watch/site-1/cam-1")).await;
    assert_eq!(player.status, 200);
    assert!(
        player
            .header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors *")
    );

    let script = get(&format!("{base}/assets/app.js")).await;
    assert_eq!(script.status, 200);
    assert!(
        script
            .header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(script.body.len() > 10_000, "the bundled console");
    assert_eq!(get(&format!("{base}/assets/nope.js")).await.status, 404);
    // WHIP/WHEP routes are unchanged next to the console's.
    assert_eq!(get(&format!("{base}/nowhere")).await.status, 404);
    vigil.shutdown().await;
}

#[tokio::test]
async fn the_console_learns_the_public_url_for_its_links() {
    let configured = secure_server(|config| {
        config.public_url = Some("https://vigil.example.net".parse().expect("a public URL"));
    })
    .await;
    let unset = secure_server(|_| {}).await;
    for (vigil, expected) in [
        (&configured, serde_json::json!("https://vigil.example.net")),
        (&unset, serde_json::Value::Null),
    ] {
        let response = get(&format!("{}/console/config.json", base_url(vigil))).await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(response.header("content-type"), Some("application/json"));
        let config: serde_json::Value =
            serde_json::from_str(&response.body).expect("config.json is JSON");
        assert_eq!(config["publicUrl"], expected, "{}", response.body);
    }
    configured.shutdown().await;
    unset.shutdown().await;
}

#[tokio::test]
async fn control_api_speaks_grpc_web_on_the_http_port() {
    let vigil = secure_server(|_| {}).await;
    let base = origin(&base_url(&vigil));
    let mut rooms = RoomServiceClient::with_origin(web_channel(), base.clone());
    let mut tokens = TokenServiceClient::with_origin(web_channel(), base.clone());

    let refused = rooms
        .list_rooms(pb::ListRoomsRequest::default())
        .await
        .expect_err("no credential");
    assert_eq!(refused.code(), Code::Unauthenticated);

    create_rooms(&mut rooms, &["site-1", "site-2"]).await;
    let listed = rooms
        .list_rooms(with_bearer(pb::ListRoomsRequest::default(), ADMIN_KEY))
        .await
        .expect("list rooms")
        .into_inner();
    assert_eq!(listed.rooms.len(), 2);

    let issued = tokens
        .create_token(with_bearer(
            pb::CreateTokenRequest {
                room: "site-1".into(),
                identity: "cam-1".into(),
                grants: Some(pb::Grants {
                    publish: true,
                    subscribe: true,
                    admin: false,
                }),
                ttl_seconds: None,
            },
            ADMIN_KEY,
        ))
        .await
        .expect("create token")
        .into_inner();
    assert_eq!(issued.whip_path, "/whip/site-1/cam-1");
    vigil.shutdown().await;
}

#[tokio::test]
async fn a_room_admin_token_runs_its_own_room_only() {
    let vigil = secure_server(|_| {}).await;
    let base = origin(&base_url(&vigil));
    let mut rooms = RoomServiceClient::with_origin(web_channel(), base.clone());
    create_rooms(&mut rooms, &["site-1", "site-2"]).await;
    let grants = |admin| Grants {
        publish: false,
        subscribe: true,
        admin,
    };
    let site_1 = rooms
        .get_room(with_bearer(
            pb::GetRoomRequest {
                name: "site-1".into(),
            },
            ADMIN_KEY,
        ))
        .await
        .expect("get room")
        .into_inner();
    let dispatcher = mint_in(
        &site_1,
        "dispatcher",
        grants(true),
        now_unix(),
        Duration::from_secs(600),
    );
    let viewer = mint_in(
        &site_1,
        "viewer",
        grants(false),
        now_unix(),
        Duration::from_secs(600),
    );

    // Its room: what a dispatcher's wall calls.
    let room = rooms
        .get_room(with_bearer(
            pb::GetRoomRequest {
                name: "site-1".into(),
            },
            &dispatcher,
        ))
        .await
        .expect("get its room")
        .into_inner();
    assert_eq!(room.name, "site-1");
    rooms
        .list_participants(with_bearer(
            pb::ListParticipantsRequest {
                room: "site-1".into(),
                ..Default::default()
            },
            &dispatcher,
        ))
        .await
        .expect("list its participants");
    let hang_up = rooms
        .hang_up(with_bearer(
            pb::HangUpRequest {
                room: "site-1".into(),
                identity: "nobody".into(),
                ..Default::default()
            },
            &dispatcher,
        ))
        .await
        .expect_err("nobody to hang up on");
    // Past the credential check: the room simply has no such participant.
    assert_eq!(hang_up.code(), Code::NotFound, "{hang_up:?}");

    // Another room, the server-wide RPCs, and a token without the grant: refused.
    let other = rooms
        .list_participants(with_bearer(
            pb::ListParticipantsRequest {
                room: "site-2".into(),
                ..Default::default()
            },
            &dispatcher,
        ))
        .await
        .expect_err("another room");
    assert_eq!(other.code(), Code::PermissionDenied);
    let list = rooms
        .list_rooms(with_bearer(pb::ListRoomsRequest::default(), &dispatcher))
        .await
        .expect_err("list every room");
    assert_eq!(list.code(), Code::Unauthenticated);
    let delete = rooms
        .delete_room(with_bearer(
            pb::DeleteRoomRequest {
                name: "site-1".into(),
            },
            &dispatcher,
        ))
        .await
        .expect_err("delete a room");
    assert_eq!(delete.code(), Code::Unauthenticated);
    let plain = rooms
        .list_participants(with_bearer(
            pb::ListParticipantsRequest {
                room: "site-1".into(),
                ..Default::default()
            },
            &viewer,
        ))
        .await
        .expect_err("no admin grant");
    assert_eq!(plain.code(), Code::PermissionDenied);
    vigil.shutdown().await;
}

#[tokio::test]
async fn the_event_feed_streams_over_grpc_web_and_ends_at_shutdown() {
    let vigil = secure_server(|_| {}).await;
    let base = origin(&base_url(&vigil));
    let mut events = EventServiceClient::with_origin(web_channel(), base.clone());
    let mut rooms = RoomServiceClient::with_origin(web_channel(), base);

    let mut feed = events
        .watch(with_bearer(pb::WatchRequest::default(), ADMIN_KEY))
        .await
        .expect("watch over gRPC-web")
        .into_inner();
    create_rooms(&mut rooms, &["site-9"]).await;
    let event = tokio::time::timeout(Duration::from_secs(5), feed.message())
        .await
        .expect("an event within 5 s")
        .expect("a well-formed stream")
        .expect("the stream is open");
    assert_eq!(event.room, "site-9");
    assert!(matches!(event.kind, Some(pb::event::Kind::RoomCreated(_))));

    // Shutdown ends the stream (so the HTTP port can drain) rather than
    // leaving the console hanging on a dead connection.
    let shutdown = tokio::spawn(vigil.shutdown());
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match feed.message().await {
                Ok(Some(_)) => continue,
                other => break other.map(|_| ()),
            }
        }
    })
    .await
    .expect("the feed ends after shutdown");
    drop(end);
    shutdown.await.expect("shutdown");
}
